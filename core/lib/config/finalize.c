/**
 * @file config/finalize.c
 * @brief The cross-field checks run once every value is read (file, then
 *        environment), and their list for docs/configuration.md.
 */
#include "config/config_internal.h"
#include "identity/identity.h"
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

/* Cross-field rules checked by tb_config_finalize(), for the doc. */
const char *tb_config_checks[] = {
        "`archiver.log_retention_default` must not exceed `archiver.history_retention` "
        "(logs would outlive the runs they belong to).",
        "Each `groups.NAME.log_retention_max` must not exceed `archiver.history_retention`.",
        "A group whose `os_user` is `root` needs `executor.allow_root = true`.",
        "`api.listen` must be HOST:PORT with a port from 0 to 65535.",
        "`api.tls_cert` and `api.tls_key` are set together or not at all.",
        "`postgres.url` must be accepted by libpq's connection string parser.",
        "`topics.prefix` may hold only letters, digits, '.', '_' and '-', "
        "and leave room for the longest topic name within Kafka's 249 characters.",
        "`region` must be 1 to 63 letters, digits, '-' or '_'.",
        "Each `replication.remote_regions` entry must be a region name other than "
        "`region`, listed once; every name in `replication.region_apis` and "
        "`replication.region_kafka` must be a region name other than `region`, and each "
        "`replication.region_apis` value an http:// or https:// URL.",
        "`executor.workdir` and every `executor.plugin_paths` entry must be absolute paths "
        "(whether they exist is checked when they are used).",
};

const size_t tb_config_checks_cnt = TB_ARRAY_LEN(tb_config_checks);

static size_t tb_config_prop_index(const char *name) {
        for (size_t i = 0; i < tb_config_props_cnt; i++)
                if (!strcmp(tb_config_props[i].name, name))
                        return i;
        return 0; /* only called with names from the table */
}

static bool tb_config_name_chars_ok(const char *s, const char *extra) {
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
                        return false;
        return true;
}

/** Cross-field checks (tb_config_checks lists them for the doc). */
tb_err_t tb_config_finalize(tb_config_ctx_t *ctx, tb_config_t *conf, char *errstr,
                            size_t errstr_size) {
#define ORIGIN(name) ctx->origin[tb_config_prop_index(name)]
        char a[48], b[48];
        if (conf->log_retention_default_ms > conf->history_retention_ms) {
                tb_units_duration_format(conf->log_retention_default_ms, a, sizeof(a));
                tb_units_duration_format(conf->history_retention_ms, b, sizeof(b));
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: %s exceeds archiver.history_retention (%s): logs "
                                 "would outlive their runs; lower it or raise "
                                 "archiver.history_retention",
                                 ORIGIN("archiver.log_retention_default"), a, b);
        }
        for (size_t i = 0; i < conf->group_cnt; i++) {
                const tb_group_conf_t *g = &conf->groups[i];
                if (g->log_retention_max_ms > conf->history_retention_ms) {
                        tb_units_duration_format(g->log_retention_max_ms, a, sizeof(a));
                        tb_units_duration_format(conf->history_retention_ms, b, sizeof(b));
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.log_retention_max: %s exceeds "
                                         "archiver.history_retention (%s)",
                                         ctx->path, ctx->group_line[i], g->name, a, b);
                }
                if (g->os_user && !strcmp(g->os_user, "root") && !conf->exec_allow_root)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.os_user: \"root\" is refused "
                                         "unless executor.allow_root = true",
                                         ctx->path, ctx->group_line[i], g->name);
                if (g->os_user && !*g->os_user)
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s:%u: groups.%s.os_user: must not be empty",
                                         ctx->path, ctx->group_line[i], g->name);
        }

        /* api.listen: HOST:PORT, HOST may be a bracketed IPv6 address. */
        const char *listen = conf->api_listen ? conf->api_listen : "";
        const char *colon = strrchr(listen, ':');
        bool ok = colon && colon != listen && colon[1];
        if (ok && listen[0] == '[')
                ok = colon > listen + 1 && colon[-1] == ']';
        if (ok) {
                char *end;
                errno = 0;
                long port = strtol(colon + 1, &end, 10);
                ok = !*end && !errno && port >= 0 && port <= 65535 &&
                     isdigit((unsigned char)colon[1]);
        }
        if (!ok)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not HOST:PORT (e.g. \"127.0.0.1:8080\", "
                                 "\"[::1]:8080\", port 0 to 65535)",
                                 ORIGIN("api.listen"), listen);

        /* api.tls_cert / api.tls_key: both or neither (the files are read
         * by the api role when it starts: http/tls.c). */
        bool has_cert = conf->api_tls_cert && *conf->api_tls_cert;
        bool has_key = conf->api_tls_key && *conf->api_tls_key;
        if (has_cert != has_key)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s is set but %s is not: HTTPS needs both the certificate "
                                 "chain (api.tls_cert) and its private key (api.tls_key); set "
                                 "the other one or remove both for plain HTTP",
                                 has_cert ? ORIGIN("api.tls_cert") : ORIGIN("api.tls_key"),
                                 has_cert ? "api.tls_key" : "api.tls_cert");

        /* api.admin_group: a group name as `taskbus admin group` takes it. */
        if (conf->api_admin_group && *conf->api_admin_group &&
            !tb_identity_name_valid(conf->api_admin_group))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not a security group name: use 1 to 128 "
                                 "characters from [A-Za-z0-9._@-]",
                                 ORIGIN("api.admin_group"), conf->api_admin_group);

        char *pqerr = NULL;
        PQconninfoOption *opts = PQconninfoParse(conf->pg_url ? conf->pg_url : "", &pqerr);
        if (!opts || !conf->pg_url || !*conf->pg_url) {
                /* libpq's message may quote the string, password and all:
                 * mask it, and keep errstr one line. */
                char why[512];
                tb_store_oneline_redacted(conf->pg_url, pqerr, why, sizeof(why));
                tb_err_t err = tb_seterr(
                        errstr, errstr_size, TB_ERR_INVALID,
                        "%s: not a valid libpq connection string: %s", ORIGIN("postgres.url"),
                        pqerr ? why : "empty; expected e.g. \"postgresql://user@host:5432/db\"");
                PQfreemem(pqerr);
                PQconninfoFree(opts);
                return err;
        }
        PQconninfoFree(opts);

        /* Kafka topic names: [A-Za-z0-9._-], at most 249; the longest of ours is
         * "scheduler-checkpoints". */
        size_t plen = strlen(conf->topic_prefix ? conf->topic_prefix : "");
        if (!tb_config_name_chars_ok(conf->topic_prefix ? conf->topic_prefix : "", "._-") ||
            plen + strlen("scheduler-checkpoints") > 249)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" cannot prefix a Kafka topic name: use only "
                                 "letters, digits, '.', '_' and '-', at most 228 characters",
                                 ORIGIN("topics.prefix"), conf->topic_prefix);

        size_t rlen = strlen(conf->region ? conf->region : "");
        if (!rlen || rlen > 63 || !tb_config_name_chars_ok(conf->region, "-_"))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not a region name: use 1 to 63 letters, "
                                 "digits, '-' or '_'",
                                 ORIGIN("region"), conf->region ? conf->region : "");

        for (size_t i = 0; i < conf->repl_remote_region_cnt; i++) {
                const char *r = conf->repl_remote_regions[i];
                size_t l = strlen(r);
                if (!l || l > 63 || !tb_config_name_chars_ok(r, "-_"))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is not a region name: use 1 to 63 "
                                         "letters, digits, '-' or '_'",
                                         ORIGIN("replication.remote_regions"), i, r);
                if (!strcmp(r, conf->region))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is this region (`region`): list only "
                                         "the other regions",
                                         ORIGIN("replication.remote_regions"), i, r);
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(r, conf->repl_remote_regions[j]))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s[%zu]: \"%s\" is listed twice",
                                                 ORIGIN("replication.remote_regions"), i, r);
        }
        const struct {
                const char *key;
                const tb_kv_t *kv;
                size_t n;
                bool url;
        } maps[] = {
                {"replication.region_apis", conf->repl_region_apis, conf->repl_region_api_cnt,
                 true},
                {"replication.region_kafka", conf->repl_region_kafka,
                 conf->repl_region_kafka_cnt, false},
        };
        for (size_t m = 0; m < TB_ARRAY_LEN(maps); m++)
                for (size_t i = 0; i < maps[m].n; i++) {
                        const tb_kv_t *kv = &maps[m].kv[i];
                        size_t l = strlen(kv->key);
                        if (!l || l > 63 || !tb_config_name_chars_ok(kv->key, "-_") ||
                            !strcmp(kv->key, conf->region))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s.%s: \"%s\" must name another region (1 to "
                                                 "63 letters, digits, '-' or '_', not `region`)",
                                                 ORIGIN(maps[m].key), kv->key, kv->key);
                        if (!kv->value[0] ||
                            (maps[m].url && strncmp(kv->value, "http://", 7) &&
                             strncmp(kv->value, "https://", 8)))
                                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                                 "%s.%s: \"%s\" is not %s", ORIGIN(maps[m].key),
                                                 kv->key, kv->value,
                                                 maps[m].url ? "an http:// or https:// URL"
                                                             : "a list of HOST:PORT");
                }

        if (!conf->exec_workdir || conf->exec_workdir[0] != '/')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s: \"%s\" is not an absolute path",
                                 ORIGIN("executor.workdir"),
                                 conf->exec_workdir ? conf->exec_workdir : "");
        for (size_t i = 0; i < conf->exec_plugin_path_cnt; i++)
                if (conf->exec_plugin_paths[i][0] != '/')
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "%s[%zu]: \"%s\" is not an absolute path",
                                         ORIGIN("executor.plugin_paths"), i,
                                         conf->exec_plugin_paths[i]);
#undef ORIGIN
        return TB_OK;
}
