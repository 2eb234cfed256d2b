/* bd_graph: the engine's intermediate representation, shared by the ONNX importer,
 * the compiler passes and every backend (cpu, cuda).
 *
 * A graph is a list of values (tensors: graph inputs, constants, activations) and a
 * list of nodes in topological order. Node inputs/outputs are value indices; an absent
 * optional input is -1. Every op's parameters are parsed from ONNX attributes by the
 * importer into the typed union below, so backends never see ONNX. Layout semantics are
 * ONNX's (NCHW, row-major); a backend may store activations differently (the cuda
 * backend uses NHWC) as long as results are the same.
 *
 * Compilation happens once at the exported batch size B0 (graph->batch0): shape
 * subgraphs are folded to constants there. A bd_plan then specialises the optimised
 * graph for one batch size N: dims for every value, execution order, and the arena
 * offsets of the liveness-based memory plan. Batch always lives on axis 0 of
 * batch-dependent values. Reshape targets baked at B0 are re-batched by the plan
 * (dim0 scaled by N/B0 when the literal target does not fit the element count).
 *
 * Ownership: a bd_graph owns all its strings, value data and node arrays;
 * bd_graph_destroy(NULL) is a no-op. Thread safety: a finished graph and its plans are
 * read-only and may be shared by several backend instances. */
#ifndef BD_GRAPH_H
#define BD_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

#define BD_MAX_RANK 6

typedef enum {
  BD_DT_F32 = 1,
  BD_DT_I64,
  BD_DT_I32,
  BD_DT_U8,
  BD_DT_BOOL,
  BD_DT_F64,
} bd_dtype;

size_t bd_dtype_size(bd_dtype t);
const char *bd_dtype_name(bd_dtype t);

typedef struct bd_value {
  char *name;
  bd_dtype dtype;
  int rank;
  int64_t dims[BD_MAX_RANK]; /* at batch B0 after shape inference; -1 = unknown */
  void *data;                /* owned; non-NULL exactly for constants */
  int producer;              /* node index, or -1 (graph input or constant) */
  uint8_t is_input;          /* graph input */
  uint8_t is_output;         /* graph output */
  uint8_t batch_dep;         /* depends on the graph input (batch on axis 0) */
} bd_value;

typedef enum {
  BD_OP_CONV = 1, /* in: X, W[M,C/g,kh,kw], B[M] (opt), R residual (opt, only after fusion) */
  BD_OP_BATCHNORM, /* in: X, scale, bias, mean, var (removed by folding when after a Conv) */
  BD_OP_RELU,
  BD_OP_SIGMOID,
  BD_OP_SILU,      /* x*sigmoid(x), created by fusion only */
  BD_OP_EXP,
  BD_OP_ADD,       /* binary ops: numpy broadcasting */
  BD_OP_SUB,
  BD_OP_MUL,
  BD_OP_DIV,
  BD_OP_CONCAT,    /* n inputs */
  BD_OP_MAXPOOL,
  BD_OP_RESIZE,    /* in: X only; output size resolved from scales/sizes at import */
  BD_OP_RESHAPE,   /* in: X, shape (constant after folding) */
  BD_OP_FLATTEN,
  BD_OP_TRANSPOSE,
  BD_OP_SOFTMAX,
  BD_OP_MATMUL,
  BD_OP_SLICE,     /* in: X only; starts/ends/axes/steps resolved at import */
  BD_OP_GATHER,    /* in: X, indices (constant) */
  BD_OP_UNSQUEEZE, /* in: X; axes in params */
  BD_OP_SQUEEZE,
  BD_OP_CAST,
  BD_OP_SHAPE,
  BD_OP_CONSTANT,  /* removed at import: becomes a constant value */
  BD_OP_IDENTITY,
  BD_OP_SOFTMAX_DOT, /* in: X, P[R] (constant); created by fusion only: Softmax over axis
                        softmax.axis (length R) followed by the dot with P, that axis kept
                        with size 1 (a DFL box head's integral) */
  BD_OP__COUNT
} bd_op;

const char *bd_op_name(bd_op op);

typedef enum { BD_ACT_NONE = 0, BD_ACT_RELU, BD_ACT_SIGMOID, BD_ACT_SILU } bd_act;

/* Where a fused residual joins a conv: y = act(conv+b) + r  (POST, DAMO neck blocks)
 * or y = act(conv + b + r) (PRE, DAMO backbone blocks, ResNet style). */
typedef enum { BD_RES_NONE = 0, BD_RES_PRE_ACT, BD_RES_POST_ACT } bd_res_mode;

typedef struct {
  int kh, kw, sh, sw, dh, dw;
  int pad_t, pad_l, pad_b, pad_r;
  int group;
  bd_act act;
  bd_res_mode res;
  int auto_pad; /* bd_auto_pad; SAME_* resolved into pad_* by shape inference */
} bd_conv_params;

/* ONNX auto_pad. Backends only read pad_*: shape inference fills them for SAME_*. */
typedef enum { BD_PAD_NOTSET = 0, BD_PAD_VALID, BD_PAD_SAME_UPPER, BD_PAD_SAME_LOWER } bd_auto_pad;

typedef struct {
  int kh, kw, sh, sw;
  int pad_t, pad_l, pad_b, pad_r; /* padding is -inf */
  int auto_pad;                   /* bd_auto_pad, resolved into pad_* like Conv's */
} bd_pool_params;

typedef enum { BD_RESIZE_NEAREST = 0, BD_RESIZE_LINEAR } bd_resize_mode;
typedef enum {
  BD_COORD_ASYMMETRIC = 0,
  BD_COORD_HALF_PIXEL,
  BD_COORD_PYTORCH_HALF_PIXEL,
  BD_COORD_ALIGN_CORNERS,
} bd_coord_mode;
typedef enum {
  BD_NEAREST_FLOOR = 0,
  BD_NEAREST_ROUND_PREFER_FLOOR,
  BD_NEAREST_ROUND_PREFER_CEIL,
  BD_NEAREST_CEIL
} bd_nearest_mode;

typedef struct {
  bd_resize_mode mode;
  bd_coord_mode coord;
  bd_nearest_mode nearest;
  float scale_h, scale_w; /* output/input on axes 2 and 3 (only spatial resize supported) */
  int64_t out_h, out_w;   /* > 0 when the file gave 'sizes' (then scale = out/in, as ONNX);
                             0: output = floor(in * scale) */
} bd_resize_params;

typedef struct {
  int n;                       /* number of sliced axes */
  int axes[BD_MAX_RANK];       /* normalised, >= 0 */
  int64_t starts[BD_MAX_RANK]; /* as in ONNX (may be negative / huge; clamp at run) */
  int64_t ends[BD_MAX_RANK];
  int64_t steps[BD_MAX_RANK]; /* non-zero */
} bd_slice_params;

typedef struct bd_node {
  bd_op op;
  char *name; /* ONNX node name (may be empty); for error messages only */
  int n_in, n_out;
  int *in;  /* value indices, -1 = absent optional */
  int *out; /* value indices */
  union {
    bd_conv_params conv;
    bd_pool_params pool;
    bd_resize_params resize;
    bd_slice_params slice;
    struct { int axis; } concat;      /* normalised >= 0 */
    struct { int axis; int opset; } softmax; /* opset < 13: coerced-2D semantics */
    struct { int perm[BD_MAX_RANK]; int n; } transpose;
    struct { int axis; } gather, flatten;
    struct { int axes[BD_MAX_RANK]; int n; } unsq; /* Unsqueeze / Squeeze (n=0: all 1s) */
    struct { bd_dtype to; } cast;
    struct { int allowzero; } reshape;
    struct { float eps; } bn;
    struct { bd_act act; } act; /* for SIGMOID/RELU/SILU kept as separate nodes: unused */
  } p;
  uint8_t dead; /* marked by dead-node removal before compaction; backends never see it */
} bd_node;

typedef struct bd_graph {
  int n_values, cap_values;
  bd_value *values;
  int n_nodes, cap_nodes;
  bd_node *nodes; /* topological order */
  int n_inputs, n_outputs;
  int inputs[4];   /* graph inputs (non-constant), value indices */
  int outputs[8];  /* graph outputs, value indices, in file order */
  int64_t opset;   /* default-domain opset */
  int64_t batch0;  /* batch size the file was exported with (input dim 0) */
  int batch_named; /* input dim 0 was symbolic (a dynamic export): batch0 is then 1 */
} bd_graph;

/* ---- construction helpers (used by the importer, the compiler and tests) ---- */
bd_status bd_graph_new(bd_graph **out, bd_err *err);
void bd_graph_destroy(bd_graph *g);
/* Adds a value; copies name; returns its index or -1 on allocation failure. */
int bd_graph_add_value(bd_graph *g, const char *name, bd_dtype dt, int rank, const int64_t *dims);
/* Adds a node with copies of the in/out index arrays; returns node index or -1. */
int bd_graph_add_node(bd_graph *g, bd_op op, const char *name, int n_in, const int *in, int n_out,
                      const int *out);
int64_t bd_value_numel(const bd_value *v); /* -1 if any dim unknown */
/* Visits every read of value v (node n's input slot j; nodes in order, a node reading v
 * twice visited twice) until visit returns 0. Returns the number of reads, or -1 where
 * visit refused one. visit NULL: counts them. */
int bd_graph_readers(const bd_graph *g, int v, int (*visit)(void *ctx, int n, int j), void *ctx);

/* ---- the batch-specialised plan ---- */
typedef struct bd_plan {
  int batch;
  int n_values;
  int *rank;                       /* per value */
  int64_t (*dims)[BD_MAX_RANK];    /* per value, at this batch */
  size_t *offset;                  /* arena byte offset per activation value; SIZE_MAX for
                                      constants and for graph inputs/outputs (caller buffers) */
  size_t arena_bytes;              /* liveness-based arena size (64-byte aligned slots) */
  size_t naive_bytes;              /* sum of all activation sizes, for comparison */
  int n_steps;
  int *steps;                      /* node indices to execute, in order */
} bd_plan;

void bd_plan_destroy(bd_plan *p);

#endif
