/**
 * @file api/api_internal.h
 * @brief What the api role's own files (api.c, commands.c, projwait.c)
 *        share: its constants, the waiter records and the functions that
 *        cross files; api.h is what the route handlers see.
 */
#ifndef TB_API_INTERNAL_H
#define TB_API_INTERNAL_H

#include "api/api.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define TB_API_SUB "api"
/** How long authentication results are cached (revocation delay). */
#define TB_API_AUTH_CACHE_MS 1000
/** /healthz answers a state at most this old (one check per period). */
#define TB_API_HEALTH_TTL_MS 1000
/** Delivery bound of a command: Kafka down answers 503 within this. */
#define TB_API_MESSAGE_TIMEOUT_MS 5000
/** Longest a write waits for the reply consumer to reach Kafka. */
#define TB_API_READY_WAIT_MS 5000
/** Projection re-check period while the listener is down. */
#define TB_API_PROJ_POLL_MS 10
/** With the listener up, pending waits are also checked by a query at this
 *  period, in case a notification was missed (a listener reconnect). */
#define TB_API_PROJ_RECHECK_MS 100
/** Task versions of recent notifications kept for waits registered after
 *  theirs arrived. */
#define TB_API_PROJ_SEEN 1024

/** A handler waiting for the TaskReply of its correlation id. */
struct tb_api_pending {
        char corr[37];
        json_t *reply;   /**< set by the reply consumer (owned) */
        bool done;
        pthread_cond_t cv;
        struct tb_api_pending *next;
};

/** A handler waiting for the projection to reach a task version. */
struct tb_api_projwait {
        char task_id[256];
        int64_t version;
        bool done;
        pthread_cond_t cv;
        struct tb_api_projwait *next;
};

/** One delivery report awaited by a handler. */
typedef struct tb_api_delivery {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool done;
        rd_kafka_resp_err_t err;
} tb_api_delivery_t;

/* api.c */
bool tb_api_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_us);
unsigned tb_api_hash(const char *s);
/** Answer an authentication that failed with \p e (its message \p err): 401 for
 *  TB_ERR_UNAUTHENTICATED, with \p challenge as WWW-Authenticate unless NULL;
 *  otherwise 503 with Retry-After (the \p what, "token" or "session", could not
 *  be checked). @returns false, what the auth hook returns then. */
bool tb_api_auth_failed(tb_http_resp_t *resp, tb_err_t e, const char *what, const char *err,
                        const char *challenge);

/* commands.c */
tb_err_t tb_api_producer_new(tb_api_t *api, char *errstr, size_t errstr_size);
void *tb_api_poll_main(void *arg);
tb_err_t tb_api_replies_new(tb_api_t *api, char *errstr, size_t errstr_size);
tb_err_t tb_api_replies_assign(tb_api_t *api, char *errstr, size_t errstr_size);
void *tb_api_reply_main(void *arg);

/* projwait.c */
void *tb_api_proj_main(void *arg);

#endif /* TB_API_INTERNAL_H */
