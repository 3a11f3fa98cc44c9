/**
 * @file commands/engine.c
 * @brief The commands decision engine (commands/engine.h): the state map, the
 *        undo log, the per-command decision and the reply.
 */
#include "commands/engine.h"

#include "bus/bus.h"
#include "identity/ratelimit.h"
#include "identity/signing.h"
#include "units.h"
#include "replication.h"
#include "serde/serde.h"
#include "task/task.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** A string-keyed hash map of tb_cmd_task_t (chained, power-of-two size). */
typedef struct tb_cmd_map {
        tb_cmd_task_t **b;
        size_t nb;
        size_t cnt;
        json_t *live; /* security group -> live (not deleted) tasks held: the
                       * max_tasks quota's count, kept by the map functions */
        /* the deleted entries in the order they were put, and how many */
        tb_cmd_task_t *dhead, *dtail;
        size_t dcnt;
} tb_cmd_map_t;

/** Fewest buckets: the table never shrinks below it. */
#define TB_CMD_MAP_MIN_BUCKETS 1024

/** A replaced state, kept until the transaction that replaced it commits. */
typedef struct tb_cmd_undo {
        char *id;
        tb_cmd_task_t *old; /* NULL: the task did not exist */
} tb_cmd_undo_t;

struct tb_cmd_engine {
        const tb_config_t *conf;
        tb_cmd_env_t env;
        int32_t partition_cnt;
        char commands_topic[256];
        tb_ratelimit_t *rl;
        tb_cmd_map_t map;
        json_t *run_now_tat; /* group -> the run_now_rate bucket's theoretical
                              * arrival time (GCRA), monotonic µs */
        tb_cmd_undo_t *undo;
        size_t undo_cnt, undo_cap;
        /* the replay guard: signatures and (task, command id) pairs of recent
         * signed commands, a set (json object) with a FIFO ring for eviction;
         * seen_new of them were added since the last commit */
        json_t *seen;
        char **seen_ring;
        size_t seen_head, seen_cnt, seen_new;
};

static const char *const tb_cmd_executors[] = {"shell", "container", "ssh", NULL};

/* ---- state map ------------------------------------------------------------ */

static uint64_t tb_cmd_hash(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

static void tb_cmd_task_free(tb_cmd_task_t *t) {
        if (!t)
                return;
        free(t->id);
        free(t->group);
        free(t->created_by);
        if (t->task)
                json_decref(t->task);
        free(t);
}

/* Count \p t in (\p d = 1) or out of (-1) its group's live tasks. Every
 * entry entering or leaving the map passes here, so the count follows any
 * path that changes the map (decisions, rollback, rebuild, partition drops). */
static void tb_cmd_map_count(tb_cmd_map_t *m, const tb_cmd_task_t *t, int d) {
        if (!t || t->deleted || !t->group)
                return;
        if (!m->live && !(m->live = json_object()))
                return;
        json_t *n = json_object_get(m->live, t->group);
        json_int_t v = (n ? json_integer_value(n) : 0) + d;
        if (v <= 0)
                json_object_del(m->live, t->group);
        else if (n)
                json_integer_set(n, v);
        else
                json_object_set_new(m->live, t->group, json_integer(v));
}

static tb_cmd_task_t *tb_cmd_map_get(const tb_cmd_map_t *m, const char *id) {
        if (!m->nb)
                return NULL;
        for (tb_cmd_task_t *t = m->b[tb_cmd_hash(id) & (m->nb - 1)]; t; t = t->next)
                if (!strcmp(t->id, id))
                        return t;
        return NULL;
}

/* The deleted list: an entry is on it while it is in the map and deleted. */
static void tb_cmd_map_dlink(tb_cmd_map_t *m, tb_cmd_task_t *t) {
        t->dnext = NULL;
        t->dprev = m->dtail;
        if (m->dtail)
                m->dtail->dnext = t;
        else
                m->dhead = t;
        m->dtail = t;
        m->dcnt++;
}

static void tb_cmd_map_dunlink(tb_cmd_map_t *m, tb_cmd_task_t *t) {
        if (t->dprev)
                t->dprev->dnext = t->dnext;
        else
                m->dhead = t->dnext;
        if (t->dnext)
                t->dnext->dprev = t->dprev;
        else
                m->dtail = t->dprev;
        t->dprev = t->dnext = NULL;
        m->dcnt--;
}

static bool tb_cmd_map_resize(tb_cmd_map_t *m, size_t nb);

/** Detach and return the entry for \p id (NULL if none). */
static tb_cmd_task_t *tb_cmd_map_take(tb_cmd_map_t *m, const char *id) {
        if (!m->nb)
                return NULL;
        for (tb_cmd_task_t **pp = &m->b[tb_cmd_hash(id) & (m->nb - 1)]; *pp; pp = &(*pp)->next)
                if (!strcmp((*pp)->id, id)) {
                        tb_cmd_task_t *t = *pp;
                        *pp = t->next;
                        t->next = NULL;
                        m->cnt--;
                        tb_cmd_map_count(m, t, -1);
                        if (t->deleted)
                                tb_cmd_map_dunlink(m, t);
                        /* evicted deleted tasks give their buckets back too:
                         * the table follows the live tasks down (1/8 full
                         * halves it, so put and take cannot alternate sizes) */
                        if (m->nb > TB_CMD_MAP_MIN_BUCKETS && m->cnt * 8 < m->nb)
                                tb_cmd_map_resize(m, m->nb / 2);
                        return t;
                }
        return NULL;
}

static bool tb_cmd_map_grow(tb_cmd_map_t *m) {
        return tb_cmd_map_resize(m, m->nb ? m->nb * 2 : TB_CMD_MAP_MIN_BUCKETS);
}

/** Rehash into \p nb buckets (a power of two); false, unchanged, when out of memory. */
static bool tb_cmd_map_resize(tb_cmd_map_t *m, size_t nb) {
        tb_cmd_task_t **b = calloc(nb, sizeof(*b));
        if (!b)
                return false;
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t *t = m->b[i], *next;
                for (; t; t = next) {
                        next = t->next;
                        size_t k = tb_cmd_hash(t->id) & (nb - 1);
                        t->next = b[k];
                        b[k] = t;
                }
        }
        free(m->b);
        m->b = b;
        m->nb = nb;
        return true;
}

/** Insert \p t (owned by the map from now on); @returns the entry it
 *  replaced, detached (caller owns), or NULL. */
static tb_cmd_task_t *tb_cmd_map_put(tb_cmd_map_t *m, tb_cmd_task_t *t) {
        tb_cmd_task_t *old = tb_cmd_map_take(m, t->id);
        if ((m->cnt + 1) * 2 > m->nb && !tb_cmd_map_grow(m) && !m->nb) {
                /* out of memory before the first bucket: keep the old one */
                tb_cmd_task_free(t);
                return old;
        }
        size_t k = tb_cmd_hash(t->id) & (m->nb - 1);
        t->next = m->b[k];
        m->b[k] = t;
        m->cnt++;
        tb_cmd_map_count(m, t, 1);
        if (t->deleted)
                tb_cmd_map_dlink(m, t);
        return old;
}

/** Drop every task of partition \p p. */
static void tb_cmd_map_drop_partition(tb_cmd_map_t *m, int32_t p) {
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t **pp = &m->b[i];
                while (*pp) {
                        if ((*pp)->partition == p) {
                                tb_cmd_task_t *t = *pp;
                                *pp = t->next;
                                m->cnt--;
                                tb_cmd_map_count(m, t, -1);
                                if (t->deleted)
                                        tb_cmd_map_dunlink(m, t);
                                tb_cmd_task_free(t);
                        } else {
                                pp = &(*pp)->next;
                        }
                }
        }
}

static void tb_cmd_map_clear(tb_cmd_map_t *m) {
        for (size_t i = 0; i < m->nb; i++) {
                tb_cmd_task_t *t = m->b[i], *next;
                for (; t; t = next) {
                        next = t->next;
                        tb_cmd_task_free(t);
                }
        }
        free(m->b);
        json_decref(m->live);
        memset(m, 0, sizeof(*m));
}

/* ---- undo log ---------------------------------------------------------------- */

static void tb_cmd_undo_push(tb_cmd_engine_t *eng, const char *id, tb_cmd_task_t *old) {
        if (eng->undo_cnt == eng->undo_cap) {
                size_t cap = eng->undo_cap ? eng->undo_cap * 2 : 128;
                tb_cmd_undo_t *u = realloc(eng->undo, cap * sizeof(*u));
                if (!u)
                        abort(); /* cannot keep the state consistent without it */
                eng->undo = u;
                eng->undo_cap = cap;
        }
        eng->undo[eng->undo_cnt].id = strdup(id);
        eng->undo[eng->undo_cnt].old = old;
        eng->undo_cnt++;
}

/* The transaction committed: the replaced states are garbage. */
/* ---- replay guard ------------------------------------------------------------ */

/** @returns true if \p key was seen; else remembers it (undone by rollback). */
static bool tb_cmd_seen_check(tb_cmd_engine_t *eng, const char *key) {
        if (json_object_get(eng->seen, key))
                return true;
        if (!eng->seen_ring && !(eng->seen_ring = calloc(TB_CMD_SEEN_MAX, sizeof(char *))))
                return false; /* out of memory: no guard rather than no service */
        if (eng->seen_cnt == TB_CMD_SEEN_MAX) { /* evict the oldest */
                char *old = eng->seen_ring[eng->seen_head];
                json_object_del(eng->seen, old);
                free(old);
                eng->seen_ring[eng->seen_head] = NULL;
                eng->seen_head = (eng->seen_head + 1) % TB_CMD_SEEN_MAX;
                eng->seen_cnt--;
                if (eng->seen_new > eng->seen_cnt)
                        eng->seen_new = eng->seen_cnt;
        }
        char *k = strdup(key);
        if (!k || json_object_set_new(eng->seen, key, json_true())) {
                free(k);
                return false;
        }
        eng->seen_ring[(eng->seen_head + eng->seen_cnt) % TB_CMD_SEEN_MAX] = k;
        eng->seen_cnt++;
        eng->seen_new++;
        return false;
}

/* A batch that did not commit is decided again: forget what it added. */
static void tb_cmd_seen_rollback(tb_cmd_engine_t *eng) {
        for (; eng->seen_new > 0 && eng->seen_cnt > 0; eng->seen_new--) {
                size_t i = (eng->seen_head + eng->seen_cnt - 1) % TB_CMD_SEEN_MAX;
                json_object_del(eng->seen, eng->seen_ring[i]);
                free(eng->seen_ring[i]);
                eng->seen_ring[i] = NULL;
                eng->seen_cnt--;
        }
        eng->seen_new = 0;
}

static void tb_cmd_seen_free(tb_cmd_engine_t *eng) {
        for (size_t n = 0; n < eng->seen_cnt; n++)
                free(eng->seen_ring[(eng->seen_head + n) % TB_CMD_SEEN_MAX]);
        free(eng->seen_ring);
        json_decref(eng->seen);
}

/**
 * Authenticate a command from its record (engine.h, "authentication"): the
 * signature headers, their freshness, the signature itself (env), and that
 * the record is not one already seen. @returns the principal and, in
 * *\p signed_at, the signature's timestamp; or NULL with \p v filled.
 */
static tb_principal_t *tb_cmd_authenticate(tb_cmd_engine_t *eng, const json_t *c,
                                           const tb_cmd_cred_t *cr, int64_t *signed_at,
                                           tb_cmd_verdict_t *v) {
        char aerr[512];
        tb_sign_auth_t a;
        tb_principal_t *who = NULL;
        if (!cr || !cr->auth) {
                if (cr && cr->authorization)
                        tb_cmd_reject(v, "UNAUTHENTICATED", NULL,
                                      "bearer tokens are no longer accepted on Kafka: the "
                                      "'authorization' record header would leave your token "
                                      "readable in the topic; sign the command instead with "
                                      "the headers '" TB_SIGN_HDR_PRINCIPAL "' and '"
                                      TB_SIGN_HDR_AUTH "' (HMAC-SHA256 with your token's "
                                      "signing key: " TB_SIGN_DOC ")");
                else
                        tb_cmd_reject(v, "UNAUTHENTICATED", NULL,
                                      "missing the '" TB_SIGN_HDR_AUTH "' and '"
                                      TB_SIGN_HDR_PRINCIPAL "' record headers: sign the "
                                      "command (" TB_SIGN_DOC "); the 'authorization' header "
                                      "is no longer accepted");
                return NULL;
        }
        if (tb_sign_auth_parse(cr->auth, cr->auth_len, &a, aerr, sizeof(aerr))) {
                tb_cmd_reject(v, "UNAUTHENTICATED", NULL, "%s", aerr);
                return NULL;
        }
        int64_t now = eng->env.now_ms(eng->env.opaque), age = now - a.ts_ms;
        int64_t max_age = eng->conf->cmd_signature_max_age_ms;
        if (age > max_age || age < -max_age) {
                char ma[32];
                tb_units_duration_format(max_age, ma, sizeof(ma));
                tb_cmd_reject(v, "UNAUTHENTICATED", NULL,
                              "the signature's timestamp ts=%" PRId64 " is %" PRId64
                              " ms %s this server's clock, beyond commands.signature_max_age "
                              "(%s): sign each record when you produce it (a captured record "
                              "cannot be replayed later)",
                              a.ts_ms, age < 0 ? -age : age, age < 0 ? "ahead of" : "behind",
                              ma);
                return NULL;
        }
        tb_sign_record_t rec = {.principal = cr->principal,
                                .principal_len = cr->principal_len,
                                .auth = &a,
                                .key = cr->key,
                                .key_len = cr->key_len,
                                .value = cr->value,
                                .value_len = cr->value_len};
        tb_err_t aer = eng->env.authenticate(eng->env.opaque, &rec, &who, aerr, sizeof(aerr));
        if (aer == TB_ERR_UNAUTHENTICATED) {
                tb_cmd_reject(v, "UNAUTHENTICATED", NULL, "%s", aerr);
                return NULL;
        }
        if (aer) {
                tb_cmd_reject(v, "INTERNAL", NULL, "authentication unavailable: %s",
                              aer == TB_ERR_NOMEM ? "out of memory" : aerr);
                return NULL;
        }
        /* A replay is the same record: same signature. The (task, command id)
         * pair also catches a command re-signed under a new timestamp. */
        char key[300];
        const char *command_id = tb_cmd_jstr(c, "command_id");
        bool dup = tb_cmd_seen_check(eng, (tb_snprintf(key, sizeof(key), "s:%s", a.sig), key));
        if (!dup && *command_id && strlen(command_id) < 200 &&
            !tb_snprintf(key, sizeof(key), "c:%s\n%.*s", command_id, 64,
                         tb_cmd_jstr(c, "task_id")))
                dup = tb_cmd_seen_check(eng, key);
        if (dup) {
                tb_cmd_reject(v, "CONFLICT", "command_id",
                              "command_id: command '%s' was already received (a replayed "
                              "record); a new command needs a new command_id and signature",
                              tb_cmd_utf8_ok(command_id) ? command_id : "?");
                tb_principal_free(who);
                return NULL;
        }
        *signed_at = a.ts_ms;
        return who;
}

void tb_cmd_engine_commit(tb_cmd_engine_t *eng) {
        eng->seen_new = 0;
        for (size_t i = 0; i < eng->undo_cnt; i++) {
                free(eng->undo[i].id);
                tb_cmd_task_free(eng->undo[i].old);
        }
        eng->undo_cnt = 0;
}

void tb_cmd_engine_rollback(tb_cmd_engine_t *eng) {
        tb_cmd_seen_rollback(eng);
        while (eng->undo_cnt > 0) {
                tb_cmd_undo_t *u = &eng->undo[--eng->undo_cnt];
                tb_cmd_task_free(tb_cmd_map_take(&eng->map, u->id));
                if (u->old)
                        tb_cmd_task_free(tb_cmd_map_put(&eng->map, u->old));
                free(u->id);
        }
}

/* ---- the engine ------------------------------------------------------------- */

tb_err_t tb_cmd_engine_new(const tb_config_t *conf, const tb_cmd_env_t *env,
                           tb_cmd_engine_t **out, char *errstr, size_t errstr_size) {
        tb_err_t err;
        *out = NULL;
        if (!env->authenticate || !env->now_ms || !env->mono_us || !env->new_id)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "commands engine: every env function is required");
        if ((err = tb_serde_init(errstr, errstr_size)))
                return err;
        tb_cmd_engine_t *eng = calloc(1, sizeof(*eng));
        if (!eng)
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: out of memory");
        eng->conf = conf;
        eng->env = *env;
        eng->partition_cnt = (int32_t)conf->topic_partitions;
        tb_topic_name(conf, TB_TOPIC_COMMANDS, eng->commands_topic, sizeof(eng->commands_topic));
        eng->rl = tb_ratelimit_new(conf->api_rate, conf->api_burst);
        eng->seen = json_object();
        eng->run_now_tat = json_object();
        if (!eng->rl || !eng->seen || !eng->run_now_tat) {
                tb_ratelimit_free(eng->rl);
                json_decref(eng->seen);
                json_decref(eng->run_now_tat);
                free(eng);
                return tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "commands: rate limiter");
        }
        *out = eng;
        return TB_OK;
}

void tb_cmd_engine_destroy(tb_cmd_engine_t *eng) {
        if (!eng)
                return;
        tb_cmd_engine_commit(eng);
        free(eng->undo);
        tb_cmd_map_clear(&eng->map);
        tb_ratelimit_free(eng->rl);
        tb_cmd_seen_free(eng);
        json_decref(eng->run_now_tat);
        free(eng);
}

const tb_cmd_task_t *tb_cmd_engine_get(const tb_cmd_engine_t *eng, const char *id) {
        return tb_cmd_map_get(&eng->map, id);
}

size_t tb_cmd_engine_task_count(const tb_cmd_engine_t *eng) {
        return eng->map.cnt;
}

int64_t tb_cmd_engine_live_count(const tb_cmd_engine_t *eng, const char *group) {
        return json_integer_value(json_object_get(eng->map.live, group ? group : ""));
}

size_t tb_cmd_engine_deleted_count(const tb_cmd_engine_t *eng) {
        return eng->map.dcnt;
}

size_t tb_cmd_engine_deleted(const tb_cmd_engine_t *eng, const tb_cmd_task_t **out, size_t max) {
        size_t n = 0;
        for (const tb_cmd_task_t *t = eng->map.dhead; t && n < max; t = t->dnext)
                out[n++] = t;
        return n;
}

bool tb_cmd_engine_evict(tb_cmd_engine_t *eng, const char *id, int64_t version) {
        const tb_cmd_task_t *t = tb_cmd_map_get(&eng->map, id);
        if (eng->undo_cnt || !t || !t->deleted || t->version != version)
                return false;
        tb_cmd_task_free(tb_cmd_map_take(&eng->map, id));
        return true;
}

void tb_cmd_engine_drop_partition(tb_cmd_engine_t *eng, int32_t partition) {
        tb_cmd_map_drop_partition(&eng->map, partition);
        size_t nb = eng->map.nb;
        while (nb > TB_CMD_MAP_MIN_BUCKETS && eng->map.cnt * 8 < nb)
                nb /= 2;
        if (nb != eng->map.nb)
                tb_cmd_map_resize(&eng->map, nb);
}

/* ---- helpers ------------------------------------------------------------------ */

bool tb_cmd_utf8_ok(const char *s) {
        json_t *j = json_string(s);
        if (!j)
                return false;
        json_decref(j);
        return true;
}

const char *tb_cmd_jstr(const json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

/* ---- rebuilding: events applied to the state ---------------------------------- */

/** Put the state (\p task owned, may be NULL; \p group NULL: the one held)
 *  unless what is held is newer by (epoch, version). */
static void tb_cmd_state_put(tb_cmd_engine_t *eng, int32_t partition, const char *id,
                             int64_t version, int64_t epoch, bool deleted, json_t *task,
                             const char *group, int64_t created_at, const char *created_by) {
        tb_cmd_task_t *cur = tb_cmd_map_get(&eng->map, id);
        if (cur && !tb_repl_newer(epoch, version, cur->epoch, cur->version)) {
                /* our own event back through the follower: every older event
                 * of the task on this topic was read before it */
                if (cur->epoch == epoch && cur->version == version)
                        cur->logged = true;
                if (task)
                        json_decref(task);
                return; /* known already, or superseded by a failover's higher epoch */
        }
        tb_cmd_task_t *t = calloc(1, sizeof(*t));
        if (!t) {
                if (task)
                        json_decref(task);
                return;
        }
        t->id = strdup(id);
        t->partition = partition;
        t->version = version;
        t->deleted = deleted;
        t->task = task;
        t->group = strdup(group ? group : cur ? cur->group : "");
        t->created_at = created_at;
        t->created_by = strdup(created_by);
        t->epoch = epoch;
        t->logged = true;
        tb_cmd_task_free(tb_cmd_map_put(&eng->map, t));
}

/* ---- quotas ------------------------------------------------------------------ */

/**
 * The group quotas of a command that is otherwise accepted (engine.h): a
 * task entering \p group (CREATE, or UPDATE from another group) against
 * max_tasks, a RUN_NOW against the group's run_now_rate. @returns true if
 * \p v was filled (refused).
 */
static bool tb_cmd_quota_refused(tb_cmd_engine_t *eng, const char *type, const char *group,
                                 const tb_cmd_task_t *cur, tb_cmd_verdict_t *v) {
        bool run_now = !strcmp(type, "RUN_NOW");
        bool enters = group && (!strcmp(type, "CREATE") ||
                                (!strcmp(type, "UPDATE") && cur && strcmp(cur->group, group)));
        if (!eng->env.group_quota || (!run_now && !enters))
                return false;
        if (run_now)
                group = cur->group;
        char qerr[512];
        tb_cmd_quota_t q = {.max_tasks = -1, .run_now_rate = -1};
        if (eng->env.group_quota(eng->env.opaque, group, &q, qerr, sizeof(qerr)) != TB_OK) {
                tb_cmd_reject(v, "INTERNAL", NULL, "the quotas of security group '%s' cannot "
                              "be read: %s", group, qerr);
                return true;
        }
        if (enters && q.max_tasks >= 0) {
                int64_t live = tb_cmd_engine_live_count(eng, group) + q.other_live;
                if (live >= q.max_tasks) {
                        tb_cmd_reject(v, "FORBIDDEN", "max_tasks",
                                      "max_tasks: security group '%s' has %" PRId64 " live "
                                      "tasks and its quota max_tasks is %" PRId64 ": delete "
                                      "tasks of the group, or ask an administrator to raise "
                                      "it (taskbus admin group set %s --max-tasks N)",
                                      group, live, q.max_tasks, group);
                        return true;
                }
        }
        if (!run_now || !(q.run_now_rate > 0))
                return false;
        /* GCRA: one RUN_NOW per 1/rate s, a burst of one second's worth (>= 1) */
        double per_us = 1e6 / q.run_now_rate;
        double burst = q.run_now_rate >= 1 ? (double)(int64_t)q.run_now_rate : 1;
        int64_t now = eng->env.mono_us(eng->env.opaque);
        json_t *j = json_object_get(eng->run_now_tat, group);
        int64_t tat = j ? (int64_t)json_integer_value(j) : now;
        if (tat < now)
                tat = now;
        int64_t wait_us = tat - now - (int64_t)((burst - 1) * per_us);
        if (wait_us > 0) {
                int64_t retry_ms = (wait_us + 999) / 1000;
                tb_cmd_reject(v, "THROTTLED", "run_now_rate",
                              "run_now_rate: security group '%s' may send %.6g RUN_NOW "
                              "commands/s (its quota run_now_rate; taskbus admin group show "
                              "%s): retry after %" PRId64 " ms",
                              group, q.run_now_rate, group, retry_ms);
                return true;
        }
        json_object_set_new(eng->run_now_tat, group, json_integer(tat + (int64_t)per_us));
        return false;
}

void tb_cmd_engine_apply_event(tb_cmd_engine_t *eng, int32_t partition, const json_t *ev) {
        const char *id = tb_cmd_jstr(ev, "task_id");
        if (!*id)
                return;
        const json_t *spec = json_object_get(ev, "task");
        bool deleted = !strcmp(tb_cmd_jstr(ev, "type"), "DELETED") || !json_is_object(spec);
        tb_cmd_state_put(eng, partition, id, json_integer_value(json_object_get(ev, "version")),
                         json_integer_value(json_object_get(ev, "epoch")), deleted,
                         json_is_object(spec) ? tb_task_from_spec(spec) : NULL,
                         json_is_object(spec) ? tb_cmd_jstr(spec, "security_group") : NULL,
                         json_integer_value(json_object_get(ev, "created_at")),
                         tb_cmd_jstr(ev, "created_by"));
}

void tb_cmd_engine_load_task(tb_cmd_engine_t *eng, int32_t partition, const char *id,
                             int64_t version, int64_t epoch, json_t *task, int64_t created_at,
                             const char *created_by) {
        tb_cmd_state_put(eng, partition, id, version, epoch, false, task,
                         tb_cmd_jstr(task, "security_group"), created_at, created_by);
}

/* ---- one command ------------------------------------------------------------ */

void tb_cmd_reject(tb_cmd_verdict_t *v, const char *reason, const char *field,
                   const char *fmt, ...) {
        va_list ap;
        v->reason = reason;
        tb_snprintf(v->field, sizeof(v->field), "%s", field ? field : "");
        va_start(ap, fmt);
        vsnprintf(v->message, sizeof(v->message), fmt, ap);
        va_end(ap);
}

void tb_cmd_verdict_clear(tb_cmd_verdict_t *v) {
        tb_buf_free(&v->event);
        memset(v, 0, sizeof(*v));
}

static const char *tb_cmd_event_type(const char *cmd_type) {
        static const char *const map[][2] = {
                {"CREATE", "CREATED"}, {"UPDATE", "UPDATED"}, {"DELETE", "DELETED"},
                {"PAUSE", "PAUSED"},   {"RESUME", "RESUMED"}, {"RUN_NOW", "RUN_REQUESTED"},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(map); i++)
                if (!strcmp(map[i][0], cmd_type))
                        return map[i][1];
        return NULL;
}

/** Parse and validate the command's task JSON, whose security group must be
 *  one of the caller's; fills \p v on failure. */
static json_t *tb_cmd_validate(tb_cmd_engine_t *eng, const json_t *c, const tb_principal_t *who,
                               int64_t issued, tb_cmd_verdict_t *v) {
        const json_t *tj = json_object_get(c, "task");
        const char *text = json_string_value(tj);
        size_t tlen = json_string_length(tj);
        if (!text) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task",
                              "task: required for %s (the task as JSON, in the REST API's shape)",
                              tb_cmd_jstr(c, "type"));
                return NULL;
        }
        tb_task_err_t terr;
        memset(&terr, 0, sizeof(terr));
        if (tb_task_json_check(text, tlen, "task", &terr) != TB_OK) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", terr.field, "%s", terr.message);
                return NULL;
        }
        const char *nul = memchr(text, '\0', tlen);
        if (nul) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task",
                              "task: a NUL byte at byte %zu: send the task as JSON text, "
                              "which has none",
                              (size_t)(nul - text));
                return NULL;
        }
        json_error_t jerr;
        /* \u0000 is let through the parser so that the validator names the
         * field that holds it */
        json_t *in = json_loadb(text, tlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!in) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task",
                              "task: not valid JSON (line %d, column %d: %s)", jerr.line,
                              jerr.column, jerr.text);
                return NULL;
        }
        const tb_config_t *conf = eng->conf;
        const char *group = json_string_value(json_object_get(in, "security_group"));
        const tb_group_conf_t *pol = tb_config_group_policy(conf, group ? group : "");
        tb_task_vctx_t vctx = {
                .now_ms = issued,
                .user_id = who->user_id,
                .default_region = conf->region,
                .log_retention_default_ms = conf->log_retention_default_ms,
                .log_retention_max_ms = pol ? pol->log_retention_max_ms : 0,
                .executors = tb_cmd_executors,
        };
        json_t *out = NULL;
        tb_err_t err = tb_task_validate(in, &vctx, &out, &terr);
        json_decref(in);
        if (err == TB_ERR_FORBIDDEN) {
                tb_cmd_reject(v, "FORBIDDEN", terr.field, "%s", terr.message);
                return NULL;
        }
        if (err || !out) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", terr.field, "%s",
                              terr.message[0] ? terr.message : "task: invalid");
                if (out)
                        json_decref(out);
                return NULL;
        }
        group = tb_cmd_jstr(out, "security_group");
        if (!tb_principal_in_group(who, group)) {
                tb_cmd_reject(v, "FORBIDDEN", "security_group",
                              "security_group: user '%s' is not a member of group '%s'",
                              who->user_id, group);
                json_decref(out);
                return NULL;
        }
        return out;
}

/**
 * Refuse (FORBIDDEN, field home_region) a write for a task homed in another
 * region: only the home region writes a task, so that its events have one
 * writer. @returns true if \p v was filled.
 */
static bool tb_cmd_not_home(tb_cmd_engine_t *eng, const char *task_id, const char *home,
                            tb_cmd_verdict_t *v) {
        const tb_config_t *conf = eng->conf;
        if (!home || !*home || !strcmp(home, conf->region))
                return false;
        const char *api = tb_repl_region_api(conf, home);
        tb_cmd_reject(v, "FORBIDDEN", "home_region",
                      "home_region: task '%s' is homed in region '%s' and this is region '%s': "
                      "send writes for it to region %s%s%s (a region fails over with `taskbus "
                      "admin region failover`)",
                      task_id, home, conf->region, home, api ? " at " : "", api ? api : "");
        return true;
}

/**
 * The command's own fields, checked as every interface checks them before
 * anything is built from them (task/task.h): the task id with the REST
 * rules, command_id and correlation_id bounded printable ASCII, and its
 * numbers within what a time or a version can be. @returns false with \p v
 * filled (field named) when one is not.
 */
static bool tb_cmd_check_command(const json_t *c, tb_cmd_verdict_t *v) {
        static const char *const refs[] = {"command_id", "correlation_id"};
        char err[400];
        const json_t *j = json_object_get(c, "task_id");
        if (tb_task_id_check("task_id", json_string_value(j), json_string_length(j), err,
                             sizeof(err)) != TB_OK) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task_id", "%s", err);
                return false;
        }
        for (size_t i = 0; i < TB_ARRAY_LEN(refs); i++) {
                j = json_object_get(c, refs[i]);
                if (tb_task_ref_check(refs[i], json_string_value(j), json_string_length(j), true,
                                      err, sizeof(err)) != TB_OK) {
                        tb_cmd_reject(v, "INVALID_ARGUMENT", refs[i], "%s", err);
                        return false;
                }
        }
        j = json_object_get(c, "expected_version");
        if (json_is_integer(j) && json_integer_value(j) < 0) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "expected_version",
                              "expected_version: %" JSON_INTEGER_FORMAT
                              " is negative: give null, or the version you read (0: the task "
                              "must not exist yet)",
                              json_integer_value(j));
                return false;
        }
        j = json_object_get(c, "requested_at");
        if (json_is_integer(j) &&
            (json_integer_value(j) < 0 || json_integer_value(j) > TB_SCHEDULE_MAX_MS)) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "requested_at",
                              "requested_at: %" JSON_INTEGER_FORMAT
                              " is not a time: milliseconds since 1970-01-01T00:00:00Z up to "
                              "9999-12-31T23:59:59Z (the producer's clock)",
                              json_integer_value(j));
                return false;
        }
        return true;
}

void tb_cmd_engine_undecodable(tb_cmd_verdict_t *v, const char *derr) {
        /* serde names where it broke: "TaskCommand.task_id: string is not
         * valid UTF-8 (at byte 9 of the message)" */
        static const char prefix[] = "TaskCommand.";
        char field[64] = "";
        if (!strncmp(derr, prefix, sizeof(prefix) - 1)) {
                const char *f = derr + sizeof(prefix) - 1;
                size_t n = strcspn(f, ".[: ");
                if (n < sizeof(field))
                        tb_snprintf(field, sizeof(field), "%.*s", (int)n, f);
        } else if (strstr(derr, "fingerprint")) {
                tb_snprintf(field, sizeof(field), "fingerprint");
        }
        tb_cmd_reject(v, "INVALID_ARGUMENT", field[0] ? field : NULL,
                      "the record is not a TaskCommand in Avro single-object encoding: %s; "
                      "encode it with schemas/TaskCommand.avsc (docs/kafka-interface.md)",
                      derr);
}

void tb_cmd_engine_decide(tb_cmd_engine_t *eng, const json_t *c, const tb_cmd_cred_t *cred,
                          int32_t partition, tb_cmd_verdict_t *v) {
        const char *type = tb_cmd_jstr(c, "type");
        const char *task_id = tb_cmd_jstr(c, "task_id");
        const char *ev_type = tb_cmd_event_type(type);
        tb_principal_t *who = NULL;
        json_t *task = NULL, *ev = NULL, *run_params = NULL;

        /* authenticate */
        int64_t signed_at = 0;
        if (!(who = tb_cmd_authenticate(eng, c, cred, &signed_at, v)))
                goto out;
        /* When the command was issued: its signature's time (the api signs as
         * it accepts a request), never later than now. A command delayed on its
         * way (a broker failover) is judged, and a new task created, as of then:
         * "in the past" means past when it was sent, and a schedule anchored at
         * creation does not lose the fires of the delay. commands.signature_max_age
         * bounds how far back that can be. */
        int64_t issued = eng->env.now_ms(eng->env.opaque);
        if (signed_at > 0 && signed_at < issued)
                issued = signed_at;
        /* rate limit */
        int64_t retry_ms = 0;
        if (!tb_ratelimit_take(eng->rl, who->user_id, eng->env.mono_us(eng->env.opaque),
                               &retry_ms)) {
                tb_cmd_reject(v, "THROTTLED", NULL,
                              "rate limit of %.3g commands/s (burst %" PRId64
                              ") exceeded for user '%s': retry after %" PRId64 " ms",
                              eng->conf->api_rate, eng->conf->api_burst,
                              who->user_id, retry_ms);
                goto out;
        }
        if (!ev_type) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "type", "type: unknown command type '%s'",
                              type);
                goto out;
        }
        if (!tb_cmd_check_command(c, v))
                goto out;
        /* The state of a task lives with the partition of its id: a record
         * placed elsewhere would be judged against the wrong state. */
        int32_t home = tb_bus_partition_for(task_id, strlen(task_id), eng->partition_cnt);
        if (home != partition) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "task_id",
                              "task_id: the record is on partition %" PRId32
                              " of %s but task '%s' belongs to partition %" PRId32
                              ": key task-commands records by the task id and use the "
                              "murmur2 partitioner (Java client default)",
                              partition, eng->commands_topic, task_id, home);
                goto out;
        }

        /* params are the values of a RUN_NOW's parameters: any other
         * command that carries some is refused rather than ignored */
        if (strcmp(type, "RUN_NOW") && json_object_size(json_object_get(c, "params"))) {
                tb_cmd_reject(v, "INVALID_ARGUMENT", "params",
                              "params: only a RUN_NOW takes parameter values; send %s with "
                              "params {}",
                              type);
                goto out;
        }
        tb_cmd_task_t *cur = tb_cmd_map_get(&eng->map, task_id);
        bool create = !strcmp(type, "CREATE");
        bool visible = cur && !cur->deleted && tb_principal_in_group(who, cur->group);
        const json_t *expv = json_object_get(c, "expected_version");

        if (create) {
                task = tb_cmd_validate(eng, c, who, issued, v);
                if (!task)
                        goto out;
                if (tb_cmd_not_home(eng, task_id, tb_cmd_jstr(task, "home_region"), v))
                        goto out;
                bool used = cur != NULL;
                char uerr[512], ugroup[TB_TASK_GROUP_MAX + 1] = "";
                if (!cur && eng->env.id_used &&
                    eng->env.id_used(eng->env.opaque, task_id, &used, ugroup, sizeof(ugroup),
                                     uerr, sizeof(uerr))) {
                        tb_cmd_reject(v, "INTERNAL", NULL,
                                      "cannot tell whether task id '%s' was used before: %s; "
                                      "retry",
                                      task_id, uerr);
                        goto out;
                }
                if (used) {
                        /* Ids are one namespace (the Kafka key), so a taken id
                         * is refused whoever holds it; only a member of the
                         * task's group learns that it is deleted: anyone else
                         * gets the answer of a live task, whatever the task's
                         * group, state or version (docs/kafka-interface.md).
                         * An id used but not held was deleted (and evicted). */
                        bool own = tb_principal_in_group(who, cur ? cur->group : ugroup);
                        tb_cmd_reject(v, "CONFLICT", "task_id",
                                      "task_id: a task with id '%s' already exists%s; choose "
                                      "a new id",
                                      task_id, (!cur || cur->deleted) && own ? " (deleted)" : "");
                        goto out;
                }
                if (json_is_integer(expv) && json_integer_value(expv) != 0) {
                        tb_cmd_reject(v, "CONFLICT", "expected_version",
                                      "expected_version: %" JSON_INTEGER_FORMAT
                                      " but the task does not exist yet (use null or 0)",
                                      json_integer_value(expv));
                        goto out;
                }
        } else {
                if (!visible) {
                        tb_cmd_reject(v, "NOT_FOUND", "task_id", "task '%s' not found",
                                      task_id);
                        goto out;
                }
                if (!cur->task) {
                        tb_cmd_reject(v, "INTERNAL", NULL,
                                      "task '%s': its state could not be rebuilt from the "
                                      "events; see the commands role's log",
                                      task_id);
                        goto out;
                }
                if (tb_cmd_not_home(eng, task_id, tb_cmd_jstr(cur->task, "home_region"), v))
                        goto out;
                if (json_is_integer(expv) && json_integer_value(expv) != cur->version) {
                        tb_cmd_reject(v, "CONFLICT", "expected_version",
                                      "expected_version: %" JSON_INTEGER_FORMAT
                                      " but task '%s' is at version %" PRId64
                                      "; read it again and retry",
                                      json_integer_value(expv), task_id, cur->version);
                        goto out;
                }
                if (!strcmp(type, "UPDATE")) {
                        task = tb_cmd_validate(eng, c, who, issued, v);
                        if (!task)
                                goto out;
                        const char *was = tb_cmd_jstr(cur->task, "home_region");
                        const char *now_home = tb_cmd_jstr(task, "home_region");
                        if (*was && strcmp(was, now_home)) {
                                tb_cmd_reject(v, "FORBIDDEN", "home_region",
                                              "home_region: an update cannot move task '%s' "
                                              "from region '%s' to '%s'; homes move only by "
                                              "region failover (`taskbus admin region "
                                              "failover`); leave home_region out or keep '%s'",
                                              task_id, was, now_home, was);
                                goto out;
                        }
                } else if (!strcmp(type, "PAUSE") || !strcmp(type, "RESUME")) {
                        task = json_deep_copy(cur->task);
                        json_object_set_new(task, "paused", json_boolean(!strcmp(type, "PAUSE")));
                } else if (!strcmp(type, "RUN_NOW")) {
                        /* the values checked against the task as this
                         * state holds it, the defaults filled: the run gets
                         * exactly these (TaskEvent.run_params) */
                        tb_task_err_t perr;
                        memset(&perr, 0, sizeof(perr));
                        if (tb_task_params_resolve(json_object_get(cur->task, "parameters"),
                                                   json_object_get(c, "params"), &run_params,
                                                   &perr) != TB_OK) {
                                tb_cmd_reject(v, "INVALID_ARGUMENT", perr.field, "%s",
                                              perr.message);
                                goto out;
                        }
                        task = json_deep_copy(cur->task);
                }
                /* DELETE: task stays NULL */
        }

        if (tb_cmd_quota_refused(eng, type, task ? tb_cmd_jstr(task, "security_group") : NULL,
                                 cur, v))
                goto out;

        /* accepted: the event */
        int64_t now = eng->env.now_ms(eng->env.opaque);
        json_t *before = cur && !cur->deleted && cur->task ? cur->task : NULL;
        json_t *empty = json_object();
        json_t *changed = !strcmp(type, "DELETE") || !strcmp(type, "RUN_NOW")
                                  ? json_array()
                                  : tb_task_diff(before ? before : empty, task);
        json_decref(empty);
        char event_id[37];
        eng->env.new_id(eng->env.opaque, event_id);
        int64_t version = cur ? cur->version + 1 : 1;
        ev = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:o, s:o, s:I, s:s, s:I}",
                       "event_id", event_id, "task_id", task_id, "version", (json_int_t)version,
                       "type", ev_type, "at", (json_int_t)now, "actor", who->user_id,
                       "command_id", tb_cmd_jstr(c, "command_id"), "changed_fields",
                       changed ? changed : json_array(), "task",
                       task ? tb_task_to_spec(task) : json_null(), "created_at",
                       (json_int_t)(cur ? cur->created_at : issued), "created_by",
                       cur ? cur->created_by : who->user_id, "epoch",
                       (json_int_t)(cur ? cur->epoch : 0));
        if (ev && run_params && json_object_set(ev, "run_params", run_params)) {
                json_decref(ev);
                ev = NULL;
        }
        if (!ev) {
                tb_cmd_reject(v, "INTERNAL", NULL, "cannot build the TaskEvent");
                goto out;
        }
        char eerr[512];
        if (tb_serde_encode(TB_SCHEMA_TASK_EVENT, ev, &v->event, eerr, sizeof(eerr)) != TB_OK) {
                /* the validator and the schema disagree: a bug, not the caller's */
                tb_error(TB_CMD_SUB, "task %s: encoding the event failed: %s", task_id, eerr);
                tb_buf_free(&v->event);
                tb_cmd_reject(v, "INTERNAL", NULL, "cannot encode the TaskEvent: %s", eerr);
                goto out;
        }

        tb_cmd_task_t *t = calloc(1, sizeof(*t));
        if (!t)
                abort();
        t->id = strdup(task_id);
        t->partition = partition;
        t->version = version;
        t->deleted = task == NULL;
        t->task = task ? json_incref(task) : NULL;
        t->group = strdup(task ? tb_cmd_jstr(task, "security_group") : cur->group);
        t->created_at = cur ? cur->created_at : issued;
        t->created_by = strdup(cur ? cur->created_by : who->user_id);
        t->epoch = cur ? cur->epoch : 0;
        tb_cmd_undo_push(eng, task_id, tb_cmd_map_put(&eng->map, t));
        v->reason = NULL;
        v->version = version;
        tb_snprintf(v->message, sizeof(v->message), "%s", ev_type);
out:
        if (ev)
                json_decref(ev);
        if (task)
                json_decref(task);
        json_decref(run_params);
        tb_principal_free(who);
}

/* ---- the reply ---------------------------------------------------------------- */

bool tb_cmd_engine_reply(tb_cmd_engine_t *eng, const char *correlation_id,
                         const char *command_id, const char *task_id,
                         const tb_cmd_verdict_t *v, tb_buf_t *out) {
        /* Built field by field: a message cut inside a UTF-8 sequence (or an
         * id that is not UTF-8) must not cost the reply. */
        json_t *msg = json_string(v->message);
        /* Only ids that pass the checks are echoed: a reply never carries
         * what a hostile producer put in (the correlation id is the key the
         * sender waits on, so it stays). */
        char ierr[8];
        if (tb_task_id_check("task_id", task_id, strlen(task_id), ierr, sizeof(ierr)))
                task_id = "";
        if (tb_task_ref_check("command_id", command_id, strlen(command_id), true, ierr,
                              sizeof(ierr)))
                command_id = "";
        json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I}", "correlation_id",
                              correlation_id, "command_id", command_id, "task_id", task_id,
                              "status", v->reason ? "REJECTED" : "ACCEPTED", "reason",
                              v->reason ? v->reason : "NONE", "message",
                              msg ? msg : json_string("(message not representable)"), "field",
                              v->reason && v->field[0] && tb_cmd_utf8_ok(v->field)
                                      ? json_string(v->field)
                                      : json_null(),
                              "version", v->reason ? json_null() : json_integer(v->version),
                              "replied_at", (json_int_t)eng->env.now_ms(eng->env.opaque));
        if (!r) {
                tb_warn(TB_CMD_SUB, "reply to correlation id of %zu bytes not sent: an id is "
                        "not valid UTF-8", strlen(correlation_id));
                return false;
        }
        char eerr[512];
        bool ok = tb_serde_encode(TB_SCHEMA_TASK_REPLY, r, out, eerr, sizeof(eerr)) == TB_OK;
        if (!ok)
                tb_error(TB_CMD_SUB, "reply not sent: encoding the TaskReply failed: %s", eerr);
        json_decref(r);
        return ok;
}
