/* Timing device work as a replayed CUDA graph runs it (bd_cuda_time_replayed): what the
 * per-layer convolution choice measures (bd_cuda_cudnn.c). */
#include "bd_cuda_internal.h"

#define REPLAY_TIMED 3 /* timed launches of the graph; the median is kept */
bd_status bd_cuda_time_replayed(cudaStream_t s, bd_cuda_timed_fn fn, void *ctx, int reps,
                                int capture, float *ms, int *captured, bd_err *err) {
  bd_status st = BD_OK;
  cudaEvent_t ev[REPLAY_TIMED + 1] = {NULL};
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  float t[REPLAY_TIMED] = {0};
  *ms = 0;
  *captured = 0;
  if (reps < 1 || reps > 1000)
    return bd_err_set(err, BD_E_INVALID, "replay timing: reps %d outside 1..1000", reps);
  for (int i = 0; i <= REPLAY_TIMED; ++i) BD_CU(cudaEventCreate(&ev[i]));
  /* Relaxed, as the plan's own capture (bd_cuda_capture): cuDNN may query the device. A
   * stream that does not capture (or a call that fails while captured, or a graph that
   * does not instantiate) falls back to the uncaptured runs below. */
  if (capture && cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
    bd_status cs = BD_OK;
    bd_err cerr = {0};
    for (int i = 0; i < reps && cs == BD_OK; ++i) cs = fn(ctx, s, &cerr);
    cudaError_t ce = cudaStreamEndCapture(s, &g);
    if (cs == BD_OK && ce == cudaSuccess && g && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess)
      *captured = 1;
  }
  (void)cudaGetLastError(); /* a refused capture is not this call's error */
  if (*captured) {
    BD_CU(cudaGraphLaunch(ge, s)); /* untimed: the graph's own first-launch work */
    for (int i = 0; i < REPLAY_TIMED; ++i) {
      BD_CU(cudaEventRecord(ev[i], s));
      BD_CU(cudaGraphLaunch(ge, s));
    }
    BD_CU(cudaEventRecord(ev[REPLAY_TIMED], s));
    BD_CU(cudaEventSynchronize(ev[REPLAY_TIMED]));
    for (int i = 0; i < REPLAY_TIMED; ++i) BD_CU(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
    for (int i = 1; i < REPLAY_TIMED; ++i) /* insertion sort of three */
      for (int j = i; j > 0 && t[j] < t[j - 1]; --j) {
        float x = t[j];
        t[j] = t[j - 1];
        t[j - 1] = x;
      }
    *ms = t[REPLAY_TIMED / 2] / (float)reps;
    goto out;
  }
  BD_CU(cudaEventRecord(ev[0], s));
  for (int i = 0; i < reps && st == BD_OK; ++i) st = fn(ctx, s, err);
  if (st != BD_OK) goto out;
  BD_CU(cudaEventRecord(ev[1], s));
  BD_CU(cudaEventSynchronize(ev[1]));
  BD_CU(cudaEventElapsedTime(&t[0], ev[0], ev[1]));
  *ms = t[0] / (float)reps;
out:
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  for (int i = 0; i <= REPLAY_TIMED; ++i)
    if (ev[i]) cudaEventDestroy(ev[i]);
  return st;
}
