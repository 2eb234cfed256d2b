/* bd_notify: see bd_notify.h. The sequence is read and compared under the mutex that the
 * signal holds while it increments, which is what rules out lost wake-ups. */
#include "bd_notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct bd_notify {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t seq;
};

bd_status bd_notify_new(bd_notify **out, bd_err *err) {
  *out = NULL;
  bd_notify *n = calloc(1, sizeof *n);
  if (!n) return bd_err_set(err, BD_E_NOMEM, "notify: out of memory");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, &ca);
  pthread_condattr_destroy(&ca);
  *out = n;
  return BD_OK;
}

void bd_notify_destroy(bd_notify *n) {
  if (!n) return;
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n);
}

void bd_notify_signal(bd_notify *n) {
  pthread_mutex_lock(&n->mu);
  n->seq++;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

uint64_t bd_notify_seq(bd_notify *n) {
  pthread_mutex_lock(&n->mu);
  uint64_t s = n->seq;
  pthread_mutex_unlock(&n->mu);
  return s;
}

bd_status bd_notify_wait(bd_notify *n, uint64_t seen, double timeout_s) {
  struct timespec dl = {0, 0};
  if (timeout_s > 0) {
    if (timeout_s > 1e6) timeout_s = 1e6; /* keeps tv_sec arithmetic in range */
    clock_gettime(CLOCK_MONOTONIC, &dl);
    time_t sec = (time_t)timeout_s;
    dl.tv_sec += sec;
    dl.tv_nsec += (long)((timeout_s - (double)sec) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&n->mu);
  while (n->seq == seen && timeout_s != 0) {
    int rc = timeout_s < 0 ? pthread_cond_wait(&n->cv, &n->mu)
                           : pthread_cond_timedwait(&n->cv, &n->mu, &dl);
    if (rc == ETIMEDOUT) break;
  }
  bd_status st = n->seq != seen ? BD_OK : BD_E_TIMEOUT;
  pthread_mutex_unlock(&n->mu);
  return st;
}
