/* Activations shared by the conv epilogue and the element-wise ops. The exponential is
 * a Cephes-style polynomial (about 2 ulp) written so that GCC vectorises it: libm's
 * expf is scalar and would dominate SiLU networks. Only the cpu backend includes this. */
#ifndef BD_CPU_ACT_H
#define BD_CPU_ACT_H

#include <stdint.h>
#include <string.h>

static inline float bd_cpu_expf(float x) {
  /* exp(88) is finite; below -87.3 the 2^n scale would be denormal. */
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.3f ? -87.3f : x;
  float fx = x * 1.44269504088896341f;
  /* Round to nearest by the 1.5 * 2^23 trick: the integer lands in the low mantissa
   * bits, read back with unsigned arithmetic (no UB even for NaN). */
  float t = fx + 12582912.0f;
  float n = t - 12582912.0f;
  uint32_t tb;
  memcpy(&tb, &t, sizeof tb);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float r2 = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  uint32_t bits = (tb - 0x4B400000u + 127u) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

static inline float bd_cpu_sigmoid(float x) { return 1.0f / (1.0f + bd_cpu_expf(-x)); }
static inline float bd_cpu_silu(float x) { return x / (1.0f + bd_cpu_expf(-x)); }

/* The same exponential on 16 lanes with GCC vector extensions: GCC does not if-convert
 * the scalar version's clamps, so scalar loops over it stay scalar. These compile to
 * 4 SSE / 2 AVX2 / 1 AVX-512 instruction per operation in the clones. Same operations
 * as bd_cpu_expf (results may differ in the last bit where FMA contracts). */
typedef float bd_v16f __attribute__((vector_size(64)));
typedef int32_t bd_v16i __attribute__((vector_size(64)));
typedef uint32_t bd_v16u __attribute__((vector_size(64)));

/* Helpers take and return vectors through pointers or macros: GCC notes the ABI of
 * 64-byte vector parameters even for inline functions. */
#define BD_V16_SPLAT(f) ((bd_v16f){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f})
#define BD_V16_SELECT(m, a, b) ((bd_v16f)(((bd_v16i)(a) & (m)) | ((bd_v16i)(b) & ~(m))))

static inline __attribute__((always_inline)) void bd_v16_exp(bd_v16f *px) {
  bd_v16f x = *px;
  x = BD_V16_SELECT(x > BD_V16_SPLAT(88.0f), BD_V16_SPLAT(88.0f), x);
  x = BD_V16_SELECT(x < BD_V16_SPLAT(-87.3f), BD_V16_SPLAT(-87.3f), x);
  bd_v16f fx = x * 1.44269504088896341f;
  bd_v16f t = fx + 12582912.0f;
  bd_v16f n = t - 12582912.0f;
  bd_v16u tb = (bd_v16u)t;
  bd_v16f r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  bd_v16f r2 = r * r;
  bd_v16f y = BD_V16_SPLAT(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  bd_v16u bits = (tb - 0x4B400000u + 127u) << 23;
  *px = y * (bd_v16f)bits;
}

/* sigmoid or silu of the 16 lanes of v, in place */
#define BD_V16_SIG(v, silu)               \
  do {                                    \
    bd_v16f e_ = -(v);                    \
    bd_v16_exp(&e_);                      \
    e_ = 1.0f + e_;                       \
    (v) = (silu) ? (v) / e_ : 1.0f / e_;  \
  } while (0)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__OPTIMIZE__)
#include <immintrin.h>
#define BD_CPU_SIG_AVX512 1
/* AVX-512 version: the division of the generic code bounds SiLU epilogues (vdivps), so
 * the reciprocal is rcp14 plus one Newton step (about 2^-28 relative), and 2^n comes
 * from scalef. Same polynomial as bd_cpu_expf. */
/* Sigmoid (silu = 0) or SiLU of 16 lanes; shared by the in-place pass below and the
 * fused GEMM epilogue of cpu_pw512.c. */
static inline __attribute__((target("avx512f"), always_inline, unused)) __m512
bd_cpu_sig16_avx512(__m512 v, int silu) {
  __m512 x = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), v),
                                         _mm512_set1_ps(-87.3f)),
                           _mm512_set1_ps(88.0f));
  __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, k), _mm512_set1_ps(1.0f)); /* 1 + exp(-v) */
  __m512 rc = _mm512_rcp14_ps(d);
  rc = _mm512_mul_ps(rc, _mm512_fnmadd_ps(d, rc, _mm512_set1_ps(2.0f)));
  return silu ? _mm512_mul_ps(v, rc) : rc;
}

__attribute__((target("avx512f"), unused)) static void bd_cpu_sig_avx512(float *y, int64_t n,
                                                                        int silu) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, bd_cpu_sig16_avx512(_mm512_maskz_loadu_ps(m, y + i), silu));
  }
}
#endif

/* y[i] = sigmoid(y[i]) or silu(y[i]) in place, n elements; the tail goes through the
 * vector code too (padded copy), so short rows are not scalar. */
static inline __attribute__((always_inline)) void bd_cpu_sigmoid_inplace(float *y, int64_t n,
                                                                         int silu) {
#ifdef BD_CPU_SIG_AVX512
  if (__builtin_cpu_supports("avx512f")) {
    bd_cpu_sig_avx512(y, n, silu);
    return;
  }
#endif
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    bd_v16f v;
    memcpy(&v, y + i, sizeof v);
    BD_V16_SIG(v, silu);
    memcpy(y + i, &v, sizeof v);
  }
  if (i < n) {
    float buf[16] = {0};
    memcpy(buf, y + i, sizeof(float) * (size_t)(n - i));
    bd_v16f v;
    memcpy(&v, buf, sizeof v);
    BD_V16_SIG(v, silu);
    memcpy(buf, &v, sizeof v);
    memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));
  }
}

#endif
