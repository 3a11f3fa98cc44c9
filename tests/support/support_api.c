/**
 * @file support_api.c
 * @brief Requests to a test daemon's API, SQL waits, the daemon's end, and
 *        the console tests' daemon with its users and browser scripts
 *        (support_api.h).
 */
#include "support_api.h"
#include "support.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

static size_t tbt_http_sink(char *p, size_t s, size_t n, void *ud) {
        tb_buf_append(ud, p, s * n);
        return s * n;
}

tbt_http_res_t tbt_http(int port, const char *method, const char *path, const char *authz,
                        const char *body) {
        char ah[256];
        const char *hdrs[] = {ah, NULL};
        if (authz)
                snprintf(ah, sizeof(ah), "Authorization: %s", authz);
        return tbt_http_with(port, method, path, authz ? hdrs : NULL, body);
}

tbt_http_res_t tbt_http_with(int port, const char *method, const char *path,
                             const char *const *headers, const char *body) {
        tbt_http_res_t r = {0};
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char url[2048];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
        bool typed = false; /* a Content-Type of the caller's replaces the JSON one */
        for (size_t i = 0; headers && headers[i]; i++) {
                h = curl_slist_append(h, headers[i]);
                typed |= !strncasecmp(headers[i], "Content-Type:", 13);
        }
        if (!typed)
                h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tbt_http_sink);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, tbt_http_sink);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.hdrs);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
        if (body || !strcmp(method, "POST")) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
        }
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        tb_buf_append(&r.body, "", 1);
        r.body.len--;
        tb_buf_append(&r.hdrs, "", 1);
        json_error_t je;
        r.j = json_loadb(r.body.data, r.body.len, 0, &je);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return r;
}

void tbt_http_free(tbt_http_res_t *r) {
        json_decref(r->j);
        tb_buf_free(&r->body);
        tb_buf_free(&r->hdrs);
        r->j = NULL;
}

const char *tbt_http_header(const tbt_http_res_t *r, const char *name, char *buf, size_t size) {
        size_t n = strlen(name);
        for (const char *l = r->hdrs.data; l && *l;) {
                const char *e = strstr(l, "\r\n");
                if (!strncasecmp(l, name, n) && l[n] == ':') {
                        const char *v = l + n + 1;
                        while (*v == ' ')
                                v++;
                        size_t len = e ? (size_t)(e - v) : strlen(v);
                        snprintf(buf, size, "%.*s", (int)len, v);
                        return buf;
                }
                l = e ? e + 2 : NULL;
        }
        return "(missing)";
}

typedef struct tbt_sqlwait {
        tbt_stack_t *st;
        const char *sql, *want;
} tbt_sqlwait_t;

static bool tbt_sql_is(void *arg) {
        tbt_sqlwait_t *w = arg;
        char *v = tbt_sql_value(w->st, w->sql);
        bool ok = v && !strcmp(v, w->want);
        free(v);
        return ok;
}

void tbt_wait_sql(tbt_stack_t *st, const char *sql, const char *want, int ms) {
        tbt_sqlwait_t w = {st, sql, want};
        if (tbt_wait_until(tbt_sql_is, &w, ms))
                return;
        char *v = tbt_sql_value(st, sql);
        char got[256];
        snprintf(got, sizeof(got), "%s", v ? v : "(no row)");
        free(v);
        cr_assert_fail("waited %d ms for `%s` = %s; got %s", ms, sql, want, got);
}

bool tbt_daemon_end(tbt_stack_t *st, pid_t pid, bool *sanitizer) {
        int ws = pid > 0 ? tbt_daemon_stop(pid, SIGTERM) : 0;
        bool clean = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
        char *log = tbt_daemon_log(st);
        *sanitizer = log && (strstr(log, "Sanitizer") || strstr(log, "runtime error:"));
        if (*sanitizer || !clean || getenv("TBT_SHOW_LOGS"))
                fprintf(stderr, "---- taskbusd log (exit 0x%x) ----\n%s\n", ws, log ? log : "");
        free(log);
        return clean;
}

/* ---- the web console's tests ---------------------------------------------------- */

void tbt_console_start(tbt_console_t *c) {
        tbt_console_start_with(c, "api,commands,projector,scheduler,executor,archiver,notifier", NULL);
}

void tbt_console_start_with(tbt_console_t *c, const char *roles, const char *api_extra) {
        char extra[512];
        memset(c, 0, sizeof(*c));
        c->port = tbt_free_port();
        snprintf(extra, sizeof(extra), "reply_timeout = \"30s\"; %s", api_extra ? api_extra : "");
        tbt_stack_create(&c->st, &(tbt_stack_opts_t){.partitions = 2, .api_port = c->port,
                                                     .api_rate = 10000.0, .api_burst = 10000,
                                                     .api_extra = extra});
        c->pid = tbt_daemon_start(&c->st, roles);
        cr_assert(tbt_wait_until(tbt_http_up, &c->port, 90000), "the API did not come up");
}

void tbt_console_stop(tbt_console_t *c) {
        bool sanitizer = false, clean = tbt_daemon_end(&c->st, c->pid, &sanitizer);
        c->pid = 0;
        tbt_stack_destroy(&c->st);
        cr_assert(!sanitizer, "taskbusd reported a sanitizer error (log above)");
        cr_assert(clean, "taskbusd did not exit cleanly");
}

void tbt_console_user(const tbt_console_t *c, const char *name, const char *groups,
                      char token[80]) {
        char *out = NULL;
        int rc = tbt_run(&out, "'%s/bin/taskbus' admin user create %s --groups %s --config '%s' 2>&1",
                         tbt_build_dir(), name, groups, c->st.config_path);
        cr_assert_eq(rc, 0, "taskbus admin user create %s: %s", name, out ? out : "");
        const char *t = out ? strstr(out, "tbk_") : NULL;
        cr_assert_not_null(t, "no token in: %s", out ? out : "");
        snprintf(token, 80, "%.68s", t);
        free(out);
}

void tbt_console_browser(const tbt_console_t *c, const char *script, const char *env,
                         const char *pass) {
        static const char *const need[] = {"/usr/bin/chromium", "/usr/bin/chromedriver"};
        for (size_t i = 0; i < 2; i++)
                cr_assert_eq(access(need[i], X_OK), 0,
                             "%s is missing: apt-get install chromium chromium-driver "
                             "python3-selenium (tools/test installs them)", need[i]);
        char *out = NULL;
        int rc = tbt_run(&out, "TB_URL='http://127.0.0.1:%d' %s /usr/bin/python3 '%s/tests/console/%s' 2>&1",
                         c->port, env ? env : "", tbt_source_dir(), script);
        fprintf(stderr, "%s\n", out ? out : "(no output)");
        char line[128];
        snprintf(line, sizeof(line), "PASS %s", pass);
        bool passed = out && strstr(out, line);
        free(out);
        cr_assert_eq(rc, 0, "the browser test %s failed (exit %d); its output is above", script, rc);
        cr_assert(passed, "no '%s' line", line);
}

tbt_session_t tbt_session_sign_in(int port, const char *authz, const char *extra_header) {
        tbt_session_t s = {0};
        char body[200];
        snprintf(body, sizeof(body), "{\"token\": \"%s\"}", authz + strlen("Bearer "));
        const char *hdrs[] = {extra_header, NULL};
        tbt_http_res_t r = tbt_http_with(port, "POST", "/v1/session", extra_header ? hdrs : NULL,
                                         body);
        cr_assert_eq(r.status, 201, "sign-in: %ld %s", r.status, r.body.data);
        tbt_http_header(&r, "Set-Cookie", s.set_cookie, sizeof(s.set_cookie));
        cr_assert(!strncmp(s.set_cookie, "taskbus_session=tbs_", 20), "Set-Cookie: %s",
                  s.set_cookie);
        const char *semi = strchr(s.set_cookie, ';');
        cr_assert_not_null(semi);
        snprintf(s.id, sizeof(s.id), "%.*s", (int)(semi - s.set_cookie - 16),
                 s.set_cookie + 16);
        snprintf(s.cookie, sizeof(s.cookie), "Cookie: taskbus_session=%s", s.id);
        const char *csrf = json_string_value(json_object_get(r.j, "csrf"));
        cr_assert(csrf && strlen(csrf) == 64, "no csrf in %s", r.body.data);
        snprintf(s.csrf, sizeof(s.csrf), "%s", csrf);
        tbt_http_free(&r);
        return s;
}

tbt_http_res_t tbt_session_http(int port, const tbt_session_t *s, const char *method,
                                const char *path, const char *body, bool with_csrf,
                                const char *csrf_value) {
        char ch[160];
        snprintf(ch, sizeof(ch), "X-Taskbus-CSRF: %s", csrf_value ? csrf_value : s->csrf);
        const char *hdrs[] = {s->cookie, with_csrf ? ch : NULL, NULL};
        return tbt_http_with(port, method, path, hdrs, body);
}
