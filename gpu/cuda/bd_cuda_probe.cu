// A trivial kernel so that the CUDA build is exercised from day one; also the
// runtime probe the rest of the engine uses to decide whether a GPU is present.
#include <cuda_runtime.h>

#include "bd_cuda_probe.h"

__global__ void bd_probe_kernel(int *out) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *out = 42;
}

extern "C" int bd_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

extern "C" int bd_cuda_probe_kernel(void) {
  int *d = nullptr;
  int h = 0;
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) return -1;
  bd_probe_kernel<<<1, 32>>>(d);
  cudaError_t e = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  return (e == cudaSuccess && h == 42) ? 0 : -1;
}
