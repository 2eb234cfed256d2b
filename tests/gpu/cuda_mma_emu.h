// nvcuda::wmma emulated by its documented semantics, for bd_cuda_conv_mma.cu compiled as
// host C++ (cuda_kernel_emu.cc with BD_KEMU_MMA): a fragment holds its whole 16x16 tile
// in lane 0 of the warp (load_matrix_sync reads element (r, c) of a row-major tile
// at p[r*ldm + c], of a column-major one at p[c*ldm + r]; mma_sync is d = a*b + c in
// FP32; store_matrix_sync writes row- or column-major, once per warp). Warp-collective
// calls are made by all 32 threads with the same arguments, so lane 0 computing the whole
// tile is what the warp computes: the other lanes skip the work (a fragment's elements
// are opaque, the kernels never read them; stores are lane 0's).
#ifndef CUDA_MMA_EMU_H
#define CUDA_MMA_EMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];
};

inline float emu_f(const __half &h) {
  return __half2float(h);
}
inline float emu_f(const __nv_bfloat16 &h) {
  return __bfloat162float(h);
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, float x) {
  if (emu_tid.x % 32) return;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.v[i][j] = x;
}
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_a, M, N, K, T, row_major> &f, const T *p,
                             unsigned ldm) {
  if (emu_tid.x % 32) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = emu_f(p[r * ldm + c]);
}
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_b, M, N, K, T, col_major> &f, const T *p,
                             unsigned ldm) {
  if (emu_tid.x % 32) return;
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.v[k][n] = emu_f(p[n * ldm + k]);
}
template <int M, int N, int K, typename TA, typename TB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                     const fragment<matrix_a, M, N, K, TA, row_major> &a,
                     const fragment<matrix_b, M, N, K, TB, col_major> &b,
                     const fragment<accumulator, M, N, K, float> &c) {
  if (emu_tid.x % 32) return;
  float t[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[m][n];
      for (int k = 0; k < 16; ++k) s += a.v[m][k] * b.v[k][n];
      t[m][n] = s;
    }
  memcpy(d.v, t, sizeof t);
}
template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                              unsigned ldm, layout_t l) {
  if (emu_tid.x % 32 == 0)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) p[l == mem_row_major ? m * ldm + n : n * ldm + m] = f.v[m][n];
  emu_warp_sync(); /* the warp's lanes see the tile once the call returns */
}
}  // namespace wmma
}  // namespace nvcuda

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16} (bd_cuda_conv_mma.cu's mma16816), T the
// 16-bit type, by PTX's documented fragment layout: lane l = 4g + t holds A rows g (a0,
// a2) and g + 8 (a1, a3) at columns 2t, 2t + 1 (a0, a1) and 2t + 8, 2t + 9 (a2, a3), the
// lower column in the lower half of each register; B column g at rows 2t, 2t + 1 (b0) and
// 2t + 8, 2t + 9 (b1); D rows g (d0, d1) and g + 8 (d2, d3) at columns 2t, 2t + 1. Each
// lane posts its registers, the warp meets, each lane sums its four outputs (FP32, k in
// order), and the warp meets again before the next call reuses the exchange.
static uint32_t emu_mma_a[32][32][4], emu_mma_b[32][32][2];
template <typename T>
inline float emu_mma_el(uint32_t v, int hi) {
  const uint16_t h = (uint16_t)(hi ? v >> 16 : v & 0xFFFFu);
  T t;
  memcpy(static_cast<void *>(&t), &h, 2);
  return nvcuda::wmma::emu_f(t);
}
template <typename T>
inline void emu_mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const unsigned lane = emu_tid.x & 31, w = emu_tid.x >> 5;
  memcpy(emu_mma_a[w][lane], a, sizeof a);
  memcpy(emu_mma_b[w][lane], b, sizeof b);
  emu_warp_sync();
  const int g = (int)lane >> 2, t = (int)lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float s = d[i];
    for (int k = 0; k < 16; ++k) {
      const int al = (row % 8) * 4 + (k % 8) / 2, ar = (row >= 8) + 2 * (k >= 8);
      const int bl = col * 4 + (k % 8) / 2, br = k >= 8;
      s += emu_mma_el<T>(emu_mma_a[w][al][ar], k & 1) * emu_mma_el<T>(emu_mma_b[w][bl][br], k & 1);
    }
    d[i] = s;
  }
  emu_warp_sync();
}

#endif
