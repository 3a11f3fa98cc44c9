/**
 * @file http/metrics.h
 * @brief Process-wide Prometheus metrics: counters, gauges and histograms
 *        identified by name + label string, rendered in the text format for
 *        GET /metrics. @locality any thread (one mutex; cheap enough for the
 *        rates involved: the hot paths batch their updates).
 */
#ifndef TB_METRICS_H
#define TB_METRICS_H

#include "tb.h"

/** Declare a metric's help text and type ("counter", "gauge", "histogram").
 *  Optional: undeclared metrics are rendered as untyped. */
void tb_metrics_describe(const char *name, const char *type, const char *help);

/** Add \p v to counter name{labels}. \p labels is the inside of the braces,
 *  e.g. "route=\"/v1/tasks\",code=\"201\"", or NULL. */
void tb_metrics_add(const char *name, const char *labels, double v);
/** Set gauge name{labels} to \p v. */
void tb_metrics_set(const char *name, const char *labels, double v);
/** Observe \p v (seconds) in histogram name{labels}; buckets from 1 ms to 60 s. */
void tb_metrics_observe(const char *name, const char *labels, double v);
/** @returns the current value of a counter or gauge (0 if unknown); for tests and status. */
double tb_metrics_get(const char *name, const char *labels);

/** Escape \p in as a Prometheus label value (backslash, quote, newline
 *  escaped; other control bytes become '?'), truncated to fit \p size. For
 *  every label value that did not come from a fixed list. */
void tb_metrics_label_value(const char *in, char *out, size_t size);

/** Append the whole registry in the Prometheus text format to \p out. */
void tb_metrics_render(tb_buf_t *out);

#endif
