/**
 * @file executor/plugin_probe.c
 * @brief tb_plugin_probe(): load a plugin and run one task on it in a
 *        forked child, so that a crashing plugin cannot take the caller down.
 */
#include "executor/plugin_host.h"

#include "executor/plugin_host_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the crash-isolating probe ------------------------------------------- */

/* Child -> parent messages: a type byte, a 32-bit length, the payload. */
enum {
        TB_PLUGIN_HOST_PROBE_OUTPUT = 'O',
        TB_PLUGIN_HOST_PROBE_RESULT = 'R',
        TB_PLUGIN_HOST_PROBE_ERROR = 'E',
};

typedef struct tb_plugin_host_probe_wire {
        int32_t status, exit_code, signal, err;
        int64_t started_ms, finished_ms;
} tb_plugin_host_probe_wire_t;

typedef struct tb_plugin_host_probe_child {
        int fd;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        tb_plugin_host_probe_wire_t wire;
        char error[512];
} tb_plugin_host_probe_child_t;

static void tb_plugin_host_probe_write_all(int fd, const void *p, size_t len) {
        const char *c = p;
        while (len > 0) {
                ssize_t n = write(fd, c, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        _exit(3); /* the parent went away */
                c += n;
                len -= (size_t)n;
        }
}

static void tb_plugin_host_probe_send(tb_plugin_host_probe_child_t *pc, char type,
                                      const void *a, size_t alen, const void *b,
                                      size_t blen) {
        uint32_t len = (uint32_t)(alen + blen);
        pthread_mutex_lock(&pc->lock);
        tb_plugin_host_probe_write_all(pc->fd, &type, 1);
        tb_plugin_host_probe_write_all(pc->fd, &len, sizeof(len));
        if (alen)
                tb_plugin_host_probe_write_all(pc->fd, a, alen);
        if (blen)
                tb_plugin_host_probe_write_all(pc->fd, b, blen);
        pthread_mutex_unlock(&pc->lock);
}

static void tb_plugin_host_probe_output(void *opaque, void *run_opaque, int stream,
                                        const void *data, size_t len) {
        (void)run_opaque;
        (void)stream;
        tb_plugin_host_probe_send(opaque, TB_PLUGIN_HOST_PROBE_OUTPUT, data, len, NULL, 0);
}

static void tb_plugin_host_probe_finished(void *opaque, void *run_opaque,
                                          const tb_plugin_result_t *res) {
        (void)run_opaque;
        tb_plugin_host_probe_child_t *pc = opaque;
        pthread_mutex_lock(&pc->lock);
        pc->wire.status = res->status;
        pc->wire.exit_code = res->exit_code;
        pc->wire.signal = res->signal;
        pc->wire.started_ms = res->started_ms;
        pc->wire.finished_ms = res->finished_ms;
        snprintf(pc->error, sizeof(pc->error), "%s", res->error ? res->error : "");
        pc->done = true;
        pthread_cond_broadcast(&pc->cond);
        pthread_mutex_unlock(&pc->lock);
}

static void tb_plugin_host_probe_child_main(int fd, const char *path, const tb_plugin_kv_t *config,
                                            size_t n_config, const tb_plugin_run_t *run) {
        /* Let a crash be a crash: sanitizers and host handlers would
         * otherwise turn SIGSEGV into an exit code. */
        static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE,
                                            SIGABRT, SIGTRAP, SIGSYS};
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        for (size_t i = 0; i < TB_ARRAY_LEN(crash_signals); i++)
                sigaction(crash_signals[i], &sa, NULL);
        sigset_t all;
        sigemptyset(&all);
        pthread_sigmask(SIG_SETMASK, &all, NULL);

        tb_plugin_host_probe_child_t pc = {.fd = fd};
        pthread_mutex_init(&pc.lock, NULL);
        pthread_cond_init(&pc.cond, NULL);
        tb_plugin_sink_t sink = {.opaque = &pc,
                                 .output = tb_plugin_host_probe_output,
                                 .finished = tb_plugin_host_probe_finished};
        char e[1024];
        tb_plugin_instance_t *pi = NULL;
        tb_err_t err = tb_plugin_load(path, config, n_config, &sink, &pi, e, sizeof(e));
        if (!err)
                err = tb_plugin_run_start(pi, run, NULL, NULL, e, sizeof(e));
        if (err) {
                int32_t code = err;
                tb_plugin_host_probe_send(&pc, TB_PLUGIN_HOST_PROBE_ERROR, &code, sizeof(code),
                                          e, strlen(e));
                _exit(0);
        }
        pthread_mutex_lock(&pc.lock);
        while (!pc.done)
                pthread_cond_wait(&pc.cond, &pc.lock);
        pthread_mutex_unlock(&pc.lock);
        tb_plugin_host_probe_send(&pc, TB_PLUGIN_HOST_PROBE_RESULT, &pc.wire, sizeof(pc.wire),
                                  pc.error, strlen(pc.error));
        tb_plugin_unload(pi, 10000);
        _exit(0);
}

tb_err_t tb_plugin_probe(const char *path, const tb_plugin_kv_t *config,
                         size_t n_config, const tb_plugin_run_t *run,
                         int timeout_ms, tb_plugin_probe_result_t *out,
                         char *errstr, size_t errstr_size) {
        char stem[64];
        tb_buf_t in = {0};
        int pfd[2];
        tb_err_t err = TB_OK;

        memset(out, 0, sizeof(*out));
        out->exit_code = -1;
        tb_plugin_stem(path ? path : "", stem, sizeof(stem));
        if (pipe2(pfd, O_CLOEXEC) != 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_IO, "pipe: %s",
                                 strerror(errno));
        pid_t pid = fork();
        if (pid < 0) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_IO, "fork: %s",
                                strerror(errno));
                close(pfd[0]);
                close(pfd[1]);
                return err;
        }
        if (pid == 0) {
                close(pfd[0]);
                tb_plugin_host_probe_child_main(pfd[1], path, config, n_config, run);
                _exit(0);
        }
        close(pfd[1]);

        int64_t deadline = tb_mono_us() + (int64_t)timeout_ms * 1000;
        bool timed_out = false;
        char chunk[65536];
        for (;;) {
                int64_t left = (deadline - tb_mono_us()) / 1000;
                if (left <= 0) {
                        timed_out = true;
                        break;
                }
                struct pollfd p = {.fd = pfd[0], .events = POLLIN};
                int pr = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
                if (pr < 0 && errno == EINTR)
                        continue;
                if (pr == 0)
                        continue;
                ssize_t n = read(pfd[0], chunk, sizeof(chunk));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (tb_buf_append(&in, chunk, (size_t)n) != TB_OK) {
                        timed_out = false;
                        kill(pid, SIGKILL);
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                        "out of memory reading the probe's output");
                        break;
                }
        }
        close(pfd[0]);
        if (timed_out)
                kill(pid, SIGKILL);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        if (err)
                goto done;
        if (timed_out) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_TIMEOUT,
                                "plugin '%s' (%s) did not finish within %d ms; "
                                "probe process killed", stem, path, timeout_ms);
                goto done;
        }
        if (WIFSIGNALED(st)) {
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "plugin '%s' (%s) crashed with signal %d (%s)",
                                stem, path, WTERMSIG(st), strsignal(WTERMSIG(st)));
                goto done;
        }

        /* Decode the messages. */
        bool have_result = false;
        size_t off = 0;
        while (off + 5 <= in.len) {
                char type = in.data[off];
                uint32_t len;
                memcpy(&len, in.data + off + 1, sizeof(len));
                if (off + 5 + len > in.len)
                        break;
                const char *payload = in.data + off + 5;
                if (type == TB_PLUGIN_HOST_PROBE_OUTPUT) {
                        if (tb_buf_append(&out->output, payload, len) != TB_OK) {
                                err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM,
                                                "out of memory");
                                goto done;
                        }
                } else if (type == TB_PLUGIN_HOST_PROBE_ERROR && len >= sizeof(int32_t)) {
                        int32_t code;
                        memcpy(&code, payload, sizeof(code));
                        err = tb_seterr(errstr, errstr_size, (tb_err_t)code, "%.*s",
                                        (int)(len - sizeof(code)), payload + sizeof(code));
                        goto done;
                } else if (type == TB_PLUGIN_HOST_PROBE_RESULT &&
                           len >= sizeof(tb_plugin_host_probe_wire_t)) {
                        tb_plugin_host_probe_wire_t w;
                        memcpy(&w, payload, sizeof(w));
                        out->status = w.status;
                        out->exit_code = w.exit_code;
                        out->signal = w.signal;
                        out->started_ms = w.started_ms;
                        out->finished_ms = w.finished_ms;
                        size_t el = len - sizeof(w);
                        if (el >= sizeof(out->error))
                                el = sizeof(out->error) - 1;
                        memcpy(out->error, payload + sizeof(w), el);
                        out->error[el] = '\0';
                        have_result = true;
                }
                off += 5 + len;
        }
        if (!have_result)
                err = tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                "plugin '%s' (%s): the probe process exited with "
                                "status %d without reporting a result", stem, path,
                                WIFEXITED(st) ? WEXITSTATUS(st) : -1);
done:
        tb_buf_free(&in);
        if (err)
                tb_buf_free(&out->output);
        return err;
}

void tb_plugin_probe_free(tb_plugin_probe_result_t *res) {
        if (res)
                tb_buf_free(&res->output);
}
