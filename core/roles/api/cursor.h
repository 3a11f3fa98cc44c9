/**
 * @file api/cursor.h
 * @brief The opaque cursors of the REST API's keyset pages. Internal to the
 *        api role; the fuzz target reaches the decoder through this header.
 */
#ifndef TB_API_CURSOR_H
#define TB_API_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

void tb_api_b64url(const char *in, size_t len, char *out);
ssize_t tb_api_unb64url(const char *in, char *out, size_t cap);
bool tb_api_cursor_parse(const char *cur, char ts[40], char id[200]);

#endif
