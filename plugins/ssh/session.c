/**
 * @file session.c
 * @brief The ssh plugin's session: connect, strict host key checking
 *        against the group's known_hosts file only (not ~/.ssh or /etc/ssh,
 *        no ssh_config processing) and public key authentication with the
 *        group's key. Every step of the setup (these, and the channel open
 *        and exec in remote.c) is retried while poll() waits on the session
 *        socket and on the eventfd cancel() writes to, so cancel and expiry
 *        are honoured at once, in any phase.
 */
#include "ssh_internal.h"

#include <poll.h>
#include <stdio.h>
#include <unistd.h>

/* Sleep until the session socket is readable, cancel() wakes us, or
 * \p ms pass. */
static void ss_wait(ss_run_t *r, ssh_session s, int64_t ms) {
        struct pollfd p[2] = {{.fd = r->wakefd, .events = POLLIN},
                              {.fd = ssh_get_fd(s), .events = POLLIN}};
        if (ms < 0)
                ms = 0;
        int n = poll(p, p[1].fd >= 0 ? 2 : 1, (int)(ms > SS_POLL_MS ? SS_POLL_MS : ms));
        if (n > 0 && (p[0].revents & POLLIN)) {
                uint64_t v;
                ssize_t rd = read(r->wakefd, &v, sizeof(v));
                (void)rd; /* the flag is what counts; this only rearms poll */
        }
}

/* After a step answered "again": false when the setup must stop (cancelled
 * or expired: su->outcome says which; or out of connect time), else wait
 * for the socket or a cancel and true. */
bool ss_session_again(ss_setup_t *su) {
        int64_t now = tb_pu_mono_ms();
        if (tb_pu_cancel_requested(&su->r->cancel, &su->r->st->lock, su->reason,
                                   sizeof(su->reason))) {
                su->outcome = SS_OUT_CANCEL;
                return false;
        }
        if (su->deadline && now >= su->deadline) {
                su->outcome = SS_OUT_TIMEOUT;
                return false;
        }
        if (now >= su->setup_deadline)
                return false;
        ss_wait(su->r, su->s, su->setup_deadline - now);
        return true;
}

/**
 * Connect to the run's host, check its host key strictly against the group's
 * known_hosts file and authenticate with the group's private key, each step
 * non-blocking and cancellable. su->s and *\p key are the caller's to free,
 * also on failure. @returns TB_PLUGIN_OK, or TB_PLUGIN_ERROR with the reason
 * in \p msg (left empty when su->outcome says the run was cancelled or
 * expired).
 */
int ss_session_open(ss_setup_t *su, ssh_key *key, char *msg, size_t msgsz) {
        ss_run_t *r = su->r;
        ss_state_t *st = r->st;
        int rc;

        if (ssh_pki_import_privkey_file(r->key, NULL, NULL, NULL, key) != SSH_OK) {
                snprintf(msg, msgsz, "cannot read the private key '%s' (groups.%s."
                         "ssh_key): missing, unreadable, not a private key, or "
                         "passphrase-protected (not supported)", r->key, r->group);
                return TB_PLUGIN_ERROR;
        }
        ssh_session s = su->s = ssh_new();
        if (!s) {
                snprintf(msg, msgsz, "out of memory (ssh_new)");
                return TB_PLUGIN_ERROR;
        }
        bool no = false;
        long tmo = (long)((st->connect_timeout_ms + 999) / 1000);
        unsigned int port = (unsigned int)r->port;
        if (ssh_options_set(s, SSH_OPTIONS_HOST, r->host) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_PORT, &port) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_USER, r->user) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, r->known_hosts) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, r->known_hosts) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &tmo) < 0) {
                snprintf(msg, msgsz, "setting SSH options for %s@%s:%d failed: %s",
                         r->user, r->host, r->port, ssh_get_error(s));
                return TB_PLUGIN_ERROR;
        }
        ssh_set_blocking(s, 0);

        /* Connect. */
        while ((rc = ssh_connect(s)) == SSH_AGAIN && ss_session_again(su))
                ;
        if (rc != SSH_OK) {
                if (su->outcome == SS_OUT_NONE)
                        snprintf(msg, msgsz, "cannot connect to %s:%d: %s", r->host,
                                 r->port, rc == SSH_AGAIN ? "timed out" : ssh_get_error(s));
                return TB_PLUGIN_ERROR;
        }

        /* Strict host key checking, against the group's file only. */
        switch (ssh_session_is_known_server(s)) {
        case SSH_KNOWN_HOSTS_OK:
                break;
        case SSH_KNOWN_HOSTS_CHANGED:
                snprintf(msg, msgsz, "host key of %s:%d CHANGED: it does not match "
                         "the one in known_hosts %s (someone may be intercepting the "
                         "connection); if the host was really re-keyed, replace its line "
                         "in that file", r->host, r->port, r->known_hosts);
                return TB_PLUGIN_ERROR;
        case SSH_KNOWN_HOSTS_OTHER:
                snprintf(msg, msgsz, "host key of %s:%d CHANGED type: known_hosts "
                         "%s holds a key of another type for it (possible attack); if "
                         "expected, replace its line in that file", r->host, r->port,
                         r->known_hosts);
                return TB_PLUGIN_ERROR;
        case SSH_KNOWN_HOSTS_UNKNOWN:
        case SSH_KNOWN_HOSTS_NOT_FOUND:
                snprintf(msg, msgsz, "host key of %s:%d is not in known_hosts %s "
                         "(groups.%s.ssh_known_hosts); add it there after checking its "
                         "fingerprint (ssh-keyscan -p %d %s)", r->host, r->port,
                         r->known_hosts, r->group, r->port, r->host);
                return TB_PLUGIN_ERROR;
        default:
                snprintf(msg, msgsz, "checking the host key of %s:%d against %s "
                         "failed: %s", r->host, r->port, r->known_hosts, ssh_get_error(s));
                return TB_PLUGIN_ERROR;
        }

        /* Authenticate with the group's key. */
        while ((rc = ssh_userauth_publickey(s, NULL, *key)) == SSH_AUTH_AGAIN && ss_session_again(su))
                ;
        if (rc != SSH_AUTH_SUCCESS) {
                if (su->outcome == SS_OUT_NONE)
                        snprintf(msg, msgsz, "authentication as %s@%s:%d with key "
                                 "%s failed: %s (is its public key in the user's "
                                 "authorized_keys?)", r->user, r->host, r->port, r->key,
                                 rc == SSH_AUTH_AGAIN ? "timed out"
                                 : rc == SSH_AUTH_DENIED ? "refused by the server"
                                 : ssh_get_error(s));
                return TB_PLUGIN_ERROR;
        }

        return TB_PLUGIN_OK;
}
