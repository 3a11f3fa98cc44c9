/**
 * @file io_thread.c
 * @brief The shell plugin's one I/O thread per plugin instance: with epoll
 *        it multiplexes every run's two pipes and a pidfd that becomes
 *        readable when the task's main process exits, stops process groups
 *        (SIGTERM, then SIGKILL after kill_grace), reaps the task's orphans
 *        by process group, flushes output, and reports how each run ended.
 */
#include "shell_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

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
                        /* What the other stream holds was written before
                         * this: hand it over first, so the two streams reach
                         * the host in the order the task wrote them (at most
                         * one stream ever holds buffered output). */
                        sh_emit(st, r, idx == SH_FD_STDOUT ? SH_FD_STDERR : SH_FD_STDOUT);
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
        res.exit_code = -1;
        bool exited = !r->lost && r->w_code == CLD_EXITED;
        bool signalled = !r->lost && (r->w_code == CLD_KILLED || r->w_code == CLD_DUMPED);
        if (exited)
                res.exit_code = r->w_status;
        if (signalled)
                res.signal = r->w_status;

        if (r->outcome == SH_OUT_INFRA || r->lost) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "%s", r->infra_msg);
        } else if (r->outcome == SH_OUT_TIMEOUT) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_TIMED_OUT, msg, sizeof(msg),
                              "run exceeded its expiry of %lld ms: "
                              "SIGTERM sent to process group %d%s", (long long)r->expiry_ms,
                              (int)r->pid, r->kill_sent ? ", then SIGKILL" : "");
        } else if (r->outcome == SH_OUT_CANCEL) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_CANCELLED, msg, sizeof(msg),
                              "cancelled: %s", r->cancel.reason);
        } else if (exited && r->w_status == 0) {
                res.status = TB_PLUGIN_RUN_SUCCEEDED;
        } else if (exited) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_FAILED, msg, sizeof(msg),
                              "exited with code %d", r->w_status);
        } else {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_FAILED, msg, sizeof(msg),
                              "killed by signal %d (%s)", r->w_status,
                              strsignal(r->w_status));
        }
        tb_pu_finish(st->host, r->run, &res, msg);
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

void *sh_io_main(void *arg) {
        sh_state_t *st = arg;
        struct epoll_event evs[256];
        int timeout = 0;

        for (;;) {
                int n = epoll_wait(st->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])),
                                   timeout);
                int64_t now = tb_pu_mono_ms();
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
                        if (r->cancel.requested && !r->cancel_seen) {
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
                                        snprintf(r->cancel.reason, sizeof(r->cancel.reason),
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
