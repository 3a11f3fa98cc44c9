/**
 * @file container.c
 * @brief The container executor plugin: runs each task in a fresh container
 *        through the Docker Engine API (dockerd, or `podman system service`)
 *        on a unix socket, streams its logs, enforces its expiry and removes
 *        the container afterwards.
 *
 * Design (operator view: docs/executors.md):
 *  - Only the public plugin ABI, libcurl and jansson: an outside author's
 *    plugin. Every engine call is a plain HTTP request on the unix socket
 *    (CURLOPT_UNIX_SOCKET_PATH) under the API version prefix ("/v1.41").
 *  - start() validates everything a task can get wrong (options, the image
 *    allow-list and resource caps of the task's security group, which reach
 *    the plugin as tb_plugin_run_t.policy) and prepares the create request;
 *    then ONE worker thread per run checks that the image is present (never
 *    pulls), creates, starts, follows the logs and waits for the exit code
 *    in a curl multi loop that a cancel() wakes with curl_multi_wakeup().
 *  - Every container carries labels io.taskbus.managed, run_id, task_id and
 *    io.taskbus.owner = "BOOTID/PIDNS/PID/STARTTIME/NONCE" naming the plugin
 *    instance that made it. The sweeper thread (at init, then every
 *    sweep_interval) removes managed containers nobody will collect: ours
 *    whose run is no longer active, those of a dead executor process on this
 *    machine (running or not: the owner's pid is gone or reused), those made
 *    before this machine's last boot, and, for owners it cannot judge
 *    (another pid namespace, no owner label), containers that have been
 *    exited for longer than sweep_grace.
 *  - Locking: st->lock guards the run lists and each run's cancel request;
 *    host callbacks are made with no lock held.
 */
#include <taskbus/plugin.h>

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define CT_LABEL_MANAGED "io.taskbus.managed"
#define CT_LABEL_RUN "io.taskbus.run_id"
#define CT_LABEL_TASK "io.taskbus.task_id"
#define CT_LABEL_OWNER "io.taskbus.owner"
#define CT_POLL_MS 1000          /* longest sleep of a worker between checks */
#define CT_LOG_DRAIN_MS 5000     /* logs still open this long after the exit */
#define CT_STOP_SLACK_MS 30000   /* beyond stop_timeout before we give up */
#define CT_ERR_MAX 1024

enum { CT_OUT_NONE = 0, CT_OUT_TIMEOUT, CT_OUT_CANCEL };

typedef struct ct_buf {
        char *data;
        size_t len, cap;
} ct_buf_t;

struct ct_state;

/* The demultiplexer of the engine's log stream: frames of an 8-byte header
 * [stream, 0, 0, 0, size as big-endian u32] then size bytes, split across
 * HTTP chunks anywhere. */
typedef struct ct_demux {
        unsigned char hdr[8];
        size_t hdr_len;
        uint32_t left;          /* payload bytes of the current frame still due */
        int stream;             /* TB_PLUGIN_STDOUT / STDERR of the current frame */
} ct_demux_t;

typedef struct ct_run {
        struct ct_run *next;            /* st->runs or st->zombies, under st->lock */
        struct ct_state *st;
        const tb_plugin_run_t *run;     /* host-owned until finished() */
        char *run_id;                   /* our copy, for the sweeper */
        pthread_t thread;
        CURLM *multi;                   /* valid while on st->runs */

        /* Under st->lock. */
        bool cancel_req;
        char cancel_reason[200];

        /* Set by start(), read by the worker. */
        char *image;
        char *create_body;              /* JSON */
        int64_t expiry_ms;
        int64_t stop_timeout_s;

        /* Worker only. */
        char cid[96];
        ct_demux_t demux;
        CURL *logs_h;
        long logs_status;
        ct_buf_t logs_err;
        int out_stream;                 /* pending output of one write callback */
        ct_buf_t out;
} ct_run_t;

typedef struct ct_state {
        const tb_plugin_host_t *host;
        char *socket;
        char prefix[32];                /* "/v1.41" or "" */
        char *default_user;
        bool allow_root, sweep;
        int64_t stop_timeout_ms, heartbeat_ms, sweep_interval_ms, sweep_grace_ms;
        int64_t request_timeout_ms;
        char owner[256];                /* our io.taskbus.owner label */
        char boot_id[64], pidns[64];

        pthread_mutex_t lock;
        pthread_cond_t cond;            /* CLOCK_MONOTONIC: wakes the sweeper */
        ct_run_t *runs;                 /* active: cancel() and the sweeper see them */
        ct_run_t *zombies;              /* finished, thread to be joined */
        bool stopping;
        pthread_t sweeper;
        bool sweeper_started, curl_inited;
} ct_state_t;

static const tb_plugin_config_key_t ct_keys[] = {
        {"socket", "unix socket of the Docker Engine API (dockerd or `podman system "
         "service`)", "/run/podman/podman.sock", 0, TB_PLUGIN_CONF_STRING},
        {"api_version", "Docker Engine API version used as the path prefix "
         "(\"1.41\" -> /v1.41; empty: no prefix)", "1.41", 0, TB_PLUGIN_CONF_STRING},
        {"stop_timeout", "time a container gets between SIGTERM and SIGKILL when "
         "it is stopped", "10s", 0, TB_PLUGIN_CONF_DURATION},
        {"default_user", "container user of runs that name none", "65534:65534", 0,
         TB_PLUGIN_CONF_STRING},
        {"allow_root", "allow containers to run as root (uid 0)", "false", 0,
         TB_PLUGIN_CONF_BOOL},
        {"heartbeat_interval", "how often a running run reports it is alive", "10s",
         0, TB_PLUGIN_CONF_DURATION},
        {"request_timeout", "longest wait for one engine request (create, start, "
         "remove...)", "60s", 0, TB_PLUGIN_CONF_DURATION},
        {"sweep", "remove leftover taskbus containers (see docs/executors.md)",
         "true", 0, TB_PLUGIN_CONF_BOOL},
        {"sweep_interval", "how often the sweeper looks for leftover containers",
         "60s", 0, TB_PLUGIN_CONF_DURATION},
        {"sweep_grace", "exited containers of owners the sweeper cannot check are "
         "removed after this long", "10m", 0, TB_PLUGIN_CONF_DURATION},
        {0},
};

/* The executor options a task may set. */
static const char *const ct_options[] = {"image", "user", "memory", "cpus", "network",
                                         "stop_timeout", NULL};

/* ---- small helpers ------------------------------------------------------- */

static int64_t ct_mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ct_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ct_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int ct_fail(char *errbuf, size_t errbuf_size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errbuf_size, fmt, ap);
        va_end(ap);
        return TB_PLUGIN_ERROR;
}

static bool ct_buf_add(ct_buf_t *b, const void *data, size_t len) {
        if (b->len + len + 1 > b->cap) {
                size_t ncap = b->cap ? b->cap : 1024;
                while (ncap < b->len + len + 1)
                        ncap *= 2;
                char *nd = realloc(b->data, ncap);
                if (!nd)
                        return false;
                b->data = nd;
                b->cap = ncap;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return true;
}

static void ct_buf_free(ct_buf_t *b) {
        free(b->data);
        *b = (ct_buf_t){0};
}

static const char *ct_opt(const tb_plugin_run_t *run, const char *key) {
        for (size_t i = 0; run->options && i < run->n_options; i++)
                if (run->options[i].key && !strcmp(run->options[i].key, key))
                        return run->options[i].value ? run->options[i].value : "";
        return NULL;
}

static bool ct_has_policy(const tb_plugin_run_t *run) {
        return TB_PLUGIN_HAS_FIELD(run, tb_plugin_run_t, n_policy);
}

static const char *ct_policy(const tb_plugin_run_t *run, const char *key) {
        if (!ct_has_policy(run))
                return NULL;
        for (size_t i = 0; run->policy && i < run->n_policy; i++)
                if (run->policy[i].key && !strcmp(run->policy[i].key, key))
                        return run->policy[i].value;
        return NULL;
}

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

/* "2026-01-02T03:04:05.123456789Z" (or with an offset) -> epoch ms; -1 if
 * malformed or the zero time "0001-01-01T00:00:00Z". */
static int64_t ct_parse_time(const char *s) {
        int y, mo, d, h, mi, sec, n = 0;
        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
            y < 1970)
                return -1;
        const char *p = s + n;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        int off = 0;
        if ((*p == '+' || *p == '-') && strlen(p) >= 6) {
                int oh = atoi(p + 1), om = atoi(p + 4);
                off = (*p == '+' ? 1 : -1) * (oh * 60 + om) * 60;
        }
        struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                        .tm_hour = h, .tm_min = mi, .tm_sec = sec};
        return ((int64_t)timegm(&tm) - off) * 1000;
}

/* ---- HTTP on the engine's socket ------------------------------------------ */

static size_t ct_collect_cb(char *data, size_t size, size_t nmemb, void *arg) {
        ct_buf_t *b = arg;
        /* Cap what we keep of a reply: listings can be big, errors are short. */
        if (b->len < 16 * 1024 * 1024 && !ct_buf_add(b, data, size * nmemb))
                return 0;
        return size * nmemb;
}

static CURL *ct_easy(ct_state_t *st, const char *method, const char *path,
                     const char *body, ct_buf_t *resp, char *curl_err) {
        char url[2048];
        snprintf(url, sizeof(url), "http://localhost%s%s", st->prefix, path);
        CURL *h = curl_easy_init();
        if (!h)
                return NULL;
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, st->socket);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (curl_err) {
                curl_err[0] = '\0';
                curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
        }
        if (body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else if (!strcmp(method, "POST")) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
        }
        if (resp) {
                curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ct_collect_cb);
                curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
        }
        return h;
}

/* The engine's own explanation in an error reply ({"message": ...}). */
static void ct_engine_msg(const ct_buf_t *body, char *out, size_t size) {
        json_t *j = body->data ? json_loads(body->data, 0, NULL) : NULL;
        const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
        snprintf(out, size, "%s", m ? m : body->data ? body->data : "(empty reply)");
        out[strcspn(out, "\n")] = '\0';
        json_decref(j);
}

/**
 * One blocking request. @returns 0 with *\p status set (any HTTP status),
 * or -1 when the engine could not be reached (reason in \p err).
 */
static int ct_http(ct_state_t *st, const char *method, const char *path,
                   const char *body, long *status, ct_buf_t *resp, char *err,
                   size_t errsz) {
        char cerr[CURL_ERROR_SIZE];
        ct_buf_t scratch = {0};
        struct curl_slist *hdrs = NULL;
        CURL *h = ct_easy(st, method, path, body, resp ? resp : &scratch, cerr);
        if (!h) {
                snprintf(err, errsz, "out of memory (curl_easy_init)");
                return -1;
        }
        if (body) {
                hdrs = curl_slist_append(NULL, "Content-Type: application/json");
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        }
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)st->request_timeout_ms);
        CURLcode rc = curl_easy_perform(h);
        if (rc != CURLE_OK) {
                snprintf(err, errsz, "%s %s: cannot talk to the container engine at "
                         "%s: %s (is dockerd or `podman system service` running, and "
                         "is the plugin's socket key right?)", method, path, st->socket,
                         cerr[0] ? cerr : curl_easy_strerror(rc));
        } else {
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        }
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        ct_buf_free(&scratch);
        return rc == CURLE_OK ? 0 : -1;
}

/* Force-remove a container (and its anonymous volumes). */
static bool ct_remove(ct_state_t *st, const char *cid, char *err, size_t errsz) {
        char path[256];
        long status = 0;
        ct_buf_t resp = {0};
        snprintf(path, sizeof(path), "/containers/%s?force=1&v=1", cid);
        bool ok = ct_http(st, "DELETE", path, NULL, &status, &resp, err, errsz) == 0;
        if (ok && status != 204 && status != 404) {
                char m[512];
                ct_engine_msg(&resp, m, sizeof(m));
                snprintf(err, errsz, "removing container %.12s: HTTP %ld: %s", cid,
                         status, m);
                ok = false;
        }
        ct_buf_free(&resp);
        return ok;
}

/* ---- validation in start() ------------------------------------------------ */

static bool ct_valid_env_name(const char *s) {
        if (!s || !*s || (*s >= '0' && *s <= '9'))
                return false;
        for (; *s; s++)
                if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9')))
                        return false;
        return true;
}

/* Image references: [registry[:port]/]name[:tag][@digest]. Refusing other
 * characters keeps them safe inside URL paths. */
static bool ct_valid_image(const char *s) {
        if (!s || !*s || strlen(s) > 255 || *s == '/' || *s == '-')
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("._-/:@", *s)))
                        return false;
        return !strstr(s, "..");
}

static bool ct_valid_user(const char *s) {
        if (!s || !*s || strlen(s) > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("._-:", *s)))
                        return false;
        return true;
}

static bool ct_is_root(const char *user) {
        size_t n = strcspn(user, ":");
        return (n == 4 && !strncmp(user, "root", 4)) || (n == 1 && user[0] == '0');
}

/* "536870912", "512m", "512MiB", "1.5g", "1GB" -> bytes; -1 if malformed. */
static int64_t ct_parse_size(const char *s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || !(v > 0) || *s == '-' || *s == '+')
                return -1;
        double mult;
        if (!*end || !strcasecmp(end, "b"))
                mult = 1;
        else if (!strcasecmp(end, "k") || !strcmp(end, "KiB") || !strcmp(end, "kib"))
                mult = 1024.0;
        else if (!strcasecmp(end, "m") || !strcmp(end, "MiB") || !strcmp(end, "mib"))
                mult = 1024.0 * 1024;
        else if (!strcasecmp(end, "g") || !strcmp(end, "GiB") || !strcmp(end, "gib"))
                mult = 1024.0 * 1024 * 1024;
        else if (!strcasecmp(end, "kb"))
                mult = 1e3;
        else if (!strcasecmp(end, "mb"))
                mult = 1e6;
        else if (!strcasecmp(end, "gb"))
                mult = 1e9;
        else
                return -1;
        double bytes = v * mult;
        if (bytes >= 9e18 || bytes != floor(bytes))
                return -1;
        return (int64_t)bytes;
}

static int ct_net_rank(const char *mode) {
        return !strcmp(mode, "none") ? 0 : !strcmp(mode, "bridge") ? 1
               : !strcmp(mode, "host") ? 2 : -1;
}

/* Check the image against the group's allow-list. */
static int ct_check_image(const tb_plugin_run_t *run, const char *image, char *errbuf,
                          size_t errbuf_size) {
        const char *grp = run->security_group ? run->security_group : "";
        if (!ct_has_policy(run))
                return ct_fail(errbuf, errbuf_size, "image '%s' refused: this taskbus "
                               "host passes no security group policy (plugin ABI 1.0), "
                               "so no image is allowed; upgrade taskbus", image);
        char allowed[1024] = "";
        size_t al = 0, n = 0;
        for (size_t i = 0; run->policy && i < run->n_policy; i++) {
                if (!run->policy[i].key || strcmp(run->policy[i].key, "images"))
                        continue;
                const char *v = run->policy[i].value ? run->policy[i].value : "";
                if (!strcmp(v, image))
                        return TB_PLUGIN_OK;
                if (al < sizeof(allowed))
                        al += (size_t)snprintf(allowed + al, sizeof(allowed) - al, "%s%s",
                                               n ? ", " : "", v);
                n++;
        }
        if (n == 0)
                return ct_fail(errbuf, errbuf_size, "image '%s' is not allowed: security "
                               "group '%s' may run no container images; list the images "
                               "it may use in groups.%s.images in the taskbus config "
                               "(e.g. images = [\"%s\"];)", image, grp, grp, image);
        return ct_fail(errbuf, errbuf_size, "image '%s' is not allowed for security "
                       "group '%s' (allowed: %s); use one of those, or add it to "
                       "groups.%s.images in the taskbus config (exact references)",
                       image, grp, allowed, grp);
}

/* Build the create request. */
static int ct_build_create(ct_state_t *st, const tb_plugin_run_t *run, ct_run_t *r,
                           char *errbuf, size_t errbuf_size) {
        int rc = TB_PLUGIN_ERROR;
        const char *grp = run->security_group ? run->security_group : "";
        json_t *body = json_object(), *env = json_array(), *cmd = json_array(),
               *ep = json_array(), *labels = json_object(), *hc = json_object();
        if (!body || !env || !cmd || !ep || !labels || !hc) {
                ct_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }

        for (size_t i = 0; run->options && i < run->n_options; i++) {
                const char *k = run->options[i].key ? run->options[i].key : "";
                bool known = false;
                for (size_t j = 0; ct_options[j]; j++)
                        known = known || !strcmp(k, ct_options[j]);
                if (!known) {
                        ct_fail(errbuf, errbuf_size, "unknown executor option '%s' for "
                                "the container plugin; valid options: image, user, "
                                "memory, cpus, network, stop_timeout", k);
                        goto fail;
                }
        }

        /* What to run. */
        const char *image = ct_opt(run, "image");
        if (!image || !*image) {
                ct_fail(errbuf, errbuf_size, "executor option 'image' is required by "
                        "the container plugin: the image to run, e.g. "
                        "\"localhost/app:1.2\"");
                goto fail;
        }
        if (!ct_valid_image(image)) {
                ct_fail(errbuf, errbuf_size, "executor option 'image' = '%s' is not a "
                        "valid image reference ([registry/]name[:tag][@digest])", image);
                goto fail;
        }
        if (ct_check_image(run, image, errbuf, errbuf_size) != TB_PLUGIN_OK)
                goto fail;
        bool argv_form = run->argv && run->argv[0];
        if (!argv_form && (!run->script || !*run->script)) {
                ct_fail(errbuf, errbuf_size, "the run has neither a script nor an argv");
                goto fail;
        }
        if (argv_form) {
                json_array_append_new(ep, json_string(run->argv[0]));
                for (size_t i = 1; run->argv[i]; i++)
                        json_array_append_new(cmd, json_string(run->argv[i]));
        } else {
                json_array_append_new(ep, json_string("/bin/sh"));
                json_array_append_new(cmd, json_string("-c"));
                json_array_append_new(cmd, json_string(run->script));
        }

        /* As whom. */
        const char *user = ct_opt(run, "user");
        const char *user_from = "executor option 'user'";
        if (!user || !*user) {
                user_from = "the run's os user";
                user = run->os_user && *run->os_user ? run->os_user : NULL;
        }
        if (!user) {
                user_from = "the security group's os_user";
                user = ct_policy(run, "os_user");
        }
        if (!user || !*user) {
                user_from = "the plugin's default_user";
                user = st->default_user;
        }
        if (!ct_valid_user(user)) {
                ct_fail(errbuf, errbuf_size, "container user '%s' (from %s) is invalid: "
                        "use NAME, UID or UID:GID", user, user_from);
                goto fail;
        }
        if (ct_is_root(user) && !st->allow_root) {
                ct_fail(errbuf, errbuf_size, "container user '%s' (from %s) is root, "
                        "which this executor refuses; pick another user or set the "
                        "container plugin's allow_root = true", user, user_from);
                goto fail;
        }

        /* Network: never more open than the group allows. */
        const char *net = ct_opt(run, "network");
        const char *net_max = ct_policy(run, "network");
        if (!net_max || ct_net_rank(net_max) < 0)
                net_max = "none";
        if (!net || !*net)
                net = "none";
        if (ct_net_rank(net) < 0) {
                ct_fail(errbuf, errbuf_size, "executor option 'network' = '%s' is "
                        "invalid: use none, bridge or host", net);
                goto fail;
        }
        if (ct_net_rank(net) > ct_net_rank(net_max)) {
                ct_fail(errbuf, errbuf_size, "executor option 'network' = '%s' exceeds "
                        "what security group '%s' allows (network = \"%s\"); use %s or "
                        "raise groups.%s.network", net, grp, net_max,
                        !strcmp(net_max, "none") ? "none" : "a mode up to that", grp);
                goto fail;
        }

        /* Resources: the request, capped by the group; no request means the cap. */
        const char *mem_s = ct_opt(run, "memory"), *mem_cap_s = ct_policy(run, "memory_max");
        int64_t mem = 0, mem_cap = mem_cap_s ? strtoll(mem_cap_s, NULL, 10) : 0;
        if (mem_s) {
                mem = ct_parse_size(mem_s);
                if (mem < 4 * 1024 * 1024) {
                        ct_fail(errbuf, errbuf_size, "executor option 'memory' = '%s' is "
                                "invalid: give a size of at least 4MiB such as 256m, "
                                "512MiB or 1g", mem_s);
                        goto fail;
                }
                if (mem_cap > 0 && mem > mem_cap) {
                        ct_fail(errbuf, errbuf_size, "executor option 'memory' = '%s' "
                                "(%" PRId64 " bytes) exceeds the cap of security group "
                                "'%s' (memory_max = %" PRId64 " bytes); ask for less or "
                                "raise groups.%s.memory_max", mem_s, mem, grp, mem_cap, grp);
                        goto fail;
                }
        } else {
                mem = mem_cap;
        }
        const char *cpu_s = ct_opt(run, "cpus"), *cpu_cap_s = ct_policy(run, "cpus_max");
        double cpus = 0, cpu_cap = cpu_cap_s ? strtod(cpu_cap_s, NULL) : 0;
        if (cpu_s) {
                char *end;
                cpus = strtod(cpu_s, &end);
                if (end == cpu_s || *end || !(cpus >= 0.01) || cpus > 1024) {
                        ct_fail(errbuf, errbuf_size, "executor option 'cpus' = '%s' is "
                                "invalid: give a number of cores from 0.01 to 1024, "
                                "e.g. 0.5", cpu_s);
                        goto fail;
                }
                if (cpu_cap > 0 && cpus > cpu_cap + 1e-9) {
                        ct_fail(errbuf, errbuf_size, "executor option 'cpus' = '%s' "
                                "exceeds the cap of security group '%s' (cpus_max = "
                                "%s); ask for less or raise groups.%s.cpus_max", cpu_s,
                                grp, cpu_cap_s, grp);
                        goto fail;
                }
        } else {
                cpus = cpu_cap;
        }

        r->stop_timeout_s = (st->stop_timeout_ms + 999) / 1000;
        const char *stop_s = ct_opt(run, "stop_timeout");
        if (stop_s) {
                char *end;
                long v = strtol(stop_s, &end, 10);
                if (end == stop_s || (*end && strcmp(end, "s")) || v < 0 || v > 3600) {
                        ct_fail(errbuf, errbuf_size, "executor option 'stop_timeout' = "
                                "'%s' is invalid: give whole seconds from 0 to 3600, "
                                "e.g. 10s", stop_s);
                        goto fail;
                }
                r->stop_timeout_s = v;
        }

        /* Environment: the task's additions, then ours (not overridable). */
        for (size_t i = 0; i < run->n_env; i++) {
                const char *k = run->env[i].key;
                if (!ct_valid_env_name(k)) {
                        ct_fail(errbuf, errbuf_size, "environment variable name '%s' is "
                                "invalid: use letters, digits and _, not starting with "
                                "a digit", k ? k : "");
                        goto fail;
                }
                if (!strncmp(k, "TASKBUS_", 8)) {
                        ct_fail(errbuf, errbuf_size, "environment variable '%s' is "
                                "reserved: TASKBUS_* variables are set by taskbus", k);
                        goto fail;
                }
                char *kv = NULL;
                if (asprintf(&kv, "%s=%s", k, run->env[i].value ? run->env[i].value : "") < 0) {
                        ct_fail(errbuf, errbuf_size, "out of memory");
                        goto fail;
                }
                json_array_append_new(env, json_string(kv));
                free(kv);
        }
        char nominal[40], line[512];
        tb_plugin_time_format(run->nominal_time_ms, nominal);
        snprintf(line, sizeof(line), "TASKBUS_RUN_ID=%s", run->run_id);
        json_array_append_new(env, json_string(line));
        snprintf(line, sizeof(line), "TASKBUS_TASK_ID=%s", run->task_id);
        json_array_append_new(env, json_string(line));
        snprintf(line, sizeof(line), "TASKBUS_NOMINAL_TIME=%s", nominal);
        json_array_append_new(env, json_string(line));
        snprintf(line, sizeof(line), "TASKBUS_ATTEMPT=%d", (int)run->attempt);
        json_array_append_new(env, json_string(line));

        json_object_set_new(labels, CT_LABEL_MANAGED, json_string("true"));
        json_object_set_new(labels, CT_LABEL_RUN, json_string(run->run_id));
        json_object_set_new(labels, CT_LABEL_TASK, json_string(run->task_id));
        json_object_set_new(labels, CT_LABEL_OWNER, json_string(st->owner));

        json_object_set_new(hc, "NetworkMode", json_string(net));
        if (mem > 0)
                json_object_set_new(hc, "Memory", json_integer(mem));
        if (cpus > 0)
                json_object_set_new(hc, "NanoCpus", json_integer((json_int_t)llround(cpus * 1e9)));
        json_object_set_new(hc, "AutoRemove", json_false());

        json_object_set_new(body, "Image", json_string(image));
        json_object_set(body, "Entrypoint", ep);
        json_object_set(body, "Cmd", cmd);
        json_object_set(body, "Env", env);
        if (run->workdir && *run->workdir)
                json_object_set_new(body, "WorkingDir", json_string(run->workdir));
        json_object_set_new(body, "User", json_string(user));
        json_object_set_new(body, "Tty", json_false());
        json_object_set_new(body, "OpenStdin", json_false());
        json_object_set_new(body, "AttachStdin", json_false());
        json_object_set(body, "Labels", labels);
        json_object_set(body, "HostConfig", hc);

        r->create_body = json_dumps(body, JSON_COMPACT);
        r->image = strdup(image);
        if (!r->create_body || !r->image) {
                ct_fail(errbuf, errbuf_size, "out of memory (or a string that is not "
                        "UTF-8 in the script, argv or environment)");
                goto fail;
        }
        rc = TB_PLUGIN_OK;
fail:
        json_decref(body);
        json_decref(env);
        json_decref(cmd);
        json_decref(ep);
        json_decref(labels);
        json_decref(hc);
        return rc;
}

/* ---- the worker: one per run ---------------------------------------------- */

static void ct_out_flush(ct_run_t *r) {
        if (r->out.len) {
                r->st->host->output(r->st->host, r->run, r->out_stream, r->out.data,
                                    r->out.len);
                r->out.len = 0;
        }
}

static void ct_out_add(ct_run_t *r, int stream, const char *data, size_t len) {
        if (r->out_stream != stream || r->out.len >= 64 * 1024)
                ct_out_flush(r);
        r->out_stream = stream;
        if (!ct_buf_add(&r->out, data, len)) { /* no memory: deliver directly */
                ct_out_flush(r);
                r->st->host->output(r->st->host, r->run, stream, data, len);
        }
}

static size_t ct_logs_cb(char *data, size_t size, size_t nmemb, void *arg) {
        ct_run_t *r = arg;
        size_t n = size * nmemb;
        if (!r->logs_status)
                curl_easy_getinfo(r->logs_h, CURLINFO_RESPONSE_CODE, &r->logs_status);
        if (r->logs_status != 200) { /* an error reply, not a log stream */
                if (r->logs_err.len < 4096)
                        ct_buf_add(&r->logs_err, data, n);
                return n;
        }
        ct_demux_t *d = &r->demux;
        const unsigned char *p = (const unsigned char *)data;
        size_t left = n;
        while (left > 0) {
                if (d->left == 0) {
                        size_t take = 8 - d->hdr_len < left ? 8 - d->hdr_len : left;
                        memcpy(d->hdr + d->hdr_len, p, take);
                        d->hdr_len += take;
                        p += take;
                        left -= take;
                        if (d->hdr_len < 8)
                                break;
                        d->hdr_len = 0;
                        d->stream = d->hdr[0] == 2 ? TB_PLUGIN_STDERR : TB_PLUGIN_STDOUT;
                        d->left = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 |
                                  (uint32_t)d->hdr[6] << 8 | (uint32_t)d->hdr[7];
                        continue;
                }
                size_t take = d->left < left ? d->left : left;
                ct_out_add(r, d->stream, (const char *)p, take);
                d->left -= (uint32_t)take;
                p += take;
                left -= take;
        }
        ct_out_flush(r);
        return n;
}

static bool ct_cancel_requested(ct_run_t *r, char *reason, size_t size) {
        pthread_mutex_lock(&r->st->lock);
        bool c = r->cancel_req;
        if (c && reason)
                snprintf(reason, size, "%s", r->cancel_reason);
        pthread_mutex_unlock(&r->st->lock);
        return c;
}

static void ct_finish(ct_run_t *r, tb_plugin_result_t *res, const char *msg) {
        ct_state_t *st = r->st;
        /* Off the active list first: after finished() the host may reuse the
         * run pointer for a new run, which cancel() must not confuse with us. */
        pthread_mutex_lock(&st->lock);
        for (ct_run_t **pp = &st->runs; *pp; pp = &(*pp)->next) {
                if (*pp == r) {
                        *pp = r->next;
                        break;
                }
        }
        r->next = st->zombies;
        st->zombies = r;
        CURLM *m = r->multi;
        r->multi = NULL;
        pthread_mutex_unlock(&st->lock);
        curl_multi_cleanup(m);
        pthread_cond_broadcast(&st->cond); /* the sweeper joins zombies */

        res->finished_ms = ct_wall_ms();
        res->error = msg && *msg ? msg : NULL;
        st->host->finished(st->host, r->run, res);
}

/* Follow the logs and wait for the exit, stopping the container at the
 * expiry or on cancel. Fills \p res (status, exit_code) and \p msg. */
static void ct_supervise(ct_run_t *r, tb_plugin_result_t *res, char *msg, size_t msgsz) {
        ct_state_t *st = r->st;
        char path[256], cerr_logs[CURL_ERROR_SIZE], cerr_wait[CURL_ERROR_SIZE];
        ct_buf_t wait_body = {0}, stop_body = {0};
        CURL *wait_h = NULL, *stop_h = NULL;
        bool logs_done = false, wait_done = false, stop_done = false, killing = false;
        int outcome = CT_OUT_NONE;
        char reason[200] = "";
        int64_t start = ct_mono_ms();
        int64_t deadline = r->expiry_ms > 0 ? start + r->expiry_ms : 0;
        int64_t next_hb = start + st->heartbeat_ms, wait_done_at = 0, stop_at = 0;

        snprintf(path, sizeof(path), "/containers/%s/logs?follow=1&stdout=1&stderr=1",
                 r->cid);
        r->logs_h = ct_easy(st, "GET", path, NULL, NULL, cerr_logs);
        snprintf(path, sizeof(path), "/containers/%s/wait", r->cid);
        wait_h = ct_easy(st, "POST", path, NULL, &wait_body, cerr_wait);
        if (!r->logs_h || !wait_h) {
                res->status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, msgsz, "out of memory (curl_easy_init)");
                goto done;
        }
        curl_easy_setopt(r->logs_h, CURLOPT_WRITEFUNCTION, ct_logs_cb);
        curl_easy_setopt(r->logs_h, CURLOPT_WRITEDATA, r);
        curl_multi_add_handle(r->multi, r->logs_h);
        curl_multi_add_handle(r->multi, wait_h);

        for (;;) {
                int running = 0;
                curl_multi_perform(r->multi, &running);
                CURLMsg *m;
                int q;
                while ((m = curl_multi_info_read(r->multi, &q))) {
                        if (m->msg != CURLMSG_DONE)
                                continue;
                        CURL *h = m->easy_handle;
                        CURLcode cc = m->data.result;
                        long code = 0;
                        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                        curl_multi_remove_handle(r->multi, h);
                        if (h == r->logs_h) {
                                logs_done = true;
                                if (cc != CURLE_OK || code != 200) {
                                        char em[512];
                                        ct_engine_msg(&r->logs_err, em, sizeof(em));
                                        st->host->log(st->host, TB_PLUGIN_LOG_WARN,
                                                      "run %s: log stream of container "
                                                      "%.12s ended: %s", r->run_id, r->cid,
                                                      cc != CURLE_OK ? cerr_logs : em);
                                }
                        } else if (h == wait_h) {
                                wait_done = true;
                                wait_done_at = ct_mono_ms();
                                json_t *j = NULL;
                                if (cc == CURLE_OK && code == 200 &&
                                    (j = json_loads(wait_body.data ? wait_body.data : "",
                                                    0, NULL)) &&
                                    json_is_integer(json_object_get(j, "StatusCode"))) {
                                        res->exit_code = (int32_t)json_integer_value(
                                                json_object_get(j, "StatusCode"));
                                } else {
                                        char em[512];
                                        ct_engine_msg(&wait_body, em, sizeof(em));
                                        res->status = TB_PLUGIN_RUN_INFRA_ERROR;
                                        snprintf(msg, msgsz, "waiting for container "
                                                 "%.12s failed: %s", r->cid,
                                                 cc != CURLE_OK ? cerr_wait : em);
                                }
                                json_decref(j);
                        } else if (h == stop_h) {
                                stop_done = true;
                                if (!killing && (cc != CURLE_OK || (code != 204 && code != 304))) {
                                        /* Stop failed: kill outright. */
                                        killing = true;
                                        curl_easy_cleanup(stop_h);
                                        stop_body.len = 0;
                                        snprintf(path, sizeof(path),
                                                 "/containers/%s/kill?signal=KILL", r->cid);
                                        stop_h = ct_easy(st, "POST", path, NULL, &stop_body,
                                                         NULL);
                                        if (stop_h) {
                                                stop_done = false;
                                                curl_multi_add_handle(r->multi, stop_h);
                                        }
                                }
                        }
                }
                if (wait_done && (logs_done || ct_mono_ms() - wait_done_at > CT_LOG_DRAIN_MS))
                        break;

                int64_t now = ct_mono_ms();
                if (outcome == CT_OUT_NONE && !wait_done) {
                        if (ct_cancel_requested(r, reason, sizeof(reason)))
                                outcome = CT_OUT_CANCEL;
                        else if (deadline && now >= deadline)
                                outcome = CT_OUT_TIMEOUT;
                        if (outcome != CT_OUT_NONE) {
                                snprintf(path, sizeof(path), "/containers/%s/stop?t=%lld",
                                         r->cid, (long long)r->stop_timeout_s);
                                stop_h = ct_easy(st, "POST", path, NULL, &stop_body, NULL);
                                if (stop_h)
                                        curl_multi_add_handle(r->multi, stop_h);
                                stop_at = now;
                        }
                }
                if (stop_at && now - stop_at > r->stop_timeout_s * 1000 + CT_STOP_SLACK_MS) {
                        res->status = TB_PLUGIN_RUN_INFRA_ERROR;
                        snprintf(msg, msgsz, "container %.12s did not stop within %lld s "
                                 "of being asked to; removing it by force", r->cid,
                                 (long long)(r->stop_timeout_s + CT_STOP_SLACK_MS / 1000));
                        goto done;
                }
                if (now >= next_hb) {
                        st->host->heartbeat(st->host, r->run);
                        next_hb = now + st->heartbeat_ms;
                }
                int64_t wait_ms = CT_POLL_MS;
                if (deadline && outcome == CT_OUT_NONE && deadline - now < wait_ms)
                        wait_ms = deadline - now;
                if (next_hb - now < wait_ms)
                        wait_ms = next_hb - now;
                if (wait_ms < 0)
                        wait_ms = 0;
                curl_multi_poll(r->multi, NULL, 0, (int)wait_ms, NULL);
        }
        ct_out_flush(r);
        if (res->status == TB_PLUGIN_RUN_INFRA_ERROR)
                goto done;

        if (outcome == CT_OUT_TIMEOUT) {
                res->status = TB_PLUGIN_RUN_TIMED_OUT;
                snprintf(msg, msgsz, "run exceeded its expiry of %lld ms: container "
                         "stopped (SIGTERM, SIGKILL after %lld s)%s",
                         (long long)r->expiry_ms, (long long)r->stop_timeout_s,
                         killing ? ", then killed" : "");
        } else if (outcome == CT_OUT_CANCEL) {
                res->status = TB_PLUGIN_RUN_CANCELLED;
                snprintf(msg, msgsz, "cancelled: %s", reason);
        } else if (res->exit_code == 0) {
                res->status = TB_PLUGIN_RUN_SUCCEEDED;
        } else {
                res->status = TB_PLUGIN_RUN_FAILED;
                bool oom = false;
                ct_buf_t ib = {0};
                long code = 0;
                char e[256];
                snprintf(path, sizeof(path), "/containers/%s/json", r->cid);
                if (ct_http(st, "GET", path, NULL, &code, &ib, e, sizeof(e)) == 0 &&
                    code == 200) {
                        json_t *j = json_loads(ib.data, 0, NULL);
                        oom = json_is_true(json_object_get(json_object_get(j, "State"),
                                                           "OOMKilled"));
                        json_decref(j);
                }
                ct_buf_free(&ib);
                if (oom)
                        snprintf(msg, msgsz, "exited with code %d: killed for exceeding "
                                 "its memory limit (raise executor option 'memory')",
                                 (int)res->exit_code);
                else if (res->exit_code > 128 && res->exit_code < 160)
                        snprintf(msg, msgsz, "exited with code %d (128+%d: killed by "
                                 "signal %s?)", (int)res->exit_code,
                                 (int)res->exit_code - 128, strsignal(res->exit_code - 128));
                else
                        snprintf(msg, msgsz, "exited with code %d", (int)res->exit_code);
        }
done:
        ct_out_flush(r);
        if (r->logs_h) {
                curl_multi_remove_handle(r->multi, r->logs_h);
                curl_easy_cleanup(r->logs_h);
                r->logs_h = NULL;
        }
        if (wait_h) {
                curl_multi_remove_handle(r->multi, wait_h);
                curl_easy_cleanup(wait_h);
        }
        if (stop_h) {
                curl_multi_remove_handle(r->multi, stop_h);
                curl_easy_cleanup(stop_h);
        }
        (void)stop_done;
        ct_buf_free(&wait_body);
        ct_buf_free(&stop_body);
}

static void *ct_worker(void *arg) {
        ct_run_t *r = arg;
        ct_state_t *st = r->st;
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        char msg[CT_ERR_MAX] = "", err[CT_ERR_MAX], em[512], path[512];
        ct_buf_t resp = {0};
        long code = 0;
        res.exit_code = -1;

        /* Present locally? We never pull: what runs is what the operator loaded. */
        snprintf(path, sizeof(path), "/images/%s/json", r->image);
        if (ct_http(st, "GET", path, NULL, &code, &resp, err, sizeof(err)) != 0) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "%s", err);
                goto out;
        }
        if (code == 404) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "image '%s' is not present on the container "
                         "engine at %s, and this plugin never pulls: load it there "
                         "first (e.g. `podman pull %s` or `podman load`)", r->image,
                         st->socket, r->image);
                goto out;
        }
        if (code != 200) {
                ct_engine_msg(&resp, em, sizeof(em));
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "inspecting image '%s' failed: HTTP %ld: %s",
                         r->image, code, em);
                goto out;
        }

        char reason[200];
        if (ct_cancel_requested(r, reason, sizeof(reason))) {
                res.status = TB_PLUGIN_RUN_CANCELLED;
                snprintf(msg, sizeof(msg), "cancelled before the container started: %s",
                         reason);
                goto out;
        }

        resp.len = 0;
        if (ct_http(st, "POST", "/containers/create", r->create_body, &code, &resp, err,
                    sizeof(err)) != 0) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "%s", err);
                goto out;
        }
        json_t *j = code == 201 && resp.data ? json_loads(resp.data, 0, NULL) : NULL;
        const char *id = j ? json_string_value(json_object_get(j, "Id")) : NULL;
        if (id && strlen(id) < sizeof(r->cid) && strspn(id, "0123456789abcdef") == strlen(id))
                snprintf(r->cid, sizeof(r->cid), "%s", id);
        json_decref(j);
        if (!r->cid[0]) {
                ct_engine_msg(&resp, em, sizeof(em));
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "creating the container from image '%s' "
                         "failed: HTTP %ld: %s", r->image, code, em);
                goto out;
        }

        resp.len = 0;
        snprintf(path, sizeof(path), "/containers/%s/start", r->cid);
        if (ct_http(st, "POST", path, NULL, &code, &resp, err, sizeof(err)) != 0) {
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "%s", err);
                goto out;
        }
        if (code != 204 && code != 304) {
                ct_engine_msg(&resp, em, sizeof(em));
                res.status = TB_PLUGIN_RUN_INFRA_ERROR;
                snprintf(msg, sizeof(msg), "starting container %.12s (image '%s') "
                         "failed: HTTP %ld: %s", r->cid, r->image, code, em);
                goto out;
        }
        res.started_ms = ct_wall_ms();
        ct_supervise(r, &res, msg, sizeof(msg));

out:
        ct_buf_free(&resp);
        if (r->cid[0] && !ct_remove(st, r->cid, err, sizeof(err)))
                st->host->log(st->host, TB_PLUGIN_LOG_WARN, "run %s: %s (the sweeper "
                              "will retry)", r->run_id, err);
        ct_finish(r, &res, msg);
        return NULL;
}

static void ct_run_free(ct_run_t *r) {
        if (!r)
                return;
        free(r->run_id);
        free(r->image);
        free(r->create_body);
        ct_buf_free(&r->logs_err);
        ct_buf_free(&r->out);
        free(r);
}

/* Join the threads of finished runs. Called without st->lock. */
static void ct_reap(ct_state_t *st) {
        pthread_mutex_lock(&st->lock);
        ct_run_t *z = st->zombies;
        st->zombies = NULL;
        pthread_mutex_unlock(&st->lock);
        while (z) {
                ct_run_t *next = z->next;
                pthread_join(z->thread, NULL);
                ct_run_free(z);
                z = next;
        }
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
        if (id && ct_http(st, "GET", path, NULL, &code, &b, err, sizeof(err)) == 0 &&
            code == 200) {
                json_t *j = json_loads(b.data, 0, NULL);
                json_t *s = json_object_get(j, "State");
                ended = ct_parse_time(json_string_value(json_object_get(s, "FinishedAt")));
                if (ended < 0) /* never started: count from its creation */
                        ended = ct_parse_time(json_string_value(json_object_get(j, "Created")));
                json_decref(j);
        }
        ct_buf_free(&b);
        *why = "it has been over for longer than sweep_grace";
        return ended > 0 && ct_wall_ms() - ended > st->sweep_grace_ms;
}

static void ct_sweep_once(ct_state_t *st) {
        char err[CT_ERR_MAX];
        long code = 0;
        ct_buf_t b = {0};
        /* filters={"label":["io.taskbus.managed=true"]} */
        if (ct_http(st, "GET", "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22"
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
                if (ct_remove(st, id, err, sizeof(err)))
                        st->host->log(st->host, TB_PLUGIN_LOG_INFO, "sweeper: removed "
                                      "container %.12s of run %s: %s", id,
                                      run_id ? run_id : "?", why);
                else
                        st->host->log(st->host, TB_PLUGIN_LOG_WARN, "sweeper: %s", err);
        }
        json_decref(list);
}

static void *ct_sweeper_main(void *arg) {
        ct_state_t *st = arg;
        int64_t next_sweep = 0;
        for (;;) {
                ct_reap(st);
                if (st->sweep && ct_mono_ms() >= next_sweep) {
                        ct_sweep_once(st);
                        next_sweep = ct_mono_ms() + st->sweep_interval_ms;
                }
                pthread_mutex_lock(&st->lock);
                if (!st->stopping && !st->zombies) {
                        int64_t until = st->sweep ? next_sweep : ct_mono_ms() + 60000;
                        struct timespec ts = {.tv_sec = (time_t)(until / 1000),
                                              .tv_nsec = (long)(until % 1000) * 1000000L};
                        pthread_cond_timedwait(&st->cond, &st->lock, &ts);
                }
                bool stop = st->stopping;
                pthread_mutex_unlock(&st->lock);
                if (stop)
                        break;
        }
        ct_reap(st);
        return NULL;
}

/* ---- plugin callbacks -------------------------------------------------------- */

static int ct_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        ct_state_t *st = state;
        ct_run_t *r = calloc(1, sizeof(*r));
        if (!r)
                return ct_fail(errbuf, errbuf_size, "out of memory");
        r->st = st;
        r->run = run;
        r->expiry_ms = run->expiry_ms > 0 ? run->expiry_ms : 0;
        if (!(r->run_id = strdup(run->run_id ? run->run_id : ""))) {
                ct_run_free(r);
                return ct_fail(errbuf, errbuf_size, "out of memory");
        }
        if (ct_build_create(st, run, r, errbuf, errbuf_size) != TB_PLUGIN_OK) {
                ct_run_free(r);
                return TB_PLUGIN_ERROR;
        }
        if (!(r->multi = curl_multi_init())) {
                ct_run_free(r);
                return ct_fail(errbuf, errbuf_size, "out of memory (curl_multi_init)");
        }
        pthread_mutex_lock(&st->lock);
        r->next = st->runs;
        st->runs = r;
        int e = pthread_create(&r->thread, NULL, ct_worker, r);
        if (e)
                st->runs = r->next;
        pthread_mutex_unlock(&st->lock);
        if (e) {
                curl_multi_cleanup(r->multi);
                ct_run_free(r);
                return ct_fail(errbuf, errbuf_size, "cannot start a worker thread: %s",
                               strerror(e));
        }
        return TB_PLUGIN_OK;
}

static int ct_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        ct_state_t *st = state;
        int rc = TB_PLUGIN_NOT_FOUND;
        pthread_mutex_lock(&st->lock);
        for (ct_run_t *r = st->runs; r; r = r->next) {
                if (r->run != run)
                        continue;
                if (!r->cancel_req) {
                        r->cancel_req = true;
                        snprintf(r->cancel_reason, sizeof(r->cancel_reason), "%s",
                                 reason ? reason : "cancelled");
                }
                if (r->multi)
                        curl_multi_wakeup(r->multi);
                rc = TB_PLUGIN_OK;
                break;
        }
        pthread_mutex_unlock(&st->lock);
        return rc;
}

static void ct_destroy(void *state) {
        ct_state_t *st = state;
        if (!st)
                return;
        if (st->sweeper_started) {
                pthread_mutex_lock(&st->lock);
                st->stopping = true;
                pthread_cond_broadcast(&st->cond);
                pthread_mutex_unlock(&st->lock);
                pthread_join(st->sweeper, NULL);
        }
        ct_reap(st);
        /* The host guarantees no run is active; a run still listed would be a
         * host bug, and its thread still uses st: leak rather than crash. */
        if (st->runs) {
                st->host->log(st->host, TB_PLUGIN_LOG_ERROR, "destroy() with runs "
                              "still active; leaking the plugin state");
                return;
        }
        pthread_mutex_destroy(&st->lock);
        pthread_cond_destroy(&st->cond);
        free(st->socket);
        free(st->default_user);
        if (st->curl_inited)
                curl_global_cleanup();
        free(st);
}

static int ct_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        ct_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return ct_fail(errbuf, errbuf_size, "out of memory");
        st->host = host;
        pthread_mutex_init(&st->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&st->cond, &ca);
        pthread_condattr_destroy(&ca);
        const char *api = "";
        for (size_t i = 0; i < n_config; i++) {
                const char *k = config[i].key, *v = config[i].value;
                if (!strcmp(k, "socket"))
                        st->socket = strdup(v);
                else if (!strcmp(k, "api_version"))
                        api = v;
                else if (!strcmp(k, "stop_timeout"))
                        st->stop_timeout_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "default_user"))
                        st->default_user = strdup(v);
                else if (!strcmp(k, "allow_root"))
                        st->allow_root = !strcmp(v, "true");
                else if (!strcmp(k, "heartbeat_interval"))
                        st->heartbeat_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "request_timeout"))
                        st->request_timeout_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "sweep"))
                        st->sweep = !strcmp(v, "true");
                else if (!strcmp(k, "sweep_interval"))
                        st->sweep_interval_ms = strtoll(v, NULL, 10);
                else if (!strcmp(k, "sweep_grace"))
                        st->sweep_grace_ms = strtoll(v, NULL, 10);
        }
        int rc = TB_PLUGIN_ERROR;
        if (!st->socket || !st->default_user) {
                ct_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }
        if (st->socket[0] != '/') {
                ct_fail(errbuf, errbuf_size, "config key 'socket' = '%s' must be an "
                        "absolute path to the engine's unix socket", st->socket);
                goto fail;
        }
        if (*api && (strlen(api) > 16 || strspn(api, "0123456789.") != strlen(api))) {
                ct_fail(errbuf, errbuf_size, "config key 'api_version' = '%s' must look "
                        "like 1.41 (or be empty for no version prefix)", api);
                goto fail;
        }
        snprintf(st->prefix, sizeof(st->prefix), "%s%s", *api ? "/v" : "", api);
        if (st->heartbeat_ms <= 0 || st->sweep_interval_ms <= 0 ||
            st->request_timeout_ms <= 0) {
                ct_fail(errbuf, errbuf_size, "heartbeat_interval, sweep_interval and "
                        "request_timeout must be greater than zero");
                goto fail;
        }
        if (st->stop_timeout_ms > 3600 * 1000) {
                ct_fail(errbuf, errbuf_size, "config key 'stop_timeout' must be at "
                        "most 1h");
                goto fail;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                ct_fail(errbuf, errbuf_size, "curl_global_init failed");
                goto fail;
        }
        st->curl_inited = true;

        /* Who we are, for the owner label the sweeper reads. */
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

        /* Fail now, with a message naming the socket, rather than on every run. */
        long code = 0;
        char err[CT_ERR_MAX];
        if (ct_http(st, "GET", "/_ping", NULL, &code, NULL, err, sizeof(err)) != 0) {
                ct_fail(errbuf, errbuf_size, "%s", err);
                goto fail;
        }
        if (code != 200) {
                ct_fail(errbuf, errbuf_size, "the container engine at %s answered "
                        "/_ping with HTTP %ld; is api_version '%s' supported?",
                        st->socket, code, api);
                goto fail;
        }
        int e = pthread_create(&st->sweeper, NULL, ct_sweeper_main, st);
        if (e) {
                ct_fail(errbuf, errbuf_size, "cannot start the sweeper thread: %s",
                        strerror(e));
                goto fail;
        }
        st->sweeper_started = true;
        *state = st;
        rc = TB_PLUGIN_OK;
        return rc;
fail:
        ct_destroy(st);
        return rc;
}

static const tb_plugin_t ct_plugin = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "container",
        .version = "1.0.0",
        .description = "runs each task in a fresh container (Docker Engine API: "
                       "dockerd or podman)",
        .config_keys = ct_keys,
        .init = ct_init,
        .start = ct_start,
        .cancel = ct_cancel,
        .destroy = ct_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &ct_plugin; }
