// Softmax in FP32 (DAMO-YOLO's distribution over box bins; damoyolo.md item 20 keeps it
// out of BF16). One thread per (outer, inner) row: the softmax axes are short (17 bins).
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__global__ void k_softmax(int64_t outer, int64_t len, int64_t inner,
                          const float *__restrict__ x, float *__restrict__ y) {
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
