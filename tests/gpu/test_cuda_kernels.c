/* Each own CUDA kernel against a CPU twin written here, on fresh random inputs, with
 * 16-bit tolerances; output buffers are poisoned (NaN) before every launch. Skips (exit
 * 77) without a GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bd_cuda_internal.h"
#include "bd_graph.h"
#include "test_cuda_common.h"
#ifdef BD_KEMU
#include "cuda_rt_emu.h" /* bd_cuda_emu_graphs */
#endif

/* Random 16-bit tensor: host 16-bit storage bits and their float values. */
static void rand_h16(size_t n, float lo, float hi, uint16_t *bits, float *vals) {
  for (size_t i = 0; i < n; ++i) {
    bits[i] = tc_f2h16(tc_uniform(lo, hi));
    vals[i] = tc_h162f(bits[i]);
  }
}

static void fetch_h16(const void *d, size_t n, float *out) {
  uint16_t *h = malloc(n * 2);
  assert_non_null(h);
  assert_int_equal(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < n; ++i) out[i] = tc_h162f(h[i]);
  free(h);
}

static bd_cuda_view nchw_view(void *p, int dt, int64_t n, int64_t c, int64_t h, int64_t w) {
  bd_cuda_view v = {p, dt, 4, {n, c, h, w}, {c * h * w, h * w, w, 1}};
  return v;
}
static bd_cuda_view nhwc_view(void *p, int dt, int64_t n, int64_t c, int64_t h, int64_t w) {
  bd_cuda_view v = {p, dt, 4, {n, c, h, w}, {h * w * c, 1, w * c, c}};
  return v;
}

/* A Concat piece: 16-bit NHWC [N][H][W][16] into channels 8..23 of [N][H][W][32] (the
 * 16-byte row path), then SiLU of channels 8..15 back out (row path with an op); the
 * other channels stay poisoned. */
static void test_channel_rows(void **state) {
  (void)state;
  const int N = 2, H = 5, W = 3, C1 = 16, C = 32, n1 = N * H * W * C1, n = N * H * W * C;
  uint16_t *bits = malloc(n1 * 2);
  float *x = malloc(n1 * 4), *got = malloc(n * 4), *want = malloc(n * 4);
  assert_non_null(want);
  rand_h16(n1, -4.0f, 4.0f, bits, x);
  void *dx = tc_dev_copy(bits, n1 * 2), *dy = tc_dev_poisoned(n * 2), *dz = tc_dev_poisoned(n1 * 2);
  bd_cuda_view vx = nhwc_view(dx, BD_CT_H16, N, C1, H, W), vy = nhwc_view(dy, BD_CT_H16, N, C, H, W);
  vy.dims[1] = C1;
  vy.base = (uint16_t *)dy + 8;
  assert_int_equal(bd_cuda_map(&vy, &vx, BD_UN_ID, 0), cudaSuccess);
  fetch_h16(dy, n, got);
  for (int p = 0; p < N * H * W; ++p)
    for (int c = 0; c < C; ++c)
      want[p * C + c] = (c >= 8 && c < 8 + C1) ? x[p * C1 + c - 8] : NAN;
  int bad = 0;
  for (int i = 0; i < n; ++i)
    if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])))) ++bad;
  assert_int_equal(bad, 0);
  bd_cuda_view vz = nhwc_view(dz, BD_CT_H16, N, 8, H, W); /* [N][H][W][8] dense */
  vz.strides[0] = (int64_t)H * W * 8;
  vz.strides[2] = (int64_t)W * 8;
  vz.strides[3] = 8;
  bd_cuda_view vs = nhwc_view((uint16_t *)dy + 8, BD_CT_H16, N, 8, H, W);
  vs.strides[0] = (int64_t)H * W * C;
  vs.strides[2] = (int64_t)W * C;
  vs.strides[3] = C;
  assert_int_equal(bd_cuda_map(&vz, &vs, BD_UN_SILU, 0), cudaSuccess);
  fetch_h16(dz, N * H * W * 8, got);
  for (int p = 0; p < N * H * W; ++p)
    for (int c = 0; c < 8; ++c) {
      float v = x[p * C1 + c];
      want[p * 8 + c] = tc_h162f(tc_f2h16(v / (1.0f + expf(-v))));
    }
  assert_int_equal(tc_compare("silu rows", got, want, N * H * W * 8, 1e-3f, 1e-2f), 0);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dz);
  free(bits);
  free(x);
  free(got);
  free(want);
}

/* 16-bit rows into FP32 (the score Concat's pieces: [N][HW][80] 16-bit maps into
 * [N][A][80] FP32, second level at row offset HW0): the 16-byte row path, exact; then a
 * flat run with sigmoid, and a piece whose rows are not a multiple of 8 values (the
 * generic path); the rest of the buffer stays poisoned. */
static void test_rows_h16_f32(void **state) {
  (void)state;
  enum { N = 2, HW0 = 6, HW1 = 5, A = HW0 + HW1 + 3, C = 80 };
  const int n1 = N * HW1 * C, n = N * A * C;
  uint16_t *bits = malloc(n1 * 2);
  float *x = malloc(n1 * 4), *got = malloc(n * 4), *want = malloc(n * 4);
  assert_non_null(want);
  rand_h16(n1, -6.0f, 6.0f, bits, x);
  void *dx = tc_dev_copy(bits, n1 * 2), *dy = tc_dev_poisoned(n * 4);
  bd_cuda_view vx = {dx, BD_CT_H16, 3, {N, HW1, C}, {HW1 * C, C, 1}};
  bd_cuda_view vy = {(float *)dy + HW0 * C, BD_CT_F32, 3, {N, HW1, C}, {A * C, C, 1}};
  assert_int_equal(bd_cuda_map(&vy, &vx, BD_UN_ID, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < N; ++b)
    for (int a = 0; a < A; ++a)
      for (int c = 0; c < C; ++c)
        want[(b * A + a) * C + c] = a >= HW0 && a < HW0 + HW1 ? x[(b * HW1 + a - HW0) * C + c] : NAN;
  int bad = 0;
  for (int i = 0; i < n; ++i)
    if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])))) ++bad;
  assert_int_equal(bad, 0);
  bd_cuda_view fx = {dx, BD_CT_H16, 1, {n1}, {1}}, fy = {dy, BD_CT_F32, 1, {n1}, {1}};
  assert_int_equal(bd_cuda_map(&fy, &fx, BD_UN_SIGMOID, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, n1 * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n1; ++i) want[i] = 1.0f / (1.0f + expf(-x[i]));
  assert_int_equal(tc_compare("sigmoid h16 -> f32", got, want, n1, 1e-6f, 1e-5f), 0);
  bd_cuda_view ox = {dx, BD_CT_H16, 2, {N * HW1, 12}, {C, 1}}; /* 12 of each 80 */
  bd_cuda_view oy = {dy, BD_CT_F32, 2, {N * HW1, 12}, {12, 1}};
  assert_int_equal(bd_cuda_map(&oy, &ox, BD_UN_ID, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, N * HW1 * 12 * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int r = 0; r < N * HW1; ++r)
    for (int c = 0; c < 12; ++c) want[r * 12 + c] = x[r * C + c];
  assert_int_equal(tc_compare("rows of 12", got, want, N * HW1 * 12, 0.0f, 0.0f), 0);
  cudaFree(dx);
  cudaFree(dy);
  free(bits);
  free(x);
  free(got);
  free(want);
}

/* NCHW FP32 -> NHWC 16-bit -> NCHW FP32: exact (both sides round to nearest even). */
static void test_layout_roundtrip(void **state) {
  (void)state;
  const int N = 2, C = 5, H = 7, W = 9, n = N * C * H * W;
  float *x = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
  for (int i = 0; i < n; ++i) x[i] = tc_uniform(-300.0f, 300.0f);
  void *dx = tc_dev_copy(x, n * 4), *dh = tc_dev_poisoned(n * 2), *dy = tc_dev_poisoned(n * 4);
  bd_cuda_view vx = nchw_view(dx, BD_CT_F32, N, C, H, W), vh = nhwc_view(dh, BD_CT_H16, N, C, H, W);
  bd_cuda_view vy = nchw_view(dy, BD_CT_F32, N, C, H, W);
  assert_int_equal(bd_cuda_map(&vh, &vx, BD_UN_ID, 0), cudaSuccess);
  fetch_h16(dh, n, got);
  for (int b = 0; b < N; ++b)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w)
          want[((b * H + h) * W + w) * C + c] = tc_h162f(tc_f2h16(x[((b * C + c) * H + h) * W + w]));
  assert_int_equal(tc_compare("nhwc", got, want, n, 0.0f, 0.0f), 0);
  assert_int_equal(bd_cuda_map(&vy, &vh, BD_UN_ID, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) want[i] = tc_h162f(tc_f2h16(x[i]));
  assert_int_equal(tc_compare("nchw", got, want, n, 0.0f, 0.0f), 0);
  cudaFree(dx);
  cudaFree(dh);
  cudaFree(dy);
  free(x);
  free(got);
  free(want);
}

static float cpu_unary(float x, int op) {
  switch (op) {
  case BD_UN_RELU: return x > 0 ? x : 0;
  case BD_UN_SIGMOID: return 1.0f / (1.0f + expf(-x));
  case BD_UN_SILU: return x / (1.0f + expf(-x));
  case BD_UN_EXP: return expf(x);
  default: return x;
  }
}

/* Unary ops on the 16-byte vector path (n % 8 == 0) and the scalar path (odd n). */
static void test_unary(void **state) {
  (void)state;
  const int sizes[2] = {4096, 1001};
  for (int si = 0; si < 2; ++si)
    for (int op = BD_UN_RELU; op <= BD_UN_EXP; ++op) {
      int n = sizes[si];
      uint16_t *bits = malloc(n * 2);
      float *x = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
      rand_h16(n, -6.0f, 6.0f, bits, x);
      void *dx = tc_dev_copy(bits, n * 2), *dy = tc_dev_poisoned(n * 2);
      bd_cuda_view vx = {dx, BD_CT_H16, 1, {n}, {1}}, vy = {dy, BD_CT_H16, 1, {n}, {1}};
      assert_int_equal(bd_cuda_map(&vy, &vx, op, 0), cudaSuccess);
      fetch_h16(dy, n, got);
      for (int i = 0; i < n; ++i) want[i] = cpu_unary(x[i], op);
      assert_int_equal(tc_compare("unary", got, want, n, 1e-3f, 1e-2f), 0);
      cudaFree(dx);
      cudaFree(dy);
      free(bits);
      free(x);
      free(got);
      free(want);
    }
}

/* Broadcast binary ops: 16-bit NHWC activation op FP32 per-channel constant, and the
 * same-shape 16-bit vector path. */
static void test_binary(void **state) {
  (void)state;
  const int N = 2, C = 16, H = 5, W = 6, n = N * C * H * W;
  uint16_t *ab = malloc(n * 2), *bb = malloc(n * 2);
  float *a = malloc(n * 4), *b = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
  float ch[16];
  rand_h16(n, -4.0f, 4.0f, ab, a); /* NHWC order */
  rand_h16(n, 0.5f, 4.0f, bb, b);
  for (int c = 0; c < C; ++c) ch[c] = tc_uniform(0.5f, 2.0f);
  void *da = tc_dev_copy(ab, n * 2), *db = tc_dev_copy(bb, n * 2), *dc = tc_dev_copy(ch, sizeof(ch));
  for (int op = BD_BIN_ADD; op <= BD_BIN_DIV; ++op) {
    void *dy = tc_dev_poisoned(n * 2);
    bd_cuda_view va = nhwc_view(da, BD_CT_H16, N, C, H, W), vy = nhwc_view(dy, BD_CT_H16, N, C, H, W);
    bd_cuda_view vc = {dc, BD_CT_F32, 4, {N, C, H, W}, {0, 1, 0, 0}};
    assert_int_equal(bd_cuda_binary(&vy, &va, &vc, op, 0), cudaSuccess);
    fetch_h16(dy, n, got);
    for (int i = 0; i < n; ++i) {
      float x = a[i], y = ch[i % C];
      want[i] = op == BD_BIN_ADD ? x + y : op == BD_BIN_SUB ? x - y : op == BD_BIN_MUL ? x * y : x / y;
    }
    assert_int_equal(tc_compare("bcast", got, want, n, 1e-3f, 1e-2f), 0);
    cudaMemset(dy, 0xFF, n * 2);
    bd_cuda_view vb = nhwc_view(db, BD_CT_H16, N, C, H, W);
    assert_int_equal(bd_cuda_binary(&vy, &va, &vb, op, 0), cudaSuccess);
    fetch_h16(dy, n, got);
    for (int i = 0; i < n; ++i) {
      float x = a[i], y = b[i];
      want[i] = op == BD_BIN_ADD ? x + y : op == BD_BIN_SUB ? x - y : op == BD_BIN_MUL ? x * y : x / y;
    }
    assert_int_equal(tc_compare("same", got, want, n, 1e-3f, 1e-2f), 0);
    cudaFree(dy);
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  free(ab);
  free(bb);
  free(a);
  free(b);
  free(got);
  free(want);
}

/* Raw bits of a pitched 16-bit NHWC device tensor: the c real channels of each of `pix`
 * pixels into out (packed), and checks that the pitch - c channels between them still
 * hold the 0xFFFF poison (a kernel writing a channel slice touches nothing else). */
static void fetch_slice(const void *d, int64_t pix, int c, int pitch, float *out) {
  uint16_t *h = malloc((size_t)(pix * pitch) * 2);
  assert_non_null(h);
  assert_int_equal(cudaMemcpy(h, d, (size_t)(pix * pitch) * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t i = 0; i < pix; ++i) {
    for (int k = 0; k < c; ++k) out[i * c + k] = tc_h162f(h[i * pitch + k]);
    for (int k = c; k < pitch; ++k) assert_int_equal(h[i * pitch + k], 0xFFFF);
  }
  free(h);
}

/* x packed (c channels) -> a device copy with pixels xp channels apart. */
static void *dev_pitched(const uint16_t *xb, int64_t pix, int c, int xp) {
  uint16_t *h = malloc((size_t)(pix * xp) * 2);
  assert_non_null(h);
  for (int64_t i = 0; i < pix * xp; ++i) h[i] = 0x7E00; /* NaN where nothing may be read */
  for (int64_t i = 0; i < pix; ++i) memcpy(h + i * xp, xb + i * c, (size_t)c * 2);
  void *d = tc_dev_copy(h, (size_t)(pix * xp) * 2);
  free(h);
  return d;
}

/* Max pooling with padding; exact (a max of 16-bit values is a 16-bit value). C = 5: one
 * channel per thread; C = 16: the 8-channel vector kernel. xp, yp > C: input and output
 * are channel slices of wider tensors (Concat pieces in place). */
static void maxpool_case(int C, int XP, int YP) {
  const int N = 2, H = 9, W = 11;
  /* k, stride, pad: the unrolled square windows (2, 3, 5, 9, 13: taps outside the image
   * read clamped; 9 and 13 wider than the 9 x 11 image) and the runtime loop (7) */
  const int cfg[7][3] = {{3, 2, 1}, {5, 1, 2}, {2, 2, 0}, {9, 1, 4}, {13, 1, 6}, {7, 1, 3}, {3, 1, 1}};
  for (int t = 0; t < 7; ++t) {
    int k = cfg[t][0], s = cfg[t][1], p = cfg[t][2];
    int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1, n = N * H * W * C, on = N * OH * OW * C;
    uint16_t *xb = malloc(n * 2);
    float *x = malloc(n * 4), *got = malloc(on * 4), *want = malloc(on * 4);
    rand_h16(n, -10, 10, xb, x);
    void *dx = dev_pitched(xb, (int64_t)N * H * W, C, XP);
    void *dy = tc_dev_poisoned((size_t)N * OH * OW * YP * 2);
    assert_int_equal(bd_cuda_maxpool_nhwc(N, H, W, C, OH, OW, k, k, s, s, p, p, XP, YP, dx, dy, 0),
                     cudaSuccess);
    fetch_slice(dy, (int64_t)N * OH * OW, C, YP, got);
    for (int b = 0; b < N; ++b)
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox)
          for (int c = 0; c < C; ++c) {
            float m = -INFINITY;
            for (int ky = 0; ky < k; ++ky)
              for (int kx = 0; kx < k; ++kx) {
                int iy = oy * s - p + ky, ix = ox * s - p + kx;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W && x[((b * H + iy) * W + ix) * C + c] > m)
                  m = x[((b * H + iy) * W + ix) * C + c];
              }
            want[((b * OH + oy) * OW + ox) * C + c] = m;
          }
    assert_int_equal(tc_compare("maxpool", got, want, on, 0, 0), 0);
    cudaFree(dx);
    cudaFree(dy);
    free(xb);
    free(x);
    free(got);
    free(want);
  }
}

static void test_maxpool(void **state) {
  (void)state;
  maxpool_case(5, 5, 5);
  maxpool_case(16, 16, 16);
  maxpool_case(5, 13, 9);   /* pitched, scalar kernel */
  maxpool_case(16, 40, 24); /* pitched, 8-channel kernel */
  maxpool_case(16, 20, 16); /* pitch not a multiple of 8: scalar kernel */
}

/* Resize x2: nearest/asymmetric/floor (YOLOX FPN) exact, linear/half_pixel within 16-bit
 * rounding. C = 3 and C = 16 (nearest: the 8-channel vector kernel); XP, YP as for
 * maxpool_case. */
static void resize_case(int C, int XP, int YP) {
  const int N = 2, H = 5, W = 7, OH = 10, OW = 14, n = N * H * W * C, on = N * OH * OW * C;
  uint16_t *xb = malloc(n * 2);
  float *x = malloc(n * 4), *got = malloc(on * 4), *want = malloc(on * 4);
  rand_h16(n, -10, 10, xb, x);
  void *dx = dev_pitched(xb, (int64_t)N * H * W, C, XP);
  for (int mode = 0; mode < 2; ++mode) {
    void *dy = tc_dev_poisoned((size_t)N * OH * OW * YP * 2);
    int coord = mode == 0 ? BD_COORD_ASYMMETRIC : BD_COORD_HALF_PIXEL;
    assert_int_equal(bd_cuda_resize_nhwc(N, H, W, C, OH, OW, mode, coord, BD_NEAREST_FLOOR, 2.0f, 2.0f,
                                         XP, YP, dx, dy, 0), cudaSuccess);
    fetch_slice(dy, (int64_t)N * OH * OW, C, YP, got);
    for (int b = 0; b < N; ++b)
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox)
          for (int c = 0; c < C; ++c) {
            float v;
            if (mode == 0) {
              v = x[((b * H + oy / 2) * W + ox / 2) * C + c];
            } else {
              double fy = (oy + 0.5) / 2 - 0.5, fx = (ox + 0.5) / 2 - 0.5;
              fy = fy < 0 ? 0 : (fy > H - 1 ? H - 1 : fy);
              fx = fx < 0 ? 0 : (fx > W - 1 ? W - 1 : fx);
              int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1 < H ? y0 + 1 : H - 1, x1 = x0 + 1 < W ? x0 + 1 : W - 1;
              double ly = fy - y0, lx = fx - x0;
#define X_(yy, xx) x[((b * H + (yy)) * W + (xx)) * C + c]
              v = (float)((X_(y0, x0) * (1 - lx) + X_(y0, x1) * lx) * (1 - ly) +
                          (X_(y1, x0) * (1 - lx) + X_(y1, x1) * lx) * ly);
#undef X_
            }
            want[((b * OH + oy) * OW + ox) * C + c] = v;
          }
    assert_int_equal(tc_compare("resize", got, want, on, mode ? 2e-2f : 0, mode ? 1e-2f : 0), 0);
    cudaFree(dy);
  }
  cudaFree(dx);
  free(xb);
  free(x);
  free(got);
  free(want);
}

static void test_resize(void **state) {
  (void)state;
  resize_case(3, 3, 3);
  resize_case(16, 16, 16);
  resize_case(3, 11, 7);   /* pitched, scalar kernel */
  resize_case(16, 32, 48); /* pitched, 8-channel kernel */
}

static void test_softmax(void **state) {
  (void)state;
  const int O = 3, L = 17, I = 4, n = O * L * I;
  float x[3 * 17 * 4], got[3 * 17 * 4], want[3 * 17 * 4];
  for (int i = 0; i < n; ++i) x[i] = tc_uniform(-20, 20);
  void *dx = tc_dev_copy(x, sizeof(x)), *dy = tc_dev_poisoned(sizeof(x));
  assert_int_equal(bd_cuda_softmax_f32(O, L, I, dx, dy, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, sizeof(got), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int o = 0; o < O; ++o)
    for (int in = 0; in < I; ++in) {
      double m = -1e30, s = 0;
      for (int k = 0; k < L; ++k) m = fmax(m, x[(o * L + k) * I + in]);
      for (int k = 0; k < L; ++k) s += exp(x[(o * L + k) * I + in] - m);
      for (int k = 0; k < L; ++k) want[(o * L + k) * I + in] = (float)(exp(x[(o * L + k) * I + in] - m) / s);
    }
  assert_int_equal(tc_compare("softmax", got, want, n, 1e-6f, 1e-4f), 0);
  cudaFree(dx);
  cudaFree(dy);
}

/* SoftmaxDot (the fused DFL integral): the bins read in place from a 16-bit NHWC conv
 * output [N][H][W][4*17] through DAMO's [N,4,H,W,17] view (threads ordered by input
 * stride), and from FP32 with the bins on a middle axis (stride 4). */
/* The DFL head's view: 16-bit NHWC [N][H][W][4 * L] read as [N, 4, H, W, L], bins on
 * axis 4, FP32 [N, 4, H, W, 1] out, against a double reference. */
static void softmax_dot_h16_case(int L) {
  enum { N = 2, H = 5, W = 3, NY = N * 4 * H * W, LMAX = 17 };
  const int CL = 4 * L, n = N * H * W * CL;
  uint16_t *bits = malloc(sizeof(uint16_t) * n);
  float *vals = malloc(sizeof(float) * n), p[LMAX], got[NY], want[NY];
  assert_true(bits && vals && L <= LMAX);
  rand_h16(n, -12.0f, 12.0f, bits, vals);
  for (int k = 0; k < L; ++k) p[k] = (float)k + tc_uniform(-0.25f, 0.25f);
  void *dx = tc_dev_copy(bits, sizeof(uint16_t) * n), *dp = tc_dev_copy(p, sizeof(float) * L);
  void *dy = tc_dev_poisoned(sizeof(got));
  bd_cuda_view vx = {dx, BD_CT_H16, 5, {N, 4, H, W, L}, {H * W * CL, L, W * CL, CL, 1}};
  bd_cuda_view vy = {dy, BD_CT_F32, 5, {N, 4, H, W, 1}, {4 * H * W, H * W, W, 1, 1}};
  assert_int_equal(bd_cuda_softmax_dot(&vy, &vx, 4, dp, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, sizeof(got), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < N; ++b)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) {
          const float *xp = vals + ((b * H + h) * W + w) * CL + j * L;
          double m = -1e30, s = 0, d = 0;
          for (int k = 0; k < L; ++k) m = fmax(m, xp[k]);
          for (int k = 0; k < L; ++k) s += exp(xp[k] - m), d += exp(xp[k] - m) * p[k];
          want[((b * 4 + j) * H + h) * W + w] = (float)(d / s);
        }
  char what[48];
  snprintf(what, sizeof what, "softmax_dot h16 view, %d bins", L);
  assert_int_equal(tc_compare(what, got, want, NY, 1e-5f, 1e-5f), 0);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dp);
  free(bits);
  free(vals);
}

static void test_softmax_dot(void **state) {
  (void)state;
  /* 17 and 16 bins (the unrolled kernels), 7 (the runtime loops) */
  softmax_dot_h16_case(17);
  softmax_dot_h16_case(16);
  softmax_dot_h16_case(7);
  /* FP32 [3, 17, 4], bins on axis 1 */
  enum { R = 17, O = 3, I = 4 };
  float x[O * R * I], p[R], g2[O * I], w2[O * I];
  for (int i = 0; i < O * R * I; ++i) x[i] = tc_uniform(-20, 20);
  for (int k = 0; k < R; ++k) p[k] = (float)k + tc_uniform(-0.25f, 0.25f);
  void *dx = tc_dev_copy(x, sizeof(x)), *dp = tc_dev_copy(p, sizeof(p));
  void *dy = tc_dev_poisoned(sizeof(g2));
  bd_cuda_view fx = {dx, BD_CT_F32, 3, {O, R, I}, {R * I, I, 1}};
  bd_cuda_view fy = {dy, BD_CT_F32, 3, {O, 1, I}, {I, I, 1}};
  assert_int_equal(bd_cuda_softmax_dot(&fy, &fx, 1, dp, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(g2, dy, sizeof(g2), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int o = 0; o < O; ++o)
    for (int in = 0; in < I; ++in) {
      double m = -1e30, s = 0, d = 0;
      for (int k = 0; k < R; ++k) m = fmax(m, x[(o * R + k) * I + in]);
      for (int k = 0; k < R; ++k) {
        double e = exp(x[(o * R + k) * I + in] - m);
        s += e, d += e * p[k];
      }
      w2[o * I + in] = (float)(d / s);
    }
  assert_int_equal(tc_compare("softmax_dot f32", g2, w2, O * I, 1e-5f, 1e-5f), 0);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dp);
}

/* Batched matmul with B broadcast over the batch (DAMO's integral: [..,17] x [17,1]). */
static void test_matmul(void **state) {
  (void)state;
  const int B = 3, M = 5, K = 17, N = 2;
  float a[3 * 5 * 17], b[17 * 2], got[3 * 5 * 2], want[3 * 5 * 2];
  for (int i = 0; i < B * M * K; ++i) a[i] = tc_uniform(-1, 1);
  for (int i = 0; i < K * N; ++i) b[i] = tc_uniform(-1, 1);
  void *da = tc_dev_copy(a, sizeof(a)), *db = tc_dev_copy(b, sizeof(b)), *dy = tc_dev_poisoned(sizeof(got));
  assert_int_equal(bd_cuda_matmul_f32(B, M, K, N, da, M * K, db, 0, dy, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, sizeof(got), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int bt = 0; bt < B; ++bt)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += (double)a[(bt * M + i) * K + k] * b[k * N + j];
        want[(bt * M + i) * N + j] = (float)s;
      }
  assert_int_equal(tc_compare("matmul", got, want, B * M * N, 1e-5f, 1e-4f), 0);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dy);
}

/* bd_cuda_map_multi: a head-style Concat of three FP32 levels [N][4][A_k] transposed
 * into [N][A][4] in one launch, and 16-bit pieces into FP32 with ReLU, against the CPU;
 * refusals: no piece, more than BD_CUDA_MAP_MULTI, mixed input dtypes. */
static void test_map_multi(void **state) {
  (void)state;
  enum { N = 2, L = 3, A = 64 + 16 + 4 };
  const int an[L] = {64, 16, 4};
  float *src[L], *want = malloc(sizeof(float) * N * A * 4), *got = malloc(sizeof(float) * N * A * 4);
  void *dsrc[L], *dout = tc_dev_poisoned(sizeof(float) * N * A * 4);
  bd_cuda_view outs[BD_CUDA_MAP_MULTI + 1], ins[BD_CUDA_MAP_MULTI + 1];
  int off = 0;
  for (int l = 0; l < L; ++l) {
    const int n = N * 4 * an[l];
    src[l] = malloc(sizeof(float) * n);
    for (int i = 0; i < n; ++i) src[l][i] = tc_uniform(-5, 5);
    dsrc[l] = tc_dev_copy(src[l], sizeof(float) * n);
    /* out[b][off + a][j] = src[b][j][a] */
    ins[l] = (bd_cuda_view){dsrc[l], BD_CT_F32, 3, {N, an[l], 4}, {4 * an[l], 1, an[l]}};
    outs[l] = (bd_cuda_view){(float *)dout + off * 4, BD_CT_F32, 3, {N, an[l], 4}, {A * 4, 4, 1}};
    for (int b = 0; b < N; ++b)
      for (int a = 0; a < an[l]; ++a)
        for (int j = 0; j < 4; ++j) want[(b * A + off + a) * 4 + j] = src[l][(b * 4 + j) * an[l] + a];
    off += an[l];
  }
  assert_int_equal(bd_cuda_map_multi(L, outs, ins, BD_UN_ID, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dout, sizeof(float) * N * A * 4, cudaMemcpyDeviceToHost),
                   cudaSuccess);
  assert_int_equal(tc_compare("map_multi f32", got, want, N * A * 4, 0, 0), 0);
  /* 16-bit pieces of 40, 24 and 8 channels (NHWC slices) into one FP32 [N][72] with ReLU */
  enum { P = 5, C = 72 };
  const int cn[3] = {40, 24, 8};
  uint16_t *bits = malloc(2 * P * C);
  float *x = malloc(sizeof(float) * P * C);
  rand_h16(P * C, -3, 3, bits, x);
  void *dx = tc_dev_copy(bits, 2 * P * C), *dy = tc_dev_poisoned(sizeof(float) * P * C);
  off = 0;
  for (int l = 0; l < 3; ++l) {
    ins[l] = (bd_cuda_view){(uint16_t *)dx + off, BD_CT_H16, 2, {P, cn[l]}, {C, 1}};
    outs[l] = (bd_cuda_view){(float *)dy + off, BD_CT_F32, 2, {P, cn[l]}, {C, 1}};
    off += cn[l];
  }
  assert_int_equal(bd_cuda_map_multi(3, outs, ins, BD_UN_RELU, 0), cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dy, sizeof(float) * P * C, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < P * C; ++i) want[i] = x[i] > 0 ? x[i] : 0;
  assert_int_equal(tc_compare("map_multi h16", got, want, P * C, 0, 0), 0);
  assert_int_equal(bd_cuda_map_multi(0, outs, ins, BD_UN_ID, 0), cudaErrorInvalidValue);
  assert_int_equal(bd_cuda_map_multi(BD_CUDA_MAP_MULTI + 1, outs, ins, BD_UN_ID, 0),
                   cudaErrorInvalidValue);
  ins[1].dtype = BD_CT_F32;
  assert_int_equal(bd_cuda_map_multi(3, outs, ins, BD_UN_ID, 0), cudaErrorInvalidValue);
  for (int l = 0; l < L; ++l) {
    cudaFree(dsrc[l]);
    free(src[l]);
  }
  cudaFree(dout);
  cudaFree(dx);
  cudaFree(dy);
  free(bits);
  free(x);
  free(want);
  free(got);
}

/* bd_cuda_time_replayed (the conv choice's timing): the work fn enqueues, captured once
 * and replayed, really runs (its output is checked), fn is called exactly `reps` times,
 * and a failing fn is an error that leaves the stream usable; asked uncaptured, it runs
 * uncaptured. On the kernel emulation,
 * whose clock runs 1 us per launch, the time per call is exact: 3 launches, 3 us; with
 * capture refused (bd_cuda_emu_graphs 0) the same work runs uncaptured, also 3 us. */
typedef struct timed_ctx {
  bd_cuda_view y, x;
  int calls, fail;
} timed_ctx;
static bd_status timed_relu(void *ctx, cudaStream_t s, bd_err *err) {
  timed_ctx *c = ctx;
  c->calls++;
  if (c->fail) return bd_err_set(err, BD_E_INTERNAL, "timed fn fails");
  for (int i = 0; i < 3; ++i)
    if (bd_cuda_map(&c->y, &c->x, BD_UN_RELU, s) != cudaSuccess)
      return bd_err_set(err, BD_E_INTERNAL, "timed fn: launch");
  return BD_OK;
}
static void test_time_replayed(void **state) {
  (void)state;
  const int n = 4096, reps = 4;
  uint16_t *bits = malloc(n * 2);
  float *x = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
  assert_true(bits && x && got && want);
  rand_h16(n, -4.0f, 4.0f, bits, x);
  for (int i = 0; i < n; ++i) want[i] = cpu_unary(x[i], BD_UN_RELU);
  void *dx = tc_dev_copy(bits, n * 2), *dy = tc_dev_poisoned(n * 2);
  cudaStream_t s = NULL;
  assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  timed_ctx c = {{dy, BD_CT_H16, 1, {n}, {1}}, {dx, BD_CT_H16, 1, {n}, {1}}, 0, 0};
  bd_err err = {0};
  float ms = -1;
  int captured = -1;
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, reps, 1, &ms, &captured, &err), BD_OK);
  printf("replayed: %.4f ms a call, captured %d, %d calls\n", ms, captured, c.calls);
  assert_int_equal(captured, 1);
  assert_int_equal(c.calls, reps);
  assert_true(ms > 0);
  fetch_h16(dy, n, got);
  assert_int_equal(tc_compare("replayed relu", got, want, n, 1e-3f, 1e-2f), 0);
#ifdef BD_KEMU
  assert_true(fabsf(ms - 3e-3f) < 1e-6f);
  bd_cuda_emu_graphs = 0;
  c.calls = 0;
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, reps, 1, &ms, &captured, &err), BD_OK);
  bd_cuda_emu_graphs = 1;
  assert_int_equal(captured, 0);
  assert_int_equal(c.calls, reps);
  assert_true(fabsf(ms - 3e-3f) < 1e-6f);
#endif
  c.fail = 1;
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, reps, 1, &ms, &captured, &err),
                   BD_E_INTERNAL);
  assert_non_null(strstr(err.msg, "timed fn fails"));
  enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusActive;
  assert_int_equal(cudaStreamIsCapturing(s, &cs), cudaSuccess);
  assert_int_equal(cs, cudaStreamCaptureStatusNone);
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, 0, 1, &ms, &captured, &err),
                   BD_E_INVALID);
  c.fail = 0;
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, 1, 1, &ms, &captured, &err), BD_OK);
  assert_int_equal(captured, 1);
  c.calls = 0; /* asked uncaptured */
  assert_int_equal(bd_cuda_time_replayed(s, timed_relu, &c, reps, 0, &ms, &captured, &err), BD_OK);
  assert_int_equal(captured, 0);
  assert_int_equal(c.calls, reps);
  assert_true(ms > 0);
  assert_int_equal(cudaStreamDestroy(s), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
  free(bits);
  free(x);
  free(got);
  free(want);
}

int main(void) {
  TC_SKIP_IF_NO_DEVICE();
  tc_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout_roundtrip), cmocka_unit_test(test_unary),
      cmocka_unit_test(test_binary),           cmocka_unit_test(test_maxpool),
      cmocka_unit_test(test_resize),           cmocka_unit_test(test_softmax),
      cmocka_unit_test(test_matmul),           cmocka_unit_test(test_channel_rows),
      cmocka_unit_test(test_softmax_dot),      cmocka_unit_test(test_rows_h16_f32),
      cmocka_unit_test(test_time_replayed),    cmocka_unit_test(test_map_multi),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
