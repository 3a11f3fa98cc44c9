/**
 * @file api/deps.c
 * @brief Tasks that wait for others in the REST API (docs/scheduling.md
 *        "Dependencies"; api/deps.h). The graph is read from the projection
 *        (tasks.spec's after), so two concurrent writes that together close
 *        a cycle can both pass: such a cycle never loops, since each task
 *        runs at most once per window and a cycle's tasks wait for each
 *        other forever (documented).
 */
#include "api/deps.h"
#include "api/util.h"
#include "store/store.h"
#include "store/tasks.h"
#include "task/after.h"

#include <stdlib.h>
#include <string.h>

/* The graph read for a check: id -> {"after": [...], "group": "..."}. */
typedef struct tb_api_deps_graph {
        json_t *nodes;
        const tb_principal_t *p;
} tb_api_deps_graph_t;

static const json_t *tb_api_deps_lookup(void *ud, const char *id) {
        tb_api_deps_graph_t *g = ud;
        return json_object_get(json_object_get(g->nodes, id), "after");
}

static bool tb_api_deps_shown(void *ud, const char *id) {
        tb_api_deps_graph_t *g = ud;
        const char *group = json_string_value(json_object_get(json_object_get(g->nodes, id),
                                                              "group"));
        return group && tb_principal_in_group(g->p, group);
}

bool tb_api_deps_check(tb_api_t *api, const tb_principal_t *p, const char *id,
                       const json_t *norm, tb_http_resp_t *resp) {
        const json_t *after = json_object_get(norm, "after");
        if (!json_array_size(after))
                return true;
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return false;
        char err[512];
        char *ids = tb_task_after_ids_literal(after), *groups = tb_api_tasks_groups_literal(p);
        PGresult *r = NULL;
        tb_api_deps_graph_t g = {json_object(), p};
        bool ok = false;
        tb_err_t e = ids && groups ? tb_store_tasks_visible_ids(c, ids, groups, &r, err, sizeof(err))
                                   : tb_seterr(err, sizeof(err), TB_ERR_NOMEM, "out of memory");
        if (e)
                goto db;
        size_t i;
        json_t *en;
        json_array_foreach(after, i, en) {
                const char *pid = json_string_value(json_object_get(en, "task"));
                bool found = false;
                for (int k = 0; k < PQntuples(r) && !found; k++)
                        found = !strcmp(PQgetvalue(r, k, 0), pid);
                if (!found && strcmp(pid, id)) {
                        char f[64];
                        tb_snprintf(f, sizeof(f), "after[%zu].task", i);
                        tb_http_error(resp, 400, "invalid_argument", f,
                                      "%s: no task '%s' in your security groups: a task waits "
                                      "only for tasks you can see",
                                      f, pid);
                        goto done;
                }
        }
        PQclear(r);
        r = NULL;
        if ((e = tb_store_tasks_after_graph(c, &r, err, sizeof(err))))
                goto db;
        for (int k = 0; k < PQntuples(r); k++) {
                json_t *a = json_loads(PQgetvalue(r, k, 1), 0, NULL);
                json_object_set_new(g.nodes, PQgetvalue(r, k, 0),
                                    json_pack("{s:o?, s:s}", "after", a, "group",
                                              PQgetvalue(r, k, 2)));
        }
        /* the task as it will be, not as the projection holds it */
        json_object_set_new(g.nodes, id,
                            json_pack("{s:O, s:s}", "after", after, "group",
                                      json_string_value(json_object_get(norm,
                                                                        "security_group"))
                                              ?: ""));
        tb_task_err_t te;
        memset(&te, 0, sizeof(te));
        if (tb_task_after_cycle(id, after, tb_api_deps_lookup, tb_api_deps_shown, &g, &te)) {
                tb_http_error(resp, 400, "invalid_argument", te.field, "%s", te.message);
                goto done;
        }
        ok = true;
        goto done;
db:
        tb_api_db_error(resp, err);
done:
        PQclear(r);
        tb_store_release(api->store, c);
        json_decref(g.nodes);
        free(ids);
        free(groups);
        return ok;
}

bool tb_api_deps_delete_check(tb_api_t *api, const tb_principal_t *p, const char *id,
                              tb_http_resp_t *resp) {
        PGconn *c = tb_api_conn(api, resp);
        if (!c)
                return false;
        char err[512];
        PGresult *r = NULL;
        tb_err_t e = tb_store_tasks_children(c, id, 100, &r, err, sizeof(err));
        tb_store_release(api->store, c);
        if (e) {
                tb_api_db_error(resp, err);
                return false;
        }
        int n = PQntuples(r);
        if (!n) {
                PQclear(r);
                return true;
        }
        char names[700] = "";
        size_t len = 0;
        int shown = 0, hidden = 0;
        for (int k = 0; k < n; k++) {
                if (!tb_principal_in_group(p, PQgetvalue(r, k, 1))) {
                        hidden++;
                } else if (shown++ < 5 && len < sizeof(names)) {
                        len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s",
                                                len ? ", " : "", PQgetvalue(r, k, 0));
                }
        }
        PQclear(r);
        char more[160] = "";
        if (shown > 5)
                tb_snprintf(more, sizeof(more), " and %d more", shown - 5);
        if (hidden)
                tb_snprintf(more + strlen(more), sizeof(more) - strlen(more),
                            "%s%d task%s of groups you are not in", shown ? " and " : "",
                            hidden, hidden == 1 ? "" : "s");
        tb_http_error(resp, 409, "conflict", "id",
                      "task %s: %s%s wait%s for it (after); remove it from their after "
                      "first, or delete them",
                      id, names, more, n == 1 ? "s" : "");
        return false;
}

tb_err_t tb_api_deps_annotate(PGconn *c, const tb_principal_t *p, json_t *t, char *err,
                              size_t errsz) {
        const char *id = json_string_value(json_object_get(t, "id"));
        const json_t *after = json_object_get(t, "after");
        json_object_set_new(t, "parents", after ? json_deep_copy(after) : json_array());
        PGresult *r = NULL;
        tb_err_t e = tb_store_tasks_children(c, id ? id : "", 100, &r, err, errsz);
        if (e)
                return e;
        json_t *kids = json_array();
        for (int k = 0; k < PQntuples(r); k++)
                if (tb_principal_in_group(p, PQgetvalue(r, k, 1)))
                        json_array_append_new(kids, json_string(PQgetvalue(r, k, 0)));
        PQclear(r);
        json_object_set_new(t, "children", kids);
        return TB_OK;
}
