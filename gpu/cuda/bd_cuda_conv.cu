// Convolution kernels of our own: the direct NHWC convolution (depthwise layers, and the
// fallback for shapes cuDNN has no algorithm for, e.g. asymmetric padding) and the
// epilogue that follows a cuDNN convolution (bias, activation, residual in one pass).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float epilogue(float acc, float bias, float r, int act, int res) {
  acc += bias;
  if (res == 1) acc += r; // BD_RES_PRE_ACT
  acc = bd_act_apply(acc, act);
  if (res == 2) acc += r; // BD_RES_POST_ACT
  return acc;
}

__global__ void k_conv_direct(bd_cuda_conv_shape p, const __nv_bfloat16 *__restrict__ x,
                              const __nv_bfloat16 *__restrict__ w,
                              const float *__restrict__ bias,
                              const __nv_bfloat16 *__restrict__ r,
                              __nv_bfloat16 *__restrict__ y, int64_t total) {
  const int cg = p.c / p.group, mg = p.m / p.group;
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
        const __nv_bfloat16 *xp = x + (((int64_t)n * p.h + iy) * p.w + ix) * p.c + g * cg;
        const __nv_bfloat16 *wp = w + (((int64_t)m * p.kh + ky) * p.kw + kx) * cg;
        for (int ci = 0; ci < cg; ++ci) acc += bd_ld(xp[ci]) * bd_ld(wp[ci]);
      }
    }
    float rv = r ? bd_ld(r[i]) : 0.0f;
    y[i] = bd_st<__nv_bfloat16>(epilogue(acc, bias ? bias[m] : 0.0f, rv, p.act, p.res));
  }
}

__global__ void k_epilogue(int m, int act, int res, const float *__restrict__ bias,
                           const __nv_bfloat16 *__restrict__ r, __nv_bfloat16 *__restrict__ y,
                           int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int c = (int)(i % m);
    float rv = r ? bd_ld(r[i]) : 0.0f;
    y[i] = bd_st<__nv_bfloat16>(epilogue(bd_ld(y[i]), bias ? bias[c] : 0.0f, rv, act, res));
  }
}

// 8 channels per thread with 16-byte accesses (M % 8 == 0, the common case).
__global__ void k_epilogue8(int m, int act, int res, const float *__restrict__ bias,
                            const uint4 *__restrict__ r, uint4 *__restrict__ y, int64_t n8) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int c0 = (int)((i * 8) % m);
    uint4 v = y[i], rv = make_uint4(0, 0, 0, 0);
    if (r) rv = r[i];
    __nv_bfloat162 *hv = reinterpret_cast<__nv_bfloat162 *>(&v);
    const __nv_bfloat162 *hr = reinterpret_cast<const __nv_bfloat162 *>(&rv);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 f = __bfloat1622float2(hv[k]);
      float2 fr = __bfloat1622float2(hr[k]);
      float b0 = bias ? bias[c0 + 2 * k] : 0.0f, b1 = bias ? bias[c0 + 2 * k + 1] : 0.0f;
      hv[k] = __floats2bfloat162_rn(epilogue(f.x, b0, fr.x, act, res),
                                    epilogue(f.y, b1, fr.y, act, res));
    }
    y[i] = v;
  }
}

} // namespace

extern "C" cudaError_t bd_cuda_conv_direct(const bd_cuda_conv_shape *p, const void *x,
                                           const void *w, const float *bias, const void *r,
                                           void *y, cudaStream_t s) {
  if (p->group < 1 || p->c % p->group || p->m % p->group) return cudaErrorInvalidValue;
  int64_t total = (int64_t)p->n * p->oh * p->ow * p->m;
  if (total == 0) return cudaSuccess;
  k_conv_direct<<<bd_grid(total, kThreads), kThreads, 0, s>>>(
      *p, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)w, bias,
      (const __nv_bfloat16 *)r, (__nv_bfloat16 *)y, total);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_conv_epilogue(const bd_cuda_conv_shape *p, const float *bias,
                                             const void *r, void *y, cudaStream_t s) {
  int64_t total = (int64_t)p->n * p->oh * p->ow * p->m;
  if (total == 0) return cudaSuccess;
  if (p->m % 8 == 0 && ((uintptr_t)y & 15u) == 0 && ((uintptr_t)r & 15u) == 0) {
    k_epilogue8<<<bd_grid(total / 8, kThreads), kThreads, 0, s>>>(
        p->m, p->act, p->res, bias, (const uint4 *)r, (uint4 *)y, total / 8);
  } else {
    k_epilogue<<<bd_grid(total, kThreads), kThreads, 0, s>>>(
        p->m, p->act, p->res, bias, (const __nv_bfloat16 *)r, (__nv_bfloat16 *)y, total);
  }
  return cudaGetLastError();
}
