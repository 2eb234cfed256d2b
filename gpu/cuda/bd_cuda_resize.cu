// ONNX Resize on the spatial axes of BF16 NHWC tensors (FPN upsampling): nearest with
// the four ONNX rounding modes, and (bi)linear; coordinate transforms as in the ONNX
// spec. Math in FP32.
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
// Maps an output coordinate to the input grid (bd_coord_mode order).
__device__ __forceinline__ float src_coord(int o, int in_len, int out_len, float scale,
                                           int coord) {
  switch (coord) {
  case 1: return ((float)o + 0.5f) / scale - 0.5f; // half_pixel
  case 2: return out_len > 1 ? ((float)o + 0.5f) / scale - 0.5f : 0.0f; // pytorch_half_pixel
  case 3: return out_len > 1 ? (float)o * (float)(in_len - 1) / (float)(out_len - 1) : 0.0f;
  default: return (float)o / scale; // asymmetric
  }
}

__device__ __forceinline__ int nearest_index(float x, int mode, int len) {
  int i;
  switch (mode) {
  case 1: i = (int)ceilf(x - 0.5f); break;  // round_prefer_floor
  case 2: i = (int)floorf(x + 0.5f); break; // round_prefer_ceil
  case 3: i = (int)ceilf(x); break;
  default: i = (int)floorf(x); break;
  }
  return i < 0 ? 0 : (i >= len ? len - 1 : i);
}

__global__ void k_resize(int h, int w, int c, int oh, int ow, int mode, int coord, int nearest,
                         float sh, float sw, const __nv_bfloat16 *__restrict__ x,
                         __nv_bfloat16 *__restrict__ y, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int ch = (int)(i % c);
    int64_t t = i / c;
    int ox = (int)(t % ow);
    t /= ow;
    int oy = (int)(t % oh);
    int64_t n = t / oh;
    float fy = src_coord(oy, h, oh, sh, coord), fx = src_coord(ox, w, ow, sw, coord);
    const __nv_bfloat16 *xn = x + n * h * w * c + ch;
    float v;
    if (mode == 0) {
      int iy = nearest_index(fy, nearest, h), ix = nearest_index(fx, nearest, w);
      v = bd_ld(xn[((int64_t)iy * w + ix) * c]);
    } else {
      fy = fminf(fmaxf(fy, 0.0f), (float)(h - 1));
      fx = fminf(fmaxf(fx, 0.0f), (float)(w - 1));
      int y0 = (int)fy, x0 = (int)fx;
      int y1 = y0 + 1 < h ? y0 + 1 : h - 1, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
      float ly = fy - (float)y0, lx = fx - (float)x0;
      float a = bd_ld(xn[((int64_t)y0 * w + x0) * c]), b = bd_ld(xn[((int64_t)y0 * w + x1) * c]);
      float cc = bd_ld(xn[((int64_t)y1 * w + x0) * c]), d = bd_ld(xn[((int64_t)y1 * w + x1) * c]);
      v = (a * (1.0f - lx) + b * lx) * (1.0f - ly) + (cc * (1.0f - lx) + d * lx) * ly;
    }
    y[i] = bd_st<__nv_bfloat16>(v);
  }
}
} // namespace

extern "C" cudaError_t bd_cuda_resize_nhwc(int n, int h, int w, int c, int oh, int ow, int mode,
                                           int coord, int nearest, float scale_h, float scale_w,
                                           const void *x, void *y, cudaStream_t s) {
  int64_t total = (int64_t)n * oh * ow * c;
  if (total == 0) return cudaSuccess;
  if (!(scale_h > 0.0f) || !(scale_w > 0.0f)) return cudaErrorInvalidValue;
  k_resize<<<bd_grid(total, 256), 256, 0, s>>>(h, w, c, oh, ow, mode, coord, nearest, scale_h,
                                              scale_w, (const __nv_bfloat16 *)x,
                                              (__nv_bfloat16 *)y, total);
  return cudaGetLastError();
}
