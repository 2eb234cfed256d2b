// Max pooling on BF16 NHWC (YOLOX SPP, DAMO SPPF): one thread per output element,
// channels fastest so that a warp reads consecutive channels.
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__global__ void k_maxpool(int h, int w, int c, int oh, int ow, int kh, int kw, int sh, int sw,
                          int pt, int pl, const __nv_bfloat16 *__restrict__ x,
                          __nv_bfloat16 *__restrict__ y, int64_t total) {
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
        float v = bd_ld(x[((n * h + iy) * w + ix) * c + ch]);
        m = v > m ? v : m;
      }
    }
    y[i] = bd_st<__nv_bfloat16>(m);
  }
}
} // namespace

extern "C" cudaError_t bd_cuda_maxpool_nhwc(int n, int h, int w, int c, int oh, int ow, int kh,
                                            int kw, int sh, int sw, int pad_t, int pad_l,
                                            const void *x, void *y, cudaStream_t s) {
  int64_t total = (int64_t)n * oh * ow * c;
  if (total == 0) return cudaSuccess;
  k_maxpool<<<bd_grid(total, 256), 256, 0, s>>>(h, w, c, oh, ow, kh, kw, sh, sw, pad_t, pad_l,
                                               (const __nv_bfloat16 *)x, (__nv_bfloat16 *)y,
                                               total);
  return cudaGetLastError();
}
