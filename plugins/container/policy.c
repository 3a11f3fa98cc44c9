/**
 * @file policy.c
 * @brief What a task may ask of the container plugin: its executor options
 *        checked against the operator's policy for its security group
 *        (tb_plugin_run_t.policy: the image allow-list, os_user, network,
 *        memory_max, cpus_max), then the engine's create request built from
 *        them. Everything here runs in start(), so a refusal is an
 *        infrastructure error before any container exists.
 */
#include "container_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The executor options a task may set. */
static const char *const ct_options[] = {"image", "user", "memory", "cpus", "network",
                                         "stop_timeout", NULL};

/* ---- validation in start() ------------------------------------------------ */

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
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                      (*c >= '0' && *c <= '9') || strchr("._-:", *c) ||
                      (*c == '+' && c == s)))
                        return false;
        return true;
}

/**
 * The uid that the engine will give the container for \p user ("NAME",
 * "UID", "NAME:GROUP" or "UID:GID"), read the way runc reads it: the part
 * before ':' is a uid when Go's strconv.Atoi takes it (optional sign, decimal
 * digits, leading zeros: "00", "-0" and "+0" are all uid 0), else a name
 * looked up in the image's /etc/passwd. "root" is uid 0 in every image.
 * @returns 1 with *\p uid set, 0 for a name only the image can resolve, -1
 * when the engine would refuse it (a negative uid, or one over 2^31-1).
 */
static int ct_user_uid(const char *user, long long *uid) {
        size_t n = strcspn(user, ":");
        const char *p = user;
        bool neg = false;
        if (*p == '+' || *p == '-')
                neg = *p++ == '-';
        size_t digits = strspn(p, "0123456789");
        if (digits && p + digits == user + n) {
                long long v = 0;
                for (size_t i = 0; i < digits; i++) {
                        v = v * 10 + (p[i] - '0');
                        if (v > 2147483647LL)
                                return -1;
                }
                if (neg && v != 0)
                        return -1;
                *uid = v;
                return 1;
        }
        if (n == 4 && !strncmp(user, "root", 4)) {
                *uid = 0;
                return 1;
        }
        return 0;
}

/* Append "KEY=VALUE" to the create request's Env. @returns false on ENOMEM. */
static bool ct_env_add(json_t *env, const char *key, const char *value) {
        char *kv = NULL;
        if (asprintf(&kv, "%s=%s", key, value ? value : "") < 0)
                return false;
        json_array_append_new(env, json_string(kv));
        free(kv);
        return true;
}

static int ct_net_rank(const char *mode) {
        return !strcmp(mode, "none") ? 0 : !strcmp(mode, "bridge") ? 1
               : !strcmp(mode, "host") ? 2 : -1;
}

/* Check the image against the group's allow-list. */
static int ct_policy_check_image(const tb_plugin_run_t *run, const char *image,
                                 char *errbuf, size_t errbuf_size) {
        const char *grp = run->security_group ? run->security_group : "";
        if (!tb_pu_has_policy(run))
                return tb_pu_fail(errbuf, errbuf_size, "image '%s' refused: this taskbus "
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
                return tb_pu_fail(errbuf, errbuf_size, "image '%s' is not allowed: security "
                                  "group '%s' may run no container images; list the images "
                                  "it may use in groups.%s.images in the taskbus config "
                                  "(e.g. images = [\"%s\"];)", image, grp, grp, image);
        return tb_pu_fail(errbuf, errbuf_size, "image '%s' is not allowed for security "
                          "group '%s' (allowed: %s); use one of those, or add it to "
                          "groups.%s.images in the taskbus config (exact references)",
                          image, grp, allowed, grp);
}

/* Build the create request. */
int ct_policy_build_create(ct_state_t *st, const tb_plugin_run_t *run, ct_run_t *r,
                           char *errbuf, size_t errbuf_size) {
        int rc = TB_PLUGIN_ERROR;
        const char *grp = run->security_group ? run->security_group : "";
        json_t *body = json_object(), *env = json_array(), *cmd = json_array(),
               *ep = json_array(), *labels = json_object(), *hc = json_object();
        if (!body || !env || !cmd || !ep || !labels || !hc) {
                tb_pu_fail(errbuf, errbuf_size, "out of memory");
                goto fail;
        }

        for (size_t i = 0; run->options && i < run->n_options; i++) {
                const char *k = run->options[i].key ? run->options[i].key : "";
                bool known = false;
                for (size_t j = 0; ct_options[j]; j++)
                        known = known || !strcmp(k, ct_options[j]);
                if (!known) {
                        tb_pu_fail(errbuf, errbuf_size, "unknown executor option '%s' for "
                                   "the container plugin; valid options: image, user, "
                                   "memory, cpus, network, stop_timeout", k);
                        goto fail;
                }
        }

        /* What to run. */
        const char *image = tb_pu_option(run, "image");
        if (!image || !*image) {
                tb_pu_fail(errbuf, errbuf_size, "executor option 'image' is required by "
                           "the container plugin: the image to run, e.g. "
                           "\"localhost/app:1.2\"");
                goto fail;
        }
        if (!ct_valid_image(image)) {
                tb_pu_fail(errbuf, errbuf_size, "executor option 'image' = '%s' is not a "
                           "valid image reference ([registry/]name[:tag][@digest])", image);
                goto fail;
        }
        if (ct_policy_check_image(run, image, errbuf, errbuf_size) != TB_PLUGIN_OK)
                goto fail;
        bool argv_form = run->argv && run->argv[0];
        if (!argv_form && (!run->script || !*run->script)) {
                tb_pu_fail(errbuf, errbuf_size, "the run has neither a script nor an argv");
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
        const char *user = tb_pu_option(run, "user");
        const char *user_from = "executor option 'user'";
        if (!user || !*user) {
                user_from = "the run's os user";
                user = run->os_user && *run->os_user ? run->os_user : NULL;
        }
        if (!user) {
                user_from = "the security group's os_user";
                user = tb_pu_policy(run, "os_user");
        }
        if (!user || !*user) {
                user_from = "the plugin's default_user";
                user = st->default_user;
        }
        if (!ct_valid_user(user)) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' (from %s) is invalid: "
                           "use NAME, UID, NAME:GROUP or UID:GID", user, user_from);
                goto fail;
        }
        /* Root needs both the operator (the plugin's allow_root) and the group
         * (groups.<g>.allow_root); a task option never overrides either. */
        const char *grp_root = tb_pu_policy(run, "allow_root");
        r->root_allowed = st->allow_root && grp_root && !strcmp(grp_root, "true");
        long long uid = -1;
        int kind = ct_user_uid(user, &uid);
        if (kind < 0) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' (from %s) is invalid: "
                           "a uid is a number from 0 to 2147483647", user, user_from);
                goto fail;
        }
        if (kind == 1 && uid == 0 && !r->root_allowed) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' (from %s) is root "
                           "(uid 0), which %s; pick another user%s", user, user_from,
                           !st->allow_root ? "this executor refuses (the container "
                                             "plugin's allow_root = false)"
                                           : "security group's policy refuses",
                           !st->allow_root ? ", or set the container plugin's "
                                             "allow_root = true and the group's allow_root"
                                           : ", or set the group's allow_root = true");
                goto fail;
        }
        if (kind == 0 && !r->root_allowed) {
                /* A name: the worker reads its uid from the image's
                 * /etc/passwd before the container starts. */
                r->user_name = strndup(user, strcspn(user, ":"));
                if (!r->user_name) {
                        tb_pu_fail(errbuf, errbuf_size, "out of memory");
                        goto fail;
                }
        }

        /* Network: never more open than the group allows. */
        const char *net = tb_pu_option(run, "network");
        const char *net_max = tb_pu_policy(run, "network");
        if (!net_max || ct_net_rank(net_max) < 0)
                net_max = "none";
        if (!net || !*net)
                net = "none";
        if (ct_net_rank(net) < 0) {
                tb_pu_fail(errbuf, errbuf_size, "executor option 'network' = '%s' is "
                           "invalid: use none, bridge or host", net);
                goto fail;
        }
        if (ct_net_rank(net) > ct_net_rank(net_max)) {
                tb_pu_fail(errbuf, errbuf_size, "executor option 'network' = '%s' exceeds "
                           "what security group '%s' allows (network = \"%s\"); use %s or "
                           "raise groups.%s.network", net, grp, net_max,
                           !strcmp(net_max, "none") ? "none" : "a mode up to that", grp);
                goto fail;
        }

        /* Resources: the request, capped by the group; no request means the cap. */
        const char *mem_s = tb_pu_option(run, "memory"), *mem_cap_s = tb_pu_policy(run, "memory_max");
        int64_t mem = 0, mem_cap = mem_cap_s ? strtoll(mem_cap_s, NULL, 10) : 0;
        if (mem_s) {
                if (tb_pu_parse_size(mem_s, &mem, NULL, 0) != TB_PLUGIN_OK)
                        mem = -1;
                if (mem < 4 * 1024 * 1024) {
                        tb_pu_fail(errbuf, errbuf_size, "executor option 'memory' = '%s' is "
                                   "invalid: give a size of at least 4MiB such as 256m, "
                                   "512MiB or 1g", mem_s);
                        goto fail;
                }
                if (mem_cap > 0 && mem > mem_cap) {
                        tb_pu_fail(errbuf, errbuf_size, "executor option 'memory' = '%s' "
                                   "(%" PRId64 " bytes) exceeds the cap of security group "
                                   "'%s' (memory_max = %" PRId64 " bytes); ask for less or "
                                   "raise groups.%s.memory_max", mem_s, mem, grp, mem_cap, grp);
                        goto fail;
                }
        } else {
                mem = mem_cap;
        }
        const char *cpu_s = tb_pu_option(run, "cpus"), *cpu_cap_s = tb_pu_policy(run, "cpus_max");
        double cpus = 0, cpu_cap = cpu_cap_s ? strtod(cpu_cap_s, NULL) : 0;
        if (cpu_s) {
                char *end;
                cpus = strtod(cpu_s, &end);
                if (end == cpu_s || *end || !(cpus >= 0.01) || cpus > 1024) {
                        tb_pu_fail(errbuf, errbuf_size, "executor option 'cpus' = '%s' is "
                                   "invalid: give a number of cores from 0.01 to 1024, "
                                   "e.g. 0.5", cpu_s);
                        goto fail;
                }
                if (cpu_cap > 0 && cpus > cpu_cap + 1e-9) {
                        tb_pu_fail(errbuf, errbuf_size, "executor option 'cpus' = '%s' "
                                   "exceeds the cap of security group '%s' (cpus_max = "
                                   "%s); ask for less or raise groups.%s.cpus_max", cpu_s,
                                   grp, cpu_cap_s, grp);
                        goto fail;
                }
        } else {
                cpus = cpu_cap;
        }

        r->stop_timeout_s = (st->stop_timeout_ms + 999) / 1000;
        const char *stop_s = tb_pu_option(run, "stop_timeout");
        if (stop_s) {
                int64_t v = -1;
                if (tb_pu_parse_duration(stop_s, &v, NULL, 0) != TB_PLUGIN_OK ||
                    v % 1000 || v > 3600 * 1000) {
                        tb_pu_fail(errbuf, errbuf_size, "executor option 'stop_timeout' = "
                                   "'%s' is invalid: give whole seconds from 0 to 3600, "
                                   "e.g. 10s", stop_s);
                        goto fail;
                }
                r->stop_timeout_s = v / 1000;
        }

        /* Environment: the task's additions, then ours (not overridable). */
        for (size_t i = 0; i < run->n_env; i++) {
                const char *k = run->env[i].key;
                if (tb_pu_check_env_name(k, errbuf, errbuf_size) != TB_PLUGIN_OK)
                        goto fail;
                if (!ct_env_add(env, k, run->env[i].value)) {
                        tb_pu_fail(errbuf, errbuf_size, "out of memory");
                        goto fail;
                }
        }
        tb_pu_run_env_t tbenv;
        tb_pu_run_env(run, &tbenv);
        for (int i = 0; i < TB_PU_RUN_ENV_N; i++) {
                if (!ct_env_add(env, tbenv.vars[i].key, tbenv.vars[i].value)) {
                        tb_pu_fail(errbuf, errbuf_size, "out of memory");
                        goto fail;
                }
        }

        ct_sweep_labels(st, run, labels);

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
                tb_pu_fail(errbuf, errbuf_size, "out of memory (or a string that is not "
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

/* The uid of \p name in an /etc/passwd text of \p len bytes; -1 if absent. */
static long long ct_passwd_uid(const char *text, size_t len, const char *name) {
        size_t nlen = strlen(name);
        const char *end = text + len;
        for (const char *line = text; line < end;) {
                const char *eol = memchr(line, '\n', (size_t)(end - line));
                if (!eol)
                        eol = end;
                /* name:password:uid:... */
                if ((size_t)(eol - line) > nlen + 1 && !memcmp(line, name, nlen) &&
                    line[nlen] == ':') {
                        const char *pw_end = memchr(line + nlen + 1, ':',
                                                    (size_t)(eol - line - nlen - 1));
                        if (pw_end) {
                                long long v = 0;
                                const char *d = pw_end + 1;
                                if (d >= eol || *d < '0' || *d > '9')
                                        return -1;
                                for (; d < eol && *d >= '0' && *d <= '9'; d++)
                                        if ((v = v * 10 + (*d - '0')) > 2147483647LL)
                                                return -1;
                                return v;
                        }
                }
                line = eol + 1;
        }
        return -1;
}

int ct_policy_check_image_user(ct_state_t *st, const ct_run_t *r, char *errbuf,
                               size_t errbuf_size) {
        if (!r->user_name)
                return TB_PLUGIN_OK;
        char path[256], err[CT_ERR_MAX];
        snprintf(path, sizeof(path), "/containers/%s/archive?path=/etc/passwd", r->cid);
        ct_buf_t tar = {0};
        long code = 0;
        int rc = TB_PLUGIN_ERROR;
        if (ct_engine_http(st, "GET", path, NULL, &code, &tar, err, sizeof(err)) != 0) {
                tb_pu_fail(errbuf, errbuf_size, "%s", err);
                goto out;
        }
        if (code != 200) {
                /* podman resolves the user when it mounts the container. */
                char em[512];
                ct_engine_msg(&tar, em, sizeof(em));
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' cannot be resolved in "
                           "image '%s' (HTTP %ld: %s): give a user the image has, or a "
                           "numeric UID", r->user_name, r->image, code, em);
                goto out;
        }
        /* One ustar member: a 512-byte header (size in octal at 124, type at
         * 156), then the file. A link or anything else is not read. */
        unsigned long long size = 0;
        bool regular = code == 200 && tar.len >= 512 &&
                       (tar.data[156] == '0' || tar.data[156] == '\0');
        for (size_t i = 124; regular && i < 136 && tar.data[i] >= '0' && tar.data[i] <= '7';
             i++)
                size = size * 8 + (unsigned)(tar.data[i] - '0');
        if (!regular || size > tar.len - 512) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' is a name, and its "
                           "uid cannot be read from /etc/passwd of image '%s' (HTTP %ld): "
                           "root is not allowed, so give a numeric UID or UID:GID",
                           r->user_name, r->image, code);
                goto out;
        }
        long long uid = ct_passwd_uid(tar.data + 512, (size_t)size, r->user_name);
        if (uid < 0) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' is not in /etc/passwd "
                           "of image '%s': give a user the image has, or a numeric UID",
                           r->user_name, r->image);
                goto out;
        }
        if (uid == 0) {
                tb_pu_fail(errbuf, errbuf_size, "container user '%s' is uid 0 (root) in image "
                           "'%s', which this executor or the security group refuses; pick "
                           "another user", r->user_name, r->image);
                goto out;
        }
        rc = TB_PLUGIN_OK;
out:
        ct_buf_free(&tar);
        return rc;
}
