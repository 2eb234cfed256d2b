// Our own tensor-core convolution (issue 7): an implicit GEMM over NHWC 16-bit
// activations and KRSC 16-bit weights with the whole epilogue (bias, activation,
// residual) fused, so a layer is one kernel and one pass over its output. Which layers
// run it instead of cuDNN, and on which block tile, is measured at load
// (bd_cuda_conv_choose, BATCHDET_CUDA_CONV).
//
// GEMM view: rows = output pixels (N*OH*OW), columns = output channels (M), reduction
// k = (ky*KW + kx)*C + c over KH*KW*C, so that the weight row of channel m is the KRSC
// row w[m*K .. m*K+K) and a run of 8 consecutive k (C % 8 == 0) is 8 consecutive
// channels of one input pixel: one 16-byte load, zero when the pixel is padding.
// Block tiles (BD_CONV_MMA_TILES, listed in bd_cuda_kernels.h) of k_conv_mma: 128 pixels
// x 64 channels, 256 x 32 (layers with few output channels), 64 x 128 (many), each x 32
// k, 8 warps of 32x32 (2x2 WMMA 16x16x16 fragments, FP32 accumulate). The next k-slice is
// loaded into registers while the current one is multiplied, and the shared tiles are
// double-buffered, so one barrier per k-slice suffices; k_conv_mma_async (below) brings
// the slices in through cp.async instead. A thread's A rows (output pixels) are
// decomposed once and its k position walks the (ky, kx, c) order by additions: no
// division per load. The accumulators go through shared memory to the epilogue, which
// writes 8 channels per 16-byte store (one channel a store where M % 8 != 0:
// store_tail). x and y may be channel slices of wider tensors (ldx, ldy). Split tiles
// (split-K): blockIdx.z takes one part of the k range (whole 32-slices), its block writes
// FP32 partial sums to the workspace instead of the epilogue, and k_splitk_epilogue adds
// the parts in order and runs the epilogue.
//
// tests/gpu/cuda_kernel_emu.cc compiles this file as host C++ (cuda_block_emu.h: fibers
// and barriers stand in for a block, BD_LAUNCH for <<<>>>; cuda_mma_emu.h: nvcuda::wmma
// by its documented semantics) so that the tiling, loaders and epilogue are tested
// against a CPU convolution on machines without a GPU.
#ifndef BD_KERNEL_EMU
#include <mma.h>
#endif

#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {

using namespace nvcuda;

constexpr int BK = 32, LDS = BK + 8, THREADS = 256;

template <int BM, int BN> struct Smem {
  static constexpr int LDC = BN + 4; // floats per row of the accumulator tile
  union {
    struct {
      bd_h16 a[2][BM * LDS]; // [pixel][k], row-major; two buffers
      bd_h16 b[2][BN * LDS]; // [channel][k]: WMMA's column-major B
    } in;
    float c[BM * LDC];
  };
};

// One A row of the tile (an output pixel): its image's first element and the input
// position of its kernel window's top-left tap; img == nullptr past the last pixel.
struct ARow {
  const bd_h16 *img;
  int iy0, ix0;
};

__device__ __forceinline__ ARow a_row(const bd_cuda_conv_shape &p, const bd_h16 *x, int64_t pix,
                                      int64_t n_pix, int ldx) {
  ARow r = {nullptr, 0, 0};
  if (pix >= n_pix) return r;
  const int ox = (int)(pix % p.ow);
  const int64_t t = pix / p.ow;
  const int oy = (int)(t % p.oh), n = (int)(t / p.oh);
  r.img = x + (int64_t)n * p.h * p.w * ldx;
  r.iy0 = oy * p.sh - p.pad_t;
  r.ix0 = ox * p.sw - p.pad_l;
  return r;
}

// A reduction position k = (ky*KW + kx)*C + c, moved forward without divisions.
struct KPos {
  int k, ky, kx, c;
};

__device__ __forceinline__ void k_advance(const bd_cuda_conv_shape &p, KPos &q, int by) {
  q.k += by;
  q.c += by;
  while (q.c >= p.c) { // by <= 64 and C >= 8: a few steps at most
    q.c -= p.c;
    if (++q.kx == p.kw) {
      q.kx = 0;
      ++q.ky;
    }
  }
}

// Where the 16 bytes of A (8 channels of one input pixel) for row r at position q (c a
// multiple of 8) are, or nullptr where they are zeros (past the last pixel or k, or
// padding).
__device__ __forceinline__ const bd_h16 *a_src(const bd_cuda_conv_shape &p, const ARow &r,
                                               const KPos &q, int k_tot, int ldx) {
  if (!r.img || q.k >= k_tot) return nullptr;
  const int iy = r.iy0 + q.ky * p.dh, ix = r.ix0 + q.kx * p.dw;
  if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) return nullptr;
  return r.img + ((int64_t)iy * p.w + ix) * ldx + q.c;
}

// Those 16 bytes (a_src), zeros where it gives none.
__device__ __forceinline__ uint4 load_a(const bd_cuda_conv_shape &p, const ARow &r, const KPos &q,
                                        int k_tot, int ldx) {
  const bd_h16 *s = a_src(p, r, q, k_tot, ldx);
  return s ? *reinterpret_cast<const uint4 *>(s) : make_uint4(0, 0, 0, 0);
}

// The 16 bytes of B (8 reduction positions of output channel m's weight row) at
// position k, or nullptr where they are zeros (past the last channel or k).
__device__ __forceinline__ const bd_h16 *b_src(const bd_cuda_conv_shape &p, const bd_h16 *w,
                                               int m, int k, int k_tot) {
  return m < p.m && k < k_tot ? w + (int64_t)m * k_tot + k : nullptr;
}

// Where output channel oc of pixel pix goes: y at pitch ldy (M when 0), or for a twin's
// second output (oc >= m1s) y2 at pitch ldy2, its channels from 0.
__device__ __forceinline__ bd_h16 *out_at(const bd_cuda_conv_shape &p, bd_h16 *y, int64_t pix,
                                         int oc) {
  if (p.m1 && oc >= bd_cuda_twin_m1s(p.m1))
    return static_cast<bd_h16 *>(p.y2) + pix * p.ldy2 + (oc - bd_cuda_twin_m1s(p.m1));
  return y + pix * (p.ldy ? p.ldy : p.m) + oc;
}

// Where residual channel oc of output pixel pix is: r at pitch ldr (M when 0), at the
// output's pixel, or where the residual is read upsampled (rup > 1, bd_cuda_kernels.h) at
// pixel (oy / rup, ox / rup) of its oh/rup x ow/rup grid (32-bit: n*oh*ow < 2^31).
// A twin's second output (oc >= m1) reads its own residual r2 (pitch ldr2, channels from 0).
// ROUTE false: neither (the patch tile, which refuses both: its registers stay as they were).
template <bool ROUTE>
__device__ __forceinline__ const bd_h16 *res_at(const bd_cuda_conv_shape &p, const bd_h16 *r,
                                                int64_t pix, int oc) {
  if (!ROUTE) return r + pix * (p.ldr ? p.ldr : p.m) + oc;
  if (p.rup > 1) {
    const unsigned u = (unsigned)pix, ow = (unsigned)p.ow, oh = (unsigned)p.oh,
                   f = (unsigned)p.rup, t = u / ow, ox = u - t * ow, n = t / oh, oy = t - n * oh;
    pix = (int64_t)((n * (oh / f) + oy / f) * (ow / f) + ox / f);
  }
  if (p.m1 && oc >= p.m1)
    return static_cast<const bd_h16 *>(p.r2) + pix * (p.ldr2 ? p.ldr2 : p.m - p.m1) +
           (oc - p.m1);
  return r + pix * (p.ldr ? p.ldr : (p.m1 ? p.m1 : p.m)) + oc;
}

// The activation of output channel oc: act, or for a twin's second output (oc >= m1s)
// act2 where set (bd_cuda_kernels.h).
__device__ __forceinline__ int act_at(const bd_cuda_conv_shape &p, int oc) {
  return p.m1 && oc >= bd_cuda_twin_m1s(p.m1) && p.act2 ? p.act2 - 1 : p.act;
}

// The epilogue of 8 channels oc.. of output pixel pix from their FP32 sums: bias,
// activation, residual, one 16-byte store (y's pixels are ldy apart, r's ldr).
template <bool ROUTE>
__device__ __forceinline__ void store8(const bd_cuda_conv_shape &p, const float *acc,
                                      const float *__restrict__ bias, const bd_h16 *__restrict__ r,
                                      bd_h16 *__restrict__ y, int64_t pix, int oc) {
  uint4 rv = make_uint4(0, 0, 0, 0), out;
  if (r) rv = *reinterpret_cast<const uint4 *>(res_at<ROUTE>(p, r, pix, oc));
  const bd_h16x2 *hr = reinterpret_cast<const bd_h16x2 *>(&rv);
  bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&out);
  const int act = act_at(p, oc); // even twins: no group straddles m1
#pragma unroll
  for (int q2 = 0; q2 < 4; ++q2) {
    const float2 fr = bd_h16x2_ld(hr[q2]);
    const float b0 = bias ? bias[oc + 2 * q2] : 0.0f, b1 = bias ? bias[oc + 2 * q2 + 1] : 0.0f;
    ho[q2] = bd_h16x2_st(bd_conv_epilogue(acc[2 * q2], b0, fr.x, act, p.res),
                         bd_conv_epilogue(acc[2 * q2 + 1], b1, fr.y, act, p.res));
  }
  *reinterpret_cast<uint4 *>(out_at(p, y, pix, oc)) = out;
}

// The same where M is not a multiple of 8 (the 68 regression channels of DAMO-YOLO's
// head, yolox's 1- and 4-channel predictions) or ragged twins' m1 is not (the head's box
// and class convs as twins): the up to 8 channels oc.. that exist, one 16-bit store each
// (y, r need no 16-byte alignment; ldy is any pitch >= M), ragged twins' channels
// [m1, m1s) not at all.
template <bool ROUTE>
__device__ __forceinline__ void store_tail(const bd_cuda_conv_shape &p, const float *acc,
                                           const float *__restrict__ bias,
                                           const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                                           int64_t pix, int oc) {
  const int n = p.m - oc < 8 ? p.m - oc : 8;
  for (int j = 0; j < n; ++j) {
    const int c = oc + j;
    if (p.m1 && c >= p.m1 && c < bd_cuda_twin_m1s(p.m1)) break; // the first's padding
    const float rv = r ? bd_ld(*res_at<ROUTE>(p, r, pix, c)) : 0.0f;
    *out_at(p, y, pix, c) = bd_st<bd_h16>(
        bd_conv_epilogue(acc[j], bias ? bias[c] : 0.0f, rv, act_at(p, c), p.res));
  }
}

// Whether 8 channels oc.. of a ragged twins' launch (no residual) go out in one 16-byte
// store: the group whole in its output, whose pitch and base are 16-byte multiples (the
// class scores of a head whose box convs come first, say).
__device__ __forceinline__ bool ragged_vec(const bd_cuda_conv_shape &p, const bd_h16 *y,
                                           int oc) {
  const int m1s = bd_cuda_twin_m1s(p.m1);
  if (oc < m1s) return oc + 8 <= p.m1 && p.ldy % 8 == 0 && !((uintptr_t)y & 15u);
  return oc + 8 <= p.m && p.ldy2 % 8 == 0 && !((uintptr_t)p.y2 & 15u);
}

// An epilogue group: store8 where M (and a twin's m1) is a multiple of 8 (uniform over
// the launch) or a ragged twins' group can (ragged_vec), else store_tail.
template <bool ROUTE = true>
__device__ __forceinline__ void store_group(const bd_cuda_conv_shape &p, const float *acc,
                                            const float *__restrict__ bias,
                                            const bd_h16 *__restrict__ r,
                                            bd_h16 *__restrict__ y, int64_t pix, int oc) {
  if ((p.m % 8 == 0 && p.m1 % 8 == 0) || (p.m1 && ragged_vec(p, y, oc)))
    store8<ROUTE>(p, acc, bias, r, y, pix, oc);
  else
    store_tail<ROUTE>(p, acc, bias, r, y, pix, oc);
}

// What a block does with the FP32 sums cr of 8 channels oc.. of pixel pix: the epilogue
// (store_group), or for part z of a split its partial sums ([z][pixel][channel], M
// rounded up to 8 channels a pixel) for k_splitk_epilogue.
__device__ __forceinline__ void out_group(const bd_cuda_conv_shape &p, const float *cr,
                                          float *__restrict__ part, int64_t n_pix,
                                          const float *__restrict__ bias,
                                          const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                                          int64_t pix, int oc) {
  if (part) {
    const int m8 = (p.m + 7) & ~7;
    float4 *o = reinterpret_cast<float4 *>(part + ((int64_t)blockIdx.z * n_pix + pix) * m8 + oc);
    o[0] = make_float4(cr[0], cr[1], cr[2], cr[3]);
    o[1] = make_float4(cr[4], cr[5], cr[6], cr[7]);
    return;
  }
  store_group(p, cr, bias, r, y, pix, oc);
}

// A block's output from its FP32 tile c (ldc floats a row): `rows` rows of pixels m0..
// and BN channels n0.., 8 channels a group (out_group), spread over the block's NT
// threads; pixels and channels past the layer's are skipped (the last group may be
// partial: store_group).
template <int BN, int NT>
__device__ __forceinline__ void out_tile(const bd_cuda_conv_shape &p, const float *c, int ldc,
                                         int rows, int64_t m0, int n0, int64_t n_pix,
                                         float *__restrict__ part, const float *__restrict__ bias,
                                         const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y) {
  for (int e = threadIdx.x; e < rows * BN / 8; e += NT) {
    const int row = e / (BN / 8), col = (e % (BN / 8)) * 8;
    const int64_t pix = m0 + row;
    const int oc = n0 + col;
    if (pix >= n_pix || oc >= p.m) continue;
    out_group(p, &c[row * ldc + col], part, n_pix, bias, r, y, pix, oc);
  }
}

// One warp's FM*16 x FN*16 (32x32 in k_conv_mma) of a k-slice (BKT deep, rows BKT + 8
// apart) from the shared tiles: FM x FN WMMA fragments, FP32.
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;
template <int FM, int FN, int BKT = BK>
__device__ __forceinline__ void mma_slice(Acc (&acc)[FM][FN], const bd_h16 *sa, const bd_h16 *sb,
                                          int wm, int wn) {
  constexpr int LDK = BKT + 8;
#pragma unroll
  for (int kk = 0; kk < BKT; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bd_h16, wmma::row_major> fa[FM];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bd_h16, wmma::col_major> fb[FN];
#pragma unroll
    for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], &sa[(wm + 16 * i) * LDK + kk], LDK);
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], &sb[(wn + 16 * j) * LDK + kk], LDK);
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
  }
}

template <int FM, int FN> __device__ __forceinline__ void zero_acc(Acc (&acc)[FM][FN]) {
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
}

// One warp's accumulators into the shared FP32 tile c (ldc floats a row; the warp's
// first row is row wm of c).
template <int FM, int FN>
__device__ __forceinline__ void store_acc(Acc (&acc)[FM][FN], float *c, int ldc, int wm, int wn) {
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
      wmma::store_matrix_sync(&c[(wm + 16 * i) * ldc + wn + 16 * j], acc[i][j], ldc,
                              wmma::mem_row_major);
}

template <int BM, int BN>
__global__ void __launch_bounds__(THREADS)
    k_conv_mma(bd_cuda_conv_shape p, const bd_h16 *__restrict__ x, const bd_h16 *__restrict__ w,
               const float *__restrict__ bias, const bd_h16 *__restrict__ r,
               bd_h16 *__restrict__ y, float *__restrict__ part, int kper) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  static_assert((BM / 32) * (BN / 32) == THREADS / 32, "one 32x32 warp tile per warp");
  static_assert(sizeof(Smem<BM, BN>) <= 48 * 1024, "static shared memory");
  // Loader chunks (16 bytes: 8 k of one row) per thread; every chunk of a thread has the
  // same k offset kc, since THREADS is a multiple of the 4 chunks of a row.
  constexpr int AC = BM * BK / 8 / THREADS, BC = (BN * BK / 8 + THREADS - 1) / THREADS;
  constexpr int LDC = Smem<BM, BN>::LDC;
  __shared__ __align__(16) Smem<BM, BN> sm;
  const int tid = threadIdx.x, warp = tid / 32, kc = (tid % 4) * 8;
  const int64_t n_pix = (int64_t)p.n * p.oh * p.ow;
  const int k_tot = p.kh * p.kw * p.c, ldx = p.ldx ? p.ldx : p.c;
  const int64_t m0 = (int64_t)blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  // This block's k range: all of it, or part blockIdx.z of a split (kper: a multiple of
  // BK, so no slice crosses into the next part).
  const int kb = part ? (int)blockIdx.z * kper : 0;
  const int ke = part && kb + kper < k_tot ? kb + kper : k_tot;
  ARow ar[AC];
#pragma unroll
  for (int i = 0; i < AC; ++i) ar[i] = a_row(p, x, m0 + (tid + i * THREADS) / 4, n_pix, ldx);
  KPos q = {0, 0, 0, 0};
  k_advance(p, q, kb + kc);

  Acc acc[2][2];
  zero_acc(acc);
  const int wm = (warp / (BN / 32)) * 32, wn = (warp % (BN / 32)) * 32; // this warp's 32x32

  uint4 ra[AC], rb[BC];
  // B chunk i: weight row n0 + (tid + i*THREADS)/4 (a channel) at k + kc, or zeros.
  auto load_b = [&](int i, int k) {
    const int idx = tid + i * THREADS;
    const bd_h16 *s = idx < BN * 4 ? b_src(p, w, n0 + idx / 4, k + kc, k_tot) : nullptr;
    return s ? *reinterpret_cast<const uint4 *>(s) : make_uint4(0, 0, 0, 0);
  };
#pragma unroll
  for (int i = 0; i < AC; ++i) ra[i] = load_a(p, ar[i], q, k_tot, ldx);
#pragma unroll
  for (int i = 0; i < BC; ++i) rb[i] = load_b(i, kb);
  int buf = 0;
  for (int k0 = kb; k0 < ke; k0 += BK, buf ^= 1) {
    bd_h16 *sa = sm.in.a[buf], *sb = sm.in.b[buf];
#pragma unroll
    for (int i = 0; i < AC; ++i)
      *reinterpret_cast<uint4 *>(&sa[((tid + i * THREADS) / 4) * LDS + kc]) = ra[i];
#pragma unroll
    for (int i = 0; i < BC; ++i)
      if (tid + i * THREADS < BN * 4)
        *reinterpret_cast<uint4 *>(&sb[((tid + i * THREADS) / 4) * LDS + kc]) = rb[i];
    // One barrier: this buffer is complete, and every warp is done with the other one
    // (multiplied in the previous slice), which the next slice's stores overwrite.
    __syncthreads();
    const int k1 = k0 + BK; // prefetch the next slice while this one is multiplied
    if (k1 < ke) {
      k_advance(p, q, BK);
#pragma unroll
      for (int i = 0; i < AC; ++i) ra[i] = load_a(p, ar[i], q, k_tot, ldx);
#pragma unroll
      for (int i = 0; i < BC; ++i) rb[i] = load_b(i, k1);
    }
    mma_slice(acc, sa, sb, wm, wn);
  }
  __syncthreads(); // every warp is done with the input tiles that sm.c overlays
  // Accumulators -> shared -> epilogue, 8 channels a store.
  store_acc(acc, sm.c, LDC, wm, wn);
  __syncthreads();
  out_tile<BN, THREADS>(p, sm.c, LDC, BM, m0, n0, n_pix, part, bias, r, y);
}

// ---- Asynchronous-copy tiles (5: 128x64, 6: 64x128; 7-13 below) ----
// The same GEMM and epilogue, but the k-slices reach shared memory through cp.async
// (sm_80+: global -> shared without registers, zero-filled for padding and edges) in an
// ST-deep ring: while one slice is multiplied the next ST-1 are in flight, where
// k_conv_mma has one slice staged in registers. For the 3x3 layers where ours trails
// cuDNN (first H100 run: 2x slower at 40x40x152 -> 192); chosen per layer only where
// measured faster (bd_cuda_conv_choose).
//
// Tiles 7-13 (second H100 profile: tiles 5/6 run DAMO-T's compute-bound 3x3 layers at
// 95-120 TFLOP/s where cuDNN's fused ones reach 300-370, and each 128x64 block of a
// 192-channel 3x3 layer pulls ~660 KB from L2 for 28 MFLOP): 7 is 128x128 with 64x32 warp
// tiles (twice the work per byte brought in and per fragment loaded; 2 stages to stay in
// 48 KB, the accumulators staged in two halves; at most 128 registers for 2 blocks an
// SM), 8 and 9 are tiles 5 and 6 with A's copies cached in L1 (cp.async.ca): a 3x3
// window re-reads each input pixel up to 9 times within a block, which .cg (L2 only)
// fetches from L2 each time. Unmeasured when written: the choice at load keeps them only
// where they are faster. 10 and 11 split tiles 8 and 9 as 4 and 3 split k_conv_mma's
// (batch 1, where 46 of DAMO-T's layers ran the register-staged split tiles). 12 is 128 x
// 32 on 4 warps (38 KB, 94 registers: 5 blocks an SM) for the 24- and 32-channel layers
// on large images, which the 256x32 register-staged tile (2 blocks an SM) ran at 0.5-1.7
// TB/s and 47-74 TFLOP/s: latency-bound, neither memory- nor compute-bound; 13 is 64 x
// 64 the same way for the 48-64-channel ones (cuDNN's fused 160x160x24 -> 64 3x3 ran at
// 114 TFLOP/s and 1.3 TB/s, the 128x64 tiles' 40x40x64 layers at ~96 TFLOP/s).
//
// Tiles 14-16 (unmeasured when written) take the 48 KB limit off: the ring lives in
// dynamic shared memory (DYN), so warp tiles can be 64 wide with 3-4 stages, the shape
// CUTLASS's sm_80 f16 GEMMs use (128x128x64, 64x64 warps, 3 stages). The H100 log has
// cuDNN's fused 3x3 layers 1.3-2.3x faster than tiles 5/6 (40x40x152 -> 192: 89 vs 205
// us), while ours wins every 1x1 layer; a 32x32 warp tile loads 4 fragments per 4 MMAs
// from shared memory, a 64x64 one 8 per 16, and 64-deep slices halve the barriers a
// k-range. 14: 128x128 of 64x64 warps (4 warps), 64-deep slices, 3 stages, 110.6 KB;
// 15: tile 7's 128x128 of 64x32 warps with 4 stages (81.9 KB); 16: 256x64 of 64x64 warps
// for 64-channel layers on large images, 4 stages (102.4 KB). ptxas (sm_90a): 252, 126,
// 254 registers, no spills; 2 blocks an SM.

// Shared memory of an async tile: the ring, overlaid by the FP32 accumulator tile for the
// epilogue, CROWS rows at a time (all BM where that fits the 48 KB of static shared
// memory, else half).
template <int BM, int BN, int ST, int BKT = BK, bool DYN = false> struct SmemAsync {
  static constexpr int LDSK = BKT + 8; // 16-bit elements a ring row: BKT k and 8 of skew
  static constexpr int LDC = BN + 4;
  static constexpr int CROWS = DYN || BM * LDC * 4 <= 48 * 1024 ? BM : BM / 2;
  union {
    struct {
      bd_h16 a[ST][BM * LDSK];
      bd_h16 b[ST][BN * LDSK];
    } in;
    float c[CROWS * LDC];
  };
};

// An async tile's shared memory: static (at most 48 KB), or the launch's dynamic shared
// memory (DYN; the emulation, which runs one block at a time, keeps a static either way).
template <typename Sm, bool DYN> __device__ __forceinline__ Sm &async_smem() {
#ifdef BD_KERNEL_EMU
  __shared__ __align__(16) Sm sm;
  return sm;
#else
  if constexpr (DYN) {
    extern __shared__ __align__(16) unsigned char bd_conv_dyn_smem[];
    return *reinterpret_cast<Sm *>(bd_conv_dyn_smem);
  } else {
    __shared__ __align__(16) Sm sm;
    return sm;
  }
#endif
}

// 16 bytes global -> shared, or 16 zero bytes (ok false: g is not read); CA: through L1.
template <bool CA> __device__ __forceinline__ void cp16(bd_h16 *s, const bd_h16 *g, bool ok) {
#if defined(BD_KERNEL_EMU)
  emu_cp_async16(s, g, ok); // lands at this thread's cp_wait (cuda_block_emu.h)
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  *reinterpret_cast<uint4 *>(s) = ok ? *reinterpret_cast<const uint4 *>(g) : make_uint4(0, 0, 0, 0);
#else
  const unsigned sa = (unsigned)__cvta_generic_to_shared(s);
  if (CA)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g),
                 "r"(ok ? 16 : 0));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g),
                 "r"(ok ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_commit() {
#if defined(BD_KERNEL_EMU)
  emu_cp_commit();
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_wait() {
#if defined(BD_KERNEL_EMU)
  emu_cp_wait(N);
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// BM x BN block tile of WM x WN warp tiles (one warp each), ST ring stages of BKT-deep
// k-slices, A through L1 (CA); MINB: blocks an SM must hold (the register budget); DYN:
// the ring in dynamic shared memory (past 48 KB).
template <int BM, int BN, int WM, int WN, int ST, bool CA, int MINB, int BKT = BK,
          bool DYN = false>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB)
    k_conv_mma_async(bd_cuda_conv_shape p, const bd_h16 *__restrict__ x,
                     const bd_h16 *__restrict__ w, const float *__restrict__ bias,
                     const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                     float *__restrict__ part, int kper) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  typedef SmemAsync<BM, BN, ST, BKT, DYN> Sm;
  constexpr int NT = (BM / WM) * (BN / WN) * 32; // threads: one warp per warp tile
  constexpr int RC = BKT / 8;                      // loader chunks (16 bytes) a ring row
  static_assert(BKT % 16 == 0 && NT % 128 == 0 && NT % RC == 0 && BM * RC % NT == 0,
                "whole loader chunks per thread, all at one k offset");
  static_assert(DYN || sizeof(Sm) <= 48 * 1024, "static shared memory");
  static_assert(Sm::CROWS % WM == 0, "a warp's rows in one epilogue pass");
  constexpr int AC = BM * RC / NT, BC = (BN * RC + NT - 1) / NT, LDK = Sm::LDSK;
  constexpr int LDC = Sm::LDC, CROWS = Sm::CROWS, FM = WM / 16, FN = WN / 16;
  Sm &sm = async_smem<Sm, DYN>();
  const int tid = threadIdx.x, warp = tid / 32, kc = (tid % RC) * 8;
  const int64_t n_pix = (int64_t)p.n * p.oh * p.ow;
  const int k_tot = p.kh * p.kw * p.c, ldx = p.ldx ? p.ldx : p.c;
  // This block's k range, as in k_conv_mma: all of it, or part blockIdx.z of a split.
  const int kb = part ? (int)blockIdx.z * kper : 0;
  const int ke = part && kb + kper < k_tot ? kb + kper : k_tot;
  const int slices = (ke - kb + BKT - 1) / BKT;
  const int64_t m0 = (int64_t)blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  ARow ar[AC];
#pragma unroll
  for (int i = 0; i < AC; ++i) ar[i] = a_row(p, x, m0 + (tid + i * NT) / RC, n_pix, ldx);
  KPos q = {0, 0, 0, 0}; // this thread's position in the next slice to issue: k = ki + kc
  k_advance(p, q, kb + kc);
  int ki = kb;
  // Slice at ki (this thread's chunks) into ring stage st, then the position moves on.
  auto issue = [&](int st) {
    bd_h16 *sa = sm.in.a[st], *sb = sm.in.b[st];
#pragma unroll
    for (int i = 0; i < AC; ++i) {
      const bd_h16 *g = a_src(p, ar[i], q, k_tot, ldx);
      cp16<CA>(&sa[((tid + i * NT) / RC) * LDK + kc], g ? g : x, g != nullptr);
    }
#pragma unroll
    for (int i = 0; i < BC; ++i) {
      const int idx = tid + i * NT;
      if (idx >= BN * RC) continue;
      const bd_h16 *g = b_src(p, w, n0 + idx / RC, ki + kc, k_tot);
      cp16<false>(&sb[(idx / RC) * LDK + kc], g ? g : w, g != nullptr);
    }
    ki += BKT;
    k_advance(p, q, BKT);
  };
#pragma unroll
  for (int st = 0; st < ST - 1; ++st) {
    if (st < slices) issue(st);
    cp_commit(); // one group per slice, empty or not: wait_group counts stay uniform
  }
  Acc acc[FM][FN];
  zero_acc(acc);
  const int wm = (warp / (BN / WN)) * WM, wn = (warp % (BN / WN)) * WN;
  for (int t = 0; t < slices; ++t) {
    // Slice t has landed (this thread's copies; the barrier: everyone's), and every warp
    // is done with slice t - 1, whose stage the issue below refills.
    cp_wait<ST - 2>();
    __syncthreads();
    if (t + ST - 1 < slices) issue((t + ST - 1) % ST);
    cp_commit();
    const bd_h16 *sa = sm.in.a[t % ST], *sb = sm.in.b[t % ST];
    mma_slice<FM, FN, BKT>(acc, sa, sb, wm, wn);
  }
  cp_wait<0>(); // no copy may land in the ring that sm.c overlays
  // Accumulators -> shared -> epilogue, CROWS rows a pass (one pass where they all fit).
#pragma unroll
  for (int r0 = 0; r0 < BM; r0 += CROWS) {
    __syncthreads(); // every warp is done with the ring (or the previous pass's rows)
    if (wm >= r0 && wm < r0 + CROWS) store_acc(acc, sm.c, LDC, wm - r0, wn);
    __syncthreads();
    out_tile<BN, NT>(p, sm.c, LDC, CROWS, m0 + r0, n0, n_pix, part, bias, r, y);
  }
}

// Split-K, second step: per 8 channels of one output pixel, the parts' sums added in part
// order (FP32), then bias, activation and residual as in k_conv_mma's epilogue.
__global__ void k_splitk_epilogue(bd_cuda_conv_shape p, const float *__restrict__ part,
                                  int splits, const float *__restrict__ bias,
                                  const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  const int m8 = (p.m + 7) & ~7; // the partials' channels a pixel
  const int64_t n_pix = (int64_t)p.n * p.oh * p.ow, groups = n_pix * (m8 / 8);
  const int64_t stride = n_pix * m8;
  for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups;
       g += (int64_t)gridDim.x * blockDim.x) {
    const int64_t pix = g / (m8 / 8);
    const int oc = (int)(g % (m8 / 8)) * 8;
    const int64_t o = pix * m8 + oc;
    float acc[8];
    {
      const float4 *q = reinterpret_cast<const float4 *>(part + o);
      const float4 a = q[0], b = q[1];
      acc[0] = a.x, acc[1] = a.y, acc[2] = a.z, acc[3] = a.w;
      acc[4] = b.x, acc[5] = b.y, acc[6] = b.z, acc[7] = b.w;
    }
    for (int z = 1; z < splits; ++z) {
      const float4 *q = reinterpret_cast<const float4 *>(part + z * stride + o);
      const float4 a = q[0], b = q[1];
      acc[0] += a.x, acc[1] += a.y, acc[2] += a.z, acc[3] += a.w;
      acc[4] += b.x, acc[5] += b.y, acc[6] += b.z, acc[7] += b.w;
    }
    store_group(p, acc, bias, r, y, pix, oc);
  }
}

// The grid of a BM x BN tile over shape p with `splits` parts (one: unsplit) and its
// parts' k range; false when it passes the grid limits.
template <int BM, int BN, int BKT = BK>
bool tile_grid(const bd_cuda_conv_shape *p, int splits, dim3 *grid, int *kper) {
  const int64_t n_pix = (int64_t)p->n * p->oh * p->ow;
  const int64_t gx = (n_pix + BM - 1) / BM, gy = (p->m + BN - 1) / BN;
  if (gx > 0x7fffffff || gy > 65535) return false;
  const int k_tot = p->kh * p->kw * p->c, slices = (k_tot + BKT - 1) / BKT;
  *kper = splits > 1 ? (slices + splits - 1) / splits * BKT : 0;
  *grid = dim3((unsigned)gx, (unsigned)gy, (unsigned)(splits > 1 ? splits : 1));
  return true;
}

// After a split tile: the parts added and the epilogue (k_splitk_epilogue).
cudaError_t split_sum(const bd_cuda_conv_shape *p, int splits, const float *part,
                      const float *bias, const void *r, void *y, cudaStream_t s) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || splits < 2) return e;
  const int64_t n_pix = (int64_t)p->n * p->oh * p->ow;
  BD_LAUNCH(k_splitk_epilogue, bd_grid(n_pix * ((p->m + 7) / 8), 256), 256, s, *p, part, splits,
            bias, (const bd_h16 *)r, (bd_h16 *)y);
  return cudaGetLastError();
}

#ifndef BD_KERNEL_EMU
// Kernel k's dynamic shared memory limit raised to `bytes` once per GPU (a host-side
// attribute, legal while capturing). raised: the kernel's own record per device (0 not
// yet, 1 done, else the error it gave); *dev: the current device. An error where the GPU
// has less: the choice skips the tile.
template <typename K>
cudaError_t raise_dyn_smem(K k, size_t bytes, int (&raised)[64], int *dev) {
  int st;
  cudaError_t e = cudaGetDevice(dev);
  if (e != cudaSuccess) return e;
  if (*dev < 0 || *dev >= 64) return cudaErrorInvalidDevice;
  if (!(st = __atomic_load_n(&raised[*dev], __ATOMIC_ACQUIRE))) {
    e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    st = e == cudaSuccess ? 1 : (int)e;
    __atomic_store_n(&raised[*dev], st, __ATOMIC_RELEASE);
  }
  return st == 1 ? cudaSuccess : (cudaError_t)st;
}
#endif

template <int BM, int BN>
cudaError_t launch(const bd_cuda_conv_shape *p, const void *x, const void *w, const float *bias,
                   const void *r, void *y, int splits, void *ws, cudaStream_t s) {
  dim3 grid;
  int kper = 0;
  if ((int64_t)p->n * p->oh * p->ow == 0) return cudaSuccess;
  if (!tile_grid<BM, BN>(p, splits, &grid, &kper)) return cudaErrorInvalidValue;
  float *part = splits > 1 ? (float *)ws : nullptr;
  BD_LAUNCH(BD_K(k_conv_mma<BM, BN>), grid, THREADS, s, *p, (const bd_h16 *)x, (const bd_h16 *)w,
            bias, (const bd_h16 *)r, (bd_h16 *)y, part, kper);
  return split_sum(p, splits, part, bias, r, y, s);
}

template <int BM, int BN, int WM, int WN, int ST, bool CA, int MINB, int BKT = BK,
          bool DYN = false>
cudaError_t launch_async(const bd_cuda_conv_shape *p, const void *x, const void *w,
                         const float *bias, const void *r, void *y, int splits, void *ws,
                         cudaStream_t s) {
  dim3 grid;
  int kper = 0;
  if ((int64_t)p->n * p->oh * p->ow == 0) return cudaSuccess;
  if (!tile_grid<BM, BN, BKT>(p, splits, &grid, &kper)) return cudaErrorInvalidValue;
  float *part = splits > 1 ? (float *)ws : nullptr;
  constexpr size_t smem = DYN ? sizeof(SmemAsync<BM, BN, ST, BKT, DYN>) : 0;
#ifndef BD_KERNEL_EMU
  if (DYN) {
    static int raised[64];
    int dev = 0;
    const cudaError_t e = raise_dyn_smem(k_conv_mma_async<BM, BN, WM, WN, ST, CA, MINB, BKT, DYN>,
                                         smem, raised, &dev);
    if (e != cudaSuccess) return e;
  }
#endif
  (void)smem; // the emulation's BD_LAUNCH_SMEM has no use for it
  BD_LAUNCH_SMEM(BD_K(k_conv_mma_async<BM, BN, WM, WN, ST, CA, MINB, BKT, DYN>), grid,
                 (BM / WM) * (BN / WN) * 32, smem, s, *p, (const bd_h16 *)x, (const bd_h16 *)w,
                 bias, (const bd_h16 *)r, (bd_h16 *)y, part, kper);
  return split_sum(p, splits, part, bias, r, y, s);
}

// ---- Tiles 18-23: Hopper warpgroup MMA (wgmma) ----
// The tiles above multiply with mma.sync (through WMMA or directly), which on an H100
// issues a warp's 16x8x16 products one instruction at a time and feeds them from
// registers loaded out of shared memory; the second H100 profile has them at ~100
// TFLOP/s where cuDNN's Hopper kernels reach 194-370 on the same 3x3 layers. wgmma (sm_90a)
// has a warpgroup (4 warps) multiply a 64 x N x 16 step with both operands read straight
// from shared memory by descriptors, asynchronously: the next k-slices' copies and the
// current slice's products overlap without register staging. Same implicit GEMM, loaders
// (a_src, b_src: cp.async, zero-filled padding) and epilogue (out_group) as the async
// tiles; 128 pixels a block (two warpgroups of 64 rows), N = BN output channels (128:
// tile 18, 64: tile 19, 192: 21, 96: 22; 20 and 23: 19 and 22 split-K; the 96- and
// 192-wide ones because 96 and 192 channels are half of DAMO-YOLO's arithmetic, which
// 64- or 128-wide tiles run with a quarter of their products thrown away), 64-deep
// k-slices in an ST-deep ring in dynamic shared memory, ST - 2 slices' copies in flight
// and one slice's wgmma still running while the next is issued.
//
// Shared layout of a slice ("K-major, no swizzle"): core matrices of 8 rows x 8 k (16
// bytes a row, 128 contiguous bytes), element (row, k) of a slice at
// ((row / 8) * 8 + k / 8) * 64 + (row % 8) * 8 + k % 8; so along k core matrices are 128
// bytes apart (the descriptor's leading byte offset) and along rows 1024 (its stride
// byte offset). A loader chunk (16 bytes: 8 k of one row) is one core-matrix row: thread
// tid's chunk i is chunk index tid + 256 i of that order, so a warp's copies fill 512
// contiguous bytes and every chunk of a thread has the same k offset ((tid / 8) % 8) * 8.
//
// Only on an sm_90 GPU (sm_90a code) and with BATCHDET_CUDA_WGMMA=1
// (bd_cuda_conv_wgmma_ready): written without a Hopper to run it on, so it stays out of
// the conv choice until a device run has checked it; the choice then compares its output
// with cuDNN's as for every tile. The kernel emulation runs it by the PTX ISA's
// descriptor and fragment rules (cuda_mma_emu.h: emu_wgmma).
#if defined(BD_KERNEL_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BD_WGMMA 1 // this compilation runs wgmma
#else
#define BD_WGMMA 0
#endif
#ifdef BD_CUDA_BF16
#define BD_WG_T "bf16"
#else
#define BD_WG_T "f16"
#endif
constexpr int WG_BM = 128, WG_BK = 64, WG_NT = 256;

template <int BN, int ST> struct SmemWg {
  static constexpr int LDC = BN + 4;
  union {
    struct {
      bd_h16 a[ST][WG_BM * WG_BK]; // core-matrix order (above)
      bd_h16 b[ST][BN * WG_BK];
    } in;
    float c[WG_BM * LDC];
  };
};

#if BD_WGMMA
// The shared-window address of p (what a wgmma descriptor holds).
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
#ifdef BD_KERNEL_EMU
  return emu_smem_u32(p);
#else
  return (uint32_t)__cvta_generic_to_shared(p);
#endif
}

// The descriptor of a K-major, unswizzled operand whose first core matrix is at s: start
// address, leading byte offset 128 (the next 8 k), stride byte offset 1024 (the next 8
// rows), base offset 0, swizzle mode 0 (the 14-bit fields hold bytes / 16).
__device__ __forceinline__ uint64_t wg_desc(const bd_h16 *s) {
  return (uint64_t)((smem_u32(s) & 0x3FFFFu) >> 4) | ((uint64_t)(128 >> 4) << 16) |
         ((uint64_t)(1024 >> 4) << 32);
}

__device__ __forceinline__ void wg_fence() { // before a batch: registers and shared written
#if defined(BD_KERNEL_EMU)
#else
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_commit() {
#if defined(BD_KERNEL_EMU)
  emu_wg_commit();
#else
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void wg_wait() {
#if defined(BD_KERNEL_EMU)
  emu_wg_wait(N);
#else
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// This thread's cp.async (generic proxy) writes to shared memory ordered before the wgmma
// reads (async proxy) that follow the next barrier.
__device__ __forceinline__ void proxy_fence() {
#ifdef BD_KERNEL_EMU
  emu_px_fence(); // the emulation checks that wgmma reads no unfenced copy
#else
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// The accumulators as operands of nothing: the compiler may not move their reads or
// writes across this point (wgmma writes them behind its back until the wait).
template <int N> __device__ __forceinline__ void acc_fence(float (&d)[N]) {
#ifndef BD_KERNEL_EMU
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
  (void)d;
#endif
}

// d (this thread's BN / 2 accumulators of its warpgroup's 64 x BN tile) += A (64 x 16 at
// descriptor da) * B (BN x 16 at db)^T: wgmma.mma_async m64nBNk16, FP32 accumulate, both
// operands K-major (no transpose). d's layout: thread l of warp q (of the warpgroup) holds
// rows 16 q + l / 4 (d[4 j], d[4 j + 1]) and that + 8 (d[4 j + 2], d[4 j + 3]) at columns
// 8 j + 2 (l % 4) and + 1.
template <int BN>
__device__ __forceinline__ void wgmma_k16(float (&d)[BN / 2], uint64_t da, uint64_t db);
#if defined(BD_KERNEL_EMU)
template <int BN>
__device__ __forceinline__ void wgmma_k16(float (&d)[BN / 2], uint64_t da, uint64_t db) {
  emu_wgmma<bd_h16>(d, BN, da, db);
}
#else
// One wgmma.mma_async m64nNk16 per specialization: the accumulator operands %0..%(N/2 - 1)
// in chunks of 8 (WG_R, WG_D), then the two descriptors. Scale-d 1 (accumulate), scales
// of A and B 1, neither transposed (both K-major).
#define WG_R(a, b, c, d, e, f, g, h) \
  "%" #a ", %" #b ", %" #c ", %" #d ", %" #e ", %" #f ", %" #g ", %" #h
#define WG_D(i)                                                                          \
  "+f"(d[8 * (i)]), "+f"(d[8 * (i) + 1]), "+f"(d[8 * (i) + 2]), "+f"(d[8 * (i) + 3]),     \
      "+f"(d[8 * (i) + 4]), "+f"(d[8 * (i) + 5]), "+f"(d[8 * (i) + 6]), "+f"(d[8 * (i) + 7])
#define WG_R32                                                                           \
  WG_R(0, 1, 2, 3, 4, 5, 6, 7) ", " WG_R(8, 9, 10, 11, 12, 13, 14, 15) ", "             \
      WG_R(16, 17, 18, 19, 20, 21, 22, 23) ", " WG_R(24, 25, 26, 27, 28, 29, 30, 31)
#define WG_R48 \
  WG_R32 ", " WG_R(32, 33, 34, 35, 36, 37, 38, 39) ", " WG_R(40, 41, 42, 43, 44, 45, 46, 47)
#define WG_R64 \
  WG_R48 ", " WG_R(48, 49, 50, 51, 52, 53, 54, 55) ", " WG_R(56, 57, 58, 59, 60, 61, 62, 63)
#define WG_R96                                                                           \
  WG_R64 ", " WG_R(64, 65, 66, 67, 68, 69, 70, 71) ", " WG_R(72, 73, 74, 75, 76, 77, 78, 79) \
      ", " WG_R(80, 81, 82, 83, 84, 85, 86, 87) ", " WG_R(88, 89, 90, 91, 92, 93, 94, 95)
#define WG_D32 WG_D(0), WG_D(1), WG_D(2), WG_D(3)
#define WG_D48 WG_D32, WG_D(4), WG_D(5)
#define WG_D64 WG_D48, WG_D(6), WG_D(7)
#define WG_D96 WG_D64, WG_D(8), WG_D(9), WG_D(10), WG_D(11)
// The specialization of wgmma_k16 for N (N / 2 accumulators %0..%(N/2 - 1), then the
// descriptors DA and DB).
#define WG_K16(N, REGS, DA, DB, OUTS)                                                       \
  template <>                                                                              \
  __device__ __forceinline__ void wgmma_k16<N>(float (&d)[N / 2], uint64_t da, uint64_t db) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." BD_WG_T "." BD_WG_T      \
                 " {" REGS "}, " DA ", " DB ", 1, 1, 1, 0, 0;\n"                           \
                 : OUTS                                                                   \
                 : "l"(da), "l"(db));                                                     \
  }
WG_K16(64, WG_R32, "%32", "%33", WG_D32)
WG_K16(96, WG_R48, "%48", "%49", WG_D48)
WG_K16(128, WG_R64, "%64", "%65", WG_D64)
WG_K16(192, WG_R96, "%96", "%97", WG_D96)
#endif
#endif // BD_WGMMA

template <int BN, int ST>
__global__ void __launch_bounds__(WG_NT, BN <= 96 ? 2 : 1)
    k_conv_wgmma(bd_cuda_conv_shape p, const bd_h16 *__restrict__ x,
                 const bd_h16 *__restrict__ w, const float *__restrict__ bias,
                 const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y, float *__restrict__ part,
                 int kper) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
#if BD_WGMMA
  typedef SmemWg<BN, ST> Sm;
  constexpr int NACC = BN / 2, LA = ST - 2; // slices whose copies are in flight
  constexpr int AC = WG_BM * 8 / WG_NT, BC = (BN * 8 + WG_NT - 1) / WG_NT, LDC = Sm::LDC;
  static_assert(ST >= 3 && AC * WG_NT == WG_BM * 8, "ring and loader");
  Sm &sm = async_smem<Sm, true>();
#ifdef BD_KERNEL_EMU
  emu_wg_begin(&sm, sizeof sm);
#endif
  const int tid = threadIdx.x, kc = ((tid / 8) % 8) * 8, wg = tid / 128;
  const int64_t n_pix = (int64_t)p.n * p.oh * p.ow;
  const int k_tot = p.kh * p.kw * p.c, ldx = p.ldx ? p.ldx : p.c;
  const int kb = part ? (int)blockIdx.z * kper : 0; // as in k_conv_mma
  const int ke = part && kb + kper < k_tot ? kb + kper : k_tot;
  const int slices = (ke - kb + WG_BK - 1) / WG_BK;
  const int64_t m0 = (int64_t)blockIdx.x * WG_BM;
  const int n0 = blockIdx.y * BN;
  // Chunk i of this thread: index c = tid + 256 i of the core-matrix order, row
  // (c / 64) * 8 + c % 8 of the tile, k offset kc.
  ARow ar[AC];
#pragma unroll
  for (int i = 0; i < AC; ++i) {
    const int c = tid + i * WG_NT;
    ar[i] = a_row(p, x, m0 + (c / 64) * 8 + c % 8, n_pix, ldx);
  }
  KPos q = {0, 0, 0, 0};
  k_advance(p, q, kb + kc);
  int ki = kb;
  auto issue = [&](int st) {
    bd_h16 *sa = sm.in.a[st], *sb = sm.in.b[st];
#pragma unroll
    for (int i = 0; i < AC; ++i) {
      const int c = tid + i * WG_NT;
      const bd_h16 *g = a_src(p, ar[i], q, k_tot, ldx);
      cp16<true>(&sa[c * 8], g ? g : x, g != nullptr);
    }
#pragma unroll
    for (int i = 0; i < BC; ++i) {
      const int c = tid + i * WG_NT;
      if (c >= BN * 8) continue;
      const bd_h16 *g = b_src(p, w, n0 + (c / 64) * 8 + c % 8, ki + kc, k_tot);
      cp16<false>(&sb[c * 8], g ? g : w, g != nullptr);
    }
    ki += WG_BK;
    k_advance(p, q, WG_BK);
  };
#pragma unroll
  for (int s = 0; s < LA; ++s) {
    if (s < slices) issue(s);
    cp_commit(); // one group per slice, empty or not
  }
  float acc[NACC];
#pragma unroll
  for (int i = 0; i < NACC; ++i) acc[i] = 0.0f;
  for (int t = 0; t < slices; ++t) {
    // Slice t has landed (this thread's copies, made visible to wgmma's reads; the
    // barrier: everyone's), and every warpgroup's wgmma of slice t - 2 is done (the wait
    // below, one slice back), whose stage the issue refills.
    cp_wait<LA - 1>();
    proxy_fence();
    __syncthreads();
    if (t + LA < slices) issue((t + LA) % ST);
    cp_commit();
    const bd_h16 *sa = sm.in.a[t % ST] + wg * 64 * WG_BK, *sb = sm.in.b[t % ST];
    acc_fence(acc);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < WG_BK / 16; ++kk) // 16 k = two core matrices on: 128 elements
      wgmma_k16<BN>(acc, wg_desc(sa + kk * 128), wg_desc(sb + kk * 128));
    wg_commit();
    wg_wait<1>(); // slice t - 1's products are done; slice t's may still run
    acc_fence(acc);
  }
  wg_wait<0>();
  acc_fence(acc);
  cp_wait<0>(); // no copy may land in the ring that sm.c overlays
  __syncthreads(); // every warpgroup is done reading the ring
  {
    const int lane = tid % 32, r0 = wg * 64 + ((tid % 128) / 32) * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int c = j * 8 + (lane % 4) * 2;
      sm.c[r0 * LDC + c] = acc[4 * j];
      sm.c[r0 * LDC + c + 1] = acc[4 * j + 1];
      sm.c[(r0 + 8) * LDC + c] = acc[4 * j + 2];
      sm.c[(r0 + 8) * LDC + c + 1] = acc[4 * j + 3];
    }
  }
  __syncthreads();
  out_tile<BN, WG_NT>(p, sm.c, LDC, WG_BM, m0, n0, n_pix, part, bias, r, y);
#else
  (void)p, (void)x, (void)w, (void)bias, (void)r, (void)y, (void)part, (void)kper;
#endif
}

template <int BN, int ST>
cudaError_t launch_wgmma(const bd_cuda_conv_shape *p, const void *x, const void *w,
                         const float *bias, const void *r, void *y, int splits, void *ws,
                         cudaStream_t s) {
  dim3 grid;
  int kper = 0;
  if ((int64_t)p->n * p->oh * p->ow == 0) return cudaSuccess;
  if (!tile_grid<WG_BM, BN, WG_BK>(p, splits, &grid, &kper)) return cudaErrorInvalidValue;
  float *part = splits > 1 ? (float *)ws : nullptr;
  constexpr size_t smem = sizeof(SmemWg<BN, ST>);
#ifndef BD_KERNEL_EMU
  static int raised[64];
  int dev = 0;
  const cudaError_t e = raise_dyn_smem(k_conv_wgmma<BN, ST>, smem, raised, &dev);
  if (e != cudaSuccess) return e;
#endif
  (void)smem;
  BD_LAUNCH_SMEM(BD_K(k_conv_wgmma<BN, ST>), grid, WG_NT, smem, s, *p, (const bd_h16 *)x,
                 (const bd_h16 *)w, bias, (const bd_h16 *)r, (bd_h16 *)y, part, kper);
  return split_sum(p, splits, part, bias, r, y, s);
}

// ---- Tile 17 ("patch"): whole input patches in shared memory ----
// For layers with few channels at high resolution (a Focus stem, the first stages of
// DAMO-YOLO and YOLOX), where the implicit-GEMM tiles above fetch each input pixel KH*KW
// times and their 32-deep k-slices of a 16- or 24-channel tap are partly padding. A block
// takes 16 x TH output pixels of one image (bd_cuda_conv_patch_geo), copies the input
// patch they read into shared memory once (cp.async; zeros where the window passes the
// image and in channels C..C16), and each warp multiplies TH/8 rows of 16 pixels by all
// M8 output channels with mma.sync m16n8k16 fragments read straight from the patch:
// im2col by addressing (A's row = an output pixel, a 16-deep k step = 16 channels of one
// tap). Blocks are persistent (a grid of what the GPU holds at once walks the tiles), so
// each loads the weights [M8][KH][KW][C16] once. The accumulators reach the epilogue
// through shared memory, as in the tiles above.

__device__ __forceinline__ bd_h16 *patch_smem() {
#ifdef BD_KERNEL_EMU
  __shared__ __align__(16) bd_h16 sm[BD_CONV_PATCH_SMEM_MAX / 2];
  return sm;
#else
  extern __shared__ __align__(16) unsigned char bd_conv_dyn_smem[];
  return reinterpret_cast<bd_h16 *>(bd_conv_dyn_smem);
#endif
}

__device__ __forceinline__ uint32_t ld32(const bd_h16 *q) {
  return *reinterpret_cast<const uint32_t *>(q);
}

// d += a * b over one m16n8k16 step (16-bit inputs, FP32 accumulate), the fragments in
// PTX's layout: lane l = 4g + t holds A (16 x 16, row-major) rows g and g + 8 at columns
// 2t, 2t + 1 and those + 8 (a0: row g, a1: row g + 8, a2 and a3 the same 8 columns on),
// B (16 x 8) column g at rows 2t, 2t + 1 (b0) and + 8 (b1), D rows g (d0, d1) and g + 8
// (d2, d3) at columns 2t, 2t + 1.
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
#ifdef BD_KERNEL_EMU
  emu_mma_m16n8k16<bd_h16>(d, a, b);
#else
#ifdef BD_CUDA_BF16
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
#endif
}

// NT: output channel groups of 8 (M8 / 8). A warp's rows of 16 pixels: g.mt (1 or 2; TH =
// 8 g.mt; 1 where NT > 8).
// LAY: the input is the network's FP32 NCHW input src (in_h x in_w) seen through layout lo
// (a Focus stem's space-to-depth, bd_cuda_conv_patch_layout): the patch is filled from it
// with the 16-bit rounding the layout kernel applies (k_layout_f32), and x is not read.
template <int NT, bool LAY>
__global__ void __launch_bounds__(256, 2)
    k_conv_patch(bd_cuda_conv_shape p, bd_conv_patch_geo g, const bd_h16 *__restrict__ x,
                 const bd_h16 *__restrict__ w, const float *__restrict__ bias,
                 const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                 const float *__restrict__ src, int in_h, int in_w, bd_cuda_prep_layout lo) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  bd_h16 *sp = patch_smem(), *sw = sp + g.w_off;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gi = lane >> 2, ti = lane & 3;
  const int ldx = p.ldx ? p.ldx : p.c, s = p.sh, taps = p.kh * p.kw, mt = g.mt;
  constexpr int LDC = BD_CONV_PATCH_LDC(NT); // floats a staging row (a pixel)
  constexpr int MTX = NT > 8 ? 1 : 2;        // rows a warp at most (g.mt <= MTX): registers
  // The weights, once: row m of sw is w's row m with each tap's C channels padded to C16
  // (zeros there and in rows M..M8).
  const int wch = g.k / 8; // 16-byte chunks a row
  for (int i = tid; i < NT * 8 * wch; i += 256) {
    const int m = i / wch, kk = (i - m * wch) * 8, tap = kk / g.c16, c = kk - tap * g.c16;
    const bool ok = m < p.m && c < p.c;
    cp16<false>(&sw[m * g.ks + kk], ok ? w + ((int64_t)m * taps + tap) * p.c + c : w, ok);
  }
  const int pch = g.c16 / 8, chunks = g.ph * g.pw * pch, rs = 8 * s * g.ps;
  for (long long tile = blockIdx.x; tile < g.n_tiles; tile += gridDim.x) {
    const int tx = (int)(tile % g.tiles_x);
    const long long t2 = tile / g.tiles_x;
    const int ty = (int)(t2 % g.tiles_y), n = (int)(t2 / g.tiles_y);
    const int oy0 = ty * g.th, ox0 = tx * BD_CONV_PATCH_TW;
    const int iy0 = oy0 * s - p.pad_t, ix0 = ox0 * s - p.pad_l;
    if (LAY) { // a thread a patch pixel: zeros, then each piece's channels
      const int64_t plane = (int64_t)in_h * in_w;
      for (int q = tid; q < g.ph * g.pw; q += 256) {
        const int py = q / g.pw, px = q - py * g.pw, iy = iy0 + py, ix = ix0 + px;
        bd_h16 *d = &sp[q * g.ps];
        for (int c = 0; c < g.c16; c += 8)
          *reinterpret_cast<uint4 *>(d + c) = make_uint4(0, 0, 0, 0);
        if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
        float v[BD_PREP_MAX_PIECES][3];
        layout_pixel_f32(src, n, plane, in_w, lo, ix, iy, v);
#pragma unroll
        for (int k = 0; k < BD_PREP_MAX_PIECES; ++k) {
          if (k >= lo.n_pieces) break;
#pragma unroll
          for (int c = 0; c < 3; ++c)
            if (c < lo.piece[k].nc) d[lo.piece[k].ch + c] = bd_st<bd_h16>(v[k][c]);
        }
      }
    } else {
      const bd_h16 *xn = x + (int64_t)n * p.h * p.w * ldx;
      for (int i = tid; i < chunks; i += 256) { // consecutive threads: a pixel's chunks, then x
        const int q = i / pch, c = (i - q * pch) * 8, py = q / g.pw, px = q - py * g.pw;
        const int iy = iy0 + py, ix = ix0 + px;
        const bool ok = c < p.c && iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
        cp16<true>(&sp[q * g.ps + c], ok ? xn + ((int64_t)iy * p.w + ix) * ldx + c : x, ok);
      }
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads(); // the patch (and, the first time, the weights) is everyone's
    float acc[MTX][NT][4];
#pragma unroll
    for (int i = 0; i < MTX; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    for (int ky = 0; ky < p.kh; ++ky)
      for (int kx = 0; kx < p.kw; ++kx)
        for (int cb = 0; cb < g.c16; cb += 16) {
          const int k0 = (ky * p.kw + kx) * g.c16 + cb;
          uint32_t b[NT][2];
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            const bd_h16 *q = sw + (j * 8 + gi) * g.ks + k0 + 2 * ti;
            b[j][0] = ld32(q);
            b[j][1] = ld32(q + 8);
          }
#pragma unroll
          for (int i = 0; i < MTX; ++i) {
            if (i >= mt) break;
            const int row = warp * mt + i; // output row of the tile; its pixels gi, gi + 8
            const bd_h16 *q = sp + ((row * s + ky) * g.pw + kx + gi * s) * g.ps + cb + 2 * ti;
            const uint32_t a[4] = {ld32(q), ld32(q + rs), ld32(q + 8), ld32(q + rs + 8)};
#pragma unroll
            for (int j = 0; j < NT; ++j) mma16816(acc[i][j], a, b[j]);
          }
        }
    // The epilogue, 8 pixels at a time through the warp's FP32 staging rows (over the
    // patch, which every warp is done with after this barrier): each lane then takes
    // whole groups of 8 channels (store_group: one 16-byte store where M % 8 == 0). One
    // copy of the epilogue code a half row, not one per register (cicc spent minutes on
    // an unrolled per-register version).
    __syncthreads();
    float *st = reinterpret_cast<float *>(sp) + warp * 8 * LDC;
#pragma unroll
    for (int i = 0; i < MTX; ++i) {
      if (i >= mt) break;
      const int oy = oy0 + warp * mt + i;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          float *o = st + gi * LDC + j * 8 + 2 * ti;
          o[0] = acc[i][j][2 * h];
          o[1] = acc[i][j][2 * h + 1];
        }
        __syncwarp();
        for (int e = lane; e < 8 * NT && oy < p.oh; e += 32) {
          const int px = e / NT, oc = (e - px * NT) * 8, ox = ox0 + 8 * h + px;
          if (ox < p.ow && oc < p.m)
            store_group<false>(p, st + px * LDC + oc, bias, r, y,
                               ((int64_t)n * p.oh + oy) * p.ow + ox, oc);
        }
        __syncwarp(); // the staging rows are free for the next pixels
      }
    }
    __syncthreads(); // every warp is done with the patch the next tile's copies overwrite
  }
}

template <int NT, bool LAY>
cudaError_t launch_patch(const bd_cuda_conv_shape *p, const bd_conv_patch_geo &g, const void *x,
                         const void *w, const float *bias, const void *r, void *y,
                         cudaStream_t s, const float *src, int in_h, int in_w,
                         const bd_cuda_prep_layout *lo) {
  const bd_cuda_prep_layout none = {};
  long long blocks = g.n_tiles;
#ifdef BD_KERNEL_EMU
  if (blocks > 3) blocks = 3; // the emulation: a few blocks walk several tiles each
#else
  // What the GPU holds at once (persistent blocks), the shared-memory attribute raised
  // once per GPU to the most any shape asks.
  static int raised[64];
  int dev = 0, sms = 0, per = 0;
  cudaError_t e = raise_dyn_smem(k_conv_patch<NT, LAY>, BD_CONV_PATCH_SMEM_MAX, raised, &dev);
  if (e != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess ||
      (e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k_conv_patch<NT, LAY>, 256,
                                                         (size_t)g.smem)) != cudaSuccess)
    return e;
  if (per < 1) return cudaErrorLaunchOutOfResources;
  if (blocks > (long long)per * sms) blocks = (long long)per * sms;
#endif
  BD_LAUNCH_SMEM(BD_K(k_conv_patch<NT, LAY>), dim3((unsigned)blocks), 256, (size_t)g.smem, s, *p,
                 g, (const bd_h16 *)x, (const bd_h16 *)w, bias, (const bd_h16 *)r,
                 (bd_h16 *)y, src, in_h, in_w, lo ? *lo : none);
  return cudaGetLastError();
}

// launch_patch on the kernel of g.nt channel groups (LAY: at most 8, the ones instantiated).
template <bool LAY>
cudaError_t patch_nt(const bd_cuda_conv_shape *p, const bd_conv_patch_geo &g, const void *x,
                     const void *w, const float *bias, const void *r, void *y, cudaStream_t s,
                     const float *src, int in_h, int in_w, const bd_cuda_prep_layout *lo) {
#define BD_PATCH_NT(NT)                                                                      \
  case NT:                                                                                   \
    if constexpr (LAY && NT > 8) return cudaErrorInvalidValue;                               \
    else return launch_patch<NT, LAY>(p, g, x, w, bias, r, y, s, src, in_h, in_w, lo);
  switch (g.nt) {
    BD_PATCH_NT(1) BD_PATCH_NT(2) BD_PATCH_NT(3) BD_PATCH_NT(4) BD_PATCH_NT(5) BD_PATCH_NT(6)
    BD_PATCH_NT(7) BD_PATCH_NT(8) BD_PATCH_NT(9) BD_PATCH_NT(10) BD_PATCH_NT(11) BD_PATCH_NT(12)
  default: return cudaErrorInvalidValue;
  }
#undef BD_PATCH_NT
}

// The patch tile takes no upsampled residual and no twins' residuals (store_group<false>;
// the plan asks neither of it: BD_CONV_PITCH_ROUTE).
cudaError_t conv_patch(const bd_cuda_conv_shape *p, const void *x, const void *w,
                       const float *bias, const void *r, void *y, cudaStream_t s) {
  bd_conv_patch_geo g;
  if (!bd_cuda_conv_patch_geo(p, &g) || p->rup > 1 || (p->m1 && p->res))
    return cudaErrorInvalidValue;
  return patch_nt<false>(p, g, x, w, bias, r, y, s, nullptr, 0, 0, nullptr);
}

cudaError_t conv_patch_layout(const bd_cuda_conv_shape *p, const float *src, int in_h, int in_w,
                              const bd_cuda_prep_layout *lo, const void *w, const float *bias,
                              const void *r, void *y, cudaStream_t s) {
  bd_conv_patch_geo g;
  if (!bd_cuda_conv_patch_layout_ok(p, lo, in_h, in_w) || !bd_cuda_conv_patch_geo(p, &g) ||
      p->rup > 1 || (p->m1 && p->res))
    return cudaErrorInvalidValue;
  return patch_nt<true>(p, g, nullptr, w, bias, r, y, s, src, in_h, in_w, lo);
}

// The output arguments' contract (bd_cuda_kernels.h) of every tile: M % 8 == 0: y's and
// r's pitches multiples of 8 and y, r 16-byte aligned (8 channels a store); otherwise any
// pitch >= M (one channel a store); w 16-byte aligned.
bool out_args_ok(const bd_cuda_conv_shape *p, const void *w, const void *r, const void *y) {
  const int vec = p->m % 8 == 0;
  if (p->rup > 1 && (!r || p->res == 0 || p->oh % p->rup || p->ow % p->rup ||
                     (int64_t)p->n * p->oh * p->ow >= ((int64_t)1 << 31)))
    return false; // an upsampled residual (bd_cuda_kernels.h)
  if (p->act2 < 0 || p->act2 > 4 || (p->act2 && !p->m1)) return false; // bd_act + 1: SiLU 3
  if (p->m1 && (!vec || p->m1 % 8)) // ragged twins: no residual, any pitches
    return p->m1 > 0 && bd_cuda_twin_m1s(p->m1) < p->m && p->res == 0 && !r && !p->r2 &&
           p->ldy >= p->m1 && p->ldy2 >= p->m - bd_cuda_twin_m1s(p->m1) && p->y2 &&
           !((uintptr_t)p->y2 & 1u) && !((uintptr_t)y & 1u) && !((uintptr_t)w & 15u);
  if (p->m1) // even twins (bd_cuda_kernels.h): each output's own pitch, and residual if any
    return p->m1 > 0 && p->m1 < p->m && vec && p->m1 % 8 == 0 && p->ldy >= p->m1 &&
           p->ldy % 8 == 0 && p->ldy2 >= p->m - p->m1 && p->ldy2 % 8 == 0 && p->y2 &&
           !((uintptr_t)p->y2 & 15u) && !((uintptr_t)y & 15u) && !((uintptr_t)w & 15u) &&
           (p->res == 0 // BD_RES_NONE
                ? !r && !p->r2
                : r && p->r2 && !((uintptr_t)r & 15u) && !((uintptr_t)p->r2 & 15u) &&
                      p->ldr % 8 == 0 && p->ldr2 % 8 == 0 && (!p->ldr || p->ldr >= p->m1) &&
                      (!p->ldr2 || p->ldr2 >= p->m - p->m1));
  return !((vec && (p->ldy % 8 || p->ldr % 8)) || (p->ldy && p->ldy < p->m) ||
           (p->ldr && p->ldr < p->m) || ((uintptr_t)w & 15u) ||
           ((uintptr_t)y & (vec ? 15u : 1u)) || ((uintptr_t)r & (vec ? 15u : 1u)));
}

} // namespace

extern "C" cudaError_t bd_cuda_conv_mma_tiled(const bd_cuda_conv_shape *p, int tile,
                                              const void *x, const void *w, const float *bias,
                                              const void *r, void *y, void *ws, size_t ws_bytes,
                                              cudaStream_t s) {
  if (p->group != 1 || p->c % 8 || p->m < 1 || p->c < 8 || p->n < 1 || p->ldx % 8 ||
      (p->ldx && p->ldx < p->c) || (int64_t)p->kh * p->kw * p->c >= (1 << 30) ||
      ((uintptr_t)x & 15u) || !out_args_ok(p, w, r, y) || tile < -1 ||
      tile >= BD_CONV_MMA_TILES)
    return cudaErrorInvalidValue;
  if (tile >= 0 && !bd_cuda_conv_tile_ready(tile)) return cudaErrorNotSupported; // wgmma
  const int splits = bd_cuda_conv_mma_parts(p, tile, ws, ws_bytes);
  if (splits < 1) return cudaErrorInvalidValue;
  // Whether a tile splits (splits > 1) is bd_cuda_conv_mma_tile_info's; the geometry here
  // is the same table's.
  switch (tile < 0 ? bd_cuda_conv_mma_default_tile(p->m) : tile) {
  case 1: return launch<256, 32>(p, x, w, bias, r, y, splits, ws, s);
  case 2: case 3: return launch<64, 128>(p, x, w, bias, r, y, splits, ws, s);
  case 5: return launch_async<128, 64, 32, 32, 3, false, 3>(p, x, w, bias, r, y, splits, ws, s);
  case 6: return launch_async<64, 128, 32, 32, 3, false, 3>(p, x, w, bias, r, y, splits, ws, s);
  case 7: return launch_async<128, 128, 64, 32, 2, true, 2>(p, x, w, bias, r, y, splits, ws, s);
  case 8: case 10:
    return launch_async<128, 64, 32, 32, 3, true, 3>(p, x, w, bias, r, y, splits, ws, s);
  case 9: case 11:
    return launch_async<64, 128, 32, 32, 3, true, 3>(p, x, w, bias, r, y, splits, ws, s);
  case 12: return launch_async<128, 32, 32, 32, 3, true, 5>(p, x, w, bias, r, y, splits, ws, s);
  case 13: return launch_async<64, 64, 32, 32, 3, true, 5>(p, x, w, bias, r, y, splits, ws, s);
  case 14: // 110.6 KB of dynamic shared memory
    return launch_async<128, 128, 64, 64, 3, true, 2, 64, true>(p, x, w, bias, r, y, splits, ws,
                                                                s);
  case 15: // 81.9 KB
    return launch_async<128, 128, 64, 32, 4, true, 2, 32, true>(p, x, w, bias, r, y, splits, ws,
                                                                s);
  case 16: // 102.4 KB
    return launch_async<256, 64, 64, 64, 4, true, 2, 32, true>(p, x, w, bias, r, y, splits, ws,
                                                               s);
  case 17: return conv_patch(p, x, w, bias, r, y, s);
  case 18: return launch_wgmma<128, 4>(p, x, w, bias, r, y, splits, ws, s); // 132 KB
  case 19: case 20: // 98 KB
    return launch_wgmma<64, 4>(p, x, w, bias, r, y, splits, ws, s);
  case 21: return launch_wgmma<192, 4>(p, x, w, bias, r, y, splits, ws, s); // 160 KB
  case 22: case 23: // 112 KB: two blocks an SM on an H100 (2 x (112 + 1) of 228 KB)
    return launch_wgmma<96, 4>(p, x, w, bias, r, y, splits, ws, s);
  case 24: // 70 KB; 96 and 192 channels (below) without a wasted quarter, on any sm_80+
    return launch_async<128, 96, 32, 48, 4, true, 2, 32, true>(p, x, w, bias, r, y, splits, ws,
                                                               s);
  case 25: // 100 KB, 16 warps
    return launch_async<128, 192, 32, 48, 4, true, 1, 32, true>(p, x, w, bias, r, y, splits, ws,
                                                                s);
  default: return launch<128, 64>(p, x, w, bias, r, y, splits, ws, s); // 0, 4
  }
}

extern "C" cudaError_t bd_cuda_conv_mma(const bd_cuda_conv_shape *p, const void *x, const void *w,
                                        const float *bias, const void *r, void *y,
                                        cudaStream_t s) {
  return bd_cuda_conv_mma_tiled(p, -1, x, w, bias, r, y, nullptr, 0, s);
}

extern "C" cudaError_t bd_cuda_conv_patch_layout(const bd_cuda_conv_shape *p, const float *src,
                                                 int in_h, int in_w,
                                                 const bd_cuda_prep_layout *lo, const void *w,
                                                 const float *bias, const void *r, void *y,
                                                 cudaStream_t s) {
  if (!src || !w || !y || !out_args_ok(p, w, r, y)) return cudaErrorInvalidValue;
  return conv_patch_layout(p, src, in_h, in_w, lo, w, bias, r, y, s);
}
