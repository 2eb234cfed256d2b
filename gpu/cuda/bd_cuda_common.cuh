// Device helpers shared by the kernel files (not a public header).
#ifndef BD_CUDA_COMMON_CUH
#define BD_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

__device__ __forceinline__ float bd_ld(float v) { return v; }
__device__ __forceinline__ float bd_ld(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T bd_st(float v);
template <> __device__ __forceinline__ float bd_st<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 bd_st<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float bd_sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

// act codes follow bd_act: 0 none, 1 relu, 2 sigmoid, 3 silu.
__device__ __forceinline__ float bd_act_apply(float x, int act) {
  switch (act) {
  case 1: return x > 0.0f ? x : 0.0f;
  case 2: return bd_sigmoid(x);
  case 3: return x * bd_sigmoid(x);
  default: return x;
  }
}

// Grid for a grid-stride loop over n items: enough blocks to fill the GPU, capped so
// that huge tensors loop instead of launching millions of blocks.
static inline unsigned bd_grid(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)b;
}

#endif
