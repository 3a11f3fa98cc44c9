/**
 * @file ssh.c
 * @brief The SSH executor plugin: runs a task's command on another machine
 *        over SSH (libssh 0.10), streams stdout and stderr, enforces the
 *        expiry and reports the remote exit status or signal.
 *
 * Design (operator view: docs/executors.md; which file holds what:
 * ssh_internal.h):
 *  - Where to connect (host, port, user) comes from the task's executor
 *    options; WITH WHAT (the private key, the known_hosts file) only from the
 *    operator's policy for the task's security group, which reaches the
 *    plugin as tb_plugin_run_t.policy (ABI 1.1). A task option naming a key
 *    or a known_hosts file is refused.
 *  - Strict host key checking against that known_hosts file only (not
 *    ~/.ssh or /etc/ssh, no ssh_config processing).
 *  - One thread per run drives a NON-BLOCKING session: every step (connect,
 *    auth, channel open, exec, reads) is retried while poll() waits on the
 *    session socket and on an eventfd that cancel() writes to, so cancel and
 *    expiry are honoured at once, in any phase.
 *  - The remote command runs under a small POSIX sh wrapper. sshd puts the
 *    command in its own session and process group; the wrapper starts a
 *    watcher in that group that reads the channel's stdin (which the task
 *    does not get: it reads /dev/null). When the channel's stdin ends (we
 *    send EOF at expiry or cancel, sshd closes it when the connection drops
 *    or the run ends), the watcher sends SIGTERM to the whole group, then
 *    SIGKILL after kill_grace. When the command ends by itself, the wrapper
 *    sends SIGTERM to what it left behind in the group, which would
 *    otherwise keep the channel (its stdout) open. Signal requests alone would reach only the
 *    wrapper, not the task's children, and closing a channel without a pty
 *    signals nothing.
 */
#include "ssh_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

static const tb_plugin_config_key_t ss_keys[] = {
        {"connect_timeout", "longest time to connect, check the host key, "
         "authenticate and start the command", "10s", 0, TB_PLUGIN_CONF_DURATION},
        {"kill_grace", "time between SIGTERM and SIGKILL for the remote process "
         "group when a run is stopped", "5s", 0, TB_PLUGIN_CONF_DURATION},
        {"heartbeat_interval", "how often a running run reports it is alive", "10s",
         0, TB_PLUGIN_CONF_DURATION},
        {0},
};

/* Options that would let a task choose its own credentials. */
static const char *const ss_credential_options[] = {
        "key", "ssh_key", "identity", "identity_file", "identityfile", "private_key",
        "known_hosts", "ssh_known_hosts", "userknownhostsfile", "password",
        "passphrase", "strict_host_key_checking", NULL};

/* The required executor option \p opt = \p v: letters, digits and \p extra,
 * not starting with '-' (it reaches libssh and a log line, never a shell).
 * \p purpose explains a missing value, \p what names a valid one. */
static int ss_check_name(const char *opt, const char *v, const char *extra,
                         const char *purpose, const char *what, char *errbuf,
                         size_t errbuf_size) {
        if (!v || !*v)
                return tb_pu_fail(errbuf, errbuf_size, "executor option '%s' is required "
                                  "by the ssh plugin: %s", opt, purpose);
        bool ok = *v != '-' && strlen(v) <= 255;
        for (const char *p = v; ok && *p; p++)
                ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr(extra, *p);
        if (!ok)
                return tb_pu_fail(errbuf, errbuf_size, "executor option '%s' = '%s' is "
                                  "not a valid %s", opt, v, what);
        return TB_PLUGIN_OK;
}

static void ss_run_free(ss_run_t *r) {
        if (!r)
                return;
        if (r->wakefd >= 0)
                close(r->wakefd);
        free(r->host);
        free(r->user);
        free(r->key);
        free(r->known_hosts);
        free(r->command);
        free(r->group);
        free(r);
}

/* Join the threads of finished runs. \p wait false: only those that have
 * already exited (start() may run inside a finished() callback, even on the
 * very thread that would be joined). */
static void ss_reap(ss_state_t *st, bool wait) {
        pthread_mutex_lock(&st->lock);
        ss_run_t *z = st->zombies;
        st->zombies = NULL;
        pthread_mutex_unlock(&st->lock);
        ss_run_t *keep = NULL;
        while (z) {
                ss_run_t *next = z->next;
                if (wait ? pthread_join(z->thread, NULL) == 0
                         : pthread_tryjoin_np(z->thread, NULL) == 0) {
                        ss_run_free(z);
                } else {
                        z->next = keep;
                        keep = z;
                }
                z = next;
        }
        if (keep) {
                pthread_mutex_lock(&st->lock);
                ss_run_t *tail = keep;
                while (tail->next)
                        tail = tail->next;
                tail->next = st->zombies;
                st->zombies = keep;
                pthread_mutex_unlock(&st->lock);
        }
}

/* ---- plugin callbacks -------------------------------------------------------- */

static int ss_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        ss_state_t *st = state;
        const char *grp = run->security_group ? run->security_group : "";
        const char *host = NULL, *user = NULL, *port_s = NULL;

        ss_reap(st, false); /* finished runs' threads: no timer thread needed */
        for (size_t i = 0; run->options && i < run->n_options; i++) {
                const char *k = run->options[i].key ? run->options[i].key : "";
                const char *v = run->options[i].value ? run->options[i].value : "";
                for (size_t j = 0; ss_credential_options[j]; j++)
                        if (!strcasecmp(k, ss_credential_options[j]))
                                return tb_pu_fail(errbuf, errbuf_size, "executor option "
                                                  "'%s' is refused: the SSH key and "
                                                  "known_hosts come from the executor's "
                                                  "configuration (groups.%s.ssh_key and "
                                                  "groups.%s.ssh_known_hosts), never from "
                                                  "a task", k, grp, grp);
                if (!strcmp(k, "host"))
                        host = v;
                else if (!strcmp(k, "user"))
                        user = v;
                else if (!strcmp(k, "port"))
                        port_s = v;
                else
                        return tb_pu_fail(errbuf, errbuf_size, "unknown executor option "
                                          "'%s' for the ssh plugin; valid options: host, "
                                          "port, user", k);
        }
        if (ss_check_name("host", host, ".-:[]_", "the machine to run on",
                          "host name or address", errbuf, errbuf_size) != TB_PLUGIN_OK ||
            ss_check_name("user", user, "._-", "the remote user to log in as",
                          "user name", errbuf, errbuf_size) != TB_PLUGIN_OK)
                return TB_PLUGIN_ERROR;
        long port = 22;
        if (port_s) {
                char *end;
                port = strtol(port_s, &end, 10);
                if (end == port_s || *end || port < 1 || port > 65535)
                        return tb_pu_fail(errbuf, errbuf_size, "executor option 'port' = "
                                          "'%s' is invalid: give a TCP port from 1 to 65535",
                                          port_s);
        }
        const char *key = tb_pu_policy(run, "ssh_key");
        const char *kh = tb_pu_policy(run, "ssh_known_hosts");
        if (!key || !*key)
                return tb_pu_fail(errbuf, errbuf_size, "security group '%s' has no ssh_key: "
                                  "set groups.%s.ssh_key in the taskbus config to the "
                                  "private key its SSH tasks use", grp, grp);
        if (!kh || !*kh)
                return tb_pu_fail(errbuf, errbuf_size, "security group '%s' has no "
                                  "ssh_known_hosts: set groups.%s.ssh_known_hosts in the "
                                  "taskbus config to the known_hosts file its SSH hosts are "
                                  "checked against", grp, grp);

        ss_run_t *r = calloc(1, sizeof(*r));
        if (!r)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        r->wakefd = -1;
        r->st = st;
        r->run = run;
        r->port = (int)port;
        r->expiry_ms = run->expiry_ms > 0 ? run->expiry_ms : 0;
        r->host = strdup(host);
        r->user = strdup(user);
        r->key = strdup(key);
        r->known_hosts = strdup(kh);
        r->group = strdup(grp);
        if (!r->host || !r->user || !r->key || !r->known_hosts || !r->group) {
                ss_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        }
        r->command = ss_remote_command(run, st->kill_grace_ms, errbuf, errbuf_size);
        if (!r->command) {
                ss_run_free(r);
                return TB_PLUGIN_ERROR;
        }
        r->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->wakefd < 0) {
                int e = errno;
                ss_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "eventfd: %s", strerror(e));
        }
        pthread_mutex_lock(&st->lock);
        r->next = st->runs;
        st->runs = r;
        int e = pthread_create(&r->thread, NULL, ss_remote_worker, r);
        if (e)
                st->runs = r->next;
        pthread_mutex_unlock(&st->lock);
        if (e) {
                ss_run_free(r);
                return tb_pu_fail(errbuf, errbuf_size, "cannot start a worker thread: %s",
                                  strerror(e));
        }
        return TB_PLUGIN_OK;
}

static int ss_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        ss_state_t *st = state;
        int rc = TB_PLUGIN_NOT_FOUND;
        pthread_mutex_lock(&st->lock);
        for (ss_run_t *r = st->runs; r; r = r->next) {
                if (r->run != run)
                        continue;
                tb_pu_cancel_request(&r->cancel, reason);
                uint64_t one = 1;
                ssize_t n = write(r->wakefd, &one, sizeof(one));
                (void)n; /* EAGAIN: already signalled */
                rc = TB_PLUGIN_OK;
                break;
        }
        pthread_mutex_unlock(&st->lock);
        return rc;
}

static void ss_destroy(void *state) {
        ss_state_t *st = state;
        if (!st)
                return;
        ss_reap(st, true);
        if (st->runs) { /* a host bug: their threads still use st */
                st->host->log(st->host, TB_PLUGIN_LOG_ERROR, "destroy() with runs "
                              "still active; leaking the plugin state");
                return;
        }
        pthread_mutex_destroy(&st->lock);
        if (st->ssh_inited)
                ssh_finalize();
        free(st);
}

static int ss_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        ss_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        st->host = host;
        pthread_mutex_init(&st->lock, NULL);
        st->connect_timeout_ms = tb_pu_kv_i64(config, n_config, "connect_timeout", 0);
        st->kill_grace_ms = tb_pu_kv_i64(config, n_config, "kill_grace", 0);
        st->heartbeat_ms = tb_pu_kv_i64(config, n_config, "heartbeat_interval", 0);
        if (st->connect_timeout_ms <= 0 || st->heartbeat_ms <= 0) {
                ss_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "connect_timeout and "
                                  "heartbeat_interval must be greater than zero");
        }
        if (ssh_init() != SSH_OK) {
                ss_destroy(st);
                return tb_pu_fail(errbuf, errbuf_size, "ssh_init() failed (libssh could "
                                  "not initialise its crypto library)");
        }
        st->ssh_inited = true;
        *state = st;
        return TB_PLUGIN_OK;
}

static const tb_plugin_t ss_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "ssh",
        .version = "1.0.0",
        .description = "runs a task's command on another machine over SSH",
        .config_keys = ss_keys,
        .init = ss_init,
        .start = ss_start,
        .cancel = ss_cancel,
        .destroy = ss_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &ss_plugin; }
