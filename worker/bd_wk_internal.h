/* Internal to the worker: the objects that flow through the pipeline and the shared
 * context of its threads. Ownership: shards belong to the poll thread's registry (it
 * frees them); items and batches belong to the stage that holds them. */
#ifndef BD_WK_INTERNAL_H
#define BD_WK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bd_decode.h"
#include "bd_fetch.h"
#include "bd_image.h"
#include "bd_kafka.h"
#include "bd_manifest.h"
#include "bd_queue.h"
#include "bd_wk_metrics.h"
#include "bd_worker.h"

typedef struct wk_shard {
  struct wk_shard *next; /* registry list (poll thread) */
  bd_manifest *m;
  char topic[256];
  int32_t partition;
  int64_t offset;
  atomic_int remaining; /* images whose result (or error) is not final yet */
  atomic_int dropped;   /* revoked or abandoned: no Redis write, no offset store */
  char **json;          /* per image: det value (owned) */
  char **error;         /* per image: error message (owned) or NULL */
  int failed;           /* images with an error, counted by the writer */
  int submitted;        /* images handed to the fetcher so far (poll thread) */
  char refused[BD_ERR_MSG_MAX]; /* set by the writer when Redis refused the shard as not
                                   part of its job: the poll thread dead-letters it */
  double t0;
} wk_shard;

typedef struct wk_item {
  wk_shard *s;
  size_t idx;
  unsigned char *data; /* fetched bytes */
  size_t len;
  bd_image im; /* decoded */
  int oriented_w, oriented_h;
  long long pixel_bytes; /* of decoded_bytes, this image's share (reserved, then actual) */
  char err[BD_ERR_MSG_MAX + 64];
  double t_enqueue;
} wk_item;

#define WK_MAX_BATCH 1024
typedef struct wk_batch {
  int n;
  wk_item *items[WK_MAX_BATCH];
} wk_batch;

/* One entry of the worker's device list: a sim executor, or an instance of the models'
 * pools (the same instance of every model's pool: its counters add up over models). */
typedef struct wk_device {
  char name[32]; /* spec name: "sim:0", "cpu#1", "cuda:0#0" */
  atomic_llong images, failed;
  long long prev_images;
  double prev_t;
  _Atomic double img_s;
  pthread_t thread; /* sim executor */
  int started;
} wk_device;

typedef struct wk_ctx {
  const bd_worker_config *cfg;
  char worker_id[256];
  char host[256];
  bd_wdev_spec spec;
  wk_device dev[BD_WORKER_MAX_DEVICES];
  int n_dev;
  bd_fetch *fetch;
  bd_queue *q_decode, *q_batch, *q_exec, *q_write, *q_done;
  pthread_t *decoders;
  int n_decoders;
  pthread_t batcher, writer, executor; /* executor: the pools' (cpu, cuda) */
  int batcher_started, writer_started, executor_started;
  atomic_llong inflight_bytes;
  /* Decoded pixels not yet through the network, and their peak: held under
   * --max-inflight-mb by the decoders (wk_decode_main waits before an image). */
  atomic_llong decoded_bytes, decoded_peak;
  atomic_int inflight_shards;
  atomic_int force_stop; /* second signal or grace expired: stop retrying */
  atomic_int fatal;      /* a device failed: drain and exit with an error */
  char fatal_msg[BD_ERR_MSG_MAX + 128];
  atomic_int consumer_ok;
  atomic_llong lag;
  atomic_llong shards_done, shards_dropped, dlq_count;
  atomic_llong pipe_failed; /* fetch/decode/model errors (not a device's) */
  bd_wk_metrics *metrics;
  /* heartbeat handed from the poll thread to the writer */
  pthread_mutex_t beat_mu;
  int beat_pending;
  char beat_devices[1024];
  char beat_img_s[64], beat_images[64], beat_ts[64];
} wk_ctx;

typedef struct wk_exec_arg { /* malloc'd by the starter, freed by the sim executor */
  wk_ctx *w;
  int dev;
} wk_exec_arg;

/* Stages (bd_wk_stages.c). */
void wk_fetch_done(void *ctx, bd_fetch_result *res);
void *wk_decode_main(void *arg);
void *wk_batcher_main(void *arg);
void *wk_writer_main(void *arg);
/* Executors (bd_wk_exec.c), both reading q_exec until it is closed and empty.
 * wk_exec_sim_main (arg: wk_exec_arg): one simulated device.
 * wk_exec_pool_main (arg: wk_ctx): every cpu/cuda instance through one bd_pool per
 * model; returns when every batch it submitted has been polled and finished. Reads cfg
 * (models_dir, batch, cpu_threads), spec, dev, force_stop; sets fatal on a broken device. */
void *wk_exec_sim_main(void *arg);
void *wk_exec_pool_main(void *arg);
/* An image is final (result or error recorded, or dropped): frees the item and, for the
 * shard's last image, hands the shard to the writer. */
void wk_item_finish(wk_ctx *w, wk_item *it);
/* Records an error result for image idx of s (copying msg). */
void wk_shard_set_error(wk_shard *s, size_t idx, const char *msg);
/* The path of model `name` in the models dir; 0 when it is not a file. */
int wk_model_path(const wk_ctx *w, const char *name, char *buf, size_t cap);

#endif
