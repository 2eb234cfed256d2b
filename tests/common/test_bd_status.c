#include <setjmp.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bd_config.h"
#include "bd_log.h"
#include "bd_status.h"

static void test_set_and_prefix(void **state) {
  (void)state;
  bd_err e;
  bd_err_clear(&e);
  assert_int_equal(bd_err_set(&e, BD_E_INVALID, "field %s", "x"), BD_E_INVALID);
  assert_string_equal(e.msg, "field x");
  bd_err_prefix(&e, "images[%d]", 3);
  assert_string_equal(e.msg, "images[3]: field x");
  assert_int_equal(bd_err_set(NULL, BD_E_IO, "ignored"), BD_E_IO);
}

static void test_retriable(void **state) {
  (void)state;
  assert_true(bd_status_retriable(BD_E_NETWORK));
  assert_true(bd_status_retriable(BD_E_UNAVAILABLE));
  assert_true(bd_status_retriable(BD_E_TIMEOUT));
  assert_false(bd_status_retriable(BD_E_INVALID));
  assert_false(bd_status_retriable(BD_E_LIMIT));
  assert_false(bd_status_retriable(BD_OK));
  assert_string_equal(bd_status_name(BD_E_NOT_FOUND), "not-found");
  assert_string_equal(bd_status_name((bd_status)999), "unknown");
}

static void test_parse(void **state) {
  (void)state;
  bd_err e;
  int v = 0;
  double d = 0;
  assert_int_equal(bd_parse_int("16", 1, 64, "--batch", &v, &e), BD_OK);
  assert_int_equal(v, 16);
  assert_int_equal(bd_parse_int("0", 1, 64, "--batch", &v, &e), BD_E_INVALID);
  assert_non_null(strstr(e.msg, "--batch"));
  assert_int_equal(bd_parse_int("12x", 1, 64, "--batch", &v, &e), BD_E_INVALID);
  assert_int_equal(bd_parse_int("", 1, 64, "--batch", &v, &e), BD_E_INVALID);
  assert_int_equal(bd_parse_double("0.5", 0, 1, "--score-thr", &d, &e), BD_OK);
  assert_true(d == 0.5);
  assert_int_equal(bd_parse_double("1.5", 0, 1, "--score-thr", &d, &e), BD_E_INVALID);
  assert_int_equal(bd_parse_double("nan", 0, 1, "--score-thr", &d, &e), BD_E_INVALID);
}

static void test_config_order(void **state) {
  (void)state;
  setenv("BD_TEST_CFG", "fromenv", 1);
  assert_string_equal(bd_config_str("flag", "BD_TEST_CFG", "def"), "flag");
  assert_string_equal(bd_config_str(NULL, "BD_TEST_CFG", "def"), "fromenv");
  setenv("BD_TEST_CFG", "", 1);
  assert_string_equal(bd_config_str(NULL, "BD_TEST_CFG", "def"), "def");
  unsetenv("BD_TEST_CFG");
  assert_string_equal(bd_config_str(NULL, "BD_TEST_CFG", "def"), "def");
}

static void test_log_levels(void **state) {
  (void)state;
  assert_int_equal(bd_log_parse_level("debug"), BD_LOG_DEBUG);
  assert_int_equal(bd_log_parse_level("WARN"), BD_LOG_WARN);
  assert_int_equal(bd_log_parse_level("loud"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_and_prefix), cmocka_unit_test(test_retriable),
      cmocka_unit_test(test_parse), cmocka_unit_test(test_config_order),
      cmocka_unit_test(test_log_levels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
