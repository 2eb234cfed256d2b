/* bd_family recognition by structure, where output shapes cannot tell (bd_family.h):
 *  - yolox graphs with the box decode inside (YOLOX's decode_in_inference) are told
 *    from raw ones: the standard decode in its usual and in rearranged forms sets
 *    boxes_decoded (and post-processing then takes the boxes as they are); a decode
 *    that is not this engine's (grid order, strides, half of it) is refused, never
 *    decoded a second time;
 *  - damoyolo with 4 classes (scores and boxes both [B,A,4]): the output made of
 *    Sigmoid / Softmax values is the scores one, in either output order.
 * The graphs are synthetic (64x64 input: 84 anchors); only their structure and
 * constants matter, nothing is run. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_family.h"
#include "bd_graph.h"

enum { S = 64, A = 84, C = 2, K = 5 + C };

static bd_graph *new_graph(void) {
  bd_graph *g = NULL;
  assert_int_equal(bd_graph_new(&g, NULL), BD_OK);
  const int64_t in[4] = {1, 3, S, S};
  int vi = bd_graph_add_value(g, "images", BD_DT_F32, 4, in);
  assert_true(vi >= 0);
  g->values[vi].is_input = 1;
  g->inputs[g->n_inputs++] = vi;
  return g;
}

/* A node of one [1,A,L] output. */
static int op(bd_graph *g, bd_op o, int n_in, const int *in, int64_t L) {
  const int64_t d[3] = {1, A, L};
  char nm[32];
  snprintf(nm, sizeof nm, "v%d", g->n_values);
  int v = bd_graph_add_value(g, nm, BD_DT_F32, 3, d);
  assert_true(v >= 0);
  assert_true(bd_graph_add_node(g, o, nm, n_in, in, 1, &v) >= 0);
  return v;
}

static int un(bd_graph *g, bd_op o, int x, int64_t L) {
  return op(g, o, 1, &x, L);
}

static int bin(bd_graph *g, bd_op o, int a, int b, int64_t L) {
  const int in[2] = {a, b};
  return op(g, o, 2, in, L);
}

static int slice(bd_graph *g, int x, int64_t s, int64_t e) {
  int v = un(g, BD_OP_SLICE, x, e - s);
  bd_slice_params *p = &g->nodes[g->values[v].producer].p.slice;
  p->n = 1, p->axes[0] = 2, p->starts[0] = s, p->ends[0] = e, p->steps[0] = 1;
  return v;
}

static int concat(bd_graph *g, int n, const int *in) {
  int64_t L = 0;
  for (int i = 0; i < n; i++) L += g->values[in[i]].dims[2];
  int v = op(g, BD_OP_CONCAT, n, in, L);
  g->nodes[g->values[v].producer].p.concat.axis = 2;
  return v;
}

/* A constant [1,A,L] (or a scalar when L == 0) with f(a, c) in it. */
static int konst(bd_graph *g, int64_t L, float (*f)(int a, int c)) {
  const int64_t d[3] = {1, A, L};
  int v = bd_graph_add_value(g, "k", BD_DT_F32, L ? 3 : 0, d);
  assert_true(v >= 0);
  float *x = malloc((size_t)A * (L ? L : 1) * sizeof *x);
  assert_non_null(x);
  for (int a = 0; a < (L ? A : 1); a++)
    for (int c = 0; c < (L ? L : 1); c++) x[a * (L ? L : 1) + c] = f(a, c);
  g->values[v].data = x;
  return v;
}

static void set_output(bd_graph *g, int v) {
  g->values[v].is_output = 1;
  g->outputs[g->n_outputs++] = v;
}

/* This engine's anchor order: strides 8, 16, 32, row-major cells. */
static void cell(int a, int *gx, int *gy, int *s) {
  *gx = *gy = 0, *s = 8;
  for (int l = 0; l < 3; l++) {
    const int st = 8 << l, n = (S / st) * (S / st);
    if (a < n) {
      *gx = a % (S / st), *gy = a / (S / st), *s = st;
      return;
    }
    a -= n;
  }
  fail();
}

static float f_grid(int a, int c) {
  int gx, gy, s;
  cell(a, &gx, &gy, &s);
  return (float)(c ? gy : gx);
}
static float f_grid_yx(int a, int c) { /* x and y swapped */
  return f_grid(a, 1 - c);
}
static float f_stride(int a, int c) {
  (void)c;
  int gx, gy, s;
  cell(a, &gx, &gy, &s);
  return (float)s;
}
static float f_inv_stride(int a, int c) {
  return 1.f / f_stride(a, c);
}
static float f_grid_stride(int a, int c) {
  return f_grid(a, c) * f_stride(a, c);
}
static float f_eight(int a, int c) {
  (void)a, (void)c;
  return 8.f;
}

typedef enum {
  V_RAW,         /* the head's output as it is */
  V_STD,         /* Concat[(xy + grid) * stride, exp(wh) * stride, rest] */
  V_COMMUTED,    /* constants first: stride * (grid + xy), stride * exp(wh) */
  V_DISTRIBUTED, /* xy * stride + grid * stride, exp(wh) / (1 / stride) */
  V_NESTED,      /* Identity(Concat[Concat[xy, wh], rest]) */
  V_GRID_YX,     /* grid as (gy, gx) */
  V_ONE_STRIDE,  /* a scalar stride 8 for every level */
  V_WH_ONLY,     /* xy left raw, wh decoded */
  V_NO_EXP,      /* wh * stride without the exp */
  V_RESHAPED,    /* the standard decode, then a Reshape to the same shape */
} variant;

static bd_graph *yolox_graph(variant v) {
  bd_graph *g = new_graph();
  int raw = un(g, BD_OP_SIGMOID, g->inputs[0], K); /* stands for the head */
  if (v == V_RAW) {
    set_output(g, raw);
    return g;
  }
  int xy = slice(g, raw, 0, 2), wh = slice(g, raw, 2, 4), rest = slice(g, raw, 4, K);
  int st = konst(g, 1, f_stride), xy2, wh2;
  switch (v) {
    case V_COMMUTED:
      xy2 = bin(g, BD_OP_MUL, st, bin(g, BD_OP_ADD, konst(g, 2, f_grid), xy, 2), 2);
      wh2 = bin(g, BD_OP_MUL, st, un(g, BD_OP_EXP, wh, 2), 2);
      break;
    case V_DISTRIBUTED:
      xy2 = bin(g, BD_OP_ADD, bin(g, BD_OP_MUL, xy, st, 2), konst(g, 2, f_grid_stride), 2);
      wh2 = bin(g, BD_OP_DIV, un(g, BD_OP_EXP, wh, 2), konst(g, 1, f_inv_stride), 2);
      break;
    case V_GRID_YX:
      xy2 = bin(g, BD_OP_MUL, bin(g, BD_OP_ADD, xy, konst(g, 2, f_grid_yx), 2), st, 2);
      wh2 = bin(g, BD_OP_MUL, un(g, BD_OP_EXP, wh, 2), st, 2);
      break;
    case V_ONE_STRIDE:
      st = konst(g, 0, f_eight);
      xy2 = bin(g, BD_OP_MUL, bin(g, BD_OP_ADD, xy, konst(g, 2, f_grid), 2), st, 2);
      wh2 = bin(g, BD_OP_MUL, un(g, BD_OP_EXP, wh, 2), st, 2);
      break;
    case V_WH_ONLY:
      xy2 = xy;
      wh2 = bin(g, BD_OP_MUL, un(g, BD_OP_EXP, wh, 2), st, 2);
      break;
    case V_NO_EXP:
      xy2 = bin(g, BD_OP_MUL, bin(g, BD_OP_ADD, xy, konst(g, 2, f_grid), 2), st, 2);
      wh2 = bin(g, BD_OP_MUL, wh, st, 2);
      break;
    default: /* V_STD, V_NESTED */
      xy2 = bin(g, BD_OP_MUL, bin(g, BD_OP_ADD, xy, konst(g, 2, f_grid), 2), st, 2);
      wh2 = bin(g, BD_OP_MUL, un(g, BD_OP_EXP, wh, 2), st, 2);
      break;
  }
  int out;
  if (v == V_RESHAPED) {
    const int all[3] = {xy2, wh2, rest};
    out = un(g, BD_OP_RESHAPE, concat(g, 3, all), K);
  } else if (v == V_NESTED) {
    const int box[2] = {xy2, wh2};
    const int all[2] = {concat(g, 2, box), rest};
    out = un(g, BD_OP_IDENTITY, concat(g, 2, all), K);
  } else {
    const int all[3] = {xy2, wh2, rest};
    out = concat(g, 3, all);
  }
  set_output(g, out);
  return g;
}

static void expect_decoded(variant v, int want) {
  bd_graph *g = yolox_graph(v);
  bd_family_info fi;
  bd_err e;
  for (int k = 0; k < 2; k++) {
    assert_int_equal(bd_family_recognize(g, k ? BD_FAMILY_YOLOX : BD_FAMILY_AUTO, &fi, &e), BD_OK);
    assert_int_equal(fi.family, BD_FAMILY_YOLOX);
    assert_int_equal(fi.num_anchors, A);
    assert_int_equal(fi.num_classes, C);
    assert_int_equal(fi.boxes_decoded, want);
  }
  bd_graph_destroy(g);
}

static void expect_refused(variant v) {
  bd_graph *g = yolox_graph(v);
  bd_family_info fi;
  bd_err e;
  for (int k = 0; k < 2; k++) {
    e.msg[0] = 0;
    assert_int_equal(bd_family_recognize(g, k ? BD_FAMILY_YOLOX : BD_FAMILY_AUTO, &fi, &e),
                     BD_E_UNSUPPORTED);
    printf("variant %d refused: %s\n", (int)v, e.msg);
    assert_non_null(strstr(e.msg, "decode"));
    assert_null(strstr(e.msg, "neither")); /* said as a yolox problem */
  }
  bd_graph_destroy(g);
}

static void test_yolox_decode_recognised(void **s) {
  (void)s;
  expect_decoded(V_RAW, 0);
  expect_decoded(V_STD, 1);
  expect_decoded(V_COMMUTED, 1);
  expect_decoded(V_DISTRIBUTED, 1);
  expect_decoded(V_NESTED, 1);
}

static void test_yolox_decode_refused(void **s) {
  (void)s;
  expect_refused(V_GRID_YX);
  expect_refused(V_ONE_STRIDE);
  expect_refused(V_WH_ONLY);
  expect_refused(V_NO_EXP);
  expect_refused(V_RESHAPED);
}

/* With boxes_decoded, post-processing takes cx, cy, w, h as they are: the same
 * detections as the grid decode of the raw values they came from. */
static void test_post_decoded(void **s) {
  (void)s;
  float raw[A * K], dec[A * K];
  for (int a = 0; a < A; a++) {
    float *r = raw + a * K;
    r[0] = 0.25f + 0.01f * (float)(a % 7), r[1] = 0.5f - 0.02f * (float)(a % 5);
    r[2] = logf(1.f + 0.1f * (float)(a % 11)), r[3] = logf(0.5f + 0.2f * (float)(a % 3));
    r[4] = a % 3 ? 0.9f : 0.2f;
    r[5] = (float)(a % 10) / 10.f, r[6] = 1.f - r[5];
    int gx, gy, st;
    cell(a, &gx, &gy, &st);
    float *q = dec + a * K;
    memcpy(q, r, sizeof(float) * K);
    q[0] = (r[0] + (float)gx) * (float)st, q[1] = (r[1] + (float)gy) * (float)st;
    q[2] = expf(r[2]) * (float)st, q[3] = expf(r[3]) * (float)st;
  }
  bd_family_info fi = {.family = BD_FAMILY_YOLOX,
                       .in_h = S,
                       .in_w = S,
                       .num_classes = C,
                       .num_anchors = A,
                       .out_main = 0};
  bd_prep_info pi = {.orig_w = 100, .orig_h = 80, .ratio = 0.64};
  bd_detect_params p = {-1.f, -1.f, 0};
  const float *o_raw[1] = {raw}, *o_dec[1] = {dec};
  bd_detections want, got, wrong;
  assert_int_equal(bd_family_postprocess(&fi, o_raw, &pi, &p, &want, NULL), BD_OK);
  fi.boxes_decoded = 1;
  assert_int_equal(bd_family_postprocess(&fi, o_dec, &pi, &p, &got, NULL), BD_OK);
  assert_true(want.n > 2);
  assert_int_equal(got.n, want.n);
  assert_memory_equal(got.det, want.det, (size_t)want.n * sizeof *want.det);
  /* Decoding twice (the bug this guards against) gives other boxes. */
  fi.boxes_decoded = 0;
  assert_int_equal(bd_family_postprocess(&fi, o_dec, &pi, &p, &wrong, NULL), BD_OK);
  assert_true(wrong.n != want.n ||
              memcmp(wrong.det, want.det, (size_t)want.n * sizeof *want.det) != 0);
  bd_detections_free(&want), bd_detections_free(&got), bd_detections_free(&wrong);
}

/* ---- damoyolo, 4 classes ---- */

typedef enum { D_SIGMOID, D_CONV_SIGMOID, D_PLAIN } score_kind;

/* scores [1,A,4] and boxes [1,A,4]; outputs in the order given. */
static bd_graph *damo_graph(int boxes_first, score_kind sk) {
  bd_graph *g = new_graph();
  int sc;
  if (sk == D_CONV_SIGMOID) { /* conv + fused sigmoid, reshaped and transposed per level */
    int lv[3];
    for (int l = 0; l < 3; l++) {
      int c = un(g, BD_OP_CONV, g->inputs[0], 4);
      g->nodes[g->values[c].producer].p.conv.act = BD_ACT_SIGMOID;
      lv[l] = un(g, BD_OP_TRANSPOSE, un(g, BD_OP_RESHAPE, c, 4), 4);
    }
    sc = op(g, BD_OP_CONCAT, 3, lv, 4); /* on the anchor axis */
    g->nodes[g->values[sc].producer].p.concat.axis = 1;
  } else if (sk == D_SIGMOID) {
    sc = un(g, BD_OP_SIGMOID, un(g, BD_OP_TRANSPOSE, g->inputs[0], 4), 4);
  } else {
    sc = un(g, BD_OP_TRANSPOSE, g->inputs[0], 4);
  }
  /* boxes: distances (themselves a sigmoid here, as in the tiny contract model) turned
   * into corners around anchor points */
  int d = un(g, BD_OP_SIGMOID, un(g, BD_OP_TRANSPOSE, g->inputs[0], 4), 4);
  int bx = bin(g, BD_OP_ADD, bin(g, BD_OP_MUL, d, konst(g, 0, f_eight), 4),
               konst(g, 4, f_grid_stride), 4);
  set_output(g, boxes_first ? bx : sc);
  set_output(g, boxes_first ? sc : bx);
  return g;
}

static void expect_scores_at(int boxes_first, score_kind sk, int want) {
  bd_graph *g = damo_graph(boxes_first, sk);
  bd_family_info fi;
  bd_err e;
  for (int k = 0; k < 2; k++) {
    assert_int_equal(bd_family_recognize(g, k ? BD_FAMILY_DAMOYOLO : BD_FAMILY_AUTO, &fi, &e),
                     BD_OK);
    assert_int_equal(fi.family, BD_FAMILY_DAMOYOLO);
    assert_int_equal(fi.num_classes, 4);
    assert_int_equal(fi.out_scores, want);
    assert_int_equal(fi.out_boxes, 1 - want);
  }
  bd_graph_destroy(g);
}

static void test_damo_c4_order(void **s) {
  (void)s;
  expect_scores_at(0, D_SIGMOID, 0);
  expect_scores_at(1, D_SIGMOID, 1);
  expect_scores_at(0, D_CONV_SIGMOID, 0);
  expect_scores_at(1, D_CONV_SIGMOID, 1);
  /* Nothing tells them apart: the exporter's order, scores first. */
  expect_scores_at(0, D_PLAIN, 0);
  expect_scores_at(1, D_PLAIN, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_yolox_decode_recognised),
      cmocka_unit_test(test_yolox_decode_refused),
      cmocka_unit_test(test_post_decoded),
      cmocka_unit_test(test_damo_c4_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
