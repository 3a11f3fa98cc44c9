/**
 * @file units.h
 * @brief Durations and sizes as users write them: "500ms", "1h30m",
 *        "PT30S", "256KiB". One grammar for the configuration file, the REST
 *        API and the CLI; formatting for messages and the generated docs.
 */
#ifndef TB_UNITS_H
#define TB_UNITS_H

#include "tb.h"

#define TB_MS(n) ((int64_t)(n))
#define TB_SEC(n) ((int64_t)(n) * 1000)
#define TB_MIN(n) ((int64_t)(n) * 60 * 1000)
#define TB_HOUR(n) ((int64_t)(n) * 3600 * 1000)
#define TB_DAY(n) ((int64_t)(n) * 86400 * 1000)
#define TB_KIB(n) ((int64_t)(n) * 1024)
#define TB_MIB(n) ((int64_t)(n) * 1024 * 1024)
#define TB_GIB(n) ((int64_t)(n) * 1024 * 1024 * 1024)
#define TB_TIB(n) ((int64_t)(n) * 1024 * 1024 * 1024 * 1024)

/* Anything longer is certainly a typo and would overflow ms arithmetic
 * downstream (timer wheels add durations to epoch ms). */
#define TB_DURATION_MAX_MS TB_DAY(365 * 1000)

/**
 * Parse a duration: "500ms", "30s", "5m", "2h", "7d", "1w", combinations
 * ("1h30m"), decimals ("1.5h"), a bare integer (seconds), or an ISO 8601
 * duration ("PT30S", "P1DT2H"; years and months are refused: their length
 * varies). At most 1000 years; millisecond precision. It is
 * tb_pu_parse_duration() of taskbus/plugin_util.h. @returns
 * TB_ERR_INVALID with a user-readable message (it reaches REST clients).
 */
tb_err_t tb_units_duration_parse(const char *s, int64_t *ms, char *errstr, size_t errstr_size);

/**
 * Parse a size: a bare integer (bytes) or a number with a unit, "256KiB",
 * "64MiB", "1GiB", "1TiB" (powers of 1024), "500KB", "1MB" (powers of 1000),
 * "512B", or Docker's single letters k, m, g, t in either case (powers of
 * 1024: "512m"). Decimals are allowed when the result is whole bytes
 * ("1.5KiB"). It is tb_pu_parse_size() of taskbus/plugin_util.h, so plugins
 * read sizes exactly as the core does.
 * @returns TB_ERR_INVALID with a user-readable message on error.
 */
tb_err_t tb_units_size_parse(const char *s, int64_t *bytes, char *errstr, size_t errstr_size);

/** Compact human form of a duration: "1826d", "1h30m", "500ms". */
void tb_units_duration_format(int64_t ms, char *buf, size_t size);

/** A size in the largest binary unit that divides it: "256KiB", "1GiB", or
 *  bytes ("1000"). */
void tb_units_size_format(int64_t b, char *buf, size_t size);

/** ISO 8601 form of a duration, as the normalized task JSON writes it:
 *  "PT1H30M", "P30D", "PT0.5S", "-PT1S". 48 bytes hold any int64_t. */
void tb_units_duration_format_iso8601(int64_t ms, char *buf, size_t size);

#endif /* TB_UNITS_H */
