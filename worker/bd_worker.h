/* bd_worker: the worker process's pipeline, from Kafka manifests to Redis results.
 *
 *   poll (this thread: consumer, manifest decode+validate, DLQ, offsets, reports)
 *     -> fetch (bd_fetch, curl multi thread) -> decode pool (N threads)
 *     -> batcher (one thread: fills batches per model up to `batch` or a deadline)
 *     -> executor: cpu and cuda through a bd_pool per model (created at the model's first
 *        batch, at most 8 kept): one thread submits each batch to the model's pool, at
 *        most the pool's queue_cap batches in flight, and takes its results to finish
 *        the images, woken by each result and each new batch (one bd_notify, no polling
 *        interval); the pool's instances (one engine and thread each) run them.
 *        sim devices: one thread per simulated device, sleeping instead of inferring
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
  int instances_per_gpu;   /* pool instances (engines) per GPU for cuda; 1..16 */
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
  const char *metrics_addr; /* IPv4 address to bind; NULL = all interfaces */
  double report_interval_s;
  double grace_s;
  int allow_file;
  int cpu_threads;        /* engine threads per cpu instance; 0 = all cores each */
  int session_timeout_ms; /* group session; 0 = 10 s with --instance-id, else librdkafka's */
} bd_worker_config;

void bd_worker_config_default(bd_worker_config *c);

/* Parsed --devices: one kind per worker, and its instances as the worker lists them
 * (reports, heartbeat, metrics): the sim executors, or the bd_pool instances that every
 * model's pool will have, named like the pool names them. */
typedef enum { BD_WDEV_SIM = 0, BD_WDEV_CPU, BD_WDEV_CUDA } bd_wdev_kind;

typedef struct bd_wdev_spec {
  bd_wdev_kind kind;
  int n;                                /* instances; 0 for "cuda" until resolved */
  char name[BD_WORKER_MAX_DEVICES][32]; /* "sim:0"; "cpu", "cpu#1"; "cuda:0#0" */
  char pool_devices[256];               /* bd_pool_opts.devices: "cpu", "cuda", "cuda:0,2" */
  int per_device;                       /* bd_pool_opts.instances_per_device */
  int all_gpus;                         /* "cuda": every visible GPU (see resolve) */
  int sim_ms;
} bd_wdev_spec;

/* "cpu" (one instance), "cpu:N" (N 1..64 instances, each with cpu_threads threads),
 * "cuda" (every visible GPU), "cuda:I,J,.." (I 0..63, no duplicates), each GPU with
 * per_gpu instances (1..16), "sim:N:MS" (N 1..64, MS 0..60000). Syntax only: BD_E_INVALID
 * naming --devices (or --instances-per-gpu), BD_E_LIMIT past BD_WORKER_MAX_DEVICES
 * instances; cuda names are complete once bd_worker_resolve_devices ran. */
bd_status bd_worker_parse_devices(const char *s, int per_gpu, bd_wdev_spec *out, bd_err *err);

/* For cuda: checks the spec against n_gpus visible GPUs (bd_worker_visible_gpus) and
 * names its instances, "cuda" expanding to all of them. BD_E_UNSUPPORTED when n_gpus < 0
 * (a build without the CUDA backend), BD_E_DEVICE when a GPU is not visible or there is
 * none, BD_E_LIMIT past BD_WORKER_MAX_DEVICES instances. No-op for cpu and sim. */
bd_status bd_worker_resolve_devices(bd_wdev_spec *spec, int n_gpus, bd_err *err);

/* Visible CUDA devices; -1 when this build has no CUDA backend. */
int bd_worker_visible_gpus(void);

/* Runs until stopped; BD_OK after a clean drain. Fatal setup errors are returned. */
bd_status bd_worker_run(const bd_worker_config *c, bd_err *err);

/* Async-signal-safe: the first call starts the graceful drain; the second asks for an
 * immediate exit (returns 1 then, so the handler can _exit). */
int bd_worker_stop(void);

#endif
