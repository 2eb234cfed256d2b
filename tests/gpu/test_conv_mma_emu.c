/* Our tensor-core convolution (bd_cuda_conv_mma) over the host emulation of its blocks and
 * of WMMA (cuda_mma_emu.cc), against a CPU convolution written here (double sums of the
 * same 16-bit inputs, then the epilogue): partial pixel, channel and k tiles, 1x1, 3x3,
 * 5x5 dilated, stride 2 with asymmetric padding, batch 2, several blocks, every
 * activation and residual mode, no bias, output channels that are not multiples of 8. Outputs are poisoned first and a guard after
 * the output must stay untouched. Runs on every machine; the same kernel on a GPU is
 * checked by test_cuda_conv_mma / test_cuda_model_mma. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_cuda_kernels.h"
#include "test_cuda_common.h"

enum { GUARD = 64 };

typedef struct conv_case {
  int n, h, w, c, m, kh, kw, s, d, pad_t, pad_l, pad_b, pad_r, act, res, bias;
  int ldx, ldy; /* pixel pitches of x and y (0: packed): Concat pieces in place */
  int ldr;      /* and of the residual */
} conv_case;

static float act_ref(float x, int a) {
  return a == 1 ? (x > 0 ? x : 0) : a == 2 ? 1.f / (1.f + expf(-x)) : a == 3 ? x / (1.f + expf(-x)) : x;
}

static uint16_t *h16_random(size_t n, float lo, float hi) {
  uint16_t *v = aligned_alloc(16, (n * 2 + 15) / 16 * 16 + GUARD * 2);
  assert_non_null(v);
  for (size_t i = 0; i < n; ++i) v[i] = tc_f2h16(tc_uniform(lo, hi));
  return v;
}

static void run_case(const conv_case *k, int tile) {
  bd_cuda_conv_shape p = {0};
  p.n = k->n, p.h = k->h, p.w = k->w, p.c = k->c, p.m = k->m, p.kh = k->kh, p.kw = k->kw;
  p.sh = p.sw = k->s, p.dh = p.dw = k->d, p.pad_t = k->pad_t, p.pad_l = k->pad_l, p.group = 1;
  p.oh = (k->h + k->pad_t + k->pad_b - k->d * (k->kh - 1) - 1) / k->s + 1;
  p.ow = (k->w + k->pad_l + k->pad_r - k->d * (k->kw - 1) - 1) / k->s + 1;
  p.act = k->act, p.res = k->res, p.ldx = k->ldx, p.ldy = k->ldy, p.ldr = k->ldr;
  const int ldx = k->ldx ? k->ldx : p.c, ldy = k->ldy ? k->ldy : p.m;
  const int ldr = k->ldr ? k->ldr : p.m;
  const size_t nx = (size_t)p.n * p.h * p.w * ldx, nw = (size_t)p.m * p.kh * p.kw * p.c;
  const size_t npix = (size_t)p.n * p.oh * p.ow, ny = npix * ldy, nr = npix * ldr;
  uint16_t *x = h16_random(nx, -1.f, 1.f), *w = h16_random(nw, -0.5f, 0.5f);
  uint16_t *r = k->res ? h16_random(nr, -1.f, 1.f) : NULL;
  uint16_t *y = h16_random(ny + GUARD, 0.f, 0.f);
  for (size_t i = 0; i < (size_t)p.n * p.h * p.w; ++i) /* channels past c: never read */
    for (int c = p.c; c < ldx; ++c) x[i * ldx + c] = 0x7E00;
  for (size_t i = 0; r && i < npix; ++i) /* nor r's past m */
    for (int c = p.m; c < ldr; ++c) r[i * ldr + c] = 0x7E00;
  float *bias = NULL;
  if (k->bias) {
    bias = malloc(sizeof(float) * (size_t)p.m);
    assert_non_null(bias);
    for (int i = 0; i < p.m; ++i) bias[i] = tc_uniform(-1.f, 1.f);
  }
  memset(y, 0xFF, ny * 2); /* NaN in both 16-bit formats: an unwritten output shows */
  for (int g = 0; g < GUARD; ++g) y[ny + g] = (uint16_t)(0x1234 + g);
  /* Split tiles: partials in a workspace of exactly the size asked for, poisoned (NaN),
   * guarded; a shape they do not apply to, or a smaller workspace, is refused. */
  const int splits = tile < 0 ? 1 : bd_cuda_conv_mma_splits(&p, tile);
  const size_t wsb = tile < 0 ? 0 : bd_cuda_conv_mma_ws_bytes(&p, tile);
  float *ws = malloc(wsb + GUARD * sizeof(float));
  assert_non_null(ws);
  memset(ws, 0xFF, wsb);
  for (int g = 0; g < GUARD; ++g) ws[wsb / sizeof(float) + g] = (float)g;
  if (tile >= 0 && !bd_cuda_conv_tile_ready(tile)) { /* a wgmma tile here: before the shape */
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, x, w, bias, r, y, ws, wsb, 0),
                     cudaErrorNotSupported);
    for (size_t i = 0; i < ny; ++i) assert_int_equal(y[i], 0xFFFF); /* nothing written */
    free(x), free(w), free(r), free(y), free(bias), free(ws);
    return;
  }
  if (splits < 1) {
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, x, w, bias, r, y, ws, wsb, 0),
                     cudaErrorInvalidValue);
    free(x), free(w), free(r), free(y), free(bias), free(ws);
    return;
  }
  if (splits > 1)
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, x, w, bias, r, y, ws, wsb - 16, 0),
                     cudaErrorInvalidValue);
  if (tile < 0)
    assert_int_equal(bd_cuda_conv_mma(&p, x, w, bias, r, y, 0), cudaSuccess);
  else
    assert_int_equal(bd_cuda_conv_mma_tiled(&p, tile, x, w, bias, r, y, ws, wsb, 0), cudaSuccess);
  for (int g = 0; g < GUARD; ++g) assert_int_equal(y[ny + g], (uint16_t)(0x1234 + g));
  for (int g = 0; g < GUARD; ++g) assert_true(ws[wsb / sizeof(float) + g] == (float)g);
  for (size_t i = 0; i < npix; ++i) /* the other channels of y's rows: never written */
    for (int c = p.m; c < ldy; ++c) assert_int_equal(y[i * ldy + c], 0xFFFF);
  double worst = 0;
  /* the 16-bit inputs as floats once (converting per product was most of the test) */
  float *xf = malloc(sizeof(float) * nx), *wf = malloc(sizeof(float) * nw);
  assert_non_null(xf);
  assert_non_null(wf);
  for (size_t i = 0; i < nx; ++i) xf[i] = tc_h162f(x[i]);
  for (size_t i = 0; i < nw; ++i) wf[i] = tc_h162f(w[i]);
  for (int n = 0; n < p.n; ++n)
    for (int oy = 0; oy < p.oh; ++oy)
      for (int ox = 0; ox < p.ow; ++ox)
        for (int m = 0; m < p.m; ++m) {
          double acc = 0;
          for (int ky = 0; ky < p.kh; ++ky) {
            int iy = oy * p.sh - p.pad_t + ky * p.dh;
            if (iy < 0 || iy >= p.h) continue;
            for (int kx = 0; kx < p.kw; ++kx) {
              int ix = ox * p.sw - p.pad_l + kx * p.dw;
              if (ix < 0 || ix >= p.w) continue;
              const float *xp = xf + (((size_t)n * p.h + iy) * p.w + ix) * ldx;
              const float *wp = wf + (((size_t)m * p.kh + ky) * p.kw + kx) * p.c;
              for (int c = 0; c < p.c; ++c) acc += (double)xp[c] * wp[c];
            }
          }
          size_t pix = ((size_t)n * p.oh + oy) * p.ow + ox, o = pix * ldy + m;
          float v = (float)acc + (bias ? bias[m] : 0.f), rv = r ? tc_h162f(r[pix * ldr + m]) : 0.f;
          if (p.res == 1) v += rv;
          v = act_ref(v, p.act);
          if (p.res == 2) v += rv;
          float got = tc_h162f(y[o]);
          double err = fabs((double)got - v), tol = 4e-3 + 8e-3 * fabs(v);
#ifdef BD_CUDA_BF16
          tol = 2e-2 + 1e-2 * fabs(v);
#endif
          if (!(err <= tol)) {
            printf("n%d oy%d ox%d m%d: got %g want %g\n", n, oy, ox, m, got, v);
            fail();
          }
          if (err > worst) worst = err;
        }
  printf("conv n%d %dx%d c%d m%d k%dx%d s%d d%d pad %d,%d,%d,%d act%d res%d bias%d ldx%d ldy%d "
         "ldr%d -> %dx%d, tile %s (%d parts): max abs err %.2e\n",
         p.n, p.h, p.w, p.c, p.m, p.kh, p.kw, k->s, k->d, k->pad_t, k->pad_l, k->pad_b, k->pad_r,
         p.act, p.res, k->bias, k->ldx, k->ldy, k->ldr, p.oh, p.ow,
         bd_cuda_conv_mma_tile_name(tile < 0 ? bd_cuda_conv_mma_default_tile(p.m) : tile), splits,
         worst);
  free(xf);
  free(wf);
  free(ws);
  free(x);
  free(w);
  free(r);
  free(y);
  free(bias);
}

static void test_shapes(void **s) {
  (void)s;
  static const conv_case cases[] = {
      /* n  h   w   c   m  kh kw s  d  pt pl pb pr act res bias ldx ldy */
      {1, 8, 10, 16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 3, 0, 1, 0, 0, 0},  /* partial tiles in all three */
      {2, 9, 7, 32, 72, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0},   /* 1x1, batch 2, two channel tiles */
      {1, 17, 13, 8, 16, 3, 3, 2, 1, 0, 1, 1, 0, 2, 2, 1, 0, 0, 0},  /* stride 2, asymmetric padding */
      {1, 12, 12, 24, 8, 5, 5, 1, 2, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0},  /* 5x5 dilated, no bias */
      {1, 16, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1, 3, 2, 1, 0, 0, 0}, /* two pixel blocks */
      /* Concat pieces in place: x a slice of a 40-channel tensor, y of a 96-channel one */
      {2, 9, 7, 32, 72, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 40, 96, 0},
      {1, 8, 10, 16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 3, 2, 1, 0, 32, 0},
      {1, 17, 13, 8, 16, 3, 3, 2, 1, 0, 1, 1, 0, 2, 0, 1, 24, 0, 0},
      /* more than one block of every tile: 320 pixels, 136 channels */
      {1, 20, 16, 16, 136, 3, 3, 1, 1, 1, 1, 1, 1, 1, 2, 1, 0, 0, 0},
      /* split-K (tiles 3, 4): deep reductions on small outputs; k = 576 in 4 parts with a
       * residual and y a slice; k = 360 (not a multiple of 32) in 3 parts, stride 2 */
      {1, 6, 6, 64, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 48, 0},
      {2, 7, 7, 40, 16, 3, 3, 2, 1, 1, 1, 1, 1, 3, 2, 1, 48, 0, 0},
      /* M not a multiple of 8 (one channel a store): DAMO-YOLO's 68 regression channels
       * (a last group of 4, two channel blocks of tile 1) with a residual; yolox's 4 and 1
       * prediction channels; 13 channels at an odd pitch of 15 after a deep reduction
       * that the split tiles take (partials of 16 channels a pixel) */
      {1, 10, 9, 64, 68, 3, 3, 1, 1, 1, 1, 1, 1, 1, 2, 1, 0, 0, 0},
      {2, 5, 6, 16, 4, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
      {1, 7, 5, 24, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0},
      {1, 6, 6, 64, 13, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, 1, 0, 15, 0},
      /* the residual a Concat piece (ldr): 8 channels a load, and one at a time */
      {1, 8, 10, 16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 32, 40},
      {2, 5, 6, 16, 12, 1, 1, 1, 1, 0, 0, 0, 0, 3, 2, 1, 0, 0, 13},
      /* tile 17 (patch; the others take them too): a Focus-like stem over several tiles
       * of 16 x 16 in both directions, batch 2 (blocks walking more than one tile); stride
       * 2 with 24 channels padded to 32 in shared memory, TH 8; 1x1 with x and r slices
       * and an odd y pitch (one 16-bit store a channel); 8 channels padded to 16 and 4
       * outputs; a 1x3 kernel with asymmetric padding. DAMO-YOLO's 68 regression channels
       * above: 9 groups, the last partial */
      {2, 20, 36, 16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 3, 0, 1, 0, 0, 0},
      {1, 35, 34, 24, 64, 3, 3, 2, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0},
      {1, 9, 18, 64, 13, 1, 1, 1, 1, 0, 0, 0, 0, 3, 1, 1, 72, 15, 16},
      {1, 17, 19, 64, 24, 1, 1, 1, 1, 0, 0, 0, 0, 1, 2, 1, 0, 0, 40},
      {2, 6, 7, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0, 1, 0, 0, 0},
      {1, 18, 17, 32, 40, 1, 3, 1, 1, 0, 1, 0, 2, 3, 1, 1, 0, 0, 0},
      /* the patch tile's widest: 10 groups of 8 outputs (k = 432), 12 groups (48 -> 96),
       * one row of 16 pixels a warp; a head's 3x3 64 -> 80 (k = 576) it refuses (119 KB of
       * shared memory) */
      {1, 12, 20, 40, 80, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0, 1, 0, 0, 0},
      {1, 12, 20, 64, 80, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0, 1, 0, 0, 0},
      {1, 11, 21, 48, 96, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, 1, 0, 0, 0},
      /* every column of the 192-wide wgmma tile (21) and a second block of 8 */
      {1, 9, 10, 32, 200, 1, 1, 1, 1, 0, 0, 0, 0, 3, 1, 1, 0, 0, 0},
  };
  /* Every block tile, and the default one (-1) */
  for (int tile = -1; tile < BD_CONV_MMA_TILES; ++tile)
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) run_case(&cases[i], tile);
}

static void test_refuses(void **s) {
  (void)s;
  bd_cuda_conv_shape p = {1, 4, 4, 12, 4, 4, 8, 3, 3, 1, 1, 1, 1, 1,
                          1, 1, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, 0, 0};
  uint16_t *b = h16_random(4096, 0.f, 0.f);
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue); /* C%8 */
  p.c = 16, p.m = 12; /* M % 8: any pitch >= M, 2-byte alignment (test_shapes: no split) */
  p.ldy = 11;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.ldy = 13;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, (char *)b + 1, 0), cudaErrorInvalidValue);
  p.ldy = 0, p.m = 16, p.group = 2;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.group = 1;
  assert_int_equal(bd_cuda_conv_mma(&p, b + 1, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.ldy = 20; /* pitches: multiples of 8, at least the channels */
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.ldy = 8;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.ldy = 0, p.ldx = 12;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, NULL, b, 0), cudaErrorInvalidValue);
  p.ldx = 0, p.ldr = 12; /* the residual's pitch: a multiple of 8 too, at least M */
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, b, b, 0), cudaErrorInvalidValue);
  p.ldr = 8;
  assert_int_equal(bd_cuda_conv_mma(&p, b, b, NULL, b, b, 0), cudaErrorInvalidValue);
  p.ldr = 0;
  p.ldx = 0; /* a valid shape on a tile that does not exist */
  assert_int_equal(
      bd_cuda_conv_mma_tiled(&p, BD_CONV_MMA_TILES, b, b, NULL, NULL, b, NULL, 0, 0),
      cudaErrorInvalidValue);
  assert_int_equal(bd_cuda_conv_mma_tiled(&p, -2, b, b, NULL, NULL, b, NULL, 0, 0),
                   cudaErrorInvalidValue);
  free(b);
}

/* Which shapes the patch tile takes (bd_cuda_conv_patch_geo): DAMO-YOLO-T's at 640, batch
 * 32 - the stem (its 12 channels padded to 16), the first stages' 24/64-channel convs,
 * the neck's 3x3 32 -> 32 and 64 -> 64 - and not the head's 3x3 64 -> 80 (shared
 * memory), more than 64 input or 96 output channels, dilation, stride 3, C % 8. */
static void test_patch_takes(void **s) {
  (void)s;
  static const struct {
    int h, c, m, k, st, d, takes;
  } t[] = {
      {320, 16, 24, 3, 1, 1, 1}, {320, 24, 24, 1, 1, 1, 1}, {320, 24, 64, 3, 2, 1, 1},
      {160, 64, 24, 1, 1, 1, 1}, {160, 24, 64, 3, 1, 1, 1}, {80, 32, 32, 3, 1, 1, 1},
      {40, 64, 64, 3, 1, 1, 1},  {80, 64, 80, 3, 1, 1, 0},  {40, 72, 64, 1, 1, 1, 0},
      {40, 64, 104, 1, 1, 1, 0}, {40, 32, 32, 3, 1, 2, 0},  {40, 32, 32, 3, 3, 1, 0},
      {40, 12, 32, 3, 1, 1, 0},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; ++i) {
    const int pad = t[i].d * (t[i].k / 2);
    const int oh = (t[i].h + 2 * pad - t[i].d * (t[i].k - 1) - 1) / t[i].st + 1;
    const bd_cuda_conv_shape p = {.n = 32, .h = t[i].h, .w = t[i].h, .c = t[i].c, .oh = oh,
                                  .ow = oh, .m = t[i].m, .kh = t[i].k, .kw = t[i].k,
                                  .sh = t[i].st, .sw = t[i].st, .dh = t[i].d, .dw = t[i].d,
                                  .pad_t = pad, .pad_l = pad, .group = 1};
    bd_conv_patch_geo g;
    const int takes = bd_cuda_conv_patch_geo(&p, &g);
    printf("patch tile, %dx%d c%d m%d k%d s%d d%d: %s", t[i].h, t[i].h, t[i].c, t[i].m, t[i].k,
           t[i].st, t[i].d, takes ? "takes it" : "refuses it\n");
    if (takes)
      printf(" (16 x %d pixels a block, %d bytes of shared memory)\n", g.th, g.smem);
    assert_int_equal(takes, t[i].takes);
    assert_int_equal(bd_cuda_conv_mma_splits(&p, BD_CONV_PATCH_TILE), t[i].takes);
    if (takes) assert_true(g.smem <= BD_CONV_PATCH_SMEM_MAX && g.th == 8 * g.mt);
  }
}

int main(void) {
  tc_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_shapes), cmocka_unit_test(test_refuses),
                                     cmocka_unit_test(test_patch_takes)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
