#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "bd_offsets.h"

static void test_out_of_order_completion(void **state) {
  (void)state;
  bd_offsets *o;
  assert_int_equal(bd_offsets_new(&o, NULL), BD_OK);
  for (int64_t off = 10; off < 15; off++)
    assert_int_equal(bd_offsets_track(o, "jobs", 3, off, NULL), BD_OK);
  assert_int_equal(bd_offsets_in_flight(o), 5);
  assert_int_equal(bd_offsets_done(o, "jobs", 3, 12), BD_OK);
  assert_int_equal(bd_offsets_committable(o, "jobs", 3), -1); /* 10 not done */
  assert_int_equal(bd_offsets_done(o, "jobs", 3, 10), BD_OK);
  assert_int_equal(bd_offsets_committable(o, "jobs", 3), 11); /* 11 still open */
  assert_int_equal(bd_offsets_committable(o, "jobs", 3), -1); /* nothing new */
  assert_int_equal(bd_offsets_done(o, "jobs", 3, 11), BD_OK);
  assert_int_equal(bd_offsets_committable(o, "jobs", 3), 13);
  assert_int_equal(bd_offsets_done(o, "jobs", 3, 99), BD_E_NOT_FOUND);
  assert_int_equal(bd_offsets_track(o, "jobs", 3, 13, NULL), BD_E_INTERNAL); /* out of order */
  assert_int_equal(bd_offsets_in_flight(o), 2);
  bd_offsets_destroy(o);
}

static void test_revoke_forgets(void **state) {
  (void)state;
  bd_offsets *o;
  assert_int_equal(bd_offsets_new(&o, NULL), BD_OK);
  bd_offsets_track(o, "jobs", 0, 1, NULL);
  bd_offsets_track(o, "jobs", 0, 2, NULL);
  bd_offsets_track(o, "jobs", 1, 7, NULL);
  bd_offsets_revoke(o, "jobs", 0);
  assert_int_equal(bd_offsets_in_flight(o), 1);
  assert_int_equal(bd_offsets_done(o, "jobs", 0, 2), BD_E_NOT_FOUND);
  assert_int_equal(bd_offsets_committable(o, "jobs", 0), -1);
  assert_int_equal(bd_offsets_done(o, "jobs", 1, 7), BD_OK);
  assert_int_equal(bd_offsets_committable(o, "jobs", 1), 8);
  bd_offsets_destroy(o);
}

/* Random completion order over many partitions against a simple model. */
static void test_random_against_model(void **state) {
  (void)state;
  enum { P = 5, N = 2000 };
  bd_offsets *o;
  assert_int_equal(bd_offsets_new(&o, NULL), BD_OK);
  static uint8_t done[P][N];
  int64_t committed[P];
  for (int p = 0; p < P; p++) {
    committed[p] = 0;
    for (int i = 0; i < N; i++) assert_int_equal(bd_offsets_track(o, "t", p, i, NULL), BD_OK);
  }
  srand(7);
  for (int step = 0; step < P * N; step++) {
    int p = rand() % P, i = rand() % N;
    if (done[p][i]) continue;
    done[p][i] = 1;
    assert_int_equal(bd_offsets_done(o, "t", p, i), BD_OK);
    int64_t expect = committed[p];
    while (expect < N && done[p][expect]) expect++;
    int64_t c = bd_offsets_committable(o, "t", p);
    if (expect > committed[p]) {
      assert_int_equal(c, expect);
      committed[p] = expect;
    } else {
      assert_int_equal(c, -1);
    }
  }
  bd_offsets_destroy(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_out_of_order_completion),
      cmocka_unit_test(test_revoke_forgets),
      cmocka_unit_test(test_random_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
