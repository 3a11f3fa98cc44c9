/* Fixture: a well-behaved plugin whose behaviour the test drives through
 * executor options, plus ways to misbehave that the host must survive.
 *
 * start() writes "label=<l> strict=<b> delay=<ms>\n" and "script=<s>\n" to
 * stdout, then, by option:
 *   status=<succeeded|failed|...>  finish at once with that status (default)
 *   hold=true                      keep running until cancelled
 *   fail_start=<msg>               refuse the run with <msg>
 *   misbehave=twice                call finished() twice and output() after
 *   misbehave=bad_status           report status 99
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <taskbus/plugin.h>

typedef struct fx_held {
        const tb_plugin_run_t *run;
        struct fx_held *next;
} fx_held_t;

typedef struct fx_state {
        const tb_plugin_host_t *host;
        char conf[256];
        pthread_mutex_t lock;
        fx_held_t *held;
} fx_state_t;

static const tb_plugin_config_key_t fx_keys[] = {
        {"label", "a label echoed in the output", NULL, 1, TB_PLUGIN_CONF_STRING},
        {"strict", "a boolean", "false", 0, TB_PLUGIN_CONF_BOOL},
        {"delay", "a duration", "0", 0, TB_PLUGIN_CONF_DURATION},
        {"note", "optional, no default", NULL, 0, TB_PLUGIN_CONF_STRING},
        {0},
};

static const char *fx_conf(const tb_plugin_kv_t *c, size_t n, const char *k) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(c[i].key, k))
                        return c[i].value;
        return "(absent)";
}

static const char *fx_opt(const tb_plugin_run_t *run, const char *k) {
        for (size_t i = 0; i < run->n_options; i++)
                if (!strcmp(run->options[i].key, k))
                        return run->options[i].value;
        return NULL;
}

static int fx_init(const tb_plugin_host_t *host, const tb_plugin_kv_t *config,
                   size_t n_config, char *errbuf, size_t errbuf_size, void **state) {
        fx_state_t *st = calloc(1, sizeof(*st));
        if (!st)
                return TB_PLUGIN_ERROR;
        st->host = host;
        pthread_mutex_init(&st->lock, NULL);
        snprintf(st->conf, sizeof(st->conf), "label=%s strict=%s delay=%s note=%s n=%zu\n",
                 fx_conf(config, n_config, "label"), fx_conf(config, n_config, "strict"),
                 fx_conf(config, n_config, "delay"), fx_conf(config, n_config, "note"),
                 n_config);
        host->log(host, TB_PLUGIN_LOG_INFO, "fx_echo ready (%s)", "ok");
        *state = st;
        return TB_PLUGIN_OK;
}

static int fx_status(const char *s) {
        static const char *names[] = {"succeeded", "failed", "timed_out", "cancelled",
                                      "infra_error"};
        for (int i = 0; i < 5; i++)
                if (s && !strcmp(s, names[i]))
                        return i;
        return TB_PLUGIN_RUN_SUCCEEDED;
}

static int fx_start(void *state, const tb_plugin_run_t *run, char *errbuf,
                    size_t errbuf_size) {
        fx_state_t *st = state;
        const char *fail = fx_opt(run, "fail_start");
        if (fail) {
                snprintf(errbuf, errbuf_size, "%s", fail);
                return TB_PLUGIN_ERROR;
        }
        char line[512];
        st->host->output(st->host, run, TB_PLUGIN_STDOUT, st->conf, strlen(st->conf));
        int n = snprintf(line, sizeof(line), "script=%s\n", run->script ? run->script : "");
        st->host->output(st->host, run, TB_PLUGIN_STDOUT, line, (size_t)n);
        const char *hold = fx_opt(run, "hold");
        if (hold && !strcmp(hold, "true")) {
                fx_held_t *h = calloc(1, sizeof(*h));
                if (!h) {
                        snprintf(errbuf, errbuf_size, "out of memory");
                        return TB_PLUGIN_ERROR;
                }
                h->run = run;
                pthread_mutex_lock(&st->lock);
                h->next = st->held;
                st->held = h;
                pthread_mutex_unlock(&st->lock);
                return TB_PLUGIN_OK;
        }
        const char *mis = fx_opt(run, "misbehave");
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        res.status = fx_status(fx_opt(run, "status"));
        res.exit_code = res.status == TB_PLUGIN_RUN_FAILED ? 3 : 0;
        res.error = res.status ? "as requested" : NULL;
        if (mis && !strcmp(mis, "bad_status"))
                res.status = 99;
        st->host->finished(st->host, run, &res);
        if (mis && !strcmp(mis, "twice")) {
                st->host->output(st->host, run, TB_PLUGIN_STDERR, "late\n", 5);
                st->host->finished(st->host, run, &res);
        }
        return TB_PLUGIN_OK;
}

static int fx_cancel(void *state, const tb_plugin_run_t *run, const char *reason) {
        fx_state_t *st = state;
        fx_held_t *found = NULL;
        pthread_mutex_lock(&st->lock);
        for (fx_held_t **pp = &st->held; *pp; pp = &(*pp)->next) {
                if ((*pp)->run == run) {
                        found = *pp;
                        *pp = found->next;
                        break;
                }
        }
        pthread_mutex_unlock(&st->lock);
        if (!found)
                return TB_PLUGIN_NOT_FOUND;
        char msg[256];
        snprintf(msg, sizeof(msg), "cancelled: %s", reason);
        tb_plugin_result_t res = {TB_PLUGIN_RESULT_FIELDS};
        res.status = TB_PLUGIN_RUN_CANCELLED;
        res.exit_code = -1;
        res.error = msg;
        st->host->finished(st->host, run, &res);
        free(found);
        return TB_PLUGIN_OK;
}

static void fx_destroy(void *state) {
        fx_state_t *st = state;
        while (st->held) {
                fx_held_t *h = st->held;
                st->held = h->next;
                free(h);
        }
        pthread_mutex_destroy(&st->lock);
        free(st);
}

static const tb_plugin_t fx = {
        TB_PLUGIN_ABI_FIELDS,
        .name = "fx_echo",
        .version = "0.1",
        .description = "test fixture",
        .config_keys = fx_keys,
        .init = fx_init,
        .start = fx_start,
        .cancel = fx_cancel,
        .destroy = fx_destroy,
};

TB_PLUGIN_EXPORT const tb_plugin_t *tb_plugin_entry(void) { return &fx; }
