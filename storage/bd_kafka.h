/* bd_kafka: batchdet's one thin layer over librdkafka, for the worker and the scheduler.
 * It lives in storage (the I/O clients) so that both may link it: layers point one way.
 *
 * Consumer: a consumer group member with cooperative-sticky assignment that starts at
 * the earliest offset when its group has none. Two offset modes:
 *  - manual store (the worker's): optional static membership,
 *    enable.auto.offset.store=false (the caller stores an offset only when the shard's
 *    results are in Redis) and auto-commit of stored offsets. Revocations are reported
 *    to the caller through a callback from inside poll, so in-flight work of those
 *    partitions can be dropped before the partitions move.
 *  - auto store (the coordinator's reports): every delivered message's offset is stored
 *    and committed automatically; a message over BD_KAFKA_MAX_MESSAGE is skipped with
 *    BD_E_LIMIT (in manual mode it is delivered, so that the caller can dead-letter it
 *    and move its offset on).
 * Producer: idempotent (a retried produce after a broker hiccup never duplicates a
 * manifest), for manifests (submit, resubmit), reports and the dead-letter topic; it
 * also answers a topic's partition count and how many partitions received messages.
 *
 * Thread safety: a consumer is used from one thread (the poll loop); a producer may be
 * used from any thread (librdkafka's producer is thread-safe). */
#ifndef BD_KAFKA_H
#define BD_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

/* Largest message produced, and read in auto-store mode: manifests above 16 MiB are
 * refused. */
#define BD_KAFKA_MAX_MESSAGE (16u << 20)

typedef struct bd_kafka_consumer bd_kafka_consumer;
typedef struct bd_kafka_producer bd_kafka_producer;

typedef struct bd_kafka_msg {
  char topic[256];
  int32_t partition;
  int64_t offset;
  char *key;     /* owned, NUL-terminated (may be empty) */
  char *payload; /* owned, NUL-terminated copy */
  size_t len;    /* payload length */
} bd_kafka_msg;

void bd_kafka_msg_clear(bd_kafka_msg *m);

/* Called from inside bd_kafka_consumer_poll when partitions are revoked or lost. */
typedef void (*bd_kafka_revoke_fn)(void *ctx, const char *topic, int32_t partition);
/* Called from inside bd_kafka_consumer_poll for each newly assigned partition. */
typedef void (*bd_kafka_assign_fn)(void *ctx, const char *topic, int32_t partition);

typedef struct bd_kafka_consumer_opts {
  const char *brokers;          /* bootstrap servers */
  const char *group;            /* consumer group id */
  const char *instance_id;      /* static membership (group.instance.id), or NULL */
  const char *topic;            /* topic to subscribe */
  bd_kafka_revoke_fn on_revoke; /* may be NULL */
  bd_kafka_assign_fn on_assign; /* may be NULL */
  void *ctx;
  int session_timeout_ms; /* 0: librdkafka default */
  int auto_store;         /* 1: offsets stored (and committed) as messages are delivered;
                             0: only by bd_kafka_consumer_store */
} bd_kafka_consumer_opts;

bd_status bd_kafka_consumer_new(const bd_kafka_consumer_opts *o, bd_kafka_consumer **out,
                                bd_err *err);
/* Waits up to timeout_ms for a message. BD_OK with *msg filled (caller clears it),
 * BD_E_TIMEOUT when none arrived, BD_E_LIMIT for an oversized message in auto-store mode,
 * a retriable status for broker trouble or a failed (un)assignment in an earlier poll's
 * rebalance. */
bd_status bd_kafka_consumer_poll(bd_kafka_consumer *c, int timeout_ms, bd_kafka_msg *msg,
                                 bd_err *err);
/* Manual-store mode: stores `next_offset` (the next message to read) for the partition;
 * committed by the auto-commit timer and at close. */
bd_status bd_kafka_consumer_store(bd_kafka_consumer *c, const char *topic, int32_t partition,
                                  int64_t next_offset, bd_err *err);
/* Pauses / resumes every assigned partition (backpressure). The state is remembered:
 * partitions assigned later start in it, and a revoked partition is resumed, so no
 * partition stays paused across a revoke and a later reassignment (librdkafka keeps the
 * pause flag of a revoked partition). */
bd_status bd_kafka_consumer_pause(bd_kafka_consumer *c, int pause, bd_err *err);
/* Sum of (high watermark - position) over the assignment, from cached watermarks; -1 when
 * unknown. */
int64_t bd_kafka_consumer_lag(bd_kafka_consumer *c);
/* Commits stored offsets and leaves the group, waiting at most timeout_ms (a broker
 * outage must not hold a stopping worker past its grace period). On BD_E_TIMEOUT the
 * close is abandoned: destroy then skips it, the commit may not have happened (the
 * shards since the last commit are redone elsewhere) and the group notices the member's
 * absence only at its session timeout. NULL: no-op. */
bd_status bd_kafka_consumer_close(bd_kafka_consumer *c, int timeout_ms, bd_err *err);
void bd_kafka_consumer_destroy(bd_kafka_consumer *c);

typedef struct bd_kafka_producer_opts {
  const char *brokers;    /* bootstrap servers */
  int queue_full_wait_ms; /* how long bd_kafka_produce waits for room in a full local queue;
                             0: 10 s (a poll loop must not stall longer than that) */
} bd_kafka_producer_opts;

bd_status bd_kafka_producer_new(const bd_kafka_producer_opts *o, bd_kafka_producer **out,
                                bd_err *err);
/* Partition count of topic (metadata request): a retriable error when the brokers do not
 * answer, BD_E_NOT_FOUND when the topic does not exist. */
bd_status bd_kafka_partitions(bd_kafka_producer *p, const char *topic, int *n, bd_err *err);
/* Queues a message (copied), waiting (bounded by queue_full_wait_ms) while the local queue
 * is full. With a header (name, value) when hname is not NULL; key may be NULL. */
bd_status bd_kafka_produce(bd_kafka_producer *p, const char *topic, const char *key,
                           const void *value, size_t len, const char *hname, const char *hvalue,
                           bd_err *err);
/* Waits until everything queued is acknowledged or failed; BD_E_TIMEOUT, or
 * BD_E_UNAVAILABLE when a delivery failed since the previous flush. *n_partitions (may be
 * NULL) gets the number of distinct partitions that received messages since the producer
 * was created (partitions numbered from 4096 up are not counted). */
bd_status bd_kafka_flush(bd_kafka_producer *p, int timeout_ms, int *n_partitions, bd_err *err);
/* Drops what is still queued or in flight (a stopping process that could not deliver in
 * time), so that bd_kafka_producer_destroy does not wait for it. */
void bd_kafka_producer_purge(bd_kafka_producer *p);
void bd_kafka_producer_destroy(bd_kafka_producer *p);

#endif
