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

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
/* The executor options a task may set. */
static const char *const ct_options[] = {"image", "user", "memory", "cpus", "network",
                                         "stop_timeout", NULL};

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
int ct_build_create(ct_state_t *st, const tb_plugin_run_t *run, ct_run_t *r,
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
