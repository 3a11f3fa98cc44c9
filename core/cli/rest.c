/**
 * @file cli/rest.c
 * @brief The CLI's REST client (libcurl).
 */
#include "rest.h"

#include <curl/curl.h>
#include <jansson.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *tb_cli_rest_escape(const char *s) {
        CURL *c = curl_easy_init();
        char *e = c ? curl_easy_escape(c, s, 0) : NULL;
        char *r = e ? strdup(e) : NULL;
        curl_free(e);
        if (c)
                curl_easy_cleanup(c);
        return r;
}

/* ---- configuration --------------------------------------------------------- */

void tb_cli_rest_load(tb_cli_rest_t *a, const char *api_flag, const char *token_flag) {
        const char *home = getenv("HOME");
        char path[600];
        a->url[0] = a->token[0] = '\0';
        if (home) {
                config_t cfg;
                config_init(&cfg);
                tb_snprintf(path, sizeof(path), "%s/.config/taskbus/config", home);
                FILE *fp = fopen(path, "r");
                if (fp) {
                        if (config_read(&cfg, fp) == CONFIG_TRUE) {
                                const char *s;
                                if (config_lookup_string(&cfg, "api", &s))
                                        tb_snprintf(a->url, sizeof(a->url), "%s", s);
                                if (config_lookup_string(&cfg, "token", &s))
                                        tb_snprintf(a->token, sizeof(a->token), "%s", s);
                        } else {
                                fprintf(stderr, "taskbus: warning: %s:%d: %s (ignored)\n", path,
                                        config_error_line(&cfg), config_error_text(&cfg));
                        }
                        fclose(fp);
                }
                config_destroy(&cfg);
        }
        const char *e;
        if ((e = getenv("TASKBUS_API")) && *e)
                tb_snprintf(a->url, sizeof(a->url), "%s", e);
        if ((e = getenv("TASKBUS_TOKEN")) && *e)
                tb_snprintf(a->token, sizeof(a->token), "%s", e);
        if (api_flag)
                tb_snprintf(a->url, sizeof(a->url), "%s", api_flag);
        if (token_flag)
                tb_snprintf(a->token, sizeof(a->token), "%s", token_flag);
        if (!a->url[0])
                tb_snprintf(a->url, sizeof(a->url), "%s", TB_CLI_REST_DEFAULT_API);
        size_t n = strlen(a->url);
        while (n && a->url[n - 1] == '/')
                a->url[--n] = '\0';
}

/* ---- HTTP ---------------------------------------------------------------------- */

size_t tb_cli_rest_collect(char *ptr, size_t size, size_t nmemb, void *ud) {
        tb_buf_t *b = ud;
        return tb_buf_append(b, ptr, size * nmemb) == TB_OK ? size * nmemb : 0;
}

/**
 * One request. @returns the HTTP status (0 when the API could not be
 * reached: the reason is printed) and *\p out the parsed JSON body or NULL.
 */
long tb_cli_rest_request(const tb_cli_rest_t *a, const char *method, const char *path,
                         const char *body, const char *if_match, json_t **out) {
        CURL *c = curl_easy_init();
        tb_buf_t resp = {0};
        struct curl_slist *h = NULL;
        char url[1200], hdr[400];
        long status = 0;
        *out = NULL;
        if (!c) {
                tb_cli_fail("cannot initialise libcurl");
                return 0;
        }
        tb_snprintf(url, sizeof(url), "%s%s", a->url, path);
        tb_snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", a->token);
        h = curl_slist_append(h, hdr);
        h = curl_slist_append(h, "Accept: application/json");
        if (body)
                h = curl_slist_append(h, "Content-Type: application/json");
        if (if_match) {
                tb_snprintf(hdr, sizeof(hdr), "If-Match: \"%s\"", if_match);
                h = curl_slist_append(h, hdr);
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tb_cli_rest_collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (!strcmp(method, "POST")) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        }
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) {
                tb_cli_fail("cannot reach the API at %s: %s (set TASKBUS_API or --api)", a->url,
                            curl_easy_strerror(rc));
        } else {
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
                if (resp.len) {
                        json_error_t je;
                        *out = json_loadb(resp.data, resp.len, 0, &je);
                }
        }
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        tb_buf_free(&resp);
        return status;
}

/** Print the server's error as "taskbus: 404 not_found: message". */
void tb_cli_rest_error(long status, const json_t *body) {
        const json_t *e = json_object_get(body, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *cmd = json_string_value(json_object_get(e, "command_id"));
        if (code && msg && cmd)
                tb_cli_fail("%ld %s: %s (command %s)", status, code, msg, cmd);
        else if (code && msg)
                tb_cli_fail("%ld %s: %s", status, code, msg);
        else
                tb_cli_fail("%ld: unexpected response from the API", status);
}
