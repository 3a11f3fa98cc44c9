/**
 * @file remote.c
 * @brief The ssh plugin's remote process: the POSIX sh wrapper that owns
 *        the remote process group (see ssh.c), and the worker thread of a
 *        run that sets up the session, execs the wrapper, streams stdout
 *        and stderr, stops the group at the expiry or on cancel, and
 *        reports the remote exit status or signal.
 */
#include "ssh_internal.h"

#include <libssh/callbacks.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A growable string. */
typedef struct ss_str {
        char *s;
        size_t len, cap;
        bool oom;
} ss_str_t;

static void ss_cat(ss_str_t *b, const char *s) {
        size_t n = strlen(s);
        if (b->oom)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t ncap = b->cap ? b->cap : 256;
                while (ncap < b->len + n + 1)
                        ncap *= 2;
                char *ns = realloc(b->s, ncap);
                if (!ns) {
                        b->oom = true;
                        return;
                }
                b->s = ns;
                b->cap = ncap;
        }
        memcpy(b->s + b->len, s, n + 1);
        b->len += n;
}

/* Append \p s single-quoted for a POSIX shell: ' becomes '\''. */
static void ss_quote(ss_str_t *b, const char *s) {
        ss_cat(b, "'");
        for (const char *p = s; *p; p++) {
                if (*p == '\'') {
                        ss_cat(b, "'\\''");
                } else {
                        char c[2] = {*p, 0};
                        ss_cat(b, c);
                }
        }
        ss_cat(b, "'");
}

/* Append " 'KEY=VALUE'" (one argument of env(1)) to \p b. */
static void ss_cat_env(ss_str_t *b, const char *key, const char *value) {
        ss_str_t kv = {0};
        ss_cat(&kv, key);
        ss_cat(&kv, "=");
        ss_cat(&kv, value ? value : "");
        ss_cat(b, " ");
        ss_quote(b, kv.oom ? "" : kv.s);
        b->oom = b->oom || kv.oom;
        free(kv.s);
}

static int ss_signum(const char *name) {
        static const struct { const char *n; int s; } tab[] = {
                {"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"ILL", 4}, {"ABRT", 6},
                {"FPE", 8}, {"KILL", 9}, {"USR1", 10}, {"SEGV", 11}, {"USR2", 12},
                {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15}};
        for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
                if (!strcmp(name, tab[i].n))
                        return tab[i].s;
        return 0;
}

/* ---- the remote command ------------------------------------------------------ */

/* Build `exec /bin/sh -c '<wrapper>'` (see the file comment). */
char *ss_remote_command(const tb_plugin_run_t *run, int64_t kill_grace_ms,
                        char *errbuf, size_t errbuf_size) {
        ss_str_t w = {0}, cmd = {0};
        char line[128];
        long grace_s = (long)((kill_grace_ms + 999) / 1000);
        if (grace_s < 1)
                grace_s = 1;

        /* The watcher keeps the channel's stdin (fd 3): an asynchronous list
         * would otherwise get /dev/null. TERM is ignored in it so that it
         * survives its own kill -TERM 0 and can follow up with KILL. */
        ss_cat(&w, "exec 3<&0\n");
        snprintf(line, sizeof(line), "(trap '' TERM; cat >/dev/null; kill -TERM 0; "
                 "sleep %ld; kill -KILL 0) <&3 >/dev/null 2>&1 &\n", grace_s);
        ss_cat(&w, line);
        if (run->workdir && *run->workdir) {
                ss_cat(&w, "cd ");
                ss_quote(&w, run->workdir);
                ss_cat(&w, " || exit 126\n");
        }
        ss_cat(&w, "env");
        for (size_t i = 0; i < run->n_env; i++) {
                const char *k = run->env[i].key;
                if (tb_pu_check_env_name(k, errbuf, errbuf_size) != TB_PLUGIN_OK)
                        goto fail;
                ss_cat_env(&w, k, run->env[i].value);
        }
        tb_pu_run_env_t tbenv;
        tb_pu_run_env(run, &tbenv);
        for (int i = 0; i < TB_PU_RUN_ENV_N; i++)
                ss_cat_env(&w, tbenv.vars[i].key, tbenv.vars[i].value);
        if (run->argv && run->argv[0]) {
                for (size_t i = 0; run->argv[i]; i++) {
                        ss_cat(&w, " ");
                        ss_quote(&w, run->argv[i]);
                }
        } else if (run->script && *run->script) {
                ss_cat(&w, " /bin/sh -c ");
                ss_quote(&w, run->script);
        } else {
                tb_pu_fail(errbuf, errbuf_size, "the run has neither a script nor an argv");
                goto fail;
        }
        /* What the command left running in the group would hold the
         * channel open: it gets SIGTERM too (the wrapper and the watcher
         * ignore it), like the shell plugin does locally. */
        ss_cat(&w, " </dev/null 3<&-\ns=$?\ntrap '' TERM\nkill -TERM 0 2>/dev/null\n"
               "exit $s\n");

        ss_cat(&cmd, "exec /bin/sh -c ");
        ss_quote(&cmd, w.oom ? "" : w.s);
        if (w.oom || cmd.oom) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory building the command");
                goto fail;
        }
        free(w.s);
        return cmd.s;
fail:
        free(w.s);
        free(cmd.s);
        return NULL;
}

/* ---- the worker ---------------------------------------------------------------- */

static void ss_on_exit_status(ssh_session session, ssh_channel channel, int status,
                              void *userdata) {
        ss_run_t *r = userdata;
        r->got_status = true;
        r->exit_status = status;
}

static void ss_on_exit_signal(ssh_session session, ssh_channel channel,
                              const char *signal, int core, const char *errmsg,
                              const char *lang, void *userdata) {
        ss_run_t *r = userdata;
        r->got_signal = true;
        snprintf(r->exit_signal, sizeof(r->exit_signal), "%s", signal ? signal : "?");
}

/* The eventfd cancel() writes to, in the run phase's ssh_event. */
static int ss_on_wake(socket_t fd, int revents, void *userdata) {
        uint64_t v;
        ssize_t n = read(fd, &v, sizeof(v));
        (void)n; /* the flag is what counts; this only rearms poll */
        return 0;
}

static void ss_finish(ss_run_t *r, tb_plugin_result_t *res, const char *msg) {
        ss_state_t *st = r->st;
        pthread_mutex_lock(&st->lock);
        for (ss_run_t **pp = &st->runs; *pp; pp = &(*pp)->next) {
                if (*pp == r) {
                        *pp = r->next;
                        break;
                }
        }
        r->next = st->zombies;
        st->zombies = r;
        pthread_mutex_unlock(&st->lock);
        tb_pu_finish(st->host, r->run, res, msg);
}

/* Emit whatever the channel has buffered; false on a read error. */
static bool ss_drain(ss_run_t *r, ssh_channel ch) {
        char buf[32 * 1024];
        for (int is_err = 0; is_err < 2; is_err++) {
                for (int i = 0; i < 64; i++) {
                        int n = ssh_channel_read_nonblocking(ch, buf, sizeof(buf), is_err);
                        if (n == SSH_ERROR)
                                return false;
                        if (n <= 0)
                                break;
                        r->st->host->output(r->st->host, r->run,
                                            is_err ? TB_PLUGIN_STDERR : TB_PLUGIN_STDOUT,
                                            buf, (size_t)n);
                }
        }
        return true;
}

void *ss_remote_worker(void *arg) {
        ss_run_t *r = arg;
        ss_state_t *st = r->st;
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        char msg[SS_MSG_MAX] = "";
        int rc;
        ssh_session s = NULL;
        ssh_key key = NULL;
        ssh_channel ch = NULL;
        ssh_event ev = NULL;
        struct ssh_channel_callbacks_struct cb;
        int64_t t0 = tb_pu_mono_ms();
        int64_t deadline = r->expiry_ms > 0 ? t0 + r->expiry_ms : 0;
        res.exit_code = -1;
        res.status = TB_PLUGIN_RUN_INFRA_ERROR;

        ss_setup_t su = {.r = r, .deadline = deadline,
                         .setup_deadline = t0 + st->connect_timeout_ms};
        rc = ss_session_open(&su, &key, msg, sizeof(msg));
        s = su.s;
        if (rc != TB_PLUGIN_OK)
                goto out;

        /* Open a session channel and start the command. */
        ch = ssh_channel_new(s);
        if (!ch) {
                snprintf(msg, sizeof(msg), "out of memory (ssh_channel_new)");
                goto out;
        }
        memset(&cb, 0, sizeof(cb));
        cb.userdata = r;
        cb.channel_exit_status_function = ss_on_exit_status;
        cb.channel_exit_signal_function = ss_on_exit_signal;
        ssh_callbacks_init(&cb);
        ssh_set_channel_callbacks(ch, &cb);
        while ((rc = ssh_channel_open_session(ch)) == SSH_AGAIN && ss_session_again(&su))
                ;
        if (rc == SSH_OK) {
                while ((rc = ssh_channel_request_exec(ch, r->command)) == SSH_AGAIN &&
                       ss_session_again(&su))
                        ;
        }
        if (rc != SSH_OK) {
                if (su.outcome == SS_OUT_NONE)
                        snprintf(msg, sizeof(msg), "starting the command on %s@%s:%d "
                                 "failed: %s", r->user, r->host, r->port,
                                 rc == SSH_AGAIN ? "timed out" : ssh_get_error(s));
                goto out;
        }
        res.started_ms = tb_pu_wall_ms();

        /* Run: stream output until the remote side is done. Packets are
         * processed by an ssh_event, not by the channel reads: once the
         * remote EOF is in, ssh_channel_read_nonblocking() stops reading the
         * socket, and the exit-status that OpenSSH sends AFTER its EOF would
         * never be seen. */
        ev = ssh_event_new();
        if (!ev || ssh_event_add_session(ev, s) != SSH_OK ||
            ssh_event_add_fd(ev, r->wakefd, POLLIN, ss_on_wake, r) != SSH_OK) {
                snprintf(msg, sizeof(msg), "cannot set up the SSH event loop (out of "
                         "memory?)");
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                ssh_channel_send_eof(ch); /* the watcher stops the command */
                goto out;
        }
        int64_t next_hb = tb_pu_mono_ms() + st->heartbeat_ms, kill_at = 0, close_at = 0;
        bool lost = false;
        for (;;) {
                if (!ss_drain(r, ch)) {
                        lost = true;
                        break;
                }
                if (ssh_channel_is_closed(ch) ||
                    (ssh_channel_is_eof(ch) && (r->got_status || r->got_signal)))
                        break;
                int64_t now = tb_pu_mono_ms();
                if (su.outcome == SS_OUT_NONE) {
                        if (tb_pu_cancel_requested(&r->cancel, &st->lock, su.reason,
                                                   sizeof(su.reason)))
                                su.outcome = SS_OUT_CANCEL;
                        else if (deadline && now >= deadline)
                                su.outcome = SS_OUT_TIMEOUT;
                        if (su.outcome != SS_OUT_NONE) {
                                /* EOF on stdin: the watcher TERMs the group. */
                                ssh_channel_send_eof(ch);
                                ssh_channel_request_send_signal(ch, "TERM");
                                kill_at = now + st->kill_grace_ms;
                                close_at = kill_at + SS_CLOSE_SLACK_MS;
                        }
                }
                if (kill_at && now >= kill_at) {
                        ssh_channel_request_send_signal(ch, "KILL");
                        kill_at = 0;
                }
                if (close_at && now >= close_at)
                        break;
                if (now >= next_hb) {
                        st->host->heartbeat(st->host, r->run);
                        next_hb = now + st->heartbeat_ms;
                }
                int64_t wait = SS_POLL_MS;
                if (deadline && su.outcome == SS_OUT_NONE && deadline - now < wait)
                        wait = deadline - now;
                if (ssh_event_dopoll(ev, (int)(wait > 0 ? wait : 0)) == SSH_ERROR &&
                    !ssh_is_connected(s)) {
                        lost = true;
                        break;
                }
        }
        ss_drain(r, ch);

        if (su.outcome == SS_OUT_TIMEOUT) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_TIMED_OUT, msg, sizeof(msg),
                              "run exceeded its expiry of %lld ms: the remote "
                              "process group got SIGTERM (SIGKILL after %lld ms)",
                              (long long)r->expiry_ms, (long long)st->kill_grace_ms);
        } else if (su.outcome == SS_OUT_CANCEL) {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_CANCELLED, msg, sizeof(msg),
                              "cancelled: %s", su.reason);
        } else if (r->got_signal) {
                res.status = TB_PLUGIN_RUN_FAILED;
                res.signal = ss_signum(r->exit_signal);
                snprintf(msg, sizeof(msg), "killed by signal SIG%s on %s", r->exit_signal,
                         r->host);
        } else if (r->got_status) {
                res.exit_code = r->exit_status;
                res.status = r->exit_status ? TB_PLUGIN_RUN_FAILED : TB_PLUGIN_RUN_SUCCEEDED;
                if (r->exit_status)
                        snprintf(msg, sizeof(msg), "exited with code %d", r->exit_status);
        } else {
                tb_pu_outcome(&res, TB_PLUGIN_RUN_INFRA_ERROR, msg, sizeof(msg),
                              "lost the connection to %s:%d before the "
                              "command reported how it ended%s%s", r->host, r->port,
                              lost ? ": " : "", lost ? ssh_get_error(s) : "");
        }
        if (r->got_status && su.outcome != SS_OUT_NONE)
                res.exit_code = r->exit_status;
        if (r->got_signal && su.outcome != SS_OUT_NONE)
                res.signal = ss_signum(r->exit_signal);

out:
        if (res.status == TB_PLUGIN_RUN_INFRA_ERROR && su.outcome != SS_OUT_NONE) {
                /* Stopped before the command ran. */
                res.status = su.outcome == SS_OUT_CANCEL ? TB_PLUGIN_RUN_CANCELLED
                                                      : TB_PLUGIN_RUN_TIMED_OUT;
                if (su.outcome == SS_OUT_CANCEL)
                        snprintf(msg, sizeof(msg), "cancelled before the command started: %s",
                                 su.reason);
                else
                        snprintf(msg, sizeof(msg), "run reached its expiry of %lld ms "
                                 "before the command started on %s:%d",
                                 (long long)r->expiry_ms, r->host, r->port);
        }
        if (ev) {
                ssh_event_remove_fd(ev, r->wakefd);
                if (s)
                        ssh_event_remove_session(ev, s);
                ssh_event_free(ev);
        }
        if (ch) {
                ssh_channel_close(ch);
                ssh_channel_free(ch);
        }
        if (s) {
                ssh_disconnect(s);
                ssh_free(s);
        }
        ssh_key_free(key);
        ss_finish(r, &res, msg);
        return NULL;
}
