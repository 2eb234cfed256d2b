/* Private to the compiler (bd_compile*.c, bd_plan.c): per-node shape inference shared
 * by compile time (batch B0) and plan time (batch N), and the constant evaluators. The
 * cpu backend includes it for bd_slice_len only (header-only, so that its test builds
 * need no compiler sources). */
#ifndef BD_COMPILE_INT_H
#define BD_COMPILE_INT_H

#include "bd_graph.h"

typedef struct {
  int rank;
  int64_t d[BD_MAX_RANK];
} bd_shape;

typedef struct {
  const bd_graph *g;
  int plan;      /* 1 at plan time: apply the re-batching rules */
  int64_t b0, n; /* exported batch and the plan's batch */
} bd_infer_ctx;

/* Output shape of node `nd` given its input shapes (`ins`, n_in entries; absent
 * optional inputs have rank -1). Params must already be resolved (compile time does it
 * with bd_resolve_params). Constant inputs' data is read from cx->g. */
bd_status bd_infer_node(const bd_infer_ctx *cx, const bd_node *nd, const bd_shape *ins,
                        bd_shape *out, bd_err *err);

/* Compile time: resolve params that depend on constant inputs or on input ranks
 * (negative axes, default perms, auto_pad, Slice/Resize/Unsqueeze/Squeeze inputs).
 * *pending = 1 when an input needed for that is not constant yet. */
bd_status bd_resolve_params(bd_graph *g, bd_node *nd, int *pending, bd_err *err);

/* Output dtype of a node from its input dtypes. */
bd_dtype bd_infer_dtype(const bd_graph *g, const bd_node *nd);

/* 1 if the op has a constant evaluator. */
int bd_fold_supported(bd_op op);
/* Evaluates node nd, whose inputs are all constants (or, for Shape, of known shape),
 * writing a fresh buffer of the output (shape already inferred in g) to *data. */
bd_status bd_fold_eval(const bd_graph *g, const bd_node *nd, void **data, bd_err *err);

/* Numpy broadcast of two shapes; error message names the node. */
bd_status bd_broadcast(const bd_shape *a, const bd_shape *b, bd_shape *out, const bd_node *nd,
                       bd_err *err);

/* Length of a Slice along an axis of `dim` (onnxruntime's clamping: starts to [0, dim]
 * and ends to [0, dim] for a positive step, to [0, dim-1] and [-1, dim-1] for a negative
 * one) and its clamped start. Any int64 starts, ends and step != 0 (sentinels like
 * +-2^63-1, steps of INT64_MIN) without overflow. Shared with the cpu backend, whose
 * Slice must agree with the plan's shapes. */
static inline int64_t bd_slice_len(int64_t dim, int64_t s, int64_t e, int64_t step,
                                   int64_t *start) {
  if (dim <= 0) {
    *start = 0;
    return 0;
  }
  if (s < 0) s += dim;
  if (e < 0) e += dim;
  if (step > 0) {
    s = s < 0 ? 0 : s > dim ? dim : s;
    e = e < 0 ? 0 : e > dim ? dim : e;
    *start = s;
    /* 1 + (e-s-1)/step, not (e-s+step-1)/step: a huge step must not overflow. */
    return e > s ? 1 + (e - s - 1) / step : 0;
  }
  s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
  e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
  *start = s;
  uint64_t mag = step == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)(-step);
  return s > e ? 1 + (int64_t)((uint64_t)(s - e - 1) / mag) : 0;
}

/* Clamped start, step and output shape of a Slice on `in` (ONNX clamping rules). */
void bd_slice_resolve(const bd_slice_params *p, const bd_shape *in, int64_t *start,
                      int64_t *step, bd_shape *out);

static inline int64_t bd_shape_numel(const bd_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->d[i];
  return n;
}

#endif
