/* Convolution layers of the cuda backend (cuDNN path with our epilogue, cuDNN's fused
 * bias + activation, channel-padded layers, our direct kernel) against a CPU convolution
 * written here in double precision on the same 16-bit inputs. Output buffers are
 * poisoned before each run; with pitches (x and y channel slices of wider tensors) the
 * channels around y's must stay poisoned. Skips (exit 77) without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_cuda_internal.h"
#include "bd_graph.h"
#include "test_cuda_common.h"

typedef struct {
  int c, m, h, w, k, s, group, pt, pl, pb, pr, act, res;
  int ldx, ldy; /* pixel pitches of x and y, 0 = packed (Concat pieces in place) */
  int xzero;    /* x's channels c..ldx-1 hold zeros the layer may rely on (no copy) */
  int ldr;      /* pixel pitch of the residual (a Concat piece), 0 = packed */
  int rup;      /* > 1: the residual read upsampled (OH/rup x OW/rup pixels) */
} conv_case;

static float act_f(double v, int act) {
  switch (act) {
  case BD_ACT_RELU: return (float)(v > 0 ? v : 0);
  case BD_ACT_SIGMOID: return (float)(1 / (1 + exp(-v)));
  case BD_ACT_SILU: return (float)(v / (1 + exp(-v)));
  default: return (float)v;
  }
}

/* The layer shape of case cc at batch 2 (run_case's N). */
static bd_cuda_conv_shape case_shape(const conv_case *cc) {
  const int oh = (cc->h + cc->pt + cc->pb - cc->k) / cc->s + 1;
  const int ow = (cc->w + cc->pl + cc->pr - cc->k) / cc->s + 1;
  return (bd_cuda_conv_shape){2, cc->h, cc->w, cc->c, oh, ow, cc->m, cc->k, cc->k, cc->s,
                              cc->s, 1, 1, cc->pt, cc->pl, cc->group, cc->act, cc->res,
                              cc->ldx, cc->ldy, cc->xzero, cc->ldr, 0, 0, NULL, cc->rup, NULL, 0, 0, 0};
}

/* use_direct: 1 our direct kernel, 0 the layer (cuDNN or ours as the mode decides),
 * 2 + t our tensor-core kernel on block tile t (bd_cuda_conv_mma_tiled). */
static void run_case(const conv_case *cc, int use_direct) {
  const int N = 2, cg = cc->c / cc->group, mg = cc->m / cc->group;
  const int OH = (cc->h + cc->pt + cc->pb - cc->k) / cc->s + 1;
  const int OW = (cc->w + cc->pl + cc->pr - cc->k) / cc->s + 1;
  size_t nx = (size_t)N * cc->h * cc->w * cc->c, nw = (size_t)cc->m * cc->k * cc->k * cg;
  size_t ny = (size_t)N * OH * OW * cc->m;
  const int ldx = cc->ldx ? cc->ldx : cc->c, ldy = cc->ldy ? cc->ldy : cc->m;
  const int ldr = cc->ldr ? cc->ldr : cc->m, f = cc->rup > 1 ? cc->rup : 1;
  const int RH = OH / f, RW = OW / f; /* the residual's grid */
  const size_t npx = (size_t)N * cc->h * cc->w, npy = (size_t)N * OH * OW;
  const size_t npr = (size_t)N * RH * RW, nr = npr * cc->m;
  uint16_t *xb = malloc(nx * 2), *wb = malloc(nw * 2), *rb = malloc(nr * 2);
  uint16_t *yb = malloc(npy * ldy * 2), *xpb = malloc(npx * ldx * 2), *rpb = malloc(npr * ldr * 2);
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *r = malloc(nr * 4), *bias = malloc(cc->m * 4);
  float *got = malloc(ny * 4), *want = malloc(ny * 4);
  assert_non_null(want);
  for (size_t i = 0; i < nx; ++i) x[i] = tc_h162f(xb[i] = tc_f2h16(tc_uniform(-2, 2)));
  for (size_t i = 0; i < nw; ++i) w[i] = tc_h162f(wb[i] = tc_f2h16(tc_uniform(-0.5f, 0.5f)));
  for (size_t i = 0; i < nr; ++i) r[i] = tc_h162f(rb[i] = tc_f2h16(tc_uniform(-1, 1)));
  for (int i = 0; i < cc->m; ++i) bias[i] = tc_uniform(-1, 1);
  for (int b = 0; b < N; ++b)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox)
        for (int m = 0; m < cc->m; ++m) {
          int g = m / mg;
          double acc = bias[m];
          for (int ky = 0; ky < cc->k; ++ky)
            for (int kx = 0; kx < cc->k; ++kx) {
              int iy = oy * cc->s - cc->pt + ky, ix = ox * cc->s - cc->pl + kx;
              if (iy < 0 || iy >= cc->h || ix < 0 || ix >= cc->w) continue;
              for (int ci = 0; ci < cg; ++ci)
                acc += (double)x[((size_t)(b * cc->h + iy) * cc->w + ix) * cc->c + g * cg + ci] *
                       w[((size_t)(m * cc->k + ky) * cc->k + kx) * cg + ci];
            }
          size_t o = ((size_t)(b * OH + oy) * OW + ox) * cc->m + m;
          size_t ro = ((size_t)(b * RH + oy / f) * RW + ox / f) * cc->m + m;
          if (cc->res == BD_RES_PRE_ACT) acc += r[ro];
          float v = act_f(acc, cc->act);
          if (cc->res == BD_RES_POST_ACT) v += r[ro];
          want[o] = v;
        }
  for (size_t i = 0; i < npx; ++i) /* x at its pitch, NaN in the channels it must not read */
    for (int c = 0; c < ldx; ++c)
      xpb[i * ldx + c] = c < cc->c ? xb[i * cc->c + c] : cc->xzero ? 0 : 0x7E00;
  for (size_t i = 0; i < npr; ++i) /* r at its pitch, NaN in the channels it must not read */
    for (int c = 0; c < ldr; ++c) rpb[i * ldr + c] = c < cc->m ? rb[i * cc->m + c] : 0x7E00;
  void *dx = tc_dev_copy(xpb, npx * ldx * 2), *dw = tc_dev_copy(wb, nw * 2);
  void *dr = tc_dev_copy(rpb, npr * ldr * 2);
  float *dbias = tc_dev_copy(bias, cc->m * 4);
  void *dy = tc_dev_poisoned(npy * ldy * 2), *ws = NULL;
  bd_cuda_conv_shape p = case_shape(cc); /* batch N = 2 */
  const void *rr = cc->res ? dr : NULL;
  if (use_direct >= 2) {
    const int tile = use_direct - 2;
    const size_t wsb = bd_cuda_conv_mma_ws_bytes(&p, tile);
    if (wsb) assert_int_equal(cudaMalloc(&ws, wsb), cudaSuccess);
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, dx, dw, dbias, rr, dy, ws, wsb, 0),
                     cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
  } else if (use_direct) {
    assert_int_equal(bd_cuda_conv_direct(&p, dx, dw, dbias, rr, dy, 0), cudaSuccess);
  } else {
    void *h = NULL;
#ifdef BD_HAVE_CUDNN
    cudnnHandle_t hd;
    assert_int_equal(cudnnCreate(&hd), CUDNN_STATUS_SUCCESS);
    h = hd;
#endif
    bd_cuda_conv_layer *l = NULL;
    size_t wsb = 0;
    bd_err err = {0};
    bd_status st = bd_cuda_conv_layer_new(h, &p, cc->pb, cc->pr, dx, dw, dy, NULL, NULL, NULL, 0, &l, &wsb,
                                          &err);
    if (st != BD_OK) printf("layer_new: %s\n", err.msg);
    assert_int_equal(st, BD_OK);
    if (wsb) assert_int_equal(cudaMalloc(&ws, wsb), cudaSuccess);
    st = bd_cuda_conv_layer_fuse(h, l, dbias, dx, dw, dy, ws, wsb, &err);
    if (st != BD_OK) printf("layer_fuse: %s\n", err.msg);
    assert_int_equal(st, BD_OK);
    printf("conv c%d m%d k%d s%d g%d act%d res%d ldx%d ldy%d: %s, workspace %zu\n", cc->c,
           cc->m, cc->k, cc->s, cc->group, cc->act, cc->res, cc->ldx, cc->ldy,
           bd_cuda_conv_layer_algo(l, &(int){0}) == -2 ? "tensor-core kernel (mma)"
           : bd_cuda_conv_layer_is_direct(l)  ? "direct kernel"
           : bd_cuda_conv_layer_is_fused(l) ? "cuDNN fused bias+act"
                                            : "cuDNN + epilogue",
           wsb);
    cudaMemset(dy, 0xFF, npy * ldy * 2); /* the algorithm search wrote into y */
    st = bd_cuda_conv_layer_run(h, l, dx, dw, dbias, rr, dy, ws, wsb, 0, &err);
    if (st != BD_OK) printf("layer_run: %s\n", err.msg);
    assert_int_equal(st, BD_OK);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    bd_cuda_conv_layer_destroy(l);
#ifdef BD_HAVE_CUDNN
    cudnnDestroy(hd);
#endif
  }
  assert_int_equal(cudaMemcpy(yb, dy, npy * ldy * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < npy; ++i)
    for (int c = 0; c < ldy; ++c) {
      if (c < cc->m) got[i * cc->m + c] = tc_h162f(yb[i * ldy + c]);
      else assert_int_equal(yb[i * ldy + c], 0xFFFF);
    }
  assert_int_equal(tc_compare(use_direct >= 2 ? bd_cuda_conv_mma_tile_name(use_direct - 2)
                              : use_direct ? "direct" : "layer",
                              got, want, ny, 2e-2f, 1e-2f), 0);
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dr);
  cudaFree(dbias);
  cudaFree(dy);
  cudaFree(ws);
  free(rpb); free(xpb); free(xb); free(wb); free(rb); free(yb); free(x); free(w); free(r); free(bias); free(got); free(want);
}

static const conv_case cases[] = {
    {16, 24, 13, 11, 3, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_NONE, 0, 0, 0, 0, 0},       /* dense 3x3 */
    {16, 32, 13, 11, 3, 2, 1, 0, 0, 1, 1, BD_ACT_RELU, BD_RES_NONE, 0, 0, 0, 0, 0},       /* asymmetric pad */
    {16, 16, 13, 11, 3, 1, 16, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 0, 0, 0, 0},   /* depthwise */
    {24, 24, 11, 9, 5, 2, 24, 2, 2, 2, 2, BD_ACT_SILU, BD_RES_NONE, 0, 0, 0, 0, 0},       /* dw 5x5 s2 */
    {12, 12, 7, 7, 3, 1, 12, 1, 1, 1, 1, BD_ACT_NONE, BD_RES_POST_ACT, 0, 0, 0, 0, 0},    /* dw, C % 8 */
    {32, 16, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_SIGMOID, BD_RES_POST_ACT, 0, 0, 0, 0, 0}, /* 1x1 */
    {12, 16, 10, 10, 3, 2, 1, 1, 1, 1, 1, BD_ACT_NONE, BD_RES_NONE, 0, 0, 0, 0, 0},       /* Focus-like stem */
    {16, 32, 9, 9, 3, 1, 4, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_NONE, 0, 0, 0, 0, 0},         /* grouped */
    /* channel counts that are not multiples of 8: zero-padded copies in the layer */
    {16, 4, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_NONE, BD_RES_NONE, 0, 0, 0, 0, 0},         /* yolox reg preds */
    {16, 1, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_SIGMOID, BD_RES_NONE, 0, 0, 0, 0, 0},      /* yolox obj preds */
    {12, 68, 10, 10, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_POST_ACT, 0, 0, 0, 0, 0},  /* both padded */
    {3, 16, 12, 12, 3, 2, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_NONE, 0, 0, 0, 0, 0},       /* RGB stem */
    /* cuDNN's fused bias + ReLU / identity (+ residual before the activation) */
    {16, 24, 13, 11, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 0, 0, 0, 0},
    {32, 16, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_NONE, BD_RES_NONE, 0, 0, 0, 0, 0},
    {64, 32, 10, 10, 3, 2, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_NONE, 0, 0, 0, 0, 0},
    /* Concat pieces in place: pitched input and/or output (cuDNN writes a packed copy
     * that the epilogue spreads; our kernels and the padded copy take the pitches) */
    {16, 24, 13, 11, 3, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_NONE, 0, 40, 0, 0, 0},
    {16, 24, 13, 11, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 32, 0, 0, 0},
    {16, 16, 13, 11, 3, 1, 16, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 24, 24, 0, 0, 0},
    {16, 32, 13, 11, 3, 2, 1, 0, 0, 1, 1, BD_ACT_RELU, BD_RES_NONE, 24, 40, 0, 0, 0},
    {12, 68, 10, 10, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_POST_ACT, 20, 80, 0, 0, 0},
    {32, 16, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_NONE, BD_RES_NONE, 0, 24, 0, 0, 0},
    /* a Focus stem's input stored padded to 16 zeroed channels: read without a copy */
    {12, 16, 10, 10, 3, 2, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_NONE, 16, 0, 1, 0, 0},
    {12, 68, 10, 10, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_POST_ACT, 16, 80, 1, 0, 0},
    /* the residual a Concat piece too (our tensor-core kernel only: the other paths
     * refuse it, test_conv_direct; the layer test runs these where the layer is ours) */
    {16, 24, 13, 11, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 32, 0, 40, 0},
    {32, 16, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_SILU, BD_RES_POST_ACT, 0, 0, 0, 24, 0},
    {16, 4, 9, 9, 1, 1, 1, 0, 0, 0, 0, BD_ACT_NONE, BD_RES_POST_ACT, 0, 0, 0, 13, 0},
    /* the residual read upsampled (a nearest Resize left to its conv: rup; ours only) */
    {16, 24, 12, 10, 1, 1, 1, 0, 0, 0, 0, BD_ACT_SILU, BD_RES_PRE_ACT, 0, 0, 0, 0, 2},
    {24, 16, 12, 18, 1, 1, 1, 0, 0, 0, 0, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 40, 0, 32, 2},
    {16, 4, 9, 12, 1, 1, 1, 0, 0, 0, 0, BD_ACT_NONE, BD_RES_PRE_ACT, 0, 0, 0, 13, 3},
    {16, 24, 12, 10, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_POST_ACT, 0, 0, 0, 0, 2},
};

static void test_conv_direct(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i)
    if (!cases[i].ldr && !cases[i].rup) run_case(&cases[i], 1);
  /* a pitched residual is our tensor-core kernel's only: refused before anything is read */
  bd_cuda_conv_shape p = {2, 9, 9, 16, 9, 9, 16, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, BD_RES_PRE_ACT,
                          0, 0, 0, 24, 0, 0, NULL, 0, NULL, 0, 0, 0};
  assert_int_equal(bd_cuda_conv_direct(&p, NULL, NULL, NULL, NULL, NULL, 0), cudaErrorInvalidValue);
  p.ldr = 0; /* and so is an upsampled one */
  p.rup = 3;
  p.oh = p.ow = p.h = p.w = 9;
  assert_int_equal(bd_cuda_conv_direct(&p, NULL, NULL, NULL, NULL, NULL, 0), cudaErrorInvalidValue);
}

/* Whether tile t runs here (bd_cuda_conv_tile_ready: the wgmma tiles only on an sm_90
 * with BATCHDET_CUDA_WGMMA=1). One that does not must refuse a shape it would take with
 * cudaErrorNotSupported, before touching anything. */
static int tile_ready(int t) {
  if (bd_cuda_conv_tile_ready(t)) return 1;
  bd_cuda_conv_shape p = {1, 8, 8, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1,
                          1, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, 0, 0};
  void *b = tc_dev_poisoned(8 * 8 * 16 * 9 * 2);
  assert_int_equal(bd_cuda_conv_mma_tiled(&p, t, b, b, NULL, NULL, b, NULL, 0, 0),
                   cudaErrorNotSupported);
  cudaFree(b);
  printf("tile %s: not on this GPU (BATCHDET_CUDA_WGMMA=1 and an sm_90 needed)\n",
         bd_cuda_conv_mma_tile_name(t));
  return 0;
}

/* Where a tile's products come from, so that a layout bug on a GPU says what it is (the
 * wgmma tiles were written without one to run them on): a 1x1 conv of 16 x 16 pixels, 64
 * channels in and out, no bias, with small integers that 16-bit floats hold exactly.
 * Probe 0: x[p][c] = c, w = identity: y[p][m] = m (a wrong k order shows as the channel
 * that came instead); 1: x[p][0] = p, the rest 0, w[m][0] = 1: y[p][m] = p (a wrong row
 * order: the pixel that came); 2: x[p][0] = 1, w[m][0] = m: y[p][m] = m (a wrong order of
 * B's rows). The first mismatches are printed with what came; returns their count. */
static const bd_cuda_conv_shape probe_shape = {1, 16, 16, 64, 16, 16, 64, 1, 1, 1, 1, 1, 1, 0,
                                              0, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, 0, 0};

static int probe_tile(int t, int probe) {
  enum { P = 256, C = 64 }; /* probe_shape's pixels and channels */
  static uint16_t xb[P * C], wb[C * C], yb[P * C];
  bd_cuda_conv_shape p = probe_shape;
  for (int i = 0; i < P; ++i)
    for (int c = 0; c < C; ++c)
      xb[i * C + c] = tc_f2h16(probe == 0 ? (float)c : c == 0 ? (probe == 1 ? (float)i : 1.f) : 0.f);
  for (int m = 0; m < C; ++m)
    for (int c = 0; c < C; ++c)
      wb[m * C + c] = tc_f2h16(probe == 0 ? (float)(c == m) : c ? 0.f : probe == 1 ? 1.f : (float)m);
  void *dx = tc_dev_copy(xb, sizeof xb), *dw = tc_dev_copy(wb, sizeof wb);
  void *dy = tc_dev_poisoned(sizeof yb);
  assert_int_equal(bd_cuda_conv_mma_tiled(&p, t, dx, dw, NULL, NULL, dy, NULL, 0, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(yb, dy, sizeof yb, cudaMemcpyDeviceToHost), cudaSuccess);
  int bad = 0;
  for (int i = 0; i < P; ++i)
    for (int m = 0; m < C; ++m) {
      const float got = tc_h162f(yb[i * C + m]), want = (float)(probe == 1 ? i : m);
      if (got == want) continue;
      if (bad++ < 8)
        printf("tile %s, probe %d: y[pixel %d][channel %d] = %g, want %g\n",
               bd_cuda_conv_mma_tile_name(t), probe, i, m, got, want);
    }
  if (bad) printf("tile %s, probe %d: %d of %d wrong\n", bd_cuda_conv_mma_tile_name(t), probe, bad, P * C);
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dy);
  return bad;
}

static void test_conv_probe(void **state) {
  (void)state;
  int bad = 0, ran = 0;
  for (int t = 0; t < BD_CONV_MMA_TILES; ++t) {
    if (!tile_ready(t) || bd_cuda_conv_mma_splits(&probe_shape, t) != 1) continue; /* unsplit */
    for (int k = 0; k < 3; ++k) bad += probe_tile(t, k);
    ++ran;
  }
  printf("probes on %d tiles: %d wrong values\n", ran, bad);
  assert_int_equal(bad, 0);
  assert_true(ran >= 10);
}

/* Every block tile of our tensor-core kernel on the dense cases it takes (input channels
 * multiples of 8; any output channels, at any pitch where they are not), plus deep
 * reductions (18 and 54 k-slices: the async tiles' ring wraps many times; split tiles get
 * several parts; 68 output channels as DAMO-YOLO's regression convs; 200, past the widest
 * tile): against the same
 * double reference. */
static void test_conv_tiles(void **state) {
  (void)state;
  static const conv_case deep[] = {
      {64, 96, 20, 18, 3, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_POST_ACT, 0, 0, 0, 0, 0},
      {192, 40, 6, 5, 3, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 0, 48, 0, 0, 0},
      {64, 68, 20, 18, 3, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, BD_RES_NONE, 0, 0, 0, 0, 0},
      /* every column of the 192-wide tile 21 and a second block of 8 */
      {32, 200, 9, 10, 1, 1, 1, 0, 0, 0, 0, BD_ACT_SILU, BD_RES_PRE_ACT, 0, 0, 0, 0, 0},
  };
  const size_t n_cases = sizeof(cases) / sizeof(cases[0]), n_deep = sizeof(deep) / sizeof(deep[0]);
  int ran = 0, ready = 0;
  for (int t = 0; t < BD_CONV_MMA_TILES; ++t) {
    if (!tile_ready(t)) continue;
    ++ready;
    for (size_t i = 0; i < n_cases + n_deep; ++i) {
      const conv_case *cc = i < n_cases ? &cases[i] : &deep[i - n_cases];
      if (cc->group != 1 || cc->c % 8 || cc->ldx % 8 ||
          (cc->m % 8 == 0 && (cc->ldy % 8 || cc->ldr % 8)))
        continue;
      const bd_cuda_conv_shape p = case_shape(cc);
      if (bd_cuda_conv_mma_splits(&p, t) < 1) continue; /* a split or patch tile refusing it */
      if (t == BD_CONV_PATCH_TILE && cc->rup) continue; /* it refuses one: test_conv_twins */
      run_case(cc, 2 + t);
      ++ran;
    }
  }
  int wgmma = 0; /* the tiles that may be out of reach here (bd_cuda_conv_tile_ready) */
  for (int t = 0; t < BD_CONV_MMA_TILES; ++t) wgmma += bd_cuda_conv_mma_tile_info(t)->wgmma;
  printf("%d tile runs on %d tiles\n", ran, ready);
  assert_true(wgmma == 6 && ready >= BD_CONV_MMA_TILES - wgmma && ran >= 2 * ready);
}

/* Every case through the layer (cuDNN or ours as BATCHDET_CUDA_CONV decides); a pitched
 * residual only where the layer says it takes one (BD_CONV_PITCH_R: ours, so all three
 * such cases under BATCHDET_CUDA_CONV=mma). */
static void test_conv_layer(void **state) {
  (void)state;
#ifdef BD_HAVE_CUDNN
  const int cudnn = 1;
#else
  const int cudnn = 0;
#endif
  int ldr_ran = 0, ldr_cases = 0, up_ran = 0;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    const conv_case *cc = &cases[i];
    if (cc->ldr) {
      const bd_cuda_conv_shape p = case_shape(cc);
      ldr_cases++;
      if (!(bd_cuda_conv_layer_pitch_caps(&p, cc->pb, cc->pr, cudnn, 1) & BD_CONV_PITCH_R))
        continue;
      ldr_ran++;
    }
    if (cc->rup) { /* where the layer takes it (ours, not on the patch tile), as the plan asks */
      const bd_cuda_conv_shape p = case_shape(cc);
      const int c = bd_cuda_conv_layer_pitch_caps(&p, cc->pb, cc->pr, cudnn, 1);
      if (!(c & BD_CONV_PITCH_ROUTE) || (c & BD_CONV_PITCH_XZERO)) continue;
      up_ran++;
    }
    run_case(cc, 0);
  }
  const char *mode = getenv("BATCHDET_CUDA_CONV");
  printf("%d of %d pitched-residual cases on the layer, %d upsampled\n", ldr_ran, ldr_cases,
         up_ran);
  if (mode && strcmp(mode, "mma") == 0) assert_int_equal(ldr_ran, ldr_cases);

}

/* Twin outputs (bd_cuda_kernels.h's m1): one launch of a stacked conv sends channels
 * [0, m1) to y and the rest to y2, each at its own pitch (Concat slices), on every tile
 * that takes the shape, against the double reference of the stacked conv; the channels
 * around both outputs stay poisoned. The direct kernel and malformed twins are refused. */
static void run_twin_res(int k, int c, int m1, int m2, int ldy, int ldy2, int act, int act2,
                         int tile, int res, int ldr1, int ldr2, int rup);
static void run_twin(int k, int c, int m1, int m2, int ldy, int ldy2, int act, int tile) {
  run_twin_res(k, c, m1, m2, ldy, ldy2, act, -1, tile, BD_RES_NONE, 0, 0, 1);
}

/* The same with residuals (res): the first output's at pitch ldr1, the second's (r2) at
 * ldr2, NaN in the channels between, read upsampled by rup (> 1: bd_cuda_kernels.h).
 * act2 >= 0: the second's activation (shape.act2 = act2 + 1), else act as the first's.
 * Ragged twins (m1 or m1 + m2 not a multiple of 8): the second's weights from row m1s =
 * round8(m1), random ones between (computed, never stored: the poison around the outputs
 * stays). */
static void run_twin_res(int k, int c, int m1, int m2, int ldy, int ldy2, int act, int act2,
                         int tile, int res, int ldr1, int ldr2, int rup) {
  const int N = 2, H = rup > 1 ? 4 * rup : 7, W = rup > 1 ? 3 * rup : 9, pad = k / 2, m = m1 + m2;
  const int RH = H / rup, RW = W / rup, m1s = (m1 + 7) / 8 * 8, ms = m1s + m2;
  const size_t nx = (size_t)N * H * W * c, nw = (size_t)ms * k * k * c, npy = (size_t)N * H * W;
  const size_t npr = (size_t)N * RH * RW;
  uint16_t *xb = malloc(nx * 2), *wb = malloc(nw * 2), *yb = malloc(npy * ldy * 2),
           *y2b = malloc(npy * ldy2 * 2), *r1b = malloc(npr * (ldr1 ? ldr1 : 1) * 2),
           *r2b = malloc(npr * (ldr2 ? ldr2 : 1) * 2);
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *bias = malloc(ms * 4);
  float *got = malloc(npy * m * 4), *want = malloc(npy * m * 4);
  assert_non_null(want);
  assert_non_null(y2b);
  assert_true(r1b && r2b);
  for (size_t i = 0; i < nx; ++i) x[i] = tc_h162f(xb[i] = tc_f2h16(tc_uniform(-2, 2)));
  for (size_t i = 0; i < nw; ++i) w[i] = tc_h162f(wb[i] = tc_f2h16(tc_uniform(-0.5f, 0.5f)));
  for (int i = 0; i < ms; ++i) bias[i] = tc_uniform(-1, 1);
  for (size_t i = 0; res && i < npr; ++i) { /* residuals: NaN beyond each one's channels */
    for (int o = 0; o < ldr1; ++o)
      r1b[i * ldr1 + o] = o < m1 ? tc_f2h16(tc_uniform(-1, 1)) : 0x7E00;
    for (int o = 0; o < ldr2; ++o)
      r2b[i * ldr2 + o] = o < m2 ? tc_f2h16(tc_uniform(-1, 1)) : 0x7E00;
  }
  for (size_t q = 0; q < npy; ++q)
    for (int o = 0; o < m; ++o) {
      const int oy = (int)(q / W % H), ox = (int)(q % W);
      const size_t b = q / ((size_t)H * W), rq = (b * RH + oy / rup) * RW + ox / rup;
      const float rv = !res     ? 0
                       : o < m1 ? tc_h162f(r1b[rq * ldr1 + o])
                                : tc_h162f(r2b[rq * ldr2 + o - m1]);
      const int wo = o < m1 ? o : m1s + o - m1; /* its weights' row */
      double acc = bias[wo] + (res == BD_RES_PRE_ACT ? rv : 0);
      for (int ky = 0; ky < k; ++ky)
        for (int kx = 0; kx < k; ++kx) {
          const int iy = oy - pad + ky, ix = ox - pad + kx;
          if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
          for (int ci = 0; ci < c; ++ci)
            acc += (double)x[((b * H + iy) * W + ix) * c + ci] * w[(((size_t)wo * k + ky) * k + kx) * c + ci];
        }
      want[q * m + o] =
          act_f(acc, o >= m1 && act2 >= 0 ? act2 : act) + (res == BD_RES_POST_ACT ? rv : 0);
    }
  void *dx = tc_dev_copy(xb, nx * 2), *dw = tc_dev_copy(wb, nw * 2), *ws = NULL;
  void *dr1 = res ? tc_dev_copy(r1b, npr * ldr1 * 2) : NULL;
  void *dr2 = res ? tc_dev_copy(r2b, npr * ldr2 * 2) : NULL;
  float *dbias = tc_dev_copy(bias, ms * 4);
  void *dy = tc_dev_poisoned(npy * ldy * 2), *dy2 = tc_dev_poisoned(npy * ldy2 * 2);
  bd_cuda_conv_shape p = {N, H, W, c, H, W, ms, k, k, 1, 1, 1, 1, pad, pad, 1, act, res,
                          0, ldy, 0, ldr1, m1, ldy2, dy2, rup > 1 ? rup : 0, dr2, ldr2,
                          act2 >= 0 ? act2 + 1 : 0, 0};
  const int ragged = m1 % 8 || ms % 8;
  if (bd_cuda_conv_mma_splits(&p, tile) < 1) goto done; /* a tile refusing the shape */
  if (tile == BD_CONV_PATCH_TILE && res) { /* twins' residuals: not on the patch tile */
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, dx, dw, dbias, dr1, dy, NULL, 0, 0),
                     cudaErrorInvalidValue);
    goto done;
  }
  const size_t wsb = bd_cuda_conv_mma_ws_bytes(&p, tile);
  if (wsb) assert_int_equal(cudaMalloc(&ws, wsb), cudaSuccess);
  assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, dx, dw, dbias, dr1, dy, ws, wsb, 0),
                   cudaSuccess);
  assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
  assert_int_equal(cudaMemcpy(yb, dy, npy * ldy * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  assert_int_equal(cudaMemcpy(y2b, dy2, npy * ldy2 * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t q = 0; q < npy; ++q) {
    for (int o = 0; o < ldy; ++o) {
      if (o < m1) got[q * m + o] = tc_h162f(yb[q * ldy + o]);
      else assert_int_equal(yb[q * ldy + o], 0xFFFF);
    }
    for (int o = 0; o < ldy2; ++o) {
      if (o < m2) got[q * m + m1 + o] = tc_h162f(y2b[q * ldy2 + o]);
      else assert_int_equal(y2b[q * ldy2 + o], 0xFFFF);
    }
  }
  assert_int_equal(tc_compare(bd_cuda_conv_mma_tile_name(tile), got, want, npy * m, 2e-2f, 1e-2f), 0);
  /* the direct kernel and twins that break the contract: refused */
  assert_int_equal(bd_cuda_conv_direct(&p, dx, dw, dbias, NULL, dy, 0), cudaErrorInvalidValue);
  bd_cuda_conv_shape bad = p;
  bad.act2 = BD_ACT_SILU + 2; /* no activation */
  assert_int_equal(bd_cuda_conv_mma_tiled(&bad, tile, dx, dw, dbias, dr1, dy, ws, wsb, 0),
                   cudaErrorInvalidValue);
  bad = p;
  if (ragged) { /* ragged twins take no residual */
    bad.res = BD_RES_PRE_ACT;
    bad.r2 = dy2;
    assert_int_equal(bd_cuda_conv_mma_tiled(&bad, tile, dx, dw, dbias, dy2, dy, ws, wsb, 0),
                     cudaErrorInvalidValue);
  } else if (res) { /* nor m1 off the 8-channel groups with one */
    bad.m1 = m1 + 4;
    assert_int_equal(bd_cuda_conv_mma_tiled(&bad, tile, dx, dw, dbias, dr1, dy, ws, wsb, 0),
                     cudaErrorInvalidValue);
    bad = p;
  }
  if (!res) { /* a residual without the second's */
    bad.res = BD_RES_PRE_ACT;
    assert_int_equal(bd_cuda_conv_mma_tiled(&bad, tile, dx, dw, dbias, dy2, dy, ws, wsb, 0),
                     cudaErrorInvalidValue);
  } else { /* the second's residual missing */
    bad.r2 = NULL;
    assert_int_equal(bd_cuda_conv_mma_tiled(&bad, tile, dx, dw, dbias, dr1, dy, ws, wsb, 0),
                     cudaErrorInvalidValue);
  }
done:
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dbias);
  cudaFree(dy);
  cudaFree(dy2);
  cudaFree(dr1);
  cudaFree(dr2);
  cudaFree(ws);
  free(xb); free(wb); free(yb); free(y2b); free(x); free(w); free(bias); free(got); free(want);
  free(r1b); free(r2b);
}

static void test_conv_twins(void **state) {
  (void)state;
  for (int t = 0; t < BD_CONV_MMA_TILES; ++t) {
    if (!tile_ready(t)) continue;
    run_twin(1, 24, 16, 24, 16, 32, BD_ACT_RELU, t); /* a CSP stage's 1x1 conv1 + conv2 */
    run_twin(3, 16, 8, 40, 24, 40, BD_ACT_SILU, t);  /* 3x3, y a Concat slice */
    /* with residuals: the split FPN convs (1x1, read upsampled by 2), pitched ones */
    run_twin_res(1, 16, 16, 8, 16, 8, BD_ACT_RELU, -1, t, BD_RES_PRE_ACT, 16, 8, 2);
    run_twin_res(3, 24, 8, 16, 24, 16, BD_ACT_SILU, -1, t, BD_RES_POST_ACT, 16, 24, 1);
    /* activations of their own; ragged twins (whole aligned groups in 16-byte stores,
     * the others channel by channel): DAMO-YOLO's head (box logits 68, class scores 80
     * through a sigmoid, 3x3), YOLOX's box (4) and objectness (1) into a Concat's slice,
     * odd pitches and tails on either side */
    run_twin_res(3, 16, 68, 80, 68, 80, BD_ACT_NONE, BD_ACT_SIGMOID, t, 0, 0, 0, 1);
    run_twin_res(1, 16, 4, 1, 85, 5, BD_ACT_NONE, BD_ACT_NONE, t, 0, 0, 0, 1);
    run_twin_res(1, 24, 12, 21, 13, 24, BD_ACT_SILU, BD_ACT_RELU, t, 0, 0, 0, 1);
    run_twin_res(1, 16, 16, 5, 24, 5, BD_ACT_SILU, BD_ACT_NONE, t, 0, 0, 0, 1);
    run_twin_res(1, 16, 16, 24, 16, 24, BD_ACT_RELU, BD_ACT_SIGMOID, t, BD_RES_PRE_ACT, 16,
                 24, 1); /* even twins: any two activations, residuals too */
  }
}

int main(void) {
  TC_SKIP_IF_NO_DEVICE();
  tc_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_conv_direct),
                                     cmocka_unit_test(test_conv_probe),
                                     cmocka_unit_test(test_conv_tiles),
                                     cmocka_unit_test(test_conv_layer),
                                     cmocka_unit_test(test_conv_twins)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
