/**
 * @file store/offsets.c
 * @brief The consumer_offsets table (store/offsets.h).
 */
#include "store/offsets.h"

#include "store/store.h"

#include <inttypes.h>
#include <stdlib.h>

tb_err_t tb_store_offsets_get(PGconn *conn, const char *consumer, const char *topic,
                              int32_t partition, int64_t dflt, int64_t *next, char *errstr,
                              size_t errstr_size) {
        char part[16];
        PGresult *r = NULL;
        tb_snprintf(part, sizeof(part), "%" PRId32, partition);
        const char *p[] = {consumer, topic, part};
        tb_err_t err = tb_store_exec(conn, "read consumed offset",
                                     "SELECT next_offset FROM consumer_offsets WHERE consumer = $1 "
                                     "AND topic = $2 AND partition = $3::int",
                                     3, p, &r, errstr, errstr_size);
        if (!err)
                *next = PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : dflt;
        PQclear(r);
        return err;
}

tb_err_t tb_store_offsets_advance(PGconn *conn, const char *consumer, const char *topic,
                                  int32_t partition, int64_t next, char *errstr,
                                  size_t errstr_size) {
        char part[16], off[32];
        tb_snprintf(part, sizeof(part), "%" PRId32, partition);
        tb_snprintf(off, sizeof(off), "%" PRId64, next);
        const char *p[] = {consumer, topic, part, off};
        return tb_store_exec(conn, "store consumed offset",
                             "INSERT INTO consumer_offsets (consumer, topic, partition, "
                             "next_offset) VALUES ($1, $2, $3::int, $4::bigint) "
                             "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
                             "next_offset = GREATEST(consumer_offsets.next_offset, "
                             "EXCLUDED.next_offset)",
                             4, p, NULL, errstr, errstr_size);
}

tb_err_t tb_store_offsets_reset(PGconn *conn, const char *consumer, char *errstr,
                                size_t errstr_size) {
        const char *p[] = {consumer};
        return tb_store_exec(conn, "reset consumed offsets",
                             "DELETE FROM consumer_offsets WHERE consumer = $1", 1, p, NULL,
                             errstr, errstr_size);
}
