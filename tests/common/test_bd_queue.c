#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include <cmocka.h>

#include "bd_config.h"
#include "bd_queue.h"

#define N_ITEMS 20000
#define N_PROD 4

static bd_queue *g_q;

static void *producer(void *arg) {
  intptr_t base = (intptr_t)arg;
  for (intptr_t i = 0; i < N_ITEMS / N_PROD; i++)
    if (bd_queue_push(g_q, (void *)(base + i + 1), -1) != BD_OK) return (void *)1;
  return NULL;
}

static void test_mpmc_every_item_once(void **state) {
  (void)state;
  assert_int_equal(bd_queue_new(7, &g_q, NULL), BD_OK);
  pthread_t th[N_PROD];
  for (intptr_t i = 0; i < N_PROD; i++)
    pthread_create(&th[i], NULL, producer, (void *)(i * (N_ITEMS / N_PROD)));
  static unsigned char seen[N_ITEMS + 1];
  int got = 0;
  while (got < N_ITEMS) {
    void *it = NULL;
    assert_int_equal(bd_queue_pop(g_q, &it, 5.0), BD_OK);
    intptr_t v = (intptr_t)it;
    assert_true(v >= 1 && v <= N_ITEMS);
    assert_int_equal(seen[v], 0);
    seen[v] = 1;
    got++;
  }
  for (int i = 0; i < N_PROD; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  assert_int_equal(bd_queue_len(g_q), 0);
  bd_queue_destroy(g_q);
}

static void test_timeouts_and_close(void **state) {
  (void)state;
  bd_queue *q;
  assert_int_equal(bd_queue_new(1, &q, NULL), BD_OK);
  void *it;
  double t0 = bd_now();
  assert_int_equal(bd_queue_pop(q, &it, 0.05), BD_E_TIMEOUT);
  assert_true(bd_now() - t0 >= 0.04);
  assert_int_equal(bd_queue_push(q, (void *)1, 0), BD_OK);
  assert_int_equal(bd_queue_push(q, (void *)2, 0.01), BD_E_TIMEOUT);
  bd_queue_close(q);
  assert_int_equal(bd_queue_push(q, (void *)3, 0), BD_E_CANCELLED);
  assert_int_equal(bd_queue_pop(q, &it, 0), BD_OK); /* drains what is left */
  assert_true(it == (void *)1);
  assert_int_equal(bd_queue_pop(q, &it, -1), BD_E_CANCELLED);
  bd_queue_destroy(q);
  assert_int_equal(bd_queue_new(0, &q, NULL), BD_E_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mpmc_every_item_once),
      cmocka_unit_test(test_timeouts_and_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
