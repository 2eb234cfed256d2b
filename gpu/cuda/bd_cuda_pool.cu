// Max pooling on 16-bit NHWC (YOLOX SPP, DAMO SPPF): one thread per output element,
// channels fastest so that a warp reads consecutive channels; 8 channels per thread with
// 16-byte accesses when C and both pitches are multiples of 8. Pixels of x and y are
// xp and yp channels apart (>= c): a tensor that is a channel slice of a wider one (a
// Concat piece written or read in place).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__global__ void k_maxpool(int h, int w, int c, int oh, int ow, int kh, int kw, int sh, int sw,
                          int pt, int pl, int xp, int yp, const bd_h16 *__restrict__ x,
                          bd_h16 *__restrict__ y, int64_t total) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int ch = (int)(i % c);
    int64_t t = i / c;
    int ox = (int)(t % ow);
    t /= ow;
    int oy = (int)(t % oh);
    int64_t n = t / oh;
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
    int cg = (int)(i % c8);
    int64_t t = i / c8;
    int ox = (int)(t % ow);
    t /= ow;
    int oy = (int)(t % oh);
    int64_t n = t / oh;
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
} // namespace

extern "C" cudaError_t bd_cuda_maxpool_nhwc(int n, int h, int w, int c, int oh, int ow, int kh,
                                            int kw, int sh, int sw, int pad_t, int pad_l, int xp,
                                            int yp, const void *x, void *y, cudaStream_t s) {
  int64_t total = (int64_t)n * oh * ow * c;
  if (total == 0) return cudaSuccess;
  if (xp < c || yp < c) return cudaErrorInvalidValue;
  if (c % 8 == 0 && xp % 8 == 0 && yp % 8 == 0 && ((uintptr_t)x & 15u) == 0 &&
      ((uintptr_t)y & 15u) == 0) {
    BD_LAUNCH(k_maxpool8, bd_grid(total / 8, 256), 256, s, h, w, c / 8, oh, ow, kh, kw, sh, sw,
              pad_t, pad_l, xp / 8, yp / 8, (const uint4 *)x, (uint4 *)y, total / 8);
    return cudaGetLastError();
  }
  BD_LAUNCH(k_maxpool, bd_grid(total, 256), 256, s, h, w, c, oh, ow, kh, kw, sh, sw, pad_t, pad_l,
            xp, yp, (const bd_h16 *)x, (bd_h16 *)y, total);
  return cudaGetLastError();
}
