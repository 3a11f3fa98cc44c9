/**
 * @file test_ssh.c
 * @brief The SSH plugin against a real sshd started by the test on a free
 *        loopback port, with generated host and user keys: output and exit
 *        codes, expiry killing the remote process group, cancel, strict host
 *        key checking (changed and unknown keys), unreachable hosts, a key
 *        the server does not accept, and credentials a task may not set.
 *        Runs as root (sshd needs it); the remote user is root.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "executor/plugin_host.h"
#include "plugins/tbt_collect.h"
#include "support.h"

static tbt_collect_t *col;
static tb_plugin_instance_t *pi;
static char dir[256];
static int port;
static char port_s[16];
static char kh_good[300], kh_changed[300], kh_empty[300], key_good[300], key_other[300];

/* A loopback TCP port nobody listens on right now. */
static int free_port(void) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_geq(fd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t len = sizeof(a);
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static void sh(const char *fmt, const char *arg) {
        char *out = NULL;
        int rc = tbt_run(&out, fmt, arg, arg, arg, arg);
        cr_assert_eq(rc, 0, "command failed: %s\n%s", fmt, out ? out : "");
        free(out);
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "w");
        cr_assert(f, "cannot write %s", path);
        fputs(text, f);
        fclose(f);
}

static char *read_pub(const char *path) {
        FILE *f = fopen(path, "r");
        cr_assert(f, "cannot read %s", path);
        static char line[2][1024];
        static int i;
        char *l = line[i++ % 2];
        cr_assert(fgets(l, 1024, f));
        fclose(f);
        /* "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..." */
        char *sp = strchr(l, ' ');
        if (sp && (sp = strchr(sp + 1, ' ')))
                *sp = '\0';
        l[strcspn(l, "\n")] = '\0';
        return l;
}

static void start_sshd(void) {
        snprintf(dir, sizeof(dir), "/tmp/tb-ssh-test-XXXXXX");
        cr_assert(mkdtemp(dir), "mkdtemp failed");
        mkdir("/run/sshd", 0755); /* sshd's privilege separation directory */
        sh("cd '%s' && ssh-keygen -q -t ed25519 -N '' -f host_key && "
           "ssh-keygen -q -t ed25519 -N '' -f other_host_key && "
           "ssh-keygen -q -t ed25519 -N '' -f user_key && "
           "ssh-keygen -q -t ed25519 -N '' -f other_key && "
           "cp user_key.pub authorized_keys", dir);
        port = free_port();
        snprintf(port_s, sizeof(port_s), "%d", port);
        char conf[4096], path[512];
        snprintf(conf, sizeof(conf),
                 "Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\n"
                 "PidFile %s/sshd.pid\nAuthorizedKeysFile %s/authorized_keys\n"
                 "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                 "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                 "UsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
                 port, dir, dir, dir);
        snprintf(path, sizeof(path), "%s/sshd_config", dir);
        write_file(path, conf);

        char line[2048];
        snprintf(kh_good, sizeof(kh_good), "%s/known_hosts", dir);
        snprintf(path, sizeof(path), "%s/host_key.pub", dir);
        snprintf(line, sizeof(line), "[127.0.0.1]:%d %s\n", port, read_pub(path));
        write_file(kh_good, line);
        snprintf(kh_changed, sizeof(kh_changed), "%s/known_hosts_changed", dir);
        snprintf(path, sizeof(path), "%s/other_host_key.pub", dir);
        snprintf(line, sizeof(line), "[127.0.0.1]:%d %s\n", port, read_pub(path));
        write_file(kh_changed, line);
        snprintf(kh_empty, sizeof(kh_empty), "%s/known_hosts_empty", dir);
        write_file(kh_empty, "");
        snprintf(key_good, sizeof(key_good), "%s/user_key", dir);
        snprintf(key_other, sizeof(key_other), "%s/other_key", dir);

        /* Without -D sshd daemonizes once it listens: the port is ready when
         * this returns. */
        sh("/usr/sbin/sshd -f '%s/sshd_config' -E '%s/sshd.log'", dir);
}

static void stop_sshd(void) {
        char *out = NULL;
        tbt_run(&out, "kill $(cat '%s/sshd.pid') 2>/dev/null; rm -rf '%s'", dir, dir);
        free(out);
}

static void setup(void) {
        start_sshd();
        tb_plugin_sink_t sink;
        col = tbt_collect_new(&sink);
        char path[512], err[1024] = "";
        snprintf(path, sizeof(path), "%s/plugins/ssh.so", tbt_build_dir());
        tb_plugin_kv_t conf[] = {{"kill_grace", "1s"}, {"connect_timeout", "5s"},
                                 {"heartbeat_interval", "200ms"}};
        tb_err_t rc = tb_plugin_load(path, conf, TB_ARRAY_LEN(conf), &sink, &pi, err,
                                     sizeof(err));
        cr_assert_eq(rc, TB_OK, "%s", err);
}

static void teardown(void) {
        tb_plugin_unload(pi, 30000);
        pi = NULL;
        tbt_collect_free(col);
        col = NULL;
        stop_sshd();
}

TestSuite(ssh, .init = setup, .fini = teardown, .timeout = 120);

typedef struct {
        tb_plugin_kv_t opts[4];
        tb_plugin_kv_t pol[3];
        tb_plugin_run_t run;
} srun_t;

static void mk(srun_t *s, const char *run_id, const char *script, const char *key,
               const char *kh) {
        memset(s, 0, sizeof(*s));
        s->opts[0] = (tb_plugin_kv_t){"host", "127.0.0.1"};
        s->opts[1] = (tb_plugin_kv_t){"port", port_s};
        s->opts[2] = (tb_plugin_kv_t){"user", "root"};
        s->pol[0] = (tb_plugin_kv_t){"ssh_key", key};
        s->pol[1] = (tb_plugin_kv_t){"ssh_known_hosts", kh};
        s->pol[2] = (tb_plugin_kv_t){"os_user", "nobody"};
        s->run = (tb_plugin_run_t){.size = sizeof(tb_plugin_run_t),
                                   .run_id = run_id,
                                   .task_id = "task-s",
                                   .nominal_time_ms = 1767323045000LL,
                                   .attempt = 1,
                                   .script = script,
                                   .options = s->opts,
                                   .n_options = 3,
                                   .security_group = "ops",
                                   .policy = s->pol,
                                   .n_policy = 3};
}

static tbt_runlog_t *run_to_end(int idx, const tb_plugin_run_t *run) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)(intptr_t)idx, NULL, err,
                                          sizeof(err));
        cr_assert_eq(rc, TB_OK, "start %s: %s", run->run_id, err);
        cr_assert(tbt_wait_finished(col, idx, 60000), "run %s never finished", run->run_id);
        return &col->runs[idx];
}

Test(ssh, success_with_output_env_and_workdir) {
        srun_t s;
        mk(&s, "ok", "echo out; echo err >&2; echo \"$TASKBUS_RUN_ID $TASKBUS_TASK_ID "
           "$TASKBUS_NOMINAL_TIME $TASKBUS_ATTEMPT $GREETING\"; pwd; printf partial",
           key_good, kh_good);
        tb_plugin_kv_t env[] = {{"GREETING", "it's \"quoted\" $HOME"}};
        s.run.env = env;
        s.run.n_env = 1;
        s.run.workdir = "/tmp";
        tbt_runlog_t *l = run_to_end(0, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        cr_assert_eq(l->res.exit_code, 0);
        char *out = tbt_stream(col, 0, TB_PLUGIN_STDOUT);
        char *err = tbt_stream(col, 0, TB_PLUGIN_STDERR);
        cr_assert_str_eq(out, "out\nok task-s 2026-01-02T03:04:05Z 1 it's \"quoted\" "
                              "$HOME\n/tmp\npartial");
        cr_assert_str_eq(err, "err\n");
        cr_assert(l->res.started_ms > 0 && l->res.finished_ms >= l->res.started_ms);
        free(out);
        free(err);
}

Test(ssh, argv_form_is_quoted) {
        srun_t s;
        mk(&s, "argv", NULL, key_good, kh_good);
        const char *argv[] = {"printf", "%s|", "a b", "it's", "$(id)", "*", NULL};
        s.run.argv = argv;
        tbt_runlog_t *l = run_to_end(1, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 1, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "a b|it's|$(id)|*|");
        free(out);
}

Test(ssh, nonzero_exit_is_a_failed_run) {
        srun_t s;
        mk(&s, "fail", "echo oops >&2; exit 3", key_good, kh_good);
        tbt_runlog_t *l = run_to_end(2, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_FAILED);
        cr_assert_eq(l->res.exit_code, 3);
        cr_assert_str_eq(l->error, "exited with code 3");
}

static bool remote_sleep_gone(void *marker) {
        char *out = NULL;
        /* "[6]" keeps pgrep's own shell from matching itself. */
        int rc = tbt_run(&out, "pgrep -f '%s'", (const char *)marker);
        free(out);
        return rc == 1; /* no process matched */
}

Test(ssh, expiry_times_out_and_kills_the_remote_group) {
        srun_t s;
        mk(&s, "expiry", "echo started; sleep 613 & sleep 614; wait", key_good, kh_good);
        s.run.expiry_ms = 2000;
        int64_t t0 = tb_mono_us();
        tbt_runlog_t *l = run_to_end(3, &s.run);
        int64_t took = (tb_mono_us() - t0) / 1000;
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_TIMED_OUT, "%s", l->error);
        cr_assert(strstr(l->error, "expiry of 2000 ms"), "%s", l->error);
        cr_assert(took >= 2000 && took < 15000, "took %lld ms", (long long)took);
        char *out = tbt_stream(col, 3, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "started\n");
        free(out);
        cr_assert(l->heartbeats > 0);
        /* Both the foreground and the background sleep are gone. */
        cr_assert(tbt_wait_until(remote_sleep_gone, "sleep 61[34]", 10000),
                  "the remote sleeps survived the expiry");
}

Test(ssh, leftovers_of_a_finished_command_are_stopped) {
        srun_t s;
        mk(&s, "leftover", "sleep 616 & echo done", key_good, kh_good);
        tbt_runlog_t *l = run_to_end(10, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_SUCCEEDED, "%s", l->error);
        char *out = tbt_stream(col, 10, TB_PLUGIN_STDOUT);
        cr_assert_str_eq(out, "done\n");
        free(out);
        cr_assert(tbt_wait_until(remote_sleep_gone, "sleep 61[6]", 10000));
}

Test(ssh, cancel_stops_the_remote_command) {
        srun_t s;
        mk(&s, "cancel", "echo started; sleep 615", key_good, kh_good);
        char err[1024] = "";
        tb_plugin_hrun_t *hr = NULL;
        cr_assert_eq(tb_plugin_run_start(pi, &s.run, (void *)(intptr_t)4, &hr, err,
                                         sizeof(err)), TB_OK, "%s", err);
        cr_assert(tbt_wait_output(col, 4, 30000), "no output");
        cr_assert_eq(tb_plugin_run_cancel(hr, "operator said so", err, sizeof(err)), TB_OK);
        cr_assert(tbt_wait_finished(col, 4, 30000));
        tb_plugin_run_release(hr);
        cr_assert_eq(col->runs[4].res.status, TB_PLUGIN_RUN_CANCELLED);
        cr_assert_str_eq(col->runs[4].error, "cancelled: operator said so");
        cr_assert(tbt_wait_until(remote_sleep_gone, "sleep 61[5]", 10000));
}

Test(ssh, changed_host_key_is_refused) {
        srun_t s;
        mk(&s, "changed", "echo should-not-run", key_good, kh_changed);
        tbt_runlog_t *l = run_to_end(5, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        char want[512];
        snprintf(want, sizeof(want), "host key of 127.0.0.1:%d CHANGED", port);
        cr_assert(strstr(l->error, want), "%s", l->error);
        cr_assert_eq(l->chunks, 0);
}

Test(ssh, unknown_host_is_refused) {
        srun_t s;
        mk(&s, "unknown", "echo should-not-run", key_good, kh_empty);
        tbt_runlog_t *l = run_to_end(6, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        char want[512];
        snprintf(want, sizeof(want), "host key of 127.0.0.1:%d is not in known_hosts %s",
                 port, kh_empty);
        cr_assert(strstr(l->error, want), "%s", l->error);
        cr_assert_eq(l->chunks, 0);
}

Test(ssh, unreachable_host_is_an_infra_error) {
        srun_t s;
        mk(&s, "closed", "true", key_good, kh_good);
        char closed[16];
        snprintf(closed, sizeof(closed), "%d", free_port());
        s.opts[1].value = closed;
        tbt_runlog_t *l = run_to_end(7, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert(strstr(l->error, "cannot connect to 127.0.0.1:"), "%s", l->error);
}

Test(ssh, key_not_authorized_is_an_infra_error) {
        srun_t s;
        mk(&s, "badkey", "echo should-not-run", key_other, kh_good);
        tbt_runlog_t *l = run_to_end(8, &s.run);
        cr_assert_eq(l->res.status, TB_PLUGIN_RUN_INFRA_ERROR);
        cr_assert(strstr(l->error, "authentication as root@127.0.0.1:"), "%s", l->error);
        cr_assert(strstr(l->error, key_other), "%s", l->error);
        cr_assert_eq(l->chunks, 0);
}

static void expect_refused(const tb_plugin_run_t *run, const char *needle) {
        char err[1024] = "";
        tb_err_t rc = tb_plugin_run_start(pi, run, (void *)(intptr_t)9, NULL, err,
                                          sizeof(err));
        cr_assert_eq(rc, TB_ERR_IO, "run was not refused");
        cr_assert(strstr(err, needle), "'%s' not in: %s", needle, err);
}

Test(ssh, credentials_from_a_task_are_refused) {
        srun_t s;
        mk(&s, "taskkey", "true", key_good, kh_good);
        s.opts[3] = (tb_plugin_kv_t){"ssh_key", "/root/.ssh/id_ed25519"};
        s.run.n_options = 4;
        expect_refused(&s.run, "executor option 'ssh_key' is refused: the SSH key and "
                               "known_hosts come from the executor's configuration");
        s.opts[3] = (tb_plugin_kv_t){"known_hosts", "/dev/null"};
        expect_refused(&s.run, "executor option 'known_hosts' is refused");

        /* A group without a key cannot run SSH tasks at all. */
        mk(&s, "nokey", "true", key_good, kh_good);
        s.run.policy = &s.pol[2];
        s.run.n_policy = 1;
        expect_refused(&s.run, "security group 'ops' has no ssh_key: set "
                               "groups.ops.ssh_key");
        mk(&s, "nohost", "true", key_good, kh_good);
        s.run.options = &s.opts[1];
        s.run.n_options = 2;
        expect_refused(&s.run, "executor option 'host' is required");
}
