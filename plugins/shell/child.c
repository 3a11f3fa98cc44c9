/**
 * @file child.c
 * @brief The shell plugin's process start: clone() a child that shares our
 *        memory until it execs (CLONE_VM | CLONE_VFORK, as posix_spawn()
 *        does), and in it, between clone and execve, give the task its own
 *        session, default signals, its stdio, its working directory, its OS
 *        user's groups, gid and uid, and no other descriptor.
 *
 * Why not fork(): copying the page tables of a daemon with hundreds of MiB
 * mapped costs far more than the exec; why not posix_spawn(): it cannot
 * change user, which cost an extra exec of util-linux setpriv per run.
 *
 * Rules for the child (it runs on a stack of its own inside our address
 * space, with the calling thread's TLS, while that thread is suspended):
 *  - raw system calls only. glibc's setgroups()/setresuid()/setresgid()
 *    broadcast the change to every thread of "this process" (a signal to each
 *    thread it knows of, waiting for them): here those are the parent's
 *    threads, and the child would hang or change them. Nothing that can
 *    allocate, lock or look anything up (NSS): the supplementary groups are
 *    resolved by the parent with getgrouplist().
 *  - all signals are blocked in the calling thread before clone (so no
 *    handler of ours can run on the shared memory in the child), reset to
 *    their defaults in the child (an ignored signal would survive execve),
 *    and unblocked just before execve.
 *  - a failure is written into the parent's sh_child_fail_t (shared memory;
 *    the parent reads it once CLONE_VFORK lets it go, which happens at the
 *    child's execve or exit), then the child exits 127.
 *  - not instrumented by the sanitizers: their runtime must not run in a
 *    process that is half ours.
 */
#include "shell_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

#if defined(__clang__)
#define SH_NO_SANITIZE __attribute__((no_sanitize("address", "undefined"), noinline))
#else
#define SH_NO_SANITIZE __attribute__((no_sanitize_address, no_sanitize_undefined, noinline))
#endif

/* Size of the kernel's sigset for rt_sigaction / rt_sigprocmask. */
#define SH_KSIGSET_SIZE ((_NSIG - 1) / 8)
#define SH_CHILD_STACK (32 * 1024)

/* Where the child stopped. */
enum {
        SH_STAGE_NONE = 0,
        SH_STAGE_SETSID,
        SH_STAGE_SIGNALS,
        SH_STAGE_STDIN,
        SH_STAGE_STDIO,
        SH_STAGE_CHDIR,
        SH_STAGE_SETGROUPS,
        SH_STAGE_SETRESGID,
        SH_STAGE_SETRESUID,
        SH_STAGE_VERIFY,
        SH_STAGE_CLOSE_FDS,
        SH_STAGE_SIGMASK,
        SH_STAGE_EXEC,
};

typedef struct sh_child_fail {
        volatile int stage; /* SH_STAGE_* */
        volatile int err;   /* errno there */
} sh_child_fail_t;

typedef struct sh_child_arg {
        const sh_child_spec_t *spec;
        sh_child_fail_t *fail;
} sh_child_arg_t;

SH_NO_SANITIZE static int sh_child_die(sh_child_fail_t *fail, int stage, int err) {
        fail->err = err ? err : EINVAL;
        fail->stage = stage;
        syscall(SYS_exit_group, 127);
        return 127;
}

/* Make \p fd descriptor \p target with close-on-exec cleared. */
SH_NO_SANITIZE static long sh_child_dup(int fd, int target) {
        if (fd == target)
                return syscall(SYS_fcntl, fd, F_SETFD, 0);
        return syscall(SYS_dup3, fd, target, 0);
}

SH_NO_SANITIZE static int sh_child_main(void *varg) {
        const sh_child_arg_t *a = varg;
        const sh_child_spec_t *s = a->spec;
        sh_child_fail_t *f = a->fail;
        /* SIG_DFL is 0 and the flags, restorer and mask are empty: an
         * all-zero kernel sigaction, whatever the architecture's layout. */
        static const unsigned long dfl_action[16];
        static const unsigned long no_signals[16];

        /* Its own session, so its own process group (pgid = pid). */
        if (syscall(SYS_setsid) < 0)
                return sh_child_die(f, SH_STAGE_SETSID, errno);
        for (int sig = 1; sig < _NSIG; sig++) {
                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                if (syscall(SYS_rt_sigaction, sig, dfl_action, NULL, SH_KSIGSET_SIZE) < 0 &&
                    errno != EINVAL)
                        return sh_child_die(f, SH_STAGE_SIGNALS, errno);
        }
        long nul = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC);
        if (nul < 0)
                return sh_child_die(f, SH_STAGE_STDIN, errno);
        /* The parent keeps the pipes' descriptors above 2, so these cannot
         * overwrite one another. */
        if (sh_child_dup((int)nul, 0) < 0)
                return sh_child_die(f, SH_STAGE_STDIN, errno);
        if (sh_child_dup(s->out_fd, 1) < 0 || sh_child_dup(s->err_fd, 2) < 0)
                return sh_child_die(f, SH_STAGE_STDIO, errno);
        /* Entered while we still have the executor's rights, as before. */
        if (syscall(SYS_chdir, s->workdir) < 0)
                return sh_child_die(f, SH_STAGE_CHDIR, errno);
        if (s->switch_user) {
                /* Groups first: after the gid and uid change we no longer may. */
                if (syscall(SYS_setgroups, s->n_groups, s->groups) < 0)
                        return sh_child_die(f, SH_STAGE_SETGROUPS, errno);
                if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0)
                        return sh_child_die(f, SH_STAGE_SETRESGID, errno);
                if (syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0)
                        return sh_child_die(f, SH_STAGE_SETRESUID, errno);
                /* Trust, but check: every one of real, effective and saved. */
                uid_t ru = (uid_t)-1, eu = (uid_t)-1, su = (uid_t)-1;
                gid_t rg = (gid_t)-1, eg = (gid_t)-1, sg = (gid_t)-1;
                if (syscall(SYS_getresuid, &ru, &eu, &su) < 0 ||
                    syscall(SYS_getresgid, &rg, &eg, &sg) < 0)
                        return sh_child_die(f, SH_STAGE_VERIFY, errno);
                if (ru != s->uid || eu != s->uid || su != s->uid || rg != s->gid ||
                    eg != s->gid || sg != s->gid)
                        return sh_child_die(f, SH_STAGE_VERIFY, EPERM);
        }
        /* Nothing of ours but stdio: descriptors opened without O_CLOEXEC by
         * any library in the daemon included. */
        if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0) {
                if (errno != ENOSYS)
                        return sh_child_die(f, SH_STAGE_CLOSE_FDS, errno);
                for (int fd = 3; fd < s->max_fd; fd++)
                        syscall(SYS_close, fd);
        }
        if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, no_signals, NULL, SH_KSIGSET_SIZE) < 0)
                return sh_child_die(f, SH_STAGE_SIGMASK, errno);
        syscall(SYS_execve, s->path, s->argv, s->envp);
        return sh_child_die(f, SH_STAGE_EXEC, errno);
}

static const char *sh_stage_name(int stage) {
        switch (stage) {
        case SH_STAGE_SETSID: return "setsid";
        case SH_STAGE_SIGNALS: return "resetting signal dispositions";
        case SH_STAGE_STDIN: return "opening /dev/null as stdin";
        case SH_STAGE_STDIO: return "connecting stdout and stderr";
        case SH_STAGE_CHDIR: return "chdir";
        case SH_STAGE_SETGROUPS: return "setgroups";
        case SH_STAGE_SETRESGID: return "setresgid";
        case SH_STAGE_SETRESUID: return "setresuid";
        case SH_STAGE_VERIFY: return "checking the new ids";
        case SH_STAGE_CLOSE_FDS: return "close_range";
        case SH_STAGE_SIGMASK: return "unblocking signals";
        case SH_STAGE_EXEC: return "execve";
        default: return "?";
        }
}

int sh_child_spawn(const sh_child_spec_t *spec, pid_t *pid, char *errbuf,
                   size_t errbuf_size) {
        /* The child's stack: ours is not used while CLONE_VFORK holds us. */
        _Alignas(64) char stack[SH_CHILD_STACK];
        sh_child_fail_t fail = {SH_STAGE_NONE, 0};
        sh_child_arg_t arg = {spec, &fail};
        sigset_t all, old;

        memset(&all, 0xff, sizeof(all));
        /* Raw, to block glibc's internal signals too (sigfillset leaves them
         * out). */
        if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, SH_KSIGSET_SIZE) < 0)
                return tb_pu_fail(errbuf, errbuf_size, "cannot block signals to start "
                                  "the run: %s", strerror(errno));
        pid_t p = clone(sh_child_main, stack + sizeof(stack),
                        CLONE_VM | CLONE_VFORK | SIGCHLD, &arg);
        int clone_err = errno;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, SH_KSIGSET_SIZE);
        if (p < 0)
                return tb_pu_fail(errbuf, errbuf_size, "cannot start a process (clone): %s%s",
                                  strerror(clone_err),
                                  clone_err == EAGAIN ? " (process limit reached?)" : "");
        if (fail.stage == SH_STAGE_NONE) {
                *pid = p;
                return TB_PLUGIN_OK;
        }

        /* It exited before execve: collect it and say why. */
        int status;
        while (waitpid(p, &status, 0) < 0 && errno == EINTR)
                ;
        int stage = fail.stage, err = fail.err;
        const char *why = strerror(err);
        switch (stage) {
        case SH_STAGE_SETGROUPS:
        case SH_STAGE_SETRESGID:
        case SH_STAGE_SETRESUID:
        case SH_STAGE_VERIFY:
                return tb_pu_fail(errbuf, errbuf_size, "cannot switch to os user '%s' "
                                  "(uid %u, gid %u, %zu group(s)): %s: %s%s", spec->user,
                                  (unsigned)spec->uid, (unsigned)spec->gid, spec->n_groups,
                                  sh_stage_name(stage), why,
                                  err == EPERM ? " (the executor needs CAP_SETUID and "
                                                 "CAP_SETGID to run tasks as other users)"
                                               : "");
        case SH_STAGE_CHDIR:
                return tb_pu_fail(errbuf, errbuf_size, "cannot enter workdir '%s': %s",
                                  spec->workdir, why);
        case SH_STAGE_EXEC:
                return tb_pu_fail(errbuf, errbuf_size, "cannot start '%s' in '%s' as os "
                                  "user '%s': %s", spec->path, spec->workdir, spec->user, why);
        default:
                return tb_pu_fail(errbuf, errbuf_size, "cannot set up the run's process "
                                  "(%s): %s", sh_stage_name(stage), why);
        }
}
