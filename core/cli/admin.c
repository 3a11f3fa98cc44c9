/**
 * @file cli/admin.c
 * @brief `taskbus admin ...`: operations that work directly on PostgreSQL
 *        and Kafka (migrations, topics).
 */
#include "bus/bus.h"
#include "cli.h"
#include "replication.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tb_cli_admin_usage(FILE *fp) {
        fprintf(fp, "usage: taskbus admin COMMAND [--config FILE]\n\n"
                    "  migrate             apply database migrations (idempotent)\n"
                    "  migrate --status    print the schema version\n"
                    "  topics ensure       create the Kafka topics / apply their settings (idempotent)\n"
                    "  topics list         list taskbus topics with partitions and retention\n");
        tb_cli_admin_identity_usage(fp);
        tb_cli_admin_region_usage(fp);
        tb_cli_admin_quarantine_usage(fp);
}

static int tb_cli_admin_migrate(tb_config_t *conf, bool status_only) {
        char err[1024];
        tb_store_t *store = NULL;
        if (tb_store_open(conf, &store, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("postgres: %s", err);
                return 1;
        }
        int rc = 0, n = 0, v = 0;
        PGconn *conn = tb_store_acquire(store);
        if (!status_only && tb_store_migrate(conn, &n, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("migrate: %s", err);
                rc = 1;
        } else if (tb_store_schema_version(conn, &v, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("schema version: %s", err);
                rc = 1;
        } else if (status_only) {
                printf("schema version %d\n", v);
        } else {
                printf("migrations: %d applied, schema version %d\n", n, v);
        }
        tb_store_release(store, conn);
        tb_store_destroy(store);
        return rc;
}

static int tb_cli_admin_topics(tb_config_t *conf, const char *what) {
        char err[1024];
        if (!strcmp(what, "ensure")) {
                if (tb_bus_topics_ensure(conf, 60000, err, sizeof(err)) != TB_OK) {
                        tb_cli_fail("topics ensure: %s", err);
                        return 1;
                }
                printf("topics: %d ensured with prefix '%s'\n", (int)TB_TOPIC__COUNT,
                       conf->topic_prefix);
                if (conf->repl_remote_region_cnt) {
                        if (tb_repl_topics_ensure(conf, 60000, err, sizeof(err)) != TB_OK) {
                                tb_cli_fail("topics ensure: %s", err);
                                return 1;
                        }
                        printf("topics: copies of %zu other region(s)' topics ensured\n",
                               conf->repl_remote_region_cnt);
                }
                return 0;
        }
        if (!strcmp(what, "list")) {
                tb_topic_info_t *t = NULL;
                size_t n = 0;
                if (tb_bus_topics_list(conf, &t, &n, 10000, err, sizeof(err)) != TB_OK) {
                        tb_cli_fail("topics list: %s", err);
                        return 1;
                }
                printf("%-40s %10s %11s %s\n", "TOPIC", "PARTITIONS", "REPLICATION", "RETENTION");
                for (size_t i = 0; i < n; i++)
                        printf("%-40s %10d %11d %s\n", t[i].name, t[i].partitions,
                               t[i].replication, t[i].retention);
                free(t);
                return 0;
        }
        tb_cli_fail("admin topics: unknown command '%s' (ensure, list)", what);
        return 2;
}

int tb_cli_admin(int argc, char **argv) {
        if (argc < 2 || tb_cli_wants_help(argc, argv)) {
                tb_cli_admin_usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        tb_config_t *conf = tb_cli_config(&argc, argv);
        if (!conf)
                return 1;
        bool handled = false;
        int rc = tb_cli_admin_identity(argc, argv, conf, &handled);
        if (handled)
                ; /* user, token, group, audit */
        else if (!strcmp(argv[1], "region"))
                rc = tb_cli_admin_region(argc, argv, conf);
        else if (!strcmp(argv[1], "quarantine"))
                rc = tb_cli_admin_quarantine(argc, argv, conf);
        else if (!strcmp(argv[1], "migrate"))
                rc = tb_cli_admin_migrate(conf, argc > 2 && !strcmp(argv[2], "--status"));
        else if (!strcmp(argv[1], "topics") && argc > 2)
                rc = tb_cli_admin_topics(conf, argv[2]);
        else {
                tb_cli_fail("admin: unknown command '%s'", argv[1]);
                tb_cli_admin_usage(stderr);
                rc = 2;
        }
        tb_config_destroy(conf);
        return rc;
}
