/**
 * @file executor/plugin_host.h
 * @brief The host side of the executor plugin ABI (taskbus/plugin.h):
 *        loading and checking plugins, starting and cancelling runs, and a
 *        crash-isolating probe.
 *
 * Files: plugin_host.c (loading, the ABI checks both ways, the host vtable,
 * run brokering and unload), plugin_config.c (a plugin's config checked
 * against its key table; a security group's policy for runs),
 * plugin_probe.c (tb_plugin_probe()). The executor role (executor.h) is
 * its only caller in taskbusd.
 *
 * Lifecycle: tb_plugin_load() -> tb_plugin_run_start() (many, any thread)
 * -> sink callbacks -> tb_plugin_run_release() -> tb_plugin_unload().
 *
 * Every run that tb_plugin_run_start() accepted gets exactly one sink
 * finished() call, even when the plugin misbehaves or is unloaded first (the
 * host then synthesises an infra_error). A run the plugin refused gets none:
 * tb_plugin_run_start() returns an error instead, which the executor must
 * publish as an infra_error.
 */
#ifndef TB_PLUGIN_HOST_H
#define TB_PLUGIN_HOST_H

#include "tb.h"

#include <taskbus/plugin.h>

/** A loaded, initialised plugin. */
typedef struct tb_plugin_instance tb_plugin_instance_t;
/** The host's record of one started run (reference counted). */
typedef struct tb_plugin_hrun tb_plugin_hrun_t;

/**
 * Where a plugin's per-run reports go. All callbacks may be called from any
 * thread (plugin threads included) and concurrently for different runs; for
 * one run they are called in the plugin's order, finished() last. The
 * callbacks may call tb_plugin_run_cancel() and tb_plugin_run_release().
 */
typedef struct tb_plugin_sink {
        void *opaque; /**< passed back as the first argument */
        /** A chunk of output; \p data is valid during the call only. */
        void (*output)(void *opaque, void *run_opaque, int stream,
                       const void *data, size_t len);
        /** The run is alive (may be NULL). */
        void (*heartbeat)(void *opaque, void *run_opaque);
        /** The run ended; \p result (and its error string) valid during the call. */
        void (*finished)(void *opaque, void *run_opaque,
                         const tb_plugin_result_t *result);
} tb_plugin_sink_t;

/**
 * @brief Load the plugin at \p path, check its ABI and config, and init it.
 *
 * Refuses, with a message naming the plugin, path and field: a path that is
 * not a regular file, a dlopen() failure (with dlerror() and an ldd hint), a
 * missing tb_plugin_entry symbol, an ABI major mismatch, a descriptor smaller
 * than this host needs, a plugin expecting a bigger host vtable than this
 * host has, an unknown config key (listing the valid ones), a missing
 * required key, a value of the wrong type, and a failing init() (with the
 * plugin's own message).
 *
 * @param path      the .so file (dlopen'd RTLD_NOW | RTLD_LOCAL)
 * @param config    \p n_config key/values (caller-owned, copied as needed)
 * @param sink      where run reports go (copied)
 * @param out       receives the instance; free with tb_plugin_unload()
 * @returns TB_OK, TB_ERR_NOT_FOUND (no such file), TB_ERR_INVALID (not a
 *          plugin / bad config), TB_ERR_UNSUPPORTED (ABI), TB_ERR_IO (dlopen,
 *          init) or TB_ERR_NOMEM, with \p errstr filled.
 * @locality any thread
 */
tb_err_t tb_plugin_load(const char *path, const tb_plugin_kv_t *config,
                        size_t n_config, const tb_plugin_sink_t *sink,
                        tb_plugin_instance_t **out, char *errstr,
                        size_t errstr_size);

/**
 * @brief Turn a configured plugin name or path into a file path.
 *
 * A value containing '/' is used as is; a bare name such as "shell" becomes
 * "<dir>/shell.so", with \p dir NULL meaning tb_plugin_default_dir().
 * @returns TB_OK, or TB_ERR_INVALID if empty or too long for \p out.
 */
tb_err_t tb_plugin_resolve(const char *name_or_path, const char *dir, char *out,
                           size_t out_size, char *errstr, size_t errstr_size);

/**
 * @brief The plugin directory used when executor.plugin_paths is empty.
 *
 * The first that is a directory of: the installed tree's, found from this
 * program's own path (<bindir>/../<libdir>/taskbus/plugins, so a relocated
 * install works too); the build tree's (TB_PLUGIN_DIR, for programs run from
 * the build); else the install path compiled in (CMAKE_INSTALL_FULL_LIBDIR/
 * taskbus/plugins), which then names the directory in "not found" errors.
 * Computed once.
 * @returns a static string, never NULL.
 * @locality any thread
 */
const char *tb_plugin_default_dir(void);

/**
 * @brief The name a plugin file stands for: "/x/y/shell.so" -> "shell"
 *        (the base name up to its first '.'), truncated to \p size - 1.
 *
 * Names a plugin before its descriptor can be trusted to say its own name,
 * and picks its configuration group (plugins.<stem>).
 * @locality any thread
 */
void tb_plugin_stem(const char *path, char *out, size_t size);

/** @returns the plugin's name (owned by the plugin, valid until unload). */
const char *tb_plugin_name(const tb_plugin_instance_t *pi);
/** @returns the plugin's version string (valid until unload). */
const char *tb_plugin_version(const tb_plugin_instance_t *pi);
/** @returns the number of runs started and not yet finished. */
size_t tb_plugin_active_runs(tb_plugin_instance_t *pi);

/**
 * @brief Start \p run on the plugin.
 *
 * \p run is deep-copied, so the caller's memory may go once this returns.
 * On TB_OK the sink's finished() will be called exactly once with
 * \p run_opaque (possibly before this returns). On error the run did not
 * start and finished() will not be called: publish it as an infra_error
 * with \p errstr.
 *
 * @param out if not NULL, receives a reference to the run for
 *            tb_plugin_run_cancel(); drop it with tb_plugin_run_release()
 *            (before or after finished(), from any thread).
 * @returns TB_OK, TB_ERR_INVALID (run_id/task_id missing), TB_ERR_CONFLICT
 *          (plugin unloading), TB_ERR_IO (the plugin refused: its reason in
 *          \p errstr) or TB_ERR_NOMEM.
 * @locality any thread
 */
tb_err_t tb_plugin_run_start(tb_plugin_instance_t *pi, const tb_plugin_run_t *run,
                             void *run_opaque, tb_plugin_hrun_t **out,
                             char *errstr, size_t errstr_size);

/**
 * @brief Ask a started run to stop; it still ends with a finished() call
 *        (status cancelled unless it completed first).
 * @returns TB_OK, or TB_ERR_NOT_FOUND if it has already finished.
 * @locality any thread, including inside sink callbacks
 */
tb_err_t tb_plugin_run_cancel(tb_plugin_hrun_t *hr, const char *reason,
                              char *errstr, size_t errstr_size);

/**
 * @brief Make the host end runs itself, whatever the plugin does.
 *
 * From this call on, the host watches every run of \p pi: a run still going
 * 1 s after its expiry (expiry_ms after its start) is cancelled through the plugin (reason "the run
 * reached its expiry"), and a run the host asked to stop (at its expiry or by
 * tb_plugin_run_cancel()) that has not finished within its grace + 1 s gets a
 * synthesised result (timed_out or cancelled) and is abandoned: a later
 * finished() or output() from the plugin for it is ignored. The grace is the
 * run's kill_grace executor option when shorter than \p bound_ms (the
 * operator's executor.kill_grace), else \p bound_ms. A plugin's
 * cancelled result for a run the host stopped at its expiry is reported as
 * timed_out.
 *
 * @returns TB_OK, or TB_ERR_IO when the guard thread cannot start.
 * @locality any thread, once, before runs are started
 */
tb_err_t tb_plugin_set_stop_bound(tb_plugin_instance_t *pi, int64_t bound_ms,
                                  char *errstr, size_t errstr_size);

/** @returns the run id of \p hr (valid while the caller holds its reference). */
const char *tb_plugin_run_id(const tb_plugin_hrun_t *hr);

/** Drop the caller's reference from tb_plugin_run_start(). NULL is a no-op. */
void tb_plugin_run_release(tb_plugin_hrun_t *hr);

/**
 * @brief Cancel every active run, wait up to \p wait_ms for their results,
 *        destroy the plugin and unload it.
 *
 * Runs that still have not finished get a synthesised infra_error result
 * (and the .so is then left mapped, since plugin code may still run).
 * NULL is a no-op. Call with no other thread still using \p pi.
 */
void tb_plugin_unload(tb_plugin_instance_t *pi, int wait_ms);

/** The outcome of tb_plugin_probe(). Free with tb_plugin_probe_free(). */
typedef struct tb_plugin_probe_result {
        int32_t status;      /**< TB_PLUGIN_RUN_* */
        int32_t exit_code;
        int32_t signal;
        int64_t started_ms;
        int64_t finished_ms;
        char error[512];     /**< result error text, "" if none */
        tb_buf_t output;     /**< stdout and stderr chunks, in arrival order */
} tb_plugin_probe_result_t;

/**
 * @brief Load the plugin and run one task on it in a forked child process, so
 *        that a plugin that crashes cannot take the caller down.
 *
 * For vetting a plugin (e.g. `taskbus plugin test`) and for tests: the
 * executor itself loads plugins in-process for speed, so a plugin crash
 * there kills taskbusd (and systemd restarts it; the run is then retried).
 * The child restores the default disposition of the crash signals so the
 * real signal is reported even under sanitizers.
 *
 * @param timeout_ms the child is killed after this long
 * @param out        the run's result and output (zeroed first)
 * @returns TB_OK with \p out filled when the plugin reported a result (even
 *          a failed run); the load/start error of the child; TB_ERR_INTERNAL
 *          "plugin 'x' (/path) crashed with signal 11 (Segmentation fault)";
 *          or TB_ERR_TIMEOUT.
 * @locality any thread (forks: call it from a process that can fork)
 */
tb_err_t tb_plugin_probe(const char *path, const tb_plugin_kv_t *config,
                         size_t n_config, const tb_plugin_run_t *run,
                         int timeout_ms, tb_plugin_probe_result_t *out,
                         char *errstr, size_t errstr_size);

/** Free what tb_plugin_probe() allocated in \p res. */
void tb_plugin_probe_free(tb_plugin_probe_result_t *res);

struct tb_group_conf;

/**
 * @brief Build the policy key/values (tb_plugin_run_t.policy, ABI 1.1) of a
 *        security group from its configuration.
 *
 * Keys: os_user, network, memory_max (bytes), cpus_max, ssh_key,
 * ssh_known_hosts (each only when set) and one "images" entry per allowed
 * image. Keys are static strings, values are owned by *\p out.
 *
 * @param g     the group's policy (tb_config_group_policy()); NULL: no policy
 * @param out   receives the array (NULL when empty); free with
 *              tb_plugin_policy_free()
 * @returns TB_OK or TB_ERR_NOMEM.
 * @locality any thread
 */
tb_err_t tb_plugin_policy_build(const struct tb_group_conf *g, tb_plugin_kv_t **out,
                                size_t *n_out, char *errstr, size_t errstr_size);

/** Free what tb_plugin_policy_build() returned. NULL is a no-op. */
void tb_plugin_policy_free(tb_plugin_kv_t *kv, size_t n);

/** @returns a static lower-case name for a TB_PLUGIN_RUN_* status
 *          ("succeeded", "failed", "timed_out", "cancelled", "infra_error"). */
const char *tb_plugin_status_name(int status);

#endif /* TB_PLUGIN_HOST_H */
