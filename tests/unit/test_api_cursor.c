/**
 * @file test_api_cursor.c
 * @brief The REST API's one keyset cursor (core/roles/api/cursor.c): the
 *        token format, round trips for each list, and the decoder refusing
 *        everything but a well-formed cursor of the list it is asked for.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "api/cursor.h"

static tb_api_cursor_t cursor(tb_api_cursor_list_t list, const char *key, const char *id) {
        tb_api_cursor_t c = {.list = list};
        snprintf(c.key, sizeof(c.key), "%s", key);
        snprintf(c.id, sizeof(c.id), "%s", id);
        return c;
}

static bool decodes(const char *token, tb_api_cursor_list_t list) {
        tb_api_cursor_t c;
        char err[256] = "";
        tb_err_t e = tb_api_cursor_decode(token, list, &c, err, sizeof(err));
        if (e != TB_OK)
                cr_assert(err[0], "a refusal says why");
        return e == TB_OK;
}

/* The format is base64url (no padding) of "1|<list>|<key>|<id>". */
Test(api_cursor, the_token_is_base64url_of_the_versioned_keyset) {
        char tok[TB_API_CURSOR_TOKEN_MAX], err[256];
        tb_api_cursor_t c = cursor(TB_API_CURSOR_RUNS, "1767225600000", "abc");
        cr_assert_eq(tb_api_cursor_encode(&c, tok, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(tok, "MXxyfDE3NjcyMjU2MDAwMDB8YWJj");
        c = cursor(TB_API_CURSOR_HISTORY, "42", "");
        cr_assert_eq(tb_api_cursor_encode(&c, tok, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(tok, "MXxofDQyfA");
        c = cursor(TB_API_CURSOR_TASKS, "2026-01-02T03:04:05.123456Z",
                   "0b7c6e8e-1111-4a2b-9c3d-555555555555");
        cr_assert_eq(tb_api_cursor_encode(&c, tok, err, sizeof(err)), TB_OK, "%s", err);
        cr_assert_str_eq(tok, "MXx0fDIwMjYtMDEtMDJUMDM6MDQ6MDUuMTIzNDU2WnwwYjdjNmU4ZS0x"
                              "MTExLTRhMmItOWMzZC01NTU1NTU1NTU1NTU");
}

Test(api_cursor, round_trips_for_every_list) {
        const tb_api_cursor_t in[] = {
                cursor(TB_API_CURSOR_TASKS, "1970-01-01T00:00:00.000000Z", "t"),
                cursor(TB_API_CURSOR_TASKS, "9999-12-31T23:59:59.999999Z", "a-b_c.d:e"),
                cursor(TB_API_CURSOR_RUNS, "0", "r1"),
                cursor(TB_API_CURSOR_RUNS, "-1000", "r2"),
                cursor(TB_API_CURSOR_RUNS, "253402300799999", "r3"),
                cursor(TB_API_CURSOR_HISTORY, "0", ""),
                cursor(TB_API_CURSOR_HISTORY, "9223372036854775807", ""),
        };
        char id128[129];
        memset(id128, 'x', 128);
        id128[128] = '\0';
        tb_api_cursor_t longest =
                cursor(TB_API_CURSOR_TASKS, "2026-01-02T03:04:05.123456Z", id128);
        for (size_t i = 0; i <= TB_ARRAY_LEN(in); i++) {
                const tb_api_cursor_t *c = i < TB_ARRAY_LEN(in) ? &in[i] : &longest;
                char tok[TB_API_CURSOR_TOKEN_MAX], err[256];
                cr_assert_eq(tb_api_cursor_encode(c, tok, err, sizeof(err)), TB_OK, "%s", err);
                cr_assert_eq(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789-_"),
                             strlen(tok), "URL-safe: %s", tok);
                tb_api_cursor_t out;
                cr_assert_eq(tb_api_cursor_decode(tok, c->list, &out, err, sizeof(err)), TB_OK,
                             "%s: %s", tok, err);
                cr_assert_eq(out.list, c->list);
                cr_assert_str_eq(out.key, c->key);
                cr_assert_str_eq(out.id, c->id);
        }
}

Test(api_cursor, a_cursor_of_one_list_is_refused_by_another) {
        char tok[TB_API_CURSOR_TOKEN_MAX], err[256];
        tb_api_cursor_t c = cursor(TB_API_CURSOR_RUNS, "1767225600000", "abc");
        cr_assert_eq(tb_api_cursor_encode(&c, tok, err, sizeof(err)), TB_OK);
        cr_assert(decodes(tok, TB_API_CURSOR_RUNS));
        cr_assert_not(decodes(tok, TB_API_CURSOR_TASKS));
        cr_assert_not(decodes(tok, TB_API_CURSOR_HISTORY));
}

Test(api_cursor, garbage_and_other_formats_are_refused) {
        const char *bad[] = {
                "",
                "!!",                           /* not base64url */
                "garbage",                      /* base64url of junk */
                "MXxyfDE3NjcyMjU2MDAwMDB8YWJj=", /* padding */
                "MXxofDQyfB",                   /* "1|h|42|" with a stray bit at the end */
                "MXxyfDE3NjcyMjU2MDAwMDB8YWJjZ", /* a length of 1 mod 4 */
                "MnxyfDE3NjcyMjU2MDAwMDB8YWJj", /* version 2: "2|r|..." */
                "1767225600000.abc",            /* the old run cursor */
                "djo0Mg",                       /* the old history cursor: "v:42" */
                "MjAyNi0wMS0wMlQwMzowNDowNS4xMjM0NTZafGFiYw", /* the old task list cursor */
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                cr_assert_not(decodes(bad[i], TB_API_CURSOR_RUNS), "%s", bad[i]);
                cr_assert_not(decodes(bad[i], TB_API_CURSOR_HISTORY), "%s", bad[i]);
        }
        char huge[1024];
        memset(huge, 'A', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        cr_assert_not(decodes(huge, TB_API_CURSOR_TASKS));
}

/* Keysets of the wrong shape: the encoder refuses them, so the server never
 * hands out a cursor its decoder would refuse. */
Test(api_cursor, keysets_must_have_their_lists_shape) {
        const tb_api_cursor_t bad[] = {
                cursor(TB_API_CURSOR_TASKS, "2026-02-30T00:00:00.000000Z", "t"), /* no such day */
                cursor(TB_API_CURSOR_TASKS, "2026-01-02T03:04:05.123Z", "t"), /* not µs */
                cursor(TB_API_CURSOR_TASKS, "0000-01-01T00:00:00.000000Z", "t"), /* year 0 */
                cursor(TB_API_CURSOR_TASKS, "2026-01-02T03:04:05.123456Z", ""),  /* no id */
                cursor(TB_API_CURSOR_TASKS, "2026-01-02T03:04:05.123456Z", "a b"),
                cursor(TB_API_CURSOR_RUNS, "1e5", "r"),
                cursor(TB_API_CURSOR_RUNS, "007", "r"),
                cursor(TB_API_CURSOR_RUNS, "-0", "r"),
                cursor(TB_API_CURSOR_RUNS, "", "r"),
                cursor(TB_API_CURSOR_RUNS, "253402300800000", "r"), /* after year 9999 */
                cursor(TB_API_CURSOR_RUNS, "9223372036854775808", "r"),
                cursor(TB_API_CURSOR_RUNS, "5", "r|s"),
                cursor(TB_API_CURSOR_HISTORY, "-1", ""),
                cursor(TB_API_CURSOR_HISTORY, "3", "an-id"),
                cursor((tb_api_cursor_list_t)'x', "3", ""),
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++) {
                char tok[TB_API_CURSOR_TOKEN_MAX], err[256] = "";
                cr_assert_eq(tb_api_cursor_encode(&bad[i], tok, err, sizeof(err)), TB_ERR_INVALID,
                             "(%c, %s, %s)", (char)bad[i].list, bad[i].key, bad[i].id);
                cr_assert(err[0]);
        }
}

/* The same kind of keysets, written by hand as tokens (base64url of the raw
 * text in the comment), are refused by the decoder. */
Test(api_cursor, the_decoder_checks_the_keyset_too) {
        const char *bad[][2] = {
                {"MXx0fDIwMjYtMDItMzBUMDA6MDA6MDAuMDAwMDAwWnx0", "t"}, /* 1|t|2026-02-30...|t */
                {"MXxyfDAwN3xy", "r"},                                 /* 1|r|007|r */
                {"MXxyfDV8YSBi", "r"},                                 /* 1|r|5|a b */
                {"MXxyfDV8", "r"},                                     /* 1|r|5| */
                {"MXxofC0xfA", "h"},                                   /* 1|h|-1| */
                {"MXxofDN8aWQ", "h"},                                  /* 1|h|3|id */
                {"MXxofDM", "h"},                                      /* 1|h|3 */
        };
        for (size_t i = 0; i < TB_ARRAY_LEN(bad); i++)
                cr_assert_not(decodes(bad[i][0], (tb_api_cursor_list_t)bad[i][1][0]), "%s",
                              bad[i][0]);
}
