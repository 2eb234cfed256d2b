/* bd_skafka: the scheduler's Kafka ends (librdkafka): an idempotent producer for
 * manifests that also answers how many partitions a topic has and how many of them
 * received messages, and a plain group consumer for the coordinator's reports.
 *
 * It stays separate from worker/bd_kafka.h because layers point one way (scheduler
 * does not link the worker); both are thin, and could move to a shared module.
 *
 * Thread safety: a producer may be used from any thread; a consumer from one. */
#ifndef BD_SKAFKA_H
#define BD_SKAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

typedef struct bd_skafka_producer bd_skafka_producer;
typedef struct bd_skafka_consumer bd_skafka_consumer;

bd_skafka_producer *bd_skafka_producer_new(const char *brokers, bd_err *err);
void bd_skafka_producer_destroy(bd_skafka_producer *p);
/* Partition count of topic (metadata request), or a retriable error. */
bd_status bd_skafka_partitions(bd_skafka_producer *p, const char *topic, int *n, bd_err *err);
/* Queues a copy of value; waits (bounded) while the local queue is full. */
bd_status bd_skafka_produce(bd_skafka_producer *p, const char *topic, const char *key,
                            const void *value, size_t len, bd_err *err);
/* Waits for every queued message; fails if any delivery failed. *n_partitions (may be
 * NULL) gets the number of distinct partitions that received messages so far. */
bd_status bd_skafka_flush(bd_skafka_producer *p, int timeout_ms, int *n_partitions, bd_err *err);

/* Subscribes group `group` to topic; offsets auto-committed; starts at the earliest
 * offset when the group has none. */
bd_skafka_consumer *bd_skafka_consumer_new(const char *brokers, const char *group,
                                           const char *topic, bd_err *err);
void bd_skafka_consumer_destroy(bd_skafka_consumer *c);
/* BD_OK with *payload (malloc'd, NUL-terminated, caller frees) and *len;
 * BD_E_TIMEOUT when nothing came within timeout_ms. */
bd_status bd_skafka_poll(bd_skafka_consumer *c, int timeout_ms, char **payload, size_t *len,
                         bd_err *err);

#endif
