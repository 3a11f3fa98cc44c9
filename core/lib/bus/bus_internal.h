/**
 * @file bus/bus_internal.h
 * @brief What the files of the Kafka layer share and nobody else uses: the
 *        log subsystem, property setting and handle creation.
 */
#ifndef TB_BUS_INTERNAL_H
#define TB_BUS_INTERNAL_H

#include "bus/bus.h"

#define TB_BUS_SUB "bus"

/** The configured bootstrap.servers (for messages). */
const char *tb_bus_bootstrap(const tb_config_t *conf);

/** Set one property; the message names it and carries librdkafka's reason. */
tb_err_t tb_bus_set(rd_kafka_conf_t *c, const char *key, const char *value,
                    char *errstr, size_t errstr_size);

/** Set \p key to \p value_ms when it is positive (0: librdkafka's default). */
tb_err_t tb_bus_set_ms(rd_kafka_conf_t *c, const char *key, int value_ms, char *errstr,
                       size_t errstr_size);

/** rd_kafka_new that takes \p c in every case. */
tb_err_t tb_bus_handle_new(rd_kafka_type_t type, rd_kafka_conf_t *c, const char *what,
                           rd_kafka_t **out, char *errstr, size_t errstr_size);

#endif /* TB_BUS_INTERNAL_H */
