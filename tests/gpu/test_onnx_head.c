/* A generated DAMO-like head (tests/gpu/models/gen_head.py, B0 = 2, opset 11 and 13):
 * Shape-built Reshape targets fold, the no-op Cast goes, the integral fuses (fuse_dfl),
 * baked-B0 Reshape targets and the B0-row stride constant re-batch. Expected shapes
 * follow from the generator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_compile.h"
#include "bd_onnx.h"

static void run(int opset) {
  char path[1024];
  const char *d = getenv("BD_GEN_MODELS");
  snprintf(path, sizeof path, "%s/head_op%d.onnx", d ? d : ".", opset);
  bd_graph *g = NULL;
  bd_err err = {0};
  bd_compile_report rep;
  if (bd_onnx_load_file(path, &g, &err)) fail_msg("%s", err.msg);
  assert_int_equal(g->batch0, 2);
  if (bd_compile(g, NULL, &rep, &err)) fail_msg("%s", err.msg);
  for (int i = 0; i < g->n_nodes; i++) {
    assert_true(g->nodes[i].op != BD_OP_SHAPE && g->nodes[i].op != BD_OP_CAST);
  }
  assert_int_equal(rep.removed, 1); /* the Cast */
  /* the integral (Softmax, moves, MatMul by the bins) fused: no Softmax or MatMul left */
  int dots = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    assert_true(g->nodes[i].op != BD_OP_SOFTMAX && g->nodes[i].op != BD_OP_MATMUL);
    dots += g->nodes[i].op == BD_OP_SOFTMAX_DOT;
  }
  printf("opset %d: %d DFL integral(s) fused, %d SoftmaxDot\n", opset, rep.fused_dfl, dots);
  assert_true(rep.fused_dfl >= 1 && dots >= 1);
  static const int batches[3] = {1, 3, 2};
  for (int b = 0; b < 3; b++) {
    int n = batches[b];
    bd_plan *p = NULL;
    if (bd_plan_new(g, n, &p, &err)) fail_msg("batch %d: %s", n, err.msg);
    int o = g->outputs[0];
    assert_int_equal(p->rank[o], 3);
    assert_int_equal(p->dims[o][0], n);
    assert_int_equal(p->dims[o][1], 16);
    assert_int_equal(p->dims[o][2], 2);
    /* the integral's baked [B0*A*4, R+1] Reshape target, now [B0*A*4, 1], re-batched */
    int seen = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      int v = g->nodes[i].out[0];
      if (g->nodes[i].op != BD_OP_RESHAPE || p->rank[v] != 2 || p->dims[v][1] != 1) continue;
      assert_int_equal(p->dims[v][0], n * 64);
      ++seen;
    }
    assert_int_equal(seen, 1);
    bd_plan_destroy(p);
  }
  bd_graph_destroy(g);
}

static void test_head_op11(void **state) {
  (void)state;
  run(11);
}

static void test_head_op13(void **state) {
  (void)state;
  run(13);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_head_op11),
                                     cmocka_unit_test(test_head_op13)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
