/**
 * @file executor/plugin_host_internal.h
 * @brief What the plugin host's files (plugin_host.c, plugin_config.c,
 *        plugin_probe.c) share: the run and instance records and the
 *        helpers that cross files; plugin_host.h is the public header.
 */
#ifndef TB_PLUGIN_HOST_INTERNAL_H
#define TB_PLUGIN_HOST_INTERNAL_H

#include "executor/plugin_host.h"
#include "tb.h"

#include <taskbus/plugin.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/** The host's record of one started run (plugin_host.h). */
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
        /* plugin_guard.c, under pi->lock: */
        int64_t started_ms;   /* tb_now_ms() when start() was called: expiry_ms counts from it */
        int64_t grace_ms;     /* the task's kill_grace option, bounded by the operator's */
        int64_t stop_at_ms;   /* when the host asked the run to stop; 0: not yet */
        int stop_why;         /* TB_PLUGIN_GUARD_* */
};

/** A loaded plugin (plugin_host.h). */
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
        /* plugin_guard.c: */
        int64_t stop_bound_ms;   /* executor.kill_grace; 0: no guard */
        pthread_t guard;
        bool guard_started, guard_stop; /* under lock */
        pthread_cond_t guard_cond;       /* CLOCK_MONOTONIC: wakes the guard to stop */
        tb_plugin_hrun_t *abandoned;     /* runs the host ended without the plugin */
};

#define TB_PLUGIN_GUARD_NONE 0
#define TB_PLUGIN_GUARD_EXPIRY 1 /* the run reached its expiry */
#define TB_PLUGIN_GUARD_CANCEL 2 /* tb_plugin_run_cancel() */

/* plugin_host.c */
/** Drop a reference on \p hr; the last one frees it. */
void tb_plugin_host_hrun_unref(tb_plugin_hrun_t *hr);
/** Take \p hr off pi->active and mark it finished. @locks pi->lock held. */
void tb_plugin_host_unlink_locked(tb_plugin_instance_t *pi, tb_plugin_hrun_t *hr);
/** Count the end of an accepted run's finished() delivery; wakes unload. */
void tb_plugin_host_run_done(tb_plugin_instance_t *pi);
/** strdup() that keeps NULL as NULL and reports failure by clearing *\p ok. */
char *tb_plugin_host_dup(const char *s, bool *ok);

/* plugin_config.c */
/** Free \p n key/values with borrowed keys and malloc'd values, and the array. */
void tb_plugin_host_kv_free(tb_plugin_kv_t *kv, size_t n);
/**
 * @brief Check \p config against the plugin's key table \p keys (unknown,
 *        duplicated, missing required keys; typed values) and produce the full,
 *        normalised list init() receives, defaults included.
 * @param who  "plugin 'name' (/path)", to start every message
 * @param out  receives the list (keys borrowed from \p keys, values malloc'd);
 *             free with tb_plugin_host_kv_free()
 * @returns TB_OK, TB_ERR_INVALID naming the key, or TB_ERR_NOMEM.
 */
tb_err_t tb_plugin_host_conf_check(const char *who, const tb_plugin_config_key_t *keys,
                                   const tb_plugin_kv_t *config, size_t n_config,
                                   tb_plugin_kv_t **out, size_t *n_out,
                                   char *errstr, size_t errstr_size);

/* plugin_guard.c */
/** The grace of \p run: its kill_grace option when shorter than the
 *  operator's bound pi->stop_bound_ms (a task never lengthens it). */
int64_t tb_plugin_guard_grace(const tb_plugin_instance_t *pi, const tb_plugin_run_t *run);
/** Note that the host asked \p hr to stop (first call wins). @locks pi->lock held. */
void tb_plugin_guard_note_stop(tb_plugin_hrun_t *hr, int why, int64_t now_ms);
/** Take \p run off the abandoned list: the plugin reported it after the
 *  host had ended it. @returns the record (caller drops the plugin's
 *  reference) or NULL. @locks pi->lock held. */
tb_plugin_hrun_t *tb_plugin_guard_take_abandoned(tb_plugin_instance_t *pi,
                                                 const tb_plugin_run_t *run);
/** Stop and join the guard thread (no-op without one); from unload. */
void tb_plugin_guard_stop(tb_plugin_instance_t *pi);

#endif /* TB_PLUGIN_HOST_INTERNAL_H */
