/* bd_backend: what every execution backend (cpu, cuda) offers the engine.
 *
 * A backend instance is bound to one compiled graph (which must outlive it). It runs a
 * bd_plan (one batch size) on host float32 input in the ONNX layout (NCHW) and writes
 * host float32 outputs in the ONNX layout, in graph output order. prepare() is called
 * once per plan before the first run: it allocates everything a run needs (arena,
 * workspaces, captured CUDA graphs), so that run() never allocates.
 *
 * Thread safety: one instance is used by one thread at a time; different instances
 * are independent. */
#ifndef BD_BACKEND_H
#define BD_BACKEND_H

#include "bd_graph.h"

typedef struct bd_backend bd_backend;

typedef struct bd_backend_vtbl {
  const char *name; /* "cpu", "cuda" */
  bd_status (*prepare)(bd_backend *be, const bd_plan *plan, bd_err *err);
  bd_status (*run)(bd_backend *be, const bd_plan *plan, const float *const *inputs,
                   float *const *outputs, bd_err *err);
  void (*destroy)(bd_backend *be);
} bd_backend_vtbl;

struct bd_backend {
  const bd_backend_vtbl *vt;
  const bd_graph *graph;
};

static inline bd_status bd_backend_prepare(bd_backend *be, const bd_plan *p, bd_err *err) {
  return be->vt->prepare(be, p, err);
}
static inline bd_status bd_backend_run(bd_backend *be, const bd_plan *p,
                                       const float *const *inputs, float *const *outputs,
                                       bd_err *err) {
  return be->vt->run(be, p, inputs, outputs, err);
}
static inline void bd_backend_destroy(bd_backend *be) {
  if (be) be->vt->destroy(be);
}

/* The cpu backend (gpu/cpu/): FP32, `threads` worker threads (0 = all cores). */
bd_status bd_cpu_backend_new(const bd_graph *g, int threads, bd_backend **out, bd_err *err);

#endif
