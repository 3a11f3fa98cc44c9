/**
 * @file cli/common.c
 * @brief Helpers shared by the CLI command groups (declared in cli.h).
 */
#include "cli.h"

#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tb_cli_fail(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("taskbus: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

bool tb_cli_wants_help(int argc, char **argv) {
        for (int i = 1; i < argc; i++)
                if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
                        return true;
        return false;
}

bool tb_cli_group_usage(int argc, char **argv, void (*usage)(FILE *fp), int *rc) {
        if (argc < 2) {
                usage(stderr);
                *rc = 2;
                return true;
        }
        if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
                usage(stdout);
                *rc = 0;
                return true;
        }
        return false;
}

tb_config_t *tb_cli_config(int *argc, char **argv) {
        const char *path = getenv("TASKBUS_CONFIG");
        for (int i = 1; i < *argc; i++) {
                if (!strcmp(argv[i], "--config") && i + 1 < *argc) {
                        path = argv[i + 1];
                        memmove(&argv[i], &argv[i + 2], sizeof(char *) * (size_t)(*argc - i - 1));
                        *argc -= 2;
                        break;
                }
        }
        tb_config_t *conf = NULL;
        char err[2048];
        if (tb_config_load(path && *path ? path : NULL, &conf, err, sizeof(err)) != TB_OK) {
                tb_cli_fail("%s", err);
                return NULL;
        }
        tb_log_set_level((tb_log_level_t)tb_log_level_parse(conf->log_level));
        return conf;
}

void tb_cli_print_json(const json_t *j) {
        char *s = json_dumps(j, JSON_INDENT(2));
        if (s)
                puts(s);
        free(s);
}

void tb_cli_actor(char *buf, size_t size) {
        char user[64] = "", host[256] = "";
        const char *sudo = getenv("SUDO_USER");
        if (sudo && *sudo) {
                snprintf(user, sizeof(user), "%s", sudo);
        } else {
                struct passwd *pw = getpwuid(geteuid());
                if (pw && pw->pw_name)
                        snprintf(user, sizeof(user), "%s", pw->pw_name);
                else
                        snprintf(user, sizeof(user), "uid%u", (unsigned)geteuid());
        }
        if (gethostname(host, sizeof(host)) != 0 || !*host)
                snprintf(host, sizeof(host), "unknown-host");
        host[sizeof(host) - 1] = '\0';
        snprintf(buf, size, "%s@%s", user, host);
        /* the environment is not trusted to be printable, and the actor goes
         * into JSON, Avro and SQL text: printable ASCII only */
        for (char *p = buf; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                        *p = '?';
}
