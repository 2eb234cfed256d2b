// Max pooling on 16-bit NHWC (YOLOX SPP, DAMO SPPF): one thread per output element,
// channels fastest so that a warp reads consecutive channels; 8 channels per thread with
// 16-byte accesses when C and both pitches are multiples of 8 (square 2, 3, 5, 9 and 13
// windows unrolled). Pixels of x and y are
// xp and yp channels apart (>= c): a tensor that is a channel slice of a wider one (a
// Concat piece written or read in place).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// Output element i of an NHWC grid of c elements a pixel: its element in the pixel (*e),
// column, row and image.
__device__ __forceinline__ void nhwc_pos(int64_t i, int c, int ow, int oh, int *e, int *ox,
                                         int *oy, int64_t *n) {
  *e = (int)(i % c);
  int64_t t = i / c;
  *ox = (int)(t % ow);
  t /= ow;
  *oy = (int)(t % oh);
  *n = t / oh;
}

__global__ void k_maxpool(int h, int w, int c, int oh, int ow, int kh, int kw, int sh, int sw,
                          int pt, int pl, int xp, int yp, const bd_h16 *__restrict__ x,
                          bd_h16 *__restrict__ y, int64_t total) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int ch, ox, oy;
    int64_t n;
    nhwc_pos(i, c, ow, oh, &ch, &ox, &oy, &n);
    float m = -INFINITY;
    for (int ky = 0; ky < kh; ++ky) {
      int iy = oy * sh - pt + ky;
      if (iy < 0 || iy >= h) continue;
      for (int kx = 0; kx < kw; ++kx) {
        int ix = ox * sw - pl + kx;
        if (ix < 0 || ix >= w) continue;
        float v = bd_ld(x[((n * h + iy) * w + ix) * xp + ch]);
        m = v > m ? v : m;
      }
    }
    y[(i / c) * yp + ch] = bd_st<bd_h16>(m);
  }
}

// 8 channels per thread through 16-byte loads and stores (C % 8 == 0).
__global__ void k_maxpool8(int h, int w, int c8, int oh, int ow, int kh, int kw, int sh, int sw,
                           int pt, int pl, int xp8, int yp8, const uint4 *__restrict__ x,
                           uint4 *__restrict__ y, int64_t total8) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int cg, ox, oy;
    int64_t n;
    nhwc_pos(i, c8, ow, oh, &cg, &ox, &oy, &n);
    float m[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) m[k] = -INFINITY;
    for (int ky = 0; ky < kh; ++ky) {
      int iy = oy * sh - pt + ky;
      if (iy < 0 || iy >= h) continue;
      for (int kx = 0; kx < kw; ++kx) {
        int ix = ox * sw - pl + kx;
        if (ix < 0 || ix >= w) continue;
        uint4 v = x[((n * h + iy) * w + ix) * xp8 + cg];
        const bd_h16x2 *hv = reinterpret_cast<const bd_h16x2 *>(&v);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float2 f = bd_h16x2_ld(hv[k]);
          m[2 * k] = f.x > m[2 * k] ? f.x : m[2 * k];
          m[2 * k + 1] = f.y > m[2 * k + 1] ? f.y : m[2 * k + 1];
        }
      }
    }
    uint4 out;
    bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&out);
#pragma unroll
    for (int k = 0; k < 4; ++k) ho[k] = bd_h16x2_st(m[2 * k], m[2 * k + 1]);
    y[(i / c8) * yp8 + cg] = out;
  }
}

// k_maxpool8 for a square K x K window: the window clamped to the image once, every tap
// unrolled and read from a clamped index (a tap outside the image repeats one inside the
// window, which leaves the max unchanged), so that the K*K loads are independent and
// issue back to back. The runtime loop above waits for each load before the next (a
// data-dependent `continue` per tap): on the H100 the SPPF's three 5x5 pools at 20x20x192
// took 10.6 us each at batch 1, latency-bound, and 23 us each at batch 32.
template <int K>
__global__ void k_maxpool8k(int h, int w, int c8, int oh, int ow, int sh, int sw, int pt,
                            int pl, int xp8, int yp8, const uint4 *__restrict__ x,
                            uint4 *__restrict__ y, int64_t total8) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int cg, ox, oy;
    int64_t n;
    nhwc_pos(i, c8, ow, oh, &cg, &ox, &oy, &n);
    const int y0 = oy * sh - pt, x0 = ox * sw - pl;
    const int ylo = y0 > 0 ? y0 : 0, yhi = y0 + K - 1 < h - 1 ? y0 + K - 1 : h - 1;
    const int xlo = x0 > 0 ? x0 : 0, xhi = x0 + K - 1 < w - 1 ? x0 + K - 1 : w - 1;
    float m[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) m[k] = -INFINITY;
    if (ylo <= yhi && xlo <= xhi) { // else no tap in the image: -inf, as the loop above
      const uint4 *xn = x + n * h * w * xp8 + cg;
#pragma unroll
      for (int ky = 0; ky < K; ++ky) {
        const int iy = clampi(y0 + ky, ylo, yhi);
#pragma unroll
        for (int kx = 0; kx < K; ++kx) {
          const int ix = clampi(x0 + kx, xlo, xhi);
          uint4 v = xn[((int64_t)iy * w + ix) * xp8];
          const bd_h16x2 *hv = reinterpret_cast<const bd_h16x2 *>(&v);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            float2 f = bd_h16x2_ld(hv[k]);
            m[2 * k] = fmaxf(f.x, m[2 * k]);
            m[2 * k + 1] = fmaxf(f.y, m[2 * k + 1]);
          }
        }
      }
    }
    uint4 out;
    bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&out);
#pragma unroll
    for (int k = 0; k < 4; ++k) ho[k] = bd_h16x2_st(m[2 * k], m[2 * k + 1]);
    y[(i / c8) * yp8 + cg] = out;
  }
}
} // namespace

#define BD_POOL8K(K)                                                                           \
  BD_LAUNCH(k_maxpool8k<K>, bd_grid(total / 8, 256), 256, s, h, w, c / 8, oh, ow, sh, sw,      \
            pad_t, pad_l, xp / 8, yp / 8, (const uint4 *)x, (uint4 *)y, total / 8)

extern "C" cudaError_t bd_cuda_maxpool_nhwc(int n, int h, int w, int c, int oh, int ow, int kh,
                                            int kw, int sh, int sw, int pad_t, int pad_l, int xp,
                                            int yp, const void *x, void *y, cudaStream_t s) {
  int64_t total = (int64_t)n * oh * ow * c;
  if (total == 0) return cudaSuccess;
  if (xp < c || yp < c) return cudaErrorInvalidValue;
  if (c % 8 == 0 && xp % 8 == 0 && yp % 8 == 0 && ((uintptr_t)x & 15u) == 0 &&
      ((uintptr_t)y & 15u) == 0) {
    if (kh == kw) switch (kh) { // the usual windows: 2 and 3 (downsampling), 5, 9, 13 (SPP)
      case 2: BD_POOL8K(2); return cudaGetLastError();
      case 3: BD_POOL8K(3); return cudaGetLastError();
      case 5: BD_POOL8K(5); return cudaGetLastError();
      case 9: BD_POOL8K(9); return cudaGetLastError();
      case 13: BD_POOL8K(13); return cudaGetLastError();
      default: break;
      }
    BD_LAUNCH(k_maxpool8, bd_grid(total / 8, 256), 256, s, h, w, c / 8, oh, ow, kh, kw, sh, sw,
              pad_t, pad_l, xp / 8, yp / 8, (const uint4 *)x, (uint4 *)y, total / 8);
    return cudaGetLastError();
  }
  BD_LAUNCH(k_maxpool, bd_grid(total, 256), 256, s, h, w, c, oh, ow, kh, kw, sh, sw, pad_t, pad_l,
            xp, yp, (const bd_h16 *)x, (bd_h16 *)y, total);
  return cudaGetLastError();
}
