/* bd_engine on the shipped yolox_nano.onnx: family recognition from the real graph,
 * bucket padding (a partial batch must give the same rows as running them one by one),
 * chunking beyond max_batch, the detection API on synthetic images, and argument checks.
 * Numbers are compared between independent runs of the network, never to constants
 * produced by this code. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_engine.h"

static char model[1024];

static int setup(void **s) {
  (void)s;
  const char *d = getenv("BD_TEST_DATA");
  snprintf(model, sizeof model, "%s/models/yolox_nano.onnx", d ? d : "../shared/data");
  return 0;
}

static void test_device_parse(void **s) {
  (void)s;
  int c, i;
  assert_int_equal(bd_engine_parse_device("cpu", &c, &i), 0);
  assert_int_equal(c, 0);
  assert_int_equal(bd_engine_parse_device("cuda:3", &c, &i), 0);
  assert_true(c == 1 && i == 3);
  assert_int_equal(bd_engine_parse_device("cuda", &c, &i), 0);
  assert_true(c == 1 && i == 0);
  assert_int_equal(bd_engine_parse_device("cuda:", &c, &i), -1);
  assert_int_equal(bd_engine_parse_device("cuda:x", &c, &i), -1);
  assert_int_equal(bd_engine_parse_device("gpu", &c, &i), -1);
  bd_engine *e = NULL;
  bd_err err;
  bd_engine_opts o = {.device = "tpu"};
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_E_INVALID);
  o.device = "cpu";
  o.max_batch = 5000;
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_E_INVALID);
  assert_int_not_equal(bd_engine_load("/nonexistent.onnx", NULL, &e, &err), BD_OK);
  bd_engine_destroy(NULL);
}

static void test_recognize_yolox(void **s) {
  (void)s;
  bd_engine *e = NULL;
  bd_err err;
  bd_engine_opts o = {.device = "cpu", .threads = 1, .max_batch = 4};
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_OK);
  const bd_family_info *fi = bd_engine_family(e);
  assert_int_equal(fi->family, BD_FAMILY_YOLOX);
  assert_int_equal(fi->in_h, 416);
  assert_int_equal(fi->in_w, 416);
  assert_int_equal(fi->num_classes, 80);
  assert_int_equal(fi->num_anchors, 3549);
  assert_int_equal(bd_engine_num_outputs(e), 1);
  int64_t d[8];
  assert_int_equal(bd_engine_output_dims(e, 0, 3, d), 3);
  assert_true(d[0] == 3 && d[1] == 3549 && d[2] == 85);
  bd_engine_destroy(e);
  /* Forcing the wrong family is a clear error. */
  o.family = BD_FAMILY_DAMOYOLO;
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "damoyolo"));
}

static void fill(float *x, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = (float)(seed >> 24);
  }
}

static void test_buckets_match_single_rows(void **s) {
  (void)s;
  bd_engine *e = NULL;
  bd_err err;
  /* max_batch 2: buckets {1, 2}; 3 rows run as a full bucket of 2 plus a bucket of 1, and
   * a request for 1 row of a padded bucket is exercised via max_batch 2 / n 1. */
  bd_engine_opts o = {.device = "cpu", .threads = 2, .max_batch = 2};
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_OK);
  size_t row = (size_t)bd_engine_input_row_numel(e),
         orow = (size_t)bd_engine_output_row_numel(e, 0);
  float *in = malloc(3 * row * sizeof(float));
  float *o3 = malloc(3 * orow * sizeof(float)), *o1 = malloc(orow * sizeof(float));
  fill(in, 3 * row, 42);
  float *outs3[1] = {o3}, *outs1[1] = {o1};
  assert_int_equal(bd_engine_run_raw(e, 3, in, outs3, &err), BD_OK);
  for (int r = 0; r < 3; r++) {
    assert_int_equal(bd_engine_run_raw(e, 1, in + r * row, outs1, &err), BD_OK);
    double maxd = 0;
    for (size_t k = 0; k < orow; k++) {
      double dd = fabs((double)o3[r * orow + k] - o1[k]);
      double tol = 1e-3 * (1 + fabs(o1[k]));
      if (dd > tol && dd > maxd) maxd = dd;
    }
    assert_true(maxd == 0);
  }
  bd_engine_destroy(e);
  /* Padding: max_batch 16 -> buckets {1, 8, 16}; 3 rows run in bucket 8. */
  o.max_batch = 16;
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_OK);
  float *p3 = malloc(3 * orow * sizeof(float));
  float *outsp[1] = {p3};
  assert_int_equal(bd_engine_run_raw(e, 3, in, outsp, &err), BD_OK);
  for (size_t k = 0; k < 3 * orow; k++)
    assert_true(fabs(p3[k] - o3[k]) <= 1e-3 * (1 + fabs(o3[k])));
  /* The detection API: a flat gray image finds nothing; NULL images are reported. */
  bd_image im = {100, 60, malloc(100 * 60 * 3)};
  memset(im.data, 128, 100 * 60 * 3);
  const bd_image *imgs[2] = {&im, NULL};
  bd_detections dets[2];
  bd_status st[2];
  assert_int_equal(bd_engine_detect(e, 2, imgs, NULL, dets, st, &err), BD_OK);
  assert_int_equal(st[0], BD_OK);
  assert_int_equal(st[1], BD_E_INVALID);
  assert_int_equal(dets[1].n, 0);
  for (int i = 0; i < dets[0].n; i++)
    assert_true(dets[0].det[i].x2 <= 100.f && dets[0].det[i].y2 <= 60.f);
  bd_detections_free(&dets[0]);
  bd_detections_free(&dets[1]);
  bd_image_free(&im);
  bd_engine_destroy(e);
  free(in);
  free(o3);
  free(o1);
  free(p3);
}

static void test_family_none(void **s) {
  (void)s;
  bd_engine *e = NULL;
  bd_err err;
  bd_engine_opts o = {.device = "cpu", .threads = 1, .max_batch = 1, .family = BD_FAMILY_NONE};
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_OK);
  assert_int_equal(bd_engine_input_row_numel(e), 3 * 416 * 416);
  bd_image im = {4, 4, calloc(48, 1)};
  const bd_image *imgs[1] = {&im};
  bd_detections d[1];
  assert_int_equal(bd_engine_detect(e, 1, imgs, NULL, d, NULL, &err), BD_E_INVALID);
  bd_image_free(&im);
  bd_engine_destroy(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_device_parse),
      cmocka_unit_test(test_recognize_yolox),
      cmocka_unit_test(test_buckets_match_single_rows),
      cmocka_unit_test(test_family_none),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
