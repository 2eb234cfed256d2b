/* bd_family: OpenCV-convention resize on small cases whose outputs were recorded from
 * cv2.resize(INTER_LINEAR) (python3-opencv 4.6) and checked by hand where simple;
 * pre-processing layout; post-processing on synthetic network outputs with boxes
 * computed by hand; recognition on synthetic graphs. The full-size comparison with
 * OpenCV lives in test_resize_cv2.py. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_family.h"
#include "bd_graph.h"

static void check_resize(const uint8_t *src, int sw, int sh, const uint8_t *want, int dw, int dh) {
  uint8_t got[64];
  assert_int_equal(bd_family_resize_u8(src, sw, sh, 1, got, dw, dh, NULL), BD_OK);
  assert_memory_equal(got, want, (size_t)dw * dh);
}

static void test_resize_small(void **s) {
  (void)s;
  /* 2x2 -> 3x3: corners copy, edges average, centre = (35 + 115) / 2 = 75. */
  const uint8_t a[] = {10, 200, 60, 30};
  const uint8_t a3[] = {10, 105, 200, 35, 75, 115, 60, 45, 30};
  check_resize(a, 2, 2, a3, 3, 3);
  /* 4x4 -> 2x2: exact 2x down is the rounded mean of each 2x2 block. */
  uint8_t b[16];
  for (int i = 0; i < 16; i++) b[i] = (uint8_t)(i * 13 + 7);
  const uint8_t b2[] = {40, 66, 144, 170};
  check_resize(b, 4, 4, b2, 2, 2);
  /* Upscale 5x1 -> 7x2: OpenCV's truncating vertical rounding shows (146, 182, 153). */
  const uint8_t c[] = {0, 255, 0, 255, 17};
  const uint8_t c7[] = {0, 146, 182, 0, 182, 153, 17, 0, 146, 182, 0, 182, 153, 17};
  check_resize(c, 5, 1, c7, 7, 2);
  const uint8_t d[] = {1, 2, 3, 250, 251, 252, 99, 100, 101};
  const uint8_t d54[] = {1,   1,   2,   3,   3,   157, 157, 158, 158, 159,
                         193, 194, 194, 195, 195, 99,  99,  100, 101, 101};
  check_resize(d, 3, 3, d54, 5, 4);
  /* Same size is a copy; bad sizes are errors. */
  uint8_t o[4];
  assert_int_equal(bd_family_resize_u8(a, 2, 2, 1, o, 2, 2, NULL), BD_OK);
  assert_memory_equal(o, a, 4);
  assert_int_equal(bd_family_resize_u8(a, 0, 2, 1, o, 2, 2, NULL), BD_E_INVALID);
}

static void test_preprocess(void **s) {
  (void)s;
  uint8_t px[4 * 2 * 3];
  for (int i = 0; i < 8; i++) px[3 * i] = 10, px[3 * i + 1] = 20, px[3 * i + 2] = 30;
  bd_image im = {4, 2, px};
  bd_family_info fi = {.family = BD_FAMILY_YOLOX, .in_h = 8, .in_w = 8};
  float t[3 * 64];
  bd_prep_info pi;
  assert_int_equal(bd_family_preprocess(&fi, &im, t, &pi, NULL), BD_OK);
  assert_true(pi.ratio == 2.0);
  assert_int_equal(pi.resized_w, 8);
  assert_int_equal(pi.resized_h, 4);
  for (int y = 0; y < 8; y++)
    for (int x = 0; x < 8; x++) { /* BGR planes, letterbox rows 4..7 = 114 */
      assert_true(t[0 * 64 + y * 8 + x] == (y < 4 ? 30.f : 114.f));
      assert_true(t[1 * 64 + y * 8 + x] == (y < 4 ? 20.f : 114.f));
      assert_true(t[2 * 64 + y * 8 + x] == (y < 4 ? 10.f : 114.f));
    }
  fi.family = BD_FAMILY_DAMOYOLO;
  assert_int_equal(bd_family_preprocess(&fi, &im, t, &pi, NULL), BD_OK);
  assert_true(pi.scale_x == 0.5f && pi.scale_y == 0.25f);
  for (int i = 0; i < 64; i++) /* RGB planes, stretched, no padding */
    assert_true(t[i] == 10.f && t[64 + i] == 20.f && t[128 + i] == 30.f);
}

static void set_row(float *o, int a, int C, float x, float y, float w, float h, float obj,
                    const float *cls) {
  float *r = o + (size_t)a * (5 + C);
  r[0] = x, r[1] = y, r[2] = w, r[3] = h, r[4] = obj;
  for (int c = 0; c < C; c++) r[5 + c] = cls[c];
}

static void test_post_yolox(void **s) {
  (void)s;
  /* 64x64 input: grids 8x8, 4x4, 2x2 -> 84 anchors; 2 classes. */
  bd_family_info fi = {.family = BD_FAMILY_YOLOX,
                       .in_h = 64,
                       .in_w = 64,
                       .num_classes = 2,
                       .num_anchors = 84,
                       .out_main = 0};
  float o[84 * 7];
  memset(o, 0, sizeof o);
  const float c1[] = {0.2f, 0.8f}, c0[] = {0.9f, 0.1f};
  /* s16 cell (gx 2, gy 1) = anchor 64 + 6: cx = 2.5*16 = 40, cy = 1.25*16 = 20, w 32, h 16. */
  set_row(o, 70, 2, 0.5f, 0.25f, logf(2.f), 0.f, 0.9f, c1);
  /* Same box a bit lower: suppressed by the first (same class, IoU 0.6). */
  set_row(o, 71, 2, -0.5f, 0.5f, logf(2.f), 0.f, 0.85f, c1);
  /* s8 cell (0,0) with a huge box, class 0 score 0.45: clipped to the image. */
  set_row(o, 0, 2, 0.f, 0.f, logf(100.f), logf(100.f), 0.5f, c0);
  /* Below the threshold: 0.5 * 0.5 = 0.25 < 0.3. */
  const float lo[] = {0.5f, 0.5f};
  set_row(o, 80, 2, 0.f, 0.f, 0.f, 0.f, 0.5f, lo);
  bd_prep_info pi = {.orig_w = 128, .orig_h = 100, .ratio = 0.5f};
  bd_detect_params p = {-1.f, -1.f, 0};
  const float *outs[1] = {o};
  bd_detections d;
  assert_int_equal(bd_family_postprocess(&fi, outs, &pi, &p, &d, NULL), BD_OK);
  assert_int_equal(d.n, 2);
  assert_int_equal(d.det[0].cls, 1);
  assert_true(fabsf(d.det[0].score - 0.72f) < 1e-6f);
  assert_true(fabsf(d.det[0].x1 - 48.f) < 1e-4f && fabsf(d.det[0].y1 - 24.f) < 1e-4f);
  assert_true(fabsf(d.det[0].x2 - 112.f) < 1e-4f && fabsf(d.det[0].y2 - 56.f) < 1e-4f);
  assert_int_equal(d.det[1].cls, 0);
  assert_true(d.det[1].x1 == 0.f && d.det[1].y1 == 0.f);
  assert_true(d.det[1].x2 == 128.f && d.det[1].y2 == 100.f);
  bd_detections_free(&d);
  /* max_det 1 keeps the best. */
  p.max_det = 1;
  assert_int_equal(bd_family_postprocess(&fi, outs, &pi, &p, &d, NULL), BD_OK);
  assert_int_equal(d.n, 1);
  assert_int_equal(d.det[0].cls, 1);
  bd_detections_free(&d);
}

static void test_post_damo(void **s) {
  (void)s;
  bd_family_info fi = {.family = BD_FAMILY_DAMOYOLO,
                       .in_h = 64,
                       .in_w = 64,
                       .num_classes = 3,
                       .num_anchors = 84,
                       .out_scores = 1,
                       .out_boxes = 0};
  float sc[84 * 3], bx[84 * 4];
  memset(sc, 0, sizeof sc);
  memset(bx, 0, sizeof bx);
  sc[5 * 3 + 0] = 0.6f, sc[5 * 3 + 1] = 0.05f, sc[5 * 3 + 2] = 0.7f;
  bx[5 * 4 + 0] = 10, bx[5 * 4 + 1] = 20, bx[5 * 4 + 2] = 30, bx[5 * 4 + 3] = 40;
  bd_prep_info pi = {.orig_w = 128, .orig_h = 32, .scale_x = 2.f, .scale_y = 0.5f};
  bd_detect_params p = {0.05f, 0.7f, 500};
  const float *outs[2] = {bx, sc};
  bd_detections d;
  assert_int_equal(bd_family_postprocess(&fi, outs, &pi, &p, &d, NULL), BD_OK);
  assert_int_equal(d.n, 2); /* multi-label; 0.05 is not > 0.05 */
  assert_int_equal(d.det[0].cls, 2);
  assert_int_equal(d.det[1].cls, 0);
  for (int i = 0; i < 2; i++) {
    assert_true(d.det[i].x1 == 20.f && d.det[i].x2 == 60.f);
    assert_true(d.det[i].y1 == 10.f && d.det[i].y2 == 20.f);
  }
  bd_detections_free(&d);
}

static bd_graph *graph_with(const int64_t *in, int nout, const int64_t (*outs)[3]) {
  bd_graph *g = NULL;
  assert_int_equal(bd_graph_new(&g, NULL), BD_OK);
  int vi = bd_graph_add_value(g, "images", BD_DT_F32, 4, in);
  g->values[vi].is_input = 1;
  g->inputs[g->n_inputs++] = vi;
  for (int i = 0; i < nout; i++) {
    int vo = bd_graph_add_value(g, i ? "boxes" : "output", BD_DT_F32, 3, outs[i]);
    g->values[vo].is_output = 1;
    g->outputs[g->n_outputs++] = vo;
  }
  return g;
}

static void test_recognize(void **s) {
  (void)s;
  const int64_t in[4] = {1, 3, 416, 416};
  const int64_t yx[1][3] = {{1, 3549, 85}};
  bd_family_info fi;
  bd_graph *g = graph_with(in, 1, yx);
  assert_int_equal(bd_family_recognize(g, BD_FAMILY_AUTO, &fi, NULL), BD_OK);
  assert_int_equal(fi.family, BD_FAMILY_YOLOX);
  assert_int_equal(fi.num_classes, 80);
  assert_int_equal(fi.in_h, 416);
  assert_int_equal(bd_family_recognize(g, BD_FAMILY_DAMOYOLO, &fi, NULL), BD_E_UNSUPPORTED);
  bd_graph_destroy(g);
  /* damoyolo 640x480 (H != W): A = 21 * 20 * 15 = 6300, boxes first. */
  const int64_t in2[4] = {2, 3, 480, 640};
  const int64_t dm[2][3] = {{2, 6300, 4}, {2, 6300, 80}};
  g = graph_with(in2, 2, dm);
  assert_int_equal(bd_family_recognize(g, BD_FAMILY_AUTO, &fi, NULL), BD_OK);
  assert_int_equal(fi.family, BD_FAMILY_DAMOYOLO);
  assert_int_equal(fi.out_scores, 1);
  assert_int_equal(fi.out_boxes, 0);
  assert_int_equal(fi.in_w, 640);
  assert_int_equal(fi.in_h, 480);
  bd_graph_destroy(g);
  /* Wrong anchor count: neither family. */
  const int64_t bad[1][3] = {{1, 3548, 85}};
  g = graph_with(in, 1, bad);
  bd_err e;
  assert_int_equal(bd_family_recognize(g, BD_FAMILY_AUTO, &fi, &e), BD_E_UNSUPPORTED);
  assert_non_null(strstr(e.msg, "neither"));
  bd_graph_destroy(g);
}

static void test_names(void **s) {
  (void)s;
  bd_family f;
  assert_int_equal(bd_family_parse("damo-yolo", &f), 0);
  assert_int_equal(f, BD_FAMILY_DAMOYOLO);
  assert_int_equal(bd_family_parse("yolov8", &f), -1);
  bd_detect_params p = {-1.f, -1.f, 0};
  bd_family_defaults(BD_FAMILY_DAMOYOLO, &p);
  assert_true(p.score_thr == 0.3f && p.iou_thr == 0.7f && p.max_det == 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resize_small), cmocka_unit_test(test_preprocess),
      cmocka_unit_test(test_post_yolox),   cmocka_unit_test(test_post_damo),
      cmocka_unit_test(test_recognize),    cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
