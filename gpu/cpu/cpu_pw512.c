/* AVX-512 GEMM tile with the conv epilogue fused, for the pointwise, im2col and
 * implicit-GEMM paths of cpu_conv.c:
 * Y[mc x cw] = act(W[mc x K] * X[K x cw] + b [+ r]) [+ r]. W comes as packed K x R panels
 * (R = 12 or 8 output channels, k-major); X as strips of 32 columns, read in place (the
 * pointwise input planes), from contiguous K x 32 strips (im2col), or through a table of
 * per-k offsets (the implicit GEMM's taps). A block of R channels x 32 columns lives in
 * 2R zmm accumulators; the bias, activation and residual are applied in registers before
 * the single store, so the output is written once (OpenBLAS writes C and the epilogue
 * re-reads it).
 *
 * The channel-vector tile (bd_cpu_cv512_tile) turns the block around for small planes:
 * lanes are output channels, a block is 8 pixels from a list.
 *
 * CPUs without AVX-512 get an AVX2 + FMA version of the row tile (bd_cpu_pw256_tile),
 * which stores raw sums and leaves the epilogue to the caller.
 *
 * Only built for GCC on x86-64 in optimised builds without ASan/TSan; callers check
 * bd_cpu_pw512_available() / bd_cpu_pw256_available() first. test_cpu_conv_fused is the
 * suite's build of both. */
#include "cpu_act.h"
#include "cpu_internal.h"

/* Packed weights: a K x R panel, k-major, rows >= `rows` zero. R = 12 where it divides
 * the block, else 8 where that does, else 12 with padding. */
int bd_cpu_pw512_rows(int mc) {
  return mc % 12 == 0 ? 12 : mc % 8 == 0 ? 8 : 12;
}

void bd_cpu_pw512_pack_w(int R, int rows, int K, const float *w, int ldw, float *panel) {
  for (int k = 0; k < K; k++) {
    float *d = panel + (size_t)k * R;
    for (int r = 0; r < R; r++) d[r] = r < rows ? w[(size_t)r * ldw + k] : 0.f;
  }
}

/* Channel blocks of the channel-vector tile: 48 lanes (three zmm) while at least 48
 * channels remain, then what is left as blocks of 32 (two zmm; 16 < rest <= 32, or
 * rest = 16 taken as 32 + 32 from the last 48) or 48 (rest > 32); only the last block
 * can be part padding. Block b starts at channel start[b] and packs its K x width panel
 * at start[b] * K. Returns the count (at most mg / 16 + 2; 0 past BD_CPU_CV512_MAX_MG). */
int bd_cpu_cv512_blocks(int mg, int *start, int *width) {
  if (mg < 1 || mg > BD_CPU_CV512_MAX_MG) return 0; /* the callers' arrays hold no more */
  int n48 = mg / 48, rest = mg - 48 * n48, nb = 0, c = 0;
  if (rest > 0 && rest <= 16 && n48 > 0) { /* 48 + 16 as 32 + 32 */
    n48--;
    rest += 48;
  }
  int tail[2] = {0, 0}, nt = 0;
  if (rest > 32 && rest <= 48) {
    tail[nt++] = 48;
  } else if (rest > 48) { /* 64 from the rule above: 32 + 32 */
    tail[nt++] = 32;
    tail[nt++] = 32;
  } else if (rest > 0) {
    tail[nt++] = rest > 16 ? 32 : 16;
  }
  for (int i = 0; i < n48 + nt; i++) {
    int w = i < n48 ? 48 : tail[i - n48];
    if (start) start[nb] = c;
    if (width) width[nb] = w;
    nb++;
    c += w;
  }
  return nb;
}

size_t bd_cpu_cv512_packed_floats(int mg, int K) {
  int st[BD_CPU_CV512_MAX_BLOCKS], wd[BD_CPU_CV512_MAX_BLOCKS];
  int nb = bd_cpu_cv512_blocks(mg, st, wd);
  return nb ? ((size_t)st[nb - 1] + (size_t)wd[nb - 1]) * (size_t)K : 0;
}

void bd_cpu_cv512_pack_w(int mg, int K, const float *w, int ldw, float *panels) {
  int st[BD_CPU_CV512_MAX_BLOCKS], wd[BD_CPU_CV512_MAX_BLOCKS];
  int nb = bd_cpu_cv512_blocks(mg, st, wd);
  for (int b = 0; b < nb; b++) {
    float *pb = panels + (size_t)st[b] * K;
    for (int k = 0; k < K; k++)
      for (int j = 0; j < wd[b]; j++) {
        int c = st[b] + j;
        pb[(size_t)k * wd[b] + j] = c < mg ? w[(size_t)c * ldw + k] : 0.f;
      }
  }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__OPTIMIZE__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#include <immintrin.h>

BD_CPU_HOT

/* Calls CALL(rows, IG, FULL) with all three as constants, so that each combination is its
 * own specialisation of the block: rows BIG when big else SMALL, IG when koff is given,
 * FULL for a whole strip (unmasked loads). */
#define PW_SPECIALISE(CALL, BIG, SMALL, big, koff, full) \
  do {                                                   \
    if ((big) && (koff))                                 \
      (full) ? CALL(BIG, 1, 1) : CALL(BIG, 1, 0);        \
    else if (big)                                        \
      (full) ? CALL(BIG, 0, 1) : CALL(BIG, 0, 0);        \
    else if (koff)                                       \
      (full) ? CALL(SMALL, 1, 1) : CALL(SMALL, 1, 0);    \
    else                                                 \
      (full) ? CALL(SMALL, 0, 1) : CALL(SMALL, 0, 0);    \
  } while (0)

int bd_cpu_pw512_available(void) { return __builtin_cpu_supports("avx512f"); }

int bd_cpu_pw256_available(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* ---- AVX2 + FMA (CPUs without AVX-512): raw tiles, the caller applies the epilogue ----
 * The same panels and strips; a block is R/2 channels (6 or 4) x 16 columns in 2R/2 ymm
 * accumulators (12 of the 16 registers at R = 12), each 32-column strip in two halves. */
#define P2_TGT __attribute__((target("avx2,fma")))

static inline P2_TGT __attribute__((always_inline)) void p2_block(
    const int RH, const int IG, const int FULL, int rows, int R, int K, const float *wp,
    const float *xs, int ldx, const int *koff, float *y, int ldy, __m256i m0, __m256i m1) {
  __m256 a[6][2];
#pragma GCC unroll 6
  for (int r = 0; r < RH; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
  for (int k = 0; k < K; k++) {
    const float *xk = IG ? xs + koff[k] : xs + (size_t)k * ldx;
    __m256 x0 = FULL ? _mm256_loadu_ps(xk) : _mm256_maskload_ps(xk, m0);
    __m256 x1 = FULL ? _mm256_loadu_ps(xk + 8) : _mm256_maskload_ps(xk + 8, m1);
    const float *wk = wp + (size_t)k * R;
#pragma GCC unroll 6
    for (int r = 0; r < RH; r++) {
      __m256 wv = _mm256_broadcast_ss(wk + r);
      a[r][0] = _mm256_fmadd_ps(wv, x0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(wv, x1, a[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < RH; r++) {
    if (r >= rows) break;
    float *yr = y + (size_t)r * ldy;
    if (FULL) {
      _mm256_storeu_ps(yr, a[r][0]);
      _mm256_storeu_ps(yr + 8, a[r][1]);
    } else {
      _mm256_maskstore_ps(yr, m0, a[r][0]);
      _mm256_maskstore_ps(yr + 8, m1, a[r][1]); /* m1 all clear: stores nothing */
    }
  }
}

static inline P2_TGT __m256i p2_mask(int n) { /* lanes [0, n) of 8, n clamped to 0..8 */
  n = n < 0 ? 0 : n > 8 ? 8 : n;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

P2_TGT void bd_cpu_pw256_tile(int R, int mc, int cw, int K, const float *wp, const float *x,
                              int ldx, size_t sstride, const int *koff, float *y, int ldy) {
  const int RH = R / 2;
  for (int j = 0; j < cw; j += 16) {
    int nr = cw - j < 16 ? cw - j : 16;
    __m256i m0 = p2_mask(nr), m1 = p2_mask(nr - 8);
    int full = nr == 16;
    const float *xs = x + (size_t)(j / 32) * sstride + (j % 32);
    for (int i = 0; i < mc; i += RH) {
      int rows = mc - i < RH ? mc - i : RH;
      /* rows i.. of the panel holding them: panel i / R, its rows from i % R */
      const float *pi = wp + (size_t)(i / R) * R * K + (i % R);
      float *yi = y + (size_t)i * ldy + j;
#define P2_CALL(H, IGG, FF) \
  p2_block(H, IGG, FF, rows, R, K, pi, xs, ldx, IGG ? koff : NULL, yi, ldy, m0, m1)
      PW_SPECIALISE(P2_CALL, 6, 4, RH == 6, koff, full);
#undef P2_CALL
    }
  }
}

#define PW_TGT __attribute__((target("avx512f")))

/* The conv epilogue on a vector that has its bias: residual r added before or after the
 * activation (as res says), the activation. Both tiles' stores go through it. */
static inline PW_TGT __attribute__((always_inline)) __m512 pw_epilogue(__m512 acc, __m512 r,
                                                                       bd_act act,
                                                                       bd_res_mode res) {
  if (res == BD_RES_PRE_ACT) acc = _mm512_add_ps(acc, r);
  if (act == BD_ACT_RELU) acc = _mm512_max_ps(acc, _mm512_setzero_ps());
  else if (act == BD_ACT_SIGMOID) acc = bd_cpu_sig16_avx512(acc, 0);
  else if (act == BD_ACT_SILU) acc = bd_cpu_sig16_avx512(acc, 1);
  if (res == BD_RES_POST_ACT) acc = _mm512_add_ps(acc, r);
  return acc;
}

static inline PW_TGT __attribute__((always_inline)) void pw_store(float *y, const float *r,
                                                                  __mmask16 m, __m512 acc, float b,
                                                                  bd_act act, bd_res_mode res) {
  __m512 rv = res != BD_RES_NONE ? _mm512_maskz_loadu_ps(m, r) : _mm512_setzero_ps();
  _mm512_mask_storeu_ps(y, m, pw_epilogue(_mm512_add_ps(acc, _mm512_set1_ps(b)), rv, act, res));
}

/* One block of R output channels (R = 12 or 8, a constant after inlining) x 32 columns:
 * 2R zmm accumulators, two loads of x and R broadcasts of the packed weights per k.
 * R = 12 uses 24 accumulators + 2 x vectors + 1 broadcast of the 32 zmm registers; with
 * two FMA units and a 4-cycle latency that is enough independent chains to keep both
 * busy. Only the first `rows` rows are stored (the panel's others are zero padding). */
static inline PW_TGT __attribute__((always_inline)) void pw_block(
    const int R, const int IG, const int FULL, int rows, int K, const float *wp, const float *xs,
    int ldx, const int *koff, float *y, int ldy, const float *bias, const float *res, bd_act act,
    bd_res_mode rmode, __mmask16 m0, __mmask16 m1) {
  __m512 a[12][2];
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
  if (m1) {
    for (int k = 0; k < K; k++) {
      const float *xk = IG ? xs + koff[k] : xs + (size_t)k * ldx;
      /* whole strips load unmasked: the masks would be reloaded into k registers per k */
      __m512 x0 = FULL ? _mm512_loadu_ps(xk) : _mm512_maskz_loadu_ps(m0, xk);
      __m512 x1 = FULL ? _mm512_loadu_ps(xk + 16) : _mm512_maskz_loadu_ps(m1, xk + 16);
      const float *wk = wp + (size_t)k * R;
#pragma GCC unroll 12
      for (int r = 0; r < R; r++) {
        __m512 wv = _mm512_set1_ps(wk[r]);
        a[r][0] = _mm512_fmadd_ps(wv, x0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(wv, x1, a[r][1]);
      }
    }
  } else { /* 16 columns or fewer: half the FMAs */
    for (int k = 0; k < K; k++) {
      __m512 x0 = _mm512_maskz_loadu_ps(m0, IG ? xs + koff[k] : xs + (size_t)k * ldx);
      const float *wk = wp + (size_t)k * R;
#pragma GCC unroll 12
      for (int r = 0; r < R; r++) a[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(wk[r]), x0, a[r][0]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    if (r >= rows) break;
    float *yr = y + (size_t)r * ldy;
    const float *rr = res ? res + (size_t)r * ldy : NULL;
    float b = bias ? bias[r] : 0.f;
    pw_store(yr, rr, m0, a[r][0], b, act, rmode);
    if (m1) pw_store(yr + 16, rr ? rr + 16 : NULL, m1, a[r][1], b, act, rmode);
  }
}

PW_TGT void bd_cpu_pw512_tile(int R, int mc, int cw, int K, const float *wp, const float *x,
                              int ldx, size_t sstride, const int *koff, float *y, int ldy,
                              const float *bias, const float *res, bd_act act, bd_res_mode rmode) {
  /* strips outer: one strip of x (K x 32) stays in L1/L2 while every panel passes over it */
  for (int j = 0; j < cw; j += 32) {
    int nr = cw - j < 32 ? cw - j : 32;
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    const float *xs = x + (size_t)(j / 32) * sstride;
    for (int i = 0; i < mc; i += R) {
      int rows = mc - i < R ? mc - i : R;
      const float *pi = wp + (size_t)(i / R) * R * K;
      float *yi = y + (size_t)i * ldy + j;
      const float *bi = bias ? bias + i : NULL;
      const float *ri = res ? res + (size_t)i * ldy + j : NULL;
      int full = nr == 32;
#define PW_CALL(RR, IGG, FF)                                                                      \
  pw_block(RR, IGG, FF, rows, K, pi, xs, ldx, IGG ? koff : NULL, yi, ldy, bi, ri, act, rmode, m0, \
           m1)
      PW_SPECIALISE(PW_CALL, 12, 8, R == 12, koff, full);
#undef PW_CALL
    }
  }
}

/* ---- channel-vector tile: lanes are output channels, a block is 8 pixels ----
 * 8 pixels x V zmm of channels (V = 3, 2 or 1) in 8V accumulators; per k, V loads of
 * the packed weights and 8 broadcasts of input values, each at its own pixel's offset
 * (pb[p], held in general registers) from x + koff[k]. No column of the block is junk:
 * the pixels are any list (the valid outputs of an implicit-GEMM tile), so small
 * planes do not pay for the padded width or for partly used 32-column strips. Bias and
 * activation run in registers; see below for the way in and out of y. */
static inline PW_TGT __attribute__((always_inline)) void cv_block(
    const int V, const int IG, int K, const float *wp, const float *x, const int *koff, int ldx,
    const int *pb, int np, float *y, const int *yo, size_t ldy, int valid, const float *bias,
    const float *res, bd_act act, bd_res_mode rmode) {
  __m512 a[8][3];
#pragma GCC unroll 8
  for (int p = 0; p < 8; p++)
#pragma GCC unroll 3
    for (int v = 0; v < V; v++) a[p][v] = _mm512_setzero_ps();
  const int p0 = pb[0], p1 = pb[1], p2 = pb[2], p3 = pb[3], p4 = pb[4], p5 = pb[5], p6 = pb[6],
            p7 = pb[7];
  for (int k = 0; k < K; k++) {
    const float *xk = IG ? x + koff[k] : x + (size_t)k * ldx;
    const float *wk = wp + (size_t)k * (V * 16);
    __m512 w[3];
#pragma GCC unroll 3
    for (int v = 0; v < V; v++) w[v] = _mm512_loadu_ps(wk + 16 * v);
    const float xv[8] = {xk[p0], xk[p1], xk[p2], xk[p3], xk[p4], xk[p5], xk[p6], xk[p7]};
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) {
      __m512 b = _mm512_set1_ps(xv[p]);
#pragma GCC unroll 3
      for (int v = 0; v < V; v++) a[p][v] = _mm512_fmadd_ps(b, w[v], a[p][v]);
    }
  }
  /* The epilogue through a small [pixel][channel] buffer: a residual read into it and
   * the results written out by scalar copies, channel by channel (a channel's 8 pixels
   * are mostly neighbours in one output row, one cache line), instead of a gather and a
   * scatter per vector: with those a 24->64 layer on a 160 x 160 plane took 2.1x as
   * long (a scatter's 16 lanes, 25600 floats apart, share one L1 set), and scatters are
   * slow on some CPUs. */
  float buf[8][48];
  /* the block's channels: the last vector's lanes below valid */
  const int lastn = valid - 16 * (V - 1);
  const __mmask16 mlast = lastn >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lastn) - 1);
  if (rmode != BD_RES_NONE)
    for (int p = 0; p < np; p++)
      for (int c = 0; c < V * 16; c++)
        buf[p][c] = c < valid ? res[(size_t)c * ldy + (size_t)yo[p]] : 0.f;
#pragma GCC unroll 3
  for (int v = 0; v < V; v++) {
    __m512 bv = bias ? _mm512_maskz_loadu_ps(v == V - 1 ? mlast : (__mmask16)0xFFFF, bias + 16 * v)
                     : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) {
      if (p >= np) break;
      __m512 rv = rmode != BD_RES_NONE ? _mm512_loadu_ps(&buf[p][16 * v]) : _mm512_setzero_ps();
      _mm512_storeu_ps(&buf[p][16 * v], pw_epilogue(_mm512_add_ps(a[p][v], bv), rv, act, rmode));
    }
  }
  for (int c = 0; c < valid; c++) {
    float *yc = y + (size_t)c * ldy;
    for (int p = 0; p < np; p++) yc[yo[p]] = buf[p][c];
  }
}

PW_TGT void bd_cpu_cv512_tile(int mg, int c0, int c1, int K, const float *panels, const float *x,
                              const int *koff, int ldx, int np, const int *pb, const int *yo,
                              float *y, int ldy, const float *bias, const float *res, bd_act act,
                              bd_res_mode rmode) {
  int st[BD_CPU_CV512_MAX_BLOCKS], wd[BD_CPU_CV512_MAX_BLOCKS];
  int nb = bd_cpu_cv512_blocks(mg, st, wd);
  for (int b = 0; b < nb; b++) {
    if (st[b] < c0 || st[b] >= c1) continue; /* blocks that start in [c0, c1) */
    const int V = wd[b] / 16;
    const int valid = mg - st[b] < wd[b] ? mg - st[b] : wd[b];
    const float *wp = panels + (size_t)st[b] * K;
    float *yb = y + (size_t)st[b] * ldy;
    const float *bb = bias ? bias + st[b] : NULL;
    const float *rb = res ? res + (size_t)st[b] * ldy : NULL;
    for (int i = 0; i < np; i += 8) {
      int n = np - i < 8 ? np - i : 8;
      int pq[8], oq[8];
      for (int p = 0; p < 8; p++) { /* a short block repeats its last pixel (not stored) */
        pq[p] = pb[i + (p < n ? p : n - 1)];
        oq[p] = yo[i + (p < n ? p : n - 1)];
      }
#define CV_CALL(VV, IGG) \
  cv_block(VV, IGG, K, wp, x, koff, ldx, pq, n, yb, oq, (size_t)ldy, valid, bb, rb, act, rmode)
      if (koff)
        V == 3 ? CV_CALL(3, 1) : V == 2 ? CV_CALL(2, 1) : CV_CALL(1, 1);
      else
        V == 3 ? CV_CALL(3, 0) : V == 2 ? CV_CALL(2, 0) : CV_CALL(1, 0);
#undef CV_CALL
    }
  }
}

#else

int bd_cpu_pw512_available(void) { return 0; }
int bd_cpu_pw256_available(void) {
  return 0;
}
void bd_cpu_pw256_tile(int R, int mc, int cw, int K, const float *wp, const float *x, int ldx,
                       size_t sstride, const int *koff, float *y, int ldy) {
  (void)R, (void)mc, (void)cw, (void)K, (void)wp, (void)x, (void)ldx, (void)sstride, (void)koff;
  (void)y, (void)ldy;
}
void bd_cpu_cv512_tile(int mg, int c0, int c1, int K, const float *panels, const float *x,
                       const int *koff, int ldx, int np, const int *pb, const int *yo, float *y,
                       int ldy, const float *bias, const float *res, bd_act act,
                       bd_res_mode rmode) {
  (void)mg, (void)c0, (void)c1, (void)K, (void)panels, (void)x, (void)koff, (void)ldx, (void)np;
  (void)pb;
  (void)yo, (void)y, (void)ldy, (void)bias, (void)res, (void)act, (void)rmode;
}
void bd_cpu_pw512_tile(int R, int mc, int cw, int K, const float *wp, const float *x, int ldx,
                       size_t sstride, const int *koff, float *y, int ldy, const float *bias,
                       const float *res, bd_act act, bd_res_mode rmode) {
  (void)R, (void)mc, (void)cw, (void)K, (void)wp, (void)x, (void)ldx, (void)sstride, (void)y;
  (void)koff;
  (void)ldy, (void)bias, (void)res, (void)act, (void)rmode;
}

#endif
