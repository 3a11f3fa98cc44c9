/**
 * @file main_taskbusd.c
 * @brief taskbusd: one binary, any subset of roles per process.
 *
 *   taskbusd [--config FILE] [--roles api,commands,...]   run (all roles by default;
 *                                      TASKBUS_ROLES when --roles is not given)
 *   taskbusd --init [--config FILE]    apply migrations and create topics, then exit
 *   taskbusd --check-config FILE       validate a config file, exit non-zero with the message
 *   taskbusd --config-doc              print docs/configuration.md
 *
 * SIGTERM / SIGINT stop the roles in reverse order and exit 0.
 */
#include "bus/bus.h"
#include "config/config.h"
#include "daemon.h"
#include "serde/serde.h"
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *fp) {
        fprintf(fp,
                "usage: taskbusd [--config FILE] [--roles ROLE,...]\n"
                "       taskbusd --init [--config FILE]\n"
                "       taskbusd --check-config FILE\n"
                "       taskbusd --config-doc\n"
                "\n"
                "Runs the taskbus roles in this process: those of --roles, else of\n"
                "$TASKBUS_ROLES (same syntax), else all of them.\n"
                "Roles built in:");
        for (size_t i = 0; tb_roles[i]; i++)
                fprintf(fp, "\n  %-10s %s", tb_roles[i]->name, tb_roles[i]->description);
        fprintf(fp, "\n\nThe config file defaults to $TASKBUS_CONFIG, else built-in defaults.\n");
}

/* Split "a,b,c" into the role list, kept in the registry's start order
 * whatever order the user wrote (the projector must start before the api...);
 * errors name the unknown role. */
static int parse_roles(const char *what, const char *list, const tb_role_t **out,
                       size_t *cnt) {
        bool chosen[64] = {false};
        char *copy = strdup(list), *save = NULL;
        *cnt = 0;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                size_t i = 0;
                while (tb_roles[i] && strcmp(tb_roles[i]->name, tok))
                        i++;
                if (!tb_roles[i]) {
                        fprintf(stderr, "taskbusd: %s: unknown role '%s'; built-in roles:", what,
                                tok);
                        for (size_t j = 0; tb_roles[j]; j++)
                                fprintf(stderr, " %s", tb_roles[j]->name);
                        fprintf(stderr, "\n");
                        free(copy);
                        return -1;
                }
                chosen[i] = true;
        }
        free(copy);
        for (size_t i = 0; tb_roles[i] && i < TB_ARRAY_LEN(chosen); i++)
                if (chosen[i])
                        out[(*cnt)++] = tb_roles[i];
        if (*cnt == 0) {
                fprintf(stderr, "taskbusd: %s: empty role list\n", what);
                return -1;
        }
        return 0;
}

static int run_init(tb_ctx_t *ctx) {
        char err[1024];
        PGconn *conn = tb_store_acquire(ctx->store);
        int applied = 0;
        if (!conn || tb_store_migrate(conn, &applied, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: migrations: %s\n", conn ? err : "no connection");
                if (conn)
                        tb_store_release(ctx->store, conn);
                return 1;
        }
        tb_store_release(ctx->store, conn);
        printf("migrations: %d applied\n", applied);
        if (tb_bus_topics_ensure(ctx->conf, 60000, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: topics: %s\n", err);
                return 1;
        }
        printf("topics: ensured\n");
        return 0;
}

/* Whether every byte of \p s is one Kafka ids and group members take. */
static bool tb_daemon_node_chars_ok(const char *s) {
        if (!*s || strlen(s) > 200)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
                        return false;
        return true;
}

/*
 * Name this process (ctx->instance) so that the next start of the same
 * configuration and roles on this host is the same consumer-group member and
 * the same transactional id: a restart takes its partitions back at once, and
 * fences what the previous run left open. The name is held by an abstract
 * unix socket while the process lives (gone at exit, even on SIGKILL): a
 * second process that derives the same name takes HOST-PID instead, one that
 * was given it explicitly (node, TASKBUS_NODE) is refused.
 */
static tb_err_t tb_daemon_node(tb_ctx_t *ctx, const tb_role_t **roles, size_t role_cnt,
                               int *fd_out, char *errstr, size_t errstr_size) {
        const tb_config_t *c = ctx->conf;
        bool explicit_name = c->node && *c->node;
        char name[sizeof(ctx->instance)];
        if (explicit_name) {
                if (!tb_daemon_node_chars_ok(c->node))
                        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                         "node '%.64s': use 1 to 200 letters, digits, '.', "
                                         "'_' or '-'", c->node);
                snprintf(name, sizeof(name), "%s", c->node);
        } else {
                char cfg[PATH_MAX];
                if (!c->path || !realpath(c->path, cfg))
                        snprintf(cfg, sizeof(cfg), "%s", c->path ? c->path : "");
                uint64_t h = 1469598103934665603ull; /* FNV-1a */
                const char *parts[] = {cfg, c->region, c->api_listen, c->topic_prefix};
                for (size_t i = 0; i < TB_ARRAY_LEN(parts) + role_cnt; i++) {
                        const char *p = i < TB_ARRAY_LEN(parts) ? parts[i]
                                                                 : roles[i - TB_ARRAY_LEN(parts)]->name;
                        for (; p && *p; p++)
                                h = (h ^ (unsigned char)*p) * 1099511628211ull;
                        h = (h ^ 0xff) * 1099511628211ull;
                }
                char host[64];
                size_t n = 0;
                for (const char *p = ctx->host; *p && n + 1 < sizeof(host); p++)
                        host[n++] = isalnum((unsigned char)*p) || strchr("._-", *p) ? *p : '_';
                host[n] = '\0';
                snprintf(name, sizeof(name), "%s-%08x", n ? host : "host", (unsigned)(h >> 32));
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int len = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "taskbus-node:%s:%s",
                           c->topic_prefix, name);
        socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                   (size_t)(len < (int)sizeof(sa.sun_path) - 1
                                                    ? len
                                                    : (int)sizeof(sa.sun_path) - 2));
        bool held = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sl) == 0;
        if (!held && fd >= 0 && errno != EADDRINUSE) {
                /* no way to tell: keep the name (as before this check existed) */
                tb_warn("taskbusd", "cannot check that node %s is free: %s", name, strerror(errno));
                held = true;
        }
        if (!held) {
                if (fd >= 0)
                        close(fd);
                fd = -1;
                if (explicit_name)
                        return tb_seterr(errstr, errstr_size, TB_ERR_CONFLICT,
                                         "node '%s' is in use by another taskbusd on this host "
                                         "(topic prefix %s): give each process its own node "
                                         "(TASKBUS_NODE)", name, c->topic_prefix);
                tb_info("taskbusd", "node %s is in use by another taskbusd on this host: this one "
                        "is %s-%d (a new group member; set node to keep it across restarts)",
                        name, ctx->host, (int)getpid());
                snprintf(name, sizeof(name), "%s-%d", ctx->host, (int)getpid());
        }
        snprintf(ctx->instance, sizeof(ctx->instance), "%s", name);
        *fd_out = fd;
        return TB_OK;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"roles", required_argument, NULL, 'r'},
                {"init", no_argument, NULL, 'i'},
                {"check-config", required_argument, NULL, 'k'},
                {"config-doc", no_argument, NULL, 'd'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {NULL, 0, NULL, 0},
        };
        const char *config_path = getenv("TASKBUS_CONFIG");
        const char *roles_arg = NULL, *roles_what = "--roles";
        bool init = false;
        char err[2048];
        int c;
        while ((c = getopt_long(argc, argv, "c:r:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c': config_path = optarg; break;
                case 'r': roles_arg = optarg; break;
                case 'i': init = true; break;
                case 'k': {
                        tb_config_t *conf = NULL;
                        if (tb_config_load(optarg, &conf, err, sizeof(err)) != TB_OK) {
                                fprintf(stderr, "%s\n", err);
                                return 1;
                        }
                        printf("%s: ok\n", optarg);
                        tb_config_destroy(conf);
                        return 0;
                }
                case 'd': tb_config_write_doc(stdout); return 0;
                case 'V': printf("taskbusd %s\n", TB_VERSION); return 0;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "taskbusd: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return 2;
        }

        tb_ctx_t ctx = {0};
        if (tb_config_load(config_path && *config_path ? config_path : NULL, &ctx.conf, err,
                           sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: %s\n", err);
                return 1;
        }
        tb_log_set_level((tb_log_level_t)tb_log_level_parse(ctx.conf->log_level));
        if (tb_serde_init(err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: schemas: %s\n", err);
                return 1;
        }

        const tb_role_t *roles[16];
        size_t role_cnt = 0;
        if (!roles_arg && getenv("TASKBUS_ROLES") && *getenv("TASKBUS_ROLES")) {
                roles_arg = getenv("TASKBUS_ROLES");
                roles_what = "TASKBUS_ROLES";
        }
        if (roles_arg) {
                if (parse_roles(roles_what, roles_arg, roles, &role_cnt)) {
                        tb_config_destroy(ctx.conf);
                        return 2;
                }
        } else {
                for (size_t i = 0; tb_roles[i] && role_cnt < TB_ARRAY_LEN(roles); i++)
                        roles[role_cnt++] = tb_roles[i];
        }

        gethostname(ctx.host, sizeof(ctx.host) - 1);
        int node_fd = -1;
        if (tb_daemon_node(&ctx, roles, role_cnt, &node_fd, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: %s\n", err);
                tb_config_destroy(ctx.conf);
                return 2;
        }

        /* Signals are taken synchronously by the main thread only: block them
         * before any role starts a thread so every thread inherits the mask. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        int rc = 0;
        if (tb_store_open(ctx.conf, &ctx.store, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: postgres: %s\n", err);
                tb_config_destroy(ctx.conf);
                return 1;
        }
        if (init) {
                rc = run_init(&ctx);
                goto out;
        }
        /* a wrong SASL password or CA stops here, with the reason, before any role */
        if (tb_bus_check_access(ctx.conf, 15000, err, sizeof(err)) != TB_OK) {
                fprintf(stderr, "taskbusd: %s\n", err);
                rc = 1;
                goto out;
        }

        void *states[16] = {0};
        size_t started = 0;
        for (; started < role_cnt; started++) {
                const tb_role_t *r = roles[started];
                if (r->start(&ctx, &states[started], err, sizeof(err)) != TB_OK) {
                        tb_error("taskbusd", "role %s failed to start: %s", r->name, err);
                        rc = 1;
                        break;
                }
                tb_info("taskbusd", "role %s started", r->name);
        }
        if (rc == 0) {
                tb_info("taskbusd", "running (%s, region %s, pid %d)", ctx.instance,
                        ctx.conf->region, (int)getpid());
                int sig = 0;
                sigwait(&set, &sig);
                tb_info("taskbusd", "%s received: stopping", strsignal(sig));
        }
        atomic_store(&ctx.stopping, true);
        while (started > 0) {
                started--;
                roles[started]->stop(states[started]);
                tb_info("taskbusd", "role %s stopped", roles[started]->name);
        }
out:
        tb_store_destroy(ctx.store);
        if (node_fd >= 0)
                close(node_fd);
        tb_config_destroy(ctx.conf);
        return rc;
}
