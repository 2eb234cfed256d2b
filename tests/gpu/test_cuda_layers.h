/* Diagnostics shared by the whole-model cuda tests: how a prepared plan's conv layers
 * run. */
#ifndef TEST_CUDA_LAYERS_H
#define TEST_CUDA_LAYERS_H

#include <stdio.h>

#include "bd_backend.h"
#include "bd_cuda_internal.h"

/* How a prepared plan's conv layers run. */
typedef struct layer_counts {
  int direct, fused, padded, mma, algo[16];
} layer_counts;

static inline layer_counts count_layers(bd_backend *be, const bd_plan *plan) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  layer_counts c = {0};
  for (int i = 0; i < b->n_plans; ++i) {
    if (b->plans[i]->plan != plan) continue;
    for (int n = 0; n < be->graph->n_nodes; ++n) {
      const bd_cuda_conv_layer *l = b->plans[i]->layer[n];
      if (!l) continue;
      int pad = 0, a = bd_cuda_conv_layer_algo(l, &pad);
      if (a == -2) {
        ++c.mma;
        continue;
      }
      c.padded += pad;
      c.fused += bd_cuda_conv_layer_is_fused(l);
      if (a < 0)
        ++c.direct;
      else
        ++c.algo[a & 15];
    }
  }
  return c;
}

/* How the plan's conv layers run (for the performance work): our direct kernel, our
 * tensor-core kernel, cuDNN per algorithm, cuDNN's fused bias + activation,
 * channel-padded. */
static inline layer_counts print_layers(bd_backend *be, const bd_plan *plan) {
  layer_counts c = count_layers(be, plan);
  printf("batch %d conv layers: %d direct, %d tensor-core (mma), %d fused in cuDNN, %d "
         "channel-padded; cuDNN algos:",
         plan->batch, c.direct, c.mma, c.fused, c.padded);
  for (int a = 0; a < 16; ++a)
    if (c.algo[a]) printf(" %d:%d", a, c.algo[a]);
  printf(" (1 = IMPLICIT_PRECOMP_GEMM)\n");
  return c;
}

#endif
