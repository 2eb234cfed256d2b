/* bd_decode_pool: decode images on N threads, the stage between the fetcher and the
 * batcher (fetch -> decode pool -> batch).
 *
 * Each thread owns one bd_decoder (TurboJPEG handle reused, never shared). Callers
 * submit jobs (encoded bytes + per-job bd_decode_opts, e.g. the model's input size
 * so that big JPEGs decode DCT-scaled); every accepted job produces exactly ONE
 * completion, either through the callback (called on a pool thread) or, when no
 * callback is set, through a completion queue read with bd_decode_pool_poll.
 * Per-image failures (corrupt, unsupported, too large) come back in the completion's
 * status/err; they never stop the pool.
 *
 * Backpressure: at most queue_max jobs are "outstanding" (accepted, and not yet
 * delivered: callback not yet returned, or result not yet polled). A submit beyond
 * that waits up to its wait time, then fails with BD_E_UNAVAILABLE. The bound
 * therefore also covers the completion queue: the pool threads never block on
 * output, so a slow consumer slows the producer, not the decoders' shutdown. In
 * queue mode a thread that only submits (never polls) with an infinite wait
 * deadlocks itself once queue_max results are waiting: submit with a finite wait,
 * or poll from another thread.
 *
 * Shutdown: bd_decode_pool_close stops accepting; what is queued is still decoded
 * and delivered; bd_decode_pool_drain waits for that. bd_decode_pool_destroy
 * cancels: jobs still queued complete with BD_E_CANCELLED without being decoded
 * (callback mode: the callback sees each one; queue mode: undelivered results are
 * freed), the threads are joined, everything is freed.
 *
 * Ownership: submit takes ownership of `data` (malloc'd) only when it returns BD_OK;
 * the pool frees it after decoding. A completion owns its image: a callback may take
 * it (copy res->image and set res->image.data = NULL), otherwise it is freed when the
 * callback returns; a polled result is moved to the caller, who frees it with
 * bd_decode_result_clear.
 *
 * Thread safety: submit, poll, close, drain and stats may be called from any thread
 * (several at once). The callback runs concurrently on up to `threads` pool threads
 * and must be thread-safe; it may call bd_decode_pool_submit only with wait_s == 0
 * (a callback waiting for a slot that only callbacks free can deadlock), and must
 * not call close/drain/destroy. bd_decode_pool_destroy must not race with other calls
 * on the same handle. */
#ifndef BD_DECODE_POOL_H
#define BD_DECODE_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "bd_decode.h"
#include "bd_image.h"
#include "bd_status.h"

#define BD_DECODE_POOL_MAX_THREADS 1024
#define BD_DECODE_POOL_MAX_QUEUE (1 << 20)
/* A job larger than this is refused at submit (BD_E_LIMIT); matches the fetcher's
 * largest configurable body, far above any photo. */
#define BD_DECODE_POOL_MAX_JOB_BYTES (1ull << 30)

typedef struct bd_decode_pool bd_decode_pool;

typedef struct bd_decode_pool_opts {
  int threads;   /* decode threads; 0 -> online CPU cores (max BD_DECODE_POOL_MAX_THREADS) */
  int queue_max; /* outstanding jobs; 0 -> 4 * threads (max BD_DECODE_POOL_MAX_QUEUE) */
} bd_decode_pool_opts;

/* One completion. image is owned by the result (see the header comment). */
typedef struct bd_decode_result {
  uint64_t id;
  void *user;
  bd_status status; /* BD_OK, a decode error, or BD_E_CANCELLED (pool destroyed) */
  bd_err err;       /* message starts with "decode: " */
  bd_image image;   /* empty ({0,0,NULL}) unless status == BD_OK */
  bd_decode_info info;
  size_t in_bytes; /* size of the encoded input */
  double decode_s; /* time spent decoding (0 when cancelled) */
  double queued_s; /* submit to start of decode */
} bd_decode_result;

typedef void (*bd_decode_done_fn)(void *ctx, bd_decode_result *res);

/* Creates the pool and starts its threads (one bd_decoder each). opts may be NULL
 * (defaults). done may be NULL: results then go to the completion queue. */
bd_decode_pool *bd_decode_pool_new(const bd_decode_pool_opts *opts, bd_decode_done_fn done,
                                   void *ctx, bd_err *err);

/* Cancels what is queued (BD_E_CANCELLED completions), joins the threads, frees
 * undelivered results and the handle. NULL is a no-op. */
void bd_decode_pool_destroy(bd_decode_pool *p);

/* Queues data[0..len) for decoding with opts (copied; NULL = defaults). Waits up to
 * wait_s (< 0: forever, 0: not at all) while queue_max jobs are outstanding, then
 * fails with BD_E_UNAVAILABLE ("queue full"). BD_E_CANCELLED after close/destroy
 * started. BD_E_INVALID for data == NULL with len > 0, BD_E_LIMIT for len over
 * BD_DECODE_POOL_MAX_JOB_BYTES. len == 0 is accepted (the completion reports the
 * empty input). On BD_OK the pool owns data; otherwise the caller still does. */
bd_status bd_decode_pool_submit(bd_decode_pool *p, uint64_t id, uint8_t *data, size_t len,
                                const bd_decode_opts *opts, void *user, double wait_s, bd_err *err);

/* Queue mode only: waits up to wait_s (< 0: forever, 0: poll) for a completion and
 * moves it into *out. BD_E_TIMEOUT when none came; BD_E_CANCELLED when the pool is
 * closed and every result has been delivered (the end of the stream); BD_E_INVALID
 * when the pool has a callback. */
bd_status bd_decode_pool_poll(bd_decode_pool *p, double wait_s, bd_decode_result *out, bd_err *err);

/* Frees res->image and zeroes the image. NULL is a no-op. */
void bd_decode_result_clear(bd_decode_result *res);

/* Stops accepting jobs (later submits fail with BD_E_CANCELLED); queued jobs are still
 * decoded and delivered. Idempotent. */
void bd_decode_pool_close(bd_decode_pool *p);

/* Waits up to wait_s (< 0: forever) until every accepted job has been decoded and
 * handed over (callback returned, or result put on the completion queue). BD_OK when
 * that happened, BD_E_TIMEOUT otherwise. Does not close the pool. */
bd_status bd_decode_pool_drain(bd_decode_pool *p, double wait_s);

typedef struct bd_decode_pool_stats {
  int threads;
  uint64_t submitted;   /* accepted jobs */
  uint64_t decoded;     /* completions with BD_OK */
  uint64_t failed;      /* completions with a decode error */
  uint64_t cancelled;   /* completions with BD_E_CANCELLED */
  uint64_t in_bytes;    /* encoded bytes of decoded + failed jobs */
  uint64_t out_pixels;  /* pixels of the decoded images */
  uint64_t outstanding; /* accepted, not yet delivered */
  uint64_t queued;      /* waiting for a thread */
  double busy_s;        /* sum over threads of time spent decoding */
  double wall_s;        /* since bd_decode_pool_new */
} bd_decode_pool_stats;

void bd_decode_pool_stats_get(bd_decode_pool *p, bd_decode_pool_stats *out);

#endif
