/* bd_prof: one row of a per-action device profile of a prepared plan (issue 7: where a
 * batch's device time goes). A backend that can time its actions one by one fills rows
 * (bd_cuda_backend_profile); bd_engine_profile_device hands them to `batchdet bench
 * --profile`, which sorts, groups and prints them. Plain data: no behaviour here. */
#ifndef BD_PROF_H
#define BD_PROF_H

#include "bd_graph.h"

typedef enum bd_prof_kind {
  BD_PROF_OP = 0,  /* a graph node's work */
  BD_PROF_CONVERT, /* a value converted to the other representation before a reader */
  BD_PROF_OUTPUT,  /* a graph output copied into its FP32 output buffer */
  BD_PROF_ZERO,    /* a channel-padded value's buffer zeroed before its first writer */
  BD_PROF_LAYOUT   /* the FP32 input written as the network's first 16-bit tensor (a Focus
                      stem's space-to-depth Concat, or the input's own copy) in one pass */
} bd_prof_kind;

/* How a Conv node runs (conv_algo): >= 0 a cuDNN algorithm (cudnnConvolutionFwdAlgo_t),
 * BD_PROF_DIRECT our direct kernel, BD_PROF_MMA our tensor-core kernel, BD_PROF_GRAPH a cuDNN
 * graph-API plan; BD_PROF_NOT_CONV for every other row. */
enum { BD_PROF_GRAPH = -4, BD_PROF_NOT_CONV = -3, BD_PROF_MMA = -2, BD_PROF_DIRECT = -1 };

typedef struct bd_prof_row {
  int step;         /* index of the action in the run, execution order */
  bd_prof_kind kind;
  int node;         /* graph node, -1 for conversions and output copies */
  int op;           /* the node's bd_op, -1 for conversions and output copies */
  const char *name; /* node name, else the value's; borrowed from the graph (valid while
                       the backend / engine that made the row lives); never NULL */
  int value;        /* the value written */
  int rep16;        /* 1: written in 16-bit NHWC, 0: FP32 in ONNX order */
  int rank;         /* dims of the value written, at the plan's batch */
  int64_t dims[BD_MAX_RANK];
  int conv_algo;    /* see above */
  int conv_padded;  /* runs on channel-padded copies of its input and/or output */
  int conv_fused;   /* bias + activation (+ residual) fused in the cuDNN call */
  const char *conv_tile; /* BD_PROF_MMA: our kernel's block tile ("128x64"), else NULL */
  int conv_twin;    /* twin convs in one launch: 1 the first (its row times and counts
                       both), 2 the second (nothing of its own runs), 0 neither */
  int conv_upres;   /* reads its residual upsampled from a Resize's input (the Resize is
                       left to it: bd_cuda_conv_shape.rup) */
  int upsampled_read; /* a Resize whose conv readers read its input upsampled: nothing of
                         its own runs */
  double ms_median; /* device time of the action, median over the reps */
  double ms_min;
  /* The action alone as a graph replays it: reps runs captured into one graph, the
   * median launch over the runs (no host gaps between its kernels; its inputs warm in
   * L2 after the first run). Uncaptured where the backend cannot capture; 0 for an
   * action left out of the run. */
  double ms_replay;
  /* Estimates, not measurements: every device input read once and the output written
   * once at the size of the representation read / written (16-bit: 2 bytes, FP32: 4),
   * Conv weights (16-bit) and biases (FP32) once; Slice and Gather read only what they
   * write; a copy onto its own buffer moves nothing. */
  double bytes;
  double flops; /* Conv: 2 x N*M*OH*OW*(C/group)*kh*kw; 0 for everything else */
} bd_prof_row;

#endif
