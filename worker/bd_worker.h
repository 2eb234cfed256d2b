/* bd_worker: the worker process's pipeline, from Kafka manifests to Redis results.
 *
 *   poll (this thread: consumer, manifest decode+validate, DLQ, offsets, reports)
 *     -> fetch (bd_fetch, curl multi thread) -> decode pool (N threads)
 *     -> batcher (one thread: fills batches per model up to `batch` or a deadline)
 *     -> executors (one thread per device instance: sim, cpu, cuda via bd_engine)
 *     -> Redis writer (one thread: shard completion script, worker heartbeat)
 *     -> back to the poll thread, which marks the offset done and stores what became
 *        committable (bd_offsets), so an offset is stored only after Redis acknowledged
 *        every result of that shard and of all shards before it in the partition.
 *
 * Every queue between stages is bounded; the poll thread pauses all partitions when the
 * number of in-flight shards or in-flight bytes is over its limit and resumes below half.
 * A revoked partition's shards are dropped (no Redis write, no offset store); the new
 * owner redoes them and the idempotent completion script keeps counters exact.
 *
 * Thread model: bd_worker_run blocks in the calling thread until bd_worker_stop was called
 * (from a signal handler: it only sets atomics) and the drain finished. */
#ifndef BD_WORKER_H
#define BD_WORKER_H

#include <stdint.h>

#include "bd_status.h"

#define BD_WORKER_MAX_DEVICES 64

typedef struct bd_worker_config {
  const char *brokers;
  const char *redis_url;
  const char *models_dir;  /* NAME.onnx files */
  int models_dir_explicit; /* sim devices check model names only when a dir was given */
  const char *devices;     /* cpu | cpu:N | cuda | cuda:0,1 | sim:N:MS */
  const char *group;
  const char *instance_id; /* static membership and worker id; NULL = host:pid */
  const char *topic;
  const char *reports_topic;
  const char *dlq_topic;
  int batch;            /* images per device batch */
  int batch_timeout_ms; /* a partial batch waits at most this long */
  int fetch_concurrency;
  int decode_threads;
  int max_inflight_mb;
  int max_inflight_shards;
  int metrics_port; /* 0 = no HTTP endpoint */
  double report_interval_s;
  double grace_s;
  int allow_file;
  int cpu_threads;        /* engine threads per cpu device; 0 = cores / devices */
  int session_timeout_ms; /* group session; 0 = 10 s with --instance-id, else librdkafka's */
} bd_worker_config;

void bd_worker_config_default(bd_worker_config *c);

/* Parsed --devices: executor names and kinds. */
typedef enum { BD_WDEV_SIM = 0, BD_WDEV_CPU, BD_WDEV_CUDA } bd_wdev_kind;

typedef struct bd_wdev_spec {
  int n;
  bd_wdev_kind kind[BD_WORKER_MAX_DEVICES];
  char name[BD_WORKER_MAX_DEVICES][32];       /* "sim:0", "cpu:1", "cuda:0" */
  char engine_dev[BD_WORKER_MAX_DEVICES][16]; /* bd_engine device string */
  int sim_ms;
} bd_wdev_spec;

/* "cpu", "cpu:N" (N 1..64), "cuda", "cuda:0,1,..", "sim:N:MS" (MS 0..60000). */
bd_status bd_worker_parse_devices(const char *s, bd_wdev_spec *out, bd_err *err);

/* Runs until stopped; BD_OK after a clean drain. Fatal setup errors are returned. */
bd_status bd_worker_run(const bd_worker_config *c, bd_err *err);

/* Async-signal-safe: the first call starts the graceful drain; the second asks for an
 * immediate exit (returns 1 then, so the handler can _exit). */
int bd_worker_stop(void);

#endif
