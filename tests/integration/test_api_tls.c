/**
 * @file test_api_tls.c
 * @brief The REST API over HTTPS (api.tls_cert, api.tls_key) on a private
 *        stack (real Kafka, real PostgreSQL): a throwaway CA and a server
 *        certificate for 127.0.0.1 are made with the openssl command in a
 *        temp dir, then taskbusd's api role serves them. With the CA a GET
 *        /healthz answers 200 and the CLI lists tasks (--cacert); without it
 *        verification fails (libcurl and the CLI); plain HTTP on the TLS port
 *        gets no HTTP answer; the "unencrypted" warning is logged only for a
 *        plain-HTTP API beyond loopback. A missing key file, a key that is not
 *        the certificate's, an encrypted key and a key file others can read
 *        each fail the start with a message naming api.tls_key (a key its
 *        group can read starts, with a warning); a key in place of the
 *        certificate names api.tls_cert.
 */
#include "support.h"
#include "support_api.h"
#include "support_stack.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static tbt_stack_t st;
static char dir[64];     /* the temp dir of the certificates */
static char ca[128], cert[128], key[128], other_key[128], enc_key[128];
static char alice[96];

/* Make a CA, a server certificate for IP 127.0.0.1 signed by it, and a key
 * of no certificate, all in dir (EC P-256: quick to generate). */
static void make_certs(void) {
        snprintf(dir, sizeof(dir), "/tmp/tbt-tls-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
        snprintf(cert, sizeof(cert), "%s/server.pem", dir);
        snprintf(key, sizeof(key), "%s/server.key", dir);
        snprintf(other_key, sizeof(other_key), "%s/other.key", dir);
        snprintf(enc_key, sizeof(enc_key), "%s/encrypted.key", dir);
        char *out = NULL;
        int rc = tbt_run(
                &out,
                "set -e; cd '%s'; umask 077; "
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.pem -days 2 -subj /CN=taskbus-test-ca "
                "-addext basicConstraints=critical,CA:TRUE "
                "-addext keyUsage=critical,keyCertSign,cRLSign; "
                "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout server.key -out server.csr -subj /CN=127.0.0.1; "
                "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n"
                "keyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext.cnf; "
                "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                "-days 2 -extfile ext.cnf -out server.pem; "
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key; "
                "openssl pkey -in server.key -aes256 -passout pass:secret -out encrypted.key",
                dir);
        cr_assert_eq(rc, 0, "openssl failed: %s", out ? out : "");
        free(out);
}

/* A config for the api role on 127.0.0.1 or 0.0.0.0 (\p any) : \p port, with
 * \p tls (api.* lines, may be ""). @returns its malloc'd path. */
static char *conf_with(int port, bool any, const char *tls) {
        char *text = NULL;
        cr_assert_gt(asprintf(&text,
                              "security = { key_file = \"%s\"; };\n"
                              "topics = { prefix = \"%s\"; partitions = 2; };\n"
                              "postgres = { url = \"%s\"; };\n"
                              "api = { listen = \"%s:%d\"; %s };\n"
                              "kafka = { bootstrap_servers = \"%s\"; };\n",
                              st.key_path, st.prefix, st.db_url, any ? "0.0.0.0" : "127.0.0.1",
                              port, tls, st.kafka),
                     0);
        char *path = tbt_write_temp(".conf", text);
        free(text);
        cr_assert_not_null(path);
        return path;
}

/* Start `taskbusd --config conf --roles api`, its output alone in st.log_path. */
static pid_t start_api(const char *conf) {
        char bin[1024];
        snprintf(bin, sizeof(bin), "%s/bin/taskbusd", tbt_build_dir());
        cr_assert_eq(access(bin, X_OK), 0, "%s is not built", bin);
        int fd = open(st.log_path, O_WRONLY | O_TRUNC | O_CREAT, 0600);
        cr_assert_geq(fd, 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                close(fd);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                unsetenv("TASKBUS_KAFKA");
                unsetenv("TASKBUS_API_LISTEN");
                unsetenv("TASKBUS_API_TLS_CERT");
                unsetenv("TASKBUS_API_TLS_KEY");
                execl(bin, bin, "--config", conf, "--roles", "api", (char *)NULL);
                _exit(127);
        }
        close(fd);
        return pid;
}

/* One GET with libcurl; \p cainfo NULL: the system's CA store. */
typedef struct get_res {
        CURLcode rc;
        long status;
        tb_buf_t body;
} get_res_t;

static size_t get_body(char *p, size_t size, size_t nmemb, void *ud) {
        return tb_buf_append(ud, p, size * nmemb) == TB_OK ? size * nmemb : 0;
}

static get_res_t get(const char *url, const char *cainfo) {
        get_res_t r = {0};
        CURL *c = curl_easy_init();
        cr_assert_not_null(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, get_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
        if (cainfo)
                curl_easy_setopt(c, CURLOPT_CAINFO, cainfo);
        r.rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        curl_easy_cleanup(c);
        tb_buf_append(&r.body, "", 1);
        return r;
}

typedef struct up_arg {
        char url[128];
} up_arg_t;

/* Condition: /healthz answers over HTTPS with the CA (any status). */
static bool https_up(void *arg) {
        get_res_t r = get(((up_arg_t *)arg)->url, ca);
        tb_buf_free(&r.body);
        return r.rc == CURLE_OK && r.status > 0;
}

/* Condition: the child *(pid_t *)arg has exited (its status kept in g_exit). */
static int g_exit;
static bool exited(void *arg) {
        pid_t pid = *(pid_t *)arg;
        return waitpid(pid, &g_exit, WNOHANG) == pid;
}

static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        tbt_stack_create(&st, &(tbt_stack_opts_t){.partitions = 2});
        tbt_stack_user(&st, "alice", "ops", alice);
        make_certs();
}

static void teardown(void) {
        tbt_stack_destroy(&st);
        char *out = NULL;
        if (dir[0])
                tbt_run(&out, "rm -rf '%s'", dir);
        free(out);
        curl_global_cleanup();
}

TestSuite(api_tls, .init = setup, .fini = teardown, .timeout = 300);

Test(api_tls, https_with_the_ca_and_nothing_without_it) {
        int port = tbt_free_port();
        char tls[512];
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, key);
        /* 0.0.0.0: beyond loopback, where plain HTTP would be warned about. */
        char *conf = conf_with(port, true, tls);
        pid_t pid = start_api(conf);
        up_arg_t up;
        snprintf(up.url, sizeof(up.url), "https://127.0.0.1:%d/healthz", port);
        bool came_up = tbt_wait_until(https_up, &up, 90000);
        if (!came_up) {
                char *log = tbt_daemon_log(&st);
                fprintf(stderr, "---- taskbusd log ----\n%s\n", log);
                free(log);
        }
        cr_assert(came_up, "the API did not answer HTTPS on port %d", port);

        /* With the CA: a normal answer. */
        get_res_t r = get(up.url, ca);
        cr_assert_eq(r.rc, CURLE_OK, "%s", curl_easy_strerror(r.rc));
        cr_assert_eq(r.status, 200, "/healthz: %ld %s", r.status, (char *)r.body.data);
        json_t *j = json_loads(r.body.data, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok", "%s",
                         (char *)r.body.data);
        json_decref(j);
        tb_buf_free(&r.body);

        /* Without it (the system's store): the certificate is not trusted. */
        r = get(up.url, NULL);
        cr_assert_eq(r.rc, CURLE_PEER_FAILED_VERIFICATION, "without the CA: %s (status %ld)",
                     curl_easy_strerror(r.rc), r.status);
        cr_assert_eq(r.status, 0);
        tb_buf_free(&r.body);

        /* Plain HTTP on the TLS port: no HTTP answer, from libcurl... */
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", port);
        r = get(url, NULL);
        cr_assert_neq(r.rc, CURLE_OK, "plain HTTP got an answer: %ld %s", r.status,
                      (char *)r.body.data);
        cr_assert_eq(r.status, 0, "plain HTTP got status %ld", r.status);
        tb_buf_free(&r.body);
        /* ...nor on a raw socket: whatever comes back is not "HTTP/". */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_geq(s, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        struct timeval tv = {.tv_sec = 20};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        cr_assert_eq(send(s, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
        char answer[512];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof(answer) - 1 &&
               (n = recv(s, answer + got, sizeof(answer) - 1 - got, 0)) > 0)
                got += (size_t)n;
        answer[got] = '\0';
        close(s);
        cr_assert(got < 5 || strncmp(answer, "HTTP/", 5),
                  "plain HTTP on the TLS port got an HTTP answer: %s", answer);

        /* The CLI: with --cacert it lists; without it, it says what to do. */
        char *out = NULL;
        const char *tok = alice + strlen("Bearer ");
        int rc = tbt_run(&out,
                         "HOME=%s TASKBUS_API=https://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                         "%s/bin/taskbus tasks list --cacert '%s' --json",
                         dir, port, tok, tbt_build_dir(), ca);
        cr_assert_eq(rc, 0, "taskbus tasks list --cacert: %s", out ? out : "");
        cr_assert_not_null(strstr(out, "["), "%s", out);
        free(out);
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_CACERT='%s' TASKBUS_API=https://127.0.0.1:%d "
                     "TASKBUS_TOKEN='%s' %s/bin/taskbus tasks get no-such-task",
                     dir, ca, port, tok, tbt_build_dir());
        cr_assert_neq(rc, 0);
        cr_assert_not_null(strstr(out, "404"), "TASKBUS_CACERT: expected the API's 404: %s",
                           out);
        free(out);
        rc = tbt_run(&out,
                     "HOME=%s TASKBUS_API=https://127.0.0.1:%d TASKBUS_TOKEN='%s' "
                     "%s/bin/taskbus tasks list",
                     dir, port, tok, tbt_build_dir());
        cr_assert_neq(rc, 0, "the CLI trusted a certificate of an unknown CA: %s", out);
        cr_assert_not_null(strstr(out, "cannot verify the API's certificate"), "%s", out);
        cr_assert_not_null(strstr(out, "--cacert"), "%s", out);
        free(out);

        bool sanitizer = false;
        cr_assert(tbt_daemon_end(&st, pid, &sanitizer), "taskbusd did not stop cleanly");
        cr_assert_not(sanitizer);
        char *log = tbt_daemon_log(&st);
        char want[96];
        snprintf(want, sizeof(want), "listening on https://0.0.0.0:%d", port);
        cr_assert_not_null(strstr(log, want), "no '%s' in the log:\n%s", want, log);
        cr_assert_null(strstr(log, "unencrypted"),
                       "the plain-HTTP warning was logged with TLS on:\n%s", log);
        cr_assert_null(strstr(log, "chmod 600"), "a 0600 key was warned about:\n%s", log);
        free(log);
        unlink(conf);
        free(conf);
}

/* Without TLS the warning stays, beyond loopback only. */
static void plain_start_stop(bool any, bool want_warning) {
        int port = tbt_free_port();
        char *conf = conf_with(port, any, "");
        pid_t pid = start_api(conf);
        cr_assert(tbt_wait_until(tbt_http_up, &port, 90000), "the API did not come up");
        bool sanitizer = false;
        cr_assert(tbt_daemon_end(&st, pid, &sanitizer));
        cr_assert_not(sanitizer);
        char *log = tbt_daemon_log(&st);
        char want[96];
        snprintf(want, sizeof(want), "listening on http://%s:%d", any ? "0.0.0.0" : "127.0.0.1",
                 port);
        cr_assert_not_null(strstr(log, want), "no '%s' in the log:\n%s", want, log);
        cr_assert_eq(strstr(log, "bearer tokens cross the network unencrypted") != NULL,
                     want_warning, "plain HTTP on %s: warning %s expected:\n%s",
                     any ? "0.0.0.0" : "127.0.0.1", want_warning ? "" : "not", log);
        free(log);
        unlink(conf);
        free(conf);
}

Test(api_tls, plain_http_warns_beyond_loopback_only) {
        plain_start_stop(true, true);
        plain_start_stop(false, false);
}

/* taskbusd with \p tls must exit non-zero at start, its log holding every
 * one of the NULL-terminated \p needles. */
static void start_fails(const char *tls, const char *const *needles) {
        char *conf = conf_with(tbt_free_port(), false, tls);
        pid_t pid = start_api(conf);
        bool done = tbt_wait_until(exited, &pid, 90000);
        if (!done)
                tbt_daemon_stop(pid, SIGKILL);
        char *log = tbt_daemon_log(&st);
        cr_assert(done, "taskbusd kept running with %s:\n%s", tls, log);
        cr_assert(WIFEXITED(g_exit) && WEXITSTATUS(g_exit) != 0,
                  "taskbusd exit 0x%x with %s:\n%s", g_exit, tls, log);
        cr_assert_null(strstr(log, "Sanitizer"), "%s", log);
        for (const char *const *n = needles; *n; n++)
                cr_assert_not_null(strstr(log, *n), "no '%s' in the log of a start with %s:\n%s",
                                   *n, tls, log);
        free(log);
        unlink(conf);
        free(conf);
}

Test(api_tls, a_bad_key_is_a_startup_error_naming_api_tls_key) {
        char tls[512], missing[160];
        snprintf(missing, sizeof(missing), "%s/no-such.key", dir);
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, missing);
        start_fails(tls, (const char *[]){"api.tls_key", missing, "cannot open", NULL});

        /* A key, but not the certificate's. */
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, other_key);
        start_fails(tls, (const char *[]){"api.tls_key", "is not the private key", NULL});

        /* The right key, readable by everyone. */
        cr_assert_eq(chmod(key, 0644), 0);
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, key);
        start_fails(tls, (const char *[]){"api.tls_key", "chmod 600", NULL});
        cr_assert_eq(chmod(key, 0600), 0);

        /* The right key under a passphrase (nothing may prompt for it). */
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, enc_key);
        start_fails(tls, (const char *[]){"api.tls_key", "encrypted with a passphrase", NULL});

        /* A key where the certificate should be. */
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", key, key);
        start_fails(tls, (const char *[]){"api.tls_cert", "no PEM certificate", NULL});
}

Test(api_tls, a_key_its_group_can_read_starts_with_a_warning) {
        cr_assert_eq(chmod(key, 0640), 0);
        int port = tbt_free_port();
        char tls[512];
        snprintf(tls, sizeof(tls), "tls_cert = \"%s\"; tls_key = \"%s\";", cert, key);
        char *conf = conf_with(port, false, tls);
        pid_t pid = start_api(conf);
        up_arg_t up;
        snprintf(up.url, sizeof(up.url), "https://127.0.0.1:%d/healthz", port);
        cr_assert(tbt_wait_until(https_up, &up, 90000), "the API did not answer HTTPS");
        bool sanitizer = false;
        cr_assert(tbt_daemon_end(&st, pid, &sanitizer));
        cr_assert_not(sanitizer);
        char *log = tbt_daemon_log(&st);
        char want[256];
        snprintf(want, sizeof(want), "api.tls_key: '%s' has mode 0640: its group can read", key);
        cr_assert_not_null(strstr(log, want), "no '%s' in the log:\n%s", want, log);
        cr_assert_not_null(strstr(log, "chmod 600"), "%s", log);
        free(log);
        cr_assert_eq(chmod(key, 0600), 0);
        unlink(conf);
        free(conf);
}
