/* SGEMM for the cpu backend: OpenBLAS when the build found it, else a built-in
 * cache-blocked GEMM (the GPU machines build without OpenBLAS and still need a usable
 * reference). The built-in one is Goto-style: B packed into KC x NR panels (kept in L2/L3),
 * A into MC x KC blocks of MR-row panels (L2), a 6 x 16 register micro-kernel.
 *
 * Every element of C is accumulated over k in the same order whatever m/n block it
 * falls in, so splitting a GEMM across threads by rows or columns gives bit-identical
 * results. */
#include <string.h>

#include "cpu_internal.h"

#ifdef BD_HAVE_BLAS
#include <cblas.h>
#endif

BD_CPU_HOT

#define MR 6
#define NR 16
#define KC 256
#define MC 120
#define NC 1024

typedef float v16f __attribute__((vector_size(64)));

size_t bd_cpu_gemm_scratch_floats(void) { return (size_t)KC * NC + (size_t)MC * KC + 64; }

static void pack_b(int kc, int nc, const float *restrict b, int ldb, float *restrict pb) {
  for (int j = 0; j < nc; j += NR) {
    int nr = nc - j < NR ? nc - j : NR;
    float *dst = pb + (size_t)(j / NR) * kc * NR;
    if (nr == NR) {
      for (int p = 0; p < kc; p++) memcpy(dst + (size_t)p * NR, b + (size_t)p * ldb + j, NR * 4);
    } else {
      for (int p = 0; p < kc; p++) {
        const float *src = b + (size_t)p * ldb + j;
        float *d = dst + (size_t)p * NR;
        int q = 0;
        for (; q < nr; q++) d[q] = src[q];
        for (; q < NR; q++) d[q] = 0.f;
      }
    }
  }
}

static void pack_a(int mc, int kc, const float *restrict a, int lda, float *restrict pa) {
  for (int i = 0; i < mc; i += MR) {
    int mr = mc - i < MR ? mc - i : MR;
    float *dst = pa + (size_t)(i / MR) * kc * MR;
    for (int r = 0; r < MR; r++) {
      if (r < mr) {
        const float *src = a + (size_t)(i + r) * lda;
        for (int p = 0; p < kc; p++) dst[(size_t)p * MR + r] = src[p];
      } else {
        for (int p = 0; p < kc; p++) dst[(size_t)p * MR + r] = 0.f;
      }
    }
  }
}

BD_CPU_CLONES
static void micro_kernel(int kc, const float *restrict pa, const float *restrict pb,
                         float *restrict c, int ldc, int mr, int nr, int acc) {
  v16f c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0};
  for (int p = 0; p < kc; p++) {
    v16f b;
    memcpy(&b, pb + (size_t)p * NR, sizeof b);
    const float *a = pa + (size_t)p * MR;
    c0 += a[0] * b;
    c1 += a[1] * b;
    c2 += a[2] * b;
    c3 += a[3] * b;
    c4 += a[4] * b;
    c5 += a[5] * b;
  }
  v16f rows[MR] = {c0, c1, c2, c3, c4, c5};
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float *cr = c + (size_t)r * ldc;
      if (acc) {
        v16f old;
        memcpy(&old, cr, sizeof old);
        rows[r] += old;
      }
      memcpy(cr, &rows[r], sizeof rows[r]);
    }
    return;
  }
  for (int r = 0; r < mr; r++) {
    float tmp[NR];
    memcpy(tmp, &rows[r], sizeof tmp);
    float *cr = c + (size_t)r * ldc;
    if (acc)
      for (int q = 0; q < nr; q++) cr[q] += tmp[q];
    else
      for (int q = 0; q < nr; q++) cr[q] = tmp[q];
  }
}

void bd_cpu_gemm_builtin(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                         float *c, int ldc, int accumulate, float *scratch) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; i++) memset(c + (size_t)i * ldc, 0, (size_t)n * 4);
    return;
  }
  float *pb = scratch;
  float *pa = scratch + (size_t)KC * NC;
  for (int jc = 0; jc < n; jc += NC) {
    int nc = n - jc < NC ? n - jc : NC;
    for (int pc = 0; pc < k; pc += KC) {
      int kc = k - pc < KC ? k - pc : KC;
      int acc = accumulate || pc > 0;
      pack_b(kc, nc, b + (size_t)pc * ldb + jc, ldb, pb);
      for (int ic = 0; ic < m; ic += MC) {
        int mc = m - ic < MC ? m - ic : MC;
        pack_a(mc, kc, a + (size_t)ic * lda + pc, lda, pa);
        for (int jr = 0; jr < nc; jr += NR) {
          int nr = nc - jr < NR ? nc - jr : NR;
          const float *bp = pb + (size_t)(jr / NR) * kc * NR;
          for (int ir = 0; ir < mc; ir += MR) {
            int mr = mc - ir < MR ? mc - ir : MR;
            micro_kernel(kc, pa + (size_t)(ir / MR) * kc * MR, bp,
                         c + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, acc);
          }
        }
      }
    }
  }
}

void bd_cpu_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, int accumulate, float *scratch) {
#ifdef BD_HAVE_BLAS
  if (m <= 0 || n <= 0) return;
  if (k <= 0) { /* BLAS rejects lda < 1 */
    bd_cpu_gemm_builtin(m, n, k, a, lda, b, ldb, c, ldc, accumulate, scratch);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
              accumulate ? 1.0f : 0.0f, c, ldc);
#else
  bd_cpu_gemm_builtin(m, n, k, a, lda, b, ldb, c, ldc, accumulate, scratch);
#endif
}
