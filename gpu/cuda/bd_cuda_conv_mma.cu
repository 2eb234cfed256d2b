// Our own tensor-core convolution (issue 7; opt-in with BATCHDET_CUDA_CONV=mma until it
// is measured against cuDNN on a GPU): an implicit GEMM over NHWC 16-bit activations and
// KRSC 16-bit weights with the whole epilogue (bias, activation, residual) fused, so a
// layer is one kernel and one pass over its output.
//
// GEMM view: rows = output pixels (N*OH*OW), columns = output channels (M), reduction
// k = (ky*KW + kx)*C + c over KH*KW*C, so that the weight row of channel m is the KRSC
// row w[m*K .. m*K+K) and a run of 8 consecutive k (C % 8 == 0) is 8 consecutive
// channels of one input pixel: one 16-byte load, zero when the pixel is padding.
// Block tile 128 pixels x 64 channels x 32 k, 8 warps of 32x32 (2x2 WMMA 16x16x16
// fragments, FP32 accumulate); the next k-slice is loaded into registers while the
// current one is multiplied. The accumulators go through shared memory to the epilogue,
// which writes 8 channels per 16-byte store. x and y may be channel slices of wider
// tensors (ldx, ldy: multiples of 8).
//
// tests/gpu/cuda_kernel_emu.cc compiles this file as host C++ (cuda_block_emu.h: threads
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

constexpr int BM = 128, BN = 64, BK = 32, LDS = BK + 8, THREADS = 256;
constexpr int LDC = BN + 4; // floats per row of the accumulator tile

struct Smem {
  union {
    struct {
      bd_h16 a[BM * LDS]; // [pixel][k], row-major
      bd_h16 b[BN * LDS]; // [channel][k]: WMMA's column-major B
    } in;
    float c[BM * LDC];
  };
};

// The 16 bytes of A (8 channels of one input pixel) for tile row `row`, reduction index
// k (a multiple of 8), or zeros.
__device__ __forceinline__ uint4 load_a(const bd_cuda_conv_shape &p, const bd_h16 *__restrict__ x,
                                        int64_t pix, int64_t n_pix, int k, int k_tot) {
  uint4 v = make_uint4(0, 0, 0, 0);
  if (pix >= n_pix || k >= k_tot) return v;
  const int kwc = p.kw * p.c;
  const int ky = k / kwc, rem = k - ky * kwc, kx = rem / p.c, c = rem - kx * p.c;
  const int ox = (int)(pix % p.ow);
  const int64_t t = pix / p.ow;
  const int oy = (int)(t % p.oh), n = (int)(t / p.oh);
  const int iy = oy * p.sh - p.pad_t + ky * p.dh, ix = ox * p.sw - p.pad_l + kx * p.dw;
  if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) return v;
  const int ldx = p.ldx ? p.ldx : p.c;
  return *reinterpret_cast<const uint4 *>(x + (((int64_t)n * p.h + iy) * p.w + ix) * ldx + c);
}

__global__ void __launch_bounds__(THREADS)
    k_conv_mma(bd_cuda_conv_shape p, const bd_h16 *__restrict__ x, const bd_h16 *__restrict__ w,
               const float *__restrict__ bias, const bd_h16 *__restrict__ r,
               bd_h16 *__restrict__ y) {
  __shared__ __align__(16) Smem sm;
  const int tid = threadIdx.x, warp = tid / 32;
  const int64_t n_pix = (int64_t)p.n * p.oh * p.ow;
  const int k_tot = p.kh * p.kw * p.c;
  const int64_t m0 = (int64_t)blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  // Loader slots: A has BM*BK/8 = 512 chunks (2 per thread), B has BN*BK/8 = 256 (1).
  const int a_row0 = tid / 4, a_row1 = a_row0 + 64, a_kc = (tid % 4) * 8;
  const int b_row = tid / 4, b_kc = (tid % 4) * 8;
  const int64_t w_row = (int64_t)(n0 + b_row) * k_tot;
  const bool b_ok = n0 + b_row < p.m;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32; // this warp's 32x32 in the tile

  uint4 ra0 = load_a(p, x, m0 + a_row0, n_pix, a_kc, k_tot);
  uint4 ra1 = load_a(p, x, m0 + a_row1, n_pix, a_kc, k_tot);
  uint4 rb = (b_ok && b_kc < k_tot) ? *reinterpret_cast<const uint4 *>(w + w_row + b_kc)
                                    : make_uint4(0, 0, 0, 0);
  for (int k0 = 0; k0 < k_tot; k0 += BK) {
    *reinterpret_cast<uint4 *>(&sm.in.a[a_row0 * LDS + a_kc]) = ra0;
    *reinterpret_cast<uint4 *>(&sm.in.a[a_row1 * LDS + a_kc]) = ra1;
    *reinterpret_cast<uint4 *>(&sm.in.b[b_row * LDS + b_kc]) = rb;
    __syncthreads();
    const int k1 = k0 + BK; // prefetch the next slice while this one is multiplied
    if (k1 < k_tot) {
      ra0 = load_a(p, x, m0 + a_row0, n_pix, k1 + a_kc, k_tot);
      ra1 = load_a(p, x, m0 + a_row1, n_pix, k1 + a_kc, k_tot);
      rb = (b_ok && k1 + b_kc < k_tot) ? *reinterpret_cast<const uint4 *>(w + w_row + k1 + b_kc)
                                       : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bd_h16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bd_h16, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], &sm.in.a[(wm + 16 * i) * LDS + kk], LDS);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(fb[j], &sm.in.b[(wn + 16 * j) * LDS + kk], LDS);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  // Accumulators -> shared (the input tiles are dead) -> epilogue, 8 channels a store.
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sm.c[(wm + 16 * i) * LDC + wn + 16 * j], acc[i][j], LDC,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < BM * BN / 8; e += THREADS) {
    const int row = e / (BN / 8), col = (e % (BN / 8)) * 8;
    const int64_t pix = m0 + row;
    const int oc = n0 + col;
    if (pix >= n_pix || oc >= p.m) continue; // M % 8 == 0: 8 channels all in or all out
    const int64_t o = pix * p.m + oc; // packed (r); y's pixels are ldy apart
    uint4 rv = make_uint4(0, 0, 0, 0), out;
    if (r) rv = *reinterpret_cast<const uint4 *>(r + o);
    const bd_h16x2 *hr = reinterpret_cast<const bd_h16x2 *>(&rv);
    bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&out);
    const float *cr = &sm.c[row * LDC + col];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float2 fr = bd_h16x2_ld(hr[q]);
      const float b0 = bias ? bias[oc + 2 * q] : 0.0f, b1 = bias ? bias[oc + 2 * q + 1] : 0.0f;
      ho[q] = bd_h16x2_st(bd_conv_epilogue(cr[2 * q], b0, fr.x, p.act, p.res),
                          bd_conv_epilogue(cr[2 * q + 1], b1, fr.y, p.act, p.res));
    }
    *reinterpret_cast<uint4 *>(y + pix * (p.ldy ? p.ldy : p.m) + oc) = out;
  }
}

} // namespace

extern "C" cudaError_t bd_cuda_conv_mma(const bd_cuda_conv_shape *p, const void *x, const void *w,
                                        const float *bias, const void *r, void *y,
                                        cudaStream_t s) {
  if (p->group != 1 || p->c % 8 || p->m % 8 || p->c < 8 || p->n < 1 || p->ldx % 8 ||
      p->ldy % 8 || (p->ldx && p->ldx < p->c) || (p->ldy && p->ldy < p->m) ||
      (int64_t)p->kh * p->kw * p->c >= (1 << 30) || ((uintptr_t)x & 15u) ||
      ((uintptr_t)w & 15u) || ((uintptr_t)y & 15u) || ((uintptr_t)r & 15u))
    return cudaErrorInvalidValue;
  const int64_t n_pix = (int64_t)p->n * p->oh * p->ow;
  if (n_pix == 0) return cudaSuccess;
  const int64_t gx = (n_pix + BM - 1) / BM;
  if (gx > 0x7fffffff) return cudaErrorInvalidValue;
  dim3 grid((unsigned)gx, (unsigned)((p->m + BN - 1) / BN));
  BD_LAUNCH(k_conv_mma, grid, THREADS, s, *p, (const bd_h16 *)x, (const bd_h16 *)w, bias,
            (const bd_h16 *)r, (bd_h16 *)y);
  return cudaGetLastError();
}
