/* Diagnostics shared by the whole-model cuda tests: how a prepared plan's conv layers
 * run. */
#ifndef TEST_CUDA_LAYERS_H
#define TEST_CUDA_LAYERS_H

#include <stdio.h>

#include "bd_backend.h"
#include "bd_cuda_internal.h"

/* How the plan's conv layers run (for the performance work): our direct kernel, cuDNN
 * per algorithm, cuDNN's fused bias + activation, channel-padded. */
static inline void print_layers(bd_backend *be, const bd_plan *plan) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  int direct = 0, fused = 0, padded = 0, mma = 0, algo[16] = {0};
  for (int i = 0; i < b->n_plans; ++i) {
    if (b->plans[i]->plan != plan) continue;
    for (int n = 0; n < be->graph->n_nodes; ++n) {
      const bd_cuda_conv_layer *l = b->plans[i]->layer[n];
      if (!l) continue;
      int pad = 0, a = bd_cuda_conv_layer_algo(l, &pad);
      if (a == -2) {
        ++mma;
        continue;
      }
      padded += pad;
      fused += bd_cuda_conv_layer_is_fused(l);
      if (a < 0)
        ++direct;
      else
        ++algo[a & 15];
    }
  }
  printf("batch %d conv layers: %d direct, %d tensor-core (mma), %d fused in cuDNN, %d "
         "channel-padded; cuDNN algos:",
         plan->batch, direct, mma, fused, padded);
  for (int a = 0; a < 16; ++a)
    if (algo[a]) printf(" %d:%d", a, algo[a]);
  printf(" (1 = IMPLICIT_PRECOMP_GEMM)\n");
}

#endif
