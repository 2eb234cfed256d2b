// Small batched FP32 matmul (DAMO-YOLO's integral over bins, tiny projection heads):
// one thread per output element; large matmuls would belong to cuBLAS, which these
// detectors never need.
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {
__global__ void k_matmul(int64_t batch, int64_t m, int64_t k, int64_t n,
                         const float *__restrict__ a, int64_t as, const float *__restrict__ b,
                         int64_t bs, float *__restrict__ y) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t total = batch * m * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t j = i % n, t = i / n, r = t % m, bt = t / m;
    const float *ap = a + bt * as + r * k;
    const float *bp = b + bt * bs + j;
    float acc = 0.0f;
    for (int64_t q = 0; q < k; ++q) acc += ap[q] * bp[q * n];
    y[i] = acc;
  }
}
} // namespace

extern "C" cudaError_t bd_cuda_matmul_f32(int64_t batch, int64_t m, int64_t k, int64_t n,
                                          const float *a, int64_t a_bstride, const float *bm,
                                          int64_t b_bstride, float *y, cudaStream_t s) {
  int64_t total = batch * m * n;
  if (total == 0) return cudaSuccess;
  BD_LAUNCH(k_matmul, bd_grid(total, 256), 256, s, batch, m, k, n, a, a_bstride, bm, b_bstride, y);
  return cudaGetLastError();
}
