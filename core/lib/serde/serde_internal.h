/**
 * @file serde/serde_internal.h
 * @brief Private to serde/: the schema tree shared by schema.c (which builds
 *        it and holds the embedded schemas), encode.c and decode.c.
 *
 * Nothing outside core/lib/serde/ includes this; the public API is serde.h.
 */
#ifndef TB_SERDE_INTERNAL_H
#define TB_SERDE_INTERNAL_H

#include "serde/serde.h"

#include <avro.h>

#define TB_SERDE_MAX_DEPTH 64   /* schema and data nesting limit */
#define TB_SERDE_ZERO_ELEMS 65536 /* extra elements allowed beyond the
                                   * byte count (zero-size items) */
#define TB_SERDE_HEADER 10      /* C3 01 + 8-byte fingerprint */

/* ---- schema tree ---------------------------------------------------- */

typedef enum tb_atype {
        TA_NULL,
        TA_BOOLEAN,
        TA_INT,
        TA_LONG,
        TA_FLOAT,
        TA_DOUBLE,
        TA_BYTES,
        TA_STRING,
        TA_RECORD,
        TA_ENUM,
        TA_ARRAY,
        TA_MAP,
        TA_UNION,
        TA_FIXED,
} tb_atype_t;

extern const char *const tb_serde_atype_names[];

typedef struct tb_snode tb_snode_t;

typedef struct tb_sfield {
        const char *name;   /* borrowed from the schema JSON */
        tb_snode_t *type;
        json_t *raw_dflt;   /* borrowed: "default" as written in the avsc */
        json_t *dflt;       /* owned: the default in serde.h's mapping */
} tb_sfield_t;

struct tb_snode {
        tb_atype_t t;
        bool attrs;          /* primitive written as an object with extra
                              * attributes (e.g. logicalType) */
        char *fullname;      /* named types: owned */
        char *ns;            /* named types: namespace for children, owned */
        size_t n;            /* fields, symbols or branches */
        tb_sfield_t *fields;
        const char **symbols;  /* borrowed strings */
        tb_snode_t **branches;
        tb_snode_t *items;   /* array items, map values */
        size_t size;         /* fixed */
        size_t minsize;      /* fewest bytes one datum can take */
        int minstate;        /* 0 unknown, 1 computing, 2 done */
};

typedef struct tb_path {
        char s[256];
        size_t len;
} tb_path_t;

typedef struct tb_sctx {
        tb_snode_t **nodes;
        size_t nnodes, capnodes;
        tb_snode_t **named;
        size_t nnamed, capnamed;
        tb_path_t path;
        char *errstr;
        size_t errstr_size;
} tb_sctx_t;

typedef struct tb_schema {
        const char *name;
        json_t *doc;               /* keeps borrowed names alive */
        tb_sctx_t ctx;
        tb_snode_t *root;
        char *canonical;           /* spec form: what we write */
        char *canonical_legacy;    /* python-avro 1.11 form: also accepted */
        uint64_t fp, fp_legacy;
        avro_schema_t aschema;
        avro_value_iface_t *iface; /* immutable once built: shared by threads */
} tb_schema_t;

/* the embedded schemas, built once by tb_serde_init() (schema.c) */
extern const char *const tb_serde_schema_names[TB_SCHEMA__COUNT];
extern tb_schema_t tb_serde_schemas[TB_SCHEMA__COUNT];
/* older writer versions still on the topics (schemas/old/), each read as
 * tb_serde_old_current[i] with the fields it lacks set to their defaults */
#define TB_SERDE_OLD_MAX 16
extern tb_schema_t tb_serde_old_schemas[TB_SERDE_OLD_MAX];
extern tb_schema_id_t tb_serde_old_current[TB_SERDE_OLD_MAX];
extern size_t tb_serde_old_cnt;

/** The state of one encode (or of decode's JSON build): the field path
 *  errors name, and the caller's errstr. */
typedef struct tb_ectx {
        tb_path_t path;
        char *errstr;
        size_t errstr_size;
} tb_ectx_t;

/* ---- schema.c: helpers the three files share --------------------- */

/** Append a path component ("TaskEvent.task" + ".schedule");
 *  @returns the length to restore with tb_serde_path_pop(). */
size_t tb_serde_path_push(tb_path_t *p, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void tb_serde_path_pop(tb_path_t *p, size_t old);
/** Reset \p p to the root record's name. */
void tb_serde_path_set(tb_path_t *p, const char *root);
/** Push a map key, shortened and escaped so messages stay one line. */
size_t tb_serde_path_push_key(tb_path_t *p, const char *key, size_t len);
/** The record a field of type \p n holds (itself, an array's items or a
 *  union's one record branch), for nested schema evolution; or NULL. */
const tb_snode_t *tb_serde_nested_record(const tb_snode_t *n);
/** Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
bool tb_serde_utf8_valid(const unsigned char *s, size_t len);
/** "object", "integer"...: the JSON type of \p j, for messages. */
const char *tb_serde_json_type_name(const json_t *j);
/** Describe a node for messages: "long", "enum io.taskbus.RunStatus". */
void tb_serde_snode_describe(const tb_snode_t *n, char *buf, size_t size);

/* ---- encode.c: errors of a value walk, also used by decode.c ------- */

/** TB_ERR_INVALID with "<path>: <message>" in the context's errstr. */
tb_err_t tb_serde_ectx_err(tb_ectx_t *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/** TB_ERR_INTERNAL naming the avro-c call \p what and avro_strerror(). */
tb_err_t tb_serde_avro_fail(tb_ectx_t *c, const char *what);

#endif /* TB_SERDE_INTERNAL_H */
