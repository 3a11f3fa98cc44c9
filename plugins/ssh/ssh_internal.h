/**
 * @file ssh_internal.h
 * @brief What the ssh plugin's files share: the plugin state, one run's
 *        record, and the functions that cross files.
 *
 * ssh.c      the plugin glue: config keys, start() (options and the
 *            group's credentials), cancel, destroy, init
 * session.c  the non-blocking SSH session of a run: connect, strict host
 *            key check, public key authentication, each step cancellable
 * remote.c   the remote process: the wrapper command that owns the remote
 *            process group, the channel, output, signals and the result
 *
 * Locking: st->lock guards the run lists and each run's cancel request;
 * host callbacks are made with no lock held.
 */
#ifndef TB_PLUGIN_SSH_INTERNAL_H
#define TB_PLUGIN_SSH_INTERNAL_H

#include <taskbus/plugin.h>
#include <taskbus/plugin_util.h>

#include <libssh/libssh.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#define SS_POLL_MS 100          /* longest sleep between checks of a run */
#define SS_CLOSE_SLACK_MS 5000  /* after SIGKILL, wait this long for the close */
#define SS_MSG_MAX 1024

enum { SS_OUT_NONE = 0, SS_OUT_TIMEOUT, SS_OUT_CANCEL };

struct ss_state;

typedef struct ss_run {
        struct ss_run *next;            /* st->runs or st->zombies, under st->lock */
        struct ss_state *st;
        const tb_plugin_run_t *run;     /* host-owned until finished() */
        pthread_t thread;
        int wakefd;                     /* eventfd; cancel() writes while listed */

        /* Under st->lock. */
        tb_pu_cancel_t cancel;

        /* Set by start(). */
        char *host, *user, *key, *known_hosts, *command, *group;
        int port;
        int64_t expiry_ms;

        /* Worker only (and the libssh callbacks it drives). */
        bool got_status, got_signal;
        int exit_status;
        char exit_signal[32];
} ss_run_t;

typedef struct ss_state {
        const tb_plugin_host_t *host;
        int64_t connect_timeout_ms, kill_grace_ms, heartbeat_ms;
        pthread_mutex_t lock;
        ss_run_t *runs, *zombies;
        bool ssh_inited;
} ss_state_t;

/* ---- session.c ---------------------------------------------------------- */

/** The setup phase of a run (session, then channel): its deadlines, and
 *  what stopped it early. Worker thread only. */
typedef struct ss_setup {
        ss_run_t *r;
        ssh_session s;          /* set by ss_session_open(); the worker frees it */
        int64_t deadline;       /* the run's expiry, monotonic ms; 0: none */
        int64_t setup_deadline; /* connect_timeout after the start */
        int outcome;            /* SS_OUT_CANCEL or SS_OUT_TIMEOUT once stopped by them */
        char reason[200];       /* the cancel reason */
} ss_setup_t;

/** After a setup step answered "again": wait for the socket or a cancel
 *  and true, or false when the setup must stop (su->outcome says whether
 *  for a cancel or the expiry; neither: out of connect_timeout). */
bool ss_session_again(ss_setup_t *su);
/** Connect, check the host key, authenticate. su->s and *\p key are the
 *  caller's to free, also on failure. @returns TB_PLUGIN_OK, or
 *  TB_PLUGIN_ERROR with the reason in \p msg (empty when su->outcome is
 *  set). */
int ss_session_open(ss_setup_t *su, ssh_key *key, char *msg, size_t msgsz);

/* ---- remote.c ----------------------------------------------------------- */

/** The remote command line for \p run (the wrapper), malloc'd; NULL with
 *  the reason in \p errbuf. From start(). */
char *ss_remote_command(const tb_plugin_run_t *run, int64_t kill_grace_ms,
                        char *errbuf, size_t errbuf_size);
/** The thread of one run (\p arg: its ss_run_t, on st->runs); it ends by
 *  moving the run to st->zombies and calling host->finished(). */
void *ss_remote_worker(void *arg);

#endif /* TB_PLUGIN_SSH_INTERNAL_H */
