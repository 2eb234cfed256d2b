/* bd_text: UTF-8 well-formedness by Unicode's table 3-7, checked case by case and
 * against jansson (which refuses exactly the strings that are not UTF-8) on random bytes;
 * the sanitized form is valid and keeps every well-formed sequence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "bd_text.h"

static int valid(const char *s) {
  return bd_utf8_valid(s, strlen(s), NULL);
}

static void test_cases(void **state) {
  (void)state;
  assert_true(valid(""));
  assert_true(valid("dog"));
  assert_true(valid("caf\xC3\xA9"));                     /* U+00E9 */
  assert_true(valid("\xE2\x82\xAC"));                    /* U+20AC */
  assert_true(valid("\xED\x9F\xBF"));                    /* U+D7FF, before the surrogates */
  assert_true(valid("\xEE\x80\x80"));                    /* U+E000, after them */
  assert_true(valid("\xF0\x9F\x90\xB6"));                /* U+1F436 */
  assert_true(valid("\xF4\x8F\xBF\xBF"));                /* U+10FFFF */
  assert_false(valid("d\xFFog"));                        /* never in UTF-8 */
  assert_false(valid("\xC0\xAF"));                       /* overlong '/' */
  assert_false(valid("\xC1\xBF"));                       /* overlong */
  assert_false(valid("\xE0\x80\xAF"));                   /* overlong */
  assert_false(valid("\xF0\x80\x80\xAF"));               /* overlong */
  assert_false(valid("\xED\xA0\x80"));                   /* U+D800 surrogate */
  assert_false(valid("\xF4\x90\x80\x80"));               /* U+110000 */
  assert_false(valid("\xF5\x80\x80\x80"));               /* past F4 */
  assert_false(valid("\xC3"));                           /* cut short */
  assert_false(valid("\xE2\x82"));                       /* cut short */
  assert_false(valid("\x80"));                           /* lone continuation */
  assert_false(valid("\xE2\x28\xA1"));                   /* bad continuation */
  size_t bad = 99;
  assert_false(bd_utf8_valid("ab\xC3\xA9x\xFFy", 7, &bad));
  assert_int_equal(bad, 5);
  /* a sequence that runs past n is not whole */
  assert_false(bd_utf8_valid("\xC3\xA9", 1, NULL));
  assert_true(bd_utf8_valid("a\0b", 3, NULL));
}

static void test_sanitize(void **state) {
  (void)state;
  char *s = bd_utf8_sanitize("bad\xFF.jpg");
  assert_non_null(s);
  assert_string_equal(s, "bad\xEF\xBF\xBD.jpg");
  free(s);
  s = bd_utf8_sanitize("caf\xC3\xA9 \xC3 \xED\xA0\x80!");
  assert_non_null(s);
  /* the cut-short C3 is one replacement; the surrogate's three bytes are three */
  assert_string_equal(s, "caf\xC3\xA9 \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD!");
  free(s);
  s = bd_utf8_sanitize("plain");
  assert_string_equal(s, "plain");
  free(s);
}

/* Random byte strings, biased towards the lead bytes near the table's edges: our verdict
 * equals jansson's, and the sanitized string is one jansson takes. */
static void test_vs_jansson(void **state) {
  (void)state;
  static const unsigned char pick[] = {0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1,
                                       0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1,
                                       0xF3, 0xF4, 0xF5, 0xFE, 0xFF};
  uint32_t z = 12345;
  int agree = 0, invalid = 0;
  for (int t = 0; t < 200000; t++) {
    char buf[8];
    const int n = 1 + t % 7;
    for (int i = 0; i < n; i++) {
      z ^= z << 13, z ^= z >> 17, z ^= z << 5;
      buf[i] = (char)pick[z % sizeof pick];
    }
    buf[n] = '\0';
    json_t *j = json_string(buf);
    const int ours = valid(buf);
    assert_int_equal(ours, j != NULL);
    agree++;
    invalid += !ours;
    json_decref(j);
    char *s = bd_utf8_sanitize(buf);
    assert_non_null(s);
    assert_true(valid(s));
    json_t *k = json_string(s);
    assert_non_null(k);
    json_decref(k);
    if (ours) assert_string_equal(s, buf);
    free(s);
  }
  assert_true(invalid > 1000 && agree - invalid > 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),
      cmocka_unit_test(test_sanitize),
      cmocka_unit_test(test_vs_jansson),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
