// Pre-processing on the GPU (issue 6, first part): uint8 RGB images -> resized (OpenCV
// INTER_LINEAR fixed-point arithmetic, bit-identical to bd_family_resize_u8 and so to
// cv2.resize) -> the network input, letterbox padding or stretch, RGB or BGR order:
// FP32 NCHW, or 16-bit NHWC (the form the first convolution reads, so that device
// detection needs no conversion pass; pixel levels are integers <= 255, exact in both
// 16-bit types). One thread per output pixel, all three channels; rows of a batch are
// described by bd_cuda_prep_desc so that one launch serves a batch of mixed sizes.
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {

__device__ __forceinline__ int cv_coef(float v) {
  int r = __float2int_rn(v); // cvRound: half to even, like lrintf
  return r < -32768 ? -32768 : (r > 32767 ? 32767 : r);
}

// The source coordinate and the two weights for output coordinate d, exactly as the
// CPU code: double (d + 0.5) * scale - 0.5 (no FMA contraction), then float.
__device__ __forceinline__ void coord(int d, double scale, int slen, bool clamp_edge, int *s0,
                                      int *w0, int *w1) {
  float f = (float)__dadd_rn(__dmul_rn((double)d + 0.5, scale), -0.5);
  int s = (int)floorf(f);
  f -= (float)s;
  if (clamp_edge) {
    if (s < 0) f = 0.f, s = 0;
    if (s >= slen - 1) f = 0.f, s = slen - 1;
  }
  *s0 = s;
  *w0 = cv_coef(__fmul_rn(__fsub_rn(1.f, f), 2048.f));
  *w1 = cv_coef(__fmul_rn(f, 2048.f));
}

// The three channels of pixel p of image b: FP32 planes, or 16-bit NHWC.
__device__ __forceinline__ void put(float *dst, int64_t plane, int b, int64_t p, float c0,
                                    float c1, float c2) {
  float *o = dst + (int64_t)b * 3 * plane + p;
  o[0] = c0;
  o[plane] = c1;
  o[2 * plane] = c2;
}
__device__ __forceinline__ void put(bd_h16 *dst, int64_t plane, int b, int64_t p, float c0,
                                    float c1, float c2) {
  bd_h16 *o = dst + ((int64_t)b * plane + p) * 3;
  o[0] = (bd_h16)c0;
  o[1] = (bd_h16)c1;
  o[2] = (bd_h16)c2;
}

template <typename T>
__global__ void k_prep(const uint8_t *__restrict__ src, const bd_cuda_prep_desc *__restrict__ d,
                       int n, int out_w, int out_h, int bgr, float pad, T *__restrict__ dst) {
  int64_t plane = (int64_t)out_w * out_h, total = plane * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int b = (int)(i / plane);
    int64_t p = i - (int64_t)b * plane;
    int y = (int)(p / out_w), x = (int)(p - (int64_t)y * out_w);
    const bd_cuda_prep_desc &D = d[b];
    if (x >= D.rw || y >= D.rh) {
      put(dst, plane, b, p, pad, pad, pad);
      continue;
    }
    const uint8_t *S = src + D.offset;
    int v[3];
    if (D.rw == D.sw && D.rh == D.sh) { // cv::resize copies
      const uint8_t *q = S + ((int64_t)y * D.sw + x) * 3;
      v[0] = q[0];
      v[1] = q[1];
      v[2] = q[2];
    } else {
      int sx, a0, a1, sy, b0, b1;
      coord(x, D.scale_x, D.sw, true, &sx, &a0, &a1);
      coord(y, D.scale_y, D.sh, false, &sy, &b0, &b1);
      int y0 = sy < 0 ? 0 : (sy >= D.sh ? D.sh - 1 : sy);
      int y1 = sy + 1 < 0 ? 0 : (sy + 1 >= D.sh ? D.sh - 1 : sy + 1);
      const uint8_t *r0 = S + ((int64_t)y0 * D.sw + sx) * 3, *r1 = S + ((int64_t)y1 * D.sw + sx) * 3;
      for (int c = 0; c < 3; ++c) {
        int h0 = a1 ? r0[c] * a0 + r0[c + 3] * a1 : r0[c] * a0;
        int h1 = a1 ? r1[c] * a0 + r1[c + 3] * a1 : r1[c] * a0;
        int t = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2;
        v[c] = t < 0 ? 0 : (t > 255 ? 255 : t);
      }
    }
    if (bgr)
      put(dst, plane, b, p, (float)v[2], (float)v[1], (float)v[0]);
    else
      put(dst, plane, b, p, (float)v[0], (float)v[1], (float)v[2]);
  }
}

} // namespace

extern "C" cudaError_t bd_cuda_preprocess_u8(const uint8_t *src, const bd_cuda_prep_desc *descs,
                                             int n, int out_w, int out_h, int bgr, float pad,
                                             float *dst, cudaStream_t s) {
  if (n < 1 || out_w < 1 || out_h < 1) return cudaErrorInvalidValue;
  int64_t total = (int64_t)n * out_w * out_h;
  BD_LAUNCH(k_prep<float>, bd_grid(total, 256), 256, s, src, descs, n, out_w, out_h, bgr, pad,
            dst);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_preprocess_u8_h16(const uint8_t *src,
                                                 const bd_cuda_prep_desc *descs, int n,
                                                 int out_w, int out_h, int bgr, float pad,
                                                 void *dst, cudaStream_t s) {
  if (n < 1 || out_w < 1 || out_h < 1) return cudaErrorInvalidValue;
  int64_t total = (int64_t)n * out_w * out_h;
  BD_LAUNCH(k_prep<bd_h16>, bd_grid(total, 256), 256, s, src, descs, n, out_w, out_h, bgr, pad,
            (bd_h16 *)dst);
  return cudaGetLastError();
}
