/**
 * @file config/config_internal.h
 * @brief What the files of config/ share: the property table's types and
 *        tables (config/table.c), typed assignment (config/assign.c), the
 *        loading context (config/load.c), the cross-field checks
 *        (config/finalize.c) and the integer pre-scan (config/lexer.c).
 *        Not for use outside config/: config/config.h is the public header.
 */
#ifndef TB_CONFIG_INTERNAL_H
#define TB_CONFIG_INTERNAL_H

#include "config/config.h"

#include <libconfig.h>

/** Value types of the property table. */
typedef enum tb_config_type {
        TB_CT_STRING,   /**< char *, NULL when unset and no default */
        TB_CT_INT,      /**< int64_t */
        TB_CT_BOOL,     /**< bool */
        TB_CT_DOUBLE,   /**< double */
        TB_CT_DURATION, /**< int64_t milliseconds */
        TB_CT_SIZE,     /**< int64_t bytes ("256KiB" or an integer) */
        TB_CT_STRLIST,  /**< char ** plus a size_t count at cnt_off */
        TB_CT_ENUM,     /**< char *, one of `enums` ("a|b|c") */
        TB_CT_MAP,      /**< tb_kv_t * plus a size_t count at cnt_off: a group
                         *   of NAME = "value" strings ("a=x,b=y" in string form) */
} tb_config_type_t;

/** One typed property. Bounds are in the stored unit (ms, bytes). */
typedef struct tb_config_prop {
        const char *name;   /**< dotted path, relative to its table */
        tb_config_type_t type;
        size_t off;         /**< offsetof the field in the base struct */
        size_t cnt_off;     /**< string lists: offsetof the count */
        const char *def;    /**< default, as a user would write it; NULL: none */
        double min, max;    /**< numeric types only (min == max: unbounded) */
        const char *enums;  /**< enum values, '|'-separated */
        const char *env;    /**< environment variable overriding it, or NULL */
        const char *desc;
} tb_config_prop_t;

/* ---- config/table.c ---- */

/** Room for the main table's rows and the special groups in fixed-size
 *  arrays (table.c asserts they fit). */
#define TB_CONFIG_PROPS_MAX 96
#define TB_CONFIG_SPECIAL_MAX 8

/** The main table; its order is the order of the generated doc. */
extern const tb_config_prop_t tb_config_props[];
extern const size_t tb_config_props_cnt;
/** Per security group policy: `groups = { NAME = { ... }; };`. */
extern const tb_config_prop_t tb_config_group_props[];
extern const size_t tb_config_group_props_cnt;
/** A notification channel: `notify.channels = ( { ... }, ... );`. */
extern const tb_config_prop_t tb_config_channel_props[];
extern const size_t tb_config_channel_props_cnt;
/** Top-level groups with their own walkers, listed among the valid keys. */
extern const char *tb_config_special_groups[];
extern const size_t tb_config_special_groups_cnt;
/** librdkafka properties taskbus sets per role, refused from the file. */
extern const char *tb_config_kafka_managed[];
extern const size_t tb_config_kafka_managed_cnt;

#define TB_CONFIG_KAFKA_BOOTSTRAP_DEFAULT "127.0.0.1:9092"

/** The doc's name of type \p t ("duration"). */
const char *tb_config_type_name(tb_config_type_t t);
/** What a value of type \p t looks like, for "expected ..." messages. */
const char *tb_config_type_expect(tb_config_type_t t);
/** A bound or value \p v of \p p in the user's notation ("30d", "64MiB"). */
void tb_config_prop_format_num(const tb_config_prop_t *p, double v, char *buf, size_t size);
/** Whether \p v is one of the '|'-separated \p enums. */
bool tb_config_enum_has(const char *enums, const char *v);
/** \p enums as "a, b, c", each name between \p quote marks. */
void tb_config_enum_list(const char *enums, const char *quote, char *buf, size_t size);

/* ---- config/assign.c ---- */

/** What libconfig setting \p s is ("an integer"), for "got ..." messages. */
const char *tb_config_setting_type_name(const config_setting_t *s);
/** Assign \p s, written as a user would (a default, an environment
 *  variable, a string in the file), to \p p in \p base; \p where prefixes
 *  messages. */
tb_err_t tb_config_prop_set_from_string(const tb_config_prop_t *p, void *base,
                                        const char *where, const char *s, char *errstr,
                                        size_t errstr_size);
/** Assign the libconfig setting \p s to \p p in \p base, checking its type. */
tb_err_t tb_config_prop_set_from_setting(const tb_config_prop_t *p, void *base,
                                         const char *where, const config_setting_t *s,
                                         char *errstr, size_t errstr_size);
/** Free the strings, lists and maps that the \p n \p props own in \p base. */
void tb_config_props_free(const tb_config_prop_t *props, size_t n, void *base);
/** Assign every one of the \p n \p props its default in \p base. */
tb_err_t tb_config_props_defaults(const tb_config_prop_t *props, size_t n, void *base,
                                  char *errstr, size_t errstr_size);

/* ---- config/load.c ---- */

#define TB_CONFIG_ORIGIN_MAX 512

/** Where each main property's value came from, for finalize's messages. */
typedef struct tb_config_ctx {
        const char *path;
        const char *dir;  /* include directory: the config file's own */
        char origin[TB_CONFIG_PROPS_MAX][TB_CONFIG_ORIGIN_MAX];
        unsigned *group_line; /* per tb_config_t.groups entry */
} tb_config_ctx_t;

/* ---- config/finalize.c ---- */

/** Cross-field rules checked by tb_config_finalize(), for the doc. */
extern const char *tb_config_checks[];
extern const size_t tb_config_checks_cnt;

/** The cross-field checks, once every value is read; messages name where
 *  the value at fault came from (ctx->origin). */
tb_err_t tb_config_finalize(tb_config_ctx_t *ctx, tb_config_t *conf, char *errstr,
                            size_t errstr_size);

/* ---- config/lexer.c ---- */

/**
 * Refuse integer literals of \p file (and of the files it @includes, from
 * \p dir) that libconfig would silently truncate: beyond 32 bits without an
 * L suffix, or beyond 64 bits. \p depth counts the @include nesting (0 for
 * the main file). An unreadable file passes: libconfig reports it better.
 */
tb_err_t tb_config_prescan_file(const char *dir, const char *file, int depth,
                                char *errstr, size_t errstr_size);

#endif /* TB_CONFIG_INTERNAL_H */
