/* GPU post-processing (bd_cuda_post_*) against the family code (bd_family_postprocess +
 * bd_nms), the independent reference. Run as `test_cuda_post ref` it checks the CPU
 * twins (bit-exact: same arithmetic); without an argument it checks the kernels
 * (same detections, boxes within 1e-3, scores within 1e-5) and skips with exit 77 when
 * there is no GPU. The kernels take the candidates in rounds of topk: with more than
 * topk candidates (many rounds here: small topk, low thresholds, ties at the round
 * edges) they must still give the family's result, every box of it. Built with TEST_POST_EMU
 * (test_cuda_post_emu) it runs the kernels' code on the host emulation of the kernels
 * (tests/gpu/kemu.cmake), bit-exact against the family like the twins; with the argument
 * `gpu` (test_cuda_post_kemu) it takes the GPU path over the emulated runtime instead
 * (device buffers, a captured graph launched).
 * Inputs: uniform random outputs (many candidates, many rounds), clustered boxes with
 * sigmoid-like scores (an NMS workload), score ties, and yolox_nano's real outputs on a
 * photo (BD_TEST_PPM, else a synthetic picture) run by the cpu engine. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_cuda_post.h"
#include "bd_engine.h"
#include "test_cuda_common.h"
#include "test_images.h"

enum { M_REF, M_EMU, M_GPU };
static int mode;

/* ---- the reference: the family code ---- */

/* How many candidates an image has (a round holds topk of them). */
static int n_cands(const float *s, int m, float thr, int strict) {
  int n = 0;
  for (int i = 0; i < m; i++) n += strict ? s[i] > thr : s[i] >= thr;
  return n;
}

static void yolox_scores(const float *raw, int A, int C, float *s) {
  for (int a = 0; a < A; a++) {
    const float *r = raw + (size_t)a * (5 + C);
    int best = 0;
    for (int c = 1; c < C; c++)
      if (r[5 + c] > r[5 + best]) best = c;
    s[a] = r[4] * r[5 + best];
  }
}

/* Compares image b's rows with the family's detections; returns mismatches. */
static int cmp_dets(const char *what, const float *dets, int count, const bd_detections *want,
                    float box_tol, float score_tol) {
  int bad = 0;
  if (count != want->n) {
    printf("%s: %d detections, family %d\n", what, count, want->n);
    return 1;
  }
  for (int k = 0; k < count; k++) {
    const float *o = dets + (size_t)k * 6;
    const bd_det *d = &want->det[k];
    const float w[4] = {d->x1, d->y1, d->x2, d->y2};
    int ok = (int)o[5] == d->cls && fabsf(o[4] - d->score) <= score_tol;
    for (int j = 0; j < 4; j++) ok = ok && fabsf(o[j] - w[j]) <= box_tol;
    if (!ok && bad++ < 3)
      printf("%s[%d]: got (%g %g %g %g s %g c %g) want (%g %g %g %g s %g c %d)\n", what, k, o[0],
             o[1], o[2], o[3], o[4], o[5], w[0], w[1], w[2], w[3], d->score, d->cls);
  }
  return bad;
}

/* ---- running the pipeline under test: kernels (also once through a CUDA graph) or twins ---- */

/* The yolox decode (workspace read back to the host) against its twin: scores exact,
 * boxes to the device expf's ulps. */
static void check_decode(const float *raw, int n, int H, int W, int C, int dec, int A,
                         const char *ws) {
  float *sc = malloc((size_t)n * A * 4), *bx = malloc((size_t)n * A * 16);
  int *cl = malloc((size_t)n * A * 4);
  assert_int_equal(bd_cuda_post_ref_yolox_decode(raw, n, H, W, C, dec, sc, bx, cl), 0);
  size_t per = ((size_t)n * A * 4 + 255) / 256 * 256;
  assert_int_equal(tc_compare("decode score", (const float *)ws, sc, (size_t)n * A, 0, 0), 0);
  assert_int_equal(tc_compare("decode box", (const float *)(ws + per), bx, (size_t)n * A * 4,
                              mode == M_GPU ? 1e-3f : 0.f, mode == M_GPU ? 1e-6f : 0.f),
                   0);
  assert_memory_equal(cl, ws + 5 * per, (size_t)n * A * 4);
  free(sc), free(bx), free(cl);
}

static void run_yolox(const float *raw, int n, int H, int W, int C, int dec,
                      const bd_cuda_post_desc *d, int topk, int cap, float *dets, int *counts) {
  const int A = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  if (mode == M_REF) {
    assert_int_equal(bd_cuda_post_ref_yolox(raw, n, H, W, C, dec, d, topk, cap, dets, counts), 0);
    return;
  }
  size_t rb = (size_t)n * A * (5 + C) * 4, wsb = bd_cuda_post_workspace_bytes(1, n, A);
  char *hws = aligned_alloc(256, (wsb + 255) / 256 * 256);
  assert_non_null(hws);
  if (mode == M_EMU) {
    memset(dets, 0xFF, (size_t)n * cap * 6 * 4); /* NaN: rows the kernel forgot fail */
    memset(counts, 0xFF, (size_t)n * 4);
    assert_int_equal(bd_cuda_post_yolox(raw, n, H, W, C, dec, d, topk, cap, hws, dets, counts, 0),
                     cudaSuccess);
    check_decode(raw, n, H, W, C, dec, A, hws);
    free(hws);
    return;
  }
  void *draw = tc_dev_copy(raw, rb), *dd = tc_dev_copy(d, (size_t)n * sizeof *d), *ws = NULL;
  void *dout = tc_dev_poisoned((size_t)n * cap * 6 * 4), *dcnt = tc_dev_poisoned((size_t)n * 4);
  assert_int_equal(cudaMalloc(&ws, wsb), cudaSuccess);
  cudaStream_t s;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  /* Captured into a graph and replayed: the launchers must be capture-safe. */
  assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  assert_int_equal(bd_cuda_post_yolox(draw, n, H, W, C, dec, dd, topk, cap, ws, dout, dcnt, s),
                   cudaSuccess);
  assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
  assert_int_equal(cudaGraphInstantiate(&ge, g, 0), cudaSuccess);
  assert_int_equal(cudaGraphLaunch(ge, s), cudaSuccess);
  assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
  assert_int_equal(cudaMemcpy(dets, dout, (size_t)n * cap * 6 * 4, cudaMemcpyDeviceToHost),
                   cudaSuccess);
  assert_int_equal(cudaMemcpy(counts, dcnt, (size_t)n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  assert_int_equal(cudaMemcpy(hws, ws, wsb, cudaMemcpyDeviceToHost), cudaSuccess);
  check_decode(raw, n, H, W, C, dec, A, hws);
  free(hws);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(draw), cudaFree(dd), cudaFree(ws), cudaFree(dout), cudaFree(dcnt);
}

static void run_damo(const float *scores, const float *boxes, int n, int A, int C,
                     const bd_cuda_post_desc *d, int topk, int cap, float *dets, int *counts) {
  if (mode == M_REF) {
    assert_int_equal(bd_cuda_post_ref_damo(scores, boxes, n, A, C, d, topk, cap, dets, counts), 0);
    return;
  }
  if (mode == M_EMU) {
    memset(dets, 0xFF, (size_t)n * cap * 6 * 4);
    memset(counts, 0xFF, (size_t)n * 4);
    assert_int_equal(bd_cuda_post_damo(scores, boxes, n, A, C, d, topk, cap, dets, counts, 0),
                     cudaSuccess);
    return;
  }
  void *ds = tc_dev_copy(scores, (size_t)n * A * C * 4),
       *db = tc_dev_copy(boxes, (size_t)n * A * 16);
  void *dd = tc_dev_copy(d, (size_t)n * sizeof *d);
  void *dout = tc_dev_poisoned((size_t)n * cap * 6 * 4), *dcnt = tc_dev_poisoned((size_t)n * 4);
  assert_int_equal(bd_cuda_post_damo(ds, db, n, A, C, dd, topk, cap, dout, dcnt, 0), cudaSuccess);
  assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
  assert_int_equal(cudaMemcpy(dets, dout, (size_t)n * cap * 6 * 4, cudaMemcpyDeviceToHost),
                   cudaSuccess);
  assert_int_equal(cudaMemcpy(counts, dcnt, (size_t)n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(ds), cudaFree(db), cudaFree(dd), cudaFree(dout), cudaFree(dcnt);
}

static float box_tol(void) {
  return mode == M_GPU ? 1e-3f : 0.f;
}
static float score_tol(void) {
  return mode == M_GPU ? 1e-5f : 0.f;
}

/* ---- yolox ---- */

static bd_cuda_post_desc desc_for(float thr, float iou, int max_det, int ow, int oh, double r,
                                  float sx, float sy) {
  bd_cuda_post_desc d = {thr, iou, max_det, ow, oh, (float)r, sx, sy};
  return d;
}

/* Checks n yolox images of raw [n][A][5+C] against the family code. dec: the boxes were
 * decoded by the graph (bd_family_info.boxes_decoded). */
static void check_yolox(const float *raw, int n, int H, int W, int C, int dec,
                        const bd_cuda_post_desc *d, int topk, int cap) {
  const int A = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  float *dets = malloc((size_t)n * cap * 6 * 4);
  int *counts = malloc((size_t)n * sizeof *counts);
  run_yolox(raw, n, H, W, C, dec, d, topk, cap, dets, counts);
  float *s = malloc((size_t)A * 4);
  bd_family_info fi = {BD_FAMILY_YOLOX, H, W, C, A, 0, -1, -1, dec};
  int bad = 0;
  for (int b = 0; b < n; b++) {
    const float *row = raw + (size_t)b * A * (5 + C);
    yolox_scores(row, A, C, s);
    const int nc = n_cands(s, A, d[b].score_thr, 0);
    bd_prep_info pi = {.orig_w = d[b].orig_w, .orig_h = d[b].orig_h, .ratio = d[b].ratio};
    bd_detect_params p = {d[b].score_thr, d[b].iou_thr, d[b].max_det < cap ? d[b].max_det : cap};
    bd_detections want = {0};
    const float *outs[1] = {row};
    bd_err err;
    assert_int_equal(bd_family_postprocess(&fi, outs, &pi, &p, &want, &err), BD_OK);
    char what[64];
    snprintf(what, sizeof what, "yolox img %d (%d candidates, up to %d rounds)", b, nc,
             (nc + topk - 1) / topk);
    printf("%s: %d detections\n", what, want.n);
    bad += cmp_dets(what, dets + (size_t)b * cap * 6, counts[b], &want, box_tol(), score_tol());
    for (int k = counts[b] * 6; k < cap * 6; k++) bad += dets[(size_t)b * cap * 6 + k] != 0.f;
    bd_detections_free(&want);
  }
  assert_int_equal(bad, 0);
  free(s), free(dets), free(counts);
}

static void fill_yolox_random(float *raw, int A, int C, float obj_hi) {
  for (int a = 0; a < A; a++) {
    float *r = raw + (size_t)a * (5 + C);
    r[0] = tc_uniform(-0.5f, 1.5f), r[1] = tc_uniform(-0.5f, 1.5f);
    r[2] = tc_uniform(-1.f, 2.5f), r[3] = tc_uniform(-1.f, 2.5f);
    r[4] = tc_uniform(0.f, obj_hi);
    for (int c = 0; c < C; c++) r[5 + c] = tc_uniform(0.f, 1.f);
  }
}

static void test_yolox_random(void **state) {
  (void)state;
  enum { H = 256, W = 320, C = 80, N = 3 };
  const int A = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  float *raw = malloc((size_t)N * A * (5 + C) * 4);
  /* image 0: nearly every anchor a candidate (many rounds); 1: few; 2: ties of scores. */
  fill_yolox_random(raw, A, C, 1.f);
  fill_yolox_random(raw + (size_t)A * (5 + C), A, C, 0.4f);
  fill_yolox_random(raw + (size_t)2 * A * (5 + C), A, C, 1.f);
  for (int a = 0; a < A; a++) {
    float *r = raw + ((size_t)2 * A + a) * (5 + C);
    r[4] = 0.5f + 0.125f * (a % 4); /* a few distinct objectness values */
    for (int c = 0; c < C; c++) r[5 + c] = c == a % 7 ? 1.f : 0.25f;
  }
  bd_cuda_post_desc d[N] = {desc_for(0.3f, 0.45f, 100, 640, 512, 0.5, 0, 0),
                            desc_for(0.3f, 0.45f, 100, 123, 77, 320.0 / 1000, 0, 0),
                            desc_for(0.25f, 0.3f, 300, 320, 256, 1.0, 0, 0)};
  check_yolox(raw, N, H, W, C, 0, d, BD_CUDA_POST_DEFAULT_TOPK, 300);
  free(raw);
}

/* raw -> what a graph with the decode inside outputs: (xy + grid) * stride,
 * exp(wh) * stride, scores as they are (float, as the graph's Add, Mul and Exp). */
static void graph_decode(const float *raw, float *dec, int n, int H, int W, int C) {
  const int A = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  for (int b = 0; b < n; b++) {
    int a = 0;
    for (int s = 8; s <= 32; s *= 2)
      for (int gy = 0; gy < H / s; gy++)
        for (int gx = 0; gx < W / s; gx++, a++) {
          const size_t o = ((size_t)b * A + a) * (5 + C);
          const float *r = raw + o;
          float *q = dec + o;
          memcpy(q, r, (size_t)(5 + C) * 4);
          q[0] = (r[0] + (float)gx) * (float)s, q[1] = (r[1] + (float)gy) * (float)s;
          q[2] = expf(r[2]) * (float)s, q[3] = expf(r[3]) * (float)s;
        }
  }
}

/* The family on graph-decoded outputs (boxes_decoded) gives what it gives on raw ones. */
static void same_as_undecoded(const float *raw, const float *dec, int H, int W, int C, int A,
                              const bd_cuda_post_desc *d, int n) {
  bd_family_info fr = {BD_FAMILY_YOLOX, H, W, C, A, 0, -1, -1, 0}, fd = fr;
  fd.boxes_decoded = 1;
  for (int b = 0; b < n; b++) {
    bd_prep_info pi = {.orig_w = d[b].orig_w, .orig_h = d[b].orig_h, .ratio = d[b].ratio};
    bd_detect_params p = {d[b].score_thr, d[b].iou_thr, d[b].max_det};
    bd_detections wr = {0}, wd = {0};
    const float *o_r[1] = {raw + (size_t)b * A * (5 + C)},
                *o_d[1] = {dec + (size_t)b * A * (5 + C)};
    bd_err err;
    assert_int_equal(bd_family_postprocess(&fr, o_r, &pi, &p, &wr, &err), BD_OK);
    assert_int_equal(bd_family_postprocess(&fd, o_d, &pi, &p, &wd, &err), BD_OK);
    assert_true(wr.n > 0);
    assert_int_equal(wr.n, wd.n);
    assert_memory_equal(wr.det, wd.det, (size_t)wr.n * sizeof *wr.det);
    bd_detections_free(&wr), bd_detections_free(&wd);
  }
}

static void test_yolox_decoded(void **state) {
  (void)state;
  enum { H = 256, W = 320, C = 80, N = 2 };
  const int A = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  float *raw = malloc((size_t)N * A * (5 + C) * 4), *dec = malloc((size_t)N * A * (5 + C) * 4);
  fill_yolox_random(raw, A, C, 1.f);
  fill_yolox_random(raw + (size_t)A * (5 + C), A, C, 0.4f);
  graph_decode(raw, dec, N, H, W, C);
  bd_cuda_post_desc d[N] = {desc_for(0.3f, 0.45f, 100, 640, 512, 0.5, 0, 0),
                            desc_for(0.3f, 0.45f, 100, 123, 77, 320.0 / 1000, 0, 0)};
  check_yolox(dec, N, H, W, C, 1, d, BD_CUDA_POST_DEFAULT_TOPK, 300);
  same_as_undecoded(raw, dec, H, W, C, A, d, N);
  free(raw), free(dec);
}

static void test_yolox_real(void **state) {
  (void)state;
  char model[1024];
  const char *dd = getenv("BD_TEST_DATA");
  snprintf(model, sizeof model, "%s/models/yolox_nano.onnx", dd ? dd : "../shared/data");
  bd_engine *e = NULL;
  bd_err err;
  bd_engine_opts o = {.device = "cpu", .threads = 2, .max_batch = 1};
  assert_int_equal(bd_engine_load(model, &o, &e, &err), BD_OK);
  bd_image im = {0};
  if (!tim_read_ppm(getenv("BD_TEST_PPM"), &im)) {
    bd_image_free(&im);
    im.w = 500, im.h = 375, im.data = malloc((size_t)500 * 375 * 3);
    for (int i = 0; i < 500 * 375 * 3; i++)
      im.data[i] = (uint8_t)(127 + 100 * sin(0.01 * i) * cos(0.0003 * i));
  }
  int c, H, W;
  bd_engine_input_chw(e, &c, &H, &W);
  const int A = bd_engine_family(e)->num_anchors, C = bd_engine_family(e)->num_classes;
  float *in = malloc((size_t)c * H * W * 4), *raw = malloc((size_t)2 * A * (5 + C) * 4);
  bd_prep_info pi;
  assert_int_equal(bd_engine_preprocess(e, &im, in, &pi, &err), BD_OK);
  float *outs[1] = {raw};
  assert_int_equal(bd_engine_run_raw(e, 1, in, outs, &err), BD_OK);
  memcpy(raw + (size_t)A * (5 + C), raw, (size_t)A * (5 + C) * 4);
  /* The family defaults, and a low threshold with small rounds (many of them). */
  bd_cuda_post_desc d[2] = {desc_for(0.3f, 0.45f, 100, im.w, im.h, pi.ratio, 0, 0),
                            desc_for(0.001f, 0.45f, 100, im.w, im.h, pi.ratio, 0, 0)};
  check_yolox(raw, 2, H, W, C, 0, d, 200, 100);
  /* The same outputs decoded as a graph with YOLOX's decode_in_inference would: */
  float *dec = malloc((size_t)2 * A * (5 + C) * 4);
  graph_decode(raw, dec, 2, H, W, C);
  check_yolox(dec, 2, H, W, C, 1, d, 200, 100);
  same_as_undecoded(raw, dec, H, W, C, A, d, 2);
  free(dec);
  free(in), free(raw);
  bd_image_free(&im);
  bd_engine_destroy(e);
}

/* ---- damoyolo ---- */

static void check_damo(const float *scores, const float *boxes, int n, int A, int C,
                       const bd_cuda_post_desc *d, int topk, int cap) {
  float *dets = malloc((size_t)n * cap * 6 * 4);
  int *counts = malloc((size_t)n * sizeof *counts);
  run_damo(scores, boxes, n, A, C, d, topk, cap, dets, counts);
  bd_family_info fi = {BD_FAMILY_DAMOYOLO, 64, 64, C, A, -1, 0, 1, 0};
  int bad = 0;
  for (int b = 0; b < n; b++) {
    const float *srow = scores + (size_t)b * A * C;
    const int nc = n_cands(srow, A * C, d[b].score_thr, 1);
    bd_prep_info pi = {.orig_w = d[b].orig_w,
                       .orig_h = d[b].orig_h,
                       .scale_x = d[b].scale_x,
                       .scale_y = d[b].scale_y};
    bd_detect_params p = {d[b].score_thr, d[b].iou_thr, d[b].max_det < cap ? d[b].max_det : cap};
    bd_detections want = {0};
    const float *outs[2] = {srow, boxes + (size_t)b * A * 4};
    bd_err err;
    assert_int_equal(bd_family_postprocess(&fi, outs, &pi, &p, &want, &err), BD_OK);
    for (int i = 0; i < want.n; i++) assert_true(isfinite(want.det[i].score));
    char what[64];
    snprintf(what, sizeof what, "damo img %d (%d candidates, up to %d rounds)", b, nc,
             (nc + topk - 1) / topk);
    printf("%s: %d detections\n", what, want.n);
    bad += cmp_dets(what, dets + (size_t)b * cap * 6, counts[b], &want, box_tol(), score_tol());
    bd_detections_free(&want);
  }
  assert_int_equal(bad, 0);
  free(dets), free(counts);
}

/* Clusters: a few objects, each seen by many anchors as jittered boxes with scores that
 * peak on one or two classes (multi-label), the rest low background. */
static void fill_damo(float *scores, float *boxes, int A, int C, int objects, int uniform) {
  float obj[32][4];
  for (int k = 0; k < objects; k++) {
    float x = tc_uniform(0, 500), y = tc_uniform(0, 500);
    obj[k][0] = x, obj[k][1] = y, obj[k][2] = x + tc_uniform(10, 140),
    obj[k][3] = y + tc_uniform(10, 140);
  }
  for (int a = 0; a < A; a++) {
    float *b = boxes + (size_t)a * 4, *s = scores + (size_t)a * C;
    const int k = a % objects;
    for (int j = 0; j < 4; j++) b[j] = obj[k][j] + tc_uniform(-12.f, 12.f);
    for (int c = 0; c < C; c++) {
      float v = uniform ? tc_uniform(0, 1) : tc_uniform(0, 0.045f);
      if (!uniform && (c == (k * 7) % C || c == (k * 13 + 1) % C) && (a / objects) % 3 == 0)
        v = tc_uniform(0.2f, 0.95f);
      s[c] = v;
    }
  }
}

static void test_damo(void **state) {
  (void)state;
  enum { A = 2100, C = 80, N = 3 };
  float *scores = malloc((size_t)N * A * C * 4), *boxes = malloc((size_t)N * A * 16);
  fill_damo(scores, boxes, A, C, 12, 0);                                /* NMS workload */
  fill_damo(scores + (size_t)A * C, boxes + (size_t)A * 4, A, C, 5, 1); /* many rounds */
  fill_damo(scores + (size_t)2 * A * C, boxes + (size_t)2 * A * 4, A, C, 20, 0);
  for (int i = 0; i < A * C; i += 3) scores[(size_t)2 * A * C + i] = 0.5f; /* ties */
  /* a broken model's scores: +Inf and NaN are no detections, on either side */
  scores[5] = INFINITY, scores[17] = NAN, scores[(size_t)A * C + 40] = INFINITY;
  scores[(size_t)2 * A * C + 3] = -INFINITY;
  bd_cuda_post_desc d[N] = {desc_for(0.05f, 0.7f, 100, 810, 1080, 0, 810.f / 640, 1080.f / 640),
                            desc_for(0.3f, 0.65f, 500, 640, 640, 0, 1.f, 1.f),
                            desc_for(0.3f, 0.7f, 50, 100, 90, 0, 100.f / 640, 90.f / 640)};
  check_damo(scores, boxes, N, A, C, d, BD_CUDA_POST_DEFAULT_TOPK, 500);
  free(scores), free(boxes);
}

/* Rounds with exact ties at their edges, and NMS walking every round (disjoint boxes,
 * max_det above topk): each round must continue exactly after the previous one's last
 * (score, index), none skipped, none taken twice. */
static void test_ties_at_rounds(void **state) {
  (void)state;
  enum { A = 300, C = 4, TOPK = 64 };
  float *scores = malloc((size_t)A * C * 4), *boxes = malloc((size_t)A * 16);
  for (int a = 0; a < A; a++) {
    float x = (float)(a % 20) * 30.f, y = (float)(a / 20) * 30.f;
    boxes[a * 4 + 0] = x, boxes[a * 4 + 1] = y, boxes[a * 4 + 2] = x + 20,
                  boxes[a * 4 + 3] = y + 20;
    for (int c = 0; c < C; c++)
      scores[a * C + c] = c == a % C ? 0.5f : (c == 3 && a % 50 == 0 ? 0.9f : 0.f);
  }
  bd_cuda_post_desc d[1] = {desc_for(0.3f, 0.5f, 200, 640, 480, 0, 1.f, 1.f)};
  check_damo(scores, boxes, 1, A, C, d, TOPK, 200);
  free(scores), free(boxes);
  /* yolox: one-hot classes and objectness 1 tie every anchor at 0.5; boxes half a cell. */
  enum { H = 64, W = 64, YC = 3 };
  const int YA = (H / 8) * (W / 8) + (H / 16) * (W / 16) + (H / 32) * (W / 32);
  float *raw = calloc((size_t)YA * (5 + YC), 4);
  for (int a = 0; a < YA; a++) {
    float *r = raw + (size_t)a * (5 + YC);
    r[0] = r[1] = 0.5f;
    r[2] = r[3] = logf(0.5f);
    r[4] = 1.f;
    r[5 + a % YC] = a % 9 == 4 ? 0.75f : 0.5f;
  }
  bd_cuda_post_desc yd[1] = {desc_for(0.3f, 0.45f, 200, 64, 64, 1.0, 0, 0)};
  check_yolox(raw, 1, H, W, YC, 0, yd, 20, 200);
  free(raw);
}

/* Rounds that must see the boxes kept before them: clustered boxes (an NMS workload),
 * small rounds and max_det above the survivors, so that every round runs and most of a
 * later round's candidates are suppressed by boxes kept in an earlier one. */
static void test_rounds_suppress(void **state) {
  (void)state;
  enum { A = 2100, C = 80, N = 2 };
  float *scores = malloc((size_t)N * A * C * 4), *boxes = malloc((size_t)N * A * 16);
  fill_damo(scores, boxes, A, C, 12, 0);
  fill_damo(scores + (size_t)A * C, boxes + (size_t)A * 4, A, C, 3, 0);
  bd_cuda_post_desc d[N] = {desc_for(0.05f, 0.6f, 1000, 640, 640, 0, 1.f, 1.f),
                            desc_for(0.2f, 0.5f, 1000, 320, 200, 0, 0.5f, 0.3125f)};
  check_damo(scores, boxes, N, A, C, d, 64, 1000);
  free(scores), free(boxes);
}

static void test_args(void **state) {
  (void)state;
  bd_cuda_post_desc d = desc_for(0.3f, 0.45f, 10, 10, 10, 1, 1, 1);
  float x = 0;
  int cnt;
  assert_int_equal(bd_cuda_post_ref_damo(&x, &x, 1, 1, 1, &d, 0, 10, &x, &cnt), -1);
  assert_int_equal(
      bd_cuda_post_ref_damo(&x, &x, 1, 1, 1, &d, BD_CUDA_POST_MAX_TOPK + 1, 10, &x, &cnt), -1);
  assert_int_equal(bd_cuda_post_ref_yolox(&x, 1, 16, 64, 80, 0, &d, 10, 10, &x, &cnt), -1);
  if (mode != M_REF) {
    assert_int_equal(bd_cuda_post_damo(NULL, NULL, 1, 1, 1, NULL, 2000, 10, NULL, NULL, 0),
                     cudaErrorInvalidValue);
    assert_int_equal(
        bd_cuda_post_yolox(NULL, 1, 64, 64, 80, 0, NULL, 10, 10, (void *)4, NULL, NULL, 0),
        cudaErrorInvalidValue);
  }
  assert_true(bd_cuda_post_workspace_bytes(1, 2, 100) >= 2 * 100 * 24);
  assert_int_equal(bd_cuda_post_workspace_bytes(0, 2, 100), 0);
}

int main(int argc, char **argv) {
#ifdef TEST_POST_EMU
  mode = argc > 1 && strcmp(argv[1], "gpu") == 0 ? M_GPU : M_EMU;
#else
  mode = argc > 1 && strcmp(argv[1], "ref") == 0 ? M_REF : M_GPU;
  if (mode == M_GPU) TC_SKIP_IF_NO_DEVICE();
#endif
  tc_seed();
  printf("checking the %s\n", mode == M_GPU   ? "CUDA kernels"
                              : mode == M_EMU ? "kernels on the host emulation"
                                              : "CPU twins");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_args),           cmocka_unit_test(test_yolox_random),
      cmocka_unit_test(test_yolox_decoded),  cmocka_unit_test(test_yolox_real),
      cmocka_unit_test(test_damo),           cmocka_unit_test(test_ties_at_rounds),
      cmocka_unit_test(test_rounds_suppress)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
