/* bd_cuda_nccl: copies one buffer (model weights, a lookup table) from the host or from
 * one GPU to several local GPUs at load time, with NCCL when the build found it
 * (BD_HAVE_NCCL): ncclCommInitAll over the listed devices (also a single one), then
 * ncclBcast from the first device inside one ncclGroupStart/End, one stream per device,
 * each stream synchronised before returning. Without NCCL the same function falls back
 * to peer copies (cudaMemcpyPeer) from the first device, so callers need no #ifdef.
 *
 * Usage: the pool (bd_pool) loads one engine per GPU; when every instance would read
 * the same ONNX initialisers from the host, the first GPU can receive them once and the
 * others get them over NVLink/PCIe peer paths instead of n host uploads:
 *
 *   void *dst[2] = {NULL, NULL};      // NULL: allocated here with cudaMalloc
 *   int devs[2] = {0, 1};
 *   bd_status st = bd_cuda_nccl_broadcast(host_weights, bytes, 2, devs, dst, &err);
 *   ... dst[i] lives on devs[i]; the caller cudaFree()s it (with devs[i] current).
 *
 * Contract: src is host memory or device memory (any device, UVA); devices are distinct
 * visible GPU indices, 1..BD_CUDA_NCCL_MAX_DEVICES of them; dev_dst[i] is either the
 * caller's buffer of >= bytes on devices[i] or NULL (then allocated here); dev_dst[0]
 * may be src itself (the root broadcasts its own buffer in place). On failure
 * the buffers allocated here are freed and their slots reset to NULL; the caller's are
 * left alone. Every CUDA and NCCL call is checked; the message names the call and the
 * device. Blocking (not for use inside a graph capture); restores the calling thread's
 * current device. Thread safety: reentrant; NCCL communicators are made and destroyed
 * per call (a load-time operation, where their ~100 ms setup does not matter). */
#ifndef BD_CUDA_NCCL_H
#define BD_CUDA_NCCL_H

#include <stddef.h>

#include "bd_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BD_CUDA_NCCL_MAX_DEVICES 64
#define BD_CUDA_NCCL_MAX_BYTES ((size_t)1 << 36) /* 64 GiB: a limit, not a target */

/* 1 when the build links NCCL, 0 when broadcasts use the peer-copy fallback. */
int bd_cuda_nccl_available(void);

bd_status bd_cuda_nccl_broadcast(const void *host_or_dev_src, size_t bytes, int n_devices,
                                 const int *devices, void **dev_dst, bd_err *err);

#ifdef __cplusplus
}
#endif
#endif
