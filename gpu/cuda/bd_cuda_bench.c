/* Benchmark hooks of the cuda backend (see bd_cuda_backend.h): the device time of a
 * plan's network alone, and the device memory in use. `batchdet bench` reports them next
 * to its host-timed latency so that its numbers compare with peers timed by CUDA events
 * on inputs already on the GPU (tests/bench/gpu_peers.py). Nothing on the inference path
 * calls this file. */
#include <stdio.h>

#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"

/* Captures cp's network without the input/output copies into cp->core_exec. */
static bd_status capture_core(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  bd_cuda_capture_lock();
  bd_status st = bd_cuda_capture(b, cp, bd_cuda_enqueue, 0, &cp->core_graph, &cp->core_exec, err);
  bd_cuda_capture_unlock();
  if (st != BD_OK) {
    cp->core_exec = NULL;
    (void)cudaGetLastError();
    bd_err_prefix(err, "cuda time: capturing the network without copies");
  }
  return st;
}

bd_status bd_cuda_backend_time_device(bd_backend *be, const bd_plan *p, int reps, double *ms,
                                      bd_err *err) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  bd_status st = BD_OK;
  cudaEvent_t e0 = NULL, e1 = NULL;
  float t = 0;
  bd_cuda_cplan *cp = bd_cuda_backend_plan(b, p);
  if (!cp)
    return bd_err_set(err, BD_E_INVALID, "cuda time: plan (batch %d) not prepared", p->batch);
  if (reps < 1 || reps > 10000)
    return bd_err_set(err, BD_E_INVALID, "cuda time: reps %d outside 1..10000", reps);
  BD_CU(cudaSetDevice(b->device));
  /* Same execution mode as run(): a graph when the plan's full run is one. */
  int graphed = b->use_graphs && cp->exec;
  if (graphed && !cp->core_exec && (st = capture_core(b, cp, err)) != BD_OK) goto out;
  BD_CU(cudaEventCreate(&e0));
  BD_CU(cudaEventCreate(&e1));
  BD_CU(cudaEventRecord(e0, b->stream));
  for (int i = 0; i < reps; ++i) {
    if (graphed) {
      BD_CU(cudaGraphLaunch(cp->core_exec, b->stream));
      continue;
    }
    if ((st = bd_cuda_enqueue(b, cp, 0, err)) != BD_OK) goto out;
  }
  BD_CU(cudaEventRecord(e1, b->stream));
  BD_CU(cudaEventSynchronize(e1));
  BD_CU(cudaEventElapsedTime(&t, e0, e1));
  *ms = (double)t / reps;
out:
  if (st != BD_OK) (void)cudaStreamSynchronize(b->stream);
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  return st;
}

bd_status bd_cuda_device_mem_used(int device, size_t *used, size_t *total, bd_err *err) {
  bd_status st = BD_OK;
  size_t fr = 0, tot = 0;
  BD_CU(cudaSetDevice(device));
  BD_CU(cudaMemGetInfo(&fr, &tot));
  if (used) *used = tot - fr;
  if (total) *total = tot;
out:
  return st;
}
