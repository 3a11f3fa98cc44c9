/**
 * @file commands/role.c
 * @brief The commands role: the only writer of task-events.
 *
 * A consumer group member on task-commands. For the partitions it owns it
 * holds every live task's current state in memory (version, security group,
 * normalized task, creation data, epoch; a deleted task until the projection
 * holds its deletion), rebuilt when partition p of task-commands is assigned
 * from the projection's snapshot of partition p plus task-events after it
 * (rebuild.c), between batches while p is paused.
 * Each command is authenticated, rate limited, authorized, checked against
 * the expected version and validated; then the event, the reply and the
 * consumed offset are written in ONE Kafka transaction, with every other
 * command of its batch (group commit: tb_cmd_collect()).
 *
 * Files: this one (consumer, rebalances, batches and transactions, start and
 * stop), rebuild.c (the state of a partition from task-events, and the
 * follower), engine.h / engine.c (the state itself and every decision, with
 * no Kafka and no PostgreSQL: what a command is answered is decided there).
 *
 * Fencing (KIP-447): one transactional producer per process, whose
 * transaction carries the consumer group metadata; the group coordinator
 * refuses the offsets of a member of an older generation, so a zombie that
 * lost its partitions cannot commit once the new owner was assigned them.
 * The new owner reads its committed offsets with require_stable (the
 * consumer is read_committed), which waits until a previous owner's pending
 * transaction is resolved, and only then rebuilds, reading task-events to its
 * end: the rebuilt state includes everything that previous owner committed.
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
 *           the rebalance callback runs on it too (inside consumer_poll, also
 *           the polls a rebuild makes to serve the group: tb_cmd_serve()).
 */
#include "commands/cmd_internal.h"

#include "bus/pgsink.h"
#include "store/tasks.h"
#include "task/task.h"

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

/** Pause (or resume) \p parts of task-commands on the group consumer. */
static void tb_cmd_pause(tb_cmd_t *cmd, const rd_kafka_topic_partition_list_t *parts,
                         bool pause) {
        if (!parts->cnt)
                return;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
        rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(cmd->consumer, l)
                                      : rd_kafka_resume_partitions(cmd->consumer, l);
        if (e)
                tb_error(TB_CMD_SUB, "%s partitions: %s", pause ? "pause" : "resume",
                         rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
}

/** After partitions of task-commands were assigned: paused until their state
 *  is rebuilt, outside this callback (tb_cmd_load_pending()), so that a long
 *  rebuild does not hold the group's rebalance. */
static void tb_cmd_on_assigned(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                               void *opaque) {
        tb_cmd_t *cmd = opaque;
        (void)rk;
        for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                if (p < 0 || p >= cmd->partition_cnt)
                        continue;
                cmd->pending[p] = true;
                cmd->gen[p]++;
                cmd->seek_back[p] = -1;
        }
        tb_cmd_pause(cmd, parts, true);
}

/** Before partitions of task-commands are unassigned: forget their tasks. */
static void tb_cmd_on_revoke(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                             bool lost, void *opaque) {
        tb_cmd_t *cmd = opaque;
        (void)rk;
        (void)lost;
        tb_cmd_batch_drop(cmd, parts);
        tb_cmd_unfollow(cmd, parts);
        for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                tb_cmd_engine_drop_partition(cmd->engine, p);
                if (p < 0 || p >= cmd->partition_cnt)
                        continue;
                cmd->pending[p] = false;
                cmd->gen[p]++;
                cmd->seek_back[p] = -1;
        }
}

/** A record that cannot be decided now (its partition is being rebuilt):
 *  dropped, and its partition read again from the first one dropped. */
static void tb_cmd_defer(tb_cmd_t *cmd, rd_kafka_message_t *m) {
        int32_t p = m->partition;
        if (p >= 0 && p < cmd->partition_cnt &&
            (cmd->seek_back[p] < 0 || m->offset < cmd->seek_back[p]))
                cmd->seek_back[p] = m->offset;
        rd_kafka_message_destroy(m);
}

void tb_cmd_serve(tb_cmd_t *cmd) {
        if (!cmd->loading)
                return;
        for (int i = 0; i < 1000; i++) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->consumer, 0);
                if (!m)
                        return;
                if (m->err)
                        rd_kafka_message_destroy(m);
                else
                        tb_cmd_defer(cmd, m);
        }
}

/** Seek back every partition a record was dropped from (tb_cmd_defer()). */
static void tb_cmd_seek_back(tb_cmd_t *cmd) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        for (int32_t p = 0; p < cmd->partition_cnt; p++)
                if (cmd->seek_back[p] >= 0) {
                        rd_kafka_topic_partition_list_add(l, cmd->commands_topic, p)->offset =
                                cmd->seek_back[p];
                        cmd->seek_back[p] = -1;
                }
        if (l->cnt) {
                rd_kafka_error_t *e = rd_kafka_seek_partitions(cmd->consumer, l, 10000);
                if (e) {
                        tb_error(TB_CMD_SUB, "seek back: %s", rd_kafka_error_string(e));
                        rd_kafka_error_destroy(e);
                }
        }
        rd_kafka_topic_partition_list_destroy(l);
}

/**
 * Rebuild the partitions assigned since the last call, between batches: wait
 * for their stable committed offsets first (a previous owner's pending
 * transaction is then resolved, and task-events' last stable offset covers
 * what it committed), rebuild (serving the group meanwhile), resume them.
 * A partition revoked or given again during the rebuild is dropped and, if
 * ours again, rebuilt on the next call.
 */
static void tb_cmd_load_pending(tb_cmd_t *cmd) {
        char errstr[1024];
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
        uint32_t *gen0 = calloc((size_t)cmd->partition_cnt, sizeof(*gen0));
        if (!gen0)
                goto out;
        for (int32_t p = 0; p < cmd->partition_cnt; p++)
                if (cmd->pending[p]) {
                        rd_kafka_topic_partition_list_add(l, cmd->commands_topic, p);
                        gen0[p] = cmd->gen[p];
                }
        if (!l->cnt)
                goto out;
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(l);
        rd_kafka_resp_err_t cerr = rd_kafka_committed(cmd->consumer, c, 60000);
        if (cerr)
                tb_warn(TB_CMD_SUB, "assignment: committed offsets: %s", rd_kafka_err2str(cerr));
        rd_kafka_topic_partition_list_destroy(c);
        cmd->loading = true;
        while (tb_cmd_load(cmd, l, errstr, sizeof(errstr)) != TB_OK) {
                if (atomic_load(&cmd->ctx->stopping))
                        break;
                tb_error(TB_CMD_SUB, "assignment: %s; retrying in 1 s", errstr);
                sleep(1);
                tb_cmd_serve(cmd);
        }
        cmd->loading = false;
        rd_kafka_topic_partition_list_t *ready = rd_kafka_topic_partition_list_new(l->cnt);
        for (int i = 0; i < l->cnt; i++) {
                int32_t p = l->elems[i].partition;
                if (cmd->gen[p] != gen0[p]) {
                        /* revoked (and perhaps assigned again) meanwhile: what
                         * was rebuilt is not ours, or not current */
                        rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
                        rd_kafka_topic_partition_list_add(one, cmd->commands_topic, p);
                        tb_cmd_unfollow(cmd, one);
                        rd_kafka_topic_partition_list_destroy(one);
                        tb_cmd_engine_drop_partition(cmd->engine, p);
                        continue;
                }
                cmd->pending[p] = false;
                rd_kafka_topic_partition_list_add(ready, cmd->commands_topic, p);
        }
        tb_cmd_seek_back(cmd);
        tb_cmd_pause(cmd, ready, false);
        rd_kafka_topic_partition_list_destroy(ready);
out:
        free(gen0);
        rd_kafka_topic_partition_list_destroy(l);
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

/** Produce the reply (inside the open transaction). */
static tb_err_t tb_cmd_reply(tb_cmd_t *cmd, const char *correlation_id, const char *command_id,
                             const char *task_id, const tb_cmd_verdict_t *v, char *errstr,
                             size_t errstr_size) {
        tb_buf_t buf = {0};
        tb_err_t err = TB_OK;
        if (tb_cmd_engine_reply(cmd->engine, correlation_id, command_id, task_id, v, &buf))
                err = tb_bus_produce(cmd->producer, cmd->ctx->conf, TB_TOPIC_REPLIES,
                                     RD_KAFKA_PARTITION_UA, correlation_id,
                                     strlen(correlation_id), buf.data, buf.len, NULL, 0, false,
                                     errstr, errstr_size);
        tb_buf_free(&buf);
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
                /* kept raw for `taskbus admin quarantine`; the role goes on either way */
                char qerr[512];
                (void)tb_pgsink_quarantine_one(cmd->ctx->store, TB_CMD_SUB, msg, derr, qerr,
                                               sizeof(qerr));
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
                tb_cmd_engine_undecodable(&v, derr);
                tb_cmd_count(cmd, "unknown", "INVALID_ARGUMENT");
                /* the key is the task id by convention; only echo valid UTF-8 */
                return tb_cmd_reply(cmd, corr, "", tb_cmd_utf8_ok(key) ? key : "", &v, errstr,
                                    errstr_size);
        }
        const char *correlation = tb_cmd_jstr(c, "correlation_id");
        if (!*correlation)
                correlation = corr;
        tb_cmd_cred_t cred = {.key = msg->key, .key_len = msg->key_len,
                              .value = msg->payload, .value_len = msg->len};
        if (tb_bus_header_get(msg, "authorization", &cred.authorization,
                              &cred.authorization_len) != TB_OK)
                cred.authorization = NULL;
        if (tb_bus_header_get(msg, TB_SIGN_HDR_PRINCIPAL, &cred.principal, &cred.principal_len))
                cred.principal = NULL;
        if (tb_bus_header_get(msg, TB_SIGN_HDR_AUTH, &cred.auth, &cred.auth_len) != TB_OK)
                cred.auth = NULL;
        tb_cmd_engine_decide(cmd->engine, c, &cred, msg->partition, &v);
        const char *task_id = tb_cmd_jstr(c, "task_id");
        if (!v.reason &&
            (err = tb_bus_produce(cmd->producer, cmd->ctx->conf, TB_TOPIC_EVENTS, msg->partition,
                                  task_id, strlen(task_id), v.event.data, v.event.len, NULL, 0,
                                  false, errstr, errstr_size)))
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
        err = tb_cmd_reply(cmd, correlation, tb_cmd_jstr(c, "command_id"), task_id, &v, errstr,
                           errstr_size);
out:
        tb_cmd_verdict_clear(&v);
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

/**
 * Ask the projection once for the batch which of its task ids (the records'
 * keys) it has events of, when the state does not hold them: a CREATE of an
 * id whose deleted task was evicted is then a CONFLICT without a query of
 * its own (tb_cmd_env_id_used()).
 */
static void tb_cmd_prefetch_used(tb_cmd_t *cmd) {
        const char **ids = calloc(cmd->batch_cnt + 1, sizeof(*ids));
        char(*keys)[TB_TASK_ID_MAX + 1] = calloc(cmd->batch_cnt + 1, sizeof(*keys));
        size_t n = 0;
        char err[512];
        json_object_clear(cmd->used);
        cmd->used_err[0] = '\0';
        if (!ids || !keys) {
                tb_snprintf(cmd->used_err, sizeof(cmd->used_err),
                            "task ids of the batch: out of memory");
                goto out;
        }
        for (size_t i = 0; i < cmd->batch_cnt; i++) {
                const rd_kafka_message_t *m = cmd->batch[i];
                if (!m->key || !m->key_len || m->key_len > TB_TASK_ID_MAX ||
                    memchr(m->key, '\0', m->key_len))
                        continue;
                memcpy(keys[n], m->key, m->key_len);
                keys[n][m->key_len] = '\0';
                if (!tb_cmd_utf8_ok(keys[n]) || tb_cmd_engine_get(cmd->engine, keys[n]))
                        continue;
                ids[n] = keys[n];
                n++;
        }
        if (tb_cmd_ids_used(cmd, ids, n, cmd->used, err, sizeof(err))) {
                /* the batch's CREATEs of ids not held are answered INTERNAL
                 * at once, not after a wait of their own each */
                tb_warn(TB_CMD_SUB, "task ids of the batch: %s", err);
                tb_snprintf(cmd->used_err, sizeof(cmd->used_err), "%s", err);
        }
out:
        free(ids);
        free(keys);
}

/** Process the collected batch in one transaction. */
static void tb_cmd_process(tb_cmd_t *cmd) {
        char errstr[1024];
        tb_err_t err;
        bool in_commit = false;
        int64_t t0 = tb_mono_us();
        rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(8);

        int64_t t_used = 0, t_decided = 0, t_offsets = 0;
        cmd->tally_cnt = 0;
        cmd->last_batch_cnt = cmd->batch_cnt;
        tb_cmd_prefetch_used(cmd);
        t_used = tb_mono_us();
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
        t_decided = tb_mono_us();
        if ((err = tb_bus_txn_send_offsets(cmd->producer, cmd->consumer, offsets, errstr,
                                           sizeof(errstr))))
                goto fail;
        t_offsets = tb_mono_us();
        in_commit = true;
        if ((err = tb_bus_txn_commit(cmd->producer, TB_CMD_COMMIT_TIMEOUT_MS, errstr,
                                     sizeof(errstr))))
                goto fail;
        {
                int64_t t_end = tb_mono_us();
                tb_debug(TB_CMD_SUB,
                         "batch of %zu command(s): ids %.1f ms, decided %.1f ms, offsets "
                         "%.1f ms, commit %.1f ms",
                         cmd->batch_cnt, (double)(t_used - t0) / 1e3,
                         (double)(t_decided - t_used) / 1e3,
                         (double)(t_offsets - t_decided) / 1e3,
                         (double)(t_end - t_offsets) / 1e3);
        }

        tb_cmd_engine_commit(cmd->engine);
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
                tb_cmd_engine_commit(cmd->engine);
                goto done;
        }
        if (!in_commit && !fatal) {
                /* known to be aborted: undo and read the batch again */
                tb_cmd_engine_rollback(cmd->engine);
                tb_cmd_seek(cmd, starts);
        } else {
                tb_cmd_engine_commit(cmd->engine);
                tb_cmd_resync(cmd, starts);
        }
done:
        rd_kafka_topic_partition_list_destroy(starts);
        rd_kafka_topic_partition_list_destroy(offsets);
        tb_cmd_batch_free(cmd);
}

/**
 * Collect a batch (group commit). Wait up to TB_CMD_IDLE_POLL_MS for a first
 * command; then take every command already fetched without waiting. A busy
 * role (its previous batch held more than one command) also waits up to
 * commands.batch_linger after the first for more, so that one transaction
 * carries them all; an idle one commits a lone command at once. Commands
 * arriving while a batch commits make the next batch: under load batches
 * grow by themselves. The batch closes at commands.batch_max commands or
 * once its records reach commands.batch_bytes.
 */
static void tb_cmd_collect(tb_cmd_t *cmd) {
        const tb_config_t *conf = cmd->ctx->conf;
        int64_t first = 0, deadline = 0;
        size_t bytes = 0;
        while (cmd->batch_cnt < cmd->batch_max && bytes < (size_t)conf->cmd_batch_bytes) {
                int wait_ms = TB_CMD_IDLE_POLL_MS;
                if (first) {
                        int64_t left = deadline - tb_mono_us();
                        wait_ms = left > 0 ? (int)((left + 999) / 1000) : 0;
                }
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cmd->consumer, wait_ms);
                if (!m) {
                        if (!first || wait_ms == 0)
                                break; /* idle (check the stop flag), or nothing more now */
                        continue;
                }
                if (m->err) {
                        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                                tb_warn(TB_CMD_SUB, "consumer: %s", rd_kafka_message_errstr(m));
                        rd_kafka_message_destroy(m);
                        continue;
                }
                if (m->partition >= 0 && m->partition < cmd->partition_cnt &&
                    cmd->pending[m->partition]) {
                        /* assigned during this poll: rebuilt first */
                        tb_cmd_defer(cmd, m);
                        continue;
                }
                cmd->batch[cmd->batch_cnt++] = m;
                bytes += m->len + m->key_len;
                if (!first) {
                        first = tb_mono_us();
                        deadline = first + (cmd->last_batch_cnt > 1
                                                    ? conf->cmd_batch_linger_ms * 1000
                                                    : 0);
                }
        }
}

static void *tb_cmd_main(void *arg) {
        tb_cmd_t *cmd = arg;
        while (!atomic_load(&cmd->ctx->stopping)) {
                tb_cmd_load_pending(cmd);
                tb_cmd_follow(cmd);
                tb_cmd_evict(cmd);
                tb_metrics_set("taskbus_commands_tasks_held", NULL,
                               (double)tb_cmd_engine_task_count(cmd->engine));
                tb_metrics_set("taskbus_commands_deleted_held", NULL,
                               (double)tb_cmd_engine_deleted_count(cmd->engine));
                tb_cmd_collect(cmd);
                if (cmd->batch_cnt == 0) {
                        cmd->last_batch_cnt = 0; /* a round without commands: idle */
                        continue;
                }
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

/* What the engine needs from outside: PostgreSQL (through identity/'s cache),
 * the clocks and the event ids. */
static tb_err_t tb_cmd_env_authenticate(void *opaque, const tb_sign_record_t *rec,
                                        tb_principal_t **who, char *errstr,
                                        size_t errstr_size) {
        tb_cmd_t *cmd = opaque;
        return tb_sign_verify(cmd->ctx->store, rec, TB_CMD_AUTH_CACHE_MS, who, errstr,
                              errstr_size);
}

static tb_err_t tb_cmd_env_id_used(void *opaque, const char *id, bool *used, char *group,
                                   size_t group_size, char *errstr, size_t errstr_size) {
        tb_cmd_t *cmd = opaque;
        json_t *known = json_object_get(cmd->used, id);
        if (!known && cmd->used_err[0])
                return tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT, "%s", cmd->used_err);
        if (!known) {
                tb_err_t err = tb_cmd_ids_used(cmd, &id, 1, cmd->used, errstr, errstr_size);
                if (err)
                        return err;
                known = json_object_get(cmd->used, id);
        }
        /* a used id maps to the security group it last had, else false */
        *used = json_is_string(known);
        tb_snprintf(group, group_size, "%s", *used ? json_string_value(known) : "");
        return TB_OK;
}

static int64_t tb_cmd_env_now_ms(void *opaque) {
        (void)opaque;
        return tb_now_ms();
}

static int64_t tb_cmd_env_mono_us(void *opaque) {
        (void)opaque;
        return tb_mono_us();
}

static void tb_cmd_env_new_id(void *opaque, char id[37]) {
        (void)opaque;
        tb_uuid4(id);
}

/* The group quotas (identity/'s 1 s cache); for max_tasks, the tasks of the
 * partitions this process does not hold come from the projection. */
static tb_err_t tb_cmd_env_group_quota(void *opaque, const char *group, tb_cmd_quota_t *q,
                                       char *errstr, size_t errstr_size) {
        tb_cmd_t *cmd = opaque;
        tb_store_group_quota_t gq;
        tb_err_t e = tb_identity_quota_get(cmd->ctx->store, group, TB_IDENTITY_QUOTA_CACHE_MS,
                                           &gq, errstr, errstr_size);
        if (e)
                return e;
        *q = (tb_cmd_quota_t){.max_tasks = gq.max_tasks, .run_now_rate = gq.run_now_rate};
        if (q->max_tasks < 0)
                return TB_OK;
        /* the partitions of task-commands this process holds (their tasks are
         * the engine's); the others' counts come from the projection */
        rd_kafka_topic_partition_list_t *held = NULL;
        int32_t *others = calloc((size_t)cmd->partition_cnt + 1, sizeof(*others));
        bool *mine = calloc((size_t)cmd->partition_cnt + 1, sizeof(*mine));
        if (!others || !mine || rd_kafka_assignment(cmd->consumer, &held)) {
                free(others);
                free(mine);
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "quota: out of memory, or the assignment of task-commands "
                                 "is unknown");
        }
        for (int i = 0; i < held->cnt; i++)
                if (held->elems[i].partition >= 0 &&
                    held->elems[i].partition < cmd->partition_cnt)
                        mine[held->elems[i].partition] = true;
        rd_kafka_topic_partition_list_destroy(held);
        size_t n = 0;
        for (int32_t p = 0; p < cmd->partition_cnt; p++)
                if (!mine[p])
                        others[n++] = p;
        free(mine);
        if (n == 0) {
                free(others);
                return TB_OK;
        }
        PGconn *c = tb_store_acquire_timeout(cmd->ctx->store, 2000);
        e = c ? tb_store_tasks_group_count(c, group, others, n, &q->other_live, errstr,
                                           errstr_size)
              : tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                          "no PostgreSQL connection free within 2 s");
        if (c)
                tb_store_release(cmd->ctx->store, c);
        free(others);
        return e;
}

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
        free(cmd->pending);
        free(cmd->gen);
        free(cmd->seek_back);
        free(cmd->batch);
        json_decref(cmd->used);
        if (cmd->producer) {
                rd_kafka_flush(cmd->producer, 5000);
                rd_kafka_destroy(cmd->producer);
        }
        tb_cmd_engine_destroy(cmd->engine);
        free(cmd);
}

static tb_err_t tb_cmd_start(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size) {
        const tb_config_t *conf = ctx->conf;
        tb_err_t err;
        char group[300];
        if ((err = tb_sign_key_init(conf, true, errstr, errstr_size)))
                return err;
        tb_cmd_t *cmd = calloc(1, sizeof(*cmd));
        if (!cmd)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: out of memory");
        cmd->ctx = ctx;
        cmd->partition_cnt = (int32_t)conf->topic_partitions;
        cmd->followed = calloc((size_t)cmd->partition_cnt, sizeof(*cmd->followed));
        cmd->pending = calloc((size_t)cmd->partition_cnt, sizeof(*cmd->pending));
        cmd->gen = calloc((size_t)cmd->partition_cnt, sizeof(*cmd->gen));
        cmd->seek_back = malloc((size_t)cmd->partition_cnt * sizeof(*cmd->seek_back));
        cmd->used = json_object();
        cmd->batch_max = (size_t)conf->cmd_batch_max;
        cmd->batch = calloc(cmd->batch_max, sizeof(*cmd->batch));
        cmd->remote_cnt = conf->repl_remote_region_cnt;
        cmd->remote_events = calloc(cmd->remote_cnt + 1, sizeof(*cmd->remote_events));
        if (!cmd->followed || !cmd->remote_events || !cmd->pending || !cmd->gen ||
            !cmd->seek_back || !cmd->used || !cmd->batch) {
                free(cmd->batch);
                free(cmd->followed);
                free(cmd->remote_events);
                free(cmd->pending);
                free(cmd->gen);
                free(cmd->seek_back);
                json_decref(cmd->used);
                free(cmd);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: out of memory");
        }
        for (int32_t p = 0; p < cmd->partition_cnt; p++)
                cmd->seek_back[p] = -1;
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
        tb_metrics_describe("taskbus_quarantined_total", "counter",
                            "Records set aside in the quarantine table (by role and topic)");
        tb_metrics_describe("taskbus_commands_malformed_total", "counter",
                            "task-commands records that could not be decoded nor answered");
        tb_metrics_describe("taskbus_commands_txn_failures_total", "counter",
                            "Command transactions that failed and were retried");
        tb_metrics_describe("taskbus_commands_batch_seconds", "histogram",
                            "Time to decide and commit one batch of commands");
        tb_metrics_describe("taskbus_commands_tasks_held", "gauge",
                            "Tasks whose state the commands role holds (live, and deleted ones "
                            "the projection does not hold yet)");
        tb_metrics_describe("taskbus_commands_rebuild_seconds", "histogram",
                            "Time to rebuild the state of the partitions assigned at once "
                            "(projection snapshot, then task-events after it)");
        tb_metrics_describe("taskbus_commands_deleted_held", "gauge",
                            "Deleted tasks the commands role still holds: evicted once the "
                            "projection holds their deletion");
        const tb_cmd_env_t env = {
                .authenticate = tb_cmd_env_authenticate,
                .now_ms = tb_cmd_env_now_ms,
                .mono_us = tb_cmd_env_mono_us,
                .new_id = tb_cmd_env_new_id,
                .group_quota = tb_cmd_env_group_quota,
                .id_used = tb_cmd_env_id_used,
                .opaque = cmd,
        };
        if ((err = tb_cmd_engine_new(conf, &env, &cmd->engine, errstr, errstr_size)))
                goto fail;
        if ((err = tb_bus_producer_new(conf, cmd->txn_id, &cmd->producer, errstr, errstr_size)))
                goto fail;
        if ((err = tb_cmd_loader_new(cmd, &cmd->loader, errstr, errstr_size)) ||
            (err = tb_cmd_loader_new(cmd, &cmd->follower, errstr, errstr_size)))
                goto fail;
        tb_snprintf(group, sizeof(group), "%scommands", conf->topic_prefix);
        cmd->rebalance = (tb_rebalance_t){.sub = TB_CMD_SUB,
                                          .on_assigned = tb_cmd_on_assigned,
                                          .on_revoke = tb_cmd_on_revoke,
                                          .opaque = cmd};
        tb_topic_t topics[] = {TB_TOPIC_COMMANDS};
        tb_consumer_opts_t opts = {
                .group_id = group,
                .read_committed = true, /* also makes offset fetches wait for stable offsets */
                .auto_commit = false,
                .rebalance = &cmd->rebalance,
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
