/**
 * @file api/cursor.c
 * @brief The opaque, versioned cursor of every keyset page of the REST API
 *        (see api/cursor.h for the format).
 */
#include "api/cursor.h"
#include "api/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/** The format version, the first field of every token. */
#define TB_API_CURSOR_VERSION '1'
/** "1|l|" + key + "|" + id */
#define TB_API_CURSOR_RAW_MAX (4 + TB_API_CURSOR_KEY_MAX + 1 + TB_API_CURSOR_ID_MAX)
/** Run keys: epoch ms of 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z,
 *  what PostgreSQL's timestamptz arithmetic takes without an error. */
#define TB_API_CURSOR_MS_MIN INT64_C(-62135596800000)
#define TB_API_CURSOR_MS_MAX INT64_C(253402300799999)

static const char tb_api_cursor_b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* ---- base64url ---------------------------------------------------------------- */

/** \p len bytes of \p in as base64url without padding into \p out, which
 *  holds at least 4 * ceil(len / 3) + 1 bytes. */
static void tb_api_cursor_b64_encode(const unsigned char *in, size_t len, char *out) {
        size_t o = 0;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16;
                if (i + 1 < len)
                        v |= (uint32_t)in[i + 1] << 8;
                if (i + 2 < len)
                        v |= in[i + 2];
                out[o++] = tb_api_cursor_b64[(v >> 18) & 63];
                out[o++] = tb_api_cursor_b64[(v >> 12) & 63];
                if (i + 1 < len)
                        out[o++] = tb_api_cursor_b64[(v >> 6) & 63];
                if (i + 2 < len)
                        out[o++] = tb_api_cursor_b64[v & 63];
        }
        out[o] = '\0';
}

static int tb_api_cursor_b64_value(char c) {
        const char *p = c ? strchr(tb_api_cursor_b64, c) : NULL;
        return p ? (int)(p - tb_api_cursor_b64) : -1;
}

/**
 * Decode canonical base64url without padding: only the alphabet, no
 * length of 1 mod 4, no stray bits in the last character (so that every
 * keyset has exactly one token). @returns the decoded length, or -1 (also
 * when it would not fit in \p cap bytes).
 */
static ssize_t tb_api_cursor_b64_decode(const char *in, unsigned char *out, size_t cap) {
        size_t n = strlen(in);
        if (n % 4 == 1 || (n / 4) * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
                return -1;
        size_t o = 0;
        uint32_t acc = 0;
        int bits = 0;
        for (size_t i = 0; i < n; i++) {
                int v = tb_api_cursor_b64_value(in[i]);
                if (v < 0)
                        return -1;
                acc = (acc << 6) | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (unsigned char)((acc >> bits) & 0xff);
                }
        }
        if (acc & ((1u << bits) - 1))
                return -1;
        return (ssize_t)o;
}

/* ---- keysets ----------------------------------------------------------------- */

/** A decimal int64 in [lo, hi], written as the server writes one: digits
 *  after one '-' at most, no leading zero, no "-0". */
static bool tb_api_cursor_int(const char *s, int64_t lo, int64_t hi) {
        const char *d = *s == '-' ? s + 1 : s;
        if (!*d || (d[0] == '0' && (d[1] || d != s)))
                return false;
        for (const char *p = d; *p; p++)
                if (!isdigit((unsigned char)*p))
                        return false;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        return errno != ERANGE && end && !*end && v >= lo && v <= hi;
}

/* YYYY-MM-DDTHH:MM:SS.uuuuuuZ exactly as the server writes created_at (to_char
 * with microseconds), and a real instant from year 1 on. */
static bool tb_api_cursor_timestamp(const char *s) {
        static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
        if (strlen(s) != sizeof(shape) - 1)
                return false;
        for (size_t i = 0; shape[i]; i++)
                if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
                        return false;
        int64_t ms;
        char err[160];
        return tb_time_parse(s, &ms, err, sizeof(err)) == TB_OK && ms >= TB_API_CURSOR_MS_MIN;
}

/** Does \p cur have its list's shape? @returns TB_OK or TB_ERR_INVALID. */
static tb_err_t tb_api_cursor_check(const tb_api_cursor_t *cur, char *errstr,
                                    size_t errstr_size) {
        bool key_ok = false, id_ok = false;
        switch (cur->list) {
        case TB_API_CURSOR_TASKS:
                key_ok = tb_api_cursor_timestamp(cur->key);
                id_ok = tb_api_id_ok(cur->id);
                break;
        case TB_API_CURSOR_RUNS:
                key_ok = tb_api_cursor_int(cur->key, TB_API_CURSOR_MS_MIN, TB_API_CURSOR_MS_MAX);
                id_ok = tb_api_id_ok(cur->id);
                break;
        case TB_API_CURSOR_HISTORY:
        case TB_API_CURSOR_AUDIT:
                key_ok = tb_api_cursor_int(cur->key, 0, INT64_MAX);
                id_ok = !cur->id[0];
                break;
        default:
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cursor: unknown list");
        }
        if (!key_ok)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: the key '%.40s' is not one of list '%c'", cur->key,
                                 (char)cur->list);
        if (!id_ok)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: the id is not one of list '%c'", (char)cur->list);
        return TB_OK;
}

/* ---- tokens ------------------------------------------------------------------- */

tb_err_t tb_api_cursor_encode(const tb_api_cursor_t *cur, char out[TB_API_CURSOR_TOKEN_MAX],
                              char *errstr, size_t errstr_size) {
        char raw[TB_API_CURSOR_RAW_MAX + 1];
        out[0] = '\0';
        if (strnlen(cur->key, sizeof(cur->key)) > TB_API_CURSOR_KEY_MAX ||
            strnlen(cur->id, sizeof(cur->id)) > TB_API_CURSOR_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: key or id too long");
        tb_err_t err = tb_api_cursor_check(cur, errstr, errstr_size);
        if (err)
                return err;
        int n = snprintf(raw, sizeof(raw), "%c|%c|%s|%s", TB_API_CURSOR_VERSION,
                         (char)cur->list, cur->key, cur->id);
        if (n < 0 || (size_t)n >= sizeof(raw))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cursor: too long");
        tb_api_cursor_b64_encode((const unsigned char *)raw, (size_t)n, out);
        return TB_OK;
}

tb_err_t tb_api_cursor_decode(const char *token, tb_api_cursor_list_t list,
                              tb_api_cursor_t *out, char *errstr, size_t errstr_size) {
        unsigned char raw[TB_API_CURSOR_RAW_MAX + 1];
        if (strnlen(token, TB_API_CURSOR_TOKEN_MAX) >= TB_API_CURSOR_TOKEN_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cursor: too long");
        ssize_t n = tb_api_cursor_b64_decode(token, raw, TB_API_CURSOR_RAW_MAX);
        if (n < 0)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: not canonical base64url");
        if (memchr(raw, '\0', (size_t)n))
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID, "cursor: a NUL byte");
        raw[n] = '\0';
        const char *s = (const char *)raw;
        if (n < 5 || s[0] != TB_API_CURSOR_VERSION || s[1] != '|' || s[3] != '|')
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: not a version %c cursor", TB_API_CURSOR_VERSION);
        if (s[2] != (char)list)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: a cursor of another list");
        const char *key = s + 4, *bar = strchr(key, '|');
        if (!bar || (size_t)(bar - key) > TB_API_CURSOR_KEY_MAX ||
            strlen(bar + 1) > TB_API_CURSOR_ID_MAX)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "cursor: not key|id of the allowed lengths");
        tb_api_cursor_t c = {.list = list};
        memcpy(c.key, key, (size_t)(bar - key));
        c.key[bar - key] = '\0';
        memcpy(c.id, bar + 1, strlen(bar + 1) + 1);
        tb_err_t err = tb_api_cursor_check(&c, errstr, errstr_size);
        if (err)
                return err;
        *out = c;
        return TB_OK;
}
