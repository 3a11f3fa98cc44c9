/**
 * @file cli/rest.c
 * @brief The CLI's REST client (libcurl): configuration, requests, errors
 *        and the keyset page loop (see cli/rest.h).
 */
#include "rest.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/** Longest a request that is not a live stream may take. */
#define TB_CLI_REST_TIMEOUT_MS 120000L
#define TB_CLI_REST_CONNECT_TIMEOUT_MS 10000L

/* ---- configuration --------------------------------------------------------- */

/* ~/.config/taskbus/config: a broken file is a warning, not a failure, so that
 * the environment and the flags still work. */
static void tb_cli_rest_load_file(tb_cli_rest_t *rest) {
        const char *home = getenv("HOME");
        char path[600];
        if (!home)
                return;
        config_t cfg;
        config_init(&cfg);
        tb_snprintf(path, sizeof(path), "%s/.config/taskbus/config", home);
        FILE *fp = fopen(path, "r");
        if (fp) {
                if (config_read(&cfg, fp) == CONFIG_TRUE) {
                        const char *s;
                        if (config_lookup_string(&cfg, "api", &s))
                                tb_snprintf(rest->url, sizeof(rest->url), "%s", s);
                        if (config_lookup_string(&cfg, "token", &s))
                                tb_snprintf(rest->token, sizeof(rest->token), "%s", s);
                        if (config_lookup_string(&cfg, "cacert", &s))
                                tb_snprintf(rest->cacert, sizeof(rest->cacert), "%s", s);
                } else {
                        fprintf(stderr, "taskbus: warning: %s:%d: %s (ignored)\n", path,
                                config_error_line(&cfg), config_error_text(&cfg));
                }
                fclose(fp);
        }
        config_destroy(&cfg);
}

tb_err_t tb_cli_rest_open(tb_cli_rest_t *rest, const char *api_flag, const char *token_flag,
                          const char *cacert_flag, char *errstr, size_t errstr_size) {
        rest->url[0] = rest->token[0] = rest->cacert[0] = '\0';
        tb_cli_rest_load_file(rest);
        const char *e, *cacert_from = "cacert in ~/.config/taskbus/config";
        if ((e = getenv("TASKBUS_API")) && *e)
                tb_snprintf(rest->url, sizeof(rest->url), "%s", e);
        if ((e = getenv("TASKBUS_TOKEN")) && *e)
                tb_snprintf(rest->token, sizeof(rest->token), "%s", e);
        if ((e = getenv("TASKBUS_CACERT")) && *e) {
                tb_snprintf(rest->cacert, sizeof(rest->cacert), "%s", e);
                cacert_from = "TASKBUS_CACERT";
        }
        if (api_flag)
                tb_snprintf(rest->url, sizeof(rest->url), "%s", api_flag);
        if (token_flag)
                tb_snprintf(rest->token, sizeof(rest->token), "%s", token_flag);
        if (cacert_flag) {
                tb_snprintf(rest->cacert, sizeof(rest->cacert), "%s", cacert_flag);
                cacert_from = "--cacert";
        }
        /* libcurl would only say "problem with the SSL CA cert". */
        if (rest->cacert[0] && access(rest->cacert, R_OK) != 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: cannot read the CA certificate file '%s': %s", cacert_from,
                                 rest->cacert, strerror(errno));
        if (!rest->url[0])
                tb_snprintf(rest->url, sizeof(rest->url), "%s", TB_CLI_REST_DEFAULT_API);
        size_t n = strlen(rest->url);
        while (n && rest->url[n - 1] == '/')
                rest->url[--n] = '\0';
        if (!rest->token[0])
                return tb_seterr(errstr, errstr_size, TB_ERR_UNAUTHENTICATED,
                                 "no API token: set TASKBUS_TOKEN, pass --token, or put token = "
                                 "\"...\"; in ~/.config/taskbus/config");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "cannot initialise libcurl");
        return TB_OK;
}

void tb_cli_rest_close(tb_cli_rest_t *rest) {
        (void)rest;
        curl_global_cleanup();
}

/* ---- URLs ------------------------------------------------------------------------ */

tb_err_t tb_cli_rest_escape(tb_buf_t *buf, const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                bool unreserved = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                                  (*p >= '0' && *p <= '9') || strchr("-._~", *p);
                char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                if (tb_buf_append(buf, unreserved ? (const char *)p : enc, unreserved ? 1 : 3))
                        return TB_ERR_NOMEM;
        }
        return TB_OK;
}

tb_err_t tb_cli_rest_path(tb_buf_t *buf, const char *collection, const char *id,
                          const char *sub) {
        if (tb_buf_printf(buf, "%s/", collection) || tb_cli_rest_escape(buf, id) ||
            (sub && tb_buf_printf(buf, "/%s", sub)))
                return TB_ERR_NOMEM;
        return TB_OK;
}

tb_err_t tb_cli_rest_query(tb_buf_t *buf, const char *name, const char *value) {
        if (!value)
                return TB_OK;
        bool first = !buf->data || !memchr(buf->data, '?', buf->len);
        if (tb_buf_printf(buf, "%c%s=", first ? '?' : '&', name))
                return TB_ERR_NOMEM;
        return tb_cli_rest_escape(buf, value);
}

/* ---- one request --------------------------------------------------------------- */

static bool tb_cli_rest_ok(const tb_cli_rest_req_t *req, long status) {
        return status == req->ok || (req->ok_also && status == req->ok_also);
}

/** Where the body goes: req->stream while the status is a success, else
 *  resp->body (an error body is always kept, to be read). */
typedef struct tb_cli_rest_sink {
        CURL *curl;
        const tb_cli_rest_req_t *req;
        tb_cli_rest_resp_t *resp;
        bool checked, to_stream;
} tb_cli_rest_sink_t;

static size_t tb_cli_rest_body(char *p, size_t size, size_t nmemb, void *ud) {
        tb_cli_rest_sink_t *s = ud;
        size_t n = size * nmemb;
        if (!s->checked) {
                long st = 0;
                curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &st);
                s->to_stream = s->req->stream && tb_cli_rest_ok(s->req, st);
                s->checked = true;
        }
        if (!s->to_stream)
                return tb_buf_append(&s->resp->body, p, n) == TB_OK ? n : 0;
        size_t w = fwrite(p, 1, n, s->req->stream);
        fflush(s->req->stream); /* live output: the user sees it as it comes */
        return w;
}

static size_t tb_cli_rest_header_line(char *p, size_t size, size_t nmemb, void *ud) {
        tb_cli_rest_resp_t *resp = ud;
        size_t n = size * nmemb;
        return tb_buf_append(&resp->headers, p, n) == TB_OK ? n : 0;
}

/** The tb_err_t of an HTTP refusal. */
static tb_err_t tb_cli_rest_status_err(long status) {
        switch (status) {
        case 400: return TB_ERR_INVALID;
        case 401: return TB_ERR_UNAUTHENTICATED;
        case 403: return TB_ERR_FORBIDDEN;
        case 404:
        case 410: return TB_ERR_NOT_FOUND;
        case 409:
        case 412: return TB_ERR_CONFLICT;
        case 429: return TB_ERR_THROTTLED;
        case 503: return TB_ERR_IO;
        case 504: return TB_ERR_TIMEOUT;
        default: return TB_ERR_INTERNAL;
        }
}

/* The server's error body {"error": {"code", "message", "command_id"?}} as
 * "404 not_found: message (command c)". */
static tb_err_t tb_cli_rest_refusal(const tb_cli_rest_resp_t *resp, char *errstr,
                                    size_t errstr_size) {
        const json_t *e = json_object_get(resp->json, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *cmd = json_string_value(json_object_get(e, "command_id"));
        tb_err_t err = tb_cli_rest_status_err(resp->status);
        if (code && msg && cmd)
                return tb_seterr(errstr, errstr_size, err, "%ld %s: %s (command %s)",
                                 resp->status, code, msg, cmd);
        if (code && msg)
                return tb_seterr(errstr, errstr_size, err, "%ld %s: %s", resp->status, code, msg);
        return tb_seterr(errstr, errstr_size, err, "%ld: unexpected response from the API",
                         resp->status);
}

tb_err_t tb_cli_rest_call(const tb_cli_rest_t *rest, const tb_cli_rest_req_t *req,
                          tb_cli_rest_resp_t *resp, char *errstr, size_t errstr_size) {
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        tb_buf_t url = {0}, hdr = {0};
        tb_cli_rest_sink_t sink = {.curl = c, .req = req, .resp = resp};
        tb_err_t err = TB_OK;
        resp->status = 0;
        if (!c)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL, "cannot initialise libcurl");
        tb_buf_printf(&url, "%s%s", rest->url, req->path);
        tb_buf_printf(&hdr, "Authorization: Bearer %s", rest->token);
        h = curl_slist_append(h, hdr.data);
        hdr.len = 0;
        tb_buf_printf(&hdr, "Accept: %s", req->accept ? req->accept : "application/json");
        h = curl_slist_append(h, hdr.data);
        if (req->body) {
                hdr.len = 0;
                tb_buf_printf(&hdr, "Content-Type: %s",
                              req->content_type ? req->content_type : "application/json");
                h = curl_slist_append(h, hdr.data);
        }
        if (req->create_only)
                h = curl_slist_append(h, "If-None-Match: *");
        if (req->if_match) {
                hdr.len = 0;
                tb_buf_printf(&hdr, "If-Match: \"%s\"", req->if_match);
                h = curl_slist_append(h, hdr.data);
        }
        curl_easy_setopt(c, CURLOPT_URL, url.data);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tb_cli_rest_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, tb_cli_rest_header_line);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, TB_CLI_REST_CONNECT_TIMEOUT_MS);
        if (rest->cacert[0])
                curl_easy_setopt(c, CURLOPT_CAINFO, rest->cacert);
        if (req->stream)
                curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        else
                curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, TB_CLI_REST_TIMEOUT_MS);
        if (req->body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(req->body));
        } else if (!strcmp(req->method, "POST")) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        }
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
                if (req->stream && tb_cli_rest_ok(req, status)) {
                        resp->status = status; /* answered, then cut */
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                        "the output stream broke off: %s",
                                        curl_easy_strerror(rc));
                } else if (rc == CURLE_PEER_FAILED_VERIFICATION) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                        "cannot verify the API's certificate at %s: %s (pass "
                                        "the CA that signed it with --cacert or "
                                        "TASKBUS_CACERT)",
                                        rest->url, curl_easy_strerror(rc));
                } else {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                        "cannot reach the API at %s: %s (set TASKBUS_API or "
                                        "--api)",
                                        rest->url, curl_easy_strerror(rc));
                }
                goto out;
        }
        resp->status = status;
        const char *ctype = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
        if (resp->body.len && ctype && strstr(ctype, "json")) {
                json_error_t je;
                resp->json = json_loadb(resp->body.data, resp->body.len, 0, &je);
        }
        if (!tb_cli_rest_ok(req, status))
                err = tb_cli_rest_refusal(resp, errstr, errstr_size);
out:
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        tb_buf_free(&hdr);
        tb_buf_free(&url);
        return err;
}

int tb_cli_rest_do(const tb_cli_rest_t *rest, const tb_cli_rest_req_t *req,
                   tb_cli_rest_resp_t *resp) {
        char err[1024];
        if (tb_cli_rest_call(rest, req, resp, err, sizeof(err)) == TB_OK)
                return 0;
        tb_cli_fail("%s", err);
        return 1;
}

void tb_cli_rest_resp_free(tb_cli_rest_resp_t *resp) {
        json_decref(resp->json);
        tb_buf_free(&resp->body);
        tb_buf_free(&resp->headers);
        memset(resp, 0, sizeof(*resp));
}

bool tb_cli_rest_header(const tb_cli_rest_resp_t *resp, const char *name, char *out,
                        size_t out_size) {
        size_t nl = strlen(name);
        const char *p = resp->headers.data, *end = p ? p + resp->headers.len : NULL;
        while (p && p < end) {
                const char *eol = memchr(p, '\n', (size_t)(end - p));
                const char *next = eol ? eol + 1 : end;
                if ((size_t)(next - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
                        const char *v = p + nl + 1;
                        while (v < next && (*v == ' ' || *v == '\t'))
                                v++;
                        size_t vl = (size_t)(next - v);
                        while (vl && (v[vl - 1] == '\n' || v[vl - 1] == '\r' || v[vl - 1] == ' '))
                                vl--;
                        tb_snprintf(out, out_size, "%.*s", (int)vl, v);
                        return true;
                }
                p = next;
        }
        return false;
}

/* ---- keyset pages ---------------------------------------------------------------- */

int tb_cli_rest_list(const tb_cli_rest_t *rest, const char *path, const char *cursor, bool all,
                     bool json, const tb_cli_rest_list_t *list) {
        char *next = cursor ? strdup(cursor) : NULL;
        json_t *items = json_array();
        bool header = false;
        int rc = 0;
        for (;;) {
                tb_buf_t page = {0};
                tb_buf_printf(&page, "%s", path);
                tb_cli_rest_query(&page, "cursor", next);
                tb_cli_rest_req_t req = {.method = "GET", .path = page.data, .ok = 200};
                tb_cli_rest_resp_t resp = {0};
                rc = tb_cli_rest_do(rest, &req, &resp);
                tb_buf_free(&page);
                if (rc) {
                        tb_cli_rest_resp_free(&resp);
                        break;
                }
                size_t i;
                json_t *item;
                json_array_foreach(json_object_get(resp.json, list->key), i, item) {
                        if (json) {
                                json_array_append(items, item);
                                continue;
                        }
                        if (!header)
                                list->header();
                        header = true;
                        list->row(item);
                }
                free(next);
                next = NULL;
                const char *nc = json_string_value(json_object_get(resp.json, "next_cursor"));
                if (nc)
                        next = strdup(nc);
                tb_cli_rest_resp_free(&resp);
                if (!next || !all)
                        break;
        }
        if (!rc && json) {
                json_t *out = json_pack("{s:O, s:o}", list->key, items, "next_cursor",
                                        next ? json_string(next) : json_null());
                tb_cli_print_json(out);
                json_decref(out);
        } else if (!rc) {
                if (!header)
                        printf("no %s\n", list->key);
                if (next)
                        fprintf(stderr, "(more %s: --cursor %s, or --all)\n", list->key, next);
        }
        json_decref(items);
        free(next);
        return rc;
}
