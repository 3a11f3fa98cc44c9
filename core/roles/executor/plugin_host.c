/**
 * @file executor/plugin_host.c
 * @brief Loading executor plugins, checking their ABI and configuration,
 *        and brokering their runs (see plugin_host.h and taskbus/plugin.h).
 *
 * Why the host tracks every active run: a plugin is foreign code. Looking
 * each callback's run pointer up in the active list (instead of trusting it)
 * turns a late or duplicated finished() into a logged warning rather than a
 * use-after-free, and lets the host guarantee the executor exactly one
 * result per accepted run, even across unload.
 */
#include "executor/plugin_host.h"

#include "config/config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TB_PLUGIN_SUBSYS "plugin"
/* The fields ABI major 1 needs: everything up to and including destroy. */
#define TB_PLUGIN_DESC_MIN_SIZE                                                \
        (offsetof(tb_plugin_t, destroy) + sizeof(((tb_plugin_t *)0)->destroy))
/* The ABI header every descriptor has in every major: size, major, minor. */
#define TB_PLUGIN_DESC_HDR_SIZE (offsetof(tb_plugin_t, abi_minor) + sizeof(uint16_t))

struct tb_plugin_hrun {
        tb_plugin_run_t run; /* first: the plugin's handle is &hr->run */
        tb_plugin_instance_t *pi;
        void *opaque;
        atomic_int refs;
        bool finished;       /* under pi->lock */
        tb_plugin_hrun_t *prev, *next; /* pi->active, under pi->lock */
        char **argv_copy;
        tb_plugin_kv_t *env_copy;
        tb_plugin_kv_t *opt_copy;
        tb_plugin_kv_t *pol_copy;
};

struct tb_plugin_instance {
        void *dl;
        const tb_plugin_t *desc;
        void *state;
        tb_plugin_host_t host;   /* handed to the plugin; host_data = this */
        tb_plugin_sink_t sink;
        char *path;
        char logname[96];        /* "plugin/<name>" */
        pthread_mutex_t lock;
        pthread_cond_t cond;     /* signalled when n_active drops */
        tb_plugin_hrun_t *active;
        size_t n_active;         /* accepted runs whose sink finished() has not returned */
        bool unloading;
};

const char *tb_plugin_status_name(int status) {
        switch (status) {
        case TB_PLUGIN_RUN_SUCCEEDED: return "succeeded";
        case TB_PLUGIN_RUN_FAILED: return "failed";
        case TB_PLUGIN_RUN_TIMED_OUT: return "timed_out";
        case TB_PLUGIN_RUN_CANCELLED: return "cancelled";
        case TB_PLUGIN_RUN_INFRA_ERROR: return "infra_error";
        default: return "unknown";
        }
}

/* ---- small helpers ------------------------------------------------------- */

/* "/x/y/shell.so" -> "shell": names a plugin before its descriptor can be
 * trusted to say its own name. */
static void tb_plugin_stem(const char *path, char *out, size_t size) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strcspn(base, ".");
        if (n >= size)
                n = size - 1;
        memcpy(out, base, n);
        out[n] = '\0';
}

static const char *tb_plugin_ftype(mode_t m) {
        if (S_ISDIR(m)) return "a directory";
        if (S_ISFIFO(m)) return "a FIFO";
        if (S_ISCHR(m)) return "a character device";
        if (S_ISBLK(m)) return "a block device";
        if (S_ISSOCK(m)) return "a socket";
        return "not a regular file";
}

static void tb_plugin_hrun_free(tb_plugin_hrun_t *hr) {
        tb_plugin_run_t *r = &hr->run;
        free((char *)r->run_id);
        free((char *)r->task_id);
        free((char *)r->script);
        free((char *)r->workdir);
        free((char *)r->os_user);
        free((char *)r->security_group);
        if (hr->argv_copy) {
                for (char **a = hr->argv_copy; *a; a++)
                        free(*a);
                free(hr->argv_copy);
        }
        for (size_t i = 0; hr->env_copy && i < r->n_env; i++) {
                free((char *)hr->env_copy[i].key);
                free((char *)hr->env_copy[i].value);
        }
        free(hr->env_copy);
        for (size_t i = 0; hr->opt_copy && i < r->n_options; i++) {
                free((char *)hr->opt_copy[i].key);
                free((char *)hr->opt_copy[i].value);
        }
        free(hr->opt_copy);
        for (size_t i = 0; hr->pol_copy && i < r->n_policy; i++) {
                free((char *)hr->pol_copy[i].key);
                free((char *)hr->pol_copy[i].value);
        }
        free(hr->pol_copy);
        free(hr);
}

static void tb_plugin_hrun_unref(tb_plugin_hrun_t *hr) {
        if (hr && atomic_fetch_sub(&hr->refs, 1) == 1)
                tb_plugin_hrun_free(hr);
}

/* strdup that keeps NULL as NULL and reports failure through *ok. */
static char *tb_plugin_dup(const char *s, bool *ok) {
        if (!s)
                return NULL;
        char *d = strdup(s);
        if (!d)
                *ok = false;
        return d;
}

static tb_plugin_kv_t *tb_plugin_kv_dup(const tb_plugin_kv_t *kv, size_t n, bool *ok) {
        if (!kv || n == 0)
                return NULL;
        tb_plugin_kv_t *d = calloc(n, sizeof(*d));
        if (!d) {
                *ok = false;
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                d[i].key = tb_plugin_dup(kv[i].key ? kv[i].key : "", ok);
                d[i].value = tb_plugin_dup(kv[i].value ? kv[i].value : "", ok);
        }
        return d;
}

/* Deep copy so that the caller's run may go away once start returns. */
static tb_plugin_hrun_t *tb_plugin_hrun_new(const tb_plugin_run_t *src) {
        tb_plugin_hrun_t *hr = calloc(1, sizeof(*hr));
        if (!hr)
                return NULL;
        bool ok = true;
        tb_plugin_run_t *r = &hr->run;
        r->size = sizeof(*r);
        r->run_id = tb_plugin_dup(src->run_id, &ok);
        r->task_id = tb_plugin_dup(src->task_id, &ok);
        r->nominal_time_ms = src->nominal_time_ms;
        r->attempt = src->attempt;
        r->script = tb_plugin_dup(src->script, &ok);
        if (src->argv) {
                size_t n = 0;
                while (src->argv[n])
                        n++;
                hr->argv_copy = calloc(n + 1, sizeof(char *));
                if (!hr->argv_copy)
                        ok = false;
                for (size_t i = 0; hr->argv_copy && i < n; i++)
                        hr->argv_copy[i] = tb_plugin_dup(src->argv[i], &ok);
                r->argv = (const char *const *)hr->argv_copy;
        }
        hr->env_copy = tb_plugin_kv_dup(src->env, src->n_env, &ok);
        r->env = hr->env_copy;
        r->n_env = hr->env_copy ? src->n_env : 0;
        r->workdir = tb_plugin_dup(src->workdir, &ok);
        r->os_user = tb_plugin_dup(src->os_user, &ok);
        r->expiry_ms = src->expiry_ms;
        hr->opt_copy = tb_plugin_kv_dup(src->options, src->n_options, &ok);
        r->options = hr->opt_copy;
        r->n_options = hr->opt_copy ? src->n_options : 0;
        r->security_group = tb_plugin_dup(src->security_group, &ok);
        hr->pol_copy = tb_plugin_kv_dup(src->policy, src->n_policy, &ok);
        r->policy = hr->pol_copy;
        r->n_policy = hr->pol_copy ? src->n_policy : 0;
        if (!ok) {
                tb_plugin_hrun_free(hr);
                return NULL;
        }
        return hr;
}

/* Find the active run the plugin means and take a reference on it. */
static tb_plugin_hrun_t *tb_plugin_find_ref(tb_plugin_instance_t *pi,
                                            const tb_plugin_run_t *run) {
        tb_plugin_hrun_t *found = NULL;
        pthread_mutex_lock(&pi->lock);
        for (tb_plugin_hrun_t *hr = pi->active; hr; hr = hr->next) {
                if (&hr->run == run) {
                        atomic_fetch_add(&hr->refs, 1);
                        found = hr;
                        break;
                }
        }
        pthread_mutex_unlock(&pi->lock);
        return found;
}

static void tb_plugin_unlink_locked(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr) {
        hr->finished = true;
        if (hr->prev)
                hr->prev->next = hr->next;
        else
                pi->active = hr->next;
        if (hr->next)
                hr->next->prev = hr->prev;
        hr->prev = hr->next = NULL;
}

/* Called once the sink's finished() for an accepted run has returned. */
static void tb_plugin_run_done(tb_plugin_instance_t *pi) {
        pthread_mutex_lock(&pi->lock);
        pi->n_active--;
        pthread_cond_broadcast(&pi->cond);
        pthread_mutex_unlock(&pi->lock);
}

/* ---- the host vtable given to plugins ------------------------------------ */

static void tb_plugin_host_log(const tb_plugin_host_t *host, int level,
                               const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void tb_plugin_host_log(const tb_plugin_host_t *host, int level,
                               const char *fmt, ...) {
        tb_plugin_instance_t *pi = host->host_data;
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        if (fmt)
                vsnprintf(msg, sizeof(msg), fmt, ap);
        else
                msg[0] = '\0';
        va_end(ap);
        if (level < TB_PLUGIN_LOG_DEBUG)
                level = TB_PLUGIN_LOG_DEBUG;
        if (level > TB_PLUGIN_LOG_ERROR)
                level = TB_PLUGIN_LOG_ERROR;
        tb_log((tb_log_level_t)level, pi->logname, "%s", msg);
}

static void tb_plugin_host_output(const tb_plugin_host_t *host,
                                  const tb_plugin_run_t *run, int stream,
                                  const void *data, size_t len) {
        tb_plugin_instance_t *pi = host->host_data;
        tb_plugin_hrun_t *hr = tb_plugin_find_ref(pi, run);
        if (!hr) {
                tb_warn(pi->logname, "output() for a run that is unknown or "
                        "already finished: %zu bytes dropped", len);
                return;
        }
        if (stream != TB_PLUGIN_STDOUT && stream != TB_PLUGIN_STDERR) {
                tb_warn(pi->logname, "output() with unknown stream %d for run %s; "
                        "treated as stderr", stream, hr->run.run_id);
                stream = TB_PLUGIN_STDERR;
        }
        if (len > 0 && data && pi->sink.output)
                pi->sink.output(pi->sink.opaque, hr->opaque, stream, data, len);
        tb_plugin_hrun_unref(hr);
}

static void tb_plugin_host_heartbeat(const tb_plugin_host_t *host,
                                     const tb_plugin_run_t *run) {
        tb_plugin_instance_t *pi = host->host_data;
        tb_plugin_hrun_t *hr = tb_plugin_find_ref(pi, run);
        if (!hr)
                return;
        if (pi->sink.heartbeat)
                pi->sink.heartbeat(pi->sink.opaque, hr->opaque);
        tb_plugin_hrun_unref(hr);
}

/* Deliver a result for \p hr, already unlinked by the caller, and drop the
 * plugin's reference. */
static void tb_plugin_deliver(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr,
                              const tb_plugin_result_t *res) {
        if (pi->sink.finished)
                pi->sink.finished(pi->sink.opaque, hr->opaque, res);
        tb_plugin_hrun_unref(hr);
        tb_plugin_run_done(pi);
}

static void tb_plugin_host_finished(const tb_plugin_host_t *host,
                                    const tb_plugin_run_t *run,
                                    const tb_plugin_result_t *result) {
        tb_plugin_instance_t *pi = host->host_data;
        tb_plugin_hrun_t *hr = NULL;
        pthread_mutex_lock(&pi->lock);
        for (tb_plugin_hrun_t *it = pi->active; it; it = it->next) {
                if (&it->run == run) {
                        hr = it;
                        tb_plugin_unlink_locked(pi, hr);
                        break;
                }
        }
        pthread_mutex_unlock(&pi->lock);
        if (!hr) {
                tb_warn(pi->logname, "finished() for a run that is unknown or "
                        "already finished: ignored (a plugin must call it "
                        "exactly once per run)");
                return;
        }

        /* Read only the fields both sides know; never trust a bad status. */
        tb_plugin_result_t res = {.size = sizeof(res), .exit_code = -1};
        char why[256];
        if (!result) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                res.error = "plugin reported no result (finished() with NULL)";
        } else if (result->size < offsetof(tb_plugin_result_t, exit_code)) {
                snprintf(why, sizeof(why), "plugin reported a result of %u "
                         "bytes, too small for the status field",
                         (unsigned)result->size);
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                res.error = why;
        } else {
                size_t n = result->size < sizeof(res) ? result->size : sizeof(res);
                memcpy(&res, result, n);
                res.size = sizeof(res);
                if (res.status < TB_PLUGIN_RUN_SUCCEEDED ||
                    res.status > TB_PLUGIN_RUN_INFRA_ERROR) {
                        snprintf(why, sizeof(why), "plugin reported unknown "
                                 "status %d", (int)res.status);
                        res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                        res.error = why;
                }
        }
        tb_plugin_deliver(pi, hr, &res);
}

/* ---- configuration -------------------------------------------------------- */

static tb_err_t tb_plugin_parse_duration(const char *s, int64_t *ms) {
        char *end;
        errno = 0;
        if (!s || !*s || *s == '-' || *s == '+')
                return TB_ERR_INVALID;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s)
                return TB_ERR_INVALID;
        int64_t mult;
        if (!*end || !strcmp(end, "s"))
                mult = 1000;
        else if (!strcmp(end, "ms"))
                mult = 1;
        else if (!strcmp(end, "m"))
                mult = 60 * 1000;
        else if (!strcmp(end, "h"))
                mult = 3600 * 1000;
        else
                return TB_ERR_INVALID;
        if (v > (unsigned long long)(INT64_MAX / mult))
                return TB_ERR_INVALID;
        *ms = (int64_t)v * mult;
        return TB_OK;
}

/* Normalise \p value for \p key into a malloc'd string (see the
 * TB_PLUGIN_CONF_* docs). */
static tb_err_t tb_plugin_conf_value(const char *who, const tb_plugin_config_key_t *key,
                                     const char *value, char **out, char *errstr,
                                     size_t errstr_size) {
        char buf[32];
        const char *norm = value;
        switch (key->type) {
        case TB_PLUGIN_CONF_STRING:
                break;
        case TB_PLUGIN_CONF_BOOL:
                if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
                    !strcasecmp(value, "on") || !strcmp(value, "1"))
                        norm = "true";
                else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") ||
                         !strcasecmp(value, "off") || !strcmp(value, "0"))
                        norm = "false";
                else
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be true or "
                                         "false, got '%s'", who, key->name, value);
                break;
        case TB_PLUGIN_CONF_INT: {
                char *end;
                errno = 0;
                long long v = strtoll(value, &end, 10);
                if (errno || end == value || *end)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be an "
                                         "integer, got '%s'", who, key->name, value);
                snprintf(buf, sizeof(buf), "%lld", v);
                norm = buf;
                break;
        }
        case TB_PLUGIN_CONF_DURATION: {
                int64_t ms;
                if (tb_plugin_parse_duration(value, &ms) != TB_OK)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config key '%s' must be a "
                                         "duration such as 250ms, 5s, 2m or 1h "
                                         "(a bare number means seconds), got '%s'",
                                         who, key->name, value);
                snprintf(buf, sizeof(buf), "%lld", (long long)ms);
                norm = buf;
                break;
        }
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: config key '%s' has unknown type %d in the "
                                 "plugin's key table", who, key->name, (int)key->type);
        }
        *out = strdup(norm);
        if (!*out)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        return TB_OK;
}

static void tb_plugin_kv_free(tb_plugin_kv_t *kv, size_t n) {
        for (size_t i = 0; kv && i < n; i++)
                free((char *)kv[i].value);
        free(kv);
}

/* Check \p config against the plugin's key table and produce the full,
 * normalised list init() receives (*out: keys borrowed from the table,
 * values malloc'd; free with tb_plugin_kv_free). */
static tb_err_t tb_plugin_conf_check(const char *who, const tb_plugin_config_key_t *keys,
                                     const tb_plugin_kv_t *config, size_t n_config,
                                     tb_plugin_kv_t **out, size_t *n_out,
                                     char *errstr, size_t errstr_size) {
        size_t nkeys = 0;
        while (keys && keys[nkeys].name)
                nkeys++;
        *out = NULL;
        *n_out = 0;

        for (size_t i = 0; i < n_config; i++) {
                const char *k = config[i].key;
                if (!k || !*k)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: config entry %zu has an empty key",
                                         who, i + 1);
                size_t j;
                for (j = 0; j < nkeys; j++)
                        if (!strcmp(keys[j].name, k))
                                break;
                if (j == nkeys) {
                        tb_buf_t valid = {0};
                        for (size_t v = 0; v < nkeys; v++)
                                tb_buf_printf(&valid, "%s%s", v ? ", " : "", keys[v].name);
                        tb_err_t err = tb_seterr(
                                errstr, errstr_size, TB_ERR_INVALID,
                                "%s: unknown config key '%s'; valid keys: %s", who,
                                k, nkeys ? (valid.data ? valid.data : "?")
                                         : "(none: this plugin takes no configuration)");
                        tb_buf_free(&valid);
                        return err;
                }
                for (size_t d = 0; d < i; d++)
                        if (config[d].key && !strcmp(config[d].key, k))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s: config key '%s' is set twice",
                                                 who, k);
        }

        tb_plugin_kv_t *kv = calloc(nkeys ? nkeys : 1, sizeof(*kv));
        if (!kv)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        size_t n = 0;
        for (size_t j = 0; j < nkeys; j++) {
                const char *value = keys[j].default_value;
                bool set = false;
                for (size_t i = 0; i < n_config; i++) {
                        if (!strcmp(config[i].key, keys[j].name)) {
                                value = config[i].value ? config[i].value : "";
                                set = true;
                        }
                }
                if (!set && keys[j].required) {
                        tb_plugin_kv_free(kv, n);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s: missing required config key '%s' (%s)",
                                         who, keys[j].name,
                                         keys[j].description ? keys[j].description : "");
                }
                if (!value)
                        continue;
                char *norm = NULL;
                tb_err_t err = tb_plugin_conf_value(who, &keys[j], value, &norm,
                                                    errstr, errstr_size);
                if (err) {
                        tb_plugin_kv_free(kv, n);
                        return err;
                }
                kv[n].key = keys[j].name;
                kv[n].value = norm;
                n++;
        }
        *out = kv;
        *n_out = n;
        return TB_OK;
}

/* ---- loading -------------------------------------------------------------- */

/* The ABI checks, both directions. \p who is "plugin 'stem' (/path)". */
static tb_err_t tb_plugin_check_desc(const char *who, const tb_plugin_t *d,
                                     char *errstr, size_t errstr_size) {
        if (!d)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %s() returned NULL instead of its descriptor",
                                 who, TB_PLUGIN_ENTRY_SYMBOL);
        if (d->size < TB_PLUGIN_DESC_HDR_SIZE)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: descriptor field 'size' is %u, too small "
                                 "for even the ABI header (%zu bytes); is it a "
                                 "taskbus plugin?", who, (unsigned)d->size,
                                 (size_t)TB_PLUGIN_DESC_HDR_SIZE);
        if (d->abi_major != TB_PLUGIN_ABI_MAJOR)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: ABI major %u, host supports %d; rebuild "
                                 "the plugin against this taskbus's "
                                 "taskbus/plugin.h", who, (unsigned)d->abi_major,
                                 TB_PLUGIN_ABI_MAJOR);
        if (d->size < TB_PLUGIN_DESC_MIN_SIZE)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: descriptor field 'size' is %u bytes, host "
                                 "needs at least %zu (ABI %d.x ends with field "
                                 "'destroy'); rebuild the plugin against "
                                 "taskbus/plugin.h", who, (unsigned)d->size,
                                 (size_t)TB_PLUGIN_DESC_MIN_SIZE, TB_PLUGIN_ABI_MAJOR);
        if (d->host_size > sizeof(tb_plugin_host_t))
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: descriptor field 'host_size' is %u bytes "
                                 "(built against ABI %u.%u), host vtable has only "
                                 "%zu (ABI %d.%d); upgrade taskbus or rebuild the "
                                 "plugin against this taskbus's headers", who,
                                 (unsigned)d->host_size, (unsigned)d->abi_major,
                                 (unsigned)d->abi_minor, sizeof(tb_plugin_host_t),
                                 TB_PLUGIN_ABI_MAJOR, TB_PLUGIN_ABI_MINOR);
        const char *missing = !d->name || !*d->name ? "name"
                              : !d->version ? "version"
                              : !d->init ? "init"
                              : !d->start ? "start"
                              : !d->cancel ? "cancel"
                              : !d->destroy ? "destroy" : NULL;
        if (missing)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: descriptor field '%s' is NULL or empty",
                                 who, missing);
        return TB_OK;
}

tb_err_t tb_plugin_load(const char *path, const tb_plugin_kv_t *config,
                        size_t n_config, const tb_plugin_sink_t *sink,
                        tb_plugin_instance_t **out, char *errstr,
                        size_t errstr_size) {
        tb_err_t err = TB_OK;
        tb_plugin_instance_t *pi = NULL;
        tb_plugin_kv_t *conf = NULL;
        size_t n_conf = 0;
        char stem[64], who[PATH_MAX + 96], dlpath[PATH_MAX];
        struct stat sb;

        *out = NULL;
        if (!path || !*path)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "no plugin path configured");
        tb_plugin_stem(path, stem, sizeof(stem));
        snprintf(who, sizeof(who), "plugin '%s' (%s)", stem, path);

        /* Refuse directories, FIFOs and devices before dlopen sees them: a
         * FIFO would block the loader forever. */
        if (stat(path, &sb) != 0)
                return tb_seterr(errstr, errstr_size,
                                 errno == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO,
                                 "%s: cannot stat: %s", who, strerror(errno));
        if (!S_ISREG(sb.st_mode))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: not a regular file (it is %s)", who,
                                 tb_plugin_ftype(sb.st_mode));

        pi = calloc(1, sizeof(*pi));
        if (!pi)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        pthread_mutex_init(&pi->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&pi->cond, &ca);
        pthread_condattr_destroy(&ca);
        pi->path = strdup(path);
        if (!pi->path) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                goto fail;
        }

        /* Without a slash dlopen would search the library path, not the
         * file we just checked. */
        snprintf(dlpath, sizeof(dlpath), "%s%s", strchr(path, '/') ? "" : "./", path);
        dlerror();
        pi->dl = dlopen(dlpath, RTLD_NOW | RTLD_LOCAL);
        if (!pi->dl) {
                const char *e = dlerror();
                err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                "%s: dlopen failed: %s (run `ldd %s` to check its "
                                "dependencies)", who, e ? e : "unknown error", path);
                goto fail;
        }
        dlerror();
        void *sym = dlsym(pi->dl, TB_PLUGIN_ENTRY_SYMBOL);
        if (!sym) {
                const char *e = dlerror();
                err = tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                "%s: missing entry symbol '%s' (%s); a plugin must "
                                "export `const tb_plugin_t *%s(void)`, see "
                                "taskbus/plugin.h", who, TB_PLUGIN_ENTRY_SYMBOL,
                                e ? e : "dlsym found nothing", TB_PLUGIN_ENTRY_SYMBOL);
                goto fail;
        }
        tb_plugin_entry_fn entry;
        memcpy(&entry, &sym, sizeof(entry));
        pi->desc = entry();
        err = tb_plugin_check_desc(who, pi->desc, errstr, errstr_size);
        if (err)
                goto fail;

        snprintf(who, sizeof(who), "plugin '%s' (%s)", pi->desc->name, path);
        snprintf(pi->logname, sizeof(pi->logname), "plugin/%s", pi->desc->name);
        err = tb_plugin_conf_check(who, pi->desc->config_keys, config, n_config,
                                   &conf, &n_conf, errstr, errstr_size);
        if (err)
                goto fail;

        pi->host.size = sizeof(pi->host);
        pi->host.abi_major = TB_PLUGIN_ABI_MAJOR;
        pi->host.abi_minor = TB_PLUGIN_ABI_MINOR;
        pi->host.host_data = pi;
        pi->host.log = tb_plugin_host_log;
        pi->host.output = tb_plugin_host_output;
        pi->host.heartbeat = tb_plugin_host_heartbeat;
        pi->host.finished = tb_plugin_host_finished;
        if (sink)
                pi->sink = *sink;

        char ebuf[1024] = "";
        if (pi->desc->init(&pi->host, conf, n_conf, ebuf, sizeof(ebuf), &pi->state) !=
            TB_PLUGIN_OK) {
                ebuf[sizeof(ebuf) - 1] = '\0';
                err = tb_seterr(errstr, errstr_size, TB_ERR_IO, "%s: init failed: %s",
                                who, *ebuf ? ebuf : "(the plugin gave no reason)");
                goto fail;
        }
        tb_plugin_kv_free(conf, n_conf);
        tb_info(TB_PLUGIN_SUBSYS, "loaded plugin '%s' %s (ABI %u.%u) from %s",
                pi->desc->name, pi->desc->version, (unsigned)pi->desc->abi_major,
                (unsigned)pi->desc->abi_minor, path);
        *out = pi;
        return TB_OK;

fail:
        tb_plugin_kv_free(conf, n_conf);
        if (pi->dl)
                dlclose(pi->dl);
        pthread_mutex_destroy(&pi->lock);
        pthread_cond_destroy(&pi->cond);
        free(pi->path);
        free(pi);
        return err;
}

tb_err_t tb_plugin_resolve(const char *name_or_path, const char *dir, char *out,
                           size_t out_size, char *errstr, size_t errstr_size) {
#ifdef TB_PLUGIN_DIR
        const char *dflt = TB_PLUGIN_DIR;
#else
        const char *dflt = "/usr/local/lib/taskbus/plugins";
#endif
        if (!name_or_path || !*name_or_path)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "plugin: no name or path given (e.g. \"shell\" or "
                                 "\"/usr/lib/taskbus/plugins/shell.so\")");
        bool trunc = strchr(name_or_path, '/')
                             ? tb_snprintf(out, out_size, "%s", name_or_path)
                             : tb_snprintf(out, out_size, "%s/%s.so", dir ? dir : dflt,
                                           name_or_path);
        if (trunc)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "plugin path for '%s' is too long", name_or_path);
        return TB_OK;
}

const char *tb_plugin_name(const tb_plugin_instance_t *pi) { return pi->desc->name; }
const char *tb_plugin_version(const tb_plugin_instance_t *pi) { return pi->desc->version; }

size_t tb_plugin_active_runs(tb_plugin_instance_t *pi) {
        pthread_mutex_lock(&pi->lock);
        size_t n = pi->n_active;
        pthread_mutex_unlock(&pi->lock);
        return n;
}

const char *tb_plugin_run_id(const tb_plugin_hrun_t *hr) { return hr->run.run_id; }

/* ---- runs ----------------------------------------------------------------- */

tb_err_t tb_plugin_run_start(tb_plugin_instance_t *pi, const tb_plugin_run_t *run,
                             void *run_opaque, tb_plugin_hrun_t **out,
                             char *errstr, size_t errstr_size) {
        if (out)
                *out = NULL;
        if (!run || !run->run_id || !*run->run_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "run has no run_id");
        if (!run->task_id || !*run->task_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "run %s has no task_id", run->run_id);
        tb_plugin_hrun_t *hr = tb_plugin_hrun_new(run);
        if (!hr)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                 "out of memory copying run %s", run->run_id);
        hr->pi = pi;
        hr->opaque = run_opaque;
        /* References: the plugin's (dropped after finished()), this call's
         * (so the run outlives a finished() made from inside start()), and
         * the caller's if it asked for a handle. */
        atomic_init(&hr->refs, out ? 3 : 2);

        pthread_mutex_lock(&pi->lock);
        if (pi->unloading) {
                pthread_mutex_unlock(&pi->lock);
                tb_plugin_hrun_free(hr);
                return tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                 "plugin '%s' is being unloaded; run %s not started",
                                 pi->desc->name, run->run_id);
        }
        hr->next = pi->active;
        if (pi->active)
                pi->active->prev = hr;
        pi->active = hr;
        pi->n_active++;
        pthread_mutex_unlock(&pi->lock);

        if (out)
                *out = hr;
        char ebuf[1024] = "";
        int rc = pi->desc->start(pi->state, &hr->run, ebuf, sizeof(ebuf));
        if (rc == TB_PLUGIN_OK) {
                tb_plugin_hrun_unref(hr); /* this call's reference */
                return TB_OK;
        }

        ebuf[sizeof(ebuf) - 1] = '\0';
        pthread_mutex_lock(&pi->lock);
        bool already = hr->finished;
        if (!already)
                tb_plugin_unlink_locked(pi, hr);
        pthread_mutex_unlock(&pi->lock);
        if (already) {
                /* The sink has its one result already; a second report in
                 * the form of an error would count the run twice. */
                tb_warn(pi->logname, "start() failed for run %s after reporting "
                        "finished(): keeping the reported result (%s)",
                        run->run_id, ebuf);
                tb_plugin_hrun_unref(hr);
                return TB_OK;
        }
        tb_plugin_run_done(pi);
        tb_err_t err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "plugin '%s' could not start run %s: %s",
                                 pi->desc->name, run->run_id,
                                 *ebuf ? ebuf : "(the plugin gave no reason)");
        tb_plugin_hrun_unref(hr); /* the plugin's reference */
        tb_plugin_hrun_unref(hr); /* this call's */
        if (out) {
                *out = NULL;
                tb_plugin_hrun_unref(hr);
        }
        return err;
}

tb_err_t tb_plugin_run_cancel(tb_plugin_hrun_t *hr, const char *reason,
                              char *errstr, size_t errstr_size) {
        tb_plugin_instance_t *pi = hr->pi;
        pthread_mutex_lock(&pi->lock);
        bool finished = hr->finished;
        pthread_mutex_unlock(&pi->lock);
        if (finished)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "run %s has already finished", hr->run.run_id);
        int rc = pi->desc->cancel(pi->state, &hr->run, reason ? reason : "cancelled");
        if (rc == TB_PLUGIN_NOT_FOUND)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOT_FOUND,
                                 "run %s has already finished", hr->run.run_id);
        if (rc != TB_PLUGIN_OK)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "plugin '%s' failed to cancel run %s (rc %d)",
                                 pi->desc->name, hr->run.run_id, rc);
        return TB_OK;
}

void tb_plugin_run_release(tb_plugin_hrun_t *hr) { tb_plugin_hrun_unref(hr); }

void tb_plugin_unload(tb_plugin_instance_t *pi, int wait_ms) {
        if (!pi)
                return;
        tb_plugin_hrun_t **list = NULL;
        size_t n = 0;

        pthread_mutex_lock(&pi->lock);
        pi->unloading = true;
        for (tb_plugin_hrun_t *hr = pi->active; hr; hr = hr->next)
                n++;
        list = n ? calloc(n, sizeof(*list)) : NULL;
        size_t k = 0;
        for (tb_plugin_hrun_t *hr = pi->active; hr && list; hr = hr->next) {
                atomic_fetch_add(&hr->refs, 1);
                list[k++] = hr;
        }
        pthread_mutex_unlock(&pi->lock);
        for (size_t i = 0; i < k; i++) {
                char e[256];
                tb_plugin_run_cancel(list[i], "the executor is shutting down", e,
                                     sizeof(e));
                tb_plugin_hrun_unref(list[i]);
        }
        free(list);

        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&pi->lock);
        while (pi->n_active > 0 &&
               pthread_cond_timedwait(&pi->cond, &pi->lock, &until) != ETIMEDOUT)
                ;
        size_t left = pi->n_active;
        pthread_mutex_unlock(&pi->lock);
        bool leftover = left > 0;
        if (leftover)
                tb_error(pi->logname, "%zu run(s) did not finish within %d ms of "
                         "being cancelled; reporting them as infra errors",
                         left, wait_ms);

        pi->desc->destroy(pi->state);

        /* Runs the plugin never finished still owe the executor a result. */
        for (;;) {
                pthread_mutex_lock(&pi->lock);
                tb_plugin_hrun_t *hr = pi->active;
                if (hr)
                        tb_plugin_unlink_locked(pi, hr);
                pthread_mutex_unlock(&pi->lock);
                if (!hr)
                        break;
                tb_plugin_result_t res = {
                        .size = sizeof(res),
                        .status = TB_PLUGIN_RUN_INFRA_ERROR,
                        .exit_code = -1,
                        .finished_ms = tb_now_ms(),
                        .error = "the plugin was unloaded before it reported a result",
                };
                tb_plugin_deliver(pi, hr, &res);
        }
        /* Plugin code may still be running somewhere if it lost runs:
         * leave it mapped rather than unmapping code under a thread. */
        if (!leftover)
                dlclose(pi->dl);
        pthread_mutex_destroy(&pi->lock);
        pthread_cond_destroy(&pi->cond);
        free(pi->path);
        free(pi);
}

/* ---- the crash-isolating probe ------------------------------------------- */

/* Child -> parent messages: a type byte, a 32-bit length, the payload. */
enum { TB_PROBE_OUTPUT = 'O', TB_PROBE_RESULT = 'R', TB_PROBE_ERROR = 'E' };

typedef struct tb_probe_wire {
        int32_t status, exit_code, signal, err;
        int64_t started_ms, finished_ms;
} tb_probe_wire_t;

typedef struct tb_probe_child {
        int fd;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        tb_probe_wire_t wire;
        char error[512];
} tb_probe_child_t;

static void tb_probe_write_all(int fd, const void *p, size_t len) {
        const char *c = p;
        while (len > 0) {
                ssize_t n = write(fd, c, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        _exit(3); /* the parent went away */
                c += n;
                len -= (size_t)n;
        }
}

static void tb_probe_send(tb_probe_child_t *pc, char type, const void *a, size_t alen,
                          const void *b, size_t blen) {
        uint32_t len = (uint32_t)(alen + blen);
        pthread_mutex_lock(&pc->lock);
        tb_probe_write_all(pc->fd, &type, 1);
        tb_probe_write_all(pc->fd, &len, sizeof(len));
        if (alen)
                tb_probe_write_all(pc->fd, a, alen);
        if (blen)
                tb_probe_write_all(pc->fd, b, blen);
        pthread_mutex_unlock(&pc->lock);
}

static void tb_probe_on_output(void *opaque, void *run_opaque, int stream,
                               const void *data, size_t len) {
        (void)run_opaque;
        (void)stream;
        tb_probe_send(opaque, TB_PROBE_OUTPUT, data, len, NULL, 0);
}

static void tb_probe_on_finished(void *opaque, void *run_opaque,
                                 const tb_plugin_result_t *res) {
        (void)run_opaque;
        tb_probe_child_t *pc = opaque;
        pthread_mutex_lock(&pc->lock);
        pc->wire.status = res->status;
        pc->wire.exit_code = res->exit_code;
        pc->wire.signal = res->signal;
        pc->wire.started_ms = res->started_ms;
        pc->wire.finished_ms = res->finished_ms;
        snprintf(pc->error, sizeof(pc->error), "%s", res->error ? res->error : "");
        pc->done = true;
        pthread_cond_broadcast(&pc->cond);
        pthread_mutex_unlock(&pc->lock);
}

static void tb_probe_child_main(int fd, const char *path, const tb_plugin_kv_t *config,
                                size_t n_config, const tb_plugin_run_t *run) {
        /* Let a crash be a crash: sanitizers and host handlers would
         * otherwise turn SIGSEGV into an exit code. */
        static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE,
                                            SIGABRT, SIGTRAP, SIGSYS};
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        for (size_t i = 0; i < TB_ARRAY_LEN(crash_signals); i++)
                sigaction(crash_signals[i], &sa, NULL);
        sigset_t all;
        sigemptyset(&all);
        pthread_sigmask(SIG_SETMASK, &all, NULL);

        tb_probe_child_t pc = {.fd = fd};
        pthread_mutex_init(&pc.lock, NULL);
        pthread_cond_init(&pc.cond, NULL);
        tb_plugin_sink_t sink = {.opaque = &pc,
                                 .output = tb_probe_on_output,
                                 .finished = tb_probe_on_finished};
        char e[1024];
        tb_plugin_instance_t *pi = NULL;
        tb_err_t err = tb_plugin_load(path, config, n_config, &sink, &pi, e, sizeof(e));
        if (!err)
                err = tb_plugin_run_start(pi, run, NULL, NULL, e, sizeof(e));
        if (err) {
                int32_t code = err;
                tb_probe_send(&pc, TB_PROBE_ERROR, &code, sizeof(code), e, strlen(e));
                _exit(0);
        }
        pthread_mutex_lock(&pc.lock);
        while (!pc.done)
                pthread_cond_wait(&pc.cond, &pc.lock);
        pthread_mutex_unlock(&pc.lock);
        tb_probe_send(&pc, TB_PROBE_RESULT, &pc.wire, sizeof(pc.wire), pc.error,
                      strlen(pc.error));
        tb_plugin_unload(pi, 10000);
        _exit(0);
}

tb_err_t tb_plugin_probe(const char *path, const tb_plugin_kv_t *config,
                         size_t n_config, const tb_plugin_run_t *run,
                         int timeout_ms, tb_plugin_probe_result_t *out,
                         char *errstr, size_t errstr_size) {
        char stem[64];
        tb_buf_t in = {0};
        int pfd[2];
        tb_err_t err = TB_OK;

        memset(out, 0, sizeof(*out));
        out->exit_code = -1;
        tb_plugin_stem(path ? path : "", stem, sizeof(stem));
        if (pipe2(pfd, O_CLOEXEC) != 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO, "pipe: %s",
                                 strerror(errno));
        pid_t pid = fork();
        if (pid < 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_IO, "fork: %s",
                                strerror(errno));
                close(pfd[0]);
                close(pfd[1]);
                return err;
        }
        if (pid == 0) {
                close(pfd[0]);
                tb_probe_child_main(pfd[1], path, config, n_config, run);
                _exit(0);
        }
        close(pfd[1]);

        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        bool timed_out = false;
        char chunk[65536];
        for (;;) {
                int64_t left = (deadline - tb_mono_us()) / 1000;
                if (left <= 0) {
                        timed_out = true;
                        break;
                }
                struct pollfd p = {.fd = pfd[0], .events = POLLIN};
                int pr = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
                if (pr < 0 && errno == EINTR)
                        continue;
                if (pr == 0)
                        continue;
                ssize_t n = read(pfd[0], chunk, sizeof(chunk));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (tb_buf_append(&in, chunk, (size_t)n) != TB_OK) {
                        timed_out = false;
                        kill(pid, SIGKILL);
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                        "out of memory reading the probe's output");
                        break;
                }
        }
        close(pfd[0]);
        if (timed_out)
                kill(pid, SIGKILL);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        if (err)
                goto done;
        if (timed_out) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                "plugin '%s' (%s) did not finish within %d ms; "
                                "probe process killed", stem, path, timeout_ms);
                goto done;
        }
        if (WIFSIGNALED(st)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "plugin '%s' (%s) crashed with signal %d (%s)",
                                stem, path, WTERMSIG(st), strsignal(WTERMSIG(st)));
                goto done;
        }

        /* Decode the messages. */
        bool have_result = false;
        size_t off = 0;
        while (off + 5 <= in.len) {
                char type = in.data[off];
                uint32_t len;
                memcpy(&len, in.data + off + 1, sizeof(len));
                if (off + 5 + len > in.len)
                        break;
                const char *payload = in.data + off + 5;
                if (type == TB_PROBE_OUTPUT) {
                        if (tb_buf_append(&out->output, payload, len) != TB_OK) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                "out of memory");
                                goto done;
                        }
                } else if (type == TB_PROBE_ERROR && len >= sizeof(int32_t)) {
                        int32_t code;
                        memcpy(&code, payload, sizeof(code));
                        err = tb_seterr(errstr, errstr_size, (tb_err_t)code, "%.*s",
                                        (int)(len - sizeof(code)), payload + sizeof(code));
                        goto done;
                } else if (type == TB_PROBE_RESULT && len >= sizeof(tb_probe_wire_t)) {
                        tb_probe_wire_t w;
                        memcpy(&w, payload, sizeof(w));
                        out->status = w.status;
                        out->exit_code = w.exit_code;
                        out->signal = w.signal;
                        out->started_ms = w.started_ms;
                        out->finished_ms = w.finished_ms;
                        size_t el = len - sizeof(w);
                        if (el >= sizeof(out->error))
                                el = sizeof(out->error) - 1;
                        memcpy(out->error, payload + sizeof(w), el);
                        out->error[el] = '\0';
                        have_result = true;
                }
                off += 5 + len;
        }
        if (!have_result)
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "plugin '%s' (%s): the probe process exited with "
                                "status %d without reporting a result", stem, path,
                                WIFEXITED(st) ? WEXITSTATUS(st) : -1);
done:
        tb_buf_free(&in);
        if (err)
                tb_buf_free(&out->output);
        return err;
}

void tb_plugin_probe_free(tb_plugin_probe_result_t *res) {
        if (res)
                tb_buf_free(&res->output);
}

/* ---- security group policy for runs (ABI 1.1) ------------------------------ */

void tb_plugin_policy_free(tb_plugin_kv_t *kv, size_t n) {
        for (size_t i = 0; kv && i < n; i++)
                free((char *)kv[i].value);
        free(kv);
}

tb_err_t tb_plugin_policy_build(const struct tb_group_conf *g, tb_plugin_kv_t **out,
                                size_t *n_out, char *errstr, size_t errstr_size) {
        *out = NULL;
        *n_out = 0;
        if (!g)
                return TB_OK;
        tb_plugin_kv_t *kv = calloc(7 + g->image_cnt, sizeof(*kv));
        if (!kv)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        size_t n = 0;
        bool ok = true;
        char num[64];
#define TB_POL_ADD(k, v)                                                       \
        do {                                                                   \
                const char *v_ = (v);                                          \
                if (v_) {                                                      \
                        kv[n].key = (k);                                       \
                        kv[n].value = tb_plugin_dup(v_, &ok);                  \
                        n++;                                                   \
                }                                                              \
        } while (0)
        TB_POL_ADD("os_user", g->os_user);
        TB_POL_ADD("network", g->network);
        if (g->memory_max_bytes > 0) {
                snprintf(num, sizeof(num), "%lld", (long long)g->memory_max_bytes);
                TB_POL_ADD("memory_max", num);
        }
        if (g->cpus_max > 0) {
                snprintf(num, sizeof(num), "%.6g", g->cpus_max);
                TB_POL_ADD("cpus_max", num);
        }
        TB_POL_ADD("ssh_key", g->ssh_key);
        TB_POL_ADD("ssh_known_hosts", g->ssh_known_hosts);
        for (size_t i = 0; i < g->image_cnt; i++)
                TB_POL_ADD("images", g->images[i]);
#undef TB_POL_ADD
        if (!ok) {
                tb_plugin_policy_free(kv, n);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        }
        *out = kv;
        *n_out = n;
        return TB_OK;
}
