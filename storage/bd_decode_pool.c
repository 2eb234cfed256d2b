/* bd_decode_pool: N decode threads between two bd_queues (see bd_decode_pool.h).
 *
 * One allocation per job (bd_dp_item) carries the request and, later, its result;
 * in queue mode the same item travels on to the completion queue, so delivering a
 * result never allocates and never fails. The "outstanding" gate (under p->mu) is
 * what bounds memory: both queues hold at most queue_max items, so pushes onto them
 * never wait. */
#include "bd_decode_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bd_queue.h"

typedef struct bd_dp_item {
  uint8_t *data; /* owned; freed after decoding */
  size_t len;
  bd_decode_opts opts;
  double submit_t;
  bd_decode_result res;
} bd_dp_item;

typedef struct bd_dp_thread {
  bd_decode_pool *p;
  bd_decoder *dec;
  pthread_t tid;
  int started;
} bd_dp_thread;

struct bd_decode_pool {
  bd_decode_done_fn done;
  void *ctx;
  int nthreads;
  size_t queue_max;
  bd_queue *in;  /* jobs waiting for a thread */
  bd_queue *out; /* queue mode: results waiting for bd_decode_pool_poll; NULL with a callback */
  bd_dp_thread *th;
  atomic_int cancel; /* destroy: complete queued jobs as cancelled */

  pthread_mutex_t mu;
  pthread_cond_t cv; /* outstanding/pending decreased, or closed */
  int closed;
  int live; /* threads still running */
  uint64_t outstanding, pending;
  uint64_t submitted, decoded, failed, cancelled, in_bytes, out_pixels;
  double busy_s, t0;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Absolute CLOCK_MONOTONIC deadline wait_s from now (cv uses that clock). */
static struct timespec deadline(double wait_s) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double whole = (double)(long long)wait_s;
  ts.tv_sec += (time_t)whole;
  ts.tv_nsec += (long)((wait_s - whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* Waits on p->cv (p->mu held); returns 0 when the deadline passed. */
static int cv_wait(bd_decode_pool *p, double wait_s, const struct timespec *dl) {
  if (wait_s < 0) {
    pthread_cond_wait(&p->cv, &p->mu);
    return 1;
  }
  return pthread_cond_timedwait(&p->cv, &p->mu, dl) == 0;
}

static void decode_one(bd_decode_pool *p, bd_decoder *dec, bd_dp_item *it) {
  bd_decode_result *r = &it->res;
  double t0 = now_s();
  r->queued_s = t0 - it->submit_t;
  if (atomic_load(&p->cancel)) {
    r->status = bd_err_set(&r->err, BD_E_CANCELLED, "decode: cancelled (pool shut down)");
    return;
  }
  r->status = bd_decoder_decode(dec, it->data, it->len, &it->opts, &r->image, &r->info, &r->err);
  r->decode_s = now_s() - t0;
  if (r->status != BD_OK && strncmp(r->err.msg, "decode", 6) != 0) bd_err_prefix(&r->err, "decode");
  if (r->status == BD_OK) bd_err_clear(&r->err);
}

/* Counts the completion; called with p->mu held. */
static void account(bd_decode_pool *p, const bd_decode_result *r, size_t len, uint64_t pixels) {
  if (r->status == BD_OK) {
    p->decoded++;
    p->out_pixels += pixels;
  } else if (r->status == BD_E_CANCELLED) {
    p->cancelled++;
  } else {
    p->failed++;
  }
  if (r->status != BD_E_CANCELLED) p->in_bytes += len;
  p->busy_s += r->decode_s;
}

static void *worker(void *arg) {
  bd_dp_thread *t = arg;
  bd_decode_pool *p = t->p;
  void *v;
  while (bd_queue_pop(p->in, &v, -1) == BD_OK) {
    bd_dp_item *it = v;
    decode_one(p, t->dec, it);
    size_t len = it->len;
    /* Before the callback, which may take (or the pool then frees) the image. */
    uint64_t pixels = (uint64_t)it->res.image.w * (uint64_t)it->res.image.h;
    free(it->data);
    it->data = NULL;
    if (p->done) {
      p->done(p->ctx, &it->res);
      bd_image_free(&it->res.image);
      pthread_mutex_lock(&p->mu);
      account(p, &it->res, len, pixels);
      p->pending--;
      p->outstanding--;
      pthread_cond_broadcast(&p->cv);
      pthread_mutex_unlock(&p->mu);
      free(it);
    } else {
      /* Account before the push: once pushed, a poller may free the item. */
      pthread_mutex_lock(&p->mu);
      account(p, &it->res, len, pixels);
      /* Cannot wait or fail: the gate keeps the queue below capacity, and it is
       * closed only after the last thread has left this loop. */
      bd_queue_push(p->out, it, 0);
      p->pending--;
      pthread_cond_broadcast(&p->cv);
      pthread_mutex_unlock(&p->mu);
    }
  }
  pthread_mutex_lock(&p->mu);
  /* The last thread out ends the result stream: pollers drain it, then see CANCELLED. */
  if (--p->live == 0 && p->out) bd_queue_close(p->out);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static int online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (n > BD_DECODE_POOL_MAX_THREADS ? BD_DECODE_POOL_MAX_THREADS : (int)n);
}

static void free_item(bd_dp_item *it) {
  if (!it) return;
  free(it->data);
  bd_image_free(&it->res.image);
  free(it);
}

bd_decode_pool *bd_decode_pool_new(const bd_decode_pool_opts *opts, bd_decode_done_fn done,
                                   void *ctx, bd_err *err) {
  bd_decode_pool_opts o = {0};
  if (opts) o = *opts;
  if (o.threads < 0 || o.threads > BD_DECODE_POOL_MAX_THREADS) {
    bd_err_set(err, BD_E_LIMIT, "decode pool: threads %d outside 0..%d", o.threads,
               BD_DECODE_POOL_MAX_THREADS);
    return NULL;
  }
  if (o.queue_max < 0 || o.queue_max > BD_DECODE_POOL_MAX_QUEUE) {
    bd_err_set(err, BD_E_LIMIT, "decode pool: queue_max %d outside 0..%d", o.queue_max,
               BD_DECODE_POOL_MAX_QUEUE);
    return NULL;
  }
  int nth = o.threads ? o.threads : online_cores();
  long qmax = o.queue_max ? o.queue_max : 4L * nth;
  if (qmax > BD_DECODE_POOL_MAX_QUEUE) qmax = BD_DECODE_POOL_MAX_QUEUE;

  bd_decode_pool *p = calloc(1, sizeof *p);
  if (!p) {
    bd_err_set(err, BD_E_NOMEM, "decode pool: out of memory");
    return NULL;
  }
  int mu_ok = 0, cv_ok = 0;
  p->done = done;
  p->ctx = ctx;
  p->nthreads = nth;
  p->queue_max = (size_t)qmax;
  p->t0 = now_s();
  atomic_init(&p->cancel, 0);
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail_sys;
  mu_ok = 1;
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0) goto fail_sys;
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc != 0) goto fail_sys;
  cv_ok = 1;
  if (bd_queue_new(p->queue_max, &p->in, err) != BD_OK) goto fail;
  if (!done && bd_queue_new(p->queue_max, &p->out, err) != BD_OK) goto fail;
  p->th = calloc((size_t)nth, sizeof *p->th);
  if (!p->th) {
    bd_err_set(err, BD_E_NOMEM, "decode pool: out of memory for %d threads", nth);
    goto fail;
  }
  /* Decoders first, on this thread, so that a failure is reported here. */
  for (int i = 0; i < nth; i++) {
    p->th[i].p = p;
    p->th[i].dec = bd_decoder_new(err);
    if (!p->th[i].dec) {
      bd_err_prefix(err, "decode pool");
      goto fail;
    }
  }
  for (int i = 0; i < nth; i++) {
    pthread_mutex_lock(&p->mu);
    p->live++;
    pthread_mutex_unlock(&p->mu);
    if (pthread_create(&p->th[i].tid, NULL, worker, &p->th[i]) != 0) {
      pthread_mutex_lock(&p->mu);
      p->live--;
      pthread_mutex_unlock(&p->mu);
      bd_err_set(err, BD_E_INTERNAL, "decode pool: cannot start thread %d of %d", i + 1, nth);
      goto fail;
    }
    p->th[i].started = 1;
  }
  return p;

fail_sys:
  bd_err_set(err, BD_E_INTERNAL, "decode pool: pthread init failed");
fail:
  if (p->in) bd_queue_close(p->in);
  if (p->th) {
    for (int i = 0; i < nth; i++) {
      if (p->th[i].started) pthread_join(p->th[i].tid, NULL);
      bd_decoder_destroy(p->th[i].dec);
    }
    free(p->th);
  }
  bd_queue_destroy(p->in);
  bd_queue_destroy(p->out);
  if (cv_ok) pthread_cond_destroy(&p->cv);
  if (mu_ok) pthread_mutex_destroy(&p->mu);
  free(p);
  return NULL;
}

void bd_decode_pool_close(bd_decode_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->closed = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  bd_queue_close(p->in);
}

void bd_decode_pool_destroy(bd_decode_pool *p) {
  if (!p) return;
  atomic_store(&p->cancel, 1);
  bd_decode_pool_close(p);
  for (int i = 0; i < p->nthreads; i++) {
    if (p->th[i].started) pthread_join(p->th[i].tid, NULL);
    bd_decoder_destroy(p->th[i].dec);
  }
  free(p->th);
  void *v;
  while (p->out && bd_queue_pop(p->out, &v, 0) == BD_OK) free_item(v);
  bd_queue_destroy(p->in);
  bd_queue_destroy(p->out);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

bd_status bd_decode_pool_submit(bd_decode_pool *p, uint64_t id, uint8_t *data, size_t len,
                                const bd_decode_opts *opts, void *user, double wait_s,
                                bd_err *err) {
  if (!p) return bd_err_set(err, BD_E_INVALID, "decode pool: no pool");
  if (!data && len > 0)
    return bd_err_set(err, BD_E_INVALID, "decode pool: no data for %zu bytes", len);
  if ((unsigned long long)len > BD_DECODE_POOL_MAX_JOB_BYTES)
    return bd_err_set(err, BD_E_LIMIT, "decode pool: job of %zu bytes over the %llu byte limit",
                      len, BD_DECODE_POOL_MAX_JOB_BYTES);
  bd_dp_item *it = calloc(1, sizeof *it);
  if (!it) return bd_err_set(err, BD_E_NOMEM, "decode pool: out of memory for a job");
  it->len = len;
  if (opts) it->opts = *opts;
  it->res.id = id;
  it->res.user = user;
  it->res.in_bytes = len;

  bd_status st = BD_OK;
  struct timespec dl = deadline(wait_s > 0 ? wait_s : 0);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    if (p->closed) {
      st = bd_err_set(err, BD_E_CANCELLED, "decode pool: closed");
      goto out;
    }
    if (p->outstanding < p->queue_max) break;
    if (wait_s == 0 || !cv_wait(p, wait_s, &dl)) {
      if (p->outstanding < p->queue_max && !p->closed) break;
      st = bd_err_set(err, BD_E_UNAVAILABLE, "decode pool: queue full (%zu jobs outstanding)",
                      p->queue_max);
      goto out;
    }
  }
  it->submit_t = now_s();
  it->data = data;
  /* Under the lock so that close cannot slip between the check and the push; the
   * gate above guarantees room, so this does not wait. */
  st = bd_queue_push(p->in, it, 0);
  if (st != BD_OK) {
    it->data = NULL; /* not accepted: the caller keeps data */
    st = bd_err_set(err, st == BD_E_CANCELLED ? BD_E_CANCELLED : BD_E_INTERNAL, "decode pool: %s",
                    st == BD_E_CANCELLED ? "closed" : "input queue full");
    goto out;
  }
  p->outstanding++;
  p->pending++;
  p->submitted++;
  it = NULL;
out:
  pthread_mutex_unlock(&p->mu);
  free(it);
  return st;
}

bd_status bd_decode_pool_poll(bd_decode_pool *p, double wait_s, bd_decode_result *out,
                              bd_err *err) {
  if (!p || !out) return bd_err_set(err, BD_E_INVALID, "decode pool: poll without pool or output");
  if (!p->out) return bd_err_set(err, BD_E_INVALID, "decode pool: poll on a pool with a callback");
  void *v;
  bd_status st = bd_queue_pop(p->out, &v, wait_s);
  if (st == BD_E_CANCELLED) return bd_err_set(err, st, "decode pool: closed and drained");
  if (st != BD_OK) return bd_err_set(err, st, "decode pool: no result within %.3f s", wait_s);
  bd_dp_item *it = v;
  *out = it->res;
  free(it);
  pthread_mutex_lock(&p->mu);
  p->outstanding--;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return BD_OK;
}

void bd_decode_result_clear(bd_decode_result *res) {
  if (!res) return;
  bd_image_free(&res->image);
}

bd_status bd_decode_pool_drain(bd_decode_pool *p, double wait_s) {
  if (!p) return BD_OK;
  struct timespec dl = deadline(wait_s > 0 ? wait_s : 0);
  bd_status st = BD_OK;
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) {
    if (wait_s == 0 || !cv_wait(p, wait_s, &dl)) {
      if (p->pending > 0) st = BD_E_TIMEOUT;
      break;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return st;
}

void bd_decode_pool_stats_get(bd_decode_pool *p, bd_decode_pool_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  out->threads = p->nthreads;
  out->submitted = p->submitted;
  out->decoded = p->decoded;
  out->failed = p->failed;
  out->cancelled = p->cancelled;
  out->in_bytes = p->in_bytes;
  out->out_pixels = p->out_pixels;
  out->outstanding = p->outstanding;
  out->queued = bd_queue_len(p->in);
  out->busy_s = p->busy_s;
  out->wall_s = now_s() - p->t0;
  pthread_mutex_unlock(&p->mu);
}
