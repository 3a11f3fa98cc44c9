/**
 * @file shell.c
 * @brief The shell executor plugin: runs a task's script with /bin/sh -c (or
 *        its argv) as the task's OS user, streams its output, enforces its
 *        expiry and reports how it ended.
 *
 * Design (see docs/plugin-guide.md for the operator view; which file holds
 * what: shell_internal.h):
 *  - Processes are started by child.c with clone(CLONE_VM | CLONE_VFORK)
 *    (what posix_spawn() does, without the page-table copy of fork()): in a
 *    new session (setsid: the task's process group is its pid), signals at
 *    their defaults and unblocked, stdin from /dev/null, stdout and stderr on
 *    pipes, every other descriptor closed, a clean environment.
 *  - When the task's user differs from ours, the child switches to it between
 *    clone and execve (setgroups with the groups the parent resolved with
 *    getgrouplist(), setresgid, setresuid, raw system calls only): one exec
 *    per run. A failure there comes back to start() as an error naming the
 *    user and the cause. Only a root executor switches users; uid 0 itself is
 *    refused unless allow_root is set. (Until 1.1 this went through an extra
 *    exec of util-linux setpriv; its config key is ignored now, with a
 *    warning.)
 *  - ONE I/O thread per plugin instance multiplexes, with epoll, every run's
 *    two pipes and a pidfd (pidfd_open) that becomes readable when the
 *    task's main process exits: no SIGCHLD handler, no per-run thread, which
 *    is what lets one executor hold hundreds of runs.
 *  - A run ends when its main process has exited, the rest of its process
 *    group is gone and its pipes are at EOF. Whatever the task left running
 *    in its group gets SIGTERM, then SIGKILL after kill_grace. The plugin
 *    makes the host a child subreaper (PR_SET_CHILD_SUBREAPER) so the task's
 *    orphans are re-parented to us and reaped with waitid(P_PGID): without
 *    it they become zombies of PID 1, which in containers often never reaps
 *    them, and the group would never look gone.
 *  - Only the I/O thread touches a run's processes and pipes; start() and
 *    cancel() hand runs and requests to it under one mutex and wake it with
 *    an eventfd. Host callbacks are made with no lock held.
 */
#include "shell_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static const tb_plugin_config_key_t sh_keys[] = {
        {"allow_root", "allow runs as root (uid 0)", "false", 0, TB_PLUGIN_CONF_BOOL},
        {"kill_grace", "time between SIGTERM and SIGKILL when a run is stopped",
         "5s", 0, TB_PLUGIN_CONF_DURATION},
        {"default_workdir", "working directory of runs that name none", "/", 0,
         TB_PLUGIN_CONF_STRING},
        {"setpriv", "deprecated and ignored: users are switched in the child, "
         "without setpriv", NULL, 0, TB_PLUGIN_CONF_STRING},
        {"shell", "the shell that runs scripts (as shell -c script)", "/bin/sh", 0,
         TB_PLUGIN_CONF_STRING},
        {"flush_interval", "longest time output is held before it is emitted",
         "250ms", 0, TB_PLUGIN_CONF_DURATION},
        {"heartbeat_interval", "how often a running run reports it is alive", "10s",
         0, TB_PLUGIN_CONF_DURATION},
        {0},
};

void sh_wake(sh_state_t *st) {
        uint64_t one = 1;
        ssize_t n = write(st->wakefd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is already non-zero, it will wake */
}

static int sh_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        sh_state_t *st = state;
        int rc = TB_PLUGIN_NOT_FOUND;
        pthread_mutex_lock(&st->lock);
        for (int list = 0; list < 2 && rc != TB_PLUGIN_OK; list++) {
                for (sh_run_t *r = list ? st->runs : st->pending; r; r = r->next) {
                        if (r->run == run) {
                                tb_pu_cancel_request(&r->cancel, reason);
                                rc = TB_PLUGIN_OK;
                                break;
                        }
                }
        }
        pthread_mutex_unlock(&st->lock);
        if (rc == TB_PLUGIN_OK)
                sh_wake(st);
        return rc;
}

/* ---- lifecycle --------------------------------------------------------------- */

static void sh_destroy(void *state) {
        sh_state_t *st = state;
        if (!st)
                return;
        if (st->thread_started) {
                pthread_mutex_lock(&st->lock);
                st->stopping = true;
                pthread_mutex_unlock(&st->lock);
                sh_wake(st);
                pthread_join(st->thread, NULL);
        }
        if (st->epfd >= 0)
                close(st->epfd);
        if (st->wakefd >= 0)
                close(st->wakefd);
        pthread_mutex_destroy(&st->lock);
        free(st->default_workdir);
        free(st->shell);
        free(st);
}

static int sh_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        sh_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        st->host = host;
        st->epfd = st->wakefd = -1;
        pthread_mutex_init(&st->lock, NULL);
        const char *wd = tb_pu_kv_get(config, n_config, "default_workdir");
        const char *setpriv = tb_pu_kv_get(config, n_config, "setpriv");
        if (setpriv)
                host->log(host, TB_PLUGIN_LOG_WARN, "config key 'setpriv' (\"%s\") is "
                          "deprecated and ignored: the shell plugin switches to the run's "
                          "user itself, between fork and exec; remove the key", setpriv);
        const char *shell = tb_pu_kv_get(config, n_config, "shell");
        st->allow_root = tb_pu_kv_true(config, n_config, "allow_root");
        st->kill_grace_ms = tb_pu_kv_i64(config, n_config, "kill_grace", 0);
        st->flush_ms = tb_pu_kv_i64(config, n_config, "flush_interval", 0);
        st->heartbeat_ms = tb_pu_kv_i64(config, n_config, "heartbeat_interval", 0);
        st->default_workdir = wd ? strdup(wd) : NULL;
        st->shell = shell ? strdup(shell) : NULL;
        if (!st->default_workdir || !st->shell) {
                sh_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        }
        if (st->flush_ms <= 0 || st->heartbeat_ms <= 0) {
                sh_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "flush_interval and "
                                  "heartbeat_interval must be greater than zero");
        }
        if (access(st->shell, X_OK) != 0) {
                tb_pu_fail(errbuf, errbuf_size, "config key 'shell': '%s' is not "
                           "executable: %s", st->shell, strerror(errno));
                sh_destroy(st);
                return TB_PLUGIN_ERROR;
        }

        /* Our tasks' orphans must come back to us to be reaped. */
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
                host->log(host, TB_PLUGIN_LOG_WARN, "cannot become child subreaper "
                          "(%s): processes a task leaves behind are reaped by PID 1",
                          strerror(errno));
        /* Three descriptors per run: hundreds of runs need more than 1024. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rlim_t want = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
                if (want > rl.rlim_cur) {
                        rl.rlim_cur = want;
                        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                                host->log(host, TB_PLUGIN_LOG_WARN, "cannot raise the "
                                          "open file limit: %s", strerror(errno));
                }
        }

        st->epfd = epoll_create1(EPOLL_CLOEXEC);
        st->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (st->epfd < 0 || st->wakefd < 0) {
                int err = errno;
                sh_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "epoll/eventfd: %s", strerror(err));
        }
        st->wake_ref.kind = SH_FD_WAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &st->wake_ref};
        if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->wakefd, &ev) != 0) {
                int err = errno;
                sh_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "epoll_ctl: %s", strerror(err));
        }
        int e = pthread_create(&st->thread, NULL, sh_io_main, st);
        if (e) {
                sh_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "cannot start the I/O thread: %s",
                                  strerror(e));
        }
        st->thread_started = true;
        *state = st;
        return TB_PLUGIN_OK;
}

static const tb_plugin_t sh_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "shell",
        .version = "1.1.0",
        .description = "runs a task's script with /bin/sh as its OS user",
        .config_keys = sh_keys,
        .init = sh_init,
        .start = sh_spawn_start,
        .cancel = sh_cancel,
        .destroy = sh_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &sh_plugin; }
