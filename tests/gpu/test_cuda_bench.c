/* The cuda backend's benchmark hooks (bd_cuda_bench.c), over the host emulation of the
 * device (cuda_emu.c; no GPU needed): the per-action profile bd_cuda_backend_profile on
 * yolox_nano at batch 1. The emulated device clock advances 1 us per kernel launch or
 * device copy, so every time is deterministic and checkable:
 *  - one row per action of the plan, in execution order, each graph node of the plan
 *    once (every Conv with how its layer runs), conversions and output copies with
 *    node -1;
 *  - the per-action times add up to one whole run's launches (bd_cuda_backend_time_device
 *    of the same plan): no launch outside a bracket, none counted twice; a row takes
 *    time exactly when it moves bytes (an in-place Reshape does neither);
 *  - each Conv's bytes and FLOPs equal a computation here from the graph's weights and
 *    the plan's dims, and the FLOPs of all convs 2 x bd_cost_of's conv MACs;
 *  - the outputs of run() after profiling are bitwise those before.
 * Run twice: default convs (direct kernel without cuDNN) and BATCHDET_CUDA_CONV=mma. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_cost.h"
#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"
#include "bd_onnx.h"
#include "test_cuda_layers.h"

extern atomic_llong bd_cuda_emu_launches;
static bd_graph *g_graph;

static double numel(const bd_plan *p, int v) {
  double n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= (double)p->dims[v][d];
  return n;
}

static void check(bd_status st, const bd_err *err, const char *what) {
  if (st != BD_OK) printf("%s: %s\n", what, err->msg);
  assert_int_equal(st, BD_OK);
}

/* |a - b| <= rel x max(|a|, |b|): times pass through floats (cudaEventElapsedTime). */
static int close_to(double a, double b, double rel) {
  double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
  return fabs(a - b) <= rel * m;
}

static void test_profile(void **state) {
  (void)state;
  const bd_graph *g = g_graph;
  bd_err err = {0};
  bd_plan *plan = NULL;
  bd_backend *be = NULL;
  bd_prof_row *rows = NULL;
  int n_rows = -1;
  check(bd_plan_new(g, 1, &plan, &err), &err, "bd_plan_new");
  int v = g->inputs[0], nout = g->n_outputs;
  assert_true(g->n_inputs == 1 && nout >= 1 && nout <= 8);
  float *in = malloc((size_t)numel(plan, v) * 4), *a[8] = {0}, *b[8] = {0};
  assert_non_null(in);
  for (int64_t k = 0; k < (int64_t)numel(plan, v); ++k) in[k] = (float)((k * 37) % 256);
  for (int i = 0; i < nout; ++i) {
    a[i] = calloc((size_t)numel(plan, g->outputs[i]), 4);
    b[i] = calloc((size_t)numel(plan, g->outputs[i]), 4);
    assert_true(a[i] && b[i]);
  }
  check(bd_cuda_backend_new(g, 0, &be, &err), &err, "cuda backend (emulated)");
  /* Not prepared: refused, nothing returned. */
  assert_int_equal(bd_cuda_backend_profile(be, plan, 1, &rows, &n_rows, &err), BD_E_INVALID);
  assert_null(rows);
  assert_int_equal(n_rows, 0);
  check(bd_backend_prepare(be, plan, &err), &err, "prepare");
  check(bd_backend_run(be, plan, (const float *const *)&in, a, &err), &err, "run");
  assert_int_equal(bd_cuda_backend_profile(be, plan, 0, &rows, &n_rows, &err), BD_E_INVALID);

  /* One whole run's launches, as the emulated clock counts them. */
  double ms_run = -1;
  long long l0 = atomic_load(&bd_cuda_emu_launches);
  check(bd_cuda_backend_time_device(be, plan, 1, &ms_run, &err), &err, "time_device");
  long long run_launches = atomic_load(&bd_cuda_emu_launches) - l0;
  assert_true(run_launches > 0);
  assert_true(close_to(ms_run, (double)run_launches * 1e-3, 1e-6));

  const int reps = 2;
  l0 = atomic_load(&bd_cuda_emu_launches);
  check(bd_cuda_backend_profile(be, plan, reps, &rows, &n_rows, &err), &err, "profile");
  /* a warm-up and `reps` runs of the whole sequence, then each action's replay timing:
   * here uncaptured (the twins run when called), reps runs of it */
  assert_int_equal(atomic_load(&bd_cuda_emu_launches) - l0, (long long)(2 * reps + 1) * run_launches);

  bd_cuda_cplan *cp = bd_cuda_backend_plan((bd_cuda_be *)be, plan);
  assert_non_null(cp);
  assert_non_null(rows);
  assert_int_equal(n_rows, cp->n_acts);
  int *seen = calloc((size_t)g->n_nodes, sizeof(int));
  assert_non_null(seen);
  double sum_ms = 0, conv_flops = 0;
  int n_conv = 0, n_ops = 0, n_conversions = 0, n_outputs = 0, n_zero = 0, n_mma = 0, n_layout = 0,
      n_twins = 0, n_upres = 0;
  const char *mode = getenv("BATCHDET_CUDA_CONV");
  int mma = mode && !strcmp(mode, "mma");
  for (int i = 0; i < n_rows; ++i) {
    const bd_prof_row *r = &rows[i];
    const bd_cuda_action *act = &cp->acts[i];
    assert_int_equal(r->step, i);
    assert_int_equal((int)r->kind, act->kind);
    assert_int_equal(r->value, act->value);
    assert_non_null(r->name);
    assert_true(r->ms_min >= 0 && r->ms_min <= r->ms_median);
    assert_true(r->ms_median == r->ms_min); /* the emulated clock does not jitter */
    assert_true(r->ms_replay == r->ms_median); /* its launches, timed either way */
    assert_true((r->ms_median > 0) == (r->bytes > 0));
    sum_ms += r->ms_median;
    if (r->kind != BD_PROF_OP) {
      assert_int_equal(r->node, -1);
      assert_int_equal(r->op, -1);
      assert_int_equal(r->conv_algo, BD_PROF_NOT_CONV);
      assert_true(r->flops == 0);
      n_conversions += r->kind == BD_PROF_CONVERT;
      n_outputs += r->kind == BD_PROF_OUTPUT;
      n_zero += r->kind == BD_PROF_ZERO;
      if (r->kind == BD_PROF_LAYOUT) { /* first, from the graph input */
        assert_int_equal(i, 0);
        assert_int_equal(r->value, g->inputs[0]);
        ++n_layout;
      }
      continue;
    }
    ++n_ops;
    assert_true(r->node >= 0 && r->node < g->n_nodes);
    assert_int_equal(r->node, act->node);
    const bd_node *nd = &g->nodes[r->node];
    assert_int_equal(++seen[r->node], 1);
    assert_int_equal(r->op, (int)nd->op);
    assert_int_equal(r->value, nd->out[0]);
    assert_int_equal(r->rank, plan->rank[nd->out[0]]);
    assert_memory_equal(r->dims, plan->dims[nd->out[0]], sizeof(int64_t) * (size_t)r->rank);
    if (nd->op != BD_OP_CONV) {
      assert_int_equal(r->conv_algo, BD_PROF_NOT_CONV);
      assert_true(r->flops == 0);
      /* a Resize its convs read upsampled (plan_upres): nothing of its own runs */
      assert_int_equal(r->upsampled_read, nd->op == BD_OP_RESIZE && cp->upsrc[nd->out[0]] >= 0);
      if (r->upsampled_read) assert_true(r->bytes == 0 && r->ms_median == 0);
      n_upres += r->upsampled_read;
      continue;
    }
    ++n_conv;
    if (cp->twin_on[r->node] == 2) { /* its twin's row counts it: nothing of its own runs */
      assert_int_equal(r->conv_twin, 2);
      assert_true(r->bytes == 0 && r->flops == 0 && r->ms_median == 0);
      ++n_twins;
      continue;
    }
    assert_int_equal(r->conv_twin, cp->twin_on[r->node]);
    int pad = -1, algo = bd_cuda_conv_layer_algo(cp->layer[r->node], &pad);
    assert_int_equal(r->conv_algo, algo);
    assert_int_equal(r->conv_padded, pad);
    assert_int_equal(r->conv_fused, bd_cuda_conv_layer_is_fused(cp->layer[r->node]));
    /* No cuDNN in the emulation: our direct kernel, or where it applies the tensor-core
     * one when asked. */
    assert_true(algo == BD_PROF_DIRECT || (mma && algo == BD_PROF_MMA));
    n_mma += algo == BD_PROF_MMA;
    assert_true(r->rep16);
    /* Independently: x, y, residual and the weights in 16 bits, the bias in FP32; FLOPs
     * 2 x (batch x output pixels) x (weights per output channel x output channels). */
    const bd_value *w = &g->values[nd->in[1]];
    double wn = (double)bd_value_numel(w);
    double bytes = (numel(plan, nd->in[0]) + numel(plan, nd->out[0]) + wn) * 2;
    if (nd->n_in > 2 && nd->in[2] >= 0) bytes += (double)bd_value_numel(&g->values[nd->in[2]]) * 4;
    if (nd->n_in > 3 && nd->in[3] >= 0) { /* read upsampled: the Resize's input */
      const int rv = nd->in[3], up = cp->upsrc[rv] >= 0;
      const bd_node *rz = &g->nodes[g->values[rv].producer];
      assert_int_equal(r->conv_upres, up);
      if (up) assert_int_equal(rz->op, BD_OP_RESIZE);
      bytes += numel(plan, up ? rz->in[0] : rv) * 2;
    }
    const int64_t *yd = plan->dims[nd->out[0]];
    assert_int_equal(w->dims[0], yd[1]);
    double flops = 2.0 * (double)yd[0] * (double)yd[2] * (double)yd[3] * wn;
    if (cp->twin_on[r->node] == 1) { /* one launch of both: the twin's work too, one input */
      const bd_node *t = &g->nodes[((bd_cuda_be *)be)->twin[r->node]];
      const double tn = (double)bd_value_numel(&g->values[t->in[1]]);
      assert_int_equal(t->in[0], nd->in[0]);
      bytes += (numel(plan, t->out[0]) + tn) * 2;
      if (t->n_in > 2 && t->in[2] >= 0) bytes += (double)bd_value_numel(&g->values[t->in[2]]) * 4;
      if (t->n_in > 3 && t->in[3] >= 0) { /* its residual too (split FPN convs' twins) */
        const int rv = t->in[3], up = cp->upsrc[rv] >= 0;
        bytes += numel(plan, up ? g->nodes[g->values[rv].producer].in[0] : rv) * 2;
      }
      flops += 2.0 * (double)yd[0] * (double)yd[2] * (double)yd[3] * tn;
    }
    assert_true(close_to(r->bytes, bytes, 1e-12));
    assert_true(close_to(r->flops, flops, 1e-12));
    conv_flops += r->flops;
  }
  /* Every step of the plan once, but the Focus stem's Slices, which the layout action
   * (yolox_nano: first, one pass from the FP32 input) replaces; all actions accounted
   * for. */
  assert_int_equal(n_layout, cp->rd_direct);
  assert_int_equal(n_layout, 1);
  int n_replaced = 0;
  for (int s = 0; s < plan->n_steps; ++s) {
    const bd_node *nd = &g->nodes[plan->steps[s]];
    if (!seen[plan->steps[s]]) {
      assert_int_equal(nd->op, BD_OP_SLICE);
      ++n_replaced;
    } else {
      assert_int_equal(seen[plan->steps[s]], 1);
    }
  }
  assert_int_equal(n_replaced, 4);
  assert_int_equal(n_ops + n_replaced, plan->n_steps);
  assert_int_equal(n_ops + n_conversions + n_outputs + n_zero + n_layout, n_rows);
  /* yolox_nano's head reshapes its 16-bit NHWC maps in place (views: no work, no bytes)
   * instead of converting them to FP32 first. */
  int n_views = 0;
  for (int i = 0; i < n_rows; ++i)
    if (rows[i].kind == BD_PROF_OP && rows[i].op == BD_OP_RESHAPE) {
      assert_true(rows[i].bytes == 0 && rows[i].ms_median == 0);
      ++n_views;
    }
  assert_int_equal(n_views, 3);
  assert_int_equal(n_conversions, 0);
  bd_cost cost;
  check(bd_cost_of(g, plan, &cost, &err), &err, "bd_cost_of");
  assert_int_equal(n_conv, cost.n_conv);
  assert_true(mma ? n_mma > 0 : n_mma == 0);
  /* With every conv on our kernel, yolox_nano's 8 CSP pairs (1x1 conv1 + conv2; the two
   * reading an upsampled Concat split by bd_compile into a pair at the low resolution and
   * a pair with residuals: 10) and its head's box (4) and objectness (1) convs at each
   * level (ragged twins: 13) run as twins unless BATCHDET_CUDA_TWINS=0; never on the
   * direct kernel. */
  const char *tw = getenv("BATCHDET_CUDA_TWINS");
  assert_int_equal(n_twins, mma && !(tw && !strcmp(tw, "0")) ? 13 : 0);
  /* Its two FPN upsamples, split by bd_compile into one per C3 conv1/conv2 reading them,
   * are read upsampled by those convs on our kernel (plan_upres); the direct kernel runs
   * them. */
  assert_int_equal(n_upres, mma ? 4 : 0);
  assert_true(close_to(conv_flops, 2 * cost.conv_macs, 1e-12));
  /* The brackets split one run's launches exactly: none outside, none twice. */
  assert_true(close_to(sum_ms, (double)run_launches * 1e-3, 1e-6));
  printf(
      "profile: %d actions (%d ops, %d convs of which %d mma, %d conversions, %d output "
      "copies), %lld launches a run, %.1f MFLOP in convs\n",
      n_rows, n_ops, n_conv, n_mma, n_conversions, n_outputs, run_launches, conv_flops / 1e6);

  /* Profiling leaves the plan as it was. */
  check(bd_backend_run(be, plan, (const float *const *)&in, b, &err), &err, "run again");
  for (int i = 0; i < nout; ++i)
    assert_memory_equal(a[i], b[i], (size_t)numel(plan, g->outputs[i]) * 4);
  free(seen);
  free(rows);
  bd_backend_destroy(be);
  bd_plan_destroy(plan);
  free(in);
  for (int i = 0; i < nout; ++i) {
    free(a[i]);
    free(b[i]);
  }
}

int main(void) {
  if (!(g_graph = tc_load_model(0))) return 1;
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_profile)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  bd_graph_destroy(g_graph);
  return rc;
}
