/* bd_cost: the arithmetic and memory-traffic floor of a compiled graph at one batch size
 * (issue 7: how far a backend is from the hardware). Pure bookkeeping over a bd_graph and
 * a bd_plan; nothing runs.
 *
 * Counted:
 *  - MACs (multiply-accumulates) of Conv (dense, and grouped/depthwise separately:
 *    N*M*OH*OW*(C/group)*kh*kw) and MatMul (output elements * K). FLOPs = 2 * MACs, the
 *    convention of the YOLOX/DAMO-YOLO papers' "GFLOPs" (thop MACs times 2).
 *  - weights: the constant inputs of Conv and MatMul (weights and biases), 16-bit each
 *    when stored as the cuda backend stores them; other float constants read by the
 *    batch path (anchors, scales) separately, FP32.
 *  - the minimum activation traffic of layer-by-layer execution: every Conv output that is
 *    not a graph output written once and read once in 16-bit; the graph input read once
 *    as uint8 (the pixels); every graph output written once in FP32. Concat, Slice,
 *    Reshape and the pointwise ops the compiler did not fuse are assumed free (written in
 *    place / read through views), so any real schedule moves at least this much unless it
 *    fuses whole conv chains.
 *  - for comparison, the layer-by-layer traffic of the compiled graph as it stands: every
 *    node output except pure views (Reshape, Flatten, Squeeze, Unsqueeze, Identity)
 *    written once and read once per consuming node, 16-bit.
 * Thread safety: reentrant; reads g and p only. */
#ifndef BD_COST_H
#define BD_COST_H

#include "bd_graph.h"

typedef struct bd_cost {
  int batch;
  int n_conv, n_conv_grouped, n_matmul;
  double conv_macs;         /* all convs, whole batch */
  double conv_grouped_macs; /* the part in grouped / depthwise convs */
  double matmul_macs;       /* MatMuls and fused DFL integrals' dots (SoftmaxDot) */
  double weight_values;     /* Conv/MatMul/SoftmaxDot constant inputs (weights + biases) */
  double weight_bytes;      /* at 2 bytes each */
  double other_const_bytes; /* other float constants on the batch path, 4 bytes each */
  double in_bytes;          /* graph inputs as uint8, whole batch */
  double out_bytes;         /* graph outputs as FP32, whole batch */
  double act_min_bytes;     /* conv outputs written + read once, 16-bit, whole batch */
  double act_graph_bytes;   /* layer-by-layer traffic of the compiled graph, whole batch */
} bd_cost;

/* Fills *c for plan p of compiled graph g. BD_E_INVALID when the plan is not g's or a
 * Conv/MatMul has shapes it cannot read. */
bd_status bd_cost_of(const bd_graph *g, const bd_plan *p, bd_cost *c, bd_err *err);

/* Minimum bytes one batch moves: weights and constants once, activations, input, output. */
double bd_cost_min_bytes(const bd_cost *c);

/* Floor time of one batch in ms at `tb_per_s` (1e12 bytes/s) and `tflops` (1e12 FLOP/s):
 * the larger of bytes/bandwidth and 2*MACs/peak; *mem_ms and *math_ms (may be NULL)
 * get both terms. */
double bd_cost_floor_ms(const bd_cost *c, double tb_per_s, double tflops, double *mem_ms,
                        double *math_ms);

#endif
