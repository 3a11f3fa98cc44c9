/**
 * @file executor/plugin_host.c
 * @brief Loading executor plugins, checking their ABI both ways, and
 *        brokering their runs (see plugin_host.h and taskbus/plugin.h); their
 *        configuration is checked by plugin_config.c.
 *
 * Why the host tracks every active run: a plugin is foreign code. Looking
 * each callback's run pointer up in the active list (instead of trusting it)
 * turns a late or duplicated finished() into a logged warning rather than a
 * use-after-free, and lets the host guarantee the executor exactly one
 * result per accepted run, even across unload.
 */
#include "executor/plugin_host.h"

#include "executor/plugin_host_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define TB_PLUGIN_HOST_SUB "plugin"
/* The fields ABI major 1 needs: everything up to and including destroy. */
#define TB_PLUGIN_HOST_DESC_MIN_SIZE                                                \
        (offsetof(tb_plugin_t, destroy) + sizeof(((tb_plugin_t *)0)->destroy))
/* The ABI header every descriptor has in every major: size, major, minor. */
#define TB_PLUGIN_HOST_DESC_HDR_SIZE (offsetof(tb_plugin_t, abi_minor) + sizeof(uint16_t))


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

void tb_plugin_stem(const char *path, char *out, size_t size) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strcspn(base, ".");
        if (n >= size)
                n = size - 1;
        memcpy(out, base, n);
        out[n] = '\0';
}

static const char *tb_plugin_host_ftype(mode_t m) {
        if (S_ISDIR(m)) return "a directory";
        if (S_ISFIFO(m)) return "a FIFO";
        if (S_ISCHR(m)) return "a character device";
        if (S_ISBLK(m)) return "a block device";
        if (S_ISSOCK(m)) return "a socket";
        return "not a regular file";
}

/* Free what tb_plugin_host_kv_dup() made: keys, values and the array. */
static void tb_plugin_host_kv_dup_free(tb_plugin_kv_t *kv, size_t n) {
        for (size_t i = 0; kv && i < n; i++) {
                free((char *)kv[i].key);
                free((char *)kv[i].value);
        }
        free(kv);
}

static void tb_plugin_host_hrun_free(tb_plugin_hrun_t *hr) {
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
        tb_plugin_host_kv_dup_free(hr->env_copy, r->n_env);
        tb_plugin_host_kv_dup_free(hr->opt_copy, r->n_options);
        tb_plugin_host_kv_dup_free(hr->pol_copy, r->n_policy);
        free(hr);
}

void tb_plugin_host_hrun_unref(tb_plugin_hrun_t *hr) {
        if (hr && atomic_fetch_sub(&hr->refs, 1) == 1)
                tb_plugin_host_hrun_free(hr);
}

/* strdup that keeps NULL as NULL and reports failure through *ok. */
char *tb_plugin_host_dup(const char *s, bool *ok) {
        if (!s)
                return NULL;
        char *d = strdup(s);
        if (!d)
                *ok = false;
        return d;
}

static tb_plugin_kv_t *tb_plugin_host_kv_dup(const tb_plugin_kv_t *kv, size_t n, bool *ok) {
        if (!kv || n == 0)
                return NULL;
        tb_plugin_kv_t *d = calloc(n, sizeof(*d));
        if (!d) {
                *ok = false;
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                d[i].key = tb_plugin_host_dup(kv[i].key ? kv[i].key : "", ok);
                d[i].value = tb_plugin_host_dup(kv[i].value ? kv[i].value : "", ok);
        }
        return d;
}

/* Deep copy so that the caller's run may go away once start returns. */
static tb_plugin_hrun_t *tb_plugin_host_hrun_new(const tb_plugin_run_t *src) {
        tb_plugin_hrun_t *hr = calloc(1, sizeof(*hr));
        if (!hr)
                return NULL;
        bool ok = true;
        tb_plugin_run_t *r = &hr->run;
        r->size = sizeof(*r);
        r->run_id = tb_plugin_host_dup(src->run_id, &ok);
        r->task_id = tb_plugin_host_dup(src->task_id, &ok);
        r->nominal_time_ms = src->nominal_time_ms;
        r->attempt = src->attempt;
        r->script = tb_plugin_host_dup(src->script, &ok);
        if (src->argv) {
                size_t n = 0;
                while (src->argv[n])
                        n++;
                hr->argv_copy = calloc(n + 1, sizeof(char *));
                if (!hr->argv_copy)
                        ok = false;
                for (size_t i = 0; hr->argv_copy && i < n; i++)
                        hr->argv_copy[i] = tb_plugin_host_dup(src->argv[i], &ok);
                r->argv = (const char *const *)hr->argv_copy;
        }
        hr->env_copy = tb_plugin_host_kv_dup(src->env, src->n_env, &ok);
        r->env = hr->env_copy;
        r->n_env = hr->env_copy ? src->n_env : 0;
        r->workdir = tb_plugin_host_dup(src->workdir, &ok);
        r->os_user = tb_plugin_host_dup(src->os_user, &ok);
        r->expiry_ms = src->expiry_ms;
        hr->opt_copy = tb_plugin_host_kv_dup(src->options, src->n_options, &ok);
        r->options = hr->opt_copy;
        r->n_options = hr->opt_copy ? src->n_options : 0;
        r->security_group = tb_plugin_host_dup(src->security_group, &ok);
        hr->pol_copy = tb_plugin_host_kv_dup(src->policy, src->n_policy, &ok);
        r->policy = hr->pol_copy;
        r->n_policy = hr->pol_copy ? src->n_policy : 0;
        if (!ok) {
                tb_plugin_host_hrun_free(hr);
                return NULL;
        }
        return hr;
}

/* Find the active run the plugin means and take a reference on it. */
static tb_plugin_hrun_t *tb_plugin_host_find_ref(tb_plugin_instance_t *pi,
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

void tb_plugin_host_unlink_locked(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr) {
        hr->finished = true;
        if (hr->prev)
                hr->prev->next = hr->next;
        else
                pi->active = hr->next;
        if (hr->next)
                hr->next->prev = hr->prev;
        hr->prev = hr->next = NULL;
}

/* Free \p pi (no run left in it); with \p unmap, dlclose() its .so. */
static void tb_plugin_host_instance_free(tb_plugin_instance_t *pi, bool unmap) {
        if (unmap && pi->dl)
                dlclose(pi->dl);
        pthread_mutex_destroy(&pi->lock);
        pthread_cond_destroy(&pi->cond);
        pthread_cond_destroy(&pi->guard_cond);
        free(pi->path);
        free(pi);
}

/* Called once the sink's finished() for an accepted run has returned. */
void tb_plugin_host_run_done(tb_plugin_instance_t *pi) {
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
        tb_plugin_hrun_t *hr = tb_plugin_host_find_ref(pi, run);
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
        tb_plugin_host_hrun_unref(hr);
}

static void tb_plugin_host_heartbeat(const tb_plugin_host_t *host,
                                     const tb_plugin_run_t *run) {
        tb_plugin_instance_t *pi = host->host_data;
        tb_plugin_hrun_t *hr = tb_plugin_host_find_ref(pi, run);
        if (!hr)
                return;
        if (pi->sink.heartbeat)
                pi->sink.heartbeat(pi->sink.opaque, hr->opaque);
        tb_plugin_host_hrun_unref(hr);
}

/* Deliver a result for \p hr, already unlinked by the caller, and drop the
 * plugin's reference. */
static void tb_plugin_host_deliver(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr,
                                   const tb_plugin_result_t *res) {
        if (pi->sink.finished)
                pi->sink.finished(pi->sink.opaque, hr->opaque, res);
        tb_plugin_host_hrun_unref(hr);
        tb_plugin_host_run_done(pi);
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
                        tb_plugin_host_unlink_locked(pi, hr);
                        break;
                }
        }
        tb_plugin_hrun_t *late = hr ? NULL : tb_plugin_guard_take_abandoned(pi, run);
        bool expired = hr && hr->stop_why == TB_PLUGIN_GUARD_EXPIRY;
        pthread_mutex_unlock(&pi->lock);
        if (late) {
                tb_info(pi->logname, "run %s: finished() came after the host had ended "
                        "the run: ignored", late->run.run_id);
                tb_plugin_host_hrun_unref(late); /* the plugin's reference */
                return;
        }
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
        /* The host stopped it because it reached its expiry. */
        if (expired && res.status == TB_PLUGIN_RUN_CANCELLED)
                res.status = TB_PLUGIN_RUN_TIMED_OUT;
        tb_plugin_host_deliver(pi, hr, &res);
}


/* ---- loading -------------------------------------------------------------- */

/* The ABI checks, both directions. \p who is "plugin 'stem' (/path)". */
static tb_err_t tb_plugin_host_check_desc(const char *who, const tb_plugin_t *d,
                                          char *errstr, size_t errstr_size) {
        if (!d)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %s() returned NULL instead of its descriptor",
                                 who, TB_PLUGIN_ENTRY_SYMBOL);
        if (d->size < TB_PLUGIN_HOST_DESC_HDR_SIZE)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: descriptor field 'size' is %u, too small "
                                 "for even the ABI header (%zu bytes); is it a "
                                 "taskbus plugin?", who, (unsigned)d->size,
                                 (size_t)TB_PLUGIN_HOST_DESC_HDR_SIZE);
        if (d->abi_major != TB_PLUGIN_ABI_MAJOR)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: ABI major %u, host supports %d; rebuild "
                                 "the plugin against this taskbus's "
                                 "taskbus/plugin.h", who, (unsigned)d->abi_major,
                                 TB_PLUGIN_ABI_MAJOR);
        if (d->size < TB_PLUGIN_HOST_DESC_MIN_SIZE)
                return tb_seterr(errstr, errstr_size, TB_ERR_UNSUPPORTED,
                                 "%s: descriptor field 'size' is %u bytes, host "
                                 "needs at least %zu (ABI %d.x ends with field "
                                 "'destroy'); rebuild the plugin against "
                                 "taskbus/plugin.h", who, (unsigned)d->size,
                                 (size_t)TB_PLUGIN_HOST_DESC_MIN_SIZE, TB_PLUGIN_ABI_MAJOR);
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
                                 tb_plugin_host_ftype(sb.st_mode));

        pi = calloc(1, sizeof(*pi));
        if (!pi)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
        pthread_mutex_init(&pi->lock, NULL);
        tb_cond_init_mono(&pi->cond);
        tb_cond_init_mono(&pi->guard_cond);
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
        err = tb_plugin_host_check_desc(who, pi->desc, errstr, errstr_size);
        if (err)
                goto fail;

        snprintf(who, sizeof(who), "plugin '%s' (%s)", pi->desc->name, path);
        snprintf(pi->logname, sizeof(pi->logname), "plugin/%s", pi->desc->name);
        err = tb_plugin_host_conf_check(who, pi->desc->config_keys, config, n_config,
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
        tb_plugin_host_kv_free(conf, n_conf);
        tb_info(TB_PLUGIN_HOST_SUB, "loaded plugin '%s' %s (ABI %u.%u) from %s",
                pi->desc->name, pi->desc->version, (unsigned)pi->desc->abi_major,
                (unsigned)pi->desc->abi_minor, path);
        *out = pi;
        return TB_OK;

fail:
        tb_plugin_host_kv_free(conf, n_conf);
        tb_plugin_host_instance_free(pi, true);
        return err;
}

/* Set on this file by core/CMakeLists.txt; the fallbacks keep it compiling alone. */
#ifndef TB_PLUGIN_REL_DIR
#define TB_PLUGIN_REL_DIR "../lib/taskbus/plugins"
#endif
#ifndef TB_PLUGIN_INSTALL_DIR
#define TB_PLUGIN_INSTALL_DIR "/usr/local/lib/taskbus/plugins"
#endif

static pthread_once_t tb_plugin_dir_once = PTHREAD_ONCE_INIT;
static char tb_plugin_dir_buf[PATH_MAX];

static bool tb_plugin_is_dir(const char *path) {
        struct stat sb;
        return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void tb_plugin_dir_init(void) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                exe[n] = '\0';
                char *slash = strrchr(exe, '/');
                if (slash) {
                        *slash = '\0';
                        char cand[PATH_MAX];
                        if (!tb_snprintf(cand, sizeof(cand), "%s/%s", exe, TB_PLUGIN_REL_DIR) &&
                            tb_plugin_is_dir(cand) && realpath(cand, tb_plugin_dir_buf))
                                return;
                }
        }
#ifdef TB_PLUGIN_DIR
        if (tb_plugin_is_dir(TB_PLUGIN_DIR)) {
                snprintf(tb_plugin_dir_buf, sizeof(tb_plugin_dir_buf), "%s", TB_PLUGIN_DIR);
                return;
        }
#endif
        snprintf(tb_plugin_dir_buf, sizeof(tb_plugin_dir_buf), "%s", TB_PLUGIN_INSTALL_DIR);
}

const char *tb_plugin_default_dir(void) {
        pthread_once(&tb_plugin_dir_once, tb_plugin_dir_init);
        return tb_plugin_dir_buf;
}

tb_err_t tb_plugin_resolve(const char *name_or_path, const char *dir, char *out,
                           size_t out_size, char *errstr, size_t errstr_size) {
        const char *dflt = dir ? dir : tb_plugin_default_dir();
        if (!name_or_path || !*name_or_path)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "plugin: no name or path given (e.g. \"shell\" or "
                                 "\"/usr/lib/taskbus/plugins/shell.so\")");
        bool trunc = strchr(name_or_path, '/')
                             ? tb_snprintf(out, out_size, "%s", name_or_path)
                             : tb_snprintf(out, out_size, "%s/%s.so", dflt,
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
        tb_plugin_hrun_t *hr = tb_plugin_host_hrun_new(run);
        if (!hr)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                 "out of memory copying run %s", run->run_id);
        hr->pi = pi;
        hr->opaque = run_opaque;
        hr->grace_ms = tb_plugin_guard_grace(pi, &hr->run);
        hr->started_ms = tb_now_ms();
        /* References: the plugin's (dropped after finished()), this call's
         * (so the run outlives a finished() made from inside start()), and
         * the caller's if it asked for a handle. */
        atomic_init(&hr->refs, out ? 3 : 2);

        pthread_mutex_lock(&pi->lock);
        if (pi->unloading) {
                pthread_mutex_unlock(&pi->lock);
                tb_plugin_host_hrun_free(hr);
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
                tb_plugin_host_hrun_unref(hr); /* this call's reference */
                return TB_OK;
        }

        ebuf[sizeof(ebuf) - 1] = '\0';
        pthread_mutex_lock(&pi->lock);
        bool already = hr->finished;
        if (!already)
                tb_plugin_host_unlink_locked(pi, hr);
        pthread_mutex_unlock(&pi->lock);
        if (already) {
                /* The sink has its one result already; a second report in
                 * the form of an error would count the run twice. */
                tb_warn(pi->logname, "start() failed for run %s after reporting "
                        "finished(): keeping the reported result (%s)",
                        run->run_id, ebuf);
                tb_plugin_host_hrun_unref(hr);
                return TB_OK;
        }
        tb_plugin_host_run_done(pi);
        tb_err_t err = tb_seterr(errstr, errstr_size, TB_ERR_IO,
                                 "plugin '%s' could not start run %s: %s",
                                 pi->desc->name, run->run_id,
                                 *ebuf ? ebuf : "(the plugin gave no reason)");
        tb_plugin_host_hrun_unref(hr); /* the plugin's reference */
        tb_plugin_host_hrun_unref(hr); /* this call's */
        if (out) {
                *out = NULL;
                tb_plugin_host_hrun_unref(hr);
        }
        return err;
}

tb_err_t tb_plugin_run_cancel(tb_plugin_hrun_t *hr, const char *reason,
                              char *errstr, size_t errstr_size) {
        tb_plugin_instance_t *pi = hr->pi;
        pthread_mutex_lock(&pi->lock);
        bool finished = hr->finished;
        if (!finished)
                tb_plugin_guard_note_stop(hr, TB_PLUGIN_GUARD_CANCEL, tb_now_ms());
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

void tb_plugin_run_release(tb_plugin_hrun_t *hr) { tb_plugin_host_hrun_unref(hr); }

void tb_plugin_unload(tb_plugin_instance_t *pi, int wait_ms) {
        if (!pi)
                return;
        tb_plugin_hrun_t **list = NULL;
        size_t n = 0;

        tb_plugin_guard_stop(pi);
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
                tb_plugin_host_hrun_unref(list[i]);
        }
        free(list);

        struct timespec until = tb_mono_deadline(wait_ms);
        pthread_mutex_lock(&pi->lock);
        while (pi->n_active > 0 &&
               pthread_cond_timedwait(&pi->cond, &pi->lock, &until) != ETIMEDOUT)
                ;
        size_t left = pi->n_active;
        pthread_mutex_unlock(&pi->lock);
        bool leftover = left > 0 || pi->abandoned;
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
                        tb_plugin_host_unlink_locked(pi, hr);
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
                tb_plugin_host_deliver(pi, hr, &res);
        }
        /* Plugin code may still be running somewhere if it lost runs:
         * leave it mapped rather than unmapping code under a thread. */
        tb_plugin_host_instance_free(pi, !leftover);
}
