/**
 * @file roles.c
 * @brief The registry of roles built into taskbusd, in start order: the
 *        stores of state (projector) before their readers, the api last so
 *        that it only accepts requests once the rest is up.
 */
#include "daemon.h"

#include <string.h>

extern const tb_role_t tb_role_projector;
extern const tb_role_t tb_role_commands;
extern const tb_role_t tb_role_scheduler;
extern const tb_role_t tb_role_executor;
extern const tb_role_t tb_role_archiver;
extern const tb_role_t tb_role_notifier;
extern const tb_role_t tb_role_api;

const tb_role_t *const tb_roles[] = {
        &tb_role_projector,
        &tb_role_commands,
        &tb_role_scheduler,
        &tb_role_executor,
        &tb_role_archiver,
        &tb_role_notifier,
        &tb_role_api,
        NULL,
};

const tb_role_t *tb_role_find(const char *name) {
        for (size_t i = 0; tb_roles[i]; i++)
                if (!strcmp(tb_roles[i]->name, name))
                        return tb_roles[i];
        return NULL;
}
