/**
 * @file cli/rest.h
 * @brief The CLI's REST client (libcurl), used by the command groups that
 *        talk to the API.
 */
#ifndef TB_CLI_REST_H
#define TB_CLI_REST_H

#include "cli.h"

#include <jansson.h>

#define TB_CLI_REST_DEFAULT_API "http://127.0.0.1:8080"

typedef struct tb_cli_rest {
        char url[512];
        char token[256];
} tb_cli_rest_t;

char *tb_cli_rest_escape(const char *s);
void tb_cli_rest_load(tb_cli_rest_t *a, const char *api_flag, const char *token_flag);
size_t tb_cli_rest_collect(char *ptr, size_t size, size_t nmemb, void *ud);
long tb_cli_rest_request(const tb_cli_rest_t *a, const char *method, const char *path,
                         const char *body, const char *if_match, json_t **out);
void tb_cli_rest_error(long status, const json_t *body);

#endif
