/**
 * @file container_internal.h
 * @brief What the container plugin's files share: the plugin state, one
 *        run's record, the reply buffer, and the functions that cross files.
 *
 * container.c   the plugin glue: config keys, init, start, cancel, destroy
 * engine_api.c  the Docker Engine API client (HTTP on the unix socket)
 * policy.c      what a task may ask for: options, image allow-list, user,
 *               network, memory and cpu caps; builds the create request
 * worker.c      the per-run thread: create, start, follow logs, wait, stop
 * sweeper.c     the owner label and the sweeper of leftover containers
 *
 * Locking: st->lock guards the run lists and each run's cancel request;
 * host callbacks are made with no lock held.
 */
#ifndef TB_PLUGIN_CONTAINER_INTERNAL_H
#define TB_PLUGIN_CONTAINER_INTERNAL_H

#include <taskbus/plugin.h>
#include <taskbus/plugin_util.h>

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#define CT_POLL_MS 1000          /* longest sleep of a worker between checks */
#define CT_LOG_DRAIN_MS 5000     /* logs still open this long after the exit */
#define CT_STOP_SLACK_MS 30000   /* beyond stop_timeout before we give up */
#define CT_ERR_MAX 1024

enum { CT_OUT_NONE = 0, CT_OUT_TIMEOUT, CT_OUT_CANCEL };

typedef struct ct_buf {
        char *data;
        size_t len, cap;
} ct_buf_t;

struct ct_state;

/* The demultiplexer of the engine's log stream: frames of an 8-byte header
 * [stream, 0, 0, 0, size as big-endian u32] then size bytes, split across
 * HTTP chunks anywhere. */
typedef struct ct_demux {
        unsigned char hdr[8];
        size_t hdr_len;
        uint32_t left;          /* payload bytes of the current frame still due */
        int stream;             /* TB_PLUGIN_STDOUT / STDERR of the current frame */
} ct_demux_t;

typedef struct ct_run {
        struct ct_run *next;            /* st->runs or st->zombies, under st->lock */
        struct ct_state *st;
        const tb_plugin_run_t *run;     /* host-owned until finished() */
        char *run_id;                   /* our copy, for the sweeper */
        pthread_t thread;
        CURLM *multi;                   /* valid while on st->runs */

        /* Under st->lock. */
        tb_pu_cancel_t cancel;

        /* Set by start(), read by the worker. */
        char *image;
        char *create_body;              /* JSON */
        int64_t expiry_ms;
        int64_t stop_timeout_s;
        bool root_allowed;              /* plugin and group both allow uid 0 */
        char *user_name;                /* a user name whose uid the image decides */

        /* Worker only. */
        char cid[96];
        ct_demux_t demux;
        CURL *logs_h;
        long logs_status;
        ct_buf_t logs_err;
        bool logs_bad;                  /* the stream was not framed: an error text */
        size_t logs_emitted;            /* payload bytes handed to the host */
        int out_stream;                 /* pending output of one write callback */
        ct_buf_t out;
} ct_run_t;

typedef struct ct_state {
        const tb_plugin_host_t *host;
        char *socket;
        char prefix[32];                /* "/v1.41" or "" */
        char *default_user;
        bool allow_root, sweep;
        int64_t stop_timeout_ms, heartbeat_ms, sweep_interval_ms, sweep_grace_ms;
        int64_t request_timeout_ms;
        char owner[256];                /* our io.taskbus.owner label */
        char boot_id[64], pidns[64];

        pthread_mutex_t lock;
        pthread_cond_t cond;            /* CLOCK_MONOTONIC: wakes the sweeper */
        ct_run_t *runs;                 /* active: cancel() and the sweeper see them */
        ct_run_t *zombies;              /* finished, thread to be joined */
        bool stopping;
        pthread_t sweeper;
        bool sweeper_started, curl_inited;
} ct_state_t;

/* ---- engine_api.c ------------------------------------------------------- */

/** Append \p len bytes to \p b, keeping it NUL-terminated; false on ENOMEM. */
bool ct_buf_add(ct_buf_t *b, const void *data, size_t len);
void ct_buf_free(ct_buf_t *b);
/** An engine timestamp ("2026-01-02T03:04:05.123456789Z") as epoch ms; -1
 *  if malformed or the zero time. */
int64_t ct_engine_parse_time(const char *s);
/** A request handle on the engine's socket (the caller adds it to a multi
 *  handle or performs it, and cleans it up); NULL on ENOMEM. \p resp
 *  collects the reply; \p curl_err (CURL_ERROR_SIZE) may be NULL. */
CURL *ct_engine_easy(ct_state_t *st, const char *method, const char *path,
                     const char *body, ct_buf_t *resp, char *curl_err);
/** The engine's explanation in an error reply, one line, into \p out. */
void ct_engine_msg(const ct_buf_t *body, char *out, size_t size);
/** One blocking request: 0 with *\p status set (any HTTP status), or -1
 *  when the engine could not be reached (reason in \p err). Any thread. */
int ct_engine_http(ct_state_t *st, const char *method, const char *path,
                   const char *body, long *status, ct_buf_t *resp, char *err,
                   size_t errsz);
/** Force-remove a container and its anonymous volumes (gone already is
 *  fine); false with the reason in \p err. */
bool ct_engine_remove(ct_state_t *st, const char *cid, char *err, size_t errsz);

/* ---- policy.c ----------------------------------------------------------- */

/** From start(): check what \p run asks for against its group's policy and
 *  fill r->image, r->create_body and r->stop_timeout_s. @returns
 *  TB_PLUGIN_OK, or TB_PLUGIN_ERROR with the reason in \p errbuf. */
int ct_policy_build_create(ct_state_t *st, const tb_plugin_run_t *run, ct_run_t *r,
                           char *errbuf, size_t errbuf_size);

/** From the worker, after the container is created and before it starts:
 *  when r->user_name is set (a user name and root not allowed), read its uid
 *  from the container's /etc/passwd and refuse uid 0. @returns TB_PLUGIN_OK,
 *  or TB_PLUGIN_ERROR with the reason in \p errbuf. */
int ct_policy_check_image_user(ct_state_t *st, const ct_run_t *r, char *errbuf,
                               size_t errbuf_size);

/* ---- worker.c ----------------------------------------------------------- */

/** The thread of one run (\p arg: its ct_run_t, on st->runs); it ends by
 *  moving the run to st->zombies and calling host->finished(). */
void *ct_worker_main(void *arg);
void ct_run_free(ct_run_t *r);
/** Join the threads of finished runs and free them; without st->lock. */
void ct_worker_reap(ct_state_t *st);

/* ---- sweeper.c ---------------------------------------------------------- */

/** Compute st->owner (and boot_id, pidns) once, in init(). */
void ct_sweep_owner_init(ct_state_t *st);
/** Set the labels of \p run's container into the create request's \p labels. */
void ct_sweep_labels(const ct_state_t *st, const tb_plugin_run_t *run, json_t *labels);
/** The sweeper thread (\p arg: the state): reaps finished runs and, when
 *  st->sweep, removes leftover containers every sweep_interval. */
void *ct_sweep_main(void *arg);

#endif /* TB_PLUGIN_CONTAINER_INTERNAL_H */
