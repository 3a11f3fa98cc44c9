/**
 * @file session.c
 * @brief The ssh plugin's session steps: every step of the setup (connect,
 *        auth, channel open, exec) is retried while poll() waits on the
 *        session socket and on the eventfd cancel() writes to, so cancel and
 *        expiry are honoured at once, in any phase.
 */
#include "ssh_internal.h"

#include <poll.h>
#include <stdio.h>
#include <unistd.h>

/* Sleep until the session socket is readable, cancel() wakes us, or
 * \p ms pass. */
void ss_wait(ss_run_t *r, ssh_session s, int64_t ms) {
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

/* Why a setup step must stop: cancelled, expired or out of time. NULL: go on. */
const char *ss_setup_abort(ss_run_t *r, int64_t setup_deadline, int64_t deadline,
                                  int *outcome, char *reason, size_t size) {
        int64_t now = tb_pu_mono_ms();
        if (tb_pu_cancel_requested(&r->cancel, &r->st->lock, reason, size)) {
                *outcome = SS_OUT_CANCEL;
                return "cancelled";
        }
        if (deadline && now >= deadline) {
                *outcome = SS_OUT_TIMEOUT;
                return "expired";
        }
        if (now >= setup_deadline)
                return "timeout";
        return NULL;
}
