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

#ifdef __cplusplus
}
#endif
#endif
