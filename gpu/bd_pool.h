/* bd_pool: a pool of inference engines, one thread per instance, each thread owning one
 * bd_engine (one model on one device). The worker hands it batches of decoded images
 * and collects per-image detections; the same API serves cpu and cuda instances.
 *
 * Devices (bd_pool_opts.devices):
 *  - "cpu"      one cpu instance, engine.threads threads (0 = all cores);
 *  - "cpu:N"    one cpu instance with N threads (N 1..1024);
 *  - "cuda"     every visible GPU; "cuda:0,2" the listed GPUs (no duplicates);
 *  - instances_per_device (0 = 1) engines per device, cpu included, so "cpu" with 2 gives
 *    two cpu instances (each with the threads above).
 * Instance names: "cpu" (or "cpu#k" when there are several), "cuda:D#k".
 *
 * Flow: bd_pool_submit enqueues a batch (n images + optional per-image parameters + a
 * user tag) without blocking (or waiting up to timeout_ms for room); an idle instance
 * takes it (FIFO) and runs bd_engine_detect; its result goes to the completion queue,
 * read by bd_pool_poll (or announced by on_result, below). Every submitted batch yields
 * exactly one result: done, failed
 * (batch_status != BD_OK), or cancelled by shutdown (BD_E_CANCELLED). The pool bounds
 * the batches in flight (submitted and not yet polled) to queue_cap: a caller that does
 * not poll gets BD_E_UNAVAILABLE (retriable) from submit, which is the back-pressure.
 * A batch runs whole on one instance; to spread a large batch over instances, submit it
 * as several batches (results are the same: images are independent). Each instance keeps
 * up to BD_ENGINE_MAX_INFLIGHT batches of at most the engine's max_batch images in
 * flight (bd_engine_detect_begin/_end): on cuda the next batch is staged and copied
 * while the device runs the previous one; larger batches run whole (bd_engine_detect).
 *
 * Ownership: the pool copies the image pointer array and the parameters, but BORROWS the
 * bd_image structs and their pixels: they must stay valid until that batch's result has
 * been polled (or bd_pool_destroy has returned). A polled result belongs to the caller:
 * bd_pool_result_free. bd_pool_destroy(NULL) is a no-op.
 *
 * Thread safety: submit, poll, stats and shutdown may be called from any threads
 * concurrently; destroy must be the last call (no other call in progress or after). Engines load on
 * their instance threads (CUDA contexts are per thread); bd_pool_new returns when all loaded, or
 * fails with the first load error. */
#ifndef BD_POOL_H
#define BD_POOL_H

#include <stdint.h>

#include "bd_engine.h"
#include "bd_status.h"

#define BD_POOL_MAX_INSTANCES 256
#define BD_POOL_MAX_PER_DEVICE 16
#define BD_POOL_MAX_BATCH 65536
#define BD_POOL_MAX_QUEUE 65536
#define BD_POOL_NAME_MAX 24

typedef struct bd_pool bd_pool;

typedef struct bd_pool_opts {
  const char *devices;      /* see above; NULL = "cpu" */
  int instances_per_device; /* 0 = 1; 1..BD_POOL_MAX_PER_DEVICE */
  int queue_cap;            /* batches in flight; 0 = 2 * instances + 2 */
  bd_engine_opts engine;    /* device (and threads for "cpu:N") set per instance */
  /* Optional: called once for every result, after it became pollable, so that a caller
   * waiting on several pools (and other sources) can sleep until one has something. It
   * runs on an instance thread, or on the thread in bd_pool_shutdown for the batches it
   * cancels, with no pool lock held; it must be quick and must not call
   * bd_pool_shutdown or bd_pool_destroy. It may be called until bd_pool_destroy has
   * returned, so on_result_arg must live that long. */
  void (*on_result)(void *arg);
  void *on_result_arg;
} bd_pool_opts;

/* One instance as the device string resolves. */
typedef struct bd_pool_instance_spec {
  int is_cuda;
  int device;  /* GPU index (cuda) */
  int threads; /* cpu: engine threads (0 = all cores); cuda: engine.threads */
  char name[BD_POOL_NAME_MAX];
} bd_pool_instance_spec;

/* Resolves a device string against n_gpus visible GPUs into at most cap instances;
 * returns their number (>= 1) or -1 with err set (bad syntax, GPU index not visible,
 * duplicates, no GPU, too many). engine_threads is copied into cpu instances without :N. */
int bd_pool_parse_devices(const char *spec, int per_device, int engine_threads, int n_gpus,
                          bd_pool_instance_spec *out, int cap, bd_err *err);

bd_status bd_pool_new(const char *model_path, const bd_pool_opts *opts, bd_pool **out, bd_err *err);
/* Shuts down (cancelling queued batches) if still running, joins the threads, frees
 * results never polled. */
void bd_pool_destroy(bd_pool *p);

int bd_pool_num_instances(const bd_pool *p);
const char *bd_pool_instance_name(const bd_pool *p, int i);
/* The model's family (identical on every instance). */
const bd_family_info *bd_pool_family(const bd_pool *p);

/* Enqueues images[0..n) (NULL entries allowed: status BD_E_INVALID) with params (n
 * entries or NULL for the family defaults) under tag. timeout_ms 0: fail at once with
 * BD_E_UNAVAILABLE when queue_cap batches are in flight; > 0: wait up to that long.
 * BD_E_CANCELLED after shutdown; BD_E_INVALID / BD_E_LIMIT for bad n. */
bd_status bd_pool_submit(bd_pool *p, int n, const bd_image *const *images,
                         const bd_detect_params *params, uint64_t tag, int timeout_ms, bd_err *err);

typedef struct bd_pool_result {
  uint64_t tag;
  int n;
  bd_status batch_status;          /* BD_OK; the engine's error; BD_E_CANCELLED at shutdown */
  bd_err err;                      /* the message when batch_status != BD_OK */
  bd_detections *dets;             /* n entries when batch_status == BD_OK, else NULL; owned */
  bd_status *status;               /* likewise: per-image status */
  char instance[BD_POOL_NAME_MAX]; /* who ran it ("" when cancelled before running) */
  double queue_s;                  /* submit -> start */
  double run_s;                    /* start on the instance -> results (overlaps others) */
} bd_pool_result;

void bd_pool_result_free(bd_pool_result *r);

/* Takes the oldest completed result. timeout_ms 0: do not wait; < 0: wait without limit.
 * BD_OK with *out filled; BD_E_TIMEOUT when none came in time; BD_E_CANCELLED when the
 * pool is shut down and no batch is left in flight (nothing will come). */
bd_status bd_pool_poll(bd_pool *p, int timeout_ms, bd_pool_result *out, bd_err *err);

/* Batches submitted and not yet polled. */
int bd_pool_in_flight(bd_pool *p);

typedef struct bd_pool_stats {
  char name[BD_POOL_NAME_MAX];
  int64_t images, batches, failed; /* failed: batches whose detect returned an error */
  double busy_s;                   /* time with at least one batch running */
  double img_per_s;                /* images / busy_s (0 before the first batch) */
} bd_pool_stats;

/* Fills up to cap entries, one per instance; returns how many. */
int bd_pool_get_stats(bd_pool *p, bd_pool_stats *out, int cap);

/* Stops accepting batches. cancel_queued 1: batches not started complete at once with
 * BD_E_CANCELLED; 0: the instances drain the queue first. Running batches always finish.
 * Returns when every instance thread has exited (a second, concurrent caller returns at
 * once); results stay pollable. Idempotent. */
void bd_pool_shutdown(bd_pool *p, int cancel_queued);

#endif
