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
  /* cpu: one pool "cpu", cpu:N its N instances (named as bd_pool names them). */
  assert_int_equal(bd_worker_parse_devices("cpu", 1, &s, NULL), BD_OK);
  assert_int_equal(s.kind, BD_WDEV_CPU);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.name[0], "cpu");
  assert_string_equal(s.pool_devices, "cpu");
  assert_int_equal(s.per_device, 1);
  assert_int_equal(bd_worker_parse_devices("cpu:3", 4, &s, NULL), BD_OK); /* per_gpu: cuda only */
  assert_int_equal(s.n, 3);
  assert_string_equal(s.pool_devices, "cpu");
  assert_int_equal(s.per_device, 3);
  assert_string_equal(s.name[0], "cpu#0");
  assert_string_equal(s.name[2], "cpu#2");
  assert_int_equal(bd_worker_parse_devices("cpu:16", 1, &s, NULL), BD_OK);
  assert_int_equal(s.n, 16);
  /* resolve leaves cpu alone, whatever the GPUs */
  assert_int_equal(bd_worker_resolve_devices(&s, -1, NULL), BD_OK);
  assert_int_equal(s.n, 16);
  /* cuda: every visible GPU, named once they are counted. */
  assert_int_equal(bd_worker_parse_devices("cuda", 2, &s, NULL), BD_OK);
  assert_int_equal(s.kind, BD_WDEV_CUDA);
  assert_int_equal(s.all_gpus, 1);
  assert_string_equal(s.pool_devices, "cuda");
  assert_int_equal(s.per_device, 2);
  assert_int_equal(bd_worker_resolve_devices(&s, 3, NULL), BD_OK);
  assert_int_equal(s.n, 6);
  const char *want6[] = {"cuda:0#0", "cuda:0#1", "cuda:1#0", "cuda:1#1", "cuda:2#0", "cuda:2#1"};
  for (int i = 0; i < 6; i++) assert_string_equal(s.name[i], want6[i]);
  /* a list: written back canonically for the pool */
  assert_int_equal(bd_worker_parse_devices("cuda:3,0,1", 1, &s, NULL), BD_OK);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.pool_devices, "cuda:3,0,1");
  assert_string_equal(s.name[0], "cuda:3#0");
  assert_string_equal(s.name[2], "cuda:1#0");
  assert_int_equal(bd_worker_resolve_devices(&s, 4, NULL), BD_OK);
  assert_int_equal(s.n, 3);
  assert_int_equal(bd_worker_parse_devices("cuda:07", 1, &s, NULL), BD_OK);
  assert_string_equal(s.pool_devices, "cuda:7");
  assert_int_equal(bd_worker_parse_devices("sim:4:25", 3, &s, NULL), BD_OK);
  assert_int_equal(s.n, 4);
  assert_int_equal(s.sim_ms, 25);
  assert_int_equal(s.kind, BD_WDEV_SIM);
  assert_string_equal(s.name[3], "sim:3");
  assert_string_equal(s.pool_devices, "");
}

static void test_devices_bad(void **state) {
  (void)state;
  bd_wdev_spec s;
  bd_err err = {0};
  const char *bad[] = {
      "",       "gpu",      "cpu:0",   "cpu:65",   "cpu:x",       "cuda:",    "cuda:0,", "cuda:64",
      "cuda:a", "sim:2",    "sim:0:5", "sim:2:-1", "sim:2:70000", "sim:2:5x", "cpu:2x",  "cpu:17",
      "cpu:+2", "cuda:1,1", "cuda:+1", "cuda: 1",  "cuda:0,,1",   "cudax",    "cpux"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    bd_status st = bd_worker_parse_devices(bad[i], 1, &s, &err);
    if (st != BD_E_INVALID) fail_msg("'%s': %s", bad[i], bd_status_name(st));
    assert_non_null(strstr(err.msg, "--devices"));
  }
  assert_int_equal(bd_worker_parse_devices("cuda", 0, &s, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "--instances-per-gpu"));
  assert_int_equal(bd_worker_parse_devices("cuda:0", 17, &s, &err), BD_E_INVALID);
  /* 5 GPUs x 16 instances: past the 64 devices a worker lists */
  assert_int_equal(bd_worker_parse_devices("cuda:0,1,2,3,4", 16, &s, &err), BD_E_LIMIT);
  assert_non_null(strstr(err.msg, "--devices"));
}

/* cuda without a GPU: a clear error, the status telling a build without the CUDA
 * backend (BD_E_UNSUPPORTED) from a machine without a visible GPU (BD_E_DEVICE). */
static void test_devices_no_gpu(void **state) {
  (void)state;
  bd_wdev_spec s;
  bd_err err = {0};
  assert_int_equal(bd_worker_parse_devices("cuda", 1, &s, NULL), BD_OK);
  assert_int_equal(bd_worker_resolve_devices(&s, -1, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "--devices cuda: this build has no CUDA backend"));
  assert_int_equal(s.n, 0); /* untouched */
  assert_int_equal(bd_worker_resolve_devices(&s, 0, &err), BD_E_DEVICE);
  assert_non_null(strstr(err.msg, "no CUDA device is visible"));
  assert_int_equal(bd_worker_parse_devices("cuda:0,2", 1, &s, NULL), BD_OK);
  assert_int_equal(bd_worker_resolve_devices(&s, 2, &err), BD_E_DEVICE);
  assert_non_null(strstr(err.msg, "GPU 2"));
  assert_non_null(strstr(err.msg, "not visible"));
  assert_int_equal(s.n, 2); /* names from the list stay */
  assert_string_equal(s.name[1], "cuda:2#0");
  /* This build, this machine: the probe agrees with BD_HAVE_CUDA. */
  int n = bd_worker_visible_gpus();
#ifdef BD_HAVE_CUDA
  assert_true(n >= 0);
#else
  assert_int_equal(n, -1);
#endif
  assert_int_equal(bd_worker_parse_devices("cuda", 1, &s, NULL), BD_OK);
  bd_status st = bd_worker_resolve_devices(&s, n, &err);
  if (n > 0) {
    assert_int_equal(st, BD_OK);
    assert_int_equal(s.n, n);
  } else {
    assert_int_equal(st, n < 0 ? BD_E_UNSUPPORTED : BD_E_DEVICE);
    print_message("cuda here: %s\n", err.msg);
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
      cmocka_unit_test(test_devices_no_gpu),
      cmocka_unit_test(test_metrics_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
