/**
 * @file commands/commands.c
 * @brief The commands role: the only writer of task-events.
 *
 * A consumer group member on task-commands. For the partitions it owns it
 * holds every task's current state in memory (version, security group,
 * deleted flag, normalized task, creation data, epoch), rebuilt from
 * partition p of task-events when partition p of task-commands is assigned.
 * Each command is authenticated, rate limited, authorized, checked against
 * the expected version and validated; then the event, the reply and the
 * consumed offset are written in ONE Kafka transaction, several commands
 * per transaction when they are queued.
 *
 * Fencing (KIP-447): one transactional producer per process, whose
 * transaction carries the consumer group metadata; the group coordinator
 * refuses the offsets of a member of an older generation, so a zombie that
 * lost its partitions cannot commit once the new owner was assigned them.
 * The new owner reads its committed offsets with require_stable (the
 * consumer is read_committed), which waits until a previous owner's pending
 * transaction is resolved, and only then rebuilds from task-events: the
 * rebuilt state includes everything that previous owner committed.
 *
 * Regions (docs/replication.md): a task is written only in its home region.
 * The state also holds the tasks of partition p of this region's copies of
 * the other regions' task-events ("us.taskbus.task-events"), rebuilt with
 * the local partition and then followed, like the local partition (a
 * failover's HOME_MOVED is written there by `taskbus admin region failover`),
 * by an assign-only follower consumer between batches. Events are ordered by
 * (home-region epoch, version). A command for a task homed in another region
 * is REJECTED (FORBIDDEN, field home_region) and never applied here; so is an
 * UPDATE that would change a task's home_region.
 *
 * @locality one worker thread owns the consumer, the producer and the state;
 *           the rebalance callback runs on it too (inside consumer_poll).
 */
#include "bus/bus.h"
#include "daemon.h"
#include "identity/identity.h"
#include "http/metrics.h"
#include "replication.h"
#include "serde/serde.h"
#include "task/task.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TB_CMD_SUB "commands"
/** Most commands in one transaction. */
#define TB_CMD_BATCH_MAX 100
/** How long a batch waits for more commands once it has one. */
#define TB_CMD_BATCH_WAIT_US 20000
/** Timeout of a transaction commit. */
#define TB_CMD_COMMIT_TIMEOUT_MS 30000
/** Authentication cache: revocations take effect within this time. */
#define TB_CMD_AUTH_CACHE_MS 5000

/** One task's current state, as the last event of task-events says. */
typedef struct tb_cmd_task {
        struct tb_cmd_task *next; /* hash chain */
        char *id;
        int32_t partition;
        int64_t version;
        char *group;        /* security group of the last state */
        bool deleted;
        json_t *task;       /* normalized task; NULL once deleted */
        int64_t created_at;
        char *created_by;
        int64_t epoch;
} tb_cmd_task_t;

/** A string-keyed hash map of tb_cmd_task_t (chained, power-of-two size). */
typedef struct tb_cmd_map {
        tb_cmd_task_t **b;
        size_t nb;
        size_t cnt;
} tb_cmd_map_t;

/** A replaced state, kept until the transaction that replaced it commits. */
typedef struct tb_cmd_undo {
        char *id;
        tb_cmd_task_t *old; /* NULL: the task did not exist */
} tb_cmd_undo_t;

/** Outcome tallies of a batch, published to metrics only once it commits. */
typedef struct tb_cmd_tally {
        char type[16];
        char outcome[24];
        int n;
} tb_cmd_tally_t;

typedef struct tb_cmd {
        tb_ctx_t *ctx;
        pthread_t thread;
        bool thread_started;
        rd_kafka_t *consumer;  /* group member on task-commands */
        rd_kafka_t *producer;  /* transactional */
        rd_kafka_t *loader;    /* assign-only reader of task-events */
        rd_kafka_t *follower;  /* assign-only: local + copied task-events after a rebuild */
        bool *followed;        /* per partition: the follower has it assigned */
        char (*remote_events)[300]; /* the other regions' copies of task-events */
        size_t remote_cnt;
        tb_ratelimit_t *rl;
        tb_cmd_map_t map;
        char txn_id[300];
        char events_topic[256];
        char commands_topic[256];
        int32_t partition_cnt;

        /* the batch being collected (the rebalance callback drops the
         * records of revoked partitions from it) */
        rd_kafka_message_t *batch[TB_CMD_BATCH_MAX];
        size_t batch_cnt;

        tb_cmd_undo_t *undo;
        size_t undo_cnt, undo_cap;
        tb_cmd_tally_t tally[64];
        size_t tally_cnt;
        uint64_t malformed;
} tb_cmd_t;

static const char *const tb_cmd_executors[] = {"shell", "container", "ssh", NULL};

/* ---- state map ------------------------------------------------------------ */

static uint64_t tb_cmd_hash(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

static void tb_cmd_task_free(tb_cmd_task_t *t) {
        if (!t)
                return;
        free(t->id);
        free(t->group);
        free(t->created_by);
        if (t->task)
                json_decref(t->task);
        free(t);
}

static tb_cmd_task_t *tb_cmd_map_get(tb_cmd_map_t *m, const char *id) {
        if (!m->nb)
                return NULL;
        for (tb_cmd_task_t *t = m->b[tb_cmd_hash(id) & (m->nb - 1)]; t; t = t->next)
                if (!strcmp(t->id, id))
                        return t;
        return NULL;
}

/** Detach and return the entry for \p id (NULL if none). */
static tb_cmd_task_t *tb_cmd_map_take(tb_cmd_map_t *m, const char *id) {
        if (!m->nb)
                return NULL;
        for (tb_cmd_task_t **pp = &m->b[tb_cmd_hash(id) & (m->nb - 1)]; *pp; pp = &(*pp)->next)
                if (!strcmp((*pp)->id, id)) {
                        tb_cmd_task_t *t = *pp;
                        *pp = t->next;
                        t->next = NULL;
                        m->cnt--;
                        return t;
                }
        return NULL;
}

static bool tb_cmd_map_grow(tb_cmd_map_t *m) {
        size_t nb = m->nb ? m->nb * 2 : 1024;
        tb_cmd_task_t **b = calloc(nb, sizeof(*b));
        if (!b)
                return false;
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t *t = m->b[i], *next;
                for (; t; t = next) {
                        next = t->next;
                        size_t k = tb_cmd_hash(t->id) & (nb - 1);
                        t->next = b[k];
                        b[k] = t;
                }
        }
        free(m->b);
        m->b = b;
        m->nb = nb;
        return true;
}

/** Insert \p t (owned by the map from now on); @returns the entry it
 *  replaced, detached (caller owns), or NULL. */
static tb_cmd_task_t *tb_cmd_map_put(tb_cmd_map_t *m, tb_cmd_task_t *t) {
        tb_cmd_task_t *old = tb_cmd_map_take(m, t->id);
        if ((m->cnt + 1) * 2 > m->nb && !tb_cmd_map_grow(m) && !m->nb) {
                /* out of memory before the first bucket: keep the old one */
                tb_cmd_task_free(t);
                return old;
        }
        size_t k = tb_cmd_hash(t->id) & (m->nb - 1);
        t->next = m->b[k];
        m->b[k] = t;
        m->cnt++;
        return old;
}

/** Drop every task of partition \p p. */
static void tb_cmd_map_drop_partition(tb_cmd_map_t *m, int32_t p) {
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t **pp = &m->b[i];
                while (*pp) {
                        if ((*pp)->partition == p) {
                                tb_cmd_task_t *t = *pp;
                                *pp = t->next;
                                m->cnt--;
                                tb_cmd_task_free(t);
                        } else {
                                pp = &(*pp)->next;
                        }
                }
        }
}

static void tb_cmd_map_clear(tb_cmd_map_t *m) {
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t *t = m->b[i], *next;
                for (; t; t = next) {
                        next = t->next;
                        tb_cmd_task_free(t);
                }
        }
        free(m->b);
        memset(m, 0, sizeof(*m));
}

/* ---- undo log ---------------------------------------------------------------- */

static void tb_cmd_undo_push(tb_cmd_t *cmd, const char *id, tb_cmd_task_t *old) {
        if (cmd->undo_cnt == cmd->undo_cap) {
                size_t cap = cmd->undo_cap ? cmd->undo_cap * 2 : 128;
                tb_cmd_undo_t *u = realloc(cmd->undo, cap * sizeof(*u));
                if (!u)
                        abort(); /* cannot keep the state consistent without it */
                cmd->undo = u;
                cmd->undo_cap = cap;
        }
        cmd->undo[cmd->undo_cnt].id = strdup(id);
        cmd->undo[cmd->undo_cnt].old = old;
        cmd->undo_cnt++;
}

/** The transaction committed: the replaced states are garbage. */
static void tb_cmd_undo_forget(tb_cmd_t *cmd) {
        for (size_t i = 0; i < cmd->undo_cnt; i++) {
                free(cmd->undo[i].id);
                tb_cmd_task_free(cmd->undo[i].old);
        }
        cmd->undo_cnt = 0;
}

/** The transaction was aborted: put back what it replaced, newest first. */
static void tb_cmd_undo_apply(tb_cmd_t *cmd) {
        while (cmd->undo_cnt > 0) {
                tb_cmd_undo_t *u = &cmd->undo[--cmd->undo_cnt];
                tb_cmd_task_free(tb_cmd_map_take(&cmd->map, u->id));
                if (u->old)
                        tb_cmd_task_free(tb_cmd_map_put(&cmd->map, u->old));
                free(u->id);
        }
}

/* ---- rebuilding state from task-events ------------------------------------ */

static bool tb_cmd_utf8_ok(const char *s) {
        json_t *j = json_string(s);
        if (!j)
                return false;
        json_decref(j);
        return true;
}

static const char *tb_cmd_jstr(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

/** Apply one TaskEvent to the state (rebuild path). */
static void tb_cmd_apply_event(tb_cmd_t *cmd, int32_t partition, const json_t *ev) {
        const char *id = tb_cmd_jstr(ev, "task_id");
        int64_t version = json_integer_value(json_object_get(ev, "version"));
        if (!*id)
                return;
        int64_t epoch = json_integer_value(json_object_get(ev, "epoch"));
        tb_cmd_task_t *cur = tb_cmd_map_get(&cmd->map, id);
        if (cur && !tb_repl_newer(epoch, version, cur->epoch, cur->version))
                return; /* known already (our own events come back through the follower),
                         * or superseded by a failover's higher epoch */
        tb_cmd_task_t *t = calloc(1, sizeof(*t));
        if (!t)
                return;
        const json_t *spec = json_object_get(ev, "task");
        t->id = strdup(id);
        t->partition = partition;
        t->version = version;
        t->deleted = !strcmp(tb_cmd_jstr(ev, "type"), "DELETED") || !json_is_object(spec);
        if (json_is_object(spec)) {
                t->task = tb_task_from_spec(spec);
                t->group = strdup(tb_cmd_jstr(spec, "security_group"));
        } else {
                t->group = strdup(cur ? cur->group : "");
        }
        t->created_at = json_integer_value(json_object_get(ev, "created_at"));
        t->created_by = strdup(tb_cmd_jstr(ev, "created_by"));
        t->epoch = json_integer_value(json_object_get(ev, "epoch"));
        tb_cmd_task_free(tb_cmd_map_put(&cmd->map, t));
}

/** Assign \p l to the follower (incrementally). */
static void tb_cmd_follow_assign(tb_cmd_t *cmd, rd_kafka_topic_partition_list_t *l, bool add) {
        if (!l->cnt)
                return;
        rd_kafka_error_t *e = add ? rd_kafka_incremental_assign(cmd->follower, l)
                                  : rd_kafka_incremental_unassign(cmd->follower, l);
        if (e) {
                tb_error(TB_CMD_SUB, "task-events follower: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

/** Stop following partition numbers \p parts (local and copies). */
static void tb_cmd_unfollow(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                if (p < 0 || p >= cmd->partition_cnt || !cmd->followed[p])
                        continue;
                cmd->followed[p] = false;
                rd_kafka_topic_partition_list_add(l, cmd->events_topic, p);
                for (size_t r = 0; r < cmd->remote_cnt; r++)
                        rd_kafka_topic_partition_list_add(l, cmd->remote_events[r], p);
        }
        tb_cmd_follow_assign(cmd, l, false);
        rd_kafka_topic_partition_list_destroy(l);
}

/**
 * Rebuild the state of task-events partitions \p parts (same numbers as the
 * task-commands partitions), and of the same partitions of the other
 * regions' copies: read each from the beginning up to its end
 * (read_committed: the last stable offset), replacing what was held; then
 * the follower continues from there.
 */
static tb_err_t tb_cmd_load(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts,
                            char *errstr, size_t errstr_size) {
        int64_t t0 = tb_mono_us();
        int n = parts->cnt * (int)(1 + cmd->remote_cnt);
        if (parts->cnt == 0)
                return TB_OK;
        int64_t *end = calloc((size_t)n, sizeof(*end));
        bool *done = calloc((size_t)n, sizeof(*done));
        const char **topic = calloc((size_t)n, sizeof(*topic));
        int32_t *part = calloc((size_t)n, sizeof(*part));
        rd_kafka_topic_partition_list_t *as = rd_kafka_topic_partition_list_new(n);
        rd_kafka_topic_partition_list_t *fl = rd_kafka_topic_partition_list_new(n);
        tb_err_t err = TB_OK;
        int remaining = 0;
        size_t events = 0;
        if (!end || !done || !topic || !part || !as || !fl) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "rebuild: out of memory");
                goto out;
        }
        tb_cmd_unfollow(cmd, parts);
        for (int i = 0; i < parts->cnt; i++)
                tb_cmd_map_drop_partition(&cmd->map, parts->elems[i].partition);
        for (int i = 0; i < n; i++) {
                int32_t p = parts->elems[i % parts->cnt].partition;
                int r = i / parts->cnt; /* 0: local; r: remote_events[r - 1] */
                int64_t lo = 0, hi = 0;
                topic[i] = r == 0 ? cmd->events_topic : cmd->remote_events[r - 1];
                part[i] = p;
                rd_kafka_resp_err_t rerr = rd_kafka_query_watermark_offsets(
                        cmd->loader, topic[i], p, &lo, &hi, 30000);
                if (rerr && r > 0) {
                        /* a copy MirrorMaker 2 has not created yet: follow it from
                         * its beginning once it exists */
                        tb_warn(TB_CMD_SUB, "rebuild: %s [%" PRId32 "]: %s; following it from "
                                "its beginning", topic[i], p, rd_kafka_err2str(rerr));
                        done[i] = true;
                        rd_kafka_topic_partition_list_add(fl, topic[i], p)->offset =
                                RD_KAFKA_OFFSET_BEGINNING;
                        continue;
                }
                if (rerr) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA,
                                        "rebuild: end offset of %s [%" PRId32 "]: %s", topic[i],
                                        p, rd_kafka_err2str(rerr));
                        goto out;
                }
                end[i] = hi;
                /* a single region has no copies and no failover writes to follow */
                if (cmd->remote_cnt)
                        rd_kafka_topic_partition_list_add(fl, topic[i], p)->offset = hi;
                if (hi <= lo) {
                        done[i] = true;
                        continue;
                }
                rd_kafka_topic_partition_list_add(as, topic[i], p)->offset =
                        RD_KAFKA_OFFSET_BEGINNING;
                remaining++;
        }
        if (remaining == 0)
                goto out;
        rd_kafka_resp_err_t rerr = rd_kafka_assign(cmd->loader, as);
        if (rerr) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "rebuild: assign %s: %s",
                                cmd->events_topic, rd_kafka_err2str(rerr));
                goto out;
        }
        while (remaining > 0) {
                if (atomic_load(&cmd->ctx->stopping)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                        "rebuild: interrupted by shutdown");
                        break;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->loader, 200);
                if (!m)
                        continue;
                int idx = -1;
                const char *tname = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
                for (int i = 0; i < n; i++)
                        if (part[i] == m->partition && !strcmp(topic[i], tname))
                                idx = i;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        /* caught up with the last stable offset */
                        if (idx >= 0 && !done[idx]) {
                                done[idx] = true;
                                remaining--;
                        }
                } else if (m->err) {
                        tb_warn(TB_CMD_SUB, "rebuild: reading %s: %s", tname,
                                rd_kafka_message_errstr(m));
                } else if (idx >= 0 && !done[idx]) {
                        json_t *ev = NULL;
                        char derr[512];
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_EVENT, NULL, &ev,
                                            derr, sizeof(derr)) == TB_OK) {
                                tb_cmd_apply_event(cmd, m->partition, ev);
                                json_decref(ev);
                                events++;
                        } else {
                                tb_warn(TB_CMD_SUB,
                                        "rebuild: %s [%" PRId32 "] offset %" PRId64
                                        " is not a TaskEvent (%s): skipped",
                                        tname, m->partition, m->offset, derr);
                        }
                        if (m->offset + 1 >= end[idx]) {
                                done[idx] = true;
                                remaining--;
                        }
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(cmd->loader, NULL);
out:
        if (!err) {
                tb_cmd_follow_assign(cmd, fl, true);
                for (int i = 0; i < parts->cnt; i++) {
                        int32_t p = parts->elems[i].partition;
                        if (p >= 0 && p < cmd->partition_cnt && cmd->remote_cnt)
                                cmd->followed[p] = true;
                }
                tb_info(TB_CMD_SUB, "rebuilt %d partition(s) from %s%s: %zu events, %zu tasks held, %.3f s",
                        parts->cnt, cmd->events_topic,
                        cmd->remote_cnt ? " and the other regions' copies" : "", events,
                        cmd->map.cnt, (double)(tb_mono_us() - t0) / 1e6);
        }
        free(end);
        free(done);
        free(topic);
        free(part);
        if (as)
                rd_kafka_topic_partition_list_destroy(as);
        if (fl)
                rd_kafka_topic_partition_list_destroy(fl);
        return err;
}

/**
 * Apply what the follower has: events this role did not write (a
 * failover's HOME_MOVED) and the other regions' events. Called between
 * batches only, so no transaction's undo log is open.
 */
static void tb_cmd_follow(tb_cmd_t *cmd) {
        for (int i = 0; i < 1000; i++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->follower, 0);
                if (!m)
                        return;
                if (!m->err && m->partition >= 0 && m->partition < cmd->partition_cnt &&
                    cmd->followed[m->partition]) {
                        json_t *ev = NULL;
                        char derr[512];
                        if (tb_serde_decode(m->payload, m->len, TB_SCHEMA_TASK_EVENT, NULL, &ev,
                                            derr, sizeof(derr)) == TB_OK) {
                                tb_cmd_apply_event(cmd, m->partition, ev);
                                json_decref(ev);
                        } else {
                                tb_warn(TB_CMD_SUB, "%s [%" PRId32 "] offset %" PRId64
                                        " is not a TaskEvent (%s): skipped",
                                        rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                                        derr);
                        }
                } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        tb_debug(TB_CMD_SUB, "task-events follower: %s",
                                 rd_kafka_message_errstr(m));
                }
                rd_kafka_message_destroy(m);
        }
}

/* ---- rebalance ------------------------------------------------------------- */

/** Drop the collected, unprocessed records of partitions being revoked: their
 *  new owner will read them from the committed offset. */
static void tb_cmd_batch_drop(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts) {
        size_t w = 0;
        for (size_t i = 0; i < cmd->batch_cnt; i++) {
                bool revoked = false;
                for (int j = 0; j < parts->cnt; j++)
                        revoked |= parts->elems[j].partition == cmd->batch[i]->partition;
                if (revoked)
                        rd_kafka_message_destroy(cmd->batch[i]);
                else
                        cmd->batch[w++] = cmd->batch[i];
        }
        cmd->batch_cnt = w;
}

static void tb_cmd_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque) {
        tb_cmd_t *cmd = opaque;
        rd_kafka_error_t *e = NULL;
        char errstr[1024];
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                /* Wait for stable offsets first: a previous owner's pending
                 * transaction is then resolved, and task-events' last stable
                 * offset covers what it committed. */
                rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
                rd_kafka_resp_err_t cerr = rd_kafka_committed(rk, c, 60000);
                if (cerr)
                        tb_warn(TB_CMD_SUB, "assignment: committed offsets: %s",
                                rd_kafka_err2str(cerr));
                rd_kafka_topic_partition_list_destroy(c);
                while (tb_cmd_load(cmd, parts, errstr, sizeof(errstr)) != TB_OK) {
                        if (atomic_load(&cmd->ctx->stopping))
                                break;
                        tb_error(TB_CMD_SUB, "assignment: %s; retrying in 1 s", errstr);
                        sleep(1);
                }
                tb_info(TB_CMD_SUB, "assigned %d partition(s) of %s", parts->cnt,
                        cmd->commands_topic);
                e = rd_kafka_incremental_assign(rk, parts);
        } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                tb_info(TB_CMD_SUB, "%s %d partition(s) of %s",
                        rd_kafka_assignment_lost(rk) ? "lost" : "revoked", parts->cnt,
                        cmd->commands_topic);
                tb_cmd_batch_drop(cmd, parts);
                tb_cmd_unfollow(cmd, parts);
                for (int i = 0; i < parts->cnt; i++)
                        tb_cmd_map_drop_partition(&cmd->map, parts->elems[i].partition);
                e = rd_kafka_incremental_unassign(rk, parts);
        } else {
                tb_error(TB_CMD_SUB, "rebalance failed: %s", rd_kafka_err2str(err));
        }
        if (e) {
                tb_error(TB_CMD_SUB, "incremental (un)assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

/* ---- one command ------------------------------------------------------------ */

static void tb_cmd_count(tb_cmd_t *cmd, const char *type, const char *outcome) {
        for (size_t i = 0; i < cmd->tally_cnt; i++)
                if (!strcmp(cmd->tally[i].type, type) && !strcmp(cmd->tally[i].outcome, outcome)) {
                        cmd->tally[i].n++;
                        return;
                }
        if (cmd->tally_cnt < TB_ARRAY_LEN(cmd->tally)) {
                tb_cmd_tally_t *t = &cmd->tally[cmd->tally_cnt++];
                tb_snprintf(t->type, sizeof(t->type), "%s", type);
                tb_snprintf(t->outcome, sizeof(t->outcome), "%s", outcome);
                t->n = 1;
        }
}

/** What was decided about one command. */
typedef struct tb_cmd_verdict {
        const char *reason;    /* NULL: accepted */
        char message[600];
        char field[128];
        int64_t version;       /* accepted: the new version */
} tb_cmd_verdict_t;

static void tb_cmd_reject(tb_cmd_verdict_t *v, const char *reason, const char *field,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void tb_cmd_reject(tb_cmd_verdict_t *v, const char *reason, const char *field,
                          const char *fmt, ...) {
        va_list ap;
        v->reason = reason;
        tb_snprintf(v->field, sizeof(v->field), "%s", field ? field : "");
        va_start(ap, fmt);
        vsnprintf(v->message, sizeof(v->message), fmt, ap);
        va_end(ap);
}

/** Produce the reply (inside the open transaction). */
static tb_err_t tb_cmd_reply(tb_cmd_t *cmd, const char *correlation_id, const char *command_id,
                             const char *task_id, const tb_cmd_verdict_t *v, char *errstr,
                             size_t errstr_size) {
        /* Built field by field: a message cut inside a UTF-8 sequence (or an
         * id that is not UTF-8) must not cost the reply. */
        json_t *msg = json_string(v->message);
        json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I}", "correlation_id",
                              correlation_id, "command_id", command_id, "task_id", task_id,
                              "status", v->reason ? "REJECTED" : "ACCEPTED", "reason",
                              v->reason ? v->reason : "NONE", "message",
                              msg ? msg : json_string("(message not representable)"), "field",
                              v->reason && v->field[0] && tb_cmd_utf8_ok(v->field)
                                      ? json_string(v->field)
                                      : json_null(),
                              "version", v->reason ? json_null() : json_integer(v->version),
                              "replied_at", (json_int_t)tb_now_ms());
        if (!r) {
                tb_warn(TB_CMD_SUB, "reply to correlation id of %zu bytes not sent: an id is "
                        "not valid UTF-8", strlen(correlation_id));
                return TB_OK;
        }
        tb_buf_t buf = {0};
        char eerr[512];
        tb_err_t err = TB_OK;
        if (tb_serde_encode(TB_SCHEMA_TASK_REPLY, r, &buf, eerr, sizeof(eerr)) != TB_OK)
                tb_error(TB_CMD_SUB, "reply not sent: encoding the TaskReply failed: %s", eerr);
        else
                err = tb_bus_produce(cmd->producer, cmd->ctx->conf, TB_TOPIC_REPLIES,
                                     RD_KAFKA_PARTITION_UA, correlation_id,
                                     strlen(correlation_id), buf.data, buf.len, NULL, 0, false,
                                     errstr, errstr_size);
        json_decref(r);
        tb_buf_free(&buf);
        return err;
}

static const char *tb_cmd_event_type(const char *cmd_type) {
        static const char *const map[][2] = {
                {"CREATE", "CREATED"}, {"UPDATE", "UPDATED"}, {"DELETE", "DELETED"},
                {"PAUSE", "PAUSED"},   {"RESUME", "RESUMED"}, {"RUN_NOW", "RUN_REQUESTED"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(map); i++)
                if (!strcmp(map[i][0], cmd_type))
                        return map[i][1];
        return NULL;
}

/** Parse and validate the command's task JSON; fills \p v on failure. */
static json_t *tb_cmd_validate(tb_cmd_t *cmd, const json_t *c, const tb_principal_t *who,
                               tb_cmd_verdict_t *v) {
        const char *text = json_string_value(json_object_get(c, "task"));
        if (!text) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task",
                              "task: required for %s (the task as JSON, in the REST API's shape)",
                              tb_cmd_jstr(c, "type"));
                return NULL;
        }
        json_error_t jerr;
        json_t *in = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!in) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task",
                              "task: not valid JSON (line %d, column %d: %s)", jerr.line,
                              jerr.column, jerr.text);
                return NULL;
        }
        const tb_config_t *conf = cmd->ctx->conf;
        const char *group = json_string_value(json_object_get(in, "security_group"));
        const tb_group_conf_t *pol = tb_config_group_policy(conf, group ? group : "");
        tb_task_vctx_t vctx = {
                .now_ms = tb_now_ms(),
                .user_id = who->user_id,
                .default_region = conf->region,
                .log_retention_default_ms = conf->log_retention_default_ms,
                .log_retention_max_ms = pol ? pol->log_retention_max_ms : 0,
                .executors = tb_cmd_executors,
        };
        tb_task_err_t terr;
        memset(&terr, 0, sizeof(terr));
        json_t *out = NULL;
        tb_err_t err = tb_task_validate(in, &vctx, &out, &terr);
        json_decref(in);
        if (err == TB_ERR_FORBIDDEN) {
                tb_cmd_reject(v, "FORBIDDEN", terr.field, "%s", terr.message);
                return NULL;
        }
        if (err || !out) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", terr.field, "%s",
                              terr.message[0] ? terr.message : "task: invalid");
                if (out)
                        json_decref(out);
                return NULL;
        }
        return out;
}

/**
 * Refuse (FORBIDDEN, field home_region) a write for a task homed in another
 * region: only the home region writes a task, so that its events have one
 * writer. @returns true if \p v was filled.
 */
static bool tb_cmd_not_home(tb_cmd_t *cmd, const char *task_id, const char *home,
                            tb_cmd_verdict_t *v) {
        const tb_config_t *conf = cmd->ctx->conf;
        if (!home || !*home || !strcmp(home, conf->region))
                return false;
        const char *api = tb_repl_region_api(conf, home);
        tb_cmd_reject(v, "FORBIDDEN", "home_region",
                      "home_region: task '%s' is homed in region '%s' and this is region '%s': "
                      "send writes for it to region %s%s%s (a region fails over with `taskbus "
                      "admin region failover`)",
                      task_id, home, conf->region, home, api ? " at " : "", api ? api : "");
        return true;
}

/**
 * Decide one decoded command and, when accepted, produce its event and
 * update the state (the replaced state goes to the undo log).
 * @returns an error only when producing failed (the batch must abort).
 */
static tb_err_t tb_cmd_decide(tb_cmd_t *cmd, const rd_kafka_message_t *msg, const json_t *c,
                              tb_cmd_verdict_t *v, char *errstr, size_t errstr_size) {
        const char *type = tb_cmd_jstr(c, "type");
        const char *task_id = tb_cmd_jstr(c, "task_id");
        const char *ev_type = tb_cmd_event_type(type);
        tb_principal_t *who = NULL;
        json_t *task = NULL, *ev = NULL;
        tb_buf_t buf = {0};
        tb_err_t err = TB_OK;
        char aerr[512];

        /* authenticate */
        const void *hv = NULL;
        size_t hlen = 0;
        if (tb_bus_header_get(msg, "authorization", &hv, &hlen) != TB_OK || !hv) {
                tb_cmd_reject(v, "UNAUTHENTICATED", NULL,
                              "missing the 'authorization' record header "
                              "(\"Bearer <token>\")");
                goto out;
        }
        char *authz = strndup(hv, hlen);
        tb_err_t aer = authz ? tb_identity_authenticate(cmd->ctx->store, authz,
                                                        TB_CMD_AUTH_CACHE_MS, &who, aerr,
                                                        sizeof(aerr))
                             : TB_ERR_NOMEM;
        free(authz);
        if (aer == TB_ERR_UNAUTHENTICATED) {
                tb_cmd_reject(v, "UNAUTHENTICATED", NULL, "%s", aerr);
                goto out;
        }
        if (aer) {
                tb_cmd_reject(v, "INTERNAL", NULL, "authentication unavailable: %s",
                              aer == TB_ERR_NOMEM ? "out of memory" : aerr);
                goto out;
        }
        /* rate limit */
        int64_t retry_ms = 0;
        if (!tb_ratelimit_take(cmd->rl, who->user_id, tb_mono_us(), &retry_ms)) {
                tb_cmd_reject(v, "THROTTLED", NULL,
                              "rate limit of %.3g commands/s (burst %" PRId64
                              ") exceeded for user '%s': retry after %" PRId64 " ms",
                              cmd->ctx->conf->api_rate, cmd->ctx->conf->api_burst,
                              who->user_id, retry_ms);
                goto out;
        }
        if (!ev_type) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "type", "type: unknown command type '%s'",
                              type);
                goto out;
        }
        if (!*task_id) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task_id", "task_id: must not be empty");
                goto out;
        }
        /* The state of a task lives with the partition of its id: a record
         * placed elsewhere would be judged against the wrong state. */
        int32_t home = tb_bus_partition_for(task_id, strlen(task_id), cmd->partition_cnt);
        if (home != msg->partition) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task_id",
                              "task_id: the record is on partition %" PRId32
                              " of %s but task '%s' belongs to partition %" PRId32
                              ": key task-commands records by the task id and use the "
                              "murmur2 partitioner (Java client default)",
                              msg->partition, cmd->commands_topic, task_id, home);
                goto out;
        }

        tb_cmd_task_t *cur = tb_cmd_map_get(&cmd->map, task_id);
        bool create = !strcmp(type, "CREATE");
        bool visible = cur && !cur->deleted && tb_principal_in_group(who, cur->group);
        const json_t *expv = json_object_get(c, "expected_version");

        if (create) {
                task = tb_cmd_validate(cmd, c, who, v);
                if (!task)
                        goto out;
                const char *group = tb_cmd_jstr(task, "security_group");
                if (!tb_principal_in_group(who, group)) {
                        tb_cmd_reject(v, "FORBIDDEN", "security_group",
                                      "security_group: user '%s' is not a member of group '%s'",
                                      who->user_id, group);
                        goto out;
                }
                if (tb_cmd_not_home(cmd, task_id, tb_cmd_jstr(task, "home_region"), v))
                        goto out;
                if (cur) {
                        tb_cmd_reject(v, "CONFLICT", "task_id",
                                      "task_id: a task with id '%s' already exists%s; choose "
                                      "a new id",
                                      task_id, cur->deleted ? " (deleted)" : "");
                        goto out;
                }
                if (json_is_integer(expv) && json_integer_value(expv) != 0) {
                        tb_cmd_reject(v, "CONFLICT", "expected_version",
                                      "expected_version: %" JSON_INTEGER_FORMAT
                                      " but the task does not exist yet (use null or 0)",
                                      json_integer_value(expv));
                        goto out;
                }
        } else {
                if (!visible) {
                        tb_cmd_reject(v, "NOT_FOUND", "task_id", "task '%s' not found",
                                      task_id);
                        goto out;
                }
                if (!cur->task) {
                        tb_cmd_reject(v, "INTERNAL", NULL,
                                      "task '%s': its state could not be rebuilt from the "
                                      "events; see the commands role's log",
                                      task_id);
                        goto out;
                }
                if (tb_cmd_not_home(cmd, task_id, tb_cmd_jstr(cur->task, "home_region"), v))
                        goto out;
                if (json_is_integer(expv) && json_integer_value(expv) != cur->version) {
                        tb_cmd_reject(v, "CONFLICT", "expected_version",
                                      "expected_version: %" JSON_INTEGER_FORMAT
                                      " but task '%s' is at version %" PRId64
                                      "; read it again and retry",
                                      json_integer_value(expv), task_id, cur->version);
                        goto out;
                }
                if (!strcmp(type, "UPDATE")) {
                        task = tb_cmd_validate(cmd, c, who, v);
                        if (!task)
                                goto out;
                        const char *group = tb_cmd_jstr(task, "security_group");
                        if (!tb_principal_in_group(who, group)) {
                                tb_cmd_reject(v, "FORBIDDEN", "security_group",
                                              "security_group: user '%s' is not a member of "
                                              "group '%s'",
                                              who->user_id, group);
                                goto out;
                        }
                        const char *was = tb_cmd_jstr(cur->task, "home_region");
                        const char *now_home = tb_cmd_jstr(task, "home_region");
                        if (*was && strcmp(was, now_home)) {
                                tb_cmd_reject(v, "FORBIDDEN", "home_region",
                                              "home_region: an update cannot move task '%s' "
                                              "from region '%s' to '%s'; homes move only by "
                                              "region failover (`taskbus admin region "
                                              "failover`); leave home_region out or keep '%s'",
                                              task_id, was, now_home, was);
                                goto out;
                        }
                } else if (!strcmp(type, "PAUSE") || !strcmp(type, "RESUME")) {
                        task = json_deep_copy(cur->task);
                        json_object_set_new(task, "paused", json_boolean(!strcmp(type, "PAUSE")));
                } else if (!strcmp(type, "RUN_NOW")) {
                        task = json_deep_copy(cur->task);
                }
                /* DELETE: task stays NULL */
        }

        /* accepted: the event */
        int64_t now = tb_now_ms();
        json_t *before = cur && !cur->deleted && cur->task ? cur->task : NULL;
        json_t *empty = json_object();
        json_t *changed = !strcmp(type, "DELETE") || !strcmp(type, "RUN_NOW")
                                  ? json_array()
                                  : tb_task_diff(before ? before : empty, task);
        json_decref(empty);
        char event_id[37];
        tb_uuid4(event_id);
        int64_t version = cur ? cur->version + 1 : 1;
        ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:o, s:o, s:I, s:s, s:I}",
                       "event_id", event_id, "task_id", task_id, "version", (json_int_t)version,
                       "type", ev_type, "at", (json_int_t)now, "actor", who->user_id,
                       "command_id", tb_cmd_jstr(c, "command_id"), "changed_fields",
                       changed ? changed : json_array(), "task",
                       task ? tb_task_to_spec(task) : json_null(), "created_at",
                       (json_int_t)(cur ? cur->created_at : now), "created_by",
                       cur ? cur->created_by : who->user_id, "epoch",
                       (json_int_t)(cur ? cur->epoch : 0));
        if (!ev) {
                tb_cmd_reject(v, "INTERNAL", NULL, "cannot build the TaskEvent");
                goto out;
        }
        char eerr[512];
        if (tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &buf, eerr, sizeof(eerr)) != TB_OK) {
                /* the validator and the schema disagree: a bug, not the caller's */
                tb_error(TB_CMD_SUB, "task %s: encoding the event failed: %s", task_id, eerr);
                tb_cmd_reject(v, "INTERNAL", NULL, "cannot encode the TaskEvent: %s", eerr);
                goto out;
        }
        err = tb_bus_produce(cmd->producer, cmd->ctx->conf, TB_TOPIC_EVENTS, msg->partition,
                             task_id, strlen(task_id), buf.data, buf.len, NULL, 0, false, errstr,
                             errstr_size);
        if (err)
                goto out;

        tb_cmd_task_t *t = calloc(1, sizeof(*t));
        if (!t)
                abort();
        t->id = strdup(task_id);
        t->partition = msg->partition;
        t->version = version;
        t->deleted = task == NULL;
        t->task = task ? json_incref(task) : NULL;
        t->group = strdup(task ? tb_cmd_jstr(task, "security_group") : cur->group);
        t->created_at = cur ? cur->created_at : now;
        t->created_by = strdup(cur ? cur->created_by : who->user_id);
        t->epoch = cur ? cur->epoch : 0;
        tb_cmd_undo_push(cmd, task_id, tb_cmd_map_put(&cmd->map, t));
        v->reason = NULL;
        v->version = version;
        tb_snprintf(v->message, sizeof(v->message), "%s", ev_type);
out:
        tb_buf_free(&buf);
        if (ev)
                json_decref(ev);
        if (task)
                json_decref(task);
        tb_principal_free(who);
        return err;
}

/** Handle one record of task-commands inside the open transaction. */
static tb_err_t tb_cmd_handle(tb_cmd_t *cmd, const rd_kafka_message_t *msg, char *errstr,
                              size_t errstr_size) {
        tb_cmd_verdict_t v;
        memset(&v, 0, sizeof(v));
        json_t *c = NULL;
        char derr[512];
        char corr[256] = "", key[256] = "";
        const void *hv = NULL;
        size_t hlen = 0;
        tb_err_t err = TB_OK;

        if (tb_bus_header_get(msg, "correlation_id", &hv, &hlen) == TB_OK && hv && hlen)
                tb_snprintf(corr, sizeof(corr), "%.*s", (int)hlen, (const char *)hv);
        if (msg->key && msg->key_len)
                tb_snprintf(key, sizeof(key), "%.*s", (int)msg->key_len, (const char *)msg->key);

        if (tb_serde_decode(msg->payload, msg->len, TB_SCHEMA_TASK_COMMAND, NULL, &c, derr,
                            sizeof(derr)) != TB_OK) {
                if (!corr[0] || !tb_cmd_utf8_ok(corr)) {
                        cmd->malformed++;
                        tb_metrics_add("taskbus_commands_malformed_total", NULL, 1);
                        tb_warn(TB_CMD_SUB,
                                "malformed record at %s [%" PRId32 "] offset %" PRId64
                                " without a correlation_id header: %s; skipped "
                                "(taskbus_commands_malformed_total=%" PRIu64 ")",
                                cmd->commands_topic, msg->partition, msg->offset, derr,
                                cmd->malformed);
                        tb_cmd_count(cmd, "unknown", "malformed");
                        return TB_OK;
                }
                tb_cmd_reject(&v, "INVALID_ARGUMENT", NULL,
                              "the record is not a TaskCommand in Avro single-object encoding: "
                              "%s",
                              derr);
                tb_cmd_count(cmd, "unknown", "INVALID_ARGUMENT");
                /* the key is the task id by convention; only echo valid UTF-8 */
                return tb_cmd_reply(cmd, corr, "", tb_cmd_utf8_ok(key) ? key : "", &v, errstr,
                                    errstr_size);
        }
        const char *correlation = tb_cmd_jstr(c, "correlation_id");
        if (!*correlation)
                correlation = corr;
        if ((err = tb_cmd_decide(cmd, msg, c, &v, errstr, errstr_size)))
                goto out;
        tb_cmd_count(cmd, tb_cmd_jstr(c, "type"), v.reason ? v.reason : "ACCEPTED");
        if (v.reason)
                tb_debug(TB_CMD_SUB, "command %s (%s %s) rejected: %s: %s",
                         tb_cmd_jstr(c, "command_id"), tb_cmd_jstr(c, "type"),
                         tb_cmd_jstr(c, "task_id"), v.reason, v.message);
        if (!*correlation) {
                /* nobody to answer; the event (if any) still stands */
                tb_warn(TB_CMD_SUB, "command %s has no correlation id: no reply sent",
                        tb_cmd_jstr(c, "command_id"));
                goto out;
        }
        err = tb_cmd_reply(cmd, correlation, tb_cmd_jstr(c, "command_id"),
                           tb_cmd_jstr(c, "task_id"), &v, errstr, errstr_size);
out:
        json_decref(c);
        return err;
}

/* ---- batches and transactions --------------------------------------------- */

/** (Re)create the transactional producer, retrying until it works or we stop. */
static bool tb_cmd_producer_rebuild(tb_cmd_t *cmd) {
        char errstr[1024];
        if (cmd->producer) {
                rd_kafka_destroy(cmd->producer);
                cmd->producer = NULL;
        }
        while (!atomic_load(&cmd->ctx->stopping)) {
                if (tb_bus_producer_new(cmd->ctx->conf, cmd->txn_id, &cmd->producer, errstr,
                                        sizeof(errstr)) == TB_OK)
                        return true;
                tb_error(TB_CMD_SUB, "rebuilding the producer: %s; retrying in 1 s", errstr);
                sleep(1);
        }
        return false;
}

/** The partitions of the current batch with their first offsets. */
static rd_kafka_topic_partition_list_t *tb_cmd_batch_starts(tb_cmd_t *cmd) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (size_t i = 0; i < cmd->batch_cnt; i++) {
                rd_kafka_message_t *m = cmd->batch[i];
                rd_kafka_topic_partition_t *tp =
                        rd_kafka_topic_partition_list_find(l, cmd->commands_topic, m->partition);
                if (!tp)
                        rd_kafka_topic_partition_list_add(l, cmd->commands_topic, m->partition)
                                ->offset = m->offset;
                else if (m->offset < tp->offset)
                        tp->offset = m->offset;
        }
        return l;
}

/** Seek the consumer to \p l's offsets so the records are delivered again. */
static void tb_cmd_seek(tb_cmd_t *cmd, rd_kafka_topic_partition_list_t *l) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(cmd->consumer, l, 10000);
        if (e) {
                tb_error(TB_CMD_SUB, "seek back: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < l->cnt; i++)
                if (l->elems[i].err)
                        tb_error(TB_CMD_SUB, "seek back %s [%" PRId32 "]: %s",
                                 l->elems[i].topic, l->elems[i].partition,
                                 rd_kafka_err2str(l->elems[i].err));
}

/**
 * The outcome of the last commit is unknown (or the producer died during
 * it): read the committed offsets again (stable: waits for the outcome),
 * rebuild the state of those partitions from task-events and continue from
 * there. Whatever the outcome was, nothing is lost or applied twice.
 */
static void tb_cmd_resync(tb_cmd_t *cmd, rd_kafka_topic_partition_list_t *l) {
        char errstr[1024];
        rd_kafka_resp_err_t rerr = rd_kafka_committed(cmd->consumer, l, 60000);
        if (rerr)
                tb_error(TB_CMD_SUB, "resync: committed offsets: %s", rd_kafka_err2str(rerr));
        for (int i = 0; i < l->cnt; i++)
                if (l->elems[i].offset < 0)
                        l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        while (tb_cmd_load(cmd, l, errstr, sizeof(errstr)) != TB_OK &&
               !atomic_load(&cmd->ctx->stopping)) {
                tb_error(TB_CMD_SUB, "resync: %s; retrying in 1 s", errstr);
                sleep(1);
        }
        tb_cmd_seek(cmd, l);
}

static void tb_cmd_batch_free(tb_cmd_t *cmd) {
        for (size_t i = 0; i < cmd->batch_cnt; i++)
                rd_kafka_message_destroy(cmd->batch[i]);
        cmd->batch_cnt = 0;
        cmd->tally_cnt = 0;
}

/** Process the collected batch in one transaction. */
static void tb_cmd_process(tb_cmd_t *cmd) {
        char errstr[1024];
        tb_err_t err;
        bool in_commit = false;
        int64_t t0 = tb_mono_us();
        rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(8);

        cmd->tally_cnt = 0;
        if ((err = tb_bus_txn_begin(cmd->producer, errstr, sizeof(errstr))))
                goto fail;
        for (size_t i = 0; i < cmd->batch_cnt; i++) {
                rd_kafka_message_t *m = cmd->batch[i];
                if ((err = tb_cmd_handle(cmd, m, errstr, sizeof(errstr))))
                        goto fail;
                rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
                        offsets, cmd->commands_topic, m->partition);
                if (!tp)
                        tp = rd_kafka_topic_partition_list_add(offsets, cmd->commands_topic,
                                                               m->partition);
                if (m->offset + 1 > tp->offset)
                        tp->offset = m->offset + 1;
        }
        if ((err = tb_bus_txn_send_offsets(cmd->producer, cmd->consumer, offsets, errstr,
                                           sizeof(errstr))))
                goto fail;
        in_commit = true;
        if ((err = tb_bus_txn_commit(cmd->producer, TB_CMD_COMMIT_TIMEOUT_MS, errstr,
                                     sizeof(errstr))))
                goto fail;

        tb_cmd_undo_forget(cmd);
        for (size_t i = 0; i < cmd->tally_cnt; i++) {
                char labels[96];
                tb_snprintf(labels, sizeof(labels), "type=\"%s\",outcome=\"%s\"",
                            cmd->tally[i].type, cmd->tally[i].outcome);
                tb_metrics_add("taskbus_commands_total", labels, cmd->tally[i].n);
        }
        tb_metrics_observe("taskbus_commands_batch_seconds", NULL,
                           (double)(tb_mono_us() - t0) / 1e6);
        rd_kafka_topic_partition_list_destroy(offsets);
        tb_cmd_batch_free(cmd);
        return;

fail:;
        bool fatal = err == TB_ERR_FENCED || rd_kafka_fatal_error(cmd->producer, NULL, 0);
        tb_error(TB_CMD_SUB, "transaction of %zu command(s) failed: %s%s", cmd->batch_cnt,
                 errstr, fatal ? " (rebuilding the producer)" : "");
        tb_metrics_add("taskbus_commands_txn_failures_total", NULL, 1);
        rd_kafka_topic_partition_list_t *starts = tb_cmd_batch_starts(cmd);
        if (!fatal) {
                /* no-op when the failing call already aborted it */
                char aerr[512];
                if (tb_bus_txn_abort(cmd->producer, TB_CMD_COMMIT_TIMEOUT_MS, aerr,
                                     sizeof(aerr)) != TB_OK)
                        tb_debug(TB_CMD_SUB, "abort: %s", aerr);
                fatal = rd_kafka_fatal_error(cmd->producer, NULL, 0) != 0;
        }
        if (fatal && !tb_cmd_producer_rebuild(cmd)) {
                /* stopping: the state is discarded anyway */
                tb_cmd_undo_forget(cmd);
                goto done;
        }
        if (!in_commit && !fatal) {
                /* known to be aborted: undo and read the batch again */
                tb_cmd_undo_apply(cmd);
                tb_cmd_seek(cmd, starts);
        } else {
                tb_cmd_undo_forget(cmd);
                tb_cmd_resync(cmd, starts);
        }
done:
        rd_kafka_topic_partition_list_destroy(starts);
        rd_kafka_topic_partition_list_destroy(offsets);
        tb_cmd_batch_free(cmd);
}

static void *tb_cmd_main(void *arg) {
        tb_cmd_t *cmd = arg;
        while (!atomic_load(&cmd->ctx->stopping)) {
                int64_t first = 0;
                tb_cmd_follow(cmd);
                while (cmd->batch_cnt < TB_CMD_BATCH_MAX) {
                        int wait_ms = 100;
                        if (first) {
                                int64_t left = first + TB_CMD_BATCH_WAIT_US - tb_mono_us();
                                if (left <= 0)
                                        break;
                                wait_ms = (int)((left + 999) / 1000);
                        }
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->consumer, wait_ms);
                        if (!m) {
                                if (!first)
                                        break; /* idle: check the stop flag */
                                continue;
                        }
                        if (m->err) {
                                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                        tb_warn(TB_CMD_SUB, "consumer: %s",
                                                rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        cmd->batch[cmd->batch_cnt++] = m;
                        if (!first)
                                first = tb_mono_us();
                }
                if (cmd->batch_cnt == 0)
                        continue;
                if (atomic_load(&cmd->ctx->stopping)) {
                        tb_cmd_batch_free(cmd);
                        break;
                }
                /* what the follower has by now (a task copied from another
                 * region, a failover's HOME_MOVED) counts for this batch */
                tb_cmd_follow(cmd);
                tb_cmd_process(cmd);
        }
        return NULL;
}

/* ---- role ------------------------------------------------------------------ */

static void tb_cmd_free(tb_cmd_t *cmd) {
        if (!cmd)
                return;
        tb_cmd_batch_free(cmd);
        if (cmd->consumer) {
                tb_bus_consumer_destroy(cmd->consumer, 10000);
        }
        if (cmd->loader) {
                tb_bus_consumer_destroy(cmd->loader, 10000);
        }
        if (cmd->follower) {
                tb_bus_consumer_destroy(cmd->follower, 10000);
        }
        free(cmd->followed);
        free(cmd->remote_events);
        if (cmd->producer) {
                rd_kafka_flush(cmd->producer, 5000);
                rd_kafka_destroy(cmd->producer);
        }
        tb_cmd_undo_forget(cmd);
        free(cmd->undo);
        tb_cmd_map_clear(&cmd->map);
        if (cmd->rl)
                tb_ratelimit_free(cmd->rl);
        free(cmd);
}

/** An assign-only consumer of task-events (never joins its group). */
static tb_err_t tb_cmd_loader_new(tb_cmd_t *cmd, rd_kafka_t **out, char *errstr,
                                  size_t errstr_size) {
        const tb_config_t *conf = cmd->ctx->conf;
        rd_kafka_conf_t *c = NULL;
        char group[300], rkerr[512];
        tb_err_t err = tb_bus_conf_new(conf, &c, errstr, errstr_size);
        if (err)
                return err;
        tb_snprintf(group, sizeof(group), "%scommands-loader", conf->topic_prefix);
        const char *props[][2] = {
                {"group.id", group},           {"isolation.level", "read_committed"},
                {"enable.auto.commit", "false"}, {"enable.auto.offset.store", "false"},
                {"enable.partition.eof", "true"}, {"auto.offset.reset", "earliest"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(props); i++)
                if (rd_kafka_conf_set(c, props[i][0], props[i][1], rkerr, sizeof(rkerr)) !=
                    RD_KAFKA_CONF_OK) {
                        rd_kafka_conf_destroy(c);
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "task-events reader: %s: %s", props[i][0], rkerr);
                }
        *out = rd_kafka_new(RD_KAFKA_CONSUMER, c, rkerr, sizeof(rkerr));
        if (!*out) {
                rd_kafka_conf_destroy(c);
                return tb_seterr(errstr, errstr_size, TB_ERR_KAFKA, "task-events reader: %s",
                                 rkerr);
        }
        rd_kafka_poll_set_consumer(*out);
        return TB_OK;
}

static tb_err_t tb_cmd_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        const tb_config_t *conf = ctx->conf;
        tb_err_t err;
        char group[300];
        tb_cmd_t *cmd = calloc(1, sizeof(*cmd));
        if (!cmd)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: out of memory");
        cmd->ctx = ctx;
        cmd->partition_cnt = (int32_t)conf->topic_partitions;
        cmd->followed = calloc((size_t)cmd->partition_cnt, sizeof(*cmd->followed));
        cmd->remote_cnt = conf->repl_remote_region_cnt;
        cmd->remote_events = calloc(cmd->remote_cnt + 1, sizeof(*cmd->remote_events));
        if (!cmd->followed || !cmd->remote_events) {
                free(cmd->followed);
                free(cmd->remote_events);
                free(cmd);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: out of memory");
        }
        for (size_t r = 0; r < cmd->remote_cnt; r++)
                tb_repl_topic_name(conf, conf->repl_remote_regions[r], TB_TOPIC_EVENTS,
                                   cmd->remote_events[r], sizeof(cmd->remote_events[r]));
        tb_topic_name(conf, TB_TOPIC_EVENTS, cmd->events_topic, sizeof(cmd->events_topic));
        tb_topic_name(conf, TB_TOPIC_COMMANDS, cmd->commands_topic, sizeof(cmd->commands_topic));
        tb_snprintf(cmd->txn_id, sizeof(cmd->txn_id), "%scommands-%s", conf->topic_prefix,
                    ctx->instance);
        tb_metrics_describe("taskbus_commands_total", "counter",
                            "Commands handled, by command type and outcome (ACCEPTED or the "
                            "rejection reason)");
        tb_metrics_describe("taskbus_commands_malformed_total", "counter",
                            "task-commands records that could not be decoded nor answered");
        tb_metrics_describe("taskbus_commands_txn_failures_total", "counter",
                            "Command transactions that failed and were retried");
        tb_metrics_describe("taskbus_commands_batch_seconds", "histogram",
                            "Time to decide and commit one batch of commands");
        cmd->rl = tb_ratelimit_new(conf->api_rate, conf->api_burst);
        if (!cmd->rl) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: rate limiter");
                goto fail;
        }
        if ((err = tb_serde_init(errstr, errstr_size)))
                goto fail;
        if ((err = tb_bus_producer_new(conf, cmd->txn_id, &cmd->producer, errstr, errstr_size)))
                goto fail;
        if ((err = tb_cmd_loader_new(cmd, &cmd->loader, errstr, errstr_size)) ||
            (err = tb_cmd_loader_new(cmd, &cmd->follower, errstr, errstr_size)))
                goto fail;
        tb_snprintf(group, sizeof(group), "%scommands", conf->topic_prefix);
        tb_topic_t topics[] = {TB_TOPIC_COMMANDS};
        tb_consumer_opts_t opts = {
                .group_id = group,
                .read_committed = true, /* also makes offset fetches wait for stable offsets */
                .auto_commit = false,
                .rebalance_cb = tb_cmd_rebalance,
                .opaque = cmd,
        };
        if ((err = tb_bus_consumer_new(conf, &opts, topics, 1, &cmd->consumer, errstr,
                                       errstr_size)))
                goto fail;
        if (pthread_create(&cmd->thread, NULL, tb_cmd_main, cmd) != 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "commands: cannot start its thread");
                goto fail;
        }
        cmd->thread_started = true;
        tb_info(TB_CMD_SUB, "consuming %s as group %s (transactional.id %s)", cmd->commands_topic,
                group, cmd->txn_id);
        *state = cmd;
        return TB_OK;
fail:
        tb_cmd_free(cmd);
        return err;
}

static void tb_cmd_stop(void *state) {
        tb_cmd_t *cmd = state;
        if (!cmd)
                return;
        if (cmd->thread_started)
                pthread_join(cmd->thread, NULL);
        tb_cmd_free(cmd);
}

const tb_role_t tb_role_commands = {
        .name = "commands",
        .description = "decides task commands: events, replies and offsets in one Kafka transaction",
        .start = tb_cmd_start,
        .stop = tb_cmd_stop,
};
