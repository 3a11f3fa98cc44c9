/**
 * @file support.c
 * @brief Implementation of tests/support.h.
 */
#include "support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tbt_env(const char *name, const char *dflt) {
        const char *v = getenv(name);
        return v && *v ? v : dflt;
}

const char *tbt_build_dir(void) { return tbt_env("TB_BUILD_DIR", "build"); }
const char *tbt_source_dir(void) { return tbt_env("TB_SOURCE_DIR", "."); }

int tbt_run(char **out, const char *fmt, ...) {
        char *cmd = NULL, *full = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&cmd, fmt, ap) < 0)
                cmd = NULL;
        va_end(ap);
        if (!cmd || asprintf(&full, "( %s ) 2>&1", cmd) < 0) {
                free(cmd);
                return -1;
        }
        free(cmd);
        FILE *fp = popen(full, "r");
        free(full);
        if (!fp)
                return -1;
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap);
        size_t n;
        while (buf && (n = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
                len += n;
                if (cap - len < 1024) {
                        char *nb = realloc(buf, cap * 2);
                        if (!nb)
                                break;
                        buf = nb;
                        cap *= 2;
                }
        }
        if (buf)
                buf[len] = '\0';
        int st = pclose(fp);
        if (out)
                *out = buf;
        else
                free(buf);
        if (st == -1 || !WIFEXITED(st))
                return -1;
        return WEXITSTATUS(st);
}

bool tbt_wait_until(bool (*cond)(void *), void *arg, int timeout_ms) {
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
                if (cond(arg))
                        return true;
                clock_gettime(CLOCK_MONOTONIC, &now);
                long el = (now.tv_sec - start.tv_sec) * 1000 +
                          (now.tv_nsec - start.tv_nsec) / 1000000;
                if (el >= timeout_ms)
                        return cond(arg);
                usleep(50 * 1000);
        }
}

char *tbt_write_temp(const char *suffix, const char *text) {
        char *path = NULL;
        if (asprintf(&path, "/tmp/tbt-XXXXXX%s", suffix ? suffix : "") < 0)
                return NULL;
        int fd = mkstemps(path, suffix ? (int)strlen(suffix) : 0);
        if (fd < 0) {
                free(path);
                return NULL;
        }
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len) {
                close(fd);
                free(path);
                return NULL;
        }
        close(fd);
        return path;
}

const char *tbt_pg_server(char *buf, size_t size) {
        const char *t = getenv("TB_TEST_PG");
        if (t && *t) {
                snprintf(buf, size, "%s", t);
                return buf;
        }
        snprintf(buf, size, "%s", tbt_env("TASKBUS_PG", "postgresql://taskbus@127.0.0.1:55432"));
        /* drop the "/dbname" after the host part, keep any "?options" out too */
        char *scheme = strstr(buf, "://");
        char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
        if (slash)
                *slash = '\0';
        return buf;
}

int tbt_free_port(void) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        socklen_t len = sizeof(sa);
        getsockname(fd, (struct sockaddr *)&sa, &len);
        close(fd);
        return ntohs(sa.sin_port);
}

bool tbt_http_up(void *port) {
        char *out = NULL;
        int rc = tbt_run(&out, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/healthz",
                         *(int *)port);
        bool up = rc == 0 && out && strcmp(out, "000");
        free(out);
        return up;
}

size_t tbt_hex_records(const char *rel, tb_buf_t *out, size_t max) {
        char path[1024], line[4096];
        snprintf(path, sizeof(path), "%s/%s", tbt_source_dir(), rel);
        FILE *f = fopen(path, "r");
        size_t n = 0;
        if (!f)
                return 0;
        while (n < max && fgets(line, sizeof(line), f)) {
                if (line[0] == '#' || line[0] == '\n')
                        continue;
                out[n] = (tb_buf_t){0};
                for (size_t i = 0; line[i] && line[i + 1] && line[i] != '\n'; i += 2) {
                        unsigned int v;
                        if (sscanf(line + i, "%2x", &v) != 1)
                                break;
                        unsigned char c = (unsigned char)v;
                        tb_buf_append(&out[n], &c, 1);
                }
                n++;
        }
        fclose(f);
        return n;
}
