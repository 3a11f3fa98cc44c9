/**
 * @file shell_internal.h
 * @brief What the shell plugin's files share: the plugin state, one run's
 *        record, and the functions that cross files.
 *
 * shell.c      the plugin glue: config keys, init, cancel, destroy
 * spawn.c      start(): checks a run, resolves its user and groups, builds
 *              its environment and command line, and hands it to child.c
 * child.c      the process start: clone, then between clone and execve the
 *              session, signals, stdio, working directory, groups, gid, uid
 * io_thread.c  the one I/O thread: pipes, pidfds, process groups, timers,
 *              and the result of each run
 *
 * Only the I/O thread touches a run's processes and pipes; start() and
 * cancel() hand runs and requests to it under st->lock and wake it with an
 * eventfd. Host callbacks are made with no lock held.
 */
#ifndef TB_PLUGIN_SHELL_INTERNAL_H
#define TB_PLUGIN_SHELL_INTERNAL_H

#include <taskbus/plugin.h>
#include <taskbus/plugin_util.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#define SH_CHUNK_MIN 4096
#define SH_CHUNK_MAX (64 * 1024)    /* emit once this much is buffered */
#define SH_READS_PER_EVENT 16       /* fairness between chatty runs */
#define SH_REAP_POLL_MS 20          /* while waiting for a group to die */
#define SH_NOPIDFD_POLL_MS 50       /* leader polling without pidfd_open */
#define SH_KILL_WAIT_MS 2000        /* after SIGKILL, wait this long for the group */
#define SH_DRAIN_MS 1000            /* pipes held open by escaped processes */
#define SH_PATH "/usr/local/bin:/usr/bin:/bin"

enum { SH_FD_STDOUT = 0, SH_FD_STDERR = 1, SH_FD_PID = 2, SH_FD_WAKE = 3 };
enum { SH_OUT_NONE = 0, SH_OUT_TIMEOUT, SH_OUT_CANCEL, SH_OUT_INFRA };

struct sh_run;

typedef struct sh_fdref {
        struct sh_run *run;
        int kind;
} sh_fdref_t;

typedef struct sh_stream {
        int fd;           /* -1 once at EOF */
        char *buf;
        size_t len, cap;
        int64_t first_ms; /* monotonic ms when buf became non-empty */
        sh_fdref_t ref;
} sh_stream_t;

typedef struct sh_run {
        struct sh_run *next;          /* st->pending or st->runs, under st->lock */
        const tb_plugin_run_t *run;   /* host-owned until finished() */
        pid_t pid;                    /* also the process group id */
        int pidfd;
        sh_fdref_t pid_ref;
        sh_stream_t io[2];
        int64_t started_ms;           /* wall clock */
        int64_t deadline;             /* monotonic ms; 0: no expiry */
        int64_t expiry_ms, kill_grace_ms;
        int64_t next_heartbeat;

        /* Under st->lock: set by cancel(), consumed by the I/O thread. */
        tb_pu_cancel_t cancel;
        bool cancel_seen;

        /* I/O thread only. */
        int outcome;                  /* SH_OUT_* */
        char infra_msg[200];
        bool term_sent, kill_sent, leader_done, group_gone, lost;
        int64_t kill_at, kill_wait_until, drain_until;
        int w_code, w_status;          /* waitid si_code and si_status of the leader */
} sh_run_t;

typedef struct sh_state {
        const tb_plugin_host_t *host;
        bool allow_root;
        int64_t kill_grace_ms, flush_ms, heartbeat_ms;
        char *default_workdir, *shell;
        int epfd, wakefd;
        sh_fdref_t wake_ref;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        sh_run_t *pending;            /* started, not yet adopted by the I/O thread */
        sh_run_t *runs;               /* adopted */
        bool stopping;
} sh_state_t;

/* ---- shell.c ------------------------------------------------------------ */

/** Wake the I/O thread (to adopt a run or see a cancel). Any thread. */
void sh_wake(sh_state_t *st);

/* ---- spawn.c ------------------------------------------------------------ */

/** The plugin's start(): spawn \p run and hand it to the I/O thread. */
int sh_spawn_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                   size_t errbuf_size);

/* ---- child.c ------------------------------------------------------------ */

/** What the child is to become. Everything is resolved by the caller: the
 *  child makes system calls only. */
typedef struct sh_child_spec {
        const char *path;          /* execve()'s path */
        char *const *argv, *const *envp;
        const char *workdir;
        int out_fd, err_fd;        /* the pipes' write ends, both > 2 */
        bool switch_user;          /* else the ids and groups stay ours */
        const char *user;          /* for messages */
        uid_t uid;
        gid_t gid;
        const gid_t *groups;       /* supplementary groups (getgrouplist()) */
        size_t n_groups;
        int max_fd;                /* descriptors to close without close_range */
} sh_child_spec_t;

/**
 * @brief Start \p spec's process: a new session and process group, signals
 *        at their defaults and unblocked, stdin /dev/null, stdout and stderr
 *        on the given pipes, no other descriptor, in its working directory,
 *        as its user (groups, then gid, then uid), then execve().
 * @param pid set to the child's pid (also its process group) on success
 * @returns TB_PLUGIN_OK once the child has exec'd; TB_PLUGIN_ERROR with
 *          \p errbuf naming the step and its cause (a user that cannot be
 *          switched to names the user) when it could not: that child is
 *          already reaped.
 * @locality any thread; it is suspended until the child execs or fails
 */
int sh_child_spawn(const sh_child_spec_t *spec, pid_t *pid, char *errbuf,
                   size_t errbuf_size);

/* ---- io_thread.c -------------------------------------------------------- */

/** The I/O thread (\p arg: the state), until destroy() sets st->stopping
 *  and no run is left. */
void *sh_io_main(void *arg);

#endif /* TB_PLUGIN_SHELL_INTERNAL_H */
