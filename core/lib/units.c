/**
 * @file units.c
 * @brief Durations and sizes as users write them: parsing ("1h30m",
 *        "PT30S", "256KiB") and the compact formatting of messages and docs.
 *        The configuration, the REST validator, the CLI and the plugin
 *        host share it; the parsers are the ones of taskbus/plugin_util.h.
 */
#include "units.h"

#include <taskbus/plugin_util.h>

#include <stdio.h>
#include <string.h>

/** A unit suffix and its size in the stored unit (milliseconds, bytes). */
typedef struct tb_units_suffix {
        const char *name;
        int64_t unit;
} tb_units_suffix_t;

/* The grammar itself lives in <taskbus/plugin_util.h>, header-only so that
 * plugins (which link no taskbus code) parse "512m" or "90s" exactly as the
 * configuration and the REST API do: one copy, and these are its core names. */
_Static_assert(TB_DURATION_MAX_MS == TB_PU_DURATION_MAX_MS,
               "units.h and plugin_util.h disagree on the longest duration");

tb_err_t tb_units_duration_parse(const char *s, int64_t *ms, char *errstr,
                                 size_t errstr_size) {
        if (tb_pu_parse_duration(s, ms, errstr, errstr_size) != TB_PLUGIN_OK)
                return TB_ERR_INVALID;
        return TB_OK;
}

tb_err_t tb_units_size_parse(const char *s, int64_t *bytes, char *errstr,
                             size_t errstr_size) {
        if (tb_pu_parse_size(s, bytes, errstr, errstr_size) != TB_PLUGIN_OK)
                return TB_ERR_INVALID;
        return TB_OK;
}

/** Compact human form of a duration: "1826d", "1h30m", "500ms". */
void tb_units_duration_format(int64_t ms, char *buf, size_t size) {
        static const tb_units_suffix_t units[] = {
                {"d", TB_DAY(1)}, {"h", TB_HOUR(1)}, {"m", TB_MIN(1)},
                {"s", TB_SEC(1)}, {"ms", 1},
        };
        size_t len = 0;
        buf[0] = '\0';
        if (ms <= 0) {
                tb_snprintf(buf, size, "%s", ms == 0 ? "0s" : "negative");
                return;
        }
        for (size_t i = 0; i < TB_ARRAY_LEN(units) && ms; i++) {
                if (ms < units[i].unit)
                        continue;
                int n = snprintf(buf + len, size - len, "%lld%s",
                                 (long long)(ms / units[i].unit), units[i].name);
                if (n < 0 || (size_t)n >= size - len)
                        return;
                len += (size_t)n;
                ms %= units[i].unit;
        }
}

void tb_units_size_format(int64_t b, char *buf, size_t size) {
        static const tb_units_suffix_t units[] = {
                {"TiB", TB_TIB(1)}, {"GiB", TB_GIB(1)}, {"MiB", TB_MIB(1)}, {"KiB", TB_KIB(1)},
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(units); i++) {
                if (b && b % units[i].unit == 0) {
                        tb_snprintf(buf, size, "%lld%s", (long long)(b / units[i].unit),
                                    units[i].name);
                        return;
                }
        }
        tb_snprintf(buf, size, "%lld", (long long)b);
}

void tb_units_duration_format_iso8601(int64_t ms, char *buf, size_t size) {
        /* The longest, "-P106751991167DT7H12M55.808S", fits with room. */
        char iso[48];
        size_t len = 0;
        uint64_t u;
        if (ms < 0) {
                iso[len++] = '-';
                u = (uint64_t)0 - (uint64_t)ms;
        } else {
                u = (uint64_t)ms;
        }
        uint64_t days = u / (uint64_t)TB_DAY(1), rest = u % (uint64_t)TB_DAY(1);
        uint64_t h = rest / (uint64_t)TB_HOUR(1), m = rest / (uint64_t)TB_MIN(1) % 60;
        uint64_t sec = rest / 1000 % 60, frac = rest % 1000;
        int n;
        iso[len++] = 'P';
        if (days) {
                n = snprintf(iso + len, sizeof(iso) - len, "%lluD",
                             (unsigned long long)days);
                len += (size_t)n;
        }
        if (rest || !days) {
                iso[len++] = 'T';
                if (h) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%lluH",
                                     (unsigned long long)h);
                        len += (size_t)n;
                }
                if (m) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%lluM",
                                     (unsigned long long)m);
                        len += (size_t)n;
                }
                if (sec || frac || !rest) {
                        n = snprintf(iso + len, sizeof(iso) - len, "%llu",
                                     (unsigned long long)sec);
                        len += (size_t)n;
                        if (frac) {
                                char f[8];
                                snprintf(f, sizeof(f), ".%03u", (unsigned)frac);
                                size_t fl = strlen(f);
                                while (f[fl - 1] == '0')
                                        f[--fl] = '\0';
                                memcpy(iso + len, f, fl);
                                len += fl;
                        }
                        iso[len++] = 'S';
                }
        }
        iso[len] = '\0';
        tb_snprintf(buf, size, "%s", iso);
}
