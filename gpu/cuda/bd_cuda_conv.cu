// Convolution kernels of our own: the direct NHWC convolution (depthwise layers, 8
// channels per thread when C % 8 == 0, and the fallback for shapes cuDNN has no
// algorithm for, e.g. asymmetric padding) and the epilogue that follows a cuDNN
// convolution (bias, activation, residual in one pass).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {

constexpr int kThreads = 256;

__global__ void k_conv_direct(bd_cuda_conv_shape p, const bd_h16 *__restrict__ x,
                              const bd_h16 *__restrict__ w,
                              const float *__restrict__ bias,
                              const bd_h16 *__restrict__ r,
                              bd_h16 *__restrict__ y, int64_t total) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  const int cg = p.c / p.group, mg = p.m / p.group;
  const int ldx = p.ldx ? p.ldx : p.c, ldy = p.ldy ? p.ldy : p.m;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int m = (int)(i % p.m);
    int64_t t = i / p.m;
    int ox = (int)(t % p.ow);
    t /= p.ow;
    int oy = (int)(t % p.oh);
    int n = (int)(t / p.oh);
    int g = m / mg;
    float acc = 0.0f;
    for (int ky = 0; ky < p.kh; ++ky) {
      int iy = oy * p.sh - p.pad_t + ky * p.dh;
      if (iy < 0 || iy >= p.h) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        int ix = ox * p.sw - p.pad_l + kx * p.dw;
        if (ix < 0 || ix >= p.w) continue;
        const bd_h16 *xp = x + (((int64_t)n * p.h + iy) * p.w + ix) * ldx + g * cg;
        const bd_h16 *wp = w + (((int64_t)m * p.kh + ky) * p.kw + kx) * cg;
        for (int ci = 0; ci < cg; ++ci) acc += bd_ld(xp[ci]) * bd_ld(wp[ci]);
      }
    }
    float rv = r ? bd_ld(r[i]) : 0.0f;
    y[(i / p.m) * ldy + m] =
        bd_st<bd_h16>(bd_conv_epilogue(acc, bias ? bias[m] : 0.0f, rv, p.act, p.res));
  }
}

// Depthwise (group == C == M, C % 8 == 0): 8 channels per thread through 16-byte loads
// and stores, the weights of those 8 channels read from the cache. Same summation order
// as k_conv_direct, so the same results.
__global__ void k_conv_dw8(bd_cuda_conv_shape p, const uint4 *__restrict__ x,
                           const bd_h16 *__restrict__ w, const float *__restrict__ bias,
                           const uint4 *__restrict__ r, uint4 *__restrict__ y, int64_t total8) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  const int c8 = p.c / 8, khw = p.kh * p.kw;
  const int ldx8 = (p.ldx ? p.ldx : p.c) / 8, ldy8 = (p.ldy ? p.ldy : p.m) / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int cg = (int)(i % c8);
    int64_t t = i / c8;
    int ox = (int)(t % p.ow);
    t /= p.ow;
    int oy = (int)(t % p.oh);
    int n = (int)(t / p.oh);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int ky = 0; ky < p.kh; ++ky) {
      int iy = oy * p.sh - p.pad_t + ky * p.dh;
      if (iy < 0 || iy >= p.h) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        int ix = ox * p.sw - p.pad_l + kx * p.dw;
        if (ix < 0 || ix >= p.w) continue;
        uint4 v = x[(((int64_t)n * p.h + iy) * p.w + ix) * ldx8 + cg];
        const bd_h16x2 *hv = reinterpret_cast<const bd_h16x2 *>(&v);
        const bd_h16 *wp = w + (int64_t)cg * 8 * khw + ky * p.kw + kx; // w[m][ky][kx]
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float2 f = bd_h16x2_ld(hv[k]);
          acc[2 * k] += f.x * bd_ld(wp[(2 * k) * khw]);
          acc[2 * k + 1] += f.y * bd_ld(wp[(2 * k + 1) * khw]);
        }
      }
    }
    uint4 rv = make_uint4(0, 0, 0, 0), out;
    if (r) rv = r[i];
    const bd_h16x2 *hr = reinterpret_cast<const bd_h16x2 *>(&rv);
    bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&out);
    const int c0 = cg * 8;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 fr = bd_h16x2_ld(hr[k]);
      float b0 = bias ? bias[c0 + 2 * k] : 0.0f, b1 = bias ? bias[c0 + 2 * k + 1] : 0.0f;
      ho[k] = bd_h16x2_st(bd_conv_epilogue(acc[2 * k], b0, fr.x, p.act, p.res),
                          bd_conv_epilogue(acc[2 * k + 1], b1, fr.y, p.act, p.res));
    }
    y[(i / c8) * ldy8 + cg] = out;
  }
}

__global__ void k_epilogue(int m, int act, int res, const float *__restrict__ bias,
                           const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                           int64_t total) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int c = (int)(i % m);
    float rv = r ? bd_ld(r[i]) : 0.0f;
    y[i] = bd_st<bd_h16>(bd_conv_epilogue(bd_ld(y[i]), bias ? bias[c] : 0.0f, rv, act, res));
  }
}

__global__ void k_epilogue_from(int m, int src_c, int ldy, int act, int res,
                                const bd_h16 *__restrict__ src, const float *__restrict__ bias,
                                const bd_h16 *__restrict__ r, bd_h16 *__restrict__ y,
                                int64_t total) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int c = (int)(i % m);
    int64_t pix = i / m;
    float rv = r ? bd_ld(r[i]) : 0.0f;
    y[pix * ldy + c] = bd_st<bd_h16>(
        bd_conv_epilogue(bd_ld(src[pix * src_c + c]), bias ? bias[c] : 0.0f, rv, act, res));
  }
}

// 8 channels per thread with 16-byte accesses (M % 8 == 0, the common case).
__global__ void k_epilogue8(int m, int act, int res, const float *__restrict__ bias,
                            const uint4 *__restrict__ r, uint4 *__restrict__ y, int64_t n8) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int c0 = (int)((i * 8) % m);
    uint4 v = y[i], rv = make_uint4(0, 0, 0, 0);
    if (r) rv = r[i];
    bd_h16x2 *hv = reinterpret_cast<bd_h16x2 *>(&v);
    const bd_h16x2 *hr = reinterpret_cast<const bd_h16x2 *>(&rv);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 f = bd_h16x2_ld(hv[k]);
      float2 fr = bd_h16x2_ld(hr[k]);
      float b0 = bias ? bias[c0 + 2 * k] : 0.0f, b1 = bias ? bias[c0 + 2 * k + 1] : 0.0f;
      hv[k] = bd_h16x2_st(bd_conv_epilogue(f.x, b0, fr.x, act, res),
                                    bd_conv_epilogue(f.y, b1, fr.y, act, res));
    }
    y[i] = v;
  }
}

} // namespace

extern "C" cudaError_t bd_cuda_conv_direct(const bd_cuda_conv_shape *p, const void *x,
                                           const void *w, const float *bias, const void *r,
                                           void *y, cudaStream_t s) {
  if (p->group < 1 || p->c % p->group || p->m % p->group || (p->ldr && p->ldr != p->m) ||
      p->m1 || p->rup > 1)
    return cudaErrorInvalidValue; /* a pitched or upsampled residual, twins: conv_mma only */
  const int ldx = p->ldx ? p->ldx : p->c, ldy = p->ldy ? p->ldy : p->m;
  if (ldx < p->c || ldy < p->m) return cudaErrorInvalidValue;
  int64_t total = (int64_t)p->n * p->oh * p->ow * p->m;
  if (total == 0) return cudaSuccess;
  if (p->group == p->c && p->m == p->c && p->c % 8 == 0 && ldx % 8 == 0 && ldy % 8 == 0 &&
      ((uintptr_t)x & 15u) == 0 && ((uintptr_t)y & 15u) == 0 && ((uintptr_t)r & 15u) == 0) {
    BD_LAUNCH(k_conv_dw8, bd_grid(total / 8, kThreads), kThreads, s, *p, (const uint4 *)x,
              (const bd_h16 *)w, bias, (const uint4 *)r, (uint4 *)y, total / 8);
    return cudaGetLastError();
  }
  BD_LAUNCH(k_conv_direct, bd_grid(total, kThreads), kThreads, s, *p, (const bd_h16 *)x,
            (const bd_h16 *)w, bias, (const bd_h16 *)r, (bd_h16 *)y, total);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_conv_epilogue_from(const bd_cuda_conv_shape *p, const void *src,
                                                  int src_c, const float *bias, const void *r,
                                                  void *y, cudaStream_t s) {
  int64_t total = (int64_t)p->n * p->oh * p->ow * p->m;
  const int ldy = p->ldy ? p->ldy : p->m;
  if (src_c < p->m || ldy < p->m || (p->ldr && p->ldr != p->m) || p->rup > 1)
    return cudaErrorInvalidValue;
  if (total == 0) return cudaSuccess;
  BD_LAUNCH(k_epilogue_from, bd_grid(total, kThreads), kThreads, s, p->m, src_c, ldy, p->act,
            p->res, (const bd_h16 *)src, bias, (const bd_h16 *)r, (bd_h16 *)y, total);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_conv_epilogue(const bd_cuda_conv_shape *p, const float *bias,
                                             const void *r, void *y, cudaStream_t s) {
  int64_t total = (int64_t)p->n * p->oh * p->ow * p->m;
  if ((p->ldy && p->ldy != p->m) || (p->ldr && p->ldr != p->m) || p->rup > 1)
    return cudaErrorInvalidValue;
  if (total == 0) return cudaSuccess;
  if (p->m % 8 == 0 && ((uintptr_t)y & 15u) == 0 && ((uintptr_t)r & 15u) == 0) {
    BD_LAUNCH(k_epilogue8, bd_grid(total / 8, kThreads), kThreads, s, p->m, p->act, p->res, bias,
              (const uint4 *)r, (uint4 *)y, total / 8);
  } else {
    BD_LAUNCH(k_epilogue, bd_grid(total, kThreads), kThreads, s, p->m, p->act, p->res, bias,
              (const bd_h16 *)r, (bd_h16 *)y, total);
  }
  return cudaGetLastError();
}
