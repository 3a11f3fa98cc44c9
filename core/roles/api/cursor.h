/**
 * @file api/cursor.h
 * @brief The one cursor of the REST API's keyset pages (the task list, a
 *        task's runs, a task's history, the admin log): an opaque, versioned token naming
 *        the list it continues and the keyset of the last item of a page.
 *
 * A token is base64url (RFC 4648 §5, no padding) of "1|<list>|<key>|<id>":
 * 1 the format version, <list> one letter (tb_api_cursor_list_t), <key> the
 * sort key of the page's last row as the server wrote it, <id> that row's id
 * (empty for history and the admin log, whose keys are unique). Clients pass next_cursor back
 * unchanged; they are not to build one.
 *
 * The decoder checks everything (canonical base64url, version, list, the
 * key's shape and range, the id's charset and length), so a cursor that
 * decodes binds into SQL as it is, and a cursor of one list is refused by
 * another. Pure functions: no allocation, any thread. The fuzz target
 * tests/fuzz/fuzz_rest.c drives the decoder through this header.
 */
#ifndef TB_API_CURSOR_H
#define TB_API_CURSOR_H

#include "tb.h"

/** The list a cursor continues: its letter in the token. */
typedef enum tb_api_cursor_list {
        TB_API_CURSOR_TASKS = 't',   /**< key: created_at, "YYYY-MM-DDTHH:MM:SS.uuuuuuZ";
                                          id: the task (GET /v1/tasks) */
        TB_API_CURSOR_RUNS = 'r',    /**< key: nominal_time in epoch ms; id: the run
                                          (GET /v1/tasks/{id}/runs) */
        TB_API_CURSOR_HISTORY = 'h', /**< key: the task version; no id
                                          (GET /v1/tasks/{id}/history) */
        TB_API_CURSOR_AUDIT = 'a',   /**< key: the admin_audit row id; no id
                                          (GET /v1/admin/audit) */
} tb_api_cursor_list_t;

/** Longest key and id (the id rule of tb_api_id_ok()). */
#define TB_API_CURSOR_KEY_MAX 32
#define TB_API_CURSOR_ID_MAX 128
/** Room for the longest token, NUL included. */
#define TB_API_CURSOR_TOKEN_MAX 256

/** A decoded cursor: the keyset to continue after. */
typedef struct tb_api_cursor {
        tb_api_cursor_list_t list;
        char key[TB_API_CURSOR_KEY_MAX + 1];
        char id[TB_API_CURSOR_ID_MAX + 1];
} tb_api_cursor_t;

/**
 * @brief Encode \p cur as a token.
 * @param out  receives the token, NUL-terminated
 * @returns TB_OK, or TB_ERR_INVALID (errstr says why) when the keyset does
 *          not have its list's shape: the decoder would refuse the token.
 */
tb_err_t tb_api_cursor_encode(const tb_api_cursor_t *cur, char out[TB_API_CURSOR_TOKEN_MAX],
                              char *errstr, size_t errstr_size);

/**
 * @brief Decode \p token, a cursor of \p list.
 * @param out  filled on TB_OK only
 * @returns TB_OK, or TB_ERR_INVALID (errstr says why, for logs: clients are
 *          told only that it is not a cursor of this list).
 */
tb_err_t tb_api_cursor_decode(const char *token, tb_api_cursor_list_t list,
                              tb_api_cursor_t *out, char *errstr, size_t errstr_size);

#endif
