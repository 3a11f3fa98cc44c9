/**
 * @file taskbus/plugin.h
 * @brief The taskbus executor plugin ABI: the ONE header a plugin author needs.
 *
 * An executor plugin is a shared object that taskbusd loads with
 * dlopen(RTLD_NOW | RTLD_LOCAL) to run tasks: the shell plugin forks a
 * process, a container plugin would start a container, an SSH plugin would run
 * the command on another machine. This header is everything the plugin sees of
 * taskbus: a plugin links against NO taskbus library and uses NO symbol of the
 * host process. Every host service reaches it through a table of function
 * pointers (tb_plugin_host_t) handed over at init. Build with
 * `-Wl,--no-undefined` to prove it.
 *
 * ## Tutorial
 *
 * 1. Write the callbacks:
 *    - `init` parses the plugin's configuration (already checked by the host
 *      against your table of config keys), allocates the plugin state and
 *      starts any threads the plugin needs;
 *    - `start` is called for every run. It must return quickly: start the work
 *      (a process, a thread, a request) and return TB_PLUGIN_OK. Later, from
 *      any thread, report output chunks with host->output() and the outcome,
 *      exactly once, with host->finished();
 *    - `cancel` asks a started run to stop (it still ends with finished());
 *    - `destroy` stops the plugin's threads and frees its state.
 * 2. Describe the plugin in a `static const tb_plugin_t`, starting with
 *    TB_PLUGIN_ABI_FIELDS so that the host can check the ABI.
 * 3. Export ONE function, `tb_plugin_entry`, returning that descriptor. A
 *    function, not a data symbol: dlsym() is only guaranteed for functions.
 * 4. Build: `cc $(pkg-config --cflags taskbus-plugin) -shared -fPIC
 *    -Wl,--no-undefined -o hello.so hello.c -lpthread`, then point the
 *    executor's `plugin` setting at hello.so.
 *
 * ## A complete plugin
 *
 * This plugin "runs" a task by printing a greeting and finishing at once
 * (calling finished() from inside start() is allowed). examples/plugin-hello
 * in the taskbus sources holds a fuller one that works on its own thread and
 * can be cancelled.
 *
 * @code
 * #include <stdio.h>
 * #include <stdlib.h>
 * #include <string.h>
 * #include <time.h>
 * #include <taskbus/plugin.h>
 *
 * struct hello { const tb_plugin_host_t *host; char greeting[128]; };
 *
 * static const tb_plugin_config_key_t hello_keys[] = {
 *         {"greeting", "what to say to each task", "hello", 0,
 *          TB_PLUGIN_CONF_STRING},
 *         {0},
 * };
 *
 * static int hello_init(const tb_plugin_host_t *host,
 *                       const tb_plugin_kv_t *config, size_t n_config,
 *                       char *errbuf, size_t errbuf_size, void **state) {
 *         struct hello *h = calloc(1, sizeof(*h));
 *         if (!h) {
 *                 snprintf(errbuf, errbuf_size, "out of memory");
 *                 return TB_PLUGIN_ERROR;
 *         }
 *         h->host = host;
 *         // The host passes every declared key, defaults filled in.
 *         for (size_t i = 0; i < n_config; i++)
 *                 if (!strcmp(config[i].key, "greeting"))
 *                         snprintf(h->greeting, sizeof(h->greeting), "%s",
 *                                  config[i].value);
 *         *state = h;
 *         return TB_PLUGIN_OK;
 * }
 *
 * static int hello_start(void *state, const tb_plugin_run_t *run,
 *                        char *errbuf, size_t errbuf_size) {
 *         struct hello *h = state;
 *         char line[512];
 *         int n = snprintf(line, sizeof(line), "%s, %s!\n", h->greeting,
 *                          run->task_id);
 *         tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
 *         res.started_ms = res.finished_ms = (int64_t)time(NULL) * 1000;
 *         h->host->output(h->host, run, TB_PLUGIN_STDOUT, line, (size_t)n);
 *         res.status = TB_PLUGIN_RUN_SUCCEEDED;
 *         h->host->finished(h->host, run, &res);
 *         return TB_PLUGIN_OK;
 * }
 *
 * static int hello_cancel(void *state, const tb_plugin_run_t *run,
 *                         const char *reason) {
 *         return TB_PLUGIN_NOT_FOUND; // runs finish inside start()
 * }
 *
 * static void hello_destroy(void *state) {
 *         free(state);
 * }
 *
 * static const tb_plugin_t hello_plugin = {
 *         TB_PLUGIN_ABI_FIELDS,
 *         .name = "hello",
 *         .version = "1.0.0",
 *         .description = "greets every task",
 *         .config_keys = hello_keys,
 *         .init = hello_init,
 *         .start = hello_start,
 *         .cancel = hello_cancel,
 *         .destroy = hello_destroy,
 * };
 *
 * TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) {
 *         return &hello_plugin;
 * }
 * @endcode
 *
 * ## Outcomes: task failures are not plugin failures
 *
 * A task that runs and exits 3 is a SUCCESSFUL plugin call: start() returns
 * TB_PLUGIN_OK and finished() reports TB_PLUGIN_RUN_FAILED with exit_code 3.
 * A plugin that cannot run the task at all (bad executor options, unknown OS
 * user, missing working directory, exec failure, lost connection) reports an
 * infrastructure error: either start() returns TB_PLUGIN_ERROR with the
 * reason in errbuf (then finished() must NOT be called for that run), or,
 * when the failure is discovered later, finished() with
 * TB_PLUGIN_RUN_INFRA_ERROR and an error message. Keep the two apart: the
 * scheduler retries infrastructure errors differently from task failures.
 *
 * ## Threading model
 *
 * - init() and destroy() are called once each, from one host thread.
 * - start() and cancel() may be called from any host thread, concurrently,
 *   for different runs; they must not block for long (no waiting for the
 *   task).
 * - The host callbacks (log, output, heartbeat, finished) are thread-safe and
 *   may be called from any thread, including from inside start() and
 *   cancel(). Never hold a lock of your own while calling them: the host may
 *   call cancel() from inside its own callbacks.
 * - For one run, output chunks are delivered in the order output() is called;
 *   call finished() last, exactly once. Calls for a run after its finished()
 *   are ignored (and logged by the host).
 * - The tb_plugin_run_t a run was started with stays valid until finished()
 *   for it has returned (or start() has, if that is later), and for the
 *   duration of any cancel() call for it.
 *   cancel() can race with the run completing: return TB_PLUGIN_NOT_FOUND for
 *   a run you no longer know (compare the pointer, don't dereference it).
 * - Before destroy(), the host cancels every run still active and waits for
 *   their finished() calls; destroy() must stop every thread of the plugin.
 *
 * ## ABI rules and versioning
 *
 * - The descriptor, the host vtable, the run description and the result each
 *   start with their own size (sizeof as compiled), so each side can tell how
 *   many fields the other knows. Fields are only ever APPENDED within a major
 *   version; a minor version bump adds fields, a major version bump means any
 *   other change, and the host refuses a plugin of a different major.
 * - The host refuses a plugin whose descriptor is smaller than the fields of
 *   the host's major version need, and a plugin built against a NEWER minor
 *   whose host vtable would be bigger than the host's (it could call a host
 *   function that does not exist). A plugin built against an OLDER minor loads
 *   fine: the host reads only the fields it has.
 * - The arrays (tb_plugin_kv_t, tb_plugin_config_key_t) are frozen for a
 *   major version: their element layout never changes within it.
 * - Strings are UTF-8 and NUL-terminated. Whatever the host passes is owned by
 *   the host and valid for the documented lifetime only; whatever the plugin
 *   passes to a host callback is copied before the callback returns.
 */
#ifndef TASKBUS_PLUGIN_H
#define TASKBUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major version: a plugin of another major is refused. */
#define TB_PLUGIN_ABI_MAJOR 1
/** ABI minor version: bumped when fields are appended. */
#define TB_PLUGIN_ABI_MINOR 1
/** The one symbol a plugin exports. */
#define TB_PLUGIN_ENTRY_SYMBOL "tb_plugin_entry"

/** Mark the entry function exported even under -fvisibility=hidden. */
#define TB_PLUGIN_EXPORT __attribute__((visibility("default")))

/** Return codes of the plugin callbacks. */
enum {
        TB_PLUGIN_OK = 0,         /**< success */
        TB_PLUGIN_ERROR = -1,     /**< failure; errbuf says why */
        TB_PLUGIN_NOT_FOUND = -2, /**< cancel(): run unknown or already finished */
};

/** Outcome of a run (tb_plugin_result_t.status). */
enum {
        TB_PLUGIN_RUN_SUCCEEDED = 0,   /**< the task ran and succeeded (exit 0) */
        TB_PLUGIN_RUN_FAILED = 1,      /**< the task ran and failed (exit != 0, killed) */
        TB_PLUGIN_RUN_TIMED_OUT = 2,   /**< stopped because it reached its expiry */
        TB_PLUGIN_RUN_CANCELLED = 3,   /**< stopped by cancel() */
        TB_PLUGIN_RUN_INFRA_ERROR = 4, /**< the plugin could not run the task */
};

/** Output streams for tb_plugin_host_t.output(). */
enum {
        TB_PLUGIN_STDOUT = 1,
        TB_PLUGIN_STDERR = 2,
};

/** Log levels for tb_plugin_host_t.log(). */
enum {
        TB_PLUGIN_LOG_DEBUG = 0,
        TB_PLUGIN_LOG_INFO = 1,
        TB_PLUGIN_LOG_WARN = 2,
        TB_PLUGIN_LOG_ERROR = 3,
};

/** Types of config keys; the host checks values before init() and passes
 *  them normalised (see tb_plugin_config_key_t). */
enum {
        TB_PLUGIN_CONF_STRING = 0,   /**< passed as given */
        TB_PLUGIN_CONF_BOOL = 1,     /**< true/false/yes/no/on/off/1/0 -> "true"/"false" */
        TB_PLUGIN_CONF_INT = 2,      /**< decimal integer -> decimal integer */
        TB_PLUGIN_CONF_DURATION = 3, /**< "250ms", "5s", "1h30m", "PT30S" or bare
                                          seconds (plugin_util.h's unit grammar)
                                          -> whole milliseconds, e.g. "5000" */
};

/** A key/value pair. Frozen for ABI major 1. */
typedef struct tb_plugin_kv {
        const char *key;
        const char *value;
} tb_plugin_kv_t;

/**
 * One entry of a plugin's table of configuration keys (terminate the table
 * with an all-zero entry). The host rejects keys not in the table, listing
 * the valid ones, rejects a missing required key, checks the value's type,
 * and passes init() EVERY key of the table that has a value (the configured
 * one, else the default), in table order. Frozen for ABI major 1.
 */
typedef struct tb_plugin_config_key {
        const char *name;          /**< key name, e.g. "kill_grace" */
        const char *description;   /**< one line for docs and error messages */
        const char *default_value; /**< NULL: no default (absent unless configured) */
        int32_t required;          /**< non-zero: configuration must set it */
        int32_t type;              /**< TB_PLUGIN_CONF_* */
} tb_plugin_config_key_t;

/**
 * What to run. Owned by the host; valid from start() until finished() for
 * this run has returned (or start() has, if later). The pointer also
 * identifies the run in every host callback and in cancel().
 */
typedef struct tb_plugin_run {
        uint32_t size;                 /**< sizeof(tb_plugin_run_t) as the HOST built it */
        uint32_t reserved0;
        const char *run_id;            /**< unique per (task, nominal time, attempt) */
        const char *task_id;
        int64_t nominal_time_ms;       /**< scheduled fire time, Unix epoch ms (UTC) */
        int32_t attempt;               /**< 1 for the first try */
        int32_t reserved1;
        const char *script;            /**< shell script, or NULL when argv is given */
        const char *const *argv;       /**< NULL-terminated argv form, or NULL */
        const tb_plugin_kv_t *env;     /**< environment additions */
        size_t n_env;
        const char *workdir;           /**< NULL or "": the plugin's default */
        const char *os_user;           /**< NULL or "": the host's own user */
        int64_t expiry_ms;             /**< maximum run length in ms; 0: none */
        const tb_plugin_kv_t *options; /**< the task's executor_options */
        size_t n_options;
        const char *security_group;    /**< the task's security group */
        /* ---- ABI 1.1: check TB_PLUGIN_HAS_FIELD(run, tb_plugin_run_t, n_policy) ---- */
        /**
         * The operator's policy for security_group, from the executor's
         * configuration (`groups.NAME` in taskbus.conf), NEVER from the task:
         * use it for anything a task must not choose for itself (allowed
         * images, resource caps, credentials). Keys: "os_user", "network",
         * "memory_max" (bytes), "cpus_max" (decimal, 1.0 = one core),
         * "ssh_key", "ssh_known_hosts" (paths), and "images" once per allowed
         * image. A key is absent when the group does not set it.
         */
        const tb_plugin_kv_t *policy;
        size_t n_policy;
} tb_plugin_run_t;

/**
 * How a run ended, passed to tb_plugin_host_t.finished(). Initialise with
 * `tb_plugin_result_t r = {TB_PLUGIN_RESULT_FIELDS};` so size is set.
 */
typedef struct tb_plugin_result {
        uint32_t size;       /**< sizeof(tb_plugin_result_t) as the PLUGIN built it */
        int32_t status;      /**< TB_PLUGIN_RUN_* */
        int32_t exit_code;   /**< exit status, or -1 if the task did not exit normally */
        int32_t signal;      /**< signal that ended the task, or 0 */
        int64_t started_ms;  /**< Unix epoch ms when the task started (0: never) */
        int64_t finished_ms; /**< Unix epoch ms when it ended */
        const char *error;   /**< NULL or a human-readable reason; copied by the host */
} tb_plugin_result_t;

typedef struct tb_plugin_host tb_plugin_host_t;

/**
 * Host services, passed to init(). Owned by the host, valid until destroy()
 * returns. Every function is thread-safe; see "Threading model" above.
 */
struct tb_plugin_host {
        uint32_t size;      /**< sizeof(tb_plugin_host_t) as the HOST built it */
        uint16_t abi_major; /**< the host's TB_PLUGIN_ABI_MAJOR */
        uint16_t abi_minor; /**< the host's TB_PLUGIN_ABI_MINOR */
        void *host_data;    /**< the host's; do not touch */

        /** Log one line (no trailing newline needed) under the plugin's name. */
        void (*log)(const tb_plugin_host_t *host, int level, const char *fmt, ...)
                __attribute__((format(printf, 3, 4)));
        /** Emit a chunk of a run's output (any bytes); copied before returning.
         *  Emit while the run goes on, not only at the end: the host streams
         *  chunks to users live. */
        void (*output)(const tb_plugin_host_t *host, const tb_plugin_run_t *run,
                       int stream, const void *data, size_t len);
        /** The run is alive (for runs that emit no output for a long time). */
        void (*heartbeat)(const tb_plugin_host_t *host, const tb_plugin_run_t *run);
        /** The run ended: call exactly once per run that start() accepted.
         *  \p result is copied; after this returns \p run may be freed. */
        void (*finished)(const tb_plugin_host_t *host, const tb_plugin_run_t *run,
                         const tb_plugin_result_t *result);
};

/** The plugin descriptor, returned by tb_plugin_entry(). Start it with
 *  TB_PLUGIN_ABI_FIELDS. It must stay valid while the plugin is loaded
 *  (make it a static const). */
typedef struct tb_plugin {
        uint32_t size;      /**< sizeof(tb_plugin_t) as the PLUGIN built it */
        uint16_t abi_major; /**< TB_PLUGIN_ABI_MAJOR the plugin was built against */
        uint16_t abi_minor; /**< TB_PLUGIN_ABI_MINOR the plugin was built against */
        uint32_t host_size; /**< sizeof(tb_plugin_host_t) the plugin was built against */
        uint32_t reserved0;

        const char *name;        /**< short name, [a-z0-9_-], e.g. "shell" */
        const char *version;     /**< the plugin's own version, e.g. "1.2.0" */
        const char *description; /**< one line */
        /** Config key table, terminated by an all-zero entry (may be NULL: no keys). */
        const tb_plugin_config_key_t *config_keys;

        /**
         * Create the plugin state. \p config holds \p n_config validated,
         * normalised key/values (host-owned, valid during the call only).
         * On failure write the reason to \p errbuf (always NUL-terminated by
         * the host if you write nothing) and return TB_PLUGIN_ERROR.
         * \p host stays valid until destroy() returns.
         */
        int (*init)(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                    size_t n_config, char *errbuf, size_t errbuf_size, void **state);
        /**
         * Start \p run asynchronously and return quickly. TB_PLUGIN_OK: the
         * plugin will call host->finished() for it exactly once (possibly
         * before start() returns). TB_PLUGIN_ERROR: the run could not be
         * started (an infrastructure error, reason in \p errbuf); finished()
         * must not be called for it.
         */
        int (*start)(void *state, const tb_plugin_run_t *run, char *errbuf,
                     size_t errbuf_size);
        /**
         * Ask a started run to stop; it ends with finished() and status
         * TB_PLUGIN_RUN_CANCELLED (if the cancel won the race). Returns
         * TB_PLUGIN_OK, or TB_PLUGIN_NOT_FOUND for an unknown/finished run.
         * \p reason is host-owned, valid during the call only.
         */
        int (*cancel)(void *state, const tb_plugin_run_t *run, const char *reason);
        /** Stop every thread of the plugin and free \p state. No run is active. */
        void (*destroy)(void *state);
} tb_plugin_t;

/** The ABI header fields of a tb_plugin_t initialiser. */
#define TB_PLUGIN_ABI_FIELDS                                                   \
        .size = sizeof(tb_plugin_t), .abi_major = TB_PLUGIN_ABI_MAJOR,         \
        .abi_minor = TB_PLUGIN_ABI_MINOR, .host_size = sizeof(tb_plugin_host_t)

/** The first field of a tb_plugin_result_t initialiser. */
#define TB_PLUGIN_RESULT_FIELDS .size = sizeof(tb_plugin_result_t)

/** True if the struct at \p ptr (whose first field is its size) is big
 *  enough to hold \p field: use before reading a field appended in a later
 *  minor version, e.g. TB_PLUGIN_HAS_FIELD(run, tb_plugin_run_t, security_group). */
#define TB_PLUGIN_HAS_FIELD(ptr, type, field)                                  \
        ((ptr)->size >= offsetof(type, field) + sizeof(((type *)0)->field))

/** Format epoch milliseconds as RFC 3339 UTC ("2026-01-02T03:04:05Z", with
 *  ".mmm" when not whole seconds), e.g. for TASKBUS_NOMINAL_TIME. Header-only
 *  (plugins need no host symbols) and plain C11: no POSIX time functions. */
static inline void tb_plugin_time_format(int64_t ms, char out[40]) {
        int64_t secs = ms / 1000 - (ms % 1000 < 0);
        int frac = (int)(ms - secs * 1000);
        int64_t days = secs / 86400 - (secs % 86400 < 0);
        int64_t sod = secs - days * 86400;
        /* civil date from days since 1970-01-01 (proleptic Gregorian) */
        int64_t z = days + 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        int d = (int)(doy - (153 * mp + 2) / 5 + 1);
        int m = (int)(mp < 10 ? mp + 3 : mp - 9);
        long long y = (long long)(yoe + era * 400 + (m <= 2));
        char tail[8] = "Z";
        if (frac)
                snprintf(tail, sizeof(tail), ".%03dZ", frac % 1000);
        snprintf(out, 40, "%04lld-%02d-%02dT%02d:%02d:%02d%s", y % 10000, m, d,
                 (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), tail);
}

/** The signature of the exported entry point. */
typedef const tb_plugin_t *(*tb_plugin_entry_fn)(void);

/** The one function a plugin exports (declare it with TB_PLUGIN_EXPORT). */
TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* TASKBUS_PLUGIN_H */
