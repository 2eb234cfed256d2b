/* bd_strmap: puts checked against a linear-scan reference on random keys with many
 * repeats; the capacity limit; slots that keep their place; the hash against values
 * computed in Python (so that ids derived from it stay what they were). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_strmap.h"

static void test_hash_vectors(void **state) {
  (void)state;
  /* FNV-1a 64 with our offset basis (a digit short of FNV's 14695981039346656037):
   * values from a Python loop, h = ((h ^ byte) * 1099511628211) % 2**64. submit's ids
   * for over-long names carry it, so a change here would rename those images. */
  assert_true(bd_str_hash("") == 0x14650fb0739d0383ull);
  assert_true(bd_str_hash("a") == 0x44bd8ad473cd9906ull);
  assert_true(bd_str_hash("foobar") == 0x88fad7c0a8ff07f2ull);
}

static void test_against_scan(void **state) {
  (void)state;
  enum { N = 3000 };
  static char keys[N][12];
  const char *ref[N];
  long refval[N];
  size_t nref = 0;
  srand(7);
  bd_strmap *m = bd_strmap_new(N);
  assert_non_null(m);
  for (int i = 0; i < N; i++) {
    /* about 1000 distinct keys: most puts find their key */
    snprintf(keys[i], sizeof keys[i], "k%d", rand() % 1000);
    size_t j = 0;
    while (j < nref && strcmp(ref[j], keys[i])) j++;
    int fresh = -1;
    long *v = bd_strmap_put(m, keys[i], i, &fresh);
    assert_non_null(v);
    if (j == nref) {
      assert_int_equal(fresh, 1);
      ref[nref] = keys[i];
      refval[nref++] = i;
    } else {
      assert_int_equal(fresh, 0);
    }
    assert_int_equal(*v, refval[j]);
    /* a write through the slot is what a later put of the same key finds */
    if (i % 5 == 0) *v = refval[j] = -i;
  }
  for (size_t j = 0; j < nref; j++) {
    int fresh = -1;
    long *v = bd_strmap_put(m, ref[j], 12345, &fresh);
    assert_int_equal(fresh, 0);
    assert_int_equal(*v, refval[j]);
  }
  bd_strmap_destroy(m);
}

static void test_capacity(void **state) {
  (void)state;
  bd_strmap *m = bd_strmap_new(3);
  int fresh = -1;
  long *a = bd_strmap_put(m, "a", 1, &fresh);
  assert_non_null(a);
  assert_non_null(bd_strmap_put(m, "b", 2, NULL));
  assert_non_null(bd_strmap_put(m, "c", 3, NULL));
  /* full: a new key is refused, an old one still found; slots kept their place */
  assert_null(bd_strmap_put(m, "d", 4, &fresh));
  assert_int_equal(fresh, 0);
  assert_ptr_equal(bd_strmap_put(m, "a", 9, &fresh), a);
  assert_int_equal(*a, 1);
  bd_strmap_destroy(m);
  m = bd_strmap_new(0);
  assert_non_null(m);
  assert_null(bd_strmap_put(m, "x", 0, NULL));
  bd_strmap_destroy(m);
  bd_strmap_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash_vectors),
      cmocka_unit_test(test_against_scan),
      cmocka_unit_test(test_capacity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
