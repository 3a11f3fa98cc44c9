/**
 * @file identity/identity_internal.h
 * @brief What the identity files share: the token format and its helpers
 *        (auth.c), and the authentication cache (cache.c). Not for callers
 *        outside core/lib/identity/.
 */
#ifndef TB_IDENTITY_INTERNAL_H
#define TB_IDENTITY_INTERNAL_H

#include "identity/identity.h"

#define TB_TOKEN_PREFIX "tbk_"
#define TB_TOKEN_PREFIX_LEN 4
#define TB_TOKEN_RAW_LEN 32
#define TB_TOKEN_LEN (TB_TOKEN_PREFIX_LEN + 2 * TB_TOKEN_RAW_LEN) /* 68 */
#define TB_TOKEN_ID_PREFIX "tok_"
#define TB_TOKEN_ID_HEX 12
#define TB_HASH_LEN 32

/* ---- auth.c: the token format ------------------------------------------- */

/** Lowercase hex of \p len bytes into \p out (2 * len + 1 bytes, NUL-terminated). */
void tb_identity_hex(const unsigned char *in, size_t len, char *out);
/** @returns true if the \p len bytes of \p s are all [0-9a-f]. */
bool tb_identity_is_lower_hex(const char *s, size_t len);
/** SHA-256 of \p len bytes of \p text. @returns TB_OK or TB_ERR_INTERNAL. */
tb_err_t tb_identity_sha256(const char *text, size_t len, unsigned char out[TB_HASH_LEN]);
/** \p in (may be NULL) made safe for a message: printable ASCII, \\xNN for
 *  the rest, cut with "..." to fit \p out_size. */
void tb_identity_quote(const char *in, char *out, size_t out_size);

/* ---- cache.c: the authentication cache ------------------------------------ */

/** @returns a copy of the principal cached for (\p store, \p hash) that has
 *  not expired (caller frees with tb_principal_free()), or NULL.
 *  @locality any thread. */
tb_principal_t *tb_identity_cache_get(const void *store, const unsigned char hash[TB_HASH_LEN]);
/** Cache a copy of \p p for \p cache_ms, replacing an entry for the same key
 *  and, when full, dropping expired entries, then those closest to expiry;
 *  out of memory, it caches nothing (not caching is always correct).
 *  @locality any thread. */
void tb_identity_cache_put(const void *store, const unsigned char hash[TB_HASH_LEN],
                           const tb_principal_t *p, int64_t cache_ms);
/** Was (\p store, \p hash) found unknown (no such token) less than its
 *  cache_ms ago? @locality any thread. */
bool tb_identity_cache_unknown(const void *store, const unsigned char hash[TB_HASH_LEN]);
/** Remember for \p cache_ms that no token has \p hash (bounded table: an
 *  older entry of the same slot is overwritten). @locality any thread. */
void tb_identity_cache_put_unknown(const void *store, const unsigned char hash[TB_HASH_LEN],
                                   int64_t cache_ms);

#endif
