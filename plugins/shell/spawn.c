/**
 * @file spawn.c
 * @brief The shell plugin's start(): checks what a run asks for (options,
 *        OS user, working directory, environment, command), resolves the
 *        user's supplementary groups, starts the process (child.c: a new
 *        session, the user switched between clone and execve, one exec per
 *        run) and hands it to the I/O thread.
 */
#include "shell_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <grp.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- starting a run ---------------------------------------------------------- */

typedef struct sh_env {
        char **v;
        size_t n, cap;
} sh_env_t;

static void sh_env_free(sh_env_t *e) {
        for (size_t i = 0; i < e->n; i++)
                free(e->v[i]);
        free(e->v);
}

/* Set KEY=VALUE, replacing an earlier value. @returns false on ENOMEM. */
static bool sh_env_set(sh_env_t *e, const char *key, const char *value) {
        size_t klen = strlen(key);
        char *kv = malloc(klen + strlen(value) + 2);
        if (!kv)
                return false;
        sprintf(kv, "%s=%s", key, value);
        for (size_t i = 0; i < e->n; i++) {
                if (!strncmp(e->v[i], key, klen) && e->v[i][klen] == '=') {
                        free(e->v[i]);
                        e->v[i] = kv;
                        return true;
                }
        }
        if (e->n + 2 > e->cap) {
                size_t ncap = e->cap ? e->cap * 2 : 16;
                char **nv = realloc(e->v, ncap * sizeof(char *));
                if (!nv) {
                        free(kv);
                        return false;
                }
                e->v = nv;
                e->cap = ncap;
        }
        e->v[e->n++] = kv;
        e->v[e->n] = NULL;
        return true;
}

static const char *sh_env_get(const sh_env_t *e, const char *key) {
        size_t klen = strlen(key);
        for (size_t i = 0; i < e->n; i++)
                if (!strncmp(e->v[i], key, klen) && e->v[i][klen] == '=')
                        return e->v[i] + klen + 1;
        return NULL;
}

/* Find an executable for argv[0] in \p path (the task's PATH, not ours). */
static bool sh_which(const char *name, const char *path, char *out, size_t size) {
        const char *p = path;
        while (p && *p) {
                size_t n = strcspn(p, ":");
                struct stat sb;
                if (n > 0 && (size_t)snprintf(out, size, "%.*s/%s", (int)n, p, name) < size &&
                    stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0111))
                        return true;
                p += n;
                if (*p == ':')
                        p++;
        }
        return false;
}

int sh_spawn_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                   size_t errbuf_size) {
        sh_state_t *st = state;
        int rc = TB_PLUGIN_ERROR;
        sh_env_t env = {0};
        sh_run_t *r = NULL;
        char *pwbuf = NULL;
        const char **argv = NULL;
        gid_t *groups = NULL;
        int ngroups = 0;
        int outp[2] = {-1, -1}, errp[2] = {-1, -1};
        char exe[PATH_MAX];

        /* What to run. */
        bool argv_form = run->argv && run->argv[0];
        if (!argv_form && !(run->script && *run->script))
                return tb_pu_fail(errbuf, errbuf_size, "run has neither a script nor argv");
        if (argv_form && !*run->argv[0])
                return tb_pu_fail(errbuf, errbuf_size, "argv[0] is empty");

        int64_t grace = st->kill_grace_ms;
        for (size_t i = 0; i < run->n_options; i++) {
                const tb_plugin_kv_t *o = &run->options[i];
                if (!strcmp(o->key, "kill_grace")) {
                        if (tb_pu_parse_duration(o->value, &grace, NULL, 0) != TB_PLUGIN_OK)
                                return tb_pu_fail(errbuf, errbuf_size,
                                                  "executor option kill_grace must be a "
                                                  "duration such as 500ms or 5s, got '%s'",
                                                  o->value);
                        /* A task may shorten the operator's grace, never
                         * lengthen it. */
                        if (grace > st->kill_grace_ms)
                                grace = st->kill_grace_ms;
                } else {
                        return tb_pu_fail(errbuf, errbuf_size,
                                          "unknown executor option '%s'; the shell "
                                          "plugin accepts: kill_grace", o->key);
                }
        }

        /* Whom to run it as. */
        long pwsize = sysconf(_SC_GETPW_R_SIZE_MAX);
        if (pwsize < 16384)
                pwsize = 16384;
        pwbuf = malloc((size_t)pwsize);
        if (!pwbuf)
                return tb_pu_fail(errbuf, errbuf_size, "out of memory");
        struct passwd pw, *pwp = NULL;
        bool named = run->os_user && *run->os_user;
        int prc = named ? getpwnam_r(run->os_user, &pw, pwbuf, (size_t)pwsize, &pwp)
                        : getpwuid_r(geteuid(), &pw, pwbuf, (size_t)pwsize, &pwp);
        if (prc != 0 || !pwp) {
                if (named && prc == 0)
                        tb_pu_fail(errbuf, errbuf_size, "unknown os user '%s': no such "
                                   "user on this executor host", run->os_user);
                else if (named)
                        tb_pu_fail(errbuf, errbuf_size, "cannot look up os user '%s': %s",
                                   run->os_user, strerror(prc));
                else
                        tb_pu_fail(errbuf, errbuf_size, "cannot look up the executor's "
                                   "own user (uid %d): %s", (int)geteuid(),
                                   prc ? strerror(prc) : "no such user");
                goto fail;
        }
        if (pw.pw_uid == 0 && !st->allow_root) {
                tb_pu_fail(errbuf, errbuf_size, "refusing to run as root (os user '%s'): "
                           "set allow_root = true in the shell plugin's config to allow it",
                           pw.pw_name);
                goto fail;
        }
        bool switch_user = pw.pw_uid != geteuid() || pw.pw_gid != getegid();
        if (switch_user && geteuid() != 0) {
                tb_pu_fail(errbuf, errbuf_size, "cannot run as os user '%s' (uid %d): the "
                           "executor runs as uid %d and cannot switch users; run it as "
                           "root or give the task an os user equal to the executor's",
                           pw.pw_name, (int)pw.pw_uid, (int)geteuid());
                goto fail;
        }
        if (switch_user) {
                /* The child may not look anything up (NSS is not
                 * async-signal-safe): its groups are resolved here. */
                int cap = 64;
                for (;;) {
                        gid_t *ng = realloc(groups, (size_t)cap * sizeof(gid_t));
                        if (!ng) {
                                tb_pu_fail(errbuf, errbuf_size, "out of memory");
                                goto fail;
                        }
                        groups = ng;
                        ngroups = cap;
                        if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups) >= 0)
                                break;
                        if (ngroups <= cap)
                                cap *= 2;
                        else
                                cap = ngroups;
                        if (cap > 65536) {
                                tb_pu_fail(errbuf, errbuf_size, "cannot switch to os user "
                                           "'%s': more than 65536 groups", pw.pw_name);
                                goto fail;
                        }
                }
        }

        /* Where. */
        const char *wd = run->workdir && *run->workdir ? run->workdir : st->default_workdir;
        struct stat sb;
        if (stat(wd, &sb) != 0) {
                tb_pu_fail(errbuf, errbuf_size, "workdir '%s': %s", wd, strerror(errno));
                goto fail;
        }
        if (!S_ISDIR(sb.st_mode)) {
                tb_pu_fail(errbuf, errbuf_size, "workdir '%s' is not a directory", wd);
                goto fail;
        }

        /* A clean environment: nothing of ours leaks into the task. */
        bool ok = sh_env_set(&env, "PATH", SH_PATH) &&
                  sh_env_set(&env, "HOME", pw.pw_dir) &&
                  sh_env_set(&env, "LANG", "C.UTF-8") &&
                  sh_env_set(&env, "USER", pw.pw_name) &&
                  sh_env_set(&env, "LOGNAME", pw.pw_name);
        for (size_t i = 0; ok && i < run->n_env; i++) {
                const char *k = run->env[i].key;
                if (tb_pu_check_env_name(k, errbuf, errbuf_size) != TB_PLUGIN_OK)
                        goto fail;
                ok = sh_env_set(&env, k, run->env[i].value ? run->env[i].value : "");
        }
        tb_pu_run_env_t tbenv;
        tb_pu_run_env(run, &tbenv);
        for (int i = 0; ok && i < TB_PU_RUN_ENV_N; i++)
                ok = sh_env_set(&env, tbenv.vars[i].key, tbenv.vars[i].value);
        if (!ok) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory building the environment");
                goto fail;
        }

        /* The command line. */
        size_t nargs = 0;
        if (argv_form)
                while (run->argv[nargs])
                        nargs++;
        argv = calloc(nargs + 4, sizeof(char *));
        if (!argv) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        size_t a = 0;
        if (argv_form) {
                const char *cmd = run->argv[0];
                if (!strchr(cmd, '/')) {
                        const char *path = sh_env_get(&env, "PATH");
                        if (!sh_which(cmd, path, exe, sizeof(exe))) {
                                tb_pu_fail(errbuf, errbuf_size, "argv[0] '%s' not found "
                                           "in PATH=%s", cmd, path ? path : "");
                                goto fail;
                        }
                        cmd = exe;
                } else if (access(cmd, X_OK) != 0) {
                        tb_pu_fail(errbuf, errbuf_size, "argv[0] '%s' is not executable: %s",
                                   cmd, strerror(errno));
                        goto fail;
                }
                argv[a++] = cmd;
                for (size_t i = 1; i < nargs; i++)
                        argv[a++] = run->argv[i];
        } else {
                argv[a++] = st->shell;
                argv[a++] = "-c";
                argv[a++] = run->script;
        }
        argv[a] = NULL;

        r = calloc(1, sizeof(*r));
        if (!r || !(r->io[0].buf = malloc(SH_CHUNK_MIN)) ||
            !(r->io[1].buf = malloc(SH_CHUNK_MIN))) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        r->io[0].cap = r->io[1].cap = SH_CHUNK_MIN;
        r->io[0].fd = r->io[1].fd = r->pidfd = -1;

        if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
                tb_pu_fail(errbuf, errbuf_size, "cannot create pipes: %s (raise the "
                           "executor's open file limit?)", strerror(errno));
                goto fail;
        }
        /* The child dups them onto 1 and 2: keep them clear of 0-2 (a host
         * started with a closed stdio) so that no dup overwrites another. */
        for (int i = 0; i < 2; i++) {
                int *fds = i ? errp : outp;
                for (int j = 0; j < 2; j++) {
                        if (fds[j] > 2)
                                continue;
                        int moved = fcntl(fds[j], F_DUPFD_CLOEXEC, 3);
                        if (moved < 0) {
                                tb_pu_fail(errbuf, errbuf_size, "cannot move a pipe: %s",
                                           strerror(errno));
                                goto fail;
                        }
                        close(fds[j]);
                        fds[j] = moved;
                }
        }
        struct rlimit nofile;
        int max_fd = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 1048576
                             ? (int)nofile.rlim_cur
                             : 1048576;
        const sh_child_spec_t spec = {
                .path = argv[0],
                .argv = (char *const *)argv,
                .envp = env.v,
                .workdir = wd,
                .out_fd = outp[1],
                .err_fd = errp[1],
                .switch_user = switch_user,
                .user = pw.pw_name,
                .uid = pw.pw_uid,
                .gid = pw.pw_gid,
                .groups = groups,
                .n_groups = (size_t)ngroups,
                .max_fd = max_fd,
        };
        if (sh_child_spawn(&spec, &r->pid, errbuf, errbuf_size) != TB_PLUGIN_OK)
                goto fail;
        r->started_ms = tb_pu_wall_ms();

        close(outp[1]);
        close(errp[1]);
        outp[1] = errp[1] = -1;
        fcntl(outp[0], F_SETFL, O_NONBLOCK);
        fcntl(errp[0], F_SETFL, O_NONBLOCK);
        r->io[0].fd = outp[0];
        r->io[1].fd = errp[0];
        outp[0] = errp[0] = -1;
        /* The pid cannot be reused before we reap it, so this is race-free. */
        r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
        if (r->pidfd >= 0)
                fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);

        int64_t now = tb_pu_mono_ms();
        r->run = run;
        r->io[0].ref = (sh_fdref_t){r, SH_FD_STDOUT};
        r->io[1].ref = (sh_fdref_t){r, SH_FD_STDERR};
        r->pid_ref = (sh_fdref_t){r, SH_FD_PID};
        r->expiry_ms = run->expiry_ms > 0 ? run->expiry_ms : 0;
        r->deadline = r->expiry_ms ? now + r->expiry_ms : 0;
        r->kill_grace_ms = grace;
        r->next_heartbeat = now + st->heartbeat_ms;

        pthread_mutex_lock(&st->lock);
        r->next = st->pending;
        st->pending = r;
        pthread_mutex_unlock(&st->lock);
        sh_wake(st);
        r = NULL;
        rc = TB_PLUGIN_OK;

fail:
        free(groups);
        for (int i = 0; i < 2; i++) {
                if (outp[i] >= 0)
                        close(outp[i]);
                if (errp[i] >= 0)
                        close(errp[i]);
        }
        if (r) {
                free(r->io[0].buf);
                free(r->io[1].buf);
                free(r);
        }
        free(argv);
        sh_env_free(&env);
        free(pwbuf);
        return rc;
}
