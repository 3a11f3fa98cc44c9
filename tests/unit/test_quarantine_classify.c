/**
 * @file test_quarantine_classify.c
 * @brief store/quarantine.h: which PostgreSQL failures are the record's own
 *        (quarantined) and which are the database's (the batch retried).
 */
#include "store/quarantine.h"

#include <criterion/criterion.h>

Test(quarantine_classify, record_content_is_permanent_the_database_is_transient) {
        static const struct {
                const char *sqlstate;
                tb_store_fault_t want;
        } cases[] = {
                /* the record's content */
                {"54000", TB_STORE_FAULT_PERMANENT}, /* index row size exceeds btree maximum */
                {"54001", TB_STORE_FAULT_PERMANENT}, /* statement too complex */
                {"22021", TB_STORE_FAULT_PERMANENT}, /* invalid byte sequence for UTF8 */
                {"22008", TB_STORE_FAULT_PERMANENT}, /* timestamp / interval out of range */
                {"22003", TB_STORE_FAULT_PERMANENT}, /* numeric value out of range */
                {"22P02", TB_STORE_FAULT_PERMANENT}, /* invalid text representation */
                {"22P05", TB_STORE_FAULT_PERMANENT}, /* \u0000 in jsonb */
                {"23502", TB_STORE_FAULT_PERMANENT}, /* not null */
                {"23505", TB_STORE_FAULT_PERMANENT}, /* unique */
                {"23514", TB_STORE_FAULT_PERMANENT}, /* check */
                {"23503", TB_STORE_FAULT_PERMANENT}, /* foreign key */
                {"42804", TB_STORE_FAULT_PERMANENT}, /* datatype mismatch */
                /* the database */
                {"08006", TB_STORE_FAULT_TRANSIENT}, /* connection failure */
                {"08003", TB_STORE_FAULT_TRANSIENT},
                {"40001", TB_STORE_FAULT_TRANSIENT}, /* serialization failure */
                {"40P01", TB_STORE_FAULT_TRANSIENT}, /* deadlock */
                {"55P03", TB_STORE_FAULT_TRANSIENT}, /* lock not available */
                {"57014", TB_STORE_FAULT_TRANSIENT}, /* statement timeout / cancel */
                {"57P01", TB_STORE_FAULT_TRANSIENT}, /* admin shutdown */
                {"53100", TB_STORE_FAULT_TRANSIENT}, /* disk full */
                {"53300", TB_STORE_FAULT_TRANSIENT}, /* too many connections */
                {"58030", TB_STORE_FAULT_TRANSIENT}, /* io error */
                {"25P02", TB_STORE_FAULT_TRANSIENT}, /* in failed transaction: ours */
                /* a bug in our SQL must not quarantine every record */
                {"42601", TB_STORE_FAULT_TRANSIENT}, /* syntax error */
                {"42P01", TB_STORE_FAULT_TRANSIENT}, /* undefined table */
                {"42703", TB_STORE_FAULT_TRANSIENT}, /* undefined column */
                {"XX000", TB_STORE_FAULT_TRANSIENT}, /* internal error */
                /* no SQLSTATE at all */
                {"", TB_STORE_FAULT_TRANSIENT},
                {NULL, TB_STORE_FAULT_TRANSIENT},
                {"2200", TB_STORE_FAULT_TRANSIENT},
                {"220000", TB_STORE_FAULT_TRANSIENT},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                cr_expect_eq(tb_store_quarantine_classify(cases[i].sqlstate), cases[i].want,
                             "SQLSTATE %s", cases[i].sqlstate ? cases[i].sqlstate : "(null)");
}
