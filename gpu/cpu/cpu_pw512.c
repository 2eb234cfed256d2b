/* AVX-512 GEMM tile with the conv epilogue fused, for the pointwise and im2col paths:
 * Y[mc x cw] = act(W[mc x K] * X[K x cw] + b [+ r]) [+ r], where X rows are the input
 * channel planes (pointwise) or im2col rows, read in place without packing. A block of
 * 8 output channels x 32 columns lives in 16 zmm accumulators; the bias, activation and
 * residual are applied in registers before the single store, so the output is written
 * once. OpenBLAS packs and writes C, and the epilogue then re-reads it; this saves that
 * pass and the packing on the small-K GEMMs of detector necks.
 *
 * Only built for GCC on x86-64 in optimised builds without ASan/TSan; callers check
 * bd_cpu_pw512_available() first. */
#include "cpu_act.h"
#include "cpu_internal.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__OPTIMIZE__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#include <immintrin.h>

BD_CPU_HOT

int bd_cpu_pw512_available(void) { return __builtin_cpu_supports("avx512f"); }

#define PW_TGT __attribute__((target("avx512f")))

static inline PW_TGT __attribute__((always_inline)) void pw_store(
    float *y, const float *r, __mmask16 m, __m512 acc, float b, bd_act act, bd_res_mode res) {
  acc = _mm512_add_ps(acc, _mm512_set1_ps(b));
  if (res == BD_RES_PRE_ACT) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, r));
  if (act == BD_ACT_RELU) acc = _mm512_max_ps(acc, _mm512_setzero_ps());
  else if (act == BD_ACT_SIGMOID) acc = bd_cpu_sig16_avx512(acc, 0);
  else if (act == BD_ACT_SILU) acc = bd_cpu_sig16_avx512(acc, 1);
  if (res == BD_RES_POST_ACT) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, r));
  _mm512_mask_storeu_ps(y, m, acc);
}

#define PW_ROWS 8

PW_TGT void bd_cpu_pw512_tile(int mc, int cw, int K, const float *w, int ldw, const float *x,
                              int ldx, float *y, int ldy, const float *bias, const float *res,
                              bd_act act, bd_res_mode rmode) {
  for (int j = 0; j < cw; j += 32) {
    int nr = cw - j < 32 ? cw - j : 32;
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    const float *xj = x + j;
    int i = 0;
    for (; i + PW_ROWS <= mc; i += PW_ROWS) {
      __m512 a[PW_ROWS][2];
#pragma GCC unroll 8
      for (int r = 0; r < PW_ROWS; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
      const float *wi = w + (size_t)i * ldw;
      for (int k = 0; k < K; k++) {
        __m512 x0 = _mm512_maskz_loadu_ps(m0, xj + (size_t)k * ldx);
        __m512 x1 = _mm512_maskz_loadu_ps(m1, xj + (size_t)k * ldx + 16);
#pragma GCC unroll 8
        for (int r = 0; r < PW_ROWS; r++) {
          __m512 wv = _mm512_set1_ps(wi[(size_t)r * ldw + k]);
          a[r][0] = _mm512_fmadd_ps(wv, x0, a[r][0]);
          a[r][1] = _mm512_fmadd_ps(wv, x1, a[r][1]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < PW_ROWS; r++) {
        float *yr = y + (size_t)(i + r) * ldy + j;
        const float *rr = res ? res + (size_t)(i + r) * ldy + j : NULL;
        float b = bias ? bias[i + r] : 0.f;
        pw_store(yr, rr, m0, a[r][0], b, act, rmode);
        if (m1) pw_store(yr + 16, rr ? rr + 16 : NULL, m1, a[r][1], b, act, rmode);
      }
    }
    for (; i < mc; i++) {
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      const float *wi = w + (size_t)i * ldw;
      for (int k = 0; k < K; k++) {
        __m512 wv = _mm512_set1_ps(wi[k]);
        a0 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m0, xj + (size_t)k * ldx), a0);
        a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m1, xj + (size_t)k * ldx + 16), a1);
      }
      float *yr = y + (size_t)i * ldy + j;
      const float *rr = res ? res + (size_t)i * ldy + j : NULL;
      float b = bias ? bias[i] : 0.f;
      pw_store(yr, rr, m0, a0, b, act, rmode);
      if (m1) pw_store(yr + 16, rr ? rr + 16 : NULL, m1, a1, b, act, rmode);
    }
  }
}

#else

int bd_cpu_pw512_available(void) { return 0; }

void bd_cpu_pw512_tile(int mc, int cw, int K, const float *w, int ldw, const float *x, int ldx,
                       float *y, int ldy, const float *bias, const float *res, bd_act act,
                       bd_res_mode rmode) {
  (void)mc, (void)cw, (void)K, (void)w, (void)ldw, (void)x, (void)ldx, (void)y, (void)ldy;
  (void)bias, (void)res, (void)act, (void)rmode;
}

#endif
