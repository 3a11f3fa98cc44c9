/**
 * @file sweeper.c
 * @brief The container plugin's sweeper: every container carries the labels
 *        io.taskbus.managed, run_id, task_id and io.taskbus.owner =
 *        "BOOTID/PIDNS/PID/STARTTIME/NONCE" naming the plugin instance that
 *        made it. The sweeper thread (at init, then every sweep_interval)
 *        removes managed containers nobody will collect (see container.c),
 *        and joins the threads of finished runs.
 */
#include "container_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CT_LABEL_MANAGED "io.taskbus.managed"
#define CT_LABEL_RUN "io.taskbus.run_id"
#define CT_LABEL_TASK "io.taskbus.task_id"
#define CT_LABEL_OWNER "io.taskbus.owner"

/* Read the first line of a small file into \p out ("" on failure). */
static void ct_read_line(const char *path, char *out, size_t size) {
        out[0] = '\0';
        FILE *f = fopen(path, "re");
        if (!f)
                return;
        if (fgets(out, (int)size, f))
                out[strcspn(out, "\n")] = '\0';
        fclose(f);
}

/* Field 22 (starttime) of /proc/PID/stat: a pid plus its start time names
 * one process for the life of the machine. false if there is no such pid. */
static bool ct_proc_starttime(long pid, char *out, size_t size) {
        char path[64], line[1024];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        ct_read_line(path, line, sizeof(line));
        const char *p = strrchr(line, ')'); /* comm may hold spaces and ')' */
        if (!p)
                return false;
        /* After ") " come fields 3.. ; starttime is field 22. */
        int field = 2;
        for (; *p && field < 22; p++)
                if (*p == ' ')
                        field++;
        if (field != 22 || !*p)
                return false;
        size_t n = strcspn(p, " ");
        if (n == 0 || n >= size)
                return false;
        memcpy(out, p, n);
        out[n] = '\0';
        return true;
}

/* ---- the labels --------------------------------------------------------------- */

/* Who we are, for the owner label the sweeper reads: boot id, pid
 * namespace, pid, the pid's start time and a nonce. Called once by init(). */
void ct_sweep_owner_init(ct_state_t *st) {
        char start[32] = "", nonce_src[64];
        ct_read_line("/proc/sys/kernel/random/boot_id", st->boot_id, sizeof(st->boot_id));
        ssize_t nl = readlink("/proc/self/ns/pid", st->pidns, sizeof(st->pidns) - 1);
        st->pidns[nl > 0 ? nl : 0] = '\0';
        for (char *p = st->pidns; *p; p++) /* "pid:[4026531836]" -> digits only */
                if (*p == '/')
                        *p = '_';
        ct_proc_starttime((long)getpid(), start, sizeof(start));
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(nonce_src, sizeof(nonce_src), "%lx%lx",
                 (unsigned long)ts.tv_nsec ^ (unsigned long)(uintptr_t)st,
                 (unsigned long)ts.tv_sec);
        snprintf(st->owner, sizeof(st->owner), "%s/%s/%ld/%s/%s", st->boot_id, st->pidns,
                 (long)getpid(), start, nonce_src);
}

/* The labels of a run's container (into the create request's \p labels). */
void ct_sweep_labels(const ct_state_t *st, const tb_plugin_run_t *run, json_t *labels) {
        json_object_set_new(labels, CT_LABEL_MANAGED, json_string("true"));
        json_object_set_new(labels, CT_LABEL_RUN, json_string(run->run_id));
        json_object_set_new(labels, CT_LABEL_TASK, json_string(run->task_id));
        json_object_set_new(labels, CT_LABEL_OWNER, json_string(st->owner));
}

/* ---- the sweeper ----------------------------------------------------------- */

/* Should the sweeper remove this managed container? */
static bool ct_sweep_decide(ct_state_t *st, json_t *c, const char **why) {
        json_t *labels = json_object_get(c, "Labels");
        const char *owner = json_string_value(json_object_get(labels, CT_LABEL_OWNER));
        const char *run_id = json_string_value(json_object_get(labels, CT_LABEL_RUN));
        const char *state = json_string_value(json_object_get(c, "State"));
        bool exited = state && (!strcmp(state, "exited") || !strcmp(state, "dead") ||
                                !strcmp(state, "created") || !strcmp(state, "stopped") ||
                                !strcmp(state, "configured"));
        if (owner && !strcmp(owner, st->owner)) {
                bool active = false;
                pthread_mutex_lock(&st->lock);
                for (ct_run_t *r = st->runs; r && !active; r = r->next)
                        active = run_id && !strcmp(r->run_id, run_id);
                pthread_mutex_unlock(&st->lock);
                *why = "its run is no longer active in this executor";
                return !active;
        }
        char boot[64] = "", pidns[64] = "", start[32] = "", now_start[32];
        long pid = 0;
        if (owner) {
                char tmp[256];
                snprintf(tmp, sizeof(tmp), "%s", owner);
                char *save = NULL, *f[5] = {0};
                int n = 0;
                for (char *t = strtok_r(tmp, "/", &save); t && n < 5;
                     t = strtok_r(NULL, "/", &save))
                        f[n++] = t;
                if (n == 5) {
                        snprintf(boot, sizeof(boot), "%s", f[0]);
                        snprintf(pidns, sizeof(pidns), "%s", f[1]);
                        pid = strtol(f[2], NULL, 10);
                        snprintf(start, sizeof(start), "%s", f[3]);
                }
        }
        if (boot[0] && st->boot_id[0] && strcmp(boot, st->boot_id)) {
                *why = "its executor ran before this machine's last boot";
                return true;
        }
        if (boot[0] && pid > 0 && !strcmp(pidns, st->pidns)) {
                bool alive = ct_proc_starttime(pid, now_start, sizeof(now_start)) &&
                             !strcmp(now_start, start);
                *why = "its executor process is gone";
                return !alive;
        }
        /* An owner we cannot check: only what has been over for a while. */
        if (!exited)
                return false;
        const char *id = json_string_value(json_object_get(c, "Id"));
        char path[256], err[256];
        long code = 0;
        ct_buf_t b = {0};
        int64_t ended = -1;
        snprintf(path, sizeof(path), "/containers/%s/json", id ? id : "");
        if (id && ct_engine_http(st, "GET", path, NULL, &code, &b, err, sizeof(err)) == 0 &&
            code == 200) {
                json_t *j = json_loads(b.data, 0, NULL);
                json_t *s = json_object_get(j, "State");
                ended = ct_engine_parse_time(json_string_value(json_object_get(s, "FinishedAt")));
                if (ended < 0) /* never started: count from its creation */
                        ended = ct_engine_parse_time(json_string_value(json_object_get(j, "Created")));
                json_decref(j);
        }
        ct_buf_free(&b);
        *why = "it has been over for longer than sweep_grace";
        return ended > 0 && tb_pu_wall_ms() - ended > st->sweep_grace_ms;
}

static void ct_sweep_once(ct_state_t *st) {
        char err[CT_ERR_MAX];
        long code = 0;
        ct_buf_t b = {0};
        /* filters={"label":["io.taskbus.managed=true"]} */
        if (ct_engine_http(st, "GET", "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22"
                           "io.taskbus.managed%3Dtrue%22%5D%7D", NULL, &code, &b, err,
                           sizeof(err)) != 0 || code != 200) {
                st->host->log(st->host, TB_PLUGIN_LOG_WARN, "sweeper: listing "
                              "containers failed: %s", code ? "bad reply" : err);
                ct_buf_free(&b);
                return;
        }
        json_t *list = json_loads(b.data ? b.data : "", 0, NULL);
        ct_buf_free(&b);
        size_t i;
        json_t *c;
        json_array_foreach(list, i, c) {
                const char *id = json_string_value(json_object_get(c, "Id"));
                const char *why = "";
                if (!id || strspn(id, "0123456789abcdef") != strlen(id) ||
                    !ct_sweep_decide(st, c, &why))
                        continue;
                const char *run_id = json_string_value(
                        json_object_get(json_object_get(c, "Labels"), CT_LABEL_RUN));
                if (ct_engine_remove(st, id, err, sizeof(err)))
                        st->host->log(st->host, TB_PLUGIN_LOG_INFO, "sweeper: removed "
                                      "container %.12s of run %s: %s", id,
                                      run_id ? run_id : "?", why);
                else
                        st->host->log(st->host, TB_PLUGIN_LOG_WARN, "sweeper: %s", err);
        }
        json_decref(list);
}

void *ct_sweep_main(void *arg) {
        ct_state_t *st = arg;
        int64_t next_sweep = 0;
        for (;;) {
                ct_worker_reap(st);
                if (st->sweep && tb_pu_mono_ms() >= next_sweep) {
                        ct_sweep_once(st);
                        next_sweep = tb_pu_mono_ms() + st->sweep_interval_ms;
                }
                pthread_mutex_lock(&st->lock);
                if (!st->stopping && !st->zombies) {
                        int64_t until = st->sweep ? next_sweep : tb_pu_mono_ms() + 60000;
                        struct timespec ts = {.tv_sec = (time_t)(until / 1000),
                                              .tv_nsec = (long)(until % 1000) * 1000000L};
                        pthread_cond_timedwait(&st->cond, &st->lock, &ts);
                }
                bool stop = st->stopping;
                pthread_mutex_unlock(&st->lock);
                if (stop)
                        break;
        }
        ct_worker_reap(st);
        return NULL;
}
