/**
 * @file shell.c
 * @brief The shell executor plugin: runs a task's script with /bin/sh -c (or
 *        its argv) as the task's OS user, streams its output, enforces its
 *        expiry and reports how it ended.
 *
 * Design (see docs/plugin-guide.md for the operator view):
 *  - Processes are started with posix_spawn(), in a new session
 *    (POSIX_SPAWN_SETSID: the task's process group is its pid), with an empty
 *    signal mask and default dispositions, stdin from /dev/null, stdout and
 *    stderr on pipes, every other descriptor closed, and a clean environment.
 *  - posix_spawn cannot change user, and a fork()ed child of a multithreaded
 *    process may only call async-signal-safe functions (initgroups() is not
 *    one). So when the task's user differs from ours, we spawn
 *    `setpriv --reuid --regid --init-groups -- cmd...`: util-linux's setpriv
 *    switches ids and execs the command in place, so the pid, session and
 *    process group stay the task's own.
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
#include <taskbus/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
        bool cancel_req, cancel_seen;
        char cancel_reason[200];

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
        char *default_workdir, *setpriv, *shell;
        int epfd, wakefd;
        sh_fdref_t wake_ref;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        sh_run_t *pending;            /* started, not yet adopted by the I/O thread */
        sh_run_t *runs;               /* adopted */
        bool stopping;
} sh_state_t;

static const tb_plugin_config_key_t sh_keys[] = {
        {"allow_root", "allow runs as root (uid 0)", "false", 0, TB_PLUGIN_CONF_BOOL},
        {"kill_grace", "time between SIGTERM and SIGKILL when a run is stopped",
         "5s", 0, TB_PLUGIN_CONF_DURATION},
        {"default_workdir", "working directory of runs that name none", "/", 0,
         TB_PLUGIN_CONF_STRING},
        {"setpriv", "path of util-linux setpriv, used to switch to the run's user",
         "/usr/bin/setpriv", 0, TB_PLUGIN_CONF_STRING},
        {"shell", "the shell that runs scripts (as shell -c script)", "/bin/sh", 0,
         TB_PLUGIN_CONF_STRING},
        {"flush_interval", "longest time output is held before it is emitted",
         "250ms", 0, TB_PLUGIN_CONF_DURATION},
        {"heartbeat_interval", "how often a running run reports it is alive", "10s",
         0, TB_PLUGIN_CONF_DURATION},
        {0},
};

/* ---- small helpers ------------------------------------------------------- */

static int64_t sh_mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sh_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sh_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int sh_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errbuf_size, fmt, ap);
        va_end(ap);
        return TB_PLUGIN_ERROR;
}

/* "250ms", "5s", "2m", "1h" or bare seconds -> ms; -1 if malformed. */
static int64_t sh_parse_duration(const char *s) {
        char *end;
        if (!s || *s < '0' || *s > '9')
                return -1;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -1;
        int64_t mult = !*end || !strcmp(end, "s") ? 1000
                       : !strcmp(end, "ms")        ? 1
                       : !strcmp(end, "m")         ? 60000
                       : !strcmp(end, "h")         ? 3600000
                                                   : 0;
        if (!mult || v > (unsigned long long)(INT64_MAX / mult))
                return -1;
        return (int64_t)v * mult;
}

static void sh_wake(sh_state_t *st) {
        uint64_t one = 1;
        ssize_t n = write(st->wakefd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is already non-zero, it will wake */
}

/* kill() the whole process group; the caller guarantees the group id is
 * still reserved (the leader unreaped, or members alive). */
static void sh_signal_group(sh_run_t *r, int sig) {
        if (!r->group_gone && kill(-r->pid, sig) < 0 && errno == ESRCH)
                r->group_gone = r->leader_done;
}

/* ---- the I/O thread -------------------------------------------------------- */

static void sh_emit(sh_state_t *st, sh_run_t *r, int idx) {
        sh_stream_t *s = &r->io[idx];
        if (s->len == 0)
                return;
        st->host->output(st->host, r->run,
                         idx == SH_FD_STDOUT ? TB_PLUGIN_STDOUT : TB_PLUGIN_STDERR,
                         s->buf, s->len);
        s->len = 0;
}

static void sh_stream_close(sh_state_t *st, sh_stream_t *s) {
        if (s->fd < 0)
                return;
        epoll_ctl(st->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
}

static void sh_read(sh_state_t *st, sh_run_t *r, int idx, int64_t now) {
        sh_stream_t *s = &r->io[idx];
        for (int i = 0; i < SH_READS_PER_EVENT && s->fd >= 0; i++) {
                if (s->cap - s->len < SH_CHUNK_MIN && s->cap < SH_CHUNK_MAX) {
                        size_t ncap = s->cap * 2 > SH_CHUNK_MAX ? SH_CHUNK_MAX : s->cap * 2;
                        char *nb = realloc(s->buf, ncap);
                        if (nb) { /* else keep going with smaller chunks */
                                s->buf = nb;
                                s->cap = ncap;
                        }
                }
                if (s->len == s->cap)
                        sh_emit(st, r, idx);
                ssize_t n = read(s->fd, s->buf + s->len, s->cap - s->len);
                if (n > 0) {
                        if (s->len == 0)
                                s->first_ms = now;
                        s->len += (size_t)n;
                        if (s->len >= SH_CHUNK_MAX)
                                sh_emit(st, r, idx);
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                if (n < 0)
                        st->host->log(st->host, TB_PLUGIN_LOG_WARN,
                                      "run %s: reading its %s failed: %s",
                                      r->run->run_id, idx ? "stderr" : "stdout",
                                      strerror(errno));
                sh_stream_close(st, s);
                sh_emit(st, r, idx);
        }
}

/* Reap whatever of the group has become our child (the task's orphans come
 * to us as subreaper) and notice when the group is empty. Only called once
 * the leader's status has been collected. */
static void sh_reap_group(sh_run_t *r) {
        if (r->group_gone)
                return;
        for (;;) {
                siginfo_t si;
                memset(&si, 0, sizeof(si));
                if (waitid(P_PGID, (id_t)r->pid, &si, WEXITED | WNOHANG) != 0 ||
                    si.si_pid == 0)
                        break;
        }
        if (kill(-r->pid, 0) < 0 && errno == ESRCH)
                r->group_gone = true;
}

/* Start the stop sequence: SIGTERM to the group now, SIGKILL at kill_at. */
static void sh_begin_stop(sh_run_t *r, int outcome, int64_t now) {
        if (r->outcome == SH_OUT_NONE && !r->leader_done)
                r->outcome = outcome;
        if (!r->term_sent) {
                sh_signal_group(r, SIGTERM);
                r->term_sent = true;
                r->kill_at = now + r->kill_grace_ms;
        }
}

static void sh_leader_check(sh_state_t *st, sh_run_t *r, int64_t now) {
        if (r->leader_done)
                return;
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        if (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG) != 0) {
                if (errno == EINTR)
                        return;
                /* Someone else reaped our child: the host ignores SIGCHLD or
                 * waits for any child. We cannot know how the task ended. */
                r->lost = true;
                snprintf(r->infra_msg, sizeof(r->infra_msg),
                         "lost track of pid %d: waitid: %s (does the host set "
                         "SIGCHLD to SIG_IGN or call wait(-1)?)", (int)r->pid,
                         strerror(errno));
        } else if (si.si_pid == 0) {
                return; /* not yet */
        } else {
                r->w_code = si.si_code;
                r->w_status = si.si_status;
        }
        r->leader_done = true;
        if (r->pidfd >= 0) {
                epoll_ctl(st->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
                close(r->pidfd);
                r->pidfd = -1;
        }
        sh_reap_group(r);
        if (!r->group_gone && !r->term_sent) {
                /* The task's main process is done; what it left in its group
                 * must not outlive the run. */
                sh_signal_group(r, SIGTERM);
                r->term_sent = true;
                r->kill_at = now + r->kill_grace_ms;
        }
}

static void sh_finish(sh_state_t *st, sh_run_t *r) {
        char msg[512] = "";
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};

        sh_emit(st, r, SH_FD_STDOUT);
        sh_emit(st, r, SH_FD_STDERR);
        sh_stream_close(st, &r->io[0]);
        sh_stream_close(st, &r->io[1]);
        if (r->pidfd >= 0) {
                epoll_ctl(st->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
                close(r->pidfd);
        }

        res.started_ms = r->started_ms;
        res.finished_ms = sh_wall_ms();
        res.exit_code = -1;
        bool exited = !r->lost && r->w_code == CLD_EXITED;
        bool signalled = !r->lost && (r->w_code == CLD_KILLED || r->w_code == CLD_DUMPED);
        if (exited)
                res.exit_code = r->w_status;
        if (signalled)
                res.signal = r->w_status;

        if (r->outcome == SH_OUT_INFRA || r->lost) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "%s", r->infra_msg);
        } else if (r->outcome == SH_OUT_TIMEOUT) {
                res.status = TB_PLUGIN_RUN_TIMED_OUT;
                snprintf(msg, sizeof(msg), "run exceeded its expiry of %lld ms: "
                         "SIGTERM sent to process group %d%s", (long long)r->expiry_ms,
                         (int)r->pid, r->kill_sent ? ", then SIGKILL" : "");
        } else if (r->outcome == SH_OUT_CANCEL) {
                res.status = TB_PLUGIN_RUN_CANCELLED;
                snprintf(msg, sizeof(msg), "cancelled: %s", r->cancel_reason);
        } else if (exited && r->w_status == 0) {
                res.status = TB_PLUGIN_RUN_SUCCEEDED;
        } else if (exited) {
                res.status = TB_PLUGIN_RUN_FAILED;
                snprintf(msg, sizeof(msg), "exited with code %d", r->w_status);
        } else {
                res.status = TB_PLUGIN_RUN_FAILED;
                snprintf(msg, sizeof(msg), "killed by signal %d (%s)", r->w_status,
                         strsignal(r->w_status));
        }
        res.error = *msg ? msg : NULL;
        st->host->finished(st->host, r->run, &res);
        free(r->io[0].buf);
        free(r->io[1].buf);
        free(r);
}

/* Move newly started runs into the epoll set. */
static void sh_adopt(sh_state_t *st, sh_run_t *r, int64_t now) {
        struct epoll_event ev = {.events = EPOLLIN};
        int bad = 0;
        for (int i = 0; i < 2; i++) {
                ev.data.ptr = &r->io[i].ref;
                if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, r->io[i].fd, &ev) != 0)
                        bad = errno;
        }
        if (r->pidfd >= 0) {
                ev.data.ptr = &r->pid_ref;
                if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, r->pidfd, &ev) != 0)
                        bad = errno;
        }
        if (!bad)
                return;
        /* Cannot watch it (epoll limits): stop the task, poll the leader. */
        snprintf(r->infra_msg, sizeof(r->infra_msg), "cannot watch the task's "
                 "pipes: epoll_ctl: %s", strerror(bad));
        r->outcome = SH_OUT_INFRA;
        sh_stream_close(st, &r->io[0]);
        sh_stream_close(st, &r->io[1]);
        if (r->pidfd >= 0) {
                epoll_ctl(st->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
                close(r->pidfd);
                r->pidfd = -1;
        }
        sh_signal_group(r, SIGKILL);
        r->term_sent = r->kill_sent = true;
        r->kill_wait_until = now + SH_KILL_WAIT_MS;
}

/* Timers of one run; @returns true when the run is complete. */
static bool sh_tick(sh_state_t *st, sh_run_t *r, int64_t now, int64_t *next) {
        if (!r->leader_done && r->pidfd < 0)
                sh_leader_check(st, r, now);
        if (!r->leader_done && r->deadline && now >= r->deadline &&
            r->outcome == SH_OUT_NONE)
                sh_begin_stop(r, SH_OUT_TIMEOUT, now);
        if (r->term_sent && !r->kill_sent && !r->group_gone && now >= r->kill_at) {
                sh_signal_group(r, SIGKILL);
                r->kill_sent = true;
                r->kill_wait_until = now + SH_KILL_WAIT_MS;
        }
        if (r->leader_done)
                sh_reap_group(r);
        bool group_settled = r->group_gone || (r->kill_sent && now >= r->kill_wait_until);
        if (r->leader_done && group_settled && !r->drain_until)
                r->drain_until = now + SH_DRAIN_MS;
        for (int i = 0; i < 2; i++)
                if (r->io[i].len && now - r->io[i].first_ms >= st->flush_ms)
                        sh_emit(st, r, i);
        if (!r->leader_done && now >= r->next_heartbeat) {
                st->host->heartbeat(st->host, r->run);
                r->next_heartbeat = now + st->heartbeat_ms;
        }
        bool pipes_done = (r->io[0].fd < 0 && r->io[1].fd < 0) ||
                          (r->drain_until && now >= r->drain_until);
        if (r->leader_done && group_settled && pipes_done)
                return true;

        /* When do we need to look again? */
        int64_t t = *next;
#define SH_MIN(x) do { if ((x) < t) t = (x); } while (0)
        if (!r->leader_done && r->pidfd < 0)
                SH_MIN(now + SH_NOPIDFD_POLL_MS);
        if (!r->leader_done && r->deadline && r->outcome == SH_OUT_NONE)
                SH_MIN(r->deadline);
        if (r->term_sent && !r->kill_sent && !r->group_gone)
                SH_MIN(r->kill_at);
        if (r->leader_done && !r->group_gone)
                SH_MIN(now + SH_REAP_POLL_MS);
        if (r->kill_sent && !r->group_gone)
                SH_MIN(r->kill_wait_until);
        if (r->drain_until)
                SH_MIN(r->drain_until);
        for (int i = 0; i < 2; i++)
                if (r->io[i].len)
                        SH_MIN(r->io[i].first_ms + st->flush_ms);
        if (!r->leader_done)
                SH_MIN(r->next_heartbeat);
#undef SH_MIN
        *next = t;
        return false;
}

static void *sh_io_main(void *arg) {
        sh_state_t *st = arg;
        struct epoll_event evs[256];
        int timeout = 0;

        for (;;) {
                int n = epoll_wait(st->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])),
                                   timeout);
                int64_t now = sh_mono_ms();
                for (int i = 0; i < n; i++) {
                        sh_fdref_t *ref = evs[i].data.ptr;
                        if (ref->kind == SH_FD_WAKE) {
                                uint64_t v;
                                while (read(st->wakefd, &v, sizeof(v)) == sizeof(v))
                                        ;
                        } else if (ref->kind == SH_FD_PID) {
                                sh_leader_check(st, ref->run, now);
                        } else {
                                sh_read(st, ref->run, ref->kind, now);
                        }
                }

                /* Adopt new runs and pick up cancel requests. */
                sh_run_t *cancels[64];
                size_t nc = 0;
                bool more_cancels = false;
                pthread_mutex_lock(&st->lock);
                bool stopping = st->stopping;
                while (st->pending) {
                        sh_run_t *r = st->pending;
                        st->pending = r->next;
                        r->next = st->runs;
                        st->runs = r;
                        sh_adopt(st, r, now);
                }
                for (sh_run_t *r = st->runs; r; r = r->next) {
                        if (r->cancel_req && !r->cancel_seen) {
                                if (nc == sizeof(cancels) / sizeof(cancels[0])) {
                                        more_cancels = true;
                                        break;
                                }
                                r->cancel_seen = true;
                                cancels[nc++] = r;
                        }
                }
                pthread_mutex_unlock(&st->lock);
                for (size_t i = 0; i < nc; i++)
                        sh_begin_stop(cancels[i], SH_OUT_CANCEL, now);

                /* Timers; collect the runs that are complete. */
                int64_t next = now + 1000;
                sh_run_t *done = NULL;
                pthread_mutex_lock(&st->lock);
                sh_run_t **pp = &st->runs;
                pthread_mutex_unlock(&st->lock);
                for (;;) {
                        /* The list links change only here and in start()'s
                         * push to pending, so walking it needs the lock only
                         * for unlinking. */
                        sh_run_t *r = *pp;
                        if (!r)
                                break;
                        if (stopping && !r->kill_sent) {
                                if (r->outcome == SH_OUT_NONE && !r->leader_done)
                                        snprintf(r->cancel_reason, sizeof(r->cancel_reason),
                                                 "the shell plugin is shutting down");
                                sh_begin_stop(r, SH_OUT_CANCEL, now);
                                r->kill_at = now;
                        }
                        if (sh_tick(st, r, now, &next)) {
                                pthread_mutex_lock(&st->lock);
                                *pp = r->next;
                                pthread_mutex_unlock(&st->lock);
                                r->next = done;
                                done = r;
                        } else {
                                pp = &r->next;
                        }
                }
                while (done) {
                        sh_run_t *r = done;
                        done = r->next;
                        sh_finish(st, r);
                }

                pthread_mutex_lock(&st->lock);
                bool idle = !st->runs && !st->pending;
                pthread_mutex_unlock(&st->lock);
                if (stopping && idle)
                        break;
                timeout = more_cancels ? 0 : (int)(next > now ? next - now : 0);
        }
        return NULL;
}

/* ---- starting a run ---------------------------------------------------------- */

typedef struct sh_env {
        char **v;
        size_t n, cap;
} sh_env_t;

static void sh_env_free(sh_env_t *e) {
        for (size_t i = 0; i < e->n; i++)
                free(e->v[i]);
        free(e->v);
}

/* Set KEY=VALUE, replacing an earlier value. @returns false on ENOMEM. */
static bool sh_env_set(sh_env_t *e, const char *key, const char *value) {
        size_t klen = strlen(key);
        char *kv = malloc(klen + strlen(value) + 2);
        if (!kv)
                return false;
        sprintf(kv, "%s=%s", key, value);
        for (size_t i = 0; i < e->n; i++) {
                if (!strncmp(e->v[i], key, klen) && e->v[i][klen] == '=') {
                        free(e->v[i]);
                        e->v[i] = kv;
                        return true;
                }
        }
        if (e->n + 2 > e->cap) {
                size_t ncap = e->cap ? e->cap * 2 : 16;
                char **nv = realloc(e->v, ncap * sizeof(char *));
                if (!nv) {
                        free(kv);
                        return false;
                }
                e->v = nv;
                e->cap = ncap;
        }
        e->v[e->n++] = kv;
        e->v[e->n] = NULL;
        return true;
}

static const char *sh_env_get(const sh_env_t *e, const char *key) {
        size_t klen = strlen(key);
        for (size_t i = 0; i < e->n; i++)
                if (!strncmp(e->v[i], key, klen) && e->v[i][klen] == '=')
                        return e->v[i] + klen + 1;
        return NULL;
}

static bool sh_valid_env_name(const char *k) {
        if (!k || !((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_'))
                return false;
        for (; *k; k++)
                if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') ||
                      (*k >= '0' && *k <= '9') || *k == '_'))
                        return false;
        return true;
}

/* Find an executable for argv[0] in \p path (the task's PATH, not ours). */
static bool sh_which(const char *name, const char *path, char *out, size_t size) {
        const char *p = path;
        while (p && *p) {
                size_t n = strcspn(p, ":");
                struct stat sb;
                if (n > 0 && (size_t)snprintf(out, size, "%.*s/%s", (int)n, p, name) < size &&
                    stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0111))
                        return true;
                p += n;
                if (*p == ':')
                        p++;
        }
        return false;
}

static int sh_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        sh_state_t *st = state;
        int rc = TB_PLUGIN_ERROR;
        sh_env_t env = {0};
        sh_run_t *r = NULL;
        char *pwbuf = NULL;
        const char **argv = NULL;
        int outp[2] = {-1, -1}, errp[2] = {-1, -1};
        bool fa_init = false, at_init = false;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        char exe[PATH_MAX], uidarg[32], gidarg[32];

        /* What to run. */
        bool argv_form = run->argv && run->argv[0];
        if (!argv_form && !(run->script && *run->script))
                return sh_fail(errbuf, errbuf_size, "run has neither a script nor argv");
        if (argv_form && !*run->argv[0])
                return sh_fail(errbuf, errbuf_size, "argv[0] is empty");

        int64_t grace = st->kill_grace_ms;
        for (size_t i = 0; i < run->n_options; i++) {
                const tb_plugin_kv_t *o = &run->options[i];
                if (!strcmp(o->key, "kill_grace")) {
                        grace = sh_parse_duration(o->value);
                        if (grace < 0)
                                return sh_fail(errbuf, errbuf_size,
                                               "executor option kill_grace must be a "
                                               "duration such as 500ms or 5s, got '%s'",
                                               o->value);
                } else {
                        return sh_fail(errbuf, errbuf_size,
                                       "unknown executor option '%s'; the shell "
                                       "plugin accepts: kill_grace", o->key);
                }
        }

        /* Whom to run it as. */
        long pwsize = sysconf(_SC_GETPW_R_SIZE_MAX);
        if (pwsize < 16384)
                pwsize = 16384;
        pwbuf = malloc((size_t)pwsize);
        if (!pwbuf)
                return sh_fail(errbuf, errbuf_size, "out of memory");
        struct passwd pw, *pwp = NULL;
        bool named = run->os_user && *run->os_user;
        int prc = named ? getpwnam_r(run->os_user, &pw, pwbuf, (size_t)pwsize, &pwp)
                        : getpwuid_r(geteuid(), &pw, pwbuf, (size_t)pwsize, &pwp);
        if (prc != 0 || !pwp) {
                if (named && prc == 0)
                        sh_fail(errbuf, errbuf_size, "unknown os user '%s': no such "
                                "user on this executor host", run->os_user);
                else if (named)
                        sh_fail(errbuf, errbuf_size, "cannot look up os user '%s': %s",
                                run->os_user, strerror(prc));
                else
                        sh_fail(errbuf, errbuf_size, "cannot look up the executor's "
                                "own user (uid %d): %s", (int)geteuid(),
                                prc ? strerror(prc) : "no such user");
                goto fail;
        }
        if (pw.pw_uid == 0 && !st->allow_root) {
                sh_fail(errbuf, errbuf_size, "refusing to run as root (os user '%s'): "
                        "set allow_root = true in the shell plugin's config to allow it",
                        pw.pw_name);
                goto fail;
        }
        bool switch_user = pw.pw_uid != geteuid() || pw.pw_gid != getegid();
        if (switch_user && geteuid() != 0) {
                sh_fail(errbuf, errbuf_size, "cannot run as os user '%s' (uid %d): the "
                        "executor runs as uid %d and cannot switch users; run it as "
                        "root or give the task an os user equal to the executor's",
                        pw.pw_name, (int)pw.pw_uid, (int)geteuid());
                goto fail;
        }
        if (switch_user && access(st->setpriv, X_OK) != 0) {
                sh_fail(errbuf, errbuf_size, "cannot switch to os user '%s': setpriv "
                        "'%s' is not executable (%s); install util-linux or set the "
                        "plugin's setpriv key", pw.pw_name, st->setpriv, strerror(errno));
                goto fail;
        }

        /* Where. */
        const char *wd = run->workdir && *run->workdir ? run->workdir : st->default_workdir;
        struct stat sb;
        if (stat(wd, &sb) != 0) {
                sh_fail(errbuf, errbuf_size, "workdir '%s': %s", wd, strerror(errno));
                goto fail;
        }
        if (!S_ISDIR(sb.st_mode)) {
                sh_fail(errbuf, errbuf_size, "workdir '%s' is not a directory", wd);
                goto fail;
        }

        /* A clean environment: nothing of ours leaks into the task. */
        char nominal[40], attempt[16];
        tb_plugin_time_format(run->nominal_time_ms, nominal);
        snprintf(attempt, sizeof(attempt), "%d", (int)run->attempt);
        bool ok = sh_env_set(&env, "PATH", SH_PATH) &&
                  sh_env_set(&env, "HOME", pw.pw_dir) &&
                  sh_env_set(&env, "LANG", "C.UTF-8") &&
                  sh_env_set(&env, "USER", pw.pw_name) &&
                  sh_env_set(&env, "LOGNAME", pw.pw_name);
        for (size_t i = 0; ok && i < run->n_env; i++) {
                const char *k = run->env[i].key;
                if (!sh_valid_env_name(k)) {
                        sh_fail(errbuf, errbuf_size, "environment variable name '%s' "
                                "is invalid: use letters, digits and _, not starting "
                                "with a digit", k ? k : "");
                        goto fail;
                }
                if (!strncmp(k, "TASKBUS_", 8)) {
                        sh_fail(errbuf, errbuf_size, "environment variable '%s' is "
                                "reserved: TASKBUS_* variables are set by taskbus", k);
                        goto fail;
                }
                ok = sh_env_set(&env, k, run->env[i].value ? run->env[i].value : "");
        }
        ok = ok && sh_env_set(&env, "TASKBUS_RUN_ID", run->run_id) &&
             sh_env_set(&env, "TASKBUS_TASK_ID", run->task_id) &&
             sh_env_set(&env, "TASKBUS_NOMINAL_TIME", nominal) &&
             sh_env_set(&env, "TASKBUS_ATTEMPT", attempt);
        if (!ok) {
                sh_fail(errbuf, errbuf_size, "out of memory building the environment");
                goto fail;
        }

        /* The command line. */
        size_t nargs = 0;
        if (argv_form)
                while (run->argv[nargs])
                        nargs++;
        argv = calloc(nargs + 10, sizeof(char *));
        if (!argv) {
                sh_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        size_t a = 0;
        if (switch_user) {
                snprintf(uidarg, sizeof(uidarg), "--reuid=%u", (unsigned)pw.pw_uid);
                snprintf(gidarg, sizeof(gidarg), "--regid=%u", (unsigned)pw.pw_gid);
                argv[a++] = st->setpriv;
                argv[a++] = uidarg;
                argv[a++] = gidarg;
                argv[a++] = "--init-groups";
                argv[a++] = "--";
        }
        if (argv_form) {
                const char *cmd = run->argv[0];
                if (!strchr(cmd, '/')) {
                        const char *path = sh_env_get(&env, "PATH");
                        if (!sh_which(cmd, path, exe, sizeof(exe))) {
                                sh_fail(errbuf, errbuf_size, "argv[0] '%s' not found "
                                        "in PATH=%s", cmd, path ? path : "");
                                goto fail;
                        }
                        cmd = exe;
                } else if (access(cmd, X_OK) != 0) {
                        sh_fail(errbuf, errbuf_size, "argv[0] '%s' is not executable: %s",
                                cmd, strerror(errno));
                        goto fail;
                }
                argv[a++] = cmd;
                for (size_t i = 1; i < nargs; i++)
                        argv[a++] = run->argv[i];
        } else {
                argv[a++] = st->shell;
                argv[a++] = "-c";
                argv[a++] = run->script;
        }
        argv[a] = NULL;

        r = calloc(1, sizeof(*r));
        if (!r || !(r->io[0].buf = malloc(SH_CHUNK_MIN)) ||
            !(r->io[1].buf = malloc(SH_CHUNK_MIN))) {
                sh_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        r->io[0].cap = r->io[1].cap = SH_CHUNK_MIN;
        r->io[0].fd = r->io[1].fd = r->pidfd = -1;

        if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
                sh_fail(errbuf, errbuf_size, "cannot create pipes: %s (raise the "
                        "executor's open file limit?)", strerror(errno));
                goto fail;
        }
        int e = posix_spawn_file_actions_init(&fa);
        fa_init = e == 0;
        if (!e)
                e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        if (!e)
                e = posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
        if (!e)
                e = posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
        if (!e)
                e = posix_spawn_file_actions_addchdir_np(&fa, wd);
        if (!e)
                e = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        sigset_t none, dfl;
        sigemptyset(&none);
        sigfillset(&dfl);
        sigdelset(&dfl, SIGKILL);
        sigdelset(&dfl, SIGSTOP);
        if (!e) {
                e = posix_spawnattr_init(&at);
                at_init = e == 0;
        }
        if (!e)
                e = posix_spawnattr_setsigmask(&at, &none);
        if (!e)
                e = posix_spawnattr_setsigdefault(&at, &dfl);
        if (!e)
                e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID |
                                                          POSIX_SPAWN_SETSIGMASK |
                                                          POSIX_SPAWN_SETSIGDEF);
        if (e) {
                sh_fail(errbuf, errbuf_size, "cannot set up posix_spawn: %s", strerror(e));
                goto fail;
        }
        e = posix_spawn(&r->pid, argv[0], &fa, &at, (char *const *)argv, env.v);
        if (e) {
                sh_fail(errbuf, errbuf_size, "cannot start '%s' in '%s': %s", argv[0],
                        wd, strerror(e));
                goto fail;
        }
        r->started_ms = sh_wall_ms();

        close(outp[1]);
        close(errp[1]);
        outp[1] = errp[1] = -1;
        fcntl(outp[0], F_SETFL, O_NONBLOCK);
        fcntl(errp[0], F_SETFL, O_NONBLOCK);
        r->io[0].fd = outp[0];
        r->io[1].fd = errp[0];
        outp[0] = errp[0] = -1;
        /* The pid cannot be reused before we reap it, so this is race-free. */
        r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
        if (r->pidfd >= 0)
                fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);

        int64_t now = sh_mono_ms();
        r->run = run;
        r->io[0].ref = (sh_fdref_t){r, SH_FD_STDOUT};
        r->io[1].ref = (sh_fdref_t){r, SH_FD_STDERR};
        r->pid_ref = (sh_fdref_t){r, SH_FD_PID};
        r->expiry_ms = run->expiry_ms > 0 ? run->expiry_ms : 0;
        r->deadline = r->expiry_ms ? now + r->expiry_ms : 0;
        r->kill_grace_ms = grace;
        r->next_heartbeat = now + st->heartbeat_ms;

        pthread_mutex_lock(&st->lock);
        r->next = st->pending;
        st->pending = r;
        pthread_mutex_unlock(&st->lock);
        sh_wake(st);
        r = NULL;
        rc = TB_PLUGIN_OK;

fail:
        if (fa_init)
                posix_spawn_file_actions_destroy(&fa);
        if (at_init)
                posix_spawnattr_destroy(&at);
        for (int i = 0; i < 2; i++) {
                if (outp[i] >= 0)
                        close(outp[i]);
                if (errp[i] >= 0)
                        close(errp[i]);
        }
        if (r) {
                free(r->io[0].buf);
                free(r->io[1].buf);
                free(r);
        }
        free(argv);
        sh_env_free(&env);
        free(pwbuf);
        return rc;
}

static int sh_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        sh_state_t *st = state;
        int rc = TB_PLUGIN_NOT_FOUND;
        pthread_mutex_lock(&st->lock);
        for (int list = 0; list < 2 && rc != TB_PLUGIN_OK; list++) {
                for (sh_run_t *r = list ? st->runs : st->pending; r; r = r->next) {
                        if (r->run == run) {
                                if (!r->cancel_req) {
                                        r->cancel_req = true;
                                        snprintf(r->cancel_reason, sizeof(r->cancel_reason),
                                                 "%s", reason ? reason : "cancelled");
                                }
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
        free(st->setpriv);
        free(st->shell);
        free(st);
}

static int sh_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        sh_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return sh_fail(errbuf, errbuf_size, "out of memory");
        st->host = host;
        st->epfd = st->wakefd = -1;
        pthread_mutex_init(&st->lock, NULL);
        for (size_t i = 0; i < n_config; i++) {
                const char *k = config[i].key, *v = config[i].value;
                if (!strcmp(k, "allow_root"))
                        st->allow_root = !strcmp(v, "true");
                else if (!strcmp(k, "kill_grace"))
                        st->kill_grace_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "flush_interval"))
                        st->flush_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "heartbeat_interval"))
                        st->heartbeat_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "default_workdir"))
                        st->default_workdir = strdup(v);
                else if (!strcmp(k, "setpriv"))
                        st->setpriv = strdup(v);
                else if (!strcmp(k, "shell"))
                        st->shell = strdup(v);
        }
        if (!st->default_workdir || !st->setpriv || !st->shell) {
                sh_destroy(st);
                return sh_fail(errbuf, errbuf_size, "out of memory");
        }
        if (st->flush_ms <= 0 || st->heartbeat_ms <= 0) {
                sh_destroy(st);
                return sh_fail(errbuf, errbuf_size, "flush_interval and "
                               "heartbeat_interval must be greater than zero");
        }
        if (access(st->shell, X_OK) != 0) {
                sh_fail(errbuf, errbuf_size, "config key 'shell': '%s' is not "
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
                return sh_fail(errbuf, errbuf_size, "epoll/eventfd: %s", strerror(err));
        }
        st->wake_ref.kind = SH_FD_WAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &st->wake_ref};
        if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->wakefd, &ev) != 0) {
                int err = errno;
                sh_destroy(st);
                return sh_fail(errbuf, errbuf_size, "epoll_ctl: %s", strerror(err));
        }
        int e = pthread_create(&st->thread, NULL, sh_io_main, st);
        if (e) {
                sh_destroy(st);
                return sh_fail(errbuf, errbuf_size, "cannot start the I/O thread: %s",
                               strerror(e));
        }
        st->thread_started = true;
        *state = st;
        return TB_PLUGIN_OK;
}

static const tb_plugin_t sh_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "shell",
        .version = "1.0.0",
        .description = "runs a task's script with /bin/sh as its OS user",
        .config_keys = sh_keys,
        .init = sh_init,
        .start = sh_start,
        .cancel = sh_cancel,
        .destroy = sh_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &sh_plugin; }
