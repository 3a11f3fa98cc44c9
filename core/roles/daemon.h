/**
 * @file daemon.h
 * @brief taskbusd's process model: one context shared by the roles running in
 *        this process, and the role descriptor each role file exports.
 *
 * A role (api, commands, projector, scheduler, executor, archiver, notifier) starts its
 * own threads in start() and returns; stop() is called once, from the main
 * thread, after tb_ctx_t.stopping was set (SIGTERM/SIGINT), and must join
 * them. Roles are stopped in the reverse order of their start.
 */
#ifndef TB_DAEMON_H
#define TB_DAEMON_H

#include "tb.h"
#include "config/config.h"
#include "store/store.h"
#include <stdatomic.h>

/** What the roles of one process share. Owned by main(). */
typedef struct tb_ctx {
        tb_config_t *conf;      /**< loaded configuration (read-only) */
        tb_store_t *store;      /**< PostgreSQL pool */
        atomic_bool stopping;   /**< set on SIGTERM/SIGINT */
        char host[256];         /**< this machine's host name */
        char instance[300];     /**< unique per process: host-pid */
} tb_ctx_t;

/** A role descriptor. */
typedef struct tb_role {
        const char *name;
        const char *description;
        /** Start the role's threads; *state is the role's own. */
        tb_err_t (*start)(tb_ctx_t *ctx, void **state, char *errstr, size_t errstr_size);
        /** Stop and join; free the state. */
        void (*stop)(void *state);
} tb_role_t;

/** NULL-terminated list of the roles built into this binary, in start order. */
extern const tb_role_t *const tb_roles[];

/** @returns the role called \p name, or NULL. */
const tb_role_t *tb_role_find(const char *name);

#endif
