#include "bd_queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct bd_queue {
  pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty;
  void **items;
  size_t cap, head, len;
  int closed;
  bd_notify *notify; /* borrowed, signalled under mu */
};

bd_status bd_queue_new(size_t capacity, bd_queue **out, bd_err *err) {
  if (capacity == 0 || capacity > ((size_t)1 << 24))
    return bd_err_set(err, BD_E_INVALID, "queue: capacity %zu out of range", capacity);
  bd_queue *q = calloc(1, sizeof *q);
  if (!q) return bd_err_set(err, BD_E_NOMEM, "queue: out of memory");
  q->items = calloc(capacity, sizeof *q->items);
  if (!q->items) {
    free(q);
    return bd_err_set(err, BD_E_NOMEM, "queue: out of memory");
  }
  q->cap = capacity;
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->not_full, &ca);
  pthread_cond_init(&q->not_empty, &ca);
  pthread_condattr_destroy(&ca);
  *out = q;
  return BD_OK;
}

void bd_queue_destroy(bd_queue *q) {
  if (!q) return;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->not_full);
  pthread_cond_destroy(&q->not_empty);
  free(q->items);
  free(q);
}

static void deadline_after(struct timespec *ts, double s) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  long sec = (long)s;
  long nsec = (long)((s - (double)sec) * 1e9);
  ts->tv_sec += sec;
  ts->tv_nsec += nsec;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* Waits on cv until pred holds, the queue closes, or the deadline passes. */
static int wait_until(bd_queue *q, pthread_cond_t *cv, const struct timespec *dl, int forever) {
  if (forever) return pthread_cond_wait(cv, &q->mu);
  return pthread_cond_timedwait(cv, &q->mu, dl);
}

bd_status bd_queue_push(bd_queue *q, void *item, double timeout_s) {
  struct timespec dl;
  int forever = timeout_s < 0;
  if (!forever) deadline_after(&dl, timeout_s);
  bd_status st = BD_OK;
  pthread_mutex_lock(&q->mu);
  while (!q->closed && q->len == q->cap) {
    if (!forever && timeout_s == 0) break;
    if (wait_until(q, &q->not_full, &dl, forever) == ETIMEDOUT) break;
  }
  if (q->closed)
    st = BD_E_CANCELLED;
  else if (q->len == q->cap)
    st = BD_E_TIMEOUT;
  else {
    q->items[(q->head + q->len) % q->cap] = item;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    if (q->notify) bd_notify_signal(q->notify);
  }
  pthread_mutex_unlock(&q->mu);
  return st;
}

bd_status bd_queue_pop(bd_queue *q, void **item, double timeout_s) {
  struct timespec dl;
  int forever = timeout_s < 0;
  if (!forever) deadline_after(&dl, timeout_s);
  bd_status st = BD_OK;
  pthread_mutex_lock(&q->mu);
  while (!q->closed && q->len == 0) {
    if (!forever && timeout_s == 0) break;
    if (wait_until(q, &q->not_empty, &dl, forever) == ETIMEDOUT) break;
  }
  if (q->len > 0) {
    *item = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    pthread_cond_signal(&q->not_full);
  } else {
    st = q->closed ? BD_E_CANCELLED : BD_E_TIMEOUT;
  }
  pthread_mutex_unlock(&q->mu);
  return st;
}

void bd_queue_close(bd_queue *q) {
  pthread_mutex_lock(&q->mu);
  q->closed = 1;
  pthread_cond_broadcast(&q->not_full);
  pthread_cond_broadcast(&q->not_empty);
  if (q->notify) bd_notify_signal(q->notify);
  pthread_mutex_unlock(&q->mu);
}

size_t bd_queue_len(bd_queue *q) {
  pthread_mutex_lock(&q->mu);
  size_t n = q->len;
  pthread_mutex_unlock(&q->mu);
  return n;
}

size_t bd_queue_capacity(const bd_queue *q) { return q->cap; }

void bd_queue_set_notify(bd_queue *q, bd_notify *n) {
  pthread_mutex_lock(&q->mu);
  q->notify = n;
  pthread_mutex_unlock(&q->mu);
}
