/**
 * @file http/metrics.c
 * @brief A small Prometheus registry (see metrics.h).
 */
#include "http/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double tb_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,  0.5,    1,     2.5,  5,    10,   30, 60};
#define TB_NBUCKETS (sizeof(tb_buckets) / sizeof(tb_buckets[0]))

typedef enum { TB_M_COUNTER, TB_M_GAUGE, TB_M_HIST } tb_mkind_t;

typedef struct tb_metric {
        struct tb_metric *next;
        char *name;
        char *labels;
        tb_mkind_t kind;
        double value;
        uint64_t counts[TB_NBUCKETS + 1];
        double sum;
        uint64_t n;
} tb_metric_t;

typedef struct tb_mdesc {
        struct tb_mdesc *next;
        char *name, *type, *help;
} tb_mdesc_t;

static pthread_mutex_t tb_m_lock = PTHREAD_MUTEX_INITIALIZER;
static tb_metric_t *tb_m_head;
static tb_mdesc_t *tb_m_desc;
static size_t tb_m_series;
static uint64_t tb_m_dropped;

/* Whatever a caller's labels hold, the registry never grows past this many
 * series: a label fed by input (a method, a type) cannot exhaust memory or
 * /metrics. New series beyond it are counted in
 * taskbus_metrics_series_dropped_total instead. */
#define TB_METRICS_MAX_SERIES 20000

/* Caller holds the lock. New metrics are kept sorted by name so that a
 * family's series render together. */
static tb_metric_t *tb_metric_get(const char *name, const char *labels, tb_mkind_t kind) {
        const char *l = labels ? labels : "";
        tb_metric_t **pp = &tb_m_head;
        for (; *pp; pp = &(*pp)->next) {
                int c = strcmp((*pp)->name, name);
                if (c == 0 && !strcmp((*pp)->labels, l))
                        return *pp;
                if (c > 0)
                        break;
        }
        if (tb_m_series >= TB_METRICS_MAX_SERIES) {
                tb_m_dropped++;
                return NULL;
        }
        tb_metric_t *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->name = strdup(name);
        m->labels = strdup(l);
        m->kind = kind;
        if (!m->name || !m->labels) {
                free(m->name);
                free(m->labels);
                free(m);
                return NULL;
        }
        m->next = *pp;
        *pp = m;
        tb_m_series++;
        return m;
}

void tb_metrics_label_value(const char *in, char *out, size_t size) {
        size_t o = 0;
        if (!size)
                return;
        for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
                const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
                size_t need = esc ? 2 : 1;
                if (o + need >= size)
                        break;
                if (esc) {
                        out[o++] = esc[0];
                        out[o++] = esc[1];
                } else {
                        out[o++] = (char)(*p < 0x20 || *p == 0x7f ? '?' : *p);
                }
        }
        out[o] = '\0';
}

void tb_metrics_describe(const char *name, const char *type, const char *help) {
        pthread_mutex_lock(&tb_m_lock);
        for (tb_mdesc_t *d = tb_m_desc; d; d = d->next)
                if (!strcmp(d->name, name)) {
                        pthread_mutex_unlock(&tb_m_lock);
                        return;
                }
        tb_mdesc_t *d = calloc(1, sizeof(*d));
        if (d) {
                d->name = strdup(name);
                d->type = strdup(type);
                d->help = strdup(help);
                d->next = tb_m_desc;
                tb_m_desc = d;
        }
        pthread_mutex_unlock(&tb_m_lock);
}

void tb_metrics_add(const char *name, const char *labels, double v) {
        pthread_mutex_lock(&tb_m_lock);
        tb_metric_t *m = tb_metric_get(name, labels, TB_M_COUNTER);
        if (m)
                m->value += v;
        pthread_mutex_unlock(&tb_m_lock);
}

void tb_metrics_set(const char *name, const char *labels, double v) {
        pthread_mutex_lock(&tb_m_lock);
        tb_metric_t *m = tb_metric_get(name, labels, TB_M_GAUGE);
        if (m)
                m->value = v;
        pthread_mutex_unlock(&tb_m_lock);
}

void tb_metrics_observe(const char *name, const char *labels, double v) {
        pthread_mutex_lock(&tb_m_lock);
        tb_metric_t *m = tb_metric_get(name, labels, TB_M_HIST);
        if (m) {
                size_t i = 0;
                while (i < TB_NBUCKETS && v > tb_buckets[i])
                        i++;
                m->counts[i]++;
                m->sum += v;
                m->n++;
        }
        pthread_mutex_unlock(&tb_m_lock);
}

double tb_metrics_get(const char *name, const char *labels) {
        double v = 0;
        const char *l = labels ? labels : "";
        pthread_mutex_lock(&tb_m_lock);
        for (tb_metric_t *m = tb_m_head; m; m = m->next)
                if (!strcmp(m->name, name) && !strcmp(m->labels, l)) {
                        v = m->kind == TB_M_HIST ? (double)m->n : m->value;
                        break;
                }
        pthread_mutex_unlock(&tb_m_lock);
        return v;
}

static void tb_render_series(tb_buf_t *out, const char *name, const char *suffix,
                             const char *labels, const char *extra, double v) {
        bool any = labels[0] || (extra && extra[0]);
        tb_buf_printf(out, "%s%s%s%s%s%s%s %.17g\n", name, suffix, any ? "{" : "", labels,
                      labels[0] && extra && extra[0] ? "," : "", extra ? extra : "",
                      any ? "}" : "", v);
}

void tb_metrics_render(tb_buf_t *out) {
        pthread_mutex_lock(&tb_m_lock);
        const char *last = NULL;
        for (tb_metric_t *m = tb_m_head; m; m = m->next) {
                if (!last || strcmp(last, m->name)) {
                        for (tb_mdesc_t *d = tb_m_desc; d; d = d->next)
                                if (!strcmp(d->name, m->name)) {
                                        tb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name,
                                                      d->help, d->name, d->type);
                                        break;
                                }
                        last = m->name;
                }
                if (m->kind != TB_M_HIST) {
                        tb_render_series(out, m->name, "", m->labels, NULL, m->value);
                        continue;
                }
                uint64_t cum = 0;
                char le[48];
                for (size_t i = 0; i <= TB_NBUCKETS; i++) {
                        cum += m->counts[i];
                        if (i < TB_NBUCKETS)
                                snprintf(le, sizeof(le), "le=\"%g\"", tb_buckets[i]);
                        else
                                snprintf(le, sizeof(le), "le=\"+Inf\"");
                        tb_render_series(out, m->name, "_bucket", m->labels, le, (double)cum);
                }
                tb_render_series(out, m->name, "_sum", m->labels, NULL, m->sum);
                tb_render_series(out, m->name, "_count", m->labels, NULL, (double)m->n);
        }
        tb_buf_printf(out, "# HELP taskbus_metrics_series_dropped_total Updates of new "
                           "series refused because the registry holds %d series\n"
                           "# TYPE taskbus_metrics_series_dropped_total counter\n"
                           "taskbus_metrics_series_dropped_total %llu\n",
                      TB_METRICS_MAX_SERIES, (unsigned long long)tb_m_dropped);
        pthread_mutex_unlock(&tb_m_lock);
}
