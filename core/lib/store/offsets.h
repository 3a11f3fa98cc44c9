/**
 * @file store/offsets.h
 * @brief The consumer_offsets table: the next Kafka offset each
 *        PostgreSQL-side consumer (the projector, the archiver: bus/pgsink.h)
 *        has applied, per topic and partition, stored in the transaction of
 *        the batch it applied so the projection is exactly-once. Only this
 *        file's functions name the table.
 */
#ifndef TB_STORE_OFFSETS_H
#define TB_STORE_OFFSETS_H

#include "tb.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/**
 * @brief Read the next offset stored for \p consumer on \p topic [\p partition].
 * @param next   receives the offset, or \p dflt when none is stored
 * @param dflt   the answer when no offset is stored
 * @returns TB_OK or TB_ERR_PG. @locality any thread (the caller's connection).
 */
tb_err_t tb_store_offsets_get(PGconn *conn, const char *consumer, const char *topic,
                              int32_t partition, int64_t dflt, int64_t *next, char *errstr,
                              size_t errstr_size);

/**
 * @brief Store \p next for \p consumer on \p topic [\p partition]; a stored
 *        offset only moves forward. Call it inside the batch's transaction.
 * @returns TB_OK or TB_ERR_PG. @locality any thread.
 */
tb_err_t tb_store_offsets_advance(PGconn *conn, const char *consumer, const char *topic,
                                  int32_t partition, int64_t next, char *errstr,
                                  size_t errstr_size);

/**
 * @brief Forget every offset of \p consumer (`taskbus replay --force`: the
 *        projection is rebuilt from offset 0).
 * @returns TB_OK or TB_ERR_PG. @locality any thread.
 */
tb_err_t tb_store_offsets_reset(PGconn *conn, const char *consumer, char *errstr,
                                size_t errstr_size);

#endif /* TB_STORE_OFFSETS_H */
