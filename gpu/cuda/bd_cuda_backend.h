/* bd_cuda_backend: the CUDA execution backend (16-bit NHWC storage: IEEE half, bfloat16
 * in BD_CUDA_BF16 builds; FP32 math; cuDNN convolutions, own kernels, one captured
 * CUDA graph per prepared plan). See bd_backend.h for the contract. */
#ifndef BD_CUDA_BACKEND_H
#define BD_CUDA_BACKEND_H

#include "bd_backend.h"
#include "bd_graph.h"
#include "bd_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend for compiled graph g on CUDA device `device` (0-based). Uploads the
 * constants and converts conv weights to 16-bit KRSC now; prepare() does the rest.
 * Fails with BD_E_DEVICE when the device is missing or a CUDA/cuDNN call fails. */
bd_status bd_cuda_backend_new(const bd_graph *g, int device, bd_backend **out, bd_err *err);

/* Benchmark hooks (batchdet bench; bd_cuda_bench.c), not used by inference.
 * bd_cuda_backend_time_device: runs prepared plan p `reps` (1..10000) times back to back
 * on whatever its device input buffer holds (what the last run() uploaded), without the
 * host<->device copies of input and outputs (a second CUDA graph of the plan, captured
 * on first use, when the plan runs as a graph), and sets *ms to the mean device time of
 * one run, measured with CUDA events on the backend's stream.
 * bd_cuda_device_mem_used: device memory in use on GPU `device` (total - free from
 * cudaMemGetInfo: every process and the CUDA context included), in bytes; creates this
 * process's context on it when there is none yet. */
bd_status bd_cuda_backend_time_device(bd_backend *be, const bd_plan *p, int reps, double *ms,
                                      bd_err *err);
bd_status bd_cuda_device_mem_used(int device, size_t *used, size_t *total, bd_err *err);

#ifdef __cplusplus
}
#endif
#endif
