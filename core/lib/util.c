/**
 * @file util.c
 * @brief Error strings, logging, clocks, RFC 3339 time and random ids.
 */
#include "tb.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *tb_err_names[] = {
        [TB_OK] = "ok",
        [TB_ERR_INVALID] = "invalid",
        [TB_ERR_NOT_FOUND] = "not_found",
        [TB_ERR_CONFLICT] = "conflict",
        [TB_ERR_FORBIDDEN] = "forbidden",
        [TB_ERR_UNAUTHENTICATED] = "unauthenticated",
        [TB_ERR_THROTTLED] = "throttled",
        [TB_ERR_IO] = "io",
        [TB_ERR_KAFKA] = "kafka",
        [TB_ERR_PG] = "postgres",
        [TB_ERR_TIMEOUT] = "timeout",
        [TB_ERR_FENCED] = "fenced",
        [TB_ERR_NOMEM] = "nomem",
        [TB_ERR_UNSUPPORTED] = "unsupported",
        [TB_ERR_INTERNAL] = "internal",
};

const char *tb_err_name(tb_err_t err) {
        if ((size_t)err >= TB_ARRAY_LEN(tb_err_names) || !tb_err_names[err])
                return "unknown";
        return tb_err_names[err];
}

tb_err_t tb_seterr(char *errstr, size_t errstr_size, tb_err_t err,
                   const char *fmt, ...) {
        if (errstr && errstr_size > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(errstr, errstr_size, fmt, ap);
                va_end(ap);
        }
        return err;
}

void *tb_array_grow(void *arr, size_t *cap, size_t elem_size, size_t first) {
        if (!elem_size || *cap > SIZE_MAX / 2 / elem_size || first > SIZE_MAX / elem_size)
                return NULL;
        size_t n = *cap ? *cap * 2 : first;
        void *p = realloc(arr, n * elem_size);
        if (p)
                *cap = n;
        return p;
}

bool tb_snprintf(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return n < 0 || (size_t)n >= size;
}

const char *tb_names_nearest(const char *key, const char *const *names, size_t n,
                             tb_name_distance_fn *distance, size_t max_distance,
                             char *list, size_t list_size) {
        size_t len = 0, best_d = SIZE_MAX;
        const char *best = NULL;
        if (list_size)
                list[0] = '\0';
        for (size_t i = 0; i < n; i++) {
                int w = snprintf(list + len, list_size - len, "%s%s", i ? ", " : "",
                                 names[i]);
                if (w > 0 && (size_t)w < list_size - len)
                        len += (size_t)w;
                size_t d = distance(key, names[i]);
                if (d < best_d) {
                        best_d = d;
                        best = names[i];
                }
        }
        return best && best_d <= max_distance ? best : NULL;
}

/* ---- logging ---- */

static atomic_int tb_log_min = TB_LOG_INFO;
static pthread_mutex_t tb_log_lock = PTHREAD_MUTEX_INITIALIZER;

void tb_log_set_level(tb_log_level_t level) { atomic_store(&tb_log_min, (int)level); }

int tb_log_level_parse(const char *name) {
        static const char *names[] = {"debug", "info", "warn", "error"};
        for (size_t i = 0; i < TB_ARRAY_LEN(names); i++)
                if (name && !strcmp(name, names[i]))
                        return (int)i;
        return -1;
}

void tb_log(tb_log_level_t level, const char *subsys, const char *fmt, ...) {
        static const char *lv[] = {"DEBUG", "INFO", "WARN", "ERROR"};
        if ((int)level < atomic_load(&tb_log_min))
                return;
        char ts[32], msg[2048];
        tb_time_format(tb_now_ms(), ts);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&tb_log_lock);
        fprintf(stderr, "%s %-5s %s: %s\n", ts, lv[level], subsys ? subsys : "-", msg);
        fflush(stderr);
        pthread_mutex_unlock(&tb_log_lock);
}

/* ---- time ---- */

int64_t tb_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tb_mono_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

tb_err_t tb_cond_init_mono(pthread_cond_t *cv) {
        pthread_condattr_t a;
        if (pthread_condattr_init(&a))
                return TB_ERR_NOMEM;
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        int rc = pthread_cond_init(cv, &a);
        pthread_condattr_destroy(&a);
        return rc ? TB_ERR_NOMEM : TB_OK;
}

struct timespec tb_mono_deadline(int64_t ms) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ms < 0)
                ms = 0;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        return ts;
}

bool tb_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms) {
        struct timespec ts = tb_mono_deadline(ms);
        return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

void tb_time_format(int64_t ms, char buf[32]) {
        int64_t secs = ms / 1000;
        int64_t frac = ms % 1000;
        if (frac < 0) {
                frac += 1000;
                secs -= 1;
        }
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
        if (frac)
                snprintf(buf + n, 32 - n, ".%03dZ", (int)frac);
        else
                snprintf(buf + n, 32 - n, "Z");
}

static int tb_digits(const char **p, int n, int *out) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if ((*p)[i] < '0' || (*p)[i] > '9')
                        return -1;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *out = v;
        return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t tb_days_from_civil(int64_t y, int m, int d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

tb_err_t tb_time_parse(const char *s, int64_t *ms, char *errstr,
                       size_t errstr_size) {
        const char *p = s;
        int Y, M, D, h, m, sec, frac = 0, fdig = 0;
        if (!s)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "missing time");
        if (tb_digits(&p, 4, &Y) || *p++ != '-' || tb_digits(&p, 2, &M) ||
            *p++ != '-' || tb_digits(&p, 2, &D) || (*p != 'T' && *p != 't' && *p != ' '))
                goto bad;
        p++;
        if (tb_digits(&p, 2, &h) || *p++ != ':' || tb_digits(&p, 2, &m) ||
            *p++ != ':' || tb_digits(&p, 2, &sec))
                goto bad;
        if (*p == '.') {
                p++;
                while (*p >= '0' && *p <= '9') {
                        if (fdig < 3) {
                                frac = frac * 10 + (*p - '0');
                                fdig++;
                        }
                        p++;
                }
                if (fdig == 0)
                        goto bad;
                while (fdig < 3) {
                        frac *= 10;
                        fdig++;
                }
        }
        int off_min = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                int sign = *p == '-' ? -1 : 1, oh, om;
                p++;
                if (tb_digits(&p, 2, &oh) || *p++ != ':' || tb_digits(&p, 2, &om) ||
                    oh > 23 || om > 59)
                        goto bad;
                off_min = sign * (oh * 60 + om);
        } else {
                goto bad;
        }
        if (*p)
                goto bad;
        static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
        if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || (M == 2 && D == 29 && !leap) ||
            h > 23 || m > 59 || sec > 60)
                goto bad;
        if (sec == 60)
                sec = 59; /* leap second: clamp, POSIX time has none */
        int64_t days = tb_days_from_civil(Y, M, D);
        *ms = ((days * 86400 + h * 3600 + m * 60 + sec) - (int64_t)off_min * 60) * 1000 + frac;
        return TB_OK;
bad:
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "'%.64s' is not an RFC 3339 time (expected e.g. 2026-01-31T23:59:00Z)",
                         s);
}

/* ---- random ---- */

tb_err_t tb_random_bytes(void *buf, size_t len) {
        unsigned char *p = buf;
        while (len > 0) {
                ssize_t n = getrandom(p, len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return TB_ERR_IO;
                }
                p += n;
                len -= (size_t)n;
        }
        return TB_OK;
}

void tb_uuid4(char out[37]) {
        unsigned char b[16];
        if (tb_random_bytes(b, sizeof(b)) != TB_OK)
                abort(); /* getrandom cannot fail on Linux >= 3.17 with flags 0 */
        b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
        b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
        snprintf(out, 37,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
                 b[11], b[12], b[13], b[14], b[15]);
}

/* ---- buffers ---- */

static tb_err_t tb_buf_reserve(tb_buf_t *buf, size_t extra) {
        if (buf->len + extra + 1 <= buf->cap)
                return TB_OK;
        size_t cap = buf->cap ? buf->cap : 256;
        while (cap < buf->len + extra + 1) {
                if (cap > SIZE_MAX / 2)
                        return TB_ERR_NOMEM;
                cap *= 2;
        }
        char *p = realloc(buf->data, cap);
        if (!p)
                return TB_ERR_NOMEM;
        buf->data = p;
        buf->cap = cap;
        return TB_OK;
}

tb_err_t tb_buf_append(tb_buf_t *buf, const void *data, size_t len) {
        if (tb_buf_reserve(buf, len) != TB_OK)
                return TB_ERR_NOMEM;
        if (len)
                memcpy(buf->data + buf->len, data, len);
        buf->len += len;
        buf->data[buf->len] = '\0';
        return TB_OK;
}

tb_err_t tb_buf_printf(tb_buf_t *buf, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0 || tb_buf_reserve(buf, (size_t)n) != TB_OK)
                return TB_ERR_NOMEM;
        va_start(ap, fmt);
        vsnprintf(buf->data + buf->len, buf->cap - buf->len, fmt, ap);
        va_end(ap);
        buf->len += (size_t)n;
        return TB_OK;
}

void tb_buf_free(tb_buf_t *buf) {
        free(buf->data);
        buf->data = NULL;
        buf->len = buf->cap = 0;
}

int tb_hex_digit(int c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

tb_err_t tb_file_read(const char *setting, const char *path, const char *what, size_t max,
                      tb_file_access_t access, const char *fix, char **out, size_t *out_len,
                      char *errstr, size_t errstr_size) {
        *out = NULL;
        *out_len = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO, "%s: cannot open '%s': %s; %s",
                                 setting, path, strerror(errno), fix);
        struct stat sb;
        tb_err_t err = TB_OK;
        unsigned mode = 0;
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (size_t)sb.st_size > max) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "%s: '%s' is not a regular file of at most %zu bytes; point "
                                "%s at the file holding %s",
                                setting, path, max, setting, what);
                goto out;
        }
        mode = (unsigned)(sb.st_mode & 07777);
        if (access != TB_FILE_PUBLIC && (sb.st_mode & 007)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "%s: '%s' has mode %04o: other users can read %s; chmod 600 "
                                "'%s' (owned by the user taskbus runs as)",
                                setting, path, mode, what, path);
                goto out;
        }
        if (access == TB_FILE_PRIVATE && (sb.st_mode & 070)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "%s: '%s' has mode %04o: its group can read %s, which must be "
                                "its owner's alone; chmod 600 '%s'",
                                setting, path, mode, what, path);
                goto out;
        }
        if (access == TB_FILE_SECRET && (sb.st_mode & 070))
                tb_warn("config", "%s: '%s' has mode %04o: its group can read %s; chmod 600 "
                        "'%s' unless that group is meant to",
                        setting, path, mode, what, path);
        size_t cap = (size_t)sb.st_size + 1, len = 0;
        char *buf = malloc(cap);
        if (!buf) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "%s: out of memory", setting);
                goto out;
        }
        for (;;) {
                ssize_t n = read(fd, buf + len, cap - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_IO, "%s: reading '%s': %s",
                                        setting, path, strerror(errno));
                        explicit_bzero(buf, cap);
                        free(buf);
                        goto out;
                }
                len += (size_t)n;
                if (n == 0 || len == cap - 1)
                        break;
        }
        buf[len] = '\0';
        *out = buf;
        *out_len = len;
out:
        close(fd);
        return err;
}
