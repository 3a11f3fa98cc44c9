/**
 * @file bus/partition.c
 * @brief Kafka's murmur2 partitioner, so that tb_bus_partition_for() knows
 *        which partition of a task-keyed topic holds a task, as every
 *        producer (ours, with partitioner=murmur2_random, and the Java
 *        client) places it.
 */
#include "bus/bus.h"

/* ---- partitioning ----------------------------------------------------------- */

/** MurmurHash2 (32-bit) exactly as org.apache.kafka.common.utils.Utils.murmur2:
 *  little-endian 4-byte blocks, seed 0x9747b28c, Java's tail handling. */
static uint32_t tb_bus_murmur2(const unsigned char *p, size_t len) {
        const uint32_t m = 0x5bd1e995;
        uint32_t h = 0x9747b28cu ^ (uint32_t)len;
        size_t blocks = len / 4;
        for (size_t i = 0; i < blocks; i++) {
                const unsigned char *b = p + i * 4;
                uint32_t k = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24;
                k *= m;
                k ^= k >> 24;
                k *= m;
                h *= m;
                h ^= k;
        }
        const unsigned char *tail = p + blocks * 4;
        switch (len & 3) {
        case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
        case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
        case 1:
                h ^= (uint32_t)tail[0];
                h *= m;
        }
        h ^= h >> 13;
        h *= m;
        h ^= h >> 15;
        return h;
}

int32_t tb_bus_partition_for(const void *key, size_t len, int32_t partition_cnt) {
        /* librdkafka spreads NULL keys at random: no fixed partition */
        if (partition_cnt <= 0 || !key)
                return RD_KAFKA_PARTITION_UA;
        uint32_t h = tb_bus_murmur2(key, len);
        return (int32_t)((h & 0x7fffffffu) % (uint32_t)partition_cnt);
}
