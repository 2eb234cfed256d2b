/* bd_notify: a signal that comes before the wait is not lost; a wait with nothing
 * signalled ends at its timeout (not before, and not much after); one signal wakes every
 * waiter; consumers using the read-check-wait pattern lose no wake-up, both against many
 * signalling threads (the sequence counts every signal) and in a one-at-a-time hand-off
 * timed to signal inside the consumer's window between look and wait (a lost wake-up
 * shows as a wait running into its limit). bd_queue: push and close signal its
 * notifier; a failed push, a pop and a cleared notifier do not. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "bd_config.h"
#include "bd_notify.h"
#include "bd_queue.h"

static void test_signal_before_wait(void **state) {
  (void)state;
  bd_notify *n = NULL;
  assert_int_equal(bd_notify_new(&n, NULL), BD_OK);
  uint64_t s0 = bd_notify_seq(n);
  assert_int_equal(bd_notify_wait(n, s0, 0), BD_E_TIMEOUT); /* nothing yet, no wait */
  bd_notify_signal(n);
  double t0 = bd_now();
  assert_int_equal(bd_notify_wait(n, s0, 10.0), BD_OK); /* already moved: at once */
  assert_int_equal(bd_notify_wait(n, s0, -1), BD_OK);
  assert_true(bd_now() - t0 < 1.0);
  assert_int_equal(bd_notify_seq(n), s0 + 1);
  assert_int_equal(bd_notify_wait(n, s0 + 1, 0), BD_E_TIMEOUT);
  bd_notify_destroy(n);
  bd_notify_destroy(NULL);
}

static void test_timeout_bounds(void **state) {
  (void)state;
  bd_notify *n = NULL;
  assert_int_equal(bd_notify_new(&n, NULL), BD_OK);
  const double waits[] = {0.001, 0.05, 0.2};
  for (size_t i = 0; i < sizeof waits / sizeof *waits; i++) {
    double t0 = bd_now();
    assert_int_equal(bd_notify_wait(n, bd_notify_seq(n), waits[i]), BD_E_TIMEOUT);
    double dt = bd_now() - t0;
    print_message("wait %.3f s: returned after %.4f s\n", waits[i], dt);
    assert_true(dt >= waits[i] * 0.95);
    assert_true(dt < waits[i] + 2.0); /* loose: a loaded machine may schedule late */
  }
  bd_notify_destroy(n);
}

typedef struct waiter {
  bd_notify *n;
  uint64_t seen;
  bd_status st;
  double dt;
} waiter;

static void *wait_main(void *arg) {
  waiter *w = arg;
  double t0 = bd_now();
  w->st = bd_notify_wait(w->n, w->seen, 10.0);
  w->dt = bd_now() - t0;
  return NULL;
}

enum { NWAITERS = 6 };

static void test_one_signal_wakes_all(void **state) {
  (void)state;
  bd_notify *n = NULL;
  assert_int_equal(bd_notify_new(&n, NULL), BD_OK);
  waiter w[NWAITERS];
  pthread_t th[NWAITERS];
  uint64_t s0 = bd_notify_seq(n);
  for (int i = 0; i < NWAITERS; i++) {
    w[i] = (waiter){n, s0, BD_E__COUNT, 0};
    assert_int_equal(pthread_create(&th[i], NULL, wait_main, &w[i]), 0);
  }
  struct timespec ts = {0, 50000000}; /* let them block (not needed for correctness) */
  nanosleep(&ts, NULL);
  bd_notify_signal(n);
  for (int i = 0; i < NWAITERS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].st, BD_OK);
    assert_true(w[i].dt < 5.0);
  }
  bd_notify_destroy(n);
}

/* Producers add work to a counter, then signal; the consumer takes all the work there
 * is and waits only when it found none, with the sequence read before it looked. */
enum { NPROD = 4, PER_PROD = 20000 };

typedef struct shared {
  bd_notify *n;
  atomic_long work;
} shared;

static void *prod_main(void *arg) {
  shared *s = arg;
  for (int i = 0; i < PER_PROD; i++) {
    atomic_fetch_add(&s->work, 1);
    bd_notify_signal(s->n);
    if (i % 1000 == 0) sched_yield();
  }
  return NULL;
}

static void test_many_threads_no_lost_wakeup(void **state) {
  (void)state;
  shared s;
  assert_int_equal(bd_notify_new(&s.n, NULL), BD_OK);
  atomic_init(&s.work, 0);
  pthread_t th[NPROD];
  for (int i = 0; i < NPROD; i++) assert_int_equal(pthread_create(&th[i], NULL, prod_main, &s), 0);
  long total = 0, waits = 0, timeouts = 0;
  double t_end = bd_now() + 60;
  while (total < (long)NPROD * PER_PROD && bd_now() < t_end) {
    uint64_t seq = bd_notify_seq(s.n);
    long got = atomic_exchange(&s.work, 0);
    total += got;
    if (got == 0 && total < (long)NPROD * PER_PROD) {
      waits++;
      if (bd_notify_wait(s.n, seq, 10.0) != BD_OK) timeouts++;
    }
  }
  for (int i = 0; i < NPROD; i++) pthread_join(th[i], NULL);
  print_message("%ld units, %ld waits, %ld timed out\n", total, waits, timeouts);
  assert_int_equal(total, (long)NPROD * PER_PROD);
  assert_int_equal(timeouts, 0);
  assert_int_equal(bd_notify_seq(s.n), (uint64_t)NPROD * PER_PROD);
  bd_notify_destroy(s.n);
}

/* One unit at a time: the producer adds the next unit only after the consumer took the
 * previous one, after a varying delay, so that its signal often lands between the
 * consumer's look and its wait: the window a lost wake-up needs. A lost one stalls the
 * round until the consumer's 2 s limit, counted as a timeout. */
enum { ROUNDS = 3000 };

typedef struct pingpong {
  bd_notify *n;
  atomic_long work, taken;
  atomic_int stop;
} pingpong;

static void *ping_main(void *arg) {
  pingpong *pp = arg;
  unsigned r = 12345;
  for (long i = 0; i < ROUNDS && !atomic_load(&pp->stop); i++) {
    while (atomic_load(&pp->taken) < i && !atomic_load(&pp->stop)) sched_yield();
    r = r * 1103515245u + 12345u;
    for (volatile unsigned k = 0; k < (r >> 20) % 600; k++) {
    }
    atomic_fetch_add(&pp->work, 1);
    bd_notify_signal(pp->n);
  }
  return NULL;
}

static void test_handoff_no_lost_wakeup(void **state) {
  (void)state;
  pingpong pp;
  assert_int_equal(bd_notify_new(&pp.n, NULL), BD_OK);
  atomic_init(&pp.work, 0);
  atomic_init(&pp.taken, 0);
  atomic_init(&pp.stop, 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, ping_main, &pp), 0);
  long timeouts = 0, waits = 0;
  double t_end = bd_now() + 30;
  while (atomic_load(&pp.taken) < ROUNDS && bd_now() < t_end && timeouts < 3) {
    uint64_t seq = bd_notify_seq(pp.n);
    long got = atomic_exchange(&pp.work, 0);
    if (got) {
      atomic_fetch_add(&pp.taken, got);
      continue;
    }
    waits++;
    if (bd_notify_wait(pp.n, seq, 2.0) != BD_OK) timeouts++;
  }
  atomic_store(&pp.stop, 1);
  pthread_join(th, NULL);
  print_message("%ld of %d hand-offs, %ld waits, %ld timed out\n", atomic_load(&pp.taken), ROUNDS,
                waits, timeouts);
  assert_int_equal(timeouts, 0);
  assert_int_equal(atomic_load(&pp.taken), ROUNDS);
  bd_notify_destroy(pp.n);
}

static void test_queue_signals(void **state) {
  (void)state;
  bd_notify *n = NULL;
  bd_queue *q = NULL;
  assert_int_equal(bd_notify_new(&n, NULL), BD_OK);
  assert_int_equal(bd_queue_new(2, &q, NULL), BD_OK);
  assert_int_equal(bd_queue_push(q, (void *)1, 0), BD_OK); /* no notifier yet */
  assert_int_equal(bd_notify_seq(n), 0);
  bd_queue_set_notify(q, n);
  assert_int_equal(bd_queue_push(q, (void *)2, 0), BD_OK);
  assert_int_equal(bd_notify_seq(n), 1);
  assert_int_equal(bd_queue_push(q, (void *)3, 0), BD_E_TIMEOUT); /* full: nothing new */
  assert_int_equal(bd_notify_seq(n), 1);
  void *it = NULL;
  assert_int_equal(bd_queue_pop(q, &it, 0), BD_OK); /* pops do not signal */
  assert_int_equal(bd_notify_seq(n), 1);
  bd_queue_close(q);
  assert_int_equal(bd_notify_seq(n), 2);
  bd_queue_set_notify(q, NULL);
  bd_queue_close(q);
  assert_int_equal(bd_notify_seq(n), 2);
  assert_int_equal(bd_queue_pop(q, &it, 0), BD_OK);
  bd_queue_destroy(q);
  bd_notify_destroy(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signal_before_wait),
      cmocka_unit_test(test_timeout_bounds),
      cmocka_unit_test(test_one_signal_wakes_all),
      cmocka_unit_test(test_many_threads_no_lost_wakeup),
      cmocka_unit_test(test_handoff_no_lost_wakeup),
      cmocka_unit_test(test_queue_signals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
