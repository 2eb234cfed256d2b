/* The cpu backend's persistent worker pool.
 *
 * A job is a range of chunks claimed one at a time with a compare-and-swap on one word
 * holding (job id, next chunk). The submitting thread claims chunks too and returns as
 * soon as every chunk has *finished*; it never waits for a worker that merely has not
 * woken up yet (a late worker finds the job id changed or no chunk left and goes back to
 * waiting). So a worker the OS keeps off a core costs nothing beyond its own chunks:
 * this matters on shared machines, and a detector runs a few hundred small ops per image.
 * Idle workers spin for a short time, then sleep on a condition variable.
 *
 * Only the owning backend's run thread submits work (one job at a time). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_internal.h"

#define BD_POOL_MAX_THREADS 256
#define BD_POOL_SPIN_NS 100000 /* idle spin before sleeping: covers the gap between ops */
#define BD_POOL_MAX_CHUNKS 0x7FFFFFFF

struct bd_cpu_pool {
  int n; /* threads including the caller */
  pthread_t *th;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_uint_fast32_t gen; /* id of the latest job, for wake-ups */
  atomic_int stop;
  /* The job: written by the submitter before it publishes `work`; read by workers only
   * until their claim fails. */
  _Atomic(bd_cpu_task_fn) fn;
  _Atomic(void *) ctx;
  atomic_int_fast64_t total, chunk, nchunks;
  atomic_uint_fast64_t work; /* (job id << 32) | next chunk */
  atomic_int_fast64_t done;  /* chunks finished in the current job */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claims and runs chunks of job `job` until none is left or the job changed. */
static void pool_work(bd_cpu_pool *p, uint32_t job, int tid) {
  bd_cpu_task_fn fn = atomic_load(&p->fn);
  void *ctx = atomic_load(&p->ctx);
  int64_t total = atomic_load(&p->total), chunk = atomic_load(&p->chunk);
  int64_t nchunks = atomic_load(&p->nchunks);
  for (;;) {
    uint64_t w = atomic_load(&p->work);
    if ((uint32_t)(w >> 32) != job || (int64_t)(w & 0xFFFFFFFFu) >= nchunks) return;
    if (!atomic_compare_exchange_weak(&p->work, &w, w + 1)) continue;
    /* The claim succeeded, so the job was still open: fn/ctx read above are this job's. */
    int64_t b = (int64_t)(w & 0xFFFFFFFFu) * chunk;
    int64_t e = b + chunk < total ? b + chunk : total;
    fn(ctx, b, e, tid);
    atomic_fetch_add(&p->done, 1);
  }
}

typedef struct {
  bd_cpu_pool *p;
  int tid;
} worker_arg;

static void *pool_main(void *arg) {
  bd_cpu_pool *p = ((worker_arg *)arg)->p;
  int tid = ((worker_arg *)arg)->tid;
  free(arg);
  uint32_t seen = 0;
  for (;;) {
    int64_t t0 = 0;
    for (int i = 0; atomic_load(&p->gen) == seen && !atomic_load(&p->stop); i++) {
      cpu_relax();
      if ((i & 63) == 0) {
        int64_t t = mono_ns();
        if (!t0) t0 = t;
        if (t - t0 > BD_POOL_SPIN_NS) break;
      }
    }
    if (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) {
      pthread_mutex_lock(&p->mu);
      while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->stop)) break;
    seen = (uint32_t)atomic_load(&p->gen);
    pool_work(p, seen, tid);
  }
  return NULL;
}

bd_status bd_cpu_pool_new(int threads, bd_cpu_pool **out, bd_err *err) {
  if (threads < 1 || threads > BD_POOL_MAX_THREADS)
    return bd_err_set(err, BD_E_LIMIT, "cpu pool: %d threads (1..%d)", threads,
                      BD_POOL_MAX_THREADS);
  bd_cpu_pool *p = calloc(1, sizeof *p);
  if (!p) return bd_err_set(err, BD_E_NOMEM, "cpu pool: out of memory");
  p->n = threads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  atomic_init(&p->gen, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->fn, NULL);
  atomic_init(&p->ctx, NULL);
  atomic_init(&p->total, 0);
  atomic_init(&p->chunk, 1);
  atomic_init(&p->nchunks, 0);
  atomic_init(&p->work, 0);
  atomic_init(&p->done, 0);
  if (threads > 1) {
    p->th = calloc((size_t)threads, sizeof *p->th);
    if (!p->th) goto nomem;
    for (int i = 1; i < threads; i++) {
      worker_arg *a = malloc(sizeof *a);
      if (!a) goto nomem;
      a->p = p;
      a->tid = i;
      int rc = pthread_create(&p->th[i], NULL, pool_main, a);
      if (rc != 0) {
        free(a);
        bd_cpu_pool_destroy(p);
        return bd_err_set(err, BD_E_INTERNAL, "cpu pool: pthread_create: %s", strerror(rc));
      }
      p->started = i;
    }
  }
  *out = p;
  return BD_OK;
nomem:
  bd_cpu_pool_destroy(p);
  return bd_err_set(err, BD_E_NOMEM, "cpu pool: out of memory");
}

void bd_cpu_pool_destroy(bd_cpu_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->stop, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i <= p->started; i++) pthread_join(p->th[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->th);
  free(p);
}

int bd_cpu_pool_threads(const bd_cpu_pool *p) { return p->n; }

static void pool_run(bd_cpu_pool *p, int64_t n, int64_t chunk, bd_cpu_task_fn fn, void *ctx) {
  if (n <= 0) return;
  int64_t nchunks = (n + chunk - 1) / chunk;
  if (nchunks > BD_POOL_MAX_CHUNKS) {
    chunk = (n + BD_POOL_MAX_CHUNKS - 1) / BD_POOL_MAX_CHUNKS;
    nchunks = (n + chunk - 1) / chunk;
  }
  if (p->n == 1 || nchunks == 1) {
    for (int64_t b = 0; b < n; b += chunk) fn(ctx, b, b + chunk < n ? b + chunk : n, 0);
    return;
  }
  uint32_t job = (uint32_t)atomic_load(&p->gen) + 1;
  atomic_store(&p->fn, fn);
  atomic_store(&p->ctx, ctx);
  atomic_store(&p->total, n);
  atomic_store(&p->chunk, chunk);
  atomic_store(&p->nchunks, nchunks);
  atomic_store(&p->done, 0);
  atomic_store(&p->work, (uint64_t)job << 32);
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->gen, job);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pool_work(p, job, 0);
  /* Wait for chunks that workers claimed and are still running. */
  for (int i = 0; atomic_load(&p->done) < nchunks; i++) {
    cpu_relax();
    if ((i & 1023) == 1023) sched_yield(); /* a worker may be waiting for this core */
  }
}

void bd_cpu_pool_for(bd_cpu_pool *p, int64_t n, bd_cpu_task_fn fn, void *ctx) {
  int64_t chunk = (n + 4 * (int64_t)p->n - 1) / (4 * (int64_t)p->n);
  pool_run(p, n, chunk > 0 ? chunk : 1, fn, ctx);
}

void bd_cpu_pool_for_each(bd_cpu_pool *p, int64_t n, bd_cpu_task_fn fn, void *ctx) {
  pool_run(p, n, 1, fn, ctx);
}
