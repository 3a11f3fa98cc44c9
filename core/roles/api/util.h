/**
 * @file api/util.h
 * @brief Request helpers the REST resource files (tasks.c, runs.c) share:
 *        id validation, error replies, query parameter parsing.
 *        Internal to the api role.
 */
#ifndef TB_API_UTIL_H
#define TB_API_UTIL_H

#include "api/api.h"

bool tb_api_id_ok(const char *id);
void tb_api_not_found(tb_http_resp_t *resp, const char *id);
PGconn *tb_api_conn(tb_api_t *api, tb_http_resp_t *resp);
void tb_api_db_error(tb_http_resp_t *resp, const char *err);

bool tb_api_query_check(tb_http_req_t *req, tb_http_resp_t *resp, const char *const *known,
                        const char *known_text);
bool tb_api_query_int(tb_http_req_t *req, tb_http_resp_t *resp, const char *name, int64_t lo,
                      int64_t hi, int64_t *out);
bool tb_api_query_time(tb_http_req_t *req, tb_http_resp_t *resp, const char *name, char out[32]);

#endif
