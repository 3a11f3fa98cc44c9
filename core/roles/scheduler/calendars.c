/**
 * @file scheduler/calendars.c
 * @brief The tasks' calendar rules in the engine (docs/scheduling.md
 *        "Calendars"): which calendars every group has (set by the role from
 *        PostgreSQL, tb_sched_calendars_set()), and the decision for each
 *        task's next fire: fire, moved (its timer is the rolled instant; the
 *        RunRequest keeps the nominal time, so the run id is the nominal
 *        occurrence's), or skipped (recorded SKIPPED_CALENDAR with the
 *        reason, emit.c).
 *
 * Fail closed: a calendar that does not exist, or could not be built, skips
 * the fire with that reason; nothing runs on a guess. Before the calendars
 * were ever loaded, the fires of tasks with rules wait.
 *
 * One run per instant, as tb_calendar_plan(): a fire decided onto an
 * instant at or before the one the previous occurrence ran at (rolled) is a
 * DUPLICATE, recorded skipped. The previous occurrence's instant is decided
 * again from its nominal time, so a restart decides the same.
 */
#include "scheduler/engine_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

bool tb_sched_cal_has(const tb_sched_task_t *t) { return t->x && t->x->cal; }

tb_err_t tb_sched_cal_task_set(const tb_sched_t *s, tb_sched_task_t *t, const json_t *spec,
                               char *errstr, size_t errstr_size) {
        tb_task_calendar_t rules[TB_TASK_CALENDARS_MAX];
        size_t n = 0;
        tb_err_t err = tb_task_calendars(spec, rules, &n, errstr, errstr_size);
        if (err) {
                /* fail closed: one rule no calendar has, so every fire is skipped */
                n = 1;
                tb_snprintf(rules[0].name, sizeof(rules[0].name), "(unreadable rules)");
                rules[0].rule = TB_CALENDAR_EXCLUDE;
        }
        if (!n) {
                if (t->x) {
                        free(t->x->cal);
                        t->x->cal = NULL;
                }
                return TB_OK;
        }
        tb_sched_extra_t *x = tb_sched_task_extra(t);
        if (!x || (!x->cal && !(x->cal = calloc(1, sizeof(*x->cal)))))
                return TB_ERR_NOMEM;
        memset(x->cal, 0, sizeof(*x->cal));
        memcpy(x->cal->rules, rules, n * sizeof(*rules));
        x->cal->n = n;
        x->cal->set_poll = s->cal_polls;
        tb_snprintf(x->cal->group, sizeof(x->cal->group), "%s",
                    tb_sched_jstr(spec, "security_group", ""));
        return err;
}

static const tb_sched_calendar_t *tb_sched_cal_find(const tb_sched_t *s, const char *group,
                                                    const char *name) {
        for (size_t i = 0; i < s->cal_cnt; i++)
                if (!strcmp(s->cals[i].name, name) && !strcmp(s->cals[i].group, group))
                        return &s->cals[i];
        return NULL;
}

/* The task's rules resolved against the engine's calendars (borrowed).
 * @returns whether a calendar is missing (not: one that does not build). */
static bool tb_sched_cal_resolve(const tb_sched_t *s, const tb_sched_trules_t *tr,
                                 tb_task_cals_t *out) {
        bool missing = false;
        memset(out, 0, sizeof(*out));
        out->n = tr->n;
        for (size_t i = 0; i < tr->n; i++) {
                const tb_sched_calendar_t *c = tb_sched_cal_find(s, tr->group, tr->rules[i].name);
                out->rules[i].kind = tr->rules[i].rule;
                out->rules[i].calendar = c ? c->cal : NULL;
                if (out->unresolved[0])
                        continue;
                if (!c)
                        tb_snprintf(out->unresolved, sizeof(out->unresolved),
                                    "calendar '%s' does not exist in group '%s'",
                                    tr->rules[i].name, tr->group);
                else if (!c->cal)
                        tb_snprintf(out->unresolved, sizeof(out->unresolved), "%s", c->error);
                missing |= !c;
        }
        return missing;
}

const tb_calendar_decision_t *tb_sched_cal_decision(tb_sched_t *s, tb_sched_task_t *t) {
        if (!tb_sched_cal_has(t) || !s->cal_loaded)
                return NULL;
        tb_sched_trules_t *tr = t->x->cal;
        if (tr->decided && tr->dec_nominal == t->next_nominal && tr->dec_gen == s->cal_gen)
                return &tr->dec;
        tr->decided = false;
        if (t->next_nominal == TB_SCHED_NEVER)
                return NULL;
        tb_task_cals_t cals;
        if (tb_sched_cal_resolve(s, tr, &cals) && tr->set_poll == s->cal_polls) {
                /* created with a calendar the last poll did not see (the API
                 * checked that it exists): poll before failing closed */
                tr->waiting = true;
                s->cal_want = true;
                return NULL;
        }
        const tb_tz_t *tz = t->cron ? t->cron->tz : NULL;
        char err[256], id[37];
        if (tb_task_cals_apply(&cals, tz, t->next_nominal, &tr->dec, err, sizeof(err))) {
                tb_error(TB_SCHED_LOG, "task %s: calendars: %s", tb_sched_task_idstr(t, id), err);
                return NULL; /* out of memory: decided again at the next rekey */
        }
        tb_calendar_decision_t prev;
        bool runs = tr->dec.verdict == TB_CALENDAR_FIRE || tr->dec.verdict == TB_CALENDAR_MOVED;
        if (runs && t->last_nominal != TB_SCHED_NO_LAST &&
            tb_task_cals_apply(&cals, tz, t->last_nominal, &prev, err, sizeof(err)) == TB_OK &&
            (prev.verdict == TB_CALENDAR_FIRE || prev.verdict == TB_CALENDAR_MOVED) &&
            tr->dec.fire_ms <= prev.fire_ms) {
                char owner[32];
                tb_time_format(t->last_nominal, owner);
                char was[sizeof(tr->dec.reason)];
                memcpy(was, tr->dec.reason, sizeof(was));
                tr->dec.verdict = TB_CALENDAR_DUPLICATE;
                tb_snprintf(tr->dec.reason, sizeof(tr->dec.reason),
                            "%s%sthe occurrence of %s already runs at or after that instant",
                            was, was[0] ? "; " : "", owner);
        }
        if (tr->dec.verdict == TB_CALENDAR_SKIPPED && cals.unresolved[0])
                tb_warn(TB_SCHED_LOG, "task %s: its fire at %" PRId64 " is skipped: %s",
                        tb_sched_task_idstr(t, id), t->next_nominal, cals.unresolved);
        tr->decided = true;
        tr->dec_nominal = t->next_nominal;
        tr->dec_gen = s->cal_gen;
        return &tr->dec;
}

/* Does task \p t name (group, name)? */
static bool tb_sched_cal_names(const tb_sched_task_t *t, const char *group, const char *name) {
        const tb_sched_trules_t *tr = t->x->cal;
        if (strcmp(tr->group, group))
                return false;
        for (size_t i = 0; i < tr->n; i++)
                if (!strcmp(tr->rules[i].name, name))
                        return true;
        return false;
}

/* Is entry \p c of one set absent from, or another version in, the other? */
static bool tb_sched_cal_differs(const tb_sched_calendar_t *c, const tb_sched_calendar_t *set,
                                 size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(set[i].name, c->name) && !strcmp(set[i].group, c->group))
                        return set[i].version != c->version || !set[i].cal != !c->cal;
        return true;
}

void tb_sched_cal_free_all(tb_sched_t *s) {
        for (size_t i = 0; i < s->cal_cnt; i++)
                tb_calendar_free(s->cals[i].cal);
        free(s->cals);
        s->cals = NULL;
        s->cal_cnt = 0;
}

void tb_sched_calendars_set(tb_sched_t *s, tb_sched_calendar_t *cals, size_t n) {
        bool first = !s->cal_loaded;
        /* the (group, name) pairs that changed, from either side */
        tb_sched_calendar_t **changed = calloc(n + s->cal_cnt + 1, sizeof(*changed));
        size_t nch = 0;
        for (size_t i = 0; changed && i < n; i++)
                if (tb_sched_cal_differs(&cals[i], s->cals, s->cal_cnt))
                        changed[nch++] = &cals[i];
        for (size_t i = 0; changed && i < s->cal_cnt; i++)
                if (tb_sched_cal_differs(&s->cals[i], cals, n))
                        changed[nch++] = &s->cals[i];
        size_t moved = 0;
        char (*names)[2][129] = calloc(nch + 1, sizeof(*names));
        for (size_t i = 0; names && i < nch; i++) {
                memcpy(names[i][0], changed[i]->group, sizeof(names[i][0]));
                memcpy(names[i][1], changed[i]->name, sizeof(names[i][1]));
        }
        tb_sched_cal_free_all(s);
        s->cals = cals;
        s->cal_cnt = n;
        s->cal_loaded = true;
        s->cal_gen++;
        for (uint32_t slot = 0; slot < s->task_hwm; slot++) {
                tb_sched_task_t *t = &s->tasks[slot];
                if (!(t->flags & TB_SCHED_TF_USED) || !tb_sched_cal_has(t))
                        continue;
                bool hit = first || !changed || !names;
                for (size_t i = 0; !hit && i < nch; i++)
                        hit = tb_sched_cal_names(t, names[i][0], names[i][1]);
                if (!hit)
                        continue;
                tb_sched_task_rekey(s, slot); /* decides again */
                moved++;
        }
        if (nch || first)
                tb_info(TB_SCHED_LOG,
                        "calendars: %zu loaded, %zu changed; next fire decided again for %zu "
                        "task(s)",
                        n, nch, moved);
        free(changed);
        free(names);
}

bool tb_sched_task_decision(tb_sched_t *s, const char *task_id, tb_calendar_decision_t *out) {
        uint32_t slot = tb_sched_slot_of(s, task_id);
        if (slot == UINT32_MAX)
                return false;
        const tb_calendar_decision_t *d = tb_sched_cal_decision(s, &s->tasks[slot]);
        if (d)
                *out = *d;
        return d != NULL;
}

void tb_sched_calendars_polled(tb_sched_t *s) {
        s->cal_polls++;
        s->cal_want = false;
        for (uint32_t slot = 0; slot < s->task_hwm; slot++) {
                tb_sched_task_t *t = &s->tasks[slot];
                if ((t->flags & TB_SCHED_TF_USED) && tb_sched_cal_has(t) && t->x->cal->waiting) {
                        t->x->cal->waiting = false;
                        tb_sched_task_rekey(s, slot);
                }
        }
}

bool tb_sched_calendars_wanted(const tb_sched_t *s) { return s->cal_want; }

bool tb_sched_cal_runs(const tb_sched_t *s, const tb_sched_task_t *t, int64_t nominal,
                       int64_t *fire_ms) {
        tb_task_cals_t cals;
        tb_calendar_decision_t d;
        char err[256];
        *fire_ms = nominal;
        if (!tb_sched_cal_has(t))
                return true;
        tb_sched_cal_resolve(s, t->x->cal, &cals);
        if (tb_task_cals_apply(&cals, t->cron ? t->cron->tz : NULL, nominal, &d, err,
                               sizeof(err)) != TB_OK)
                return false;
        *fire_ms = d.fire_ms;
        return d.verdict == TB_CALENDAR_FIRE || d.verdict == TB_CALENDAR_MOVED;
}
