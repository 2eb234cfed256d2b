// ONNX Resize on the spatial axes of 16-bit NHWC tensors (FPN upsampling): nearest with
// the four ONNX rounding modes, and (bi)linear; coordinate transforms as in the ONNX
// spec. Math in FP32. Pixels of x and y are xp and yp channels apart (>= c): a channel
// slice of a wider tensor (a Concat piece written or read in place).
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
                         float sh, float sw, int xp, int yp, const bd_h16 *__restrict__ x,
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
    float fy = src_coord(oy, h, oh, sh, coord), fx = src_coord(ox, w, ow, sw, coord);
    const bd_h16 *xn = x + n * h * w * xp + ch;
    float v;
    if (mode == 0) {
      int iy = nearest_index(fy, nearest, h), ix = nearest_index(fx, nearest, w);
      v = bd_ld(xn[((int64_t)iy * w + ix) * xp]);
    } else {
      fy = fminf(fmaxf(fy, 0.0f), (float)(h - 1));
      fx = fminf(fmaxf(fx, 0.0f), (float)(w - 1));
      int y0 = (int)fy, x0 = (int)fx;
      int y1 = y0 + 1 < h ? y0 + 1 : h - 1, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
      float ly = fy - (float)y0, lx = fx - (float)x0;
      float a = bd_ld(xn[((int64_t)y0 * w + x0) * xp]), b = bd_ld(xn[((int64_t)y0 * w + x1) * xp]);
      float cc = bd_ld(xn[((int64_t)y1 * w + x0) * xp]), d = bd_ld(xn[((int64_t)y1 * w + x1) * xp]);
      v = (a * (1.0f - lx) + b * lx) * (1.0f - ly) + (cc * (1.0f - lx) + d * lx) * ly;
    }
    y[(i / c) * yp + ch] = bd_st<bd_h16>(v);
  }
}

// Nearest mode with C % 8 == 0: 8 channels per thread, 16-byte copies (the FPN upsample).
__global__ void k_resize_nearest8(int h, int w, int c8, int oh, int ow, int coord, int nearest,
                                  float sh, float sw, int xp8, int yp8,
                                  const uint4 *__restrict__ x, uint4 *__restrict__ y,
                                  int64_t total8) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int cg = (int)(i % c8);
    int64_t t = i / c8;
    int ox = (int)(t % ow);
    t /= ow;
    int oy = (int)(t % oh);
    int64_t n = t / oh;
    int iy = nearest_index(src_coord(oy, h, oh, sh, coord), nearest, h);
    int ix = nearest_index(src_coord(ox, w, ow, sw, coord), nearest, w);
    y[(i / c8) * yp8 + cg] = x[((n * h + iy) * w + ix) * xp8 + cg];
  }
}
} // namespace

extern "C" cudaError_t bd_cuda_resize_nhwc(int n, int h, int w, int c, int oh, int ow, int mode,
                                           int coord, int nearest, float scale_h, float scale_w,
                                           int xp, int yp, const void *x, void *y,
                                           cudaStream_t s) {
  int64_t total = (int64_t)n * oh * ow * c;
  if (total == 0) return cudaSuccess;
  if (!(scale_h > 0.0f) || !(scale_w > 0.0f) || xp < c || yp < c) return cudaErrorInvalidValue;
  if (mode == 0 && c % 8 == 0 && xp % 8 == 0 && yp % 8 == 0 && ((uintptr_t)x & 15u) == 0 &&
      ((uintptr_t)y & 15u) == 0) {
    BD_LAUNCH(k_resize_nearest8, bd_grid(total / 8, 256), 256, s, h, w, c / 8, oh, ow, coord,
              nearest, scale_h, scale_w, xp / 8, yp / 8, (const uint4 *)x, (uint4 *)y, total / 8);
    return cudaGetLastError();
  }
  BD_LAUNCH(k_resize, bd_grid(total, 256), 256, s, h, w, c, oh, ow, mode, coord, nearest, scale_h,
            scale_w, xp, yp, (const bd_h16 *)x, (bd_h16 *)y, total);
  return cudaGetLastError();
}
