/**
 * @file engine_api.c
 * @brief The container plugin's Docker Engine API client: plain HTTP
 *        requests with libcurl on the engine's unix socket
 *        (CURLOPT_UNIX_SOCKET_PATH), under the API version prefix
 *        ("/v1.41"), and the reply buffer they fill.
 */
#include "container_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool ct_buf_add(ct_buf_t *b, const void *data, size_t len) {
        if (b->len + len + 1 > b->cap) {
                size_t ncap = b->cap ? b->cap : 1024;
                while (ncap < b->len + len + 1)
                        ncap *= 2;
                char *nd = realloc(b->data, ncap);
                if (!nd)
                        return false;
                b->data = nd;
                b->cap = ncap;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return true;
}

void ct_buf_free(ct_buf_t *b) {
        free(b->data);
        *b = (ct_buf_t){0};
}

/* "2026-01-02T03:04:05.123456789Z" (or with an offset) -> epoch ms; -1 if
 * malformed or the zero time "0001-01-01T00:00:00Z". */
int64_t ct_engine_parse_time(const char *s) {
        int y, mo, d, h, mi, sec, n = 0;
        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
            y < 1970)
                return -1;
        const char *p = s + n;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        int off = 0;
        if ((*p == '+' || *p == '-') && strlen(p) >= 6) {
                int oh = atoi(p + 1), om = atoi(p + 4);
                off = (*p == '+' ? 1 : -1) * (oh * 60 + om) * 60;
        }
        struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                        .tm_hour = h, .tm_min = mi, .tm_sec = sec};
        return ((int64_t)timegm(&tm) - off) * 1000;
}

/* ---- HTTP on the engine's socket ------------------------------------------ */

static size_t ct_engine_collect_cb(char *data, size_t size, size_t nmemb, void *arg) {
        ct_buf_t *b = arg;
        /* Cap what we keep of a reply: listings can be big, errors are short. */
        if (b->len < 16 * 1024 * 1024 && !ct_buf_add(b, data, size * nmemb))
                return 0;
        return size * nmemb;
}

CURL *ct_engine_easy(ct_state_t *st, const char *method, const char *path,
                     const char *body, ct_buf_t *resp, char *curl_err) {
        char url[2048];
        snprintf(url, sizeof(url), "http://localhost%s%s", st->prefix, path);
        CURL *h = curl_easy_init();
        if (!h)
                return NULL;
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, st->socket);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (curl_err) {
                curl_err[0] = '\0';
                curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
        }
        if (body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (!strcmp(method, "POST")) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        }
        if (resp) {
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ct_engine_collect_cb);
                curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
        }
        return h;
}

/* The engine's own explanation in an error reply ({"message": ...}). */
void ct_engine_msg(const ct_buf_t *body, char *out, size_t size) {
        json_t *j = body->data ? json_loads(body->data, 0, NULL) : NULL;
        const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
        snprintf(out, size, "%s", m ? m : body->data ? body->data : "(empty reply)");
        out[strcspn(out, "\n")] = '\0';
        json_decref(j);
}

/**
 * One blocking request. @returns 0 with *\p status set (any HTTP status),
 * or -1 when the engine could not be reached (reason in \p err).
 */
int ct_engine_http(ct_state_t *st, const char *method, const char *path,
                   const char *body, long *status, ct_buf_t *resp, char *err,
                   size_t errsz) {
        char cerr[CURL_ERROR_SIZE];
        ct_buf_t scratch = {0};
        struct curl_slist *hdrs = NULL;
        CURL *h = ct_engine_easy(st, method, path, body, resp ? resp : &scratch, cerr);
        if (!h) {
                snprintf(err, errsz, "out of memory (curl_easy_init)");
                return -1;
        }
        if (body) {
                hdrs = curl_slist_append(NULL, "Content-Type: application/json");
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        }
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)st->request_timeout_ms);
        CURLcode rc = curl_easy_perform(h);
        if (rc != CURLE_OK) {
                snprintf(err, errsz, "%s %s: cannot talk to the container engine at "
                         "%s: %s (is dockerd or `podman system service` running, and "
                         "is the plugin's socket key right?)", method, path, st->socket,
                         cerr[0] ? cerr : curl_easy_strerror(rc));
        } else {
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        }
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        ct_buf_free(&scratch);
        return rc == CURLE_OK ? 0 : -1;
}

/* Force-remove a container (and its anonymous volumes). */
bool ct_engine_remove(ct_state_t *st, const char *cid, char *err, size_t errsz) {
        char path[256];
        long status = 0;
        ct_buf_t resp = {0};
        snprintf(path, sizeof(path), "/containers/%s?force=1&v=1", cid);
        bool ok = ct_engine_http(st, "DELETE", path, NULL, &status, &resp, err, errsz) == 0;
        if (ok && status != 204 && status != 404) {
                char m[512];
                ct_engine_msg(&resp, m, sizeof(m));
                snprintf(err, errsz, "removing container %.12s: HTTP %ld: %s", cid,
                         status, m);
                ok = false;
        }
        ct_buf_free(&resp);
        return ok;
}
