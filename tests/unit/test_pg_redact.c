/**
 * @file test_pg_redact.c
 * @brief tb_store_oneline_redacted() (store/pool.c): the passwords of a
 *        libpq connection string never reach a message. The messages are
 *        libpq's own: each case hands PQconninfoParse() a string it rejects
 *        and checks that libpq's error quotes the password (so the case
 *        means something) and that the redacted line does not.
 */
#include "store/store.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

/* libpq's parse error for ci, redacted into out; the raw error in raw. */
static void parse_error(const char *ci, char *raw, size_t raw_size, char *out, size_t out_size) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(ci, &err);
        cr_assert_null(opts, "libpq accepted %s", ci);
        cr_assert_not_null(err);
        snprintf(raw, raw_size, "%s", err);
        tb_store_oneline_redacted(ci, err, out, out_size);
        PQfreemem(err);
}

Test(pg_redact, uri_userinfo_quoted_by_libpq) {
        const char *ci = "postgresql://taskbus:Sekr3tPw@[::1/taskbus";
        char raw[512], out[512];
        parse_error(ci, raw, sizeof(raw), out, sizeof(out));
        cr_assert_not_null(strstr(raw, "Sekr3tPw"), "libpq no longer quotes the URI: %s", raw);
        cr_assert_null(strstr(out, "Sekr3tPw"), "%s", out);
        cr_assert_not_null(strstr(out, "postgresql://taskbus:****@[::1/taskbus"), "%s", out);
        cr_assert_null(strchr(out, '\n'), "one line: %s", out);
}

Test(pg_redact, percent_encoded_password) {
        /* libpq quotes the undecodable token: the password itself */
        const char *ci = "postgresql://taskbus:Se%zzkrit@127.0.0.1/taskbus";
        char raw[512], out[512];
        parse_error(ci, raw, sizeof(raw), out, sizeof(out));
        cr_assert_not_null(strstr(raw, "Se%zzkrit"), "%s", raw);
        cr_assert_null(strstr(out, "Se%zz"), "%s", out);
        cr_assert_null(strstr(out, "krit"), "%s", out);
}

Test(pg_redact, password_parameter_and_decoded_form) {
        const char *ci = "postgresql://taskbus@[::1/taskbus?password=p%41ss&sslmode=require";
        char raw[512], out[512];
        parse_error(ci, raw, sizeof(raw), out, sizeof(out));
        cr_assert_not_null(strstr(raw, "p%41ss"), "%s", raw);
        cr_assert_null(strstr(out, "p%41ss"), "%s", out);
        cr_assert_not_null(strstr(out, "password=****&sslmode=require"), "%s", out);
        /* the decoded spelling, should a message hold it */
        char line[128];
        tb_store_oneline_redacted(ci, "auth failed for pAss\n", line, sizeof(line));
        cr_assert_str_eq(line, "auth failed for ****");
}

Test(pg_redact, key_value_form) {
        const char *ci = "host=127.0.0.1 password = 'a \\'q\\' x' user=taskbus";
        char line[256];
        /* libpq quotes no key=value secret in its parse errors; mask a
         * message that repeats the string anyway */
        tb_store_oneline_redacted(ci, ci, line, sizeof(line));
        cr_assert_str_eq(line, "host=127.0.0.1 password = '****' user=taskbus");
        tb_store_oneline_redacted("password=plain port=5432", "x plain y", line, sizeof(line));
        cr_assert_str_eq(line, "x **** y");
        tb_store_oneline_redacted("password='a b\\'c'", "got a b'c and a b\\'c", line,
                                  sizeof(line));
        cr_assert_str_eq(line, "got **** and ****");
}

Test(pg_redact, nothing_to_mask) {
        char line[128];
        tb_store_oneline_redacted("postgresql://taskbus@127.0.0.1:5432/taskbus",
                                  "FATAL:  password authentication failed for user \"taskbus\"\n",
                                  line, sizeof(line));
        cr_assert_str_eq(line, "FATAL:  password authentication failed for user \"taskbus\"");
        tb_store_oneline_redacted(NULL, "a\nb\n", line, sizeof(line));
        cr_assert_str_eq(line, "a; b");
        /* an empty password (user:@host) masks nothing */
        tb_store_oneline_redacted("postgresql://u:@h/db", "u:@h", line, sizeof(line));
        cr_assert_str_eq(line, "u:@h");
}

Test(pg_redact, truncates_without_leaking) {
        char line[12];
        tb_store_oneline_redacted("postgres://u:longsecretvalue@h/db",
                                  "at longsecretvalue end", line, sizeof(line));
        cr_assert_str_eq(line, "at **** end");
        char tiny[6];
        tb_store_oneline_redacted("postgres://u:longsecretvalue@h/db", "ab longsecretvalue",
                                  tiny, sizeof(tiny));
        cr_assert_null(strstr(tiny, "lo"), "%s", tiny);
}
