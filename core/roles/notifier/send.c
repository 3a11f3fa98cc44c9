/**
 * @file notifier/send.c
 * @brief The notifier's sender thread: claims pending notifications
 *        (store/notify.h), builds each message (the facts decided, the run's
 *        last lines of output), delivers it to its channel and records the
 *        attempt (docs/notifications.md, "Delivery").
 *
 * Webhook: an HTTP POST of the JSON body with X-Taskbus-Event,
 * X-Taskbus-Delivery, X-Taskbus-Timestamp (Unix seconds) and
 * X-Taskbus-Signature: sha256=<hex HMAC-SHA256 of "TIMESTAMP.BODY" under the
 * channel's secret>. A 2xx answer delivers it; 408, 429, 5xx and network
 * errors are retried with exponential backoff (notify.backoff doubling up
 * to notify.backoff_max) up to notify.max_attempts; any other answer fails
 * it at once. SMTP: libcurl's smtp(s):// with MAIL FROM, RCPT TO and a
 * plain-text message. No secret is ever logged or stored: an error names
 * the channel and what went wrong.
 *
 * A notification is claimed for notify.timeout + 30 s, so a notifier that
 * dies mid-attempt leaves it to another (delivered at least once: receivers
 * deduplicate on X-Taskbus-Delivery).
 *
 * @locality the sender thread.
 */
#include "notifier.h"
#include "http/metrics.h"
#include "store/notify.h"
#include "store/runs.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TB_NOTIFIER_SUB "notifier"
/** Notifications claimed at once. */
#define TB_SEND_CLAIM 16
/** How long the sender sleeps when nothing is due. */
#define TB_SEND_IDLE_MS 250
/** A run's output is waited for (the archiver copies it) at most this long. */
#define TB_SEND_LOG_WAIT_MS 5000
/** How often running runs are checked against long_running rules, and the
 *  most notifications one check decides. */
#define TB_SEND_LONG_EVERY_US 1000000
#define TB_SEND_LONG_BATCH 100
/** How often notifications past archiver.history_retention are deleted, and
 *  the most per statement (a full batch comes back after a second). */
#define TB_SEND_PURGE_EVERY_US 60000000
#define TB_SEND_PURGE_BATCH 1000
/** Most bytes of a receiver's answer kept (for the error). */
#define TB_SEND_ANSWER_MAX 512

/* ---- the message ---------------------------------------------------------------- */

/** Replace every byte of \p b that is not part of valid UTF-8 (or is a control
 *  other than tab and newline) with '?', in place. */
static void tb_send_utf8_clean(unsigned char *b, size_t len) {
        for (size_t i = 0; i < len;) {
                unsigned char c = b[i];
                size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                                 : (c & 0xF8) == 0xF0 ? 4 : 0;
                bool ok = n > 0 && i + n <= len && !(n == 2 && c < 0xC2) && !(c > 0xF4);
                for (size_t k = 1; ok && k < n; k++)
                        ok = (b[i + k] & 0xC0) == 0x80;
                if (ok && n == 3)
                        ok = !(c == 0xE0 && b[i + 1] < 0xA0) && !(c == 0xED && b[i + 1] > 0x9F);
                if (ok && n == 4)
                        ok = !(c == 0xF0 && b[i + 1] < 0x90) && !(c == 0xF4 && b[i + 1] > 0x8F);
                if (!ok) {
                        b[i++] = '?';
                        continue;
                }
                if (n == 1 && c < 0x20 && c != '\n' && c != '\t')
                        b[i] = '?';
                i += n;
        }
}

/**
 * The last notify.log_lines lines (at most notify.log_bytes) of run \p run_id's
 * output into \p out (text, valid UTF-8); empty when it has none.
 */
static tb_err_t tb_send_log_tail(PGconn *conn, const tb_config_t *conf, const char *run_id,
                                 tb_buf_t *out, char *errstr, size_t errstr_size) {
        int64_t next_seq = 0, bytes = 0;
        out->len = 0;
        if (conf->notify_log_lines <= 0 || conf->notify_log_bytes <= 0)
                return tb_buf_append(out, "", 1) ? TB_ERR_NOMEM : TB_OK;
        tb_err_t err = tb_store_runs_logs_size(conn, run_id, NULL, &next_seq, &bytes, errstr,
                                               errstr_size);
        if (err)
                return err;
        int64_t from = bytes > conf->notify_log_bytes ? bytes - conf->notify_log_bytes : 0;
        char f[32], t[32];
        snprintf(f, sizeof(f), "%" PRId64, from);
        snprintf(t, sizeof(t), "%" PRId64, bytes);
        PGresult *r = NULL;
        if (bytes > 0 && (err = tb_store_runs_logs_range(conn, run_id, NULL, f, t, &r, errstr,
                                                         errstr_size)))
                return err;
        for (int i = 0; r && i < PQntuples(r); i++) {
                size_t n = 0;
                unsigned char *d = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 2), &n);
                int64_t start = strtoll(PQgetvalue(r, i, 1), NULL, 10);
                size_t skip = start < from ? (size_t)(from - start) : 0;
                if (d && skip < n)
                        tb_buf_append(out, d + skip, n - skip);
                PQfreemem(d);
        }
        PQclear(r);
        /* the last lines: from after the (log_lines + 1)-th newline from the end,
         * a trailing newline not counting */
        size_t end = out->len, cut = 0;
        int64_t lines = 0;
        for (size_t i = end; i > 0; i--) {
                if (out->data[i - 1] == '\n' && i != end && ++lines == conf->notify_log_lines) {
                        cut = i;
                        break;
                }
        }
        if (cut)
                memmove(out->data, out->data + cut, end - cut);
        out->len = end - cut;
        tb_send_utf8_clean((unsigned char *)out->data, out->len);
        if (tb_buf_append(out, "", 1))
                return TB_ERR_NOMEM;
        out->len--;
        return TB_OK;
}

/** Lower-case hex of \p n bytes. */
static void tb_send_hex(const unsigned char *b, size_t n, char *out) {
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[b[i] >> 4];
                out[2 * i + 1] = hex[b[i] & 15];
        }
        out[2 * n] = '\0';
}

/* ---- delivery ------------------------------------------------------------------- */

/** One attempt's outcome. */
typedef struct tb_send_result {
        int code;           /**< HTTP status or SMTP reply code, 0: none */
        bool permanent;     /**< retrying cannot help */
        char error[512];    /**< empty: delivered */
} tb_send_result_t;

static size_t tb_send_answer(char *p, size_t s, size_t n, void *ud) {
        tb_buf_t *b = ud;
        size_t len = s * n;
        if (b->len < TB_SEND_ANSWER_MAX)
                tb_buf_append(b, p, len < TB_SEND_ANSWER_MAX - b->len ? len
                                                                      : TB_SEND_ANSWER_MAX - b->len);
        return len;
}

/* libcurl's progress callback: a stopping notifier ends the attempt at once
 * (recorded as failed, retried by the next notifier). */
static int tb_send_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                            curl_off_t un) {
        return atomic_load((atomic_bool *)ud) ? 1 : 0;
}

static void tb_send_common(CURL *c, const tb_config_t *conf, const char *url, tb_buf_t *answer,
                           char *curl_err, atomic_bool *stop) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, tb_send_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, stop);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)conf->notify_timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)conf->notify_timeout_ms);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tb_send_answer);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
}

static void tb_send_webhook(const tb_config_t *conf, const tb_notify_channel_t *ch,
                            int64_t id, const char *event, const char *body, atomic_bool *stop,
                            tb_send_result_t *res) {
        char ts[32], sig[80], hdr[4][160], curl_err[CURL_ERROR_SIZE] = "";
        unsigned char mac[32];
        unsigned int mac_len = 0;
        tb_buf_t msg = {0}, answer = {0};
        snprintf(ts, sizeof(ts), "%lld", (long long)(tb_now_ms() / 1000));
        if (tb_buf_printf(&msg, "%s.%s", ts, body) ||
            !HMAC(EVP_sha256(), ch->secret, (int)ch->secret_len, (unsigned char *)msg.data,
                  msg.len, mac, &mac_len) ||
            mac_len != 32) {
                tb_buf_free(&msg);
                snprintf(res->error, sizeof(res->error), "could not sign the notification");
                return;
        }
        tb_buf_free(&msg);
        memcpy(sig, "sha256=", 7);
        tb_send_hex(mac, 32, sig + 7);
        snprintf(hdr[0], sizeof(hdr[0]), "X-Taskbus-Event: %s", event);
        snprintf(hdr[1], sizeof(hdr[1]), "X-Taskbus-Delivery: %" PRId64, id);
        snprintf(hdr[2], sizeof(hdr[2]), "X-Taskbus-Timestamp: %s", ts);
        snprintf(hdr[3], sizeof(hdr[3]), "X-Taskbus-Signature: %s", sig);
        CURL *c = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        h = curl_slist_append(h, "User-Agent: taskbus/" TB_VERSION);
        h = curl_slist_append(h, "Expect:");
        for (size_t i = 0; i < 4; i++)
                h = curl_slist_append(h, hdr[i]);
        if (!c || !h) {
                snprintf(res->error, sizeof(res->error), "out of memory");
                goto out;
        }
        tb_send_common(c, conf, ch->url, &answer, curl_err, stop);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        res->code = (int)code;
        if (rc != CURLE_OK) {
                snprintf(res->error, sizeof(res->error), "%s", *curl_err ? curl_err
                                                                        : curl_easy_strerror(rc));
        } else if (code < 200 || code > 299) {
                tb_buf_append(&answer, "", 1);
                tb_send_utf8_clean((unsigned char *)answer.data, answer.len - 1);
                snprintf(res->error, sizeof(res->error), "the receiver answered HTTP %ld: %.200s",
                         code, answer.data);
                res->permanent = code >= 400 && code < 500 && code != 408 && code != 429;
        }
out:
        tb_buf_free(&answer);
        curl_slist_free_all(h);
        if (c)
                curl_easy_cleanup(c);
}

typedef struct tb_send_upload {
        const char *data;
        size_t len, off;
} tb_send_upload_t;

static size_t tb_send_read(char *p, size_t s, size_t n, void *ud) {
        tb_send_upload_t *u = ud;
        size_t room = s * n, left = u->len - u->off;
        size_t k = left < room ? left : room;
        memcpy(p, u->data + u->off, k);
        u->off += k;
        return k;
}

/** A header value without CR or LF (a task name is the user's). */
static void tb_send_header_safe(char *s) {
        for (; *s; s++)
                if (*s == '\r' || *s == '\n')
                        *s = ' ';
}

/** The plain-text mail of a notification (CRLF lines, dot-stuffed by libcurl). */
static tb_err_t tb_send_mail_text(const tb_notify_channel_t *ch, int64_t id, const char *event,
                                  const json_t *body, tb_buf_t *out) {
        const json_t *task = json_object_get(body, "task"), *run = json_object_get(body, "run");
        char subject[400], date[64], name[256];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
        const char *tname = json_string_value(json_object_get(task, "name"));
        snprintf(name, sizeof(name), "%s", tname ? tname : "");
        tb_send_header_safe(name);
        const char *status = json_string_value(json_object_get(run, "status"));
        snprintf(subject, sizeof(subject), "[taskbus] %s: %s (%s)", event, name,
                 status ? status : "-");
        tb_err_t err = tb_buf_printf(out, "Date: %s\r\nFrom: %s\r\nTo: ", date, ch->from);
        for (size_t i = 0; !err && i < ch->to_cnt; i++)
                err = tb_buf_printf(out, "%s%s", i ? ", " : "", ch->to[i]);
        char *j = NULL;
        if (!err)
                err = tb_buf_printf(out,
                                    "\r\nSubject: %s\r\nMessage-ID: <taskbus-%" PRId64
                                    "@taskbus>\r\nX-Taskbus-Event: %s\r\nMIME-Version: 1.0\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n\r\n",
                                    subject, id, event);
        /* the template: one fact a line, then the output's last lines */
        static const char *const run_keys[] = {"id",        "nominal_time", "attempt",
                                               "max_attempts", "status",    "exit_code",
                                               "error",     "started_at",   "finished_at",
                                               "host"};
        if (!err)
                err = tb_buf_printf(out, "Event: %s\r\nTask: %s (%s), group %s\r\n", event, name,
                                    json_string_value(json_object_get(task, "id"))
                                            ? json_string_value(json_object_get(task, "id"))
                                            : "-",
                                    json_string_value(json_object_get(task, "security_group"))
                                            ? json_string_value(json_object_get(task,
                                                                                "security_group"))
                                            : "-");
        for (size_t i = 0; !err && i < TB_ARRAY_LEN(run_keys); i++) {
                const json_t *v = json_object_get(run, run_keys[i]);
                if (!v || json_is_null(v))
                        continue;
                j = json_is_string(v) ? strdup(json_string_value(v))
                                      : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                if (!j)
                        return TB_ERR_NOMEM;
                tb_send_header_safe(j);
                err = tb_buf_printf(out, "Run %s: %s\r\n", run_keys[i], j);
                free(j);
        }
        const char *log = json_string_value(json_object_get(body, "log_tail"));
        if (!err && log && *log) {
                err = tb_buf_printf(out, "\r\nLast lines of output:\r\n");
                for (const char *l = log; !err && *l;) {
                        const char *e = strchr(l, '\n');
                        size_t n = e ? (size_t)(e - l) : strlen(l);
                        err = tb_buf_printf(out, "  %.*s\r\n", (int)n, l);
                        l = e ? e + 1 : l + n;
                }
        }
        return err;
}

static void tb_send_smtp(const tb_config_t *conf, const tb_notify_channel_t *ch, int64_t id,
                         const char *event, const json_t *body, atomic_bool *stop,
                         tb_send_result_t *res) {
        tb_buf_t text = {0}, answer = {0};
        char curl_err[CURL_ERROR_SIZE] = "";
        CURL *c = curl_easy_init();
        struct curl_slist *rcpt = NULL;
        for (size_t i = 0; i < ch->to_cnt; i++)
                rcpt = curl_slist_append(rcpt, ch->to[i]);
        if (!c || !rcpt || tb_send_mail_text(ch, id, event, body, &text)) {
                snprintf(res->error, sizeof(res->error), "out of memory");
                goto out;
        }
        tb_send_upload_t up = {text.data, text.len, 0};
        tb_send_common(c, conf, ch->url, &answer, curl_err, stop);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(c, CURLOPT_MAIL_FROM, ch->from);
        curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, tb_send_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        if (ch->username) {
                curl_easy_setopt(c, CURLOPT_USERNAME, ch->username);
                if (ch->secret)
                        curl_easy_setopt(c, CURLOPT_PASSWORD, ch->secret);
        }
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        res->code = (int)code;
        if (rc != CURLE_OK) {
                snprintf(res->error, sizeof(res->error), "%s (SMTP reply %ld)",
                         *curl_err ? curl_err : curl_easy_strerror(rc), code);
                res->permanent = code >= 500 && code < 600;
        }
out:
        tb_buf_free(&text);
        tb_buf_free(&answer);
        curl_slist_free_all(rcpt);
        if (c)
                curl_easy_cleanup(c);
}

/* ---- the thread ----------------------------------------------------------------- */

static int64_t tb_send_backoff(const tb_config_t *conf, int attempt) {
        int64_t b = conf->notify_backoff_ms;
        for (int i = 1; i < attempt && b < conf->notify_backoff_max_ms; i++)
                b *= 2;
        return b > conf->notify_backoff_max_ms ? conf->notify_backoff_max_ms : b;
}

/** Deliver the claimed row \p i of \p r; records its attempt. */
static void tb_send_one(tb_notifier_t *nt, PGresult *r, int i) {
        const tb_config_t *conf = nt->ctx->conf;
        int64_t id = strtoll(PQgetvalue(r, i, TB_STORE_NOTIFY_COL_ID), NULL, 10);
        int attempt = atoi(PQgetvalue(r, i, TB_STORE_NOTIFY_COL_ATTEMPTS));
        const char *run_id = PQgetvalue(r, i, TB_STORE_NOTIFY_COL_RUN);
        const char *event = PQgetvalue(r, i, TB_STORE_NOTIFY_COL_EVENT);
        const char *channel = PQgetvalue(r, i, TB_STORE_NOTIFY_COL_CHANNEL);
        int64_t age_ms = strtoll(PQgetvalue(r, i, TB_STORE_NOTIFY_COL_AGE_MS), NULL, 10);
        const tb_notify_channel_t *ch = tb_config_notify_channel(conf, channel);
        tb_send_result_t res = {0};
        char err[1024];
        tb_buf_t log = {0};
        json_t *body = NULL;
        char *text = NULL;
        int64_t t0 = tb_mono_us();
        PGconn *conn = tb_store_acquire_timeout(nt->ctx->store, 5000);
        if (!conn)
                return; /* the claim lapses: tried again later */
        if (!ch) {
                snprintf(res.error, sizeof(res.error),
                         "unknown channel '%.64s': not among the notify.channels of this "
                         "taskbusd's config (%.200s)",
                         channel, conf->path);
                res.permanent = true;
                goto record;
        }
        json_error_t je;
        body = json_loads(PQgetvalue(r, i, TB_STORE_NOTIFY_COL_FACTS), 0, &je);
        if (!body) {
                snprintf(res.error, sizeof(res.error), "unreadable facts: %s", je.text);
                res.permanent = true;
                goto record;
        }
        if (strcmp(event, "test")) {
                tb_store_runs_logstate_t ls;
                bool started = false;
                if (tb_store_runs_logstate(conn, run_id, &ls, err, sizeof(err)) == TB_OK)
                        started = ls.started && !ls.eof && !ls.expired;
                if (started && age_ms < TB_SEND_LOG_WAIT_MS && strcmp(event, "long_running")) {
                        /* its output is still being copied: a moment more */
                        tb_store_notify_postpone(conn, id, 250, err, sizeof(err));
                        goto done;
                }
                if (tb_send_log_tail(conn, conf, run_id, &log, err, sizeof(err)) != TB_OK) {
                        tb_warn(TB_NOTIFIER_SUB, "notification %" PRId64 ": output: %s", id,
                                err);
                        log.len = 0;
                }
        }
        tb_store_release(nt->ctx->store, conn);
        conn = NULL;
        json_object_set_new(body, "event", json_string(event));
        json_object_set_new(body, "delivery_id", json_integer(id));
        json_object_set_new(body, "log_tail", json_stringn(log.len ? log.data : "", log.len));
        text = json_dumps(body, JSON_COMPACT);
        if (!text) {
                snprintf(res.error, sizeof(res.error), "out of memory");
        } else if (!strcmp(ch->type, "smtp")) {
                tb_send_smtp(conf, ch, id, event, body, &nt->stop, &res);
        } else {
                tb_send_webhook(conf, ch, id, event, text, &nt->stop, &res);
        }
        conn = tb_store_acquire_timeout(nt->ctx->store, 5000);
        if (!conn) {
                tb_warn(TB_NOTIFIER_SUB, "notification %" PRId64 ": no PostgreSQL connection to "
                        "record attempt %d; it will be sent again", id, attempt);
                goto done;
        }
record:;
        bool final = res.error[0] && (res.permanent || attempt >= conf->notify_max_attempts);
        int64_t dur = (tb_mono_us() - t0) / 1000;
        if (tb_store_notify_record(conn, id, attempt, res.code, res.error[0] ? res.error : NULL,
                                   dur, final, tb_send_backoff(conf, attempt), err,
                                   sizeof(err)) != TB_OK)
                tb_warn(TB_NOTIFIER_SUB, "notification %" PRId64 ": %s", id, err);
        tb_metrics_add("taskbus_notifier_attempts_total", NULL, 1);
        if (!res.error[0]) {
                tb_metrics_add("taskbus_notifier_delivered_total", NULL, 1);
                tb_info(TB_NOTIFIER_SUB, "notification %" PRId64 " (%s of run %s) delivered to "
                        "%s", id, event, run_id, channel);
        } else {
                if (final)
                        tb_metrics_add("taskbus_notifier_failed_total", NULL, 1);
                tb_warn(TB_NOTIFIER_SUB, "notification %" PRId64 " (%s of run %s) to %s, attempt "
                        "%d: %s%s", id, event, run_id, channel, attempt, res.error,
                        final ? " (failed for good)" : "");
        }
done:
        if (conn)
                tb_store_release(nt->ctx->store, conn);
        free(text);
        json_decref(body);
        tb_buf_free(&log);
}

static void *tb_send_main(void *arg) {
        tb_notifier_t *nt = arg;
        const tb_config_t *conf = nt->ctx->conf;
        char err[1024];
        int64_t next_long_us = 0, next_purge_us = 0;
        while (!atomic_load(&nt->stop)) {
                PGresult *r = NULL;
                PGconn *conn = tb_store_acquire_timeout(nt->ctx->store, 1000);
                int n = 0;
                if (conn && tb_mono_us() >= next_long_us) {
                        /* runs still going past a long_running rule's after_ms */
                        int64_t added = 0;
                        if (tb_store_notify_long_running(conn, TB_SEND_LONG_BATCH, &added, err,
                                                         sizeof(err)) != TB_OK)
                                tb_warn(TB_NOTIFIER_SUB, "%s", err);
                        else if (added > 0)
                                tb_metrics_add("taskbus_notifier_decided_total", NULL,
                                               (double)added);
                        next_long_us = tb_mono_us() + TB_SEND_LONG_EVERY_US;
                }
                if (conn && tb_mono_us() >= next_purge_us) {
                        /* notifications are run history: kept as long as runs */
                        int64_t gone = 0;
                        if (tb_store_notify_purge(conn, conf->history_retention_ms,
                                                  TB_SEND_PURGE_BATCH, &gone, err,
                                                  sizeof(err)) != TB_OK)
                                tb_warn(TB_NOTIFIER_SUB, "%s", err);
                        else if (gone > 0)
                                tb_info(TB_NOTIFIER_SUB, "deleted %" PRId64 " notification(s) "
                                        "past archiver.history_retention", gone);
                        next_purge_us = tb_mono_us() +
                                        (gone == TB_SEND_PURGE_BATCH ? TB_SEND_LONG_EVERY_US
                                                                     : TB_SEND_PURGE_EVERY_US);
                }
                if (conn) {
                        if (tb_store_notify_claim(conn, TB_SEND_CLAIM,
                                                  conf->notify_timeout_ms + 30000, &r, err,
                                                  sizeof(err)) != TB_OK)
                                tb_warn(TB_NOTIFIER_SUB, "%s", err);
                        tb_store_release(nt->ctx->store, conn);
                }
                n = r ? PQntuples(r) : 0;
                for (int i = 0; i < n && !atomic_load(&nt->stop); i++)
                        tb_send_one(nt, r, i);
                PQclear(r);
                if (n == TB_SEND_CLAIM)
                        continue;
                pthread_mutex_lock(&nt->mu);
                if (!nt->wake && !atomic_load(&nt->stop))
                        tb_cond_wait_ms(&nt->cv, &nt->mu, TB_SEND_IDLE_MS);
                nt->wake = false;
                pthread_mutex_unlock(&nt->mu);
        }
        return NULL;
}

void tb_notifier_wake(tb_notifier_t *nt) {
        pthread_mutex_lock(&nt->mu);
        nt->wake = true;
        pthread_cond_signal(&nt->cv);
        pthread_mutex_unlock(&nt->mu);
}

tb_err_t tb_notifier_sender_start(tb_notifier_t *nt, char *errstr, size_t errstr_size) {
        if (pthread_create(&nt->sender, NULL, tb_send_main, nt))
                return tb_seterr(errstr, errstr_size, TB_ERR_INTERNAL,
                                 "notifier: cannot start the sender thread");
        nt->sender_started = true;
        return TB_OK;
}

void tb_notifier_sender_stop(tb_notifier_t *nt) {
        if (!nt->sender_started)
                return;
        atomic_store(&nt->stop, true);
        tb_notifier_wake(nt);
        pthread_join(nt->sender, NULL);
        nt->sender_started = false;
}
