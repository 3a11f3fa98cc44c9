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

/* ---- auth.c -------------------------------------------------------------- */

void tb_identity_hex(const unsigned char *in, size_t len, char *out);
bool tb_identity_is_lower_hex(const char *s, size_t len);
tb_err_t tb_identity_sha256(const char *text, size_t len, unsigned char out[TB_HASH_LEN]);
void tb_identity_bytea_param(const unsigned char hash[TB_HASH_LEN], char out[2 * TB_HASH_LEN + 3]);
void tb_identity_quote(const char *in, char *out, size_t out_size);

/* ---- cache.c ------------------------------------------------------------- */

tb_principal_t *tb_identity_cache_get(const void *store, const unsigned char hash[TB_HASH_LEN]);
void tb_identity_cache_put(const void *store, const unsigned char hash[TB_HASH_LEN],
                           const tb_principal_t *p, int64_t cache_ms);

#endif
