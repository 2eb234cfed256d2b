/* bd_cuda_backend: the CUDA execution backend (16-bit NHWC storage: IEEE half, bfloat16
 * in BD_CUDA_BF16 builds; FP32 math; cuDNN convolutions, own kernels, one captured
 * CUDA graph per prepared plan). See bd_backend.h for the contract. */
#ifndef BD_CUDA_BACKEND_H
#define BD_CUDA_BACKEND_H

#include "bd_backend.h"
#include "bd_graph.h"
#include "bd_prof.h"
#include "bd_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend for compiled graph g on CUDA device `device` (0-based). Uploads the
 * constants and converts conv weights to 16-bit KRSC now; prepare() does the rest.
 * Fails with BD_E_DEVICE when the device is missing or a CUDA/cuDNN call fails. */
bd_status bd_cuda_backend_new(const bd_graph *g, int device, bd_backend **out, bd_err *err);

/* Device weights (every constant and 16-bit conv weight of a model in one blob on one
 * GPU), refcounted, shareable by the backends of one model: engines on the same GPU
 * share one blob, engines on other GPUs get a copy broadcast with NCCL (peer copies
 * without NCCL) instead of each uploading from the host. Thread-safe refcount; the blob
 * is freed with the last reference. */
typedef struct bd_cuda_weights bd_cuda_weights;

/* As bd_cuda_backend_new, with weights w (on `device`, made for the same compiled
 * model: checked, BD_E_INVALID otherwise) instead of an upload. */
bd_status bd_cuda_backend_new_shared(const bd_graph *g, int device, bd_cuda_weights *w,
                                     bd_backend **out, bd_err *err);
/* The backend's weights (borrowed; bd_cuda_weights_ref to keep them). */
bd_cuda_weights *bd_cuda_backend_weights(bd_backend *be);
bd_cuda_weights *bd_cuda_weights_ref(bd_cuda_weights *w);
void bd_cuda_weights_release(bd_cuda_weights *w);
int bd_cuda_weights_device(const bd_cuda_weights *w);
/* out[i]: weights on devices[i] (new references; src itself for src's device), copied
 * from src once per distinct device in one NCCL broadcast (ncclCommInitAll over the
 * source GPU and the others). */
bd_status bd_cuda_weights_broadcast(bd_cuda_weights *src, int n, const int *devices,
                                    bd_cuda_weights **out, bd_err *err);

/* Benchmark hooks (batchdet bench; bd_cuda_bench.c), not used by inference.
 * bd_cuda_backend_time_device: runs prepared plan p `reps` (1..10000) times on the input
 * the last run() uploaded (uploaded once more before each rep, outside the timing: the
 * input lives in the arena), without the host<->device copies of input and outputs (a
 * second CUDA graph of the plan, captured on first use, when the plan runs as a graph),
 * and sets *ms to the mean device time of one run, each rep between two CUDA events on
 * the backend's stream.
 * bd_cuda_device_mem_used: device memory in use on GPU `device` (total - free from
 * cudaMemGetInfo: every process and the CUDA context included), in bytes; creates this
 * process's context on it when there is none yet. */
bd_status bd_cuda_backend_time_device(bd_backend *be, const bd_plan *p, int reps, double *ms,
                                      bd_err *err);
/* bd_cuda_backend_profile: runs prepared plan p's actions (node steps, representation
 * conversions, output copies: what its CUDA graph holds, without the host<->device
 * copies) one at a time on the backend's stream, uncaptured, each between two CUDA
 * events; one warm-up rep, then `reps` (1..10000), one wait per rep, on whatever the
 * device input holds. *rows (n_rows entries, in execution order; the caller frees it
 * with free()): per action its median and min device time, what it is, how a conv runs
 * and the bytes / FLOPs estimate (bd_prof.h). The sum of the medians against
 * bd_cuda_backend_time_device's whole-run time is the launch overhead the graph does or
 * does not remove. Outputs of later runs are unchanged. */
bd_status bd_cuda_backend_profile(bd_backend *be, const bd_plan *p, int reps, bd_prof_row **rows,
                                  int *n_rows, bd_err *err);
bd_status bd_cuda_device_mem_used(int device, size_t *used, size_t *total, bd_err *err);

/* NULL when prepared plan p runs as one captured CUDA graph (raw runs), else why it runs
 * op by op on the stream; likewise for its device-detection graphs (a message too when
 * those are not prepared). */
const char *bd_cuda_backend_graph_error(bd_backend *be, const bd_plan *p);
const char *bd_cuda_backend_dd_graph_error(bd_backend *be, const bd_plan *p);
/* How prepared plan p's actions are ordered in its graphs: in order, or as a DAG whose
 * independent branches run side by side (its longest chain and widest level). */
const char *bd_cuda_backend_graph_shape(bd_backend *be, const bd_plan *p);

/* The device memory one instance holds for plan p of compiled graph g, computed on the
 * host by prepare's own sizing pass and packer (no GPU needed): the weights blob (one per
 * model and GPU, shared by the instances on it) and the arena (activations in their
 * representations, conversions, padded convs' scratch, and the network's FP32 input and
 * outputs, which live there like any value). Not included: the cuDNN workspace (chosen
 * by measurement), the padded convs' weights, cuDNN's handle, the CUDA context, and
 * device-detection staging. The plan assumes a GPU with cuDNN and the convolution path
 * BATCHDET_CUDA_CONV selects. */
typedef struct bd_cuda_plan_mem {
  size_t weights, arena;
  int concat_inputs; /* inputs of Concat nodes, */
  int in_place;      /* of which written straight into the Concat's buffer */
} bd_cuda_plan_mem;
bd_status bd_cuda_plan_memory(const bd_graph *g, const bd_plan *p, bd_cuda_plan_mem *m,
                              bd_err *err);

#ifdef __cplusplus
}
#endif
#endif
