/* The whole cuda backend on a real model against the cpu backend (FP32 reference):
 * yolox_nano through bd_onnx_load_file + bd_compile + bd_plan_new at batch buckets 1
 * and 8; ||cuda - cpu|| / ||cpu|| <= 2e-2 on every raw output (the bound, met by
 * the default IEEE-half storage: 5.5e-3 in test_cuda_emu's exact emulation, BF16 3.9e-2;
 * $BD_CUDA_TOL overrides it); the replayed CUDA graph gives bitwise the same outputs as
 * running the same work directly on the stream; a second replay gives the same bits.
 * Skips (exit 77) without a GPU. The model is $BD_CUDA_MODEL or
 * $BD_TEST_DATA/models/yolox_nano.onnx. With $BD_CUDA_INPUT (a raw float32 file holding
 * the batch-1 input, e.g. damoyolo.py export's input.f32) the test runs batch 1 only on
 * that input (official DAMO-YOLO files carry the batch in their constants) and checks
 * each output (scores, boxes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"
#include "bd_onnx.h"
#include "test_cuda_common.h"
#include "test_cuda_layers.h"

static bd_graph *g_graph;

static int64_t numel(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= p->dims[v][d];
  return n;
}

/* The test input: the photo $BD_TEST_PPM, else $BD_TEST_DATA/images/dog.ppm (made by
 * prepare_devdeps.sh), else a synthetic pattern. */
static void fill_input(const bd_plan *plan, int v, float *in) {
  char ppm[1024];
  const char *raw = getenv("BD_CUDA_INPUT");
  if (raw) { /* batch 1 from the file, repeated for larger batches */
    int64_t n1 = 1;
    for (int d = 1; d < plan->rank[v]; ++d) n1 *= plan->dims[v][d];
    FILE *f = fopen(raw, "rb");
    assert_non_null(f);
    size_t got = fread(in, 4, (size_t)n1, f);
    int extra = fgetc(f);
    fclose(f);
    assert_int_equal(got, (size_t)n1);
    assert_int_equal(extra, EOF);
    for (int64_t b = 1; b < plan->dims[v][0]; ++b) memcpy(in + b * n1, in, (size_t)n1 * 4);
    printf("input: %s\n", raw);
    return;
  }
  const char *data = getenv("BD_TEST_DATA"), *env = getenv("BD_TEST_PPM");
  if (env)
    snprintf(ppm, sizeof(ppm), "%s", env);
  else
    snprintf(ppm, sizeof(ppm), "%s/images/dog.ppm", data ? data : "../shared/data");
  assert_int_equal(plan->rank[v], 4);
  assert_int_equal(plan->dims[v][1], 3);
  int photo = tc_fill_images(in, (int)plan->dims[v][0], (int)plan->dims[v][2],
                             (int)plan->dims[v][3], ppm);
  printf("input: %s\n", photo ? ppm : "synthetic pattern (no photo)");
}

static void check(bd_status st, const bd_err *err, const char *what) {
  if (st != BD_OK) printf("%s: %s\n", what, err->msg);
  assert_int_equal(st, BD_OK);
}

/* The bound on ||cuda - cpu|| / ||cpu||: $BD_CUDA_TOL, default the 2e-2. */
static double tol(void) {
  const char *t = getenv("BD_CUDA_TOL");
  return t ? atof(t) : 2e-2;
}

static void run_batch(int batch) {
  bd_err err = {0};
  bd_plan *plan = NULL;
  bd_backend *cpu = NULL, *gpu = NULL;
  const bd_graph *g = g_graph;
  check(bd_plan_new(g, batch, &plan, &err), &err, "bd_plan_new");
  int nin = g->n_inputs, nout = g->n_outputs;
  float *in[4] = {0}, *ref[8] = {0}, *got[8] = {0}, *direct[8] = {0};
  for (int i = 0; i < nin; ++i) {
    int64_t n = numel(plan, g->inputs[i]);
    in[i] = malloc((size_t)n * 4);
    assert_non_null(in[i]);
    fill_input(plan, g->inputs[i], in[i]);
  }
  for (int i = 0; i < nout; ++i) {
    int64_t n = numel(plan, g->outputs[i]);
    ref[i] = malloc((size_t)n * 4);
    got[i] = malloc((size_t)n * 4);
    direct[i] = malloc((size_t)n * 4);
    assert_non_null(direct[i]);
  }
  check(bd_cpu_backend_new(g, 0, &cpu, &err), &err, "cpu backend");
  check(bd_backend_prepare(cpu, plan, &err), &err, "cpu prepare");
  check(bd_backend_run(cpu, plan, (const float *const *)in, ref, &err), &err, "cpu run");
  check(bd_cuda_backend_new(g, 0, &gpu, &err), &err, "cuda backend");
  check(bd_backend_prepare(gpu, plan, &err), &err, "cuda prepare");
  const layer_counts lc = print_layers(gpu, plan);
  /* BATCHDET_CUDA_CONV=patch on a model with few-channel layers (DAMO-YOLO's stem and
   * first stages): the patch tile runs some of them (a plan that never picked it would
   * leave the tile untested here) */
  if (getenv("BD_EXPECT_PATCH")) {
    assert_true(lc.tile[BD_CONV_PATCH_TILE] >= 3);
    /* and a Focus stem on it reads the FP32 input through the layout itself (the layout
     * action left out of the raw path: bd_cuda_raw_direct's fuse_layout) */
    const bd_cuda_cplan *cp = bd_cuda_backend_plan((bd_cuda_be *)gpu, plan);
    assert_non_null(cp);
    printf("batch %d: input layout %s\n", batch,
           !cp->rd_direct ? "none" : cp->rd_fuse > 0 ? "read by the stem conv" : "an action");
    if (cp->rd_direct && !(getenv("BATCHDET_CUDA_FUSE_LAYOUT") &&
                           !strcmp(getenv("BATCHDET_CUDA_FUSE_LAYOUT"), "0")))
      assert_true(cp->rd_fuse > 0);
  }
  if (getenv("BD_EXPECT_WGMMA")) {
    /* BATCHDET_CUDA_CONV=wgmma: every layer on our kernel is on a wgmma tile (18-23), the
     * split ones among them where batch 1 leaves few output blocks; BD_EXPECT_WGMMA lists
     * tiles that must each run some (DAMO-YOLO's 96-channel layers on the 96-wide ones) */
    int wg = 0;
    for (int t = 0; t < BD_CONV_MMA_TILES; ++t)
      if (bd_cuda_conv_mma_tile_info(t)->wgmma) wg += lc.tile[t];
    assert_true(lc.mma > 0);
    assert_int_equal(wg, lc.mma);
    if (batch == 1) assert_true(lc.tile[20] + lc.tile[23] > 0);
    for (const char *e = getenv("BD_EXPECT_WGMMA"); *e;) {
      char *end;
      const long t = strtol(e, &end, 10);
      assert_true(end != e && t >= 0 && t < BD_CONV_MMA_TILES);
      assert_true(bd_cuda_conv_mma_tile_info((int)t)->wgmma && lc.tile[t] > 0);
      e = *end == ',' ? end + 1 : end;
    }
  }
  if (getenv("BD_EXPECT_GRAPH")) {
    /* BATCHDET_CUDA_CONV=cudnn-graph: at least this many layers on cuDNN's graph API (a
     * cuDNN whose graph API takes none of them leaves them all on its legacy calls) */
    printf("batch %d: %d conv layers on cuDNN's graph API (%d fused in cuDNN)\n", batch, lc.graph,
           lc.fused);
    assert_true(lc.graph >= atoi(getenv("BD_EXPECT_GRAPH")));
  }
  if (getenv("BD_EXPECT_TWINS")) {
    /* DAMO-YOLO's CSP stages (merge_3..7: 1x1 conv1 and conv2 of one input) on our
     * tensor-core kernel: each pair one launch writing both outputs */
    const bd_cuda_cplan *cp = bd_cuda_backend_plan((bd_cuda_be *)gpu, plan);
    assert_non_null(cp);
    int firsts = 0, seconds = 0;
    for (int i = 0; i < g->n_nodes; ++i) {
      firsts += cp->twin_on[i] == 1;
      seconds += cp->twin_on[i] == 2;
    }
    printf("batch %d: %d twin conv pairs in one launch each\n", batch, firsts);
    assert_int_equal(firsts, seconds);
    assert_true(firsts >= atoi(getenv("BD_EXPECT_TWINS")));
  }
  if (getenv("BD_EXPECT_UPRES")) {
    /* The FPN top-down Resizes after bd_compile's split (DAMO-YOLO's merge_4/5: one per
     * conv reading them) read upsampled by their convs' epilogues: no Resize runs */
    const bd_cuda_cplan *cp = bd_cuda_backend_plan((bd_cuda_be *)gpu, plan);
    assert_non_null(cp);
    int fused = 0, resizes = 0;
    for (int i = 0; i < g->n_nodes; ++i) {
      if (g->nodes[i].op != BD_OP_RESIZE) continue;
      resizes++;
      fused += cp->upsrc[g->nodes[i].out[0]] >= 0;
    }
    printf("batch %d: %d of %d Resizes read upsampled by their convs\n", batch, fused, resizes);
    assert_int_equal(fused, atoi(getenv("BD_EXPECT_UPRES")));
  }
  if (getenv("BD_EXPECT_PIECES")) {
    /* Every conv on our kernel (BATCHDET_CUDA_CONV=mma): each conv output that only a
     * channel Concat reads is written in place as that Concat's slice (no copy), counted
     * here from the graph alone */
    const bd_cuda_cplan *cp = bd_cuda_backend_plan((bd_cuda_be *)gpu, plan);
    assert_non_null(cp);
    int want = 0, got = 0;
    for (int i = 0; i < g->n_nodes; ++i) {
      const int y = g->nodes[i].out[0];
      if (g->nodes[i].op != BD_OP_CONV || g->values[y].is_output) continue;
      int reads = 0, concat = -1;
      for (int r = 0; r < g->n_nodes; ++r)
        for (int j = 0; j < g->nodes[r].n_in; ++j)
          if (g->nodes[r].in[j] == y) {
            reads++;
            concat = g->nodes[r].op == BD_OP_CONCAT && g->nodes[r].p.concat.axis == 1 ? r : -1;
          }
      if (reads != 1 || concat < 0) continue;
      want++;
      got += cp->alias[y] == g->nodes[concat].out[0];
      if (cp->alias[y] != g->nodes[concat].out[0])
        printf("conv %s: its output is not written into Concat %s\n", g->nodes[i].name,
               g->nodes[concat].name);
    }
    printf("batch %d: %d of %d conv outputs written as Concat slices\n", batch, got, want);
    assert_true(want >= atoi(getenv("BD_EXPECT_PIECES")));
    assert_int_equal(got, want);
  }
  const char *gerr = bd_cuda_backend_graph_error(gpu, plan);
  if (gerr) printf("CUDA graph capture failed: %s\n", gerr);
  assert_null(gerr);
  /* Captured with parallel branches (bd_cuda_dag.c: BATCHDET_CUDA_BRANCHES auto, up to
   * batch 4; 1: all; 0: none): the replays below (the kernel emulation's in an order as
   * far from the capture's as the graph's edges allow) must equal the uncaptured run bit
   * for bit. */
  const char *shape = bd_cuda_backend_graph_shape(gpu, plan), *br = getenv("BATCHDET_CUDA_BRANCHES");
  const int dag = br && !strcmp(br, "0") ? 0 : br && !strcmp(br, "1") ? 1 : batch <= 4;
  printf("batch %d graph: %s\n", batch, shape);
  assert_non_null(strstr(shape, dag ? "as a DAG" : "in order"));
  int n_acts = 0, chain = 0, widest = 0;
  if (dag && getenv("BD_EXPECT_BRANCHES")) {
    /* a model with independent branches (DAMO-YOLO's merges and head levels) gets them:
     * the longest chain shorter than the actions (a plain chain of layers would not) */
    assert_int_equal(sscanf(shape, "%d actions as a DAG: longest chain %d, widest level %d",
                            &n_acts, &chain, &widest), 3);
    assert_true(chain >= 1 && chain < n_acts && widest >= 2);
  }
  for (int i = 0; i < nout; ++i) memset(got[i], 0xFF, (size_t)numel(plan, g->outputs[i]) * 4);
  check(bd_backend_run(gpu, plan, (const float *const *)in, got, &err), &err, "cuda run");
  for (int i = 0; i < nout; ++i) {
    int64_t n = numel(plan, g->outputs[i]);
    double num = 0, den = 0, maxd = 0;
    for (int64_t k = 0; k < n; ++k) {
      double d = (double)got[i][k] - ref[i][k];
      num += d * d;
      den += (double)ref[i][k] * ref[i][k];
      if (!(fabs(d) <= maxd)) maxd = fabs(d); /* NaN propagates */
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    printf("batch %d output %d (%lld values): rel L2 %.3e, max abs diff %.3e\n", batch, i,
           (long long)n, rel, maxd);
    assert_true(rel <= tol());
  }
  /* Same work, not captured: bitwise equal. */
  bd_cuda_backend_set_graphs(gpu, 0);
  for (int i = 0; i < nout; ++i) memset(direct[i], 0xFF, (size_t)numel(plan, g->outputs[i]) * 4);
  check(bd_backend_run(gpu, plan, (const float *const *)in, direct, &err), &err, "cuda run (stream)");
  for (int i = 0; i < nout; ++i)
    assert_memory_equal(direct[i], got[i], (size_t)numel(plan, g->outputs[i]) * 4);
  bd_cuda_backend_set_graphs(gpu, 1);
  for (int i = 0; i < nout; ++i) memset(direct[i], 0xFF, (size_t)numel(plan, g->outputs[i]) * 4);
  check(bd_backend_run(gpu, plan, (const float *const *)in, direct, &err), &err, "cuda replay");
  for (int i = 0; i < nout; ++i)
    assert_memory_equal(direct[i], got[i], (size_t)numel(plan, g->outputs[i]) * 4);
  bd_backend_destroy(gpu);
  bd_backend_destroy(cpu);
  for (int i = 0; i < nin; ++i) free(in[i]);
  for (int i = 0; i < nout; ++i) {
    free(ref[i]);
    free(got[i]);
    free(direct[i]);
  }
  bd_plan_destroy(plan);
}

static void test_batch1(void **state) {
  (void)state;
  run_batch(1);
}

/* Batch 8, or $BD_CUDA_BIG_BATCH (the host emulation of the kernels takes 2). */
static void test_batch8(void **state) {
  (void)state;
  if (getenv("BD_CUDA_INPUT")) skip(); /* fixed-batch file */
  const char *b = getenv("BD_CUDA_BIG_BATCH");
  run_batch(b && atoi(b) > 0 ? atoi(b) : 8);
}

/* Over the kernel emulation (cuda_rt_emu.c), launches made with programmatic dependent
 * launch on; absent elsewhere (weak). */
extern long bd_emu_pdl_launches __attribute__((weak));

/* Two plans on one instance: each keeps its own captured graph and arena. The second
 * plan's batch is $BD_CUDA_PLAN2 (default 2). With $BD_EXPECT_PDL_MAX over the kernel
 * emulation (answering as a Hopper, BD_EMU_SM=90): the graphs of plans up to that batch
 * are captured with programmatic dependent launch, the others without. */
static void test_two_plans(void **state) {
  (void)state;
  if (getenv("BD_CUDA_INPUT")) skip();
  bd_err err = {0};
  bd_plan *p1 = NULL, *p2 = NULL;
  bd_backend *gpu = NULL;
  const char *b2 = getenv("BD_CUDA_PLAN2"), *pm = getenv("BD_EXPECT_PDL_MAX");
  const int batch2 = b2 && atoi(b2) > 0 ? atoi(b2) : 2;
  check(bd_plan_new(g_graph, 1, &p1, &err), &err, "plan 1");
  check(bd_plan_new(g_graph, batch2, &p2, &err), &err, "plan 2");
  check(bd_cuda_backend_new(g_graph, 0, &gpu, &err), &err, "cuda backend");
  long l0 = &bd_emu_pdl_launches ? bd_emu_pdl_launches : 0;
  check(bd_backend_prepare(gpu, p1, &err), &err, "prepare 1");
  long l1 = &bd_emu_pdl_launches ? bd_emu_pdl_launches : 0;
  check(bd_backend_prepare(gpu, p2, &err), &err, "prepare 2");
  long l2 = &bd_emu_pdl_launches ? bd_emu_pdl_launches : 0;
  if (pm) {
    if (!&bd_emu_pdl_launches) fail_msg("BD_EXPECT_PDL_MAX needs the kernel emulation");
    printf("PDL launches: batch 1 plan %ld, batch %d plan %ld (expected on up to batch %s)\n",
           l1 - l0, batch2, l2 - l1, pm);
    assert_int_equal(l1 - l0 > 0, 1 <= atoi(pm));
    assert_int_equal(l2 - l1 > 0, batch2 <= atoi(pm));
  }
  check(bd_backend_prepare(gpu, p1, &err), &err, "prepare 1 again");
  int v = g_graph->inputs[0], o = g_graph->outputs[0];
  float *in2 = calloc((size_t)numel(p2, v), 4), *out2 = malloc((size_t)numel(p2, o) * 4);
  float *out1 = malloc((size_t)numel(p1, o) * 4);
  fill_input(p2, v, in2);
  if (g_graph->n_outputs == 1 && g_graph->n_inputs == 1) {
    check(bd_backend_run(gpu, p2, (const float *const *)&in2, &out2, &err), &err, "run 2");
    check(bd_backend_run(gpu, p1, (const float *const *)&in2, &out1, &err), &err, "run 1");
    /* Image 0 of the batch-2 run equals the batch-1 run within 16-bit noise. */
    double num = 0, den = 0;
    for (int64_t k = 0; k < numel(p1, o); ++k) {
      num += ((double)out1[k] - out2[k]) * ((double)out1[k] - out2[k]);
      den += (double)out1[k] * out1[k];
    }
    printf("batch 1 vs batch 2 image 0: rel L2 %.3e\n", sqrt(num / (den > 0 ? den : 1)));
    assert_true(sqrt(num / (den > 0 ? den : 1)) <= tol());
  }
  bd_backend_destroy(gpu);
  free(in2);
  free(out1);
  free(out2);
  bd_plan_destroy(p1);
  bd_plan_destroy(p2);
}

int main(void) {
  TC_SKIP_IF_NO_DEVICE();
  tc_seed();
  if (!(g_graph = tc_load_model(1))) return 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch1), cmocka_unit_test(test_batch8),
                                     cmocka_unit_test(test_two_plans)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  bd_graph_destroy(g_graph);
  return rc;
}
