/**
 * @file test_signing.c
 * @brief identity/signing.h without services: the signing key of a token and
 *        the signature of a record agree with Python's hmac/hashlib (the
 *        vector below was computed with the standard library, as
 *        docs/kafka-interface.md tells external producers to), the tb-auth
 *        header parses and refuses what is malformed, a sealed K_sign opens
 *        only with its internal key and its token id, and the key file is
 *        refused when others may read it or it is not 64 hex digits.
 */
#include "identity/signing.h"
#include "support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN "tbk_abababababababababababababababababababababababababababababababab"

Test(signing, token_key_and_signature_match_python) {
        unsigned char k[TB_SIGN_KEY_LEN];
        char hex[65];
        tb_sign_token_key(TOKEN, strlen(TOKEN), k);
        for (int i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", k[i]);
        cr_assert_str_eq(hex, "c8c57dbe1ca3aec8657df4fc7fdc85be2179effbad272b6ced1c16224832aafb");
        char sig[65];
        cr_assert_eq(tb_sign_compute(k, sizeof(k), "tok_20436d5d432c",
                                     "user=alice;token=tok_20436d5d432c", INT64_C(1767225600000),
                                     "task-1", 6, "value bytes", 11, sig),
                     TB_OK);
        cr_assert_str_eq(sig, "843c574ead4209810e130f1cb4bd1b017bc57551a28abba1ef5cdb36bd2d659e");
        /* one byte of the value more: another signature */
        char sig2[65];
        cr_assert_eq(tb_sign_compute(k, sizeof(k), "tok_20436d5d432c",
                                     "user=alice;token=tok_20436d5d432c", INT64_C(1767225600000),
                                     "task-1", 6, "value bytes!", 12, sig2),
                     TB_OK);
        cr_assert_str_neq(sig, sig2);
}

Test(signing, auth_header_parses_and_refuses_malformed) {
        char err[512];
        tb_sign_auth_t a;
        const char *ok = "v1;kid=tok_20436d5d432c;ts=1767225600000;sig="
                         "843c574ead4209810e130f1cb4bd1b017bc57551a28abba1ef5cdb36bd2d659e";
        cr_assert_eq(tb_sign_auth_parse(ok, strlen(ok), &a, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(a.kid, "tok_20436d5d432c");
        cr_assert_eq(a.ts_ms, INT64_C(1767225600000));
        const char *bad[] = {
                "", "v2;kid=x;ts=1;sig=843c574ead4209810e130f1cb4bd1b017bc57551a28abba1ef5cdb36bd2d659e",
                "v1;kid=x;ts=abc;sig=843c574ead4209810e130f1cb4bd1b017bc57551a28abba1ef5cdb36bd2d659e",
                "v1;kid=x;ts=1;sig=843C574EAD4209810E130F1CB4BD1B017BC57551A28ABBA1EF5CDB36BD2D659E",
                "v1;kid=x;ts=1;sig=843c", "v1;ts=1;sig=843c574ead4209810e130f1cb4bd1b017bc57551a28abba1ef5cdb36bd2d659e",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cr_assert_eq(tb_sign_auth_parse(bad[i], strlen(bad[i]), &a, err, sizeof(err)),
                             TB_ERR_UNAUTHENTICATED, "accepted: %s", bad[i]);
                cr_assert(strstr(err, "docs/kafka-interface.md"), "%s", err);
        }
        /* a NUL inside is refused, not cut */
        char nul[200];
        memcpy(nul, ok, strlen(ok) + 1);
        nul[3] = '\0';
        cr_assert_eq(tb_sign_auth_parse(nul, strlen(ok), &a, err, sizeof(err)),
                     TB_ERR_UNAUTHENTICATED);
}

Test(signing, sealed_key_opens_only_with_its_key_and_token) {
        unsigned char kint[32], other[32], ks[32], out[32], sealed[TB_SIGN_SEALED_LEN];
        memset(kint, 7, sizeof(kint));
        memset(other, 8, sizeof(other));
        tb_sign_token_key(TOKEN, strlen(TOKEN), ks);
        cr_assert_eq(tb_sign_seal(kint, "tok_a", ks, sealed), TB_OK);
        cr_assert_eq(tb_sign_open(kint, "tok_a", sealed, sizeof(sealed), out), TB_OK);
        cr_assert_eq(memcmp(out, ks, 32), 0);
        cr_assert_neq(memmem(sealed, sizeof(sealed), ks, 8) == NULL, false,
                      "the sealed key shows K_sign in clear");
        cr_assert_eq(tb_sign_open(other, "tok_a", sealed, sizeof(sealed), out), TB_ERR_INVALID);
        cr_assert_eq(tb_sign_open(kint, "tok_b", sealed, sizeof(sealed), out), TB_ERR_INVALID);
        sealed[20] ^= 1;
        cr_assert_eq(tb_sign_open(kint, "tok_a", sealed, sizeof(sealed), out), TB_ERR_INVALID);
}

Test(signing, key_file_mode_and_content) {
        char err[512];
        unsigned char k[32];
        char *p = tbt_write_temp(".key",
                                 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
        cr_assert_eq(tb_sign_key_load(p, k, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_eq(k[1], 0x11);
        cr_assert_eq(k[31], 0xff);
        chmod(p, 0640);
        cr_assert_eq(tb_sign_key_load(p, k, err, sizeof(err)), TB_ERR_INVALID);
        cr_assert(strstr(err, "0640") && strstr(err, "chmod 600"), "%s", err);
        unlink(p);
        free(p);
        p = tbt_write_temp(".key", "not a key\n");
        cr_assert_eq(tb_sign_key_load(p, k, err, sizeof(err)), TB_ERR_INVALID);
        cr_assert(strstr(err, "64 hex digits"), "%s", err);
        unlink(p);
        free(p);
        cr_assert_eq(tb_sign_key_load("/nonexistent/taskbus.key", k, err, sizeof(err)),
                     TB_ERR_IO);
        cr_assert(strstr(err, "openssl rand -hex 32"), "%s", err);
}
