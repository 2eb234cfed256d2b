/* Helpers for the cpu backend tests: build a graph in C, fill a plan by hand (each
 * activation its own arena slot), run it with 1 and 2 threads on NaN-poisoned outputs,
 * and compare with a reference computed by the test's own naive loops. */
#ifndef BD_TEST_CPU_UTIL_H
#define BD_TEST_CPU_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_backend.h"
#include "bd_graph.h"
#include "cpu_internal.h"

/* 0: conv tiles go through GEMM + separate epilogue even on AVX-512 machines, so that
 * both paths are tested where the fused one exists. */
static int tu_fused = 1;
/* where the implicit GEMM takes the channel-vector tile (BD_CPU_CV_*) */
static int tu_cv = BD_CPU_CV_AUTO;

static uint64_t tu_rng = 0x9E3779B97F4A7C15ull;
static void tu_seed(uint64_t s) { tu_rng = s * 0x9E3779B97F4A7C15ull + 1; }
static float tu_rand(void) { /* uniform [-1, 1) */
  tu_rng = tu_rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((tu_rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}
static float *tu_randv(int64_t n, float scale) {
  float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
  assert_non_null(v);
  for (int64_t i = 0; i < n; i++) v[i] = tu_rand() * scale;
  return v;
}

static int64_t tu_numel(int rank, const int64_t *d) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= d[i];
  return n;
}

static bd_graph *tu_graph(void) {
  bd_graph *g = NULL;
  assert_int_equal(bd_graph_new(&g, NULL), BD_OK);
  g->opset = 13;
  return g;
}

static int tu_val(bd_graph *g, bd_dtype dt, int rank, const int64_t *d) {
  int v = bd_graph_add_value(g, "v", dt, rank, d);
  assert_true(v >= 0);
  return v;
}
static int tu_input(bd_graph *g, int rank, const int64_t *d) {
  int v = tu_val(g, BD_DT_F32, rank, d);
  g->values[v].is_input = 1;
  g->inputs[g->n_inputs++] = v;
  return v;
}
static int tu_output(bd_graph *g, bd_dtype dt, int rank, const int64_t *d) {
  int v = tu_val(g, dt, rank, d);
  g->values[v].is_output = 1;
  g->outputs[g->n_outputs++] = v;
  return v;
}
static int tu_const(bd_graph *g, bd_dtype dt, int rank, const int64_t *d, const void *data) {
  int v = tu_val(g, dt, rank, d);
  size_t b = (size_t)tu_numel(rank, d) * bd_dtype_size(dt);
  g->values[v].data = malloc(b ? b : 1);
  assert_non_null(g->values[v].data);
  memcpy(g->values[v].data, data, b);
  return v;
}
/* Returns the node; valid until the next node is added. */
static bd_node *tu_node(bd_graph *g, bd_op op, int n_in, const int *in, int out) {
  int i = bd_graph_add_node(g, op, "n", n_in, in, 1, &out);
  assert_true(i >= 0);
  return &g->nodes[i];
}

static bd_plan *tu_plan(const bd_graph *g) {
  bd_plan *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->batch = 1;
  p->n_values = g->n_values;
  p->rank = calloc((size_t)g->n_values, sizeof *p->rank);
  p->dims = calloc((size_t)g->n_values, sizeof *p->dims);
  p->offset = calloc((size_t)g->n_values, sizeof *p->offset);
  p->steps = calloc((size_t)g->n_nodes + 1, sizeof *p->steps);
  assert_true(p->rank && p->dims && p->offset && p->steps);
  size_t off = 0;
  for (int v = 0; v < g->n_values; v++) {
    const bd_value *val = &g->values[v];
    p->rank[v] = val->rank;
    for (int d = 0; d < val->rank; d++) p->dims[v][d] = val->dims[d];
    if (val->data || val->is_input || val->is_output) {
      p->offset[v] = SIZE_MAX;
    } else {
      p->offset[v] = off;
      off += ((size_t)tu_numel(val->rank, val->dims) * bd_dtype_size(val->dtype) + 63) & ~(size_t)63;
    }
  }
  p->arena_bytes = p->naive_bytes = off;
  p->n_steps = g->n_nodes;
  for (int i = 0; i < g->n_nodes; i++) p->steps[i] = i;
  return p;
}

/* Runs g with `threads`; outputs allocated here (float32, NaN-poisoned first). */
static float **tu_run(const bd_graph *g, int threads, const float *const *ins) {
  bd_plan *p = tu_plan(g);
  bd_backend *be = NULL;
  bd_err err;
  bd_err_clear(&err);
  assert_int_equal(bd_cpu_backend_new(g, threads, &be, &err), BD_OK);
  bd_cpu_backend_set_fused_tiles(be, tu_fused);
  bd_cpu_backend_set_channel_tiles(be, tu_cv);
  bd_status st = bd_backend_prepare(be, p, &err);
  if (st != BD_OK) fprintf(stderr, "prepare: %s\n", err.msg);
  assert_int_equal(st, BD_OK);
  float **outs = calloc((size_t)g->n_outputs, sizeof *outs);
  assert_non_null(outs);
  for (int i = 0; i < g->n_outputs; i++) {
    const bd_value *v = &g->values[g->outputs[i]];
    int64_t n = tu_numel(v->rank, v->dims);
    outs[i] = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(outs[i]);
    for (int64_t j = 0; j < n; j++) outs[i][j] = NAN;
  }
  st = bd_backend_run(be, p, ins, outs, &err);
  if (st != BD_OK) fprintf(stderr, "run: %s\n", err.msg);
  assert_int_equal(st, BD_OK);
  bd_backend_destroy(be);
  bd_plan_destroy(p);
  return outs;
}

static void tu_free_outs(const bd_graph *g, float **o) {
  for (int i = 0; i < g->n_outputs; i++) free(o[i]);
  free(o);
}

static int tu_close(float got, float ref, float tol) {
  if (isnan(ref)) return isnan(got);
  if (isinf(ref)) return got == ref;
  return fabsf(got - ref) <= tol * (1.0f + fabsf(ref));
}

/* Runs with 1 and 2 threads; output 0 must match ref within tol and the two runs must be
 * bit-identical. */
static void tu_check(const bd_graph *g, const float *const *ins, const float *ref, float tol,
                     const char *what) {
  float **o1 = tu_run(g, 1, ins);
  float **o2 = tu_run(g, 2, ins);
  float **o7 = tu_run(g, 7, ins); /* past 4 threads the convs are split finer */
  const bd_value *v = &g->values[g->outputs[0]];
  int64_t n = tu_numel(v->rank, v->dims);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!tu_close(o1[0][i], ref[i], tol)) {
      if (bad < 5)
        fprintf(stderr, "%s: [%lld] got %.8g want %.8g\n", what, (long long)i, o1[0][i], ref[i]);
      bad++;
    }
  }
  if (memcmp(o1[0], o2[0], sizeof(float) * (size_t)n) != 0) {
    fprintf(stderr, "%s: 1 and 2 threads differ\n", what);
    bad++;
  }
  if (memcmp(o1[0], o7[0], sizeof(float) * (size_t)n) != 0) {
    fprintf(stderr, "%s: 1 and 7 threads differ\n", what);
    bad++;
  }
  tu_free_outs(g, o1);
  tu_free_outs(g, o2);
  tu_free_outs(g, o7);
  if (bad) fprintf(stderr, "%s: %lld mismatches of %lld\n", what, (long long)bad, (long long)n);
  assert_int_equal(bad, 0);
}

#endif
