/* Compiler unit tests on small graphs built in C. Expected numbers are computed here
 * from the textbook formulas, independently of the compiler's code. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_compile.h"
#include "bd_graph.h"

static int input4(bd_graph *g, int64_t n, int64_t c, int64_t h, int64_t w) {
  int64_t d[4] = {n, c, h, w};
  int v = bd_graph_add_value(g, "x", BD_DT_F32, 4, d);
  g->values[v].is_input = 1;
  g->values[v].batch_dep = 1;
  g->inputs[g->n_inputs++] = v;
  g->batch0 = n;
  return v;
}

static int act(bd_graph *g, const char *name) {
  int v = bd_graph_add_value(g, name, BD_DT_F32, 0, NULL);
  g->values[v].rank = -1;
  return v;
}

static void mark_out(bd_graph *g, int v) {
  g->values[v].is_output = 1;
  g->outputs[g->n_outputs++] = v;
}

static int cf32(bd_graph *g, const char *name, int rank, const int64_t *d, const float *data) {
  int v = bd_graph_add_value(g, name, BD_DT_F32, rank, d);
  int64_t n = bd_value_numel(&g->values[v]);
  g->values[v].data = malloc(sizeof(float) * (size_t)(n ? n : 1));
  memcpy(g->values[v].data, data, sizeof(float) * (size_t)n);
  return v;
}

static int ci64(bd_graph *g, const char *name, int rank, const int64_t *d, const int64_t *data) {
  int v = bd_graph_add_value(g, name, BD_DT_I64, rank, d);
  int64_t n = bd_value_numel(&g->values[v]);
  g->values[v].data = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  memcpy(g->values[v].data, data, sizeof(int64_t) * (size_t)n);
  return v;
}

static float frand(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return (float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static int conv(bd_graph *g, int x, int w, int b, int k, int pad, int stride, const char *out) {
  int o = act(g, out);
  int in[3] = {x, w, b};
  int ni = bd_graph_add_node(g, BD_OP_CONV, out, b >= 0 ? 3 : 2, in, 1, &o);
  bd_conv_params *p = &g->nodes[ni].p.conv;
  p->kh = p->kw = k;
  p->sh = p->sw = stride;
  p->dh = p->dw = 1;
  p->pad_t = p->pad_l = p->pad_b = p->pad_r = pad;
  p->group = 1;
  return o;
}

static int node1(bd_graph *g, bd_op op, int a, int b, const char *out) {
  int o = act(g, out);
  int in[2] = {a, b};
  bd_graph_add_node(g, op, out, b >= 0 ? 2 : 1, in, 1, &o);
  return o;
}

static int bn(bd_graph *g, int x, int c, unsigned *seed, float eps, float *par /* 4*c */) {
  int64_t d = c;
  int ids[5] = {x};
  for (int k = 0; k < 4; k++) {
    for (int i = 0; i < c; i++) {
      float r = frand(seed);
      par[k * c + i] = k == 0 ? 1.0f + 0.2f * r : k == 3 ? 0.05f + fabsf(r) * 3 : r * 0.3f;
    }
    ids[k + 1] = cf32(g, "bnp", 1, &d, par + k * c);
  }
  int o = act(g, "bn_out");
  int ni = bd_graph_add_node(g, BD_OP_BATCHNORM, "bn", 5, ids, 1, &o);
  g->nodes[ni].p.bn.eps = eps;
  return o;
}

static const bd_node *only_conv(const bd_graph *g) {
  const bd_node *c = NULL;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == BD_OP_CONV) c = &g->nodes[i];
  return c;
}

static void test_bn_fold(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  unsigned seed = 7;
  float w[3 * 2 * 9], b[3], par[12];
  for (int i = 0; i < 54; i++) w[i] = frand(&seed);
  for (int i = 0; i < 3; i++) b[i] = frand(&seed);
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 1, 2, 5, 5);
  int64_t wd[4] = {3, 2, 3, 3}, bd1 = 3;
  int c = conv(g, x, cf32(g, "w", 4, wd, w), cf32(g, "b", 1, &bd1, b), 3, 1, 1, "c");
  int y = bn(g, c, 3, &seed, 1e-3f, par);
  mark_out(g, y);
  bd_compile_report rep;
  assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
  assert_int_equal(rep.folded_bn, 1);
  assert_int_equal(g->n_nodes, 1);
  const bd_node *cv = only_conv(g);
  assert_non_null(cv);
  const float *nw = g->values[cv->in[1]].data, *nb = g->values[cv->in[2]].data;
  for (int o = 0; o < 3; o++) {
    double s = par[o] / sqrt(par[9 + o] + 1e-3);
    for (int k = 0; k < 18; k++) assert_true(fabs(nw[o * 18 + k] - w[o * 18 + k] * s) < 1e-6);
    double eb = (b[o] - par[6 + o]) * s + par[3 + o];
    assert_true(fabs(nb[o] - eb) < 1e-6);
  }
  assert_int_equal(cv->out[0], g->outputs[0]);
  bd_graph_destroy(g);
}

/* Conv -> Mul by a constant: a scalar and a [1,M,1,1] scale go into the weights and bias;
 * an [M] scale (it broadcasts along W, not the channels) and a Mul whose conv output has a
 * second reader stay. */
static void test_scale_fold(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  unsigned seed = 11;
  float w[3 * 3], b[3], sc[3] = {0.5f, -2.0f, 3.0f}, k = 1.75f;
  for (int i = 0; i < 9; i++) w[i] = frand(&seed);
  for (int i = 0; i < 3; i++) b[i] = frand(&seed);
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 1, 3, 3, 3);
  int64_t wd[4] = {3, 3, 1, 1}, d1 = 3, d4[4] = {1, 3, 1, 1}, d0 = 1;
  int wv = cf32(g, "w", 4, wd, w), bv = cf32(g, "b", 1, &d1, b);
  int c1 = conv(g, x, wv, bv, 1, 0, 1, "c1");
  int m1 = node1(g, BD_OP_MUL, c1, cf32(g, "k", 1, &d0, &k), "m1"); /* folds: scalar */
  int c2 = conv(g, m1, wv, bv, 1, 0, 1, "c2");
  int m2 = node1(g, BD_OP_MUL, cf32(g, "s4", 4, d4, sc), c2, "m2"); /* folds: per channel */
  int c3 = conv(g, m2, wv, bv, 1, 0, 1, "c3");
  int m3 = node1(g, BD_OP_MUL, c3, cf32(g, "s1", 1, &d1, sc), "m3"); /* stays: along W */
  int c4 = conv(g, m3, wv, bv, 1, 0, 1, "c4");
  int m4 = node1(g, BD_OP_MUL, c4, cf32(g, "k2", 1, &d0, &k), "m4"); /* stays: c4 read twice */
  int a4 = node1(g, BD_OP_ADD, m4, c4, "a4");
  mark_out(g, a4);
  bd_compile_report rep;
  assert_int_equal(bd_compile(g, &(bd_compile_opts){.no_fusion = 1}, &rep, &err), BD_OK);
  assert_int_equal(rep.folded_scale, 2);
  int n_mul = 0, n_conv = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    n_mul += nd->op == BD_OP_MUL;
    if (nd->op != BD_OP_CONV) continue;
    const float *nw = g->values[nd->in[1]].data, *nb = g->values[nd->in[2]].data;
    for (int o = 0; o < 3; o++) {
      float f = n_conv == 0 ? k : n_conv == 1 ? sc[o] : 1.0f; /* in graph order */
      for (int j = 0; j < 3; j++) assert_true(fabsf(nw[o * 3 + j] - w[o * 3 + j] * f) < 1e-6f);
      assert_true(fabsf(nb[o] - b[o] * f) < 1e-6f);
    }
    n_conv++;
  }
  assert_int_equal(n_conv, 4);
  assert_int_equal(n_mul, 2);
  bd_graph_destroy(g);
}

static void test_repconv(void **state) {
  (void)state;
  for (int with_id = 0; with_id < 3; with_id++) {
    bd_graph *g;
    bd_err err = {0};
    unsigned seed = 11 + (unsigned)with_id;
    float w3[4 * 4 * 9], w1[16], b3[4], b1[4], par[16];
    for (int i = 0; i < 144; i++) w3[i] = frand(&seed);
    for (int i = 0; i < 16; i++) w1[i] = frand(&seed);
    for (int i = 0; i < 4; i++) b3[i] = frand(&seed), b1[i] = frand(&seed);
    assert_int_equal(bd_graph_new(&g, &err), BD_OK);
    int x = input4(g, 1, 4, 6, 6);
    int64_t d3[4] = {4, 4, 3, 3}, d1[4] = {4, 4, 1, 1}, db = 4;
    int a = conv(g, x, cf32(g, "w3", 4, d3, w3), cf32(g, "b3", 1, &db, b3), 3, 1, 1, "a");
    int c = conv(g, x, cf32(g, "w1", 4, d1, w1), cf32(g, "b1", 1, &db, b1), 1, 0, 1, "c");
    int s = node1(g, BD_OP_ADD, c, a, "s"); /* 1x1 first: order must not matter */
    if (with_id == 1) s = node1(g, BD_OP_ADD, s, x, "s2");
    if (with_id == 2) s = node1(g, BD_OP_ADD, s, bn(g, x, 4, &seed, 1e-3f, par), "s2");
    int r = node1(g, BD_OP_RELU, s, -1, "r");
    mark_out(g, r);
    bd_compile_report rep;
    assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
    assert_int_equal(rep.merged_repconv, 1);
    assert_int_equal(g->n_nodes, 1);
    const bd_node *cv = only_conv(g);
    assert_int_equal(cv->p.conv.act, BD_ACT_RELU);
    assert_int_equal(cv->p.conv.kh, 3);
    const float *nw = g->values[cv->in[1]].data, *nb = g->values[cv->in[2]].data;
    for (int o = 0; o < 4; o++) {
      double s_id = 0, t_id = 0;
      if (with_id == 1) s_id = 1;
      if (with_id == 2) {
        s_id = par[o] / sqrt(par[12 + o] + 1e-3);
        t_id = par[4 + o] - par[8 + o] * s_id;
      }
      for (int ci = 0; ci < 4; ci++)
        for (int k = 0; k < 9; k++) {
          double e = w3[(o * 4 + ci) * 9 + k];
          if (k == 4) e += w1[o * 4 + ci] + (ci == o ? s_id : 0);
          assert_true(fabs(nw[(o * 4 + ci) * 9 + k] - e) < 1e-6);
        }
      assert_true(fabs(nb[o] - (b3[o] + b1[o] + t_id)) < 1e-6);
    }
    bd_graph_destroy(g);
  }
}

static void test_fold_shape_chain(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 2, 3, 4, 4);
  int sh = node1(g, BD_OP_SHAPE, x, -1, "shape");
  int64_t zero = 0, one = 1, m1 = -1, ax = 0;
  int ga = node1(g, BD_OP_GATHER, sh, ci64(g, "i0", 0, NULL, &zero), "g");
  int un = node1(g, BD_OP_UNSQUEEZE, ga, -1, "u");
  g->nodes[g->n_nodes - 1].p.unsq.n = 1;
  g->nodes[g->n_nodes - 1].p.unsq.axes[0] = (int)ax;
  int cc = act(g, "cat");
  int cin[2] = {un, ci64(g, "m1", 1, &one, &m1)};
  int ni = bd_graph_add_node(g, BD_OP_CONCAT, "cat", 2, cin, 1, &cc);
  g->nodes[ni].p.concat.axis = 0;
  int re = node1(g, BD_OP_RESHAPE, x, cc, "re");
  mark_out(g, re);
  bd_compile_report rep;
  assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
  assert_int_equal(rep.folded_constants, 4);
  assert_int_equal(g->n_nodes, 1);
  assert_int_equal(g->nodes[0].op, BD_OP_RESHAPE);
  const bd_value *t = &g->values[g->nodes[0].in[1]];
  assert_non_null(t->data);
  assert_int_equal(t->dtype, BD_DT_I64);
  assert_int_equal(((int64_t *)t->data)[0], 2);
  assert_int_equal(((int64_t *)t->data)[1], -1);
  const bd_value *o = &g->values[g->outputs[0]];
  assert_int_equal(o->rank, 2);
  assert_int_equal(o->dims[0], 2);
  assert_int_equal(o->dims[1], 48);
  /* the folded B0 target re-batches */
  bd_plan *p;
  assert_int_equal(bd_plan_new(g, 7, &p, &err), BD_OK);
  assert_int_equal(p->dims[g->outputs[0]][0], 7);
  assert_int_equal(p->dims[g->outputs[0]][1], 48);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
}

static void test_rebatch(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 2, 3, 4, 4);
  int64_t t1[3] = {2, 3, -1}, t2[2] = {2 * 3 * 4, 4}, three = 3, two = 2;
  int r1 = node1(g, BD_OP_RESHAPE, x, ci64(g, "t1", 1, &three, t1), "r1"); /* [2,3,16] */
  int r2 = node1(g, BD_OP_RESHAPE, r1, ci64(g, "t2", 1, &two, t2), "r2");  /* [24,4] */
  float rows[2 * 4];
  for (int i = 0; i < 4; i++) rows[i] = rows[4 + i] = (float)i;
  int64_t cd[3] = {2, 1, 4};
  int r3 = node1(g, BD_OP_RESHAPE, r2, ci64(g, "t3", 1, &three, (int64_t[]){2, 12, 4}), "r3");
  int ad = node1(g, BD_OP_ADD, r3, cf32(g, "rows", 3, cd, rows), "ad");
  mark_out(g, ad);
  assert_int_equal(bd_compile(g, NULL, NULL, &err), BD_OK);
  for (int n = 1; n <= 9; n += 4) {
    bd_plan *p;
    assert_int_equal(bd_plan_new(g, n, &p, &err), BD_OK);
    int o = g->outputs[0];
    assert_int_equal(p->rank[o], 3);
    assert_int_equal(p->dims[o][0], n);
    assert_int_equal(p->dims[o][1], 12);
    assert_int_equal(p->dims[o][2], 4);
    bd_plan_destroy(p);
  }
  /* distinct constant rows cannot be re-batched */
  for (int v = 0; v < g->n_values; v++)
    if (g->values[v].data && g->values[v].dtype == BD_DT_F32) ((float *)g->values[v].data)[5] = 9;
  bd_plan *p = NULL;
  assert_int_equal(bd_plan_new(g, 3, &p, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "batch rows"));
  assert_int_equal(bd_plan_new(g, 2, &p, &err), BD_OK);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
}

static void test_dead_and_noop(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 1, 3, 4, 4);
  int id = node1(g, BD_OP_IDENTITY, x, -1, "id");
  node1(g, BD_OP_SIGMOID, id, -1, "unused");
  int r = node1(g, BD_OP_RELU, id, -1, "r");
  int e = node1(g, BD_OP_EXP, r, -1, "e");
  int ca = node1(g, BD_OP_CAST, e, -1, "cast");
  g->nodes[g->n_nodes - 1].p.cast.to = BD_DT_F32;
  mark_out(g, ca);
  bd_compile_report rep;
  assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
  assert_int_equal(g->n_nodes, 2);
  assert_int_equal(rep.removed, 3);
  assert_int_equal(g->nodes[0].op, BD_OP_RELU);
  assert_int_equal(g->nodes[0].in[0], g->inputs[0]);
  assert_int_equal(g->nodes[1].op, BD_OP_EXP);
  assert_int_equal(g->nodes[1].out[0], g->outputs[0]);
  assert_string_equal(g->values[g->outputs[0]].name, "cast");
  bd_graph_destroy(g);
}

static void test_fusions(void **state) {
  (void)state;
  bd_graph *g;
  bd_err err = {0};
  float w[4 * 4], b[4] = {0};
  for (int i = 0; i < 16; i++) w[i] = 0.1f * (float)i;
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  int x = input4(g, 1, 4, 3, 3);
  int64_t wd[4] = {4, 4, 1, 1}, db = 4;
  int wv = cf32(g, "w", 4, wd, w), bv = cf32(g, "b", 1, &db, b);
  /* conv -> x*sigmoid(x) */
  int c1 = conv(g, x, wv, bv, 1, 0, 1, "c1");
  int s1 = node1(g, BD_OP_SIGMOID, c1, -1, "s1");
  int m1 = node1(g, BD_OP_MUL, s1, c1, "m1");
  /* conv -> Add(r) -> Relu: PRE_ACT */
  int c2 = conv(g, m1, wv, bv, 1, 0, 1, "c2");
  int a2 = node1(g, BD_OP_ADD, m1, c2, "a2");
  int r2 = node1(g, BD_OP_RELU, a2, -1, "r2");
  /* conv -> Relu -> Add(r): POST_ACT */
  int c3 = conv(g, r2, wv, bv, 1, 0, 1, "c3");
  int r3 = node1(g, BD_OP_RELU, c3, -1, "r3");
  int a3 = node1(g, BD_OP_ADD, r3, m1, "a3");
  /* standalone SiLU */
  int s4 = node1(g, BD_OP_SIGMOID, a3, -1, "s4");
  int m4 = node1(g, BD_OP_MUL, a3, s4, "m4");
  mark_out(g, m4);
  bd_compile_report rep;
  assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
  assert_int_equal(g->n_nodes, 4);
  assert_int_equal(g->nodes[0].p.conv.act, BD_ACT_SILU);
  assert_int_equal(g->nodes[0].p.conv.res, BD_RES_NONE);
  assert_int_equal(g->nodes[1].p.conv.act, BD_ACT_RELU);
  assert_int_equal(g->nodes[1].p.conv.res, BD_RES_PRE_ACT);
  assert_int_equal(g->nodes[1].in[3], g->nodes[0].out[0]);
  assert_int_equal(g->nodes[2].p.conv.act, BD_ACT_RELU);
  assert_int_equal(g->nodes[2].p.conv.res, BD_RES_POST_ACT);
  assert_int_equal(g->nodes[2].in[3], g->nodes[0].out[0]);
  assert_int_equal(g->nodes[3].op, BD_OP_SILU);
  assert_int_equal(rep.fused_residual, 2);
  assert_int_equal(rep.fused_act, 4);
  /* memory plan: arena offsets 64-aligned; values alive together never overlap */
  bd_plan *p;
  assert_int_equal(bd_plan_new(g, 3, &p, &err), BD_OK);
  assert_true(p->arena_bytes <= p->naive_bytes);
  for (int v = 0; v < g->n_values; v++)
    if (p->offset[v] != SIZE_MAX) assert_int_equal(p->offset[v] % 64, 0);
  assert_int_equal(p->offset[g->outputs[0]], SIZE_MAX);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
  /* no_fusion keeps the activation nodes */
  assert_int_equal(bd_graph_new(&g, &err), BD_OK);
  x = input4(g, 1, 4, 3, 3);
  wv = cf32(g, "w", 4, wd, w);
  c1 = conv(g, x, wv, -1, 1, 0, 1, "c1");
  mark_out(g, node1(g, BD_OP_RELU, c1, -1, "r"));
  bd_compile_opts o = {.no_fusion = 1};
  assert_int_equal(bd_compile(g, &o, &rep, &err), BD_OK);
  assert_int_equal(g->n_nodes, 2);
  bd_graph_destroy(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bn_fold), cmocka_unit_test(test_scale_fold),     cmocka_unit_test(test_repconv),
      cmocka_unit_test(test_fold_shape_chain), cmocka_unit_test(test_rebatch),
      cmocka_unit_test(test_dead_and_noop), cmocka_unit_test(test_fusions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
