/**
 * @file config/doc.c
 * @brief docs/configuration.md, generated from the property tables
 *        (`taskbusd --config-doc`).
 */
#include "config/config_internal.h"

#include <stdio.h>
#include <string.h>

static void tb_config_doc_prop_row(FILE *fp, const tb_config_prop_t *p,
                                   const char *prefix) {
        char def[256], range[256] = "";
        const char *type = tb_config_type_name(p->type);
        if (!p->def)
                tb_snprintf(def, sizeof(def), "%s",
                            p->type == TB_CT_STRLIST ? "`[]`"
                            : p->type == TB_CT_MAP   ? "`{}`"
                                                     : "(unset)");
        else if (p->type == TB_CT_STRING || p->type == TB_CT_ENUM ||
                 p->type == TB_CT_DURATION || p->type == TB_CT_SIZE)
                tb_snprintf(def, sizeof(def), "`\"%s\"`", p->def);
        else
                tb_snprintf(def, sizeof(def), "`%s`", p->def);
        if (p->type == TB_CT_ENUM) {
                tb_config_enum_list(p->enums, "`", range, sizeof(range));
        } else if (p->min != p->max) {
                char lo[48], hi[48];
                tb_config_prop_format_num(p, p->min, lo, sizeof(lo));
                tb_config_prop_format_num(p, p->max, hi, sizeof(hi));
                tb_snprintf(range, sizeof(range), "%s .. %s", lo, hi);
        }
        fprintf(fp, "| `%s%s` | %s | %s | %s | %s", prefix, p->name, type, def, range,
                p->desc);
        if (p->env)
                fprintf(fp, " Overridden by `%s`.", p->env);
        fprintf(fp, " |\n");
}

void tb_config_write_doc(FILE *fp) {
        fprintf(fp,
                "# taskbus configuration\n"
                "\n"
                "<!-- Generated from the property table in core/lib/config/ by\n"
                "     `taskbusd --config-doc > docs/configuration.md`. Do not edit:\n"
                "     tests/unit/test_config.c fails when this file is stale. -->\n"
                "\n"
                "taskbus reads one file in [libconfig](https://hyperrealm.github.io/libconfig/)\n"
                "syntax; `config/taskbus.conf` is the documented development config, and\n"
                "`taskbusd --check-config FILE` validates a file without starting anything.\n"
                "A dotted key is a nested group: `postgres.url` is written\n"
                "\n"
                "```\n"
                "postgres = {\n"
                "        url = \"postgresql://taskbus@db.example:5432/taskbus\";\n"
                "};\n"
                "```\n"
                "\n"
                "Every key is optional and has the default below. An unknown key, a value\n"
                "of the wrong type or out of range is a fatal error naming FILE:LINE and the\n"
                "key (an unknown key also lists the valid keys of its group). `@include\n"
                "\"file\"` is resolved relative to the main config file's directory.\n"
                "\n"
                "## Value types\n"
                "\n"
                "| type | written as |\n"
                "|---|---|\n"
                "| string | `\"text\"` |\n"
                "| integer | `42` (`42L` beyond 32 bits) |\n"
                "| number | `1.5` or an integer |\n"
                "| boolean | `true` or `false` |\n"
                "| enum | one of the listed strings |\n"
                "| list of strings | `[\"a\", \"b\"]` or `()` for none |\n"
                "| map of strings | a group `{ us = \"http://api.us:8080\"; }`; in an "
                "environment variable `us=http://api.us:8080,ap=...` |\n"
                "| duration | a string: `\"500ms\"`, `\"30s\"`, `\"5m\"`, `\"2h\"`, `\"7d\"`, "
                "`\"1w\"`, combinations such as `\"1h30m\"`, decimals such as `\"1.5h\"`, an "
                "ISO 8601 duration `\"PT30S\"` or `\"P1DT2H\"` (no years or months: their "
                "length varies); or an integer number of seconds |\n"
                "| size | an integer number of bytes, or a string such as `\"256KiB\"`, "
                "`\"64MiB\"`, `\"1GiB\"` (powers of 1024) or `\"500KB\"`, `\"1MB\"` "
                "(powers of 1000), or with a Docker-style letter `k`, `m`, `g`, `t` in "
                "either case, such as `\"512m\"` (powers of 1024) |\n"
                "\n"
                "## Environment overrides\n"
                "\n"
                "These win over the file, so a second stack can run beside another one\n"
                "(the tests use them). Empty means unset.\n"
                "\n"
                "| variable | overrides |\n"
                "|---|---|\n");
        for (size_t i = 0; i < tb_config_props_cnt; i++)
                if (tb_config_props[i].env)
                        fprintf(fp, "| `%s` | `%s` |\n", tb_config_props[i].env,
                                tb_config_props[i].name);
        fprintf(fp, "| `TASKBUS_KAFKA` | `kafka.bootstrap_servers` (librdkafka "
                    "`bootstrap.servers`) |\n");

        fprintf(fp, "\n## Settings\n");
        const char *last = NULL;
        size_t last_len = 0;
        for (size_t i = 0; i < tb_config_props_cnt; i++) {
                const tb_config_prop_t *p = &tb_config_props[i];
                const char *dot = strchr(p->name, '.');
                size_t gl = dot ? (size_t)(dot - p->name) : 0;
                if (!last || gl != last_len || strncmp(last, p->name, gl)) {
                        if (gl)
                                fprintf(fp, "\n### %.*s\n", (int)gl, p->name);
                        else
                                fprintf(fp, "\n### top level\n");
                        fprintf(fp, "\n| key | type | default | range | description |\n"
                                    "|---|---|---|---|---|\n");
                        last = p->name;
                        last_len = gl;
                }
                tb_config_doc_prop_row(fp, p, "");
        }

        fprintf(fp,
                "\n## groups: per security group policy\n"
                "\n"
                "`groups = { NAME = { ... }; };` sets the policy of the security group\n"
                "NAME (the group a task belongs to). Its keys are typed and checked like\n"
                "the settings above. A group that is not listed, and any key a listed\n"
                "group leaves out, gets the defaults below.\n"
                "\n"
                "```\n"
                "groups = {\n"
                "        ops = {\n"
                "                os_user = \"nobody\";\n"
                "                log_retention_max = \"90d\";\n"
                "                images = [\"alpine:3.19\"];\n"
                "                network = \"none\";\n"
                "                memory_max = \"512MiB\";\n"
                "                cpus_max = 1.0;\n"
                "        };\n"
                "};\n"
                "```\n"
                "\n"
                "| key | type | default | range | description |\n"
                "|---|---|---|---|---|\n");
        for (size_t i = 0; i < tb_config_group_props_cnt; i++)
                tb_config_doc_prop_row(fp, &tb_config_group_props[i], "groups.NAME.");

        fprintf(fp,
                "\n## notify.channels: where notifications go\n"
                "\n"
                "`notify.channels` is a list of groups, one per channel a task's notify\n"
                "rules may name (docs/notifications.md). A channel's secret is read from\n"
                "its `secret_file` when the config is loaded and is never logged or stored.\n"
                "\n"
                "```\n"
                "notify = {\n"
                "        channels = (\n"
                "                { name = \"ops\"; type = \"webhook\";\n"
                "                  url = \"https://hooks.example.com/taskbus\";\n"
                "                  secret_file = \"/etc/taskbus/ops.secret\"; },\n"
                "                { name = \"mail\"; type = \"smtp\"; url = \"smtp://mail.example.com:25\";\n"
                "                  from = \"taskbus@example.com\"; to = [\"ops@example.com\"]; }\n"
                "        );\n"
                "};\n"
                "```\n"
                "\n"
                "| key | type | default | range | description |\n"
                "|---|---|---|---|---|\n");
        for (size_t i = 0; i < tb_config_channel_props_cnt; i++)
                tb_config_doc_prop_row(fp, &tb_config_channel_props[i], "notify.channels[].");

        fprintf(fp,
                "\n## kafka: librdkafka properties\n"
                "\n"
                "Every key of the `kafka` group is passed to librdkafka (producers and\n"
                "consumers alike) with each `_` turned into `.`, because libconfig names\n"
                "cannot hold dots: `bootstrap_servers` is `bootstrap.servers`. Values may be\n"
                "any string, number or boolean. Each property is checked by librdkafka\n"
                "while loading; one it refuses is a fatal error carrying librdkafka's\n"
                "message. See librdkafka's CONFIGURATION.md for the properties.\n"
                "\n"
                "- Default: `bootstrap.servers = \"%s\"`.\n",
                TB_CONFIG_KAFKA_BOOTSTRAP_DEFAULT);
        fprintf(fp, "- Refused because taskbus sets them per role:");
        for (size_t i = 0; i < tb_config_kafka_managed_cnt; i++)
                fprintf(fp, "%s `%s`", i ? "," : "", tb_config_kafka_managed[i]);
        fprintf(fp,
                ".\n"
                "- Secrets (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`,\n"
                "  `sasl.oauthbearer.client.secret`) are never printed. Each may be read from\n"
                "  a file of its own instead: `sasl_password_file = \"/etc/taskbus/kafka.password\"`\n"
                "  (relative paths from the config file's folder; one line; mode 0600: readable\n"
                "  by others is refused, by the group a warning). A config file holding one\n"
                "  inline gets a warning when others can read it.\n"
                "- With `security_protocol` other than plaintext, taskbusd (and `taskbus admin\n"
                "  topics ensure`) connects once at start: a refused SASL login or a TLS\n"
                "  failure stops it with the principal and the broker (docs/deploy.md).\n"
                "\n"
                "```\n"
                "kafka = {\n"
                "        bootstrap_servers = \"broker1:9093,broker2:9093\";\n"
                "        security_protocol = \"SASL_SSL\";\n"
                "        sasl_mechanisms = \"SCRAM-SHA-512\";\n"
                "        sasl_username = \"taskbus-control\";\n"
                "        sasl_password_file = \"/etc/taskbus/kafka.password\";\n"
                "        ssl_ca_location = \"/etc/taskbus/kafka-ca.crt\";\n"
                "        message_max_bytes = 2000000;\n"
                "};\n"
                "```\n"
                "\n"
                "## plugins: executor plugin settings\n"
                "\n"
                "`plugins = { NAME = { key = value; ... }; };` hands the group NAME to the\n"
                "executor plugin NAME as key/value strings (numbers and booleans are\n"
                "turned into text). The plugin checks its own keys when it is loaded.\n"
                "\n"
                "```\n"
                "plugins = {\n"
                "        shell = { shell = \"/bin/sh\"; };\n"
                "};\n"
                "```\n"
                "\n"
                "## Cross-field checks\n"
                "\n"
                "After every value is read (file, then environment), these are checked:\n"
                "\n");
        for (size_t i = 0; i < tb_config_checks_cnt; i++)
                fprintf(fp, "- %s\n", tb_config_checks[i]);
}
