/* bd_cuda_nccl: see bd_cuda_nccl.h. */
#include "bd_cuda_nccl.h"

#include <cuda_runtime.h>
#include <string.h>

#ifdef BD_HAVE_NCCL
#include <nccl.h>
#endif

#define CK_CUDA(call, dev)                                                           \
  do {                                                                               \
    cudaError_t ce_ = (call);                                                        \
    if (ce_ != cudaSuccess) {                                                        \
      st = bd_err_set(err, BD_E_DEVICE, "broadcast: %s on GPU %d: %s", #call, (dev), \
                      cudaGetErrorString(ce_));                                      \
      goto out;                                                                      \
    }                                                                                \
  } while (0)

#ifdef BD_HAVE_NCCL
#define CK_NCCL(call, dev)                                                           \
  do {                                                                               \
    ncclResult_t nr_ = (call);                                                       \
    if (nr_ != ncclSuccess) {                                                        \
      st = bd_err_set(err, BD_E_DEVICE, "broadcast: %s on GPU %d: %s", #call, (dev), \
                      ncclGetErrorString(nr_));                                      \
      goto out;                                                                      \
    }                                                                                \
  } while (0)
#endif

int bd_cuda_nccl_available(void) {
#ifdef BD_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

bd_status bd_cuda_nccl_broadcast(const void *src, size_t bytes, int n, const int *devices,
                                 void **dev_dst, bd_err *err) {
  if (!src || !devices || !dev_dst || n < 1 || n > BD_CUDA_NCCL_MAX_DEVICES)
    return bd_err_set(err, BD_E_INVALID, "broadcast: %d devices (1..%d), src %p", n,
                      BD_CUDA_NCCL_MAX_DEVICES, src);
  if (bytes == 0 || bytes > BD_CUDA_NCCL_MAX_BYTES)
    return bd_err_set(err, BD_E_LIMIT, "broadcast: %zu bytes (1..%zu)", bytes,
                      BD_CUDA_NCCL_MAX_BYTES);
  for (int i = 0; i < n; i++) {
    if (devices[i] < 0 || devices[i] >= BD_CUDA_NCCL_MAX_DEVICES)
      return bd_err_set(err, BD_E_INVALID, "broadcast: device %d", devices[i]);
    for (int k = 0; k < i; k++)
      if (devices[k] == devices[i])
        return bd_err_set(err, BD_E_INVALID, "broadcast: device %d listed twice", devices[i]);
  }
  bd_status st = BD_OK;
  int prev = 0, count = 0, have_prev = 0;
  int mine[BD_CUDA_NCCL_MAX_DEVICES] = {0}; /* 1: dev_dst[i] allocated here */
  cudaStream_t streams[BD_CUDA_NCCL_MAX_DEVICES] = {0};
#ifdef BD_HAVE_NCCL
  ncclComm_t comms[BD_CUDA_NCCL_MAX_DEVICES] = {0};
  int have_comms = 0;
#endif
  CK_CUDA(cudaGetDevice(&prev), -1);
  have_prev = 1;
  CK_CUDA(cudaGetDeviceCount(&count), -1);
  for (int i = 0; i < n; i++)
    if (devices[i] >= count) {
      st = bd_err_set(err, BD_E_DEVICE, "broadcast: GPU %d not visible (%d visible)", devices[i],
                      count);
      goto out;
    }
  for (int i = 0; i < n; i++) {
    CK_CUDA(cudaSetDevice(devices[i]), devices[i]);
    if (!dev_dst[i]) {
      CK_CUDA(cudaMalloc(&dev_dst[i], bytes), devices[i]);
      mine[i] = 1;
    }
    CK_CUDA(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking), devices[i]);
  }
  /* The root's copy: cudaMemcpyDefault tells host from device memory (UVA). */
  CK_CUDA(cudaSetDevice(devices[0]), devices[0]);
  if (dev_dst[0] != src) { /* src may be the root's own buffer: broadcast in place */
    CK_CUDA(cudaMemcpyAsync(dev_dst[0], src, bytes, cudaMemcpyDefault, streams[0]), devices[0]);
    CK_CUDA(cudaStreamSynchronize(streams[0]), devices[0]);
  }
#ifdef BD_HAVE_NCCL
  CK_NCCL(ncclCommInitAll(comms, n, devices), -1);
  have_comms = 1;
  CK_NCCL(ncclGroupStart(), -1);
  for (int i = 0; i < n; i++) {
    ncclResult_t r = ncclBcast(dev_dst[i], bytes, ncclChar, 0, comms[i], streams[i]);
    if (r != ncclSuccess) {
      ncclGroupEnd();
      st = bd_err_set(err, BD_E_DEVICE, "broadcast: ncclBcast on GPU %d: %s", devices[i],
                      ncclGetErrorString(r));
      goto out;
    }
  }
  CK_NCCL(ncclGroupEnd(), -1);
#else
  for (int i = 1; i < n; i++) {
    CK_CUDA(cudaSetDevice(devices[i]), devices[i]);
    CK_CUDA(cudaMemcpyPeerAsync(dev_dst[i], devices[i], dev_dst[0], devices[0], bytes, streams[i]),
            devices[i]);
  }
#endif
  for (int i = 0; i < n; i++) {
    CK_CUDA(cudaSetDevice(devices[i]), devices[i]);
    CK_CUDA(cudaStreamSynchronize(streams[i]), devices[i]);
  }
out:
#ifdef BD_HAVE_NCCL
  if (have_comms)
    for (int i = 0; i < n; i++)
      if (comms[i]) ncclCommDestroy(comms[i]);
#endif
  for (int i = 0; i < n; i++) {
    if (!streams[i] && !(st != BD_OK && mine[i])) continue;
    cudaSetDevice(devices[i]);
    if (streams[i]) cudaStreamDestroy(streams[i]);
    if (st != BD_OK && mine[i]) {
      cudaFree(dev_dst[i]);
      dev_dst[i] = NULL;
    }
  }
  if (have_prev) cudaSetDevice(prev);
  return st;
}
