/* bd_compile: backend-independent graph optimisation and batch specialisation.
 *
 * bd_compile rewrites a freshly imported graph in place, at its exported batch B0:
 * shape inference, constant folding (Shape/Gather/Slice/Concat/Unsqueeze/Cast/...
 * subgraphs on constants), BatchNorm folding into the preceding Conv, RepConv
 * training-form merge (parallel 3x3 + 1x1 convs [+ identity BN] summed -> one 3x3),
 * constant scale folding (Conv -> Mul by a scalar or per-channel constant),
 * Conv + bias + activation fusion (Relu, Sigmoid, SiLU written as x*sigmoid(x)), Conv +
 * residual Add fusion, SPP pool chaining, DFL integrals (Softmax, moves, MatMul by a
 * constant [R,1]) fused into SoftmaxDot, Identity/no-op Cast/no-op Slice removal, dead-node removal,
 * and compaction (node and value indices change). After it, every remaining node is
 * executable by every backend.
 *
 * bd_plan_new specialises the compiled graph for one batch size: dims of every value,
 * execution order, and a liveness-based memory plan (one arena, 64-byte aligned
 * offsets reused once a value's last consumer ran). Graph inputs and outputs are not
 * in the arena (offset SIZE_MAX): backends bind them to their own buffers.
 *
 * Thread safety: bd_compile mutates the graph (single-threaded); plans are read-only. */
#ifndef BD_COMPILE_H
#define BD_COMPILE_H

#include "bd_graph.h"

typedef struct bd_compile_report {
  int nodes_in, nodes_out;
  int folded_constants; /* nodes evaluated at compile time */
  int folded_bn;
  int folded_scale; /* Mul by a constant folded into the conv before it */
  int merged_repconv;
  int fused_act;
  int fused_residual;
  int chained_pools; /* MaxPools of an SPP rewritten over a smaller one's output */
  int fused_dfl;     /* Softmax .. MatMul-by-constant box integrals -> SoftmaxDot */
  int sunk_transposes; /* Transposes moved up through a SoftmaxDot or a Concat */
  int folded_gather_concats; /* Concats of +-constant Gathers -> Mul and Add (box decode) */
  int split_upsampled; /* Concats with a Resize piece read by 1x1 convs: z = W_x x at the low
                          resolution, the convs add Resize(z) (split_upsampled_concats) */
  int folded_muls;  /* Mul by a constant of a Mul by a constant -> one Mul */
  int removed; /* identity / no-op / dead nodes */
} bd_compile_report;

typedef struct bd_compile_opts {
  int no_fusion; /* 1: keep activations and residual adds as separate nodes (tests) */
  int keep_upsampled; /* 1: no split_upsampled_concats (the model's own FLOPs: bench --count) */
} bd_compile_opts;

/* opts and rep may be NULL. */
bd_status bd_compile(bd_graph *g, const bd_compile_opts *opts, bd_compile_report *rep,
                     bd_err *err);

/* Infers shapes at batch B0 without rewriting (used by bd_compile and tests). */
bd_status bd_graph_infer_shapes(bd_graph *g, bd_err *err);

/* A plan for `batch` (1..4096). *out owned by the caller (bd_plan_destroy). */
bd_status bd_plan_new(const bd_graph *g, int batch, bd_plan **out, bd_err *err);

/* One buffer of a memory plan: `size` bytes alive from step `def` to step `last`
 * (inclusive); bd_pack sets `off`. */
typedef struct bd_pack_item {
  int def, last;
  size_t size, off;
} bd_pack_item;

/* Places items in one arena: largest first, each at the lowest `align`-aligned offset
 * not used by an item whose lifetime overlaps; *total = the arena's size. Items whose
 * lifetimes overlap never share a byte. O(n^2 log n). */
bd_status bd_pack(bd_pack_item *items, int n, size_t align, size_t *total, bd_err *err);

#endif
