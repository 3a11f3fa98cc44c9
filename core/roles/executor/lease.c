/**
 * @file executor/lease.c
 * @brief Claims after they are taken: renewing this executor's leases,
 *        acting on cancellation requests and reaping expired claims (LOST).
 *        The requests themselves are store/claims.h's.
 */
#include "executor/executor_internal.h"

#include "http/metrics.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- leases, cancellation requests, reaping --------------------------------------- */

/* Renew (\p renew) or just read this executor's running claims, and act on
 * their cancellation requests; with \p renew, runs whose claim is gone are
 * lease-lost. */
static void tb_exec_lease_pass(tb_exec_t *ex, bool renew) {
        char err[1024];
        tb_exec_run_t **runs = NULL;
        /* Snapshot first: a run linked after the query ran is not in its
         * answer but is not lost either. */
        size_t n = tb_exec_runs_snapshot(ex, (1u << TB_EXEC_PENDING) | (1u << TB_EXEC_STARTING) |
                                                (1u << TB_EXEC_RUNNING),
                                    &runs);
        if (n == 0) {
                free(runs);
                return;
        }
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        tb_err_t e;
        if (!c)
                e = tb_seterr(err, sizeof(err), TB_ERR_TIMEOUT, "no PostgreSQL connection free");
        else
                e = tb_store_claims_leases(c, ex->id, renew, ex->conf->exec_lease_ms, &r, err,
                                           sizeof(err));
        if (c)
                tb_store_release(ex->ctx->store, c);
        if (e != TB_OK) {
                tb_warn(TB_EXEC_SUB, "%s", err);
                tb_exec_runs_snapshot_free(runs, n);
                return;
        }
        int rows = PQntuples(r);
        const char **ids = rows ? malloc((size_t)rows * sizeof(char *)) : NULL;
        for (int i = 0; ids && i < rows; i++)
                ids[i] = PQgetvalue(r, i, 0);
        if (ids)
                qsort(ids, (size_t)rows, sizeof(char *), tb_exec_cmp_str);
        for (size_t i = 0; i < n; i++) {
                tb_exec_run_t *x = runs[i];
                const char *key = x->run_id;
                const char **hit = ids ? bsearch(&key, ids, (size_t)rows, sizeof(char *),
                                                 tb_exec_cmp_str)
                                       : NULL;
                if (!hit && renew) {
                        pthread_mutex_lock(&ex->lock);
                        bool lost = !x->finished && x->phase != TB_EXEC_RELEASED;
                        if (lost)
                                x->lease_lost = true;
                        pthread_mutex_unlock(&ex->lock);
                        if (lost) {
                                tb_error(TB_EXEC_SUB, "run %s: this executor's claim on it is "
                                         "gone (lease expired and reaped?): stopping it",
                                         x->run_id);
                                tb_exec_run_cancel(ex, x, "the executor lost its claim on "
                                                   "the run (lease expired)", false);
                        }
                }
        }
        for (int i = 0; i < rows; i++) {
                if (strcmp(PQgetvalue(r, i, 1), "t"))
                        continue;
                const char *id = PQgetvalue(r, i, 0), *why = PQgetvalue(r, i, 2);
                for (size_t k = 0; k < n; k++)
                        if (!strcmp(runs[k]->run_id, id))
                                tb_exec_run_cancel(ex, runs[k],
                                                   *why ? why : "cancelled by request", false);
        }
        free(ids);
        PQclear(r);
        tb_exec_runs_snapshot_free(runs, n);
}

/* Kill what is left on this host of lost run \p run_id: the shell plugin's
 * processes carry TASKBUS_RUN_ID in their environment and lead their own
 * process group. Needs the right to read /proc/PID/environ (root, or the
 * same user as the tasks). */
static int tb_exec_kill_orphans(const char *run_id) {
        char needle[TB_EXEC_ID_MAX + 32];
        int nlen = snprintf(needle, sizeof(needle), "TASKBUS_RUN_ID=%s", run_id);
        DIR *d = opendir("/proc");
        if (!d)
                return 0;
        int killed = 0;
        pid_t self_pgrp = getpgrp();
        char *env = malloc(256 * 1024);
        struct dirent *de;
        while (env && (de = readdir(d))) {
                if (!isdigit((unsigned char)de->d_name[0]))
                        continue;
                pid_t pid = (pid_t)atoi(de->d_name);
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t len = read(fd, env, 256 * 1024 - 1);
                close(fd);
                if (len <= 0)
                        continue;
                bool match = false;
                for (ssize_t off = 0; off < len && !match;) {
                        const char *entry = env + off;
                        size_t elen = strnlen(entry, (size_t)(len - off));
                        match = elen == (size_t)nlen && !memcmp(entry, needle, elen);
                        off += (ssize_t)elen + 1;
                }
                if (!match)
                        continue;
                pid_t pgid = getpgid(pid);
                if (pgid > 1 && pgid != self_pgrp)
                        kill(-pgid, SIGKILL);
                kill(pid, SIGKILL);
                killed++;
        }
        free(env);
        closedir(d);
        return killed;
}

/* Declare claims whose lease expired LOST (any executor's). */
static void tb_exec_reap(tb_exec_t *ex) {
        char err[1024];
        PGresult *r = NULL;
        PGconn *c = tb_store_acquire_timeout(ex->ctx->store, 2000);
        if (!c)
                return;
        tb_err_t e = tb_store_begin(c, err, sizeof(err));
        if (!e)
                e = tb_store_claims_expired(c, &r, err, sizeof(err));
        int rows = e ? 0 : PQntuples(r);
        for (int i = 0; !e && i < rows; i++) {
                const char *run_id = PQgetvalue(r, i, 0), *task_id = PQgetvalue(r, i, 1);
                const char *owner = PQgetvalue(r, i, 2), *host = PQgetvalue(r, i, 6);
                char msg[600];
                snprintf(msg, sizeof(msg), "executor %s stopped renewing its lease", owner);
                tb_exec_outcome_t o = {
                        .status = "LOST",
                        .finished_ms = tb_now_ms(),
                        .executor = PQgetvalue(r, i, 5),
                        .error = msg,
                };
                e = tb_exec_publish_result(ex, run_id, task_id, strtoll(PQgetvalue(r, i, 3),
                                                                        NULL, 10),
                                           (int32_t)atoi(PQgetvalue(r, i, 4)), &o, true, err,
                                           sizeof(err));
                if (!e)
                        e = tb_store_claims_mark_lost(c, run_id, err, sizeof(err));
                if (e)
                        break;
                int killed = !strcmp(host, ex->ctx->host) ? tb_exec_kill_orphans(run_id) : 0;
                tb_metrics_add("taskbus_executor_lost_total", NULL, 1);
                tb_warn(TB_EXEC_SUB, "run %s (task %s) LOST: %s%s", run_id, task_id, msg,
                        killed ? "; its processes left on this host were killed" : "");
        }
        PQclear(r);
        if (!e)
                e = tb_store_commit(c, err, sizeof(err));
        if (e) {
                tb_store_rollback(c);
                tb_warn(TB_EXEC_SUB, "reaping expired claims: %s", err);
        }
        tb_store_release(ex->ctx->store, c);
}

void *tb_exec_lease_main(void *arg) {
        tb_exec_t *ex = arg;
        const int64_t lease = ex->conf->exec_lease_ms;
        int64_t now = tb_exec_mono_ms();
        int64_t next_renew = now + lease / 3, next_poll = now + TB_EXEC_CANCEL_POLL_MS;
        int64_t next_reap = now + 1000; /* runs of a predecessor that died: soon */
        for (;;) {
                pthread_mutex_lock(&ex->lock);
                while (!atomic_load(&ex->stop_all)) {
                        now = tb_exec_mono_ms();
                        int64_t next = next_renew < next_poll ? next_renew : next_poll;
                        if (next_reap < next)
                                next = next_reap;
                        if (now >= next)
                                break;
                        tb_exec_cond_wait_ms(&ex->lease_cond, &ex->lock, next - now);
                }
                pthread_mutex_unlock(&ex->lock);
                if (atomic_load(&ex->stop_all))
                        return NULL;
                now = tb_exec_mono_ms();
                if (now >= next_renew) {
                        tb_exec_lease_pass(ex, true);
                        next_renew = now + lease / 3;
                        next_poll = now + TB_EXEC_CANCEL_POLL_MS;
                } else if (now >= next_poll) {
                        tb_exec_lease_pass(ex, false);
                        next_poll = now + TB_EXEC_CANCEL_POLL_MS;
                }
                if (now >= next_reap) {
                        tb_exec_reap(ex);
                        tb_exec_reap_unclaimed(ex);
                        next_reap = tb_exec_mono_ms() + lease / 2;
                }
        }
}
