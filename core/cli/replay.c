/**
 * @file cli/replay.c
 * @brief `taskbus replay`: rebuild the projection of task-events in a
 *        database, with the projection the projector applies (projection/projection.h).
 */
#include "bus/bus.h"
#include "cli.h"
#include "projection/projection.h"
#include "serde/serde.h"
#include "store/store.h"
#include "store/offsets.h"
#include "store/tasks.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Records per set-based batch: one COPY and one merge each (docs/benchmarks.md, "Replay"). */
#define TB_CLI_REPLAY_BATCH 5000
/* At most one progress line per this many microseconds. */
#define TB_CLI_REPLAY_REPORT_US 1000000

static void tb_cli_replay_usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbus replay --into DATABASE_URL [--from-kafka BOOTSTRAP] [--force]\n"
                "                      [--config FILE]\n\n"
                "Rebuilds the task projection (tasks, task_history) in DATABASE_URL from\n"
                "task-events: every partition from offset 0 up to the end offsets taken at\n"
                "start (committed transactions only). The database is migrated first.\n\n"
                "  --into URL             target PostgreSQL database (libpq URL)\n"
                "  --from-kafka SERVERS   Kafka bootstrap servers (default: config / TASKBUS_KAFKA)\n"
                "  --force                replay into a database whose tasks table is not empty:\n"
                "                         the projection (tasks, task_history, projector offsets)\n"
                "                         is emptied first\n"
                "\nEvents are applied set-based, %d per batch: one COPY into a staging table\n"
                "and one merge per batch, with the projector's rules; a record that cannot be\n"
                "decoded is set aside in the quarantine, and a batch PostgreSQL refuses is\n"
                "applied again row by row to set the refused record aside. Once a second,\n"
                "stderr shows the events applied, events/s, each partition's offset against\n"
                "its end and the ETA.\n"
                "\nThe stored projector offsets are set to the end of the replay, so a projector\n"
                "started on that database continues where the replay stopped.\n",
                TB_CLI_REPLAY_BATCH);
}

/** How many tasks the projection holds, or -1 (printed). */
static int64_t tb_cli_replay_count(PGconn *conn) {
        char err[1024];
        int64_t n = 0;
        if (tb_store_tasks_count(conn, &n, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("%s", err);
                return -1;
        }
        return n;
}

/** Empty the projection and the projector's offsets in one transaction. */
static bool tb_cli_replay_empty(PGconn *conn) {
        char err[1024];
        if (tb_store_begin(conn, err, sizeof(err)) != TB_OK ||
            tb_store_tasks_truncate(conn, err, sizeof(err)) != TB_OK ||
            tb_store_offsets_reset(conn, TB_PROJECTION_CONSUMER, err, sizeof(err)) != TB_OK ||
            tb_store_commit(conn, err, sizeof(err)) != TB_OK) {
                tb_store_rollback(conn);
                tb_cli_fail("%s", err);
                return false;
        }
        return true;
}

/** An assign-only read_committed consumer (the group is never joined). */
static rd_kafka_t *tb_cli_replay_consumer(const tb_config_t *conf) {
        char err[1024], group[300];
        rd_kafka_t *rk = NULL;
        tb_snprintf(group, sizeof(group), "%sreplay", conf->topic_prefix);
        tb_reader_opts_t o = {.group_id = group, .read_committed = true, .partition_eof = true};
        if (tb_bus_reader_new(conf, &o, &rk, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("kafka: %s", err);
                return NULL;
        }
        return rk;
}

typedef struct tb_cli_replay_part {
        int64_t lo, end, pos;
        bool done;
} tb_cli_replay_part_t;

/** One progress line on stderr: events applied and their rate, the share of
 *  the offsets read, the ETA at the rate offsets were read so far, and each
 *  partition's position against its end. */
static void tb_cli_replay_progress(int64_t t0, uint64_t events, const tb_cli_replay_part_t *parts,
                                   int pcnt) {
        double secs = (double)(tb_mono_us() - t0) / 1e6;
        int64_t consumed = 0, total = 0;
        for (int p = 0; p < pcnt; p++) {
                consumed += parts[p].pos - parts[p].lo;
                total += parts[p].end - parts[p].lo;
        }
        double orate = secs > 0 ? (double)consumed / secs : 0;
        int64_t remaining = total - consumed > 0 ? total - consumed : 0;
        tb_buf_t line = {0};
        tb_buf_printf(&line, "replay: %" PRIu64 " events, %.0f events/s, %.1f%% of offsets, ",
                      events, secs > 0 ? (double)events / secs : 0.0,
                      total > 0 ? 100.0 * (double)consumed / (double)total : 100.0);
        if (remaining == 0)
                tb_buf_printf(&line, "done");
        else if (orate > 0)
                tb_buf_printf(&line, "ETA %.0f s", (double)remaining / orate);
        else
                tb_buf_printf(&line, "ETA unknown");
        tb_buf_printf(&line, "; partition offset/end:");
        for (int p = 0; p < pcnt; p++)
                tb_buf_printf(&line, " %d:%" PRId64 "/%" PRId64, p, parts[p].pos, parts[p].end);
        fprintf(stderr, "%s\n", line.data ? (const char *)line.data : "replay: out of memory");
        fflush(stderr);
        tb_buf_free(&line);
}

int tb_cli_replay(int argc, char **argv) {
        if (tb_cli_wants_help(argc, argv)) {
                tb_cli_replay_usage(stdout);
                return 0;
        }
        const char *into = NULL;
        bool force = false;
        /* --from-kafka first: the configuration applies TASKBUS_KAFKA as an
         * override, after the file */
        for (int i = 1; i + 1 < argc; i++)
                if (!strcmp(argv[i], "--from-kafka"))
                        setenv("TASKBUS_KAFKA", argv[i + 1], 1);
        tb_config_t *conf = tb_cli_config(&argc, argv);
        if (!conf)
                return 1;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--into") && i + 1 < argc) {
                        into = argv[++i];
                } else if (!strcmp(argv[i], "--from-kafka") && i + 1 < argc) {
                        i++;
                } else if (!strcmp(argv[i], "--force")) {
                        force = true;
                } else {
                        tb_cli_fail("replay: unexpected argument '%s'", argv[i]);
                        tb_cli_replay_usage(stderr);
                        tb_config_destroy(conf);
                        return 2;
                }
        }
        if (!into || !*into) {
                tb_cli_fail("replay: --into DATABASE_URL is required (the database to rebuild)");
                tb_cli_replay_usage(stderr);
                tb_config_destroy(conf);
                return 2;
        }

        int rc = 1;
        char err[1024], topic[256];
        rd_kafka_t *rk = NULL;
        rd_kafka_topic_t *rkt = NULL;
        const struct rd_kafka_metadata *md = NULL;
        tb_cli_replay_part_t *parts = NULL;
        rd_kafka_message_t **batch = NULL;
        size_t batch_cnt = 0;
        rd_kafka_topic_partition_list_t *as = NULL;
        tb_projection_stats_t st = {0};
        PGconn *conn = NULL;

        if (tb_serde_init(err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schemas: %s", err);
                goto out;
        }
        if (tb_store_connect_one(into, &conn, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("replay: cannot connect to --into database: %s", err);
                goto out;
        }
        int applied = 0;
        if (tb_store_migrate(conn, &applied, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("replay: migrating the target database: %s", err);
                goto out;
        }
        int64_t existing = tb_cli_replay_count(conn);
        if (existing < 0)
                goto out;
        if (existing > 0 && !force) {
                tb_cli_fail("replay: the target database already holds %" PRId64
                            " task(s); replay into an empty database, or pass --force to "
                            "empty its projection first",
                            existing);
                rc = 1;
                goto out;
        }
        if (force && !tb_cli_replay_empty(conn))
                goto out;

        if (!(rk = tb_cli_replay_consumer(conf)))
                goto out;
        tb_topic_name(conf, TB_TOPIC_EVENTS, topic, sizeof(topic));
        rkt = rd_kafka_topic_new(rk, topic, NULL);
        rd_kafka_resp_err_t rerr = rd_kafka_metadata(rk, 0, rkt, &md, 30000);
        if (rerr || md->topic_cnt != 1 || md->topics[0].err) {
                tb_cli_fail("replay: topic %s: %s (is Kafka reachable, and topics.prefix right?)",
                            topic,
                            rd_kafka_err2str(rerr ? rerr
                                                  : md->topic_cnt ? md->topics[0].err
                                                                  : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
                goto out;
        }
        int pcnt = md->topics[0].partition_cnt;
        parts = calloc((size_t)(pcnt > 0 ? pcnt : 1), sizeof(*parts));
        batch = calloc(TB_CLI_REPLAY_BATCH, sizeof(*batch));
        as = rd_kafka_topic_partition_list_new(pcnt > 0 ? pcnt : 1);
        int remaining = 0;
        int set_based = 0, row_by_row = 0;
        for (int p = 0; p < pcnt; p++) {
                int64_t lo = 0, hi = 0;
                rerr = tb_bus_watermarks(rk, topic, p, 30000, &lo, &hi);
                if (rerr) {
                        tb_cli_fail("replay: end offset of %s [%d]: %s", topic, p,
                                    rd_kafka_err2str(rerr));
                        goto out;
                }
                parts[p].lo = lo;
                parts[p].end = hi;
                parts[p].pos = lo;
                if (hi <= lo) {
                        parts[p].done = true;
                        continue;
                }
                rd_kafka_topic_partition_list_add(as, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
                remaining++;
        }
        int64_t t0 = tb_mono_us(), last_report = t0;
        if (remaining > 0 && (rerr = rd_kafka_assign(rk, as))) {
                tb_cli_fail("replay: assign %s: %s", topic, rd_kafka_err2str(rerr));
                goto out;
        }
        while (remaining > 0 || batch_cnt > 0) {
                rd_kafka_message_t *m = remaining > 0 ? rd_kafka_consumer_poll(rk, 200) : NULL;
                if (m) {
                        int32_t p = m->partition;
                        bool ours = p >= 0 && p < pcnt && !parts[p].done;
                        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                                if (ours) {
                                        parts[p].pos = parts[p].end;
                                        parts[p].done = true;
                                        remaining--;
                                }
                                rd_kafka_message_destroy(m);
                        } else if (m->err) {
                                tb_warn("replay", "%s", rd_kafka_message_errstr(m));
                                rd_kafka_message_destroy(m);
                        } else if (!ours || m->offset >= parts[p].end) {
                                /* written after the replay started */
                                if (ours) {
                                        parts[p].done = true;
                                        remaining--;
                                }
                                rd_kafka_message_destroy(m);
                        } else {
                                parts[p].pos = m->offset + 1;
                                if (parts[p].pos >= parts[p].end) {
                                        parts[p].done = true;
                                        remaining--;
                                }
                                batch[batch_cnt++] = m;
                        }
                }
                if (batch_cnt == TB_CLI_REPLAY_BATCH || (batch_cnt > 0 && (!m || remaining == 0))) {
                        bool slow = false;
                        if (tb_projection_replay_batch(conn, conf, TB_PROJECTION_CONSUMER, batch,
                                                       batch_cnt, &st, &slow, err,
                                                       sizeof(err)) != TB_OK) {
                                tb_cli_fail("replay: %s", err);
                                goto out;
                        }
                        if (slow)
                                row_by_row++;
                        else
                                set_based++;
                        for (size_t i = 0; i < batch_cnt; i++)
                                rd_kafka_message_destroy(batch[i]);
                        batch_cnt = 0;
                }
                int64_t now = tb_mono_us();
                if (now - last_report >= TB_CLI_REPLAY_REPORT_US) {
                        tb_cli_replay_progress(t0, st.events, parts, pcnt);
                        last_report = now;
                }
        }
        double secs = (double)(tb_mono_us() - t0) / 1e6;
        tb_cli_replay_progress(t0, st.events, parts, pcnt);
        int64_t tasks = tb_cli_replay_count(conn);
        if (tasks < 0)
                goto out;
        printf("replayed %" PRIu64 " events (%" PRIu64 " skipped as malformed, %" PRIu64
               " quarantined) from %s into %" PRId64 " tasks in %.2f s (%.0f events/s); "
               "%d batch(es) set-based, %d row by row\n"
               "time of the set-based batches: %.2f s decoding in taskbus, %.2f s in "
               "PostgreSQL (the rest: reading Kafka, row by row batches)\n",
               st.events, st.malformed, st.quarantined, topic, tasks, secs,
               secs > 0 ? (double)st.events / secs : 0.0, set_based, row_by_row,
               (double)st.decode_us / 1e6, (double)st.pg_us / 1e6);
        rc = 0;
out:
        for (size_t i = 0; i < batch_cnt; i++)
                rd_kafka_message_destroy(batch[i]);
        free(batch);
        free(parts);
        if (as)
                rd_kafka_topic_partition_list_destroy(as);
        if (md)
                rd_kafka_metadata_destroy(md);
        if (rkt)
                rd_kafka_topic_destroy(rkt);
        if (rk) {
                tb_bus_consumer_destroy(rk, 10000);
        }
        PQfinish(conn);
        tb_config_destroy(conf);
        return rc;
}
