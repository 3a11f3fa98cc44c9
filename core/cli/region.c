/**
 * @file cli/region.c
 * @brief `taskbus admin region ...`: region failover and replication status
 *        (docs/replication.md).
 *
 * failover FROM --to TO, run with region TO's configuration, moves the home
 * of every task TO's projection shows homed in FROM: for each it writes a
 * HOME_MOVED TaskEvent (epoch + 1, home_region TO, version + 1, the task's
 * full state) to TO's own task-events, in Kafka transactions, as the admin
 * actor, and records the action in admin_audit. TO's scheduler starts
 * firing them (its commands role accepts their writes) as soon as it reads
 * them; FROM, when MirrorMaker 2 brings it the events, stops: the higher
 * epoch wins everywhere. The CLI writes the events itself, not through a
 * command, because the TaskCommand schema has no such command and FROM's
 * tasks are exactly those TO's commands role refuses to write.
 */
#include "bus/bus.h"
#include "cli.h"
#include "identity/identity.h"
#include "replication.h"
#include "serde/serde.h"
#include "store/store.h"
#include "store/tasks.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** Tasks per failover transaction. */
#define TB_CLI_REGION_TXN_MAX 500

void tb_cli_admin_region_usage(FILE *fp) {
        fprintf(fp, "  region failover FROM --to TO [--dry-run]\n"
                    "                      run with region TO's config: move the home of every task\n"
                    "                      homed in FROM to TO (HOME_MOVED events, epoch + 1)\n"
                    "  region status       replication lag of this region's copies of the other\n"
                    "                      regions' topics (needs replication.region_kafka)\n");
}

/* One HOME_MOVED event for row \p i of \p res into \p out. */
static tb_err_t tb_cli_region_event(const tb_config_t *conf, PGresult *res, int i,
                                    const char *actor, int64_t now, tb_buf_t *out, char *errstr,
                                    size_t errstr_size) {
        const char *id = PQgetvalue(res, i, 0);
        json_error_t je;
        json_t *task = json_loads(PQgetvalue(res, i, 3), 0, &je);
        if (!json_is_object(task)) {
                json_decref(task);
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "task %s: its projected spec does not parse: %s", id, je.text);
        }
        json_object_set_new(task, "home_region", json_string(conf->region));
        json_t *spec = tb_task_to_spec(task);
        json_decref(task);
        char event_id[37];
        tb_uuid4(event_id);
        json_t *ev = json_pack(
                "{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:[s], s:o, s:I, s:s, s:I}", "event_id",
                event_id, "task_id", id, "version",
                (json_int_t)(strtoll(PQgetvalue(res, i, 1), NULL, 10) + 1), "type", "HOME_MOVED",
                "at", (json_int_t)now, "actor", actor, "command_id", "", "changed_fields",
                "home_region", "task", spec ? spec : json_null(), "created_at",
                (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10), "created_by",
                PQgetvalue(res, i, 5), "epoch",
                (json_int_t)(strtoll(PQgetvalue(res, i, 2), NULL, 10) + 1));
        if (!ev)
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "task %s: cannot build its HOME_MOVED event", id);
        out->len = 0;
        tb_err_t err = tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, out, errstr, errstr_size);
        json_decref(ev);
        return err;
}

static int tb_cli_region_failover(tb_config_t *conf, int argc, char **argv) {
        const char *from = NULL, *to = NULL;
        bool dry = false;
        for (int i = 3; i < argc; i++) {
                if (!strcmp(argv[i], "--to") && i + 1 < argc)
                        to = argv[++i];
                else if (!strcmp(argv[i], "--dry-run"))
                        dry = true;
                else if (!from && argv[i][0] != '-')
                        from = argv[i];
                else {
                        tb_cli_fail("region failover: unexpected argument '%s'; usage: taskbus "
                                    "admin region failover FROM --to TO [--dry-run]",
                                    argv[i]);
                        return 2;
                }
        }
        if (!from || !to) {
                tb_cli_fail("region failover: usage: taskbus admin region failover FROM --to TO "
                            "(run with region TO's configuration)");
                return 2;
        }
        if (strcmp(to, conf->region)) {
                tb_cli_fail("region failover: --to %s but this configuration is region '%s' "
                            "(`region` in %s): run the failover against region %s, with its "
                            "configuration",
                            to, conf->region, conf->path, to);
                return 2;
        }
        if (!strcmp(from, to)) {
                tb_cli_fail("region failover: FROM and --to are both '%s'", to);
                return 2;
        }
        bool known = false;
        for (size_t i = 0; i < conf->repl_remote_region_cnt; i++)
                known |= !strcmp(conf->repl_remote_regions[i], from);
        if (!known) {
                tb_cli_fail("region failover: '%s' is not in replication.remote_regions of "
                            "region %s: this region does not replicate it, so it does not "
                            "know its tasks",
                            from, to);
                return 2;
        }

        char err[1024], who[384], actor[400];
        tb_cli_actor(who, sizeof(who));
        tb_snprintf(actor, sizeof(actor), "admin:%s", who);
        tb_store_t *store = NULL;
        rd_kafka_t *prod = NULL;
        PGresult *res = NULL;
        tb_buf_t buf = {0};
        int rc = 1;
        if (tb_serde_init(err, sizeof(err)) || tb_store_open(conf, &store, err, sizeof(err))) {
                tb_cli_fail("region failover: %s", err);
                return 1;
        }
        PGconn *conn = tb_store_acquire(store);
        if (tb_store_tasks_homed_in(conn, from, &res, err, sizeof(err))) {
                tb_cli_fail("region failover: %s", err);
                goto out;
        }
        int n = PQntuples(res);
        if (dry) {
                for (int i = 0; i < n; i++)
                        printf("%s\tversion %s\tepoch %s -> %lld\n", PQgetvalue(res, i, 0),
                               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                               strtoll(PQgetvalue(res, i, 2), NULL, 10) + 1);
                printf("%d task(s) homed in %s would move to %s\n", n, from, to);
                rc = 0;
                goto out;
        }
        char txn_id[300];
        tb_snprintf(txn_id, sizeof(txn_id), "%sregion-failover.%s", conf->topic_prefix, to);
        if (n > 0 && tb_bus_producer_new(conf, txn_id, &prod, err, sizeof(err))) {
                tb_cli_fail("region failover: kafka: %s", err);
                goto out;
        }
        int64_t now = tb_now_ms();
        for (int i = 0; i < n; i += TB_CLI_REGION_TXN_MAX) {
                int end = i + TB_CLI_REGION_TXN_MAX < n ? i + TB_CLI_REGION_TXN_MAX : n;
                if (tb_bus_txn_begin(prod, err, sizeof(err)))
                        goto kafka_fail;
                for (int k = i; k < end; k++) {
                        const char *id = PQgetvalue(res, k, 0);
                        if (tb_cli_region_event(conf, res, k, actor, now, &buf, err, sizeof(err)))
                                goto kafka_fail;
                        int32_t p = tb_bus_partition_for(id, strlen(id),
                                                         (int32_t)conf->topic_partitions);
                        if (tb_bus_produce(prod, conf, TB_TOPIC_EVENTS, p, id, strlen(id),
                                           buf.data, buf.len, NULL, 0, false, err, sizeof(err)))
                                goto kafka_fail;
                }
                if (tb_bus_txn_commit(prod, 60000, err, sizeof(err)))
                        goto kafka_fail;
                fprintf(stderr, "taskbus: moved %d of %d task(s)\n", end, n);
        }
        if (tb_identity_audit(conn, actor, "region.failover", from,
                              json_pack("{s:s, s:i}", "to", to, "tasks", n), err, sizeof(err)))
                fprintf(stderr, "taskbus: warning: the failover is done but not audited: %s\n",
                        err);
        printf("moved %d task(s) homed in region %s to region %s (HOME_MOVED, epoch + 1): "
               "%s's scheduler fires them from now on; %s stops when replication brings it "
               "the events\n",
               n, from, to, to, from);
        rc = 0;
        goto out;
kafka_fail:
        tb_cli_fail("region failover: %s; transactions committed before this one stand "
                    "(running the failover again moves the rest)",
                    err);
        if (prod) {
                char aerr[256];
                tb_bus_txn_abort(prod, 10000, aerr, sizeof(aerr));
        }
out:
        if (prod)
                rd_kafka_destroy(prod);
        tb_buf_free(&buf);
        PQclear(res);
        tb_store_release(store, conn);
        tb_store_destroy(store);
        return rc;
}

/* Lag of one copy against its source: seconds between the source's last
 * record and the copy's last record (0: the copy holds the source's last). */
static int tb_cli_region_status(tb_config_t *conf) {
        char err[1024];
        int rc = 0;
        if (!conf->repl_remote_region_cnt) {
                printf("region %s: no replication.remote_regions: a single region\n",
                       conf->region);
                return 0;
        }
        rd_kafka_t *local = NULL;
        if (tb_repl_reader_new(conf, NULL, "taskbus-region-status", &local, err, sizeof(err))) {
                tb_cli_fail("region status: %s", err);
                return 1;
        }
        for (size_t r = 0; r < conf->repl_remote_region_cnt; r++) {
                const char *region = conf->repl_remote_regions[r];
                const char *bs = tb_repl_region_kafka(conf, region);
                if (!bs) {
                        printf("replication %s -> %s: lag unknown (no replication.region_kafka "
                               "for %s)\n",
                               region, conf->region, region);
                        continue;
                }
                rd_kafka_t *remote = NULL;
                if (tb_repl_reader_new(conf, bs, "taskbus-region-status", &remote, err,
                                       sizeof(err))) {
                        tb_cli_fail("region status: %s", err);
                        rc = 1;
                        continue;
                }
                printf("replication %s -> %s:", region, conf->region);
                bool down = false, behind = false;
                for (size_t t = 0; t < tb_repl_topic_cnt && !down; t++) {
                        char src[256], copy[300];
                        tb_topic_name(conf, tb_repl_topics[t], src, sizeof(src));
                        tb_repl_topic_name(conf, region, tb_repl_topics[t], copy, sizeof(copy));
                        double lag = 0;
                        for (int32_t p = 0; p < (int32_t)conf->topic_partitions; p++) {
                                bool sf = false, cf = false;
                                int64_t sts = 0, cts = 0;
                                tb_buf_t sv = {0}, cv = {0};
                                if (tb_repl_last_record(remote, src, p, 5000, &sf, &sts, NULL, &sv,
                                                        err, sizeof(err))) {
                                        printf(" region %s unreachable (%s)", region, err);
                                        down = true;
                                } else if (sf &&
                                           !tb_repl_last_record(local, copy, p, 5000, &cf, &cts,
                                                                NULL, &cv, err, sizeof(err))) {
                                        bool same = cf && cts == sts && cv.len == sv.len &&
                                                    (!sv.len || !memcmp(cv.data, sv.data, sv.len));
                                        if (!same) {
                                                double l = (double)(sts - (cf ? cts : 0)) / 1000.0;
                                                if (!cf || l < 0.001)
                                                        l = 0.001;
                                                if (l > lag)
                                                        lag = l;
                                                behind = true;
                                        }
                                } else if (sf) {
                                        printf(" %s: %s;", copy, err);
                                        behind = true;
                                }
                                tb_buf_free(&sv);
                                tb_buf_free(&cv);
                                if (down)
                                        break;
                        }
                        if (!down)
                                printf(" %s %.3f s%s", tb_topic_short(tb_repl_topics[t]), lag,
                                       t + 1 < tb_repl_topic_cnt ? "," : "");
                }
                printf(" (%s)\n", down ? "source down" : behind ? "behind" : "caught up");
                tb_bus_consumer_destroy(remote, 5000);
        }
        tb_bus_consumer_destroy(local, 5000);
        return rc;
}

int tb_cli_admin_region(int argc, char **argv, tb_config_t *conf) {
        if (argc < 3) {
                tb_cli_fail("admin region: missing command (failover, status)");
                return 2;
        }
        if (!strcmp(argv[2], "failover"))
                return tb_cli_region_failover(conf, argc, argv);
        if (!strcmp(argv[2], "status"))
                return tb_cli_region_status(conf);
        tb_cli_fail("admin region: unknown command '%s' (failover, status)", argv[2]);
        return 2;
}
