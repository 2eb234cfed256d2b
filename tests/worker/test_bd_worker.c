/* Unit tests of the worker's small pure parts: the --devices grammar and the Prometheus
 * exposition text (checked against hand-written expected lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_wk_metrics.h"
#include "bd_worker.h"

static void test_devices_ok(void **state) {
  (void)state;
  bd_wdev_spec s;
  assert_int_equal(bd_worker_parse_devices("cpu", &s, NULL), BD_OK);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.name[0], "cpu:0");
  assert_string_equal(s.engine_dev[0], "cpu");
  assert_int_equal(bd_worker_parse_devices("cpu:3", &s, NULL), BD_OK);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.name[2], "cpu:2");
  assert_int_equal(bd_worker_parse_devices("cuda", &s, NULL), BD_OK);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.engine_dev[0], "cuda:0");
  assert_int_equal(bd_worker_parse_devices("cuda:0,1,3", &s, NULL), BD_OK);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.name[2], "cuda:3");
  assert_int_equal(s.kind[1], BD_WDEV_CUDA);
  assert_int_equal(bd_worker_parse_devices("sim:4:25", &s, NULL), BD_OK);
  assert_int_equal(s.n, 4);
  assert_int_equal(s.sim_ms, 25);
  assert_int_equal(s.kind[3], BD_WDEV_SIM);
  assert_string_equal(s.name[3], "sim:3");
}

static void test_devices_bad(void **state) {
  (void)state;
  bd_wdev_spec s;
  bd_err err = {0};
  const char *bad[] = {"",        "gpu",      "cpu:0",       "cpu:65",   "cpu:x",
                       "cuda:",   "cuda:0,",  "cuda:64",     "cuda:a",   "sim:2",
                       "sim:0:5", "sim:2:-1", "sim:2:70000", "sim:2:5x", "cpu:2x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(bd_worker_parse_devices(bad[i], &s, &err), BD_E_INVALID);
    assert_non_null(strstr(err.msg, "--devices"));
  }
}

static void gauges(void *ctx, bd_wk_text *t) {
  (void)ctx;
  bd_wk_text_printf(t, "batchdet_kafka_lag %d\n", 42);
}

static void test_metrics_text(void **state) {
  (void)state;
  const char *devs[] = {"sim:0", "sim:1"};
  bd_wk_metrics *m = bd_wk_metrics_new(2, devs, NULL);
  assert_non_null(m);
  bd_wk_metrics_image(m, 0, 1, 5);
  bd_wk_metrics_image(m, 1, 0, 2);
  bd_wk_metrics_image(m, -1, 0, 3);
  bd_wk_metrics_observe(m, BD_WK_DECODE, 0.003); /* bucket le=0.005 */
  bd_wk_metrics_observe(m, BD_WK_DECODE, 100.0); /* only +Inf */
  bd_wk_metrics_batch(m, 3, 4);
  bd_wk_metrics_batch(m, 1, 4);
  char *t = bd_wk_metrics_render(m, gauges, NULL);
  assert_non_null(t);
  const char *want[] = {
      "batchdet_images_total{device=\"sim:0\",status=\"ok\"} 5\n",
      "batchdet_images_total{device=\"sim:1\",status=\"error\"} 2\n",
      "batchdet_images_total{device=\"none\",status=\"error\"} 3\n",
      "batchdet_stage_seconds_bucket{stage=\"decode\",le=\"0.0025\"} 0\n",
      "batchdet_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 1\n",
      "batchdet_stage_seconds_bucket{stage=\"decode\",le=\"60\"} 1\n",
      "batchdet_stage_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 2\n",
      "batchdet_stage_seconds_count{stage=\"decode\"} 2\n",
      "batchdet_stage_seconds_count{stage=\"fetch\"} 0\n",
      "batchdet_batch_fill_ratio 0.5000\n",
      "batchdet_kafka_lag 42\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    if (!strstr(t, want[i])) fail_msg("missing line: %s", want[i]);
  }
  free(t);
  bd_wk_metrics_destroy(m);
  bd_wk_metrics_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_devices_ok),
      cmocka_unit_test(test_devices_bad),
      cmocka_unit_test(test_metrics_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
