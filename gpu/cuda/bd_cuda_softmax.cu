// Softmax in FP32 (DAMO-YOLO's distribution over box bins; damoyolo.md item 20 keeps it
// out of BF16). One thread per (outer, inner) row: the softmax axes are short (17 bins).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__global__ void k_softmax(int64_t outer, int64_t len, int64_t inner,
                          const float *__restrict__ x, float *__restrict__ y) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t rows = outer * inner;
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
       r += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = r / inner, in = r - o * inner;
    const float *xp = x + o * len * inner + in;
    float *yp = y + o * len * inner + in;
    float m = -INFINITY;
    for (int64_t k = 0; k < len; ++k) m = fmaxf(m, xp[k * inner]);
    float s = 0.0f;
    for (int64_t k = 0; k < len; ++k) s += expf(xp[k * inner] - m);
    float inv = 1.0f / s;
    for (int64_t k = 0; k < len; ++k) yp[k * inner] = expf(xp[k * inner] - m) * inv;
  }
}
} // namespace

extern "C" cudaError_t bd_cuda_softmax_f32(int64_t outer, int64_t len, int64_t inner,
                                           const float *x, float *y, cudaStream_t s) {
  if (outer * inner == 0 || len == 0) return cudaSuccess;
  BD_LAUNCH(k_softmax, bd_grid(outer * inner, 128), 128, s, outer, len, inner, x, y);
  return cudaGetLastError();
}

// SoftmaxDot (a DFL box head's integral, fused by bd_compile): one thread per output
// value reads its R bins straight from the producer's buffer through a strided view
// (16-bit NHWC conv output or FP32), so neither the FP32 copy of the logits nor the
// probabilities exist. Threads are ordered by the input's strides (smallest innermost):
// a warp reads neighbouring bins groups of neighbouring pixels.
namespace {
struct SdGeo {
  int rank;
  int64_t dims[BD_CUDA_MAX_RANK];
  int64_t xs[BD_CUDA_MAX_RANK]; // input strides per output dim
  int64_t ys[BD_CUDA_MAX_RANK]; // output strides
  int64_t len, step;            // bins and their input stride
};

// Output t's first bin in x (*xo) and its place in y (*yo).
__device__ __forceinline__ void sd_offsets(const SdGeo &g, int64_t t, int64_t *xo,
                                           int64_t *yo) {
  int64_t r = t, a = 0, b = 0;
  for (int d = g.rank - 1; d >= 0; --d) {
    int64_t i = r % g.dims[d];
    r /= g.dims[d];
    a += i * g.xs[d];
    b += i * g.ys[d];
  }
  *xo = a;
  *yo = b;
}

template <typename T>
__global__ void k_softmax_dot(SdGeo g, int64_t total, const T *__restrict__ x,
                              const float *__restrict__ w, float *__restrict__ y) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    int64_t xo, yo;
    sd_offsets(g, t, &xo, &yo);
    const T *xp = x + xo;
    float m = -INFINITY;
    for (int64_t k = 0; k < g.len; ++k) m = fmaxf(m, bd_ld(xp[k * g.step]));
    float s = 0.0f, d = 0.0f;
    for (int64_t k = 0; k < g.len; ++k) {
      float e = expf(bd_ld(xp[k * g.step]) - m);
      s += e;
      d += e * w[k];
    }
    y[yo] = d / s;
  }
}

// The same with the bin count L known (the DFL heads: 17 bins in GFL / DAMO-YOLO, 16 in
// YOLOv8-style ones): the bins read once into registers, their loads independent. The
// runtime loops above wait for each load before the next: on the H100 DAMO-T's three
// SoftmaxDots took 7.4, 6.3 and 6.1 us at b1 (latency), on its box branch. The same
// operations in the same order: results equal to the loops'.
template <typename T, int L>
__global__ void k_softmax_dot_n(SdGeo g, int64_t total, const T *__restrict__ x,
                                const float *__restrict__ w, float *__restrict__ y) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    int64_t xo, yo;
    sd_offsets(g, t, &xo, &yo);
    const T *xp = x + xo;
    float v[L];
#pragma unroll
    for (int k = 0; k < L; ++k) v[k] = bd_ld(xp[k * g.step]);
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < L; ++k) m = fmaxf(m, v[k]);
    float s = 0.0f, d = 0.0f;
#pragma unroll
    for (int k = 0; k < L; ++k) {
      float e = expf(v[k] - m);
      s += e;
      d += e * w[k];
    }
    y[yo] = d / s;
  }
}

template <typename T>
void launch_softmax_dot(const SdGeo &g, int64_t total, const void *x, const float *w, void *y,
                        cudaStream_t s) {
  const T *xt = static_cast<const T *>(x);
  float *yf = static_cast<float *>(y);
  if (g.len == 17)
    BD_LAUNCH(BD_K(k_softmax_dot_n<T, 17>), bd_grid(total, 128), 128, s, g, total, xt, w, yf);
  else if (g.len == 16)
    BD_LAUNCH(BD_K(k_softmax_dot_n<T, 16>), bd_grid(total, 128), 128, s, g, total, xt, w, yf);
  else
    BD_LAUNCH(k_softmax_dot<T>, bd_grid(total, 128), 128, s, g, total, xt, w, yf);
}
} // namespace

extern "C" cudaError_t bd_cuda_softmax_dot(const bd_cuda_view *y, const bd_cuda_view *x, int axis,
                                           const float *w, cudaStream_t s) {
  if (x->rank != y->rank || axis < 0 || axis >= x->rank || y->dtype != BD_CT_F32)
    return cudaErrorInvalidValue;
  SdGeo g = {};
  int64_t total = 1;
  g.len = x->dims[axis];
  g.step = x->strides[axis];
  for (int d = 0; d < x->rank; ++d) {
    if (d == axis || x->dims[d] == 1) continue;
    int j = g.rank++; // insertion by descending input stride: the smallest innermost
    while (j > 0 && g.xs[j - 1] < x->strides[d]) {
      g.dims[j] = g.dims[j - 1], g.xs[j] = g.xs[j - 1], g.ys[j] = g.ys[j - 1];
      --j;
    }
    g.dims[j] = x->dims[d], g.xs[j] = x->strides[d], g.ys[j] = y->strides[d];
    total *= x->dims[d];
  }
  if (total == 0 || g.len == 0) return cudaSuccess;
  if (g.rank == 0) g.rank = 1, g.dims[0] = 1;
  if (x->dtype == BD_CT_H16)
    launch_softmax_dot<bd_h16>(g, total, x->base, w, y->base, s);
  else
    launch_softmax_dot<float>(g, total, x->base, w, y->base, s);
  return cudaGetLastError();
}
