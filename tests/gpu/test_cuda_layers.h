/* Shared by the whole-model cuda tests: the model they run, how a prepared plan's conv
 * layers run. */
#ifndef TEST_CUDA_LAYERS_H
#define TEST_CUDA_LAYERS_H

#include <stdio.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_cuda_internal.h"
#include "bd_onnx.h"
#include "bd_prof.h"

/* The model a whole-model test runs, loaded and compiled: $BD_CUDA_MODEL (env_model 1),
 * else $BD_TEST_DATA/models/yolox_nano.onnx. NULL (reason printed) when it cannot be. */
static inline bd_graph *tc_load_model(int env_model) {
  char path[1024];
  const char *data = getenv("BD_TEST_DATA"), *m = env_model ? getenv("BD_CUDA_MODEL") : NULL;
  if (m)
    snprintf(path, sizeof(path), "%s", m);
  else
    snprintf(path, sizeof(path), "%s/models/yolox_nano.onnx", data ? data : "../shared/data");
  bd_err err = {0};
  bd_graph *g = NULL;
  if (bd_onnx_load_file(path, &g, &err) != BD_OK || bd_compile(g, NULL, NULL, &err) != BD_OK) {
    printf("cannot load %s: %s\n", path, err.msg);
    bd_graph_destroy(g);
    return NULL;
  }
  printf("model %s: %d nodes\n", path, g->n_nodes);
  return g;
}

/* How a prepared plan's conv layers run. */
typedef struct layer_counts {
  int direct, fused, padded, mma, graph, algo[16], tile[BD_CONV_MMA_TILES];
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
        int t = bd_cuda_conv_layer_tile(l);
        ++c.mma;
        if (t >= 0 && t < BD_CONV_MMA_TILES) ++c.tile[t];
        continue;
      }
      c.padded += pad;
      c.fused += bd_cuda_conv_layer_is_fused(l);
      if (a == BD_PROF_GRAPH)
        ++c.graph;
      else if (a < 0)
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
  printf(
      "batch %d conv layers: %d direct, %d tensor-core (mma), %d fused in cuDNN, %d "
      "channel-padded, %d on cuDNN's graph API; cuDNN algos:",
      plan->batch, c.direct, c.mma, c.fused, c.padded, c.graph);
  for (int a = 0; a < 16; ++a)
    if (c.algo[a]) printf(" %d:%d", a, c.algo[a]);
  printf(" (1 = IMPLICIT_PRECOMP_GEMM); mma tiles:");
  for (int t = 0; t < BD_CONV_MMA_TILES; ++t)
    if (c.tile[t]) printf(" %s:%d", bd_cuda_conv_mma_tile_name(t), c.tile[t]);
  printf("\n");
  return c;
}

#endif
