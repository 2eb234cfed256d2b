/* cpu backend: every non-conv op against naive loops written here (numpy/ONNX
 * semantics spelled out directly), on seeded random inputs, 1 vs 2 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "bd_compile.h"
#include "test_cpu_util.h"

/* ---- unary ---- */
static void test_unary(void **state) {
  (void)state;
  const bd_op ops[4] = {BD_OP_RELU, BD_OP_SIGMOID, BD_OP_SILU, BD_OP_EXP};
  int64_t d[3] = {3, 7, 5003};
  int64_t n = tu_numel(3, d);
  tu_seed(11);
  float *x = tu_randv(n, 12.f), *ref = malloc(sizeof(float) * (size_t)n);
  assert_non_null(ref);
  for (int o = 0; o < 4; o++) {
    for (int64_t i = 0; i < n; i++) {
      double v = x[i];
      ref[i] = (float)(o == 0 ? (v > 0 ? v : 0) : o == 1 ? 1 / (1 + exp(-v))
                       : o == 2 ? v / (1 + exp(-v)) : exp(v));
    }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 3, d), yv = tu_output(g, BD_DT_F32, 3, d);
    tu_node(g, ops[o], 1, &xv, yv);
    const float *ins[1] = {x};
    tu_check(g, ins, ref, 1e-5f, bd_op_name(ops[o]));
    bd_graph_destroy(g);
  }
  free(x);
  free(ref);
}

/* ---- binary broadcasting ---- */
typedef struct {
  int ra, rb, ry;
  int64_t a[4], b[4], y[4];
} bcase;

static int64_t bidx(int r, const int64_t *d, int ry, const int64_t *yi) {
  int64_t o = 0;
  for (int k = 0; k < r; k++) {
    int64_t i = d[k] == 1 ? 0 : yi[ry - r + k];
    o = o * d[k] + i;
  }
  return o;
}

static void test_binary(void **state) {
  (void)state;
  const bcase cases[] = {
      {4, 4, 4, {2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}},
      {4, 4, 4, {2, 3, 4, 5}, {1, 3, 1, 1}, {2, 3, 4, 5}},
      {4, 3, 4, {2, 3, 4, 5}, {3, 1, 1}, {2, 3, 4, 5}},
      {2, 2, 2, {4, 1}, {1, 5}, {4, 5}},
      {0, 2, 2, {0}, {2, 3}, {2, 3}},
      {3, 2, 3, {2, 1, 5}, {3, 1}, {2, 3, 5}},
      {1, 4, 4, {5}, {2, 3, 4, 5}, {2, 3, 4, 5}},
      {2, 2, 2, {3, 40000}, {3, 40000}, {3, 40000}},
      {3, 3, 3, {1, 1, 70000}, {2, 1, 1}, {2, 1, 70000}},
  };
  const bd_op ops[4] = {BD_OP_ADD, BD_OP_SUB, BD_OP_MUL, BD_OP_DIV};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const bcase *k = &cases[c];
    int64_t na = tu_numel(k->ra, k->a), nb = tu_numel(k->rb, k->b), ny = tu_numel(k->ry, k->y);
    tu_seed(20 + c);
    float *a = tu_randv(na, 3.f), *b = tu_randv(nb, 3.f), *ref = malloc(sizeof(float) * (size_t)ny);
    assert_non_null(ref);
    for (int64_t i = 0; i < nb; i++) b[i] = b[i] >= 0 ? b[i] + 0.5f : b[i] - 0.5f;
    for (int o = 0; o < 4; o++) {
      for (int64_t i = 0; i < ny; i++) {
        int64_t yi[4], t = i;
        for (int d = k->ry - 1; d >= 0; d--) {
          yi[d] = t % k->y[d];
          t /= k->y[d];
        }
        float va = a[bidx(k->ra, k->a, k->ry, yi)], vb = b[bidx(k->rb, k->b, k->ry, yi)];
        ref[i] = o == 0 ? va + vb : o == 1 ? va - vb : o == 2 ? va * vb : va / vb;
      }
      bd_graph *g = tu_graph();
      int in[2] = {tu_input(g, k->ra, k->a), tu_input(g, k->rb, k->b)};
      int yv = tu_output(g, BD_DT_F32, k->ry, k->y);
      tu_node(g, ops[o], 2, in, yv);
      const float *ins[2] = {a, b};
      char what[64];
      snprintf(what, sizeof what, "binary case %zu op %s", c, bd_op_name(ops[o]));
      tu_check(g, ins, ref, 1e-6f, what);
      bd_graph_destroy(g);
    }
    free(a);
    free(b);
    free(ref);
  }
}

/* int64 arithmetic, Concat, Reshape, Gather and Slice through Casts (as in shape code). */
static void test_int64_chain(void **state) {
  (void)state;
  int64_t d[2] = {2, 3}, cd[2] = {2, 6}, rd[1] = {12}, gd[1] = {3}, sd[1] = {4}, idx1[1] = {1};
  float a[6] = {1.9f, -2.7f, 3, 40, 5.5f, -6}, b[6] = {10, 20, 30, -4, 2, 3};
  int64_t gi[3] = {-1, 0, 5}, shp[1] = {12};
  /* a,b -> i64 (trunc) ; s = a+b ; q = a/b ; cat(s,q) axis 1 -> reshape [12] ->
   * gather [-1,0,5] ... also slice [::-3] of the reshape -> concat both -> f32 */
  bd_graph *g = tu_graph();
  int av = tu_input(g, 2, d), bv = tu_input(g, 2, d);
  int ai = tu_val(g, BD_DT_I64, 2, d), bi = tu_val(g, BD_DT_I64, 2, d);
  tu_node(g, BD_OP_CAST, 1, &av, ai)->p.cast.to = BD_DT_I64;
  tu_node(g, BD_OP_CAST, 1, &bv, bi)->p.cast.to = BD_DT_I64;
  int sv = tu_val(g, BD_DT_I64, 2, d), qv = tu_val(g, BD_DT_I64, 2, d);
  int ab[2] = {ai, bi};
  tu_node(g, BD_OP_ADD, 2, ab, sv);
  tu_node(g, BD_OP_DIV, 2, ab, qv);
  int cv = tu_val(g, BD_DT_I64, 2, cd), sq[2] = {sv, qv};
  tu_node(g, BD_OP_CONCAT, 2, sq, cv)->p.concat.axis = 1;
  int shv = tu_const(g, BD_DT_I64, 1, idx1, shp), rv = tu_val(g, BD_DT_I64, 1, rd);
  int rin[2] = {cv, shv};
  tu_node(g, BD_OP_RESHAPE, 2, rin, rv);
  int iv = tu_const(g, BD_DT_I64, 1, gd, gi), gv = tu_val(g, BD_DT_I64, 1, gd);
  int gin[2] = {rv, iv};
  tu_node(g, BD_OP_GATHER, 2, gin, gv)->p.gather.axis = 0;
  int slv = tu_val(g, BD_DT_I64, 1, sd);
  bd_node *sl = tu_node(g, BD_OP_SLICE, 1, &rv, slv);
  sl->p.slice.n = 1;
  sl->p.slice.axes[0] = 0;
  sl->p.slice.starts[0] = INT64_MAX;
  sl->p.slice.ends[0] = INT64_MIN;
  sl->p.slice.steps[0] = -3;
  int64_t od[1] = {7};
  int fin = tu_val(g, BD_DT_I64, 1, od), parts[2] = {gv, slv};
  tu_node(g, BD_OP_CONCAT, 2, parts, fin)->p.concat.axis = 0;
  int yv = tu_output(g, BD_DT_F32, 1, od);
  tu_node(g, BD_OP_CAST, 1, &fin, yv)->p.cast.to = BD_DT_F32;
  /* reference by hand: ai = {1,-2,3,40,5,-6}, bi = {10,20,30,-4,2,3}
   * s = {11,18,33,36,7,-3}, q (C truncation) = {0,0,0,-10,2,-2}
   * cat rows: [11,18,33,0,0,0],[36,7,-3,-10,2,-2] -> flat r
   * gather [-1,0,5] -> {-2, 11, 0}; r[::-3] = r[11], r[8], r[5], r[2] = {-2,-3,0,33} */
  const float ref[7] = {-2, 11, 0, -2, -3, 0, 33};
  const float *ins[2] = {a, b};
  tu_check(g, ins, ref, 0.f, "int64 chain");
  bd_graph_destroy(g);
}

/* ---- Concat (float, several axes) ---- */
static void test_concat(void **state) {
  (void)state;
  for (int axis = 0; axis < 4; axis++) {
    int64_t base[4] = {2, 3, 4, 5}, dd[3][4], yd[4];
    memcpy(yd, base, sizeof yd);
    yd[axis] = 0;
    for (int i = 0; i < 3; i++) {
      memcpy(dd[i], base, sizeof base);
      dd[i][axis] = i + 1;
      yd[axis] += i + 1;
    }
    tu_seed(40 + axis);
    float *x[3];
    for (int i = 0; i < 3; i++) x[i] = tu_randv(tu_numel(4, dd[i]), 1.f);
    int64_t ny = tu_numel(4, yd);
    float *ref = malloc(sizeof(float) * (size_t)ny);
    assert_non_null(ref);
    for (int64_t o = 0; o < ny; o++) {
      int64_t yi[4], t = o;
      for (int d = 3; d >= 0; d--) {
        yi[d] = t % yd[d];
        t /= yd[d];
      }
      int src = 0;
      int64_t pos = yi[axis];
      while (pos >= dd[src][axis]) pos -= dd[src++][axis];
      yi[axis] = pos;
      ref[o] = x[src][((yi[0] * dd[src][1] + yi[1]) * dd[src][2] + yi[2]) * dd[src][3] + yi[3]];
    }
    bd_graph *g = tu_graph();
    int in[3] = {tu_input(g, 4, dd[0]), tu_input(g, 4, dd[1]), tu_input(g, 4, dd[2])};
    int yv = tu_output(g, BD_DT_F32, 4, yd);
    tu_node(g, BD_OP_CONCAT, 3, in, yv)->p.concat.axis = axis;
    const float *ins[3] = {x[0], x[1], x[2]};
    tu_check(g, ins, ref, 0.f, "concat");
    bd_graph_destroy(g);
    for (int i = 0; i < 3; i++) free(x[i]);
    free(ref);
  }
}

/* a batch-1 channel concat large enough to be split into pieces across threads */
static void test_concat_large(void **state) {
  (void)state;
  int64_t d0[4] = {1, 40, 33, 65}, d1[4] = {1, 23, 33, 65}, yd[4] = {1, 63, 33, 65};
  tu_seed(49);
  int64_t n0 = tu_numel(4, d0), n1 = tu_numel(4, d1);
  float *a = tu_randv(n0, 1.f), *b = tu_randv(n1, 1.f);
  float *ref = malloc(sizeof(float) * (size_t)(n0 + n1));
  assert_non_null(ref);
  for (int64_t i = 0; i < n0; i++) ref[i] = a[i];
  for (int64_t i = 0; i < n1; i++) ref[n0 + i] = b[i];
  bd_graph *g = tu_graph();
  int in[2] = {tu_input(g, 4, d0), tu_input(g, 4, d1)};
  int yv = tu_output(g, BD_DT_F32, 4, yd);
  tu_node(g, BD_OP_CONCAT, 2, in, yv)->p.concat.axis = 1;
  const float *ins[2] = {a, b};
  tu_check(g, ins, ref, 0.f, "concat large");
  bd_graph_destroy(g);
  free(a);
  free(b);
  free(ref);
}

/* ---- MaxPool ---- */
/* Brute-force max pool, stride 1, "same" -inf padding (k/2 each side), one plane. */
static void pool_same_ref(const float *x, int H, int W, int kh, int kw, float *y) {
  for (int oh = 0; oh < H; oh++)
    for (int ow = 0; ow < W; ow++) {
      float m = -INFINITY;
      for (int i = -kh / 2; i <= kh / 2; i++)
        for (int j = -kw / 2; j <= kw / 2; j++) {
          int ih = oh + i, iw = ow + j;
          if (ih >= 0 && ih < H && iw >= 0 && iw < W && x[ih * W + iw] > m) m = x[ih * W + iw];
        }
      y[oh * W + ow] = m;
    }
}

/* An SPP (pools of one tensor, kernels 5, 9, 13 and a rectangular 9x7 with a 5x3) into a
 * Concat: bd_compile rewrites the larger pools over the smaller ones' outputs
 * (chain_pools), and the result is still every window's exact maximum (borders
 * included), against the brute-force pools of the input. */
static void test_spp_chained(void **state) {
  (void)state;
  enum { N = 2, C = 3, H = 13, W = 12, P = 5 };
  const int ks[P][2] = {{5, 5}, {9, 9}, {13, 13}, {5, 3}, {9, 7}};
  int64_t xd[4] = {N, C, H, W}, pd[4] = {N, C, H, W}, yd[4] = {N, C * P, H, W};
  tu_seed(77);
  float *x = tu_randv(tu_numel(4, xd), 5.f);
  float *ref = malloc(sizeof(float) * (size_t)tu_numel(4, yd));
  assert_non_null(ref);
  for (int n = 0; n < N; n++)
    for (int k = 0; k < P; k++)
      for (int c = 0; c < C; c++)
        pool_same_ref(x + ((size_t)n * C + c) * H * W, H, W, ks[k][0], ks[k][1],
                      ref + (((size_t)n * P + k) * C + c) * H * W);
  bd_graph *g = tu_graph();
  int xv = tu_input(g, 4, xd), pv[P];
  for (int k = 0; k < P; k++) {
    pv[k] = tu_val(g, BD_DT_F32, 4, pd);
    tu_node(g, BD_OP_MAXPOOL, 1, &xv, pv[k])->p.pool =
        (bd_pool_params){.kh = ks[k][0], .kw = ks[k][1], .sh = 1, .sw = 1,
                         .pad_t = ks[k][0] / 2, .pad_l = ks[k][1] / 2,
                         .pad_b = ks[k][0] / 2, .pad_r = ks[k][1] / 2};
  }
  int yv = tu_output(g, BD_DT_F32, 4, yd);
  tu_node(g, BD_OP_CONCAT, P, pv, yv)->p.concat.axis = 1;
  const float *ins[1] = {x};
  tu_check(g, ins, ref, 0.f, "spp as written");
  bd_compile_report rep;
  bd_err err;
  assert_int_equal(bd_compile(g, NULL, &rep, &err), BD_OK);
  /* 9x9 -> 5x5 over the 5x5's output, 13x13 -> 5x5 over the 9x9's, 9x7 -> 5x3 over the
   * 5x5's (the largest earlier pool no larger on either axis); 5x3 stays. */
  assert_int_equal(rep.chained_pools, 3);
  int n5 = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == BD_OP_MAXPOOL) {
      const bd_pool_params *q = &g->nodes[i].p.pool;
      assert_true(q->kh <= 5 && q->kw <= 5);
      assert_int_equal(q->pad_t, q->kh / 2);
      assert_int_equal(q->pad_r, q->kw / 2);
      n5 += q->kh == 5 && q->kw == 5;
    }
  assert_true(n5 >= 3);
  tu_check(g, ins, ref, 0.f, "spp chained");
  bd_graph_destroy(g);
  free(x);
  free(ref);
}

static void test_maxpool(void **state) {
  (void)state;
  const int cs[][8] = {/* kh kw sh sw pt pl pb pr */
                       {3, 3, 2, 2, 1, 1, 1, 1},
                       {5, 5, 1, 1, 2, 2, 2, 2},
                       {2, 2, 2, 2, 0, 0, 0, 0},
                       {3, 2, 2, 1, 0, 1, 2, 0},
                       {9, 9, 1, 1, 4, 4, 4, 4}};
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    const int *k = cs[c];
    int H = 13, W = 12;
    int OH = (H + k[4] + k[6] - k[0]) / k[2] + 1, OW = (W + k[5] + k[7] - k[1]) / k[3] + 1;
    int64_t xd[4] = {2, 3, H, W}, yd[4] = {2, 3, OH, OW};
    tu_seed(50 + c);
    float *x = tu_randv(tu_numel(4, xd), 5.f);
    float *ref = malloc(sizeof(float) * (size_t)tu_numel(4, yd));
    assert_non_null(ref);
    for (int pl = 0; pl < 6; pl++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          float m = -INFINITY;
          for (int i = 0; i < k[0]; i++)
            for (int j = 0; j < k[1]; j++) {
              int ih = oh * k[2] - k[4] + i, iw = ow * k[3] - k[5] + j;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W && x[(pl * H + ih) * W + iw] > m)
                m = x[(pl * H + ih) * W + iw];
            }
          ref[(pl * OH + oh) * OW + ow] = m;
        }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd), yv = tu_output(g, BD_DT_F32, 4, yd);
    tu_node(g, BD_OP_MAXPOOL, 1, &xv, yv)->p.pool =
        (bd_pool_params){.kh = k[0], .kw = k[1], .sh = k[2], .sw = k[3], .pad_t = k[4],
                         .pad_l = k[5], .pad_b = k[6], .pad_r = k[7]};
    const float *ins[1] = {x};
    tu_check(g, ins, ref, 0.f, "maxpool");
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

/* ---- Resize: ONNX spec formulas, computed in double ---- */
static double rz_coord(bd_coord_mode m, int o, double scale, int in, int out) {
  if (m == BD_COORD_HALF_PIXEL) return (o + 0.5) / scale - 0.5;
  if (m == BD_COORD_PYTORCH_HALF_PIXEL) return out > 1 ? (o + 0.5) / scale - 0.5 : 0.0;
  if (m == BD_COORD_ALIGN_CORNERS) return out == 1 ? 0.0 : o * (in - 1.0) / (out - 1.0);
  return o / scale;
}
static int rz_near(bd_nearest_mode m, double x, int in) {
  double f = floor(x);
  long i;
  if (m == BD_NEAREST_FLOOR) i = (long)f;
  else if (m == BD_NEAREST_CEIL) i = (long)ceil(x);
  else if (x - f == 0.5) i = m == BD_NEAREST_ROUND_PREFER_CEIL ? (long)f + 1 : (long)f;
  else i = (long)floor(x + 0.5);
  return i < 0 ? 0 : i >= in ? in - 1 : (int)i;
}

static void test_resize(void **state) {
  (void)state;
  struct { bd_resize_mode mode; bd_coord_mode coord; bd_nearest_mode near; int H, W, OH, OW; float sh, sw; } cs[] = {
      {BD_RESIZE_NEAREST, BD_COORD_ASYMMETRIC, BD_NEAREST_FLOOR, 5, 7, 10, 14, 2, 2},
      {BD_RESIZE_NEAREST, BD_COORD_HALF_PIXEL, BD_NEAREST_ROUND_PREFER_FLOOR, 4, 6, 6, 9, 1.5f, 1.5f},
      {BD_RESIZE_NEAREST, BD_COORD_HALF_PIXEL, BD_NEAREST_ROUND_PREFER_CEIL, 4, 6, 6, 9, 1.5f, 1.5f},
      {BD_RESIZE_NEAREST, BD_COORD_ALIGN_CORNERS, BD_NEAREST_ROUND_PREFER_CEIL, 5, 5, 8, 3, 0, 0},
      {BD_RESIZE_NEAREST, BD_COORD_ASYMMETRIC, BD_NEAREST_CEIL, 6, 6, 4, 9, 0, 0},
      {BD_RESIZE_NEAREST, BD_COORD_PYTORCH_HALF_PIXEL, BD_NEAREST_FLOOR, 6, 6, 1, 3, 0, 0},
      {BD_RESIZE_LINEAR, BD_COORD_HALF_PIXEL, BD_NEAREST_FLOOR, 5, 7, 10, 14, 2, 2},
      {BD_RESIZE_LINEAR, BD_COORD_ASYMMETRIC, BD_NEAREST_FLOOR, 5, 7, 8, 11, 1.6f, 1.6f},
      {BD_RESIZE_LINEAR, BD_COORD_ALIGN_CORNERS, BD_NEAREST_FLOOR, 5, 7, 9, 4, 0, 0},
      {BD_RESIZE_LINEAR, BD_COORD_PYTORCH_HALF_PIXEL, BD_NEAREST_FLOOR, 8, 6, 1, 3, 0.125f, 0.5f},
      {BD_RESIZE_LINEAR, BD_COORD_HALF_PIXEL, BD_NEAREST_FLOOR, 8, 9, 4, 6, 0.5f, 0.6667f},
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    int H = cs[c].H, W = cs[c].W, OH = cs[c].OH, OW = cs[c].OW;
    double sh = cs[c].sh > 0 ? cs[c].sh : (double)OH / H, sw = cs[c].sw > 0 ? cs[c].sw : (double)OW / W;
    int64_t xd[4] = {1, 2, H, W}, yd[4] = {1, 2, OH, OW};
    tu_seed(60 + c);
    float *x = tu_randv(tu_numel(4, xd), 1.f);
    float *ref = malloc(sizeof(float) * (size_t)tu_numel(4, yd));
    assert_non_null(ref);
    for (int pl = 0; pl < 2; pl++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double yc = rz_coord(cs[c].coord, oh, sh, H, OH), xc = rz_coord(cs[c].coord, ow, sw, W, OW);
          const float *p = x + pl * H * W;
          double v;
          if (cs[c].mode == BD_RESIZE_NEAREST) {
            v = p[rz_near(cs[c].near, yc, H) * W + rz_near(cs[c].near, xc, W)];
          } else {
            yc = yc < 0 ? 0 : yc > H - 1 ? H - 1 : yc;
            xc = xc < 0 ? 0 : xc > W - 1 ? W - 1 : xc;
            int y0 = (int)floor(yc), x0 = (int)floor(xc);
            int y1 = y0 + 1 < H ? y0 + 1 : H - 1, x1 = x0 + 1 < W ? x0 + 1 : W - 1;
            double ly = yc - y0, lx = xc - x0;
            v = (1 - ly) * ((1 - lx) * p[y0 * W + x0] + lx * p[y0 * W + x1]) +
                ly * ((1 - lx) * p[y1 * W + x0] + lx * p[y1 * W + x1]);
          }
          ref[(pl * OH + oh) * OW + ow] = (float)v;
        }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd), yv = tu_output(g, BD_DT_F32, 4, yd);
    tu_node(g, BD_OP_RESIZE, 1, &xv, yv)->p.resize =
        (bd_resize_params){.mode = cs[c].mode, .coord = cs[c].coord, .nearest = cs[c].near,
                           .scale_h = cs[c].sh, .scale_w = cs[c].sw};
    const float *ins[1] = {x};
    char what[32];
    snprintf(what, sizeof what, "resize case %zu", c);
    tu_check(g, ins, ref, 1e-5f, what);
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

/* ---- 1x1 convs of a Concat with an upsampled piece ----
 * I [N, C, H, W]; up = Resize(MaxPool2x2(I)) x2 (nearest, or linear half-pixel); cat =
 * Concat(I, up) or Concat(I, up, Sigmoid(I)); out = Relu(Conv1x1(cat, Wa, ba)) *
 * Conv1x1(cat, Wb). bd_compile splits each conv into one at the low resolution plus its
 * Resize, added before the activation (split_upsampled_concats); a third reader that is a
 * 3x3 conv keeps the Concat. Against the graph's formula evaluated here, as written and
 * compiled. */
static void test_upsampled_concat_split(void **state) {
  (void)state;
  enum { N = 2, C = 8, H = 6, W = 6, M = 4, L = 3 };
  for (int variant = 0; variant < 4; variant++) {
    /* 0: nearest, two pieces; 1: linear, two; 2: nearest, three (up in the middle);
     * 3: as 0 with a 3x3 reader too (no rewrite) */
    const int three = variant == 2, linear = variant == 1, extra = variant == 3;
    const int CT = three ? 3 * C : 2 * C;
    int64_t xd[4] = {N, C, H, W}, pd[4] = {N, C, L, L}, cd[4] = {N, CT, H, W},
            od[4] = {N, M, H, W}, wd[4] = {M, CT, 1, 1}, w3d[4] = {M, CT, 3, 3}, bd[1] = {M};
    tu_seed(700 + variant);
    float *x = tu_randv(N * C * H * W, 1.f), *wa = tu_randv(M * CT, 0.5f),
          *wb = tu_randv(M * CT, 0.5f), *ba = tu_randv(M, 0.5f), *w3 = tu_randv(M * CT * 9, 0.2f);
    double *cat = malloc(sizeof(double) * N * CT * H * W);
    float *ref = malloc(sizeof(float) * N * M * H * W);
    assert_true(cat && ref);
    for (int n = 0; n < N; n++) /* cat as the graph computes it */
      for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) {
            const float *xc = x + ((int64_t)n * C + c) * H * W;
            double pool[L * L], v;
            for (int i = 0; i < L * L; i++) {
              const int ph = i / L * 2, pw = i % L * 2;
              pool[i] = fmax(fmax(xc[ph * W + pw], xc[ph * W + pw + 1]),
                             fmax(xc[(ph + 1) * W + pw], xc[(ph + 1) * W + pw + 1]));
            }
            if (!linear) {
              v = pool[h / 2 * L + w / 2];
            } else {
              double yc = (h + 0.5) / 2 - 0.5, xq = (w + 0.5) / 2 - 0.5;
              yc = yc < 0 ? 0 : yc > L - 1 ? L - 1 : yc;
              xq = xq < 0 ? 0 : xq > L - 1 ? L - 1 : xq;
              const int y0 = (int)yc, x0 = (int)xq, y1 = y0 + 1 < L ? y0 + 1 : L - 1,
                        x1 = x0 + 1 < L ? x0 + 1 : L - 1;
              const double ly = yc - y0, lx = xq - x0;
              v = (1 - ly) * ((1 - lx) * pool[y0 * L + x0] + lx * pool[y0 * L + x1]) +
                  ly * ((1 - lx) * pool[y1 * L + x0] + lx * pool[y1 * L + x1]);
            }
            const int64_t px = (int64_t)h * W + w;
            cat[((int64_t)n * CT + c) * H * W + px] = xc[px];
            cat[((int64_t)n * CT + C + c) * H * W + px] = v;
            if (three) cat[((int64_t)n * CT + 2 * C + c) * H * W + px] = 1 / (1 + exp(-xc[px]));
          }
    for (int n = 0; n < N; n++)
      for (int m = 0; m < M; m++)
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) {
            double a = ba[m], b = 0, t = 0;
            for (int c = 0; c < CT; c++) {
              const double v = cat[((int64_t)n * CT + c) * H * W + h * W + w];
              a += wa[m * CT + c] * v;
              b += wb[m * CT + c] * v;
              for (int i = 0; extra && i < 9; i++) {
                const int yy = h + i / 3 - 1, xx = w + i % 3 - 1;
                if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                  t += w3[(m * CT + c) * 9 + i] * cat[((int64_t)n * CT + c) * H * W + yy * W + xx];
              }
            }
            const double o = (a > 0 ? a : 0) * b;
            ref[(((int64_t)n * M + m) * H + h) * W + w] = (float)(extra ? o * t : o);
          }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd), yv = tu_output(g, BD_DT_F32, 4, od);
    int pv = tu_val(g, BD_DT_F32, 4, pd), uv = tu_val(g, BD_DT_F32, 4, xd);
    int cv = tu_val(g, BD_DT_F32, 4, cd), sv = tu_val(g, BD_DT_F32, 4, xd);
    bd_node *nd = tu_node(g, BD_OP_MAXPOOL, 1, &xv, pv);
    nd->p.pool = (bd_pool_params){.kh = 2, .kw = 2, .sh = 2, .sw = 2};
    tu_node(g, BD_OP_RESIZE, 1, &pv, uv)->p.resize = (bd_resize_params){
        .mode = linear ? BD_RESIZE_LINEAR : BD_RESIZE_NEAREST,
        .coord = linear ? BD_COORD_HALF_PIXEL : BD_COORD_ASYMMETRIC, .scale_h = 2, .scale_w = 2};
    if (three) tu_node(g, BD_OP_SIGMOID, 1, &xv, sv);
    int pieces[3] = {xv, uv, sv};
    tu_node(g, BD_OP_CONCAT, three ? 3 : 2, pieces, cv)->p.concat.axis = 1;
    int av = tu_val(g, BD_DT_F32, 4, od), rv = tu_val(g, BD_DT_F32, 4, od);
    int bv = tu_val(g, BD_DT_F32, 4, od), mv = extra ? tu_val(g, BD_DT_F32, 4, od) : yv;
    int ain[3] = {cv, tu_const(g, BD_DT_F32, 4, wd, wa), tu_const(g, BD_DT_F32, 1, bd, ba)};
    nd = tu_node(g, BD_OP_CONV, 3, ain, av);
    nd->p.conv = (bd_conv_params){.kh = 1, .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .group = 1};
    tu_node(g, BD_OP_RELU, 1, &av, rv);
    int bin[2] = {cv, tu_const(g, BD_DT_F32, 4, wd, wb)};
    nd = tu_node(g, BD_OP_CONV, 2, bin, bv);
    nd->p.conv = (bd_conv_params){.kh = 1, .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .group = 1};
    int min[2] = {rv, bv};
    tu_node(g, BD_OP_MUL, 2, min, mv);
    if (extra) {
      int tv = tu_val(g, BD_DT_F32, 4, od), tin[2] = {cv, tu_const(g, BD_DT_F32, 4, w3d, w3)};
      nd = tu_node(g, BD_OP_CONV, 2, tin, tv);
      nd->p.conv = (bd_conv_params){.kh = 3, .kw = 3, .sh = 1, .sw = 1, .dh = 1, .dw = 1,
                                    .pad_t = 1, .pad_l = 1, .pad_b = 1, .pad_r = 1, .group = 1};
      int xin[2] = {mv, tv};
      tu_node(g, BD_OP_MUL, 2, xin, yv);
    }
    const float *ins[1] = {x};
    char what[64];
    snprintf(what, sizeof what, "upsampled concat variant %d as written", variant);
    tu_check(g, ins, ref, 1e-4f, what);
    bd_compile_report rep;
    bd_err err;
    if (bd_compile(g, NULL, &rep, &err)) fail_msg("compile: %s", err.msg);
    assert_int_equal(rep.split_upsampled, extra ? 0 : 1);
    int resizes = 0, concats = 0, convs = 0, low = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      const bd_node *q = &g->nodes[i];
      resizes += q->op == BD_OP_RESIZE;
      concats += q->op == BD_OP_CONCAT;
      if (q->op != BD_OP_CONV) continue;
      convs++;
      if (g->values[q->in[0]].dims[2] == L) { /* at the low resolution, reading the pool */
        low++;
        assert_int_equal(g->nodes[g->values[q->in[0]].producer].op, BD_OP_MAXPOOL);
        assert_int_equal(q->p.conv.act, BD_ACT_NONE);
      } else if (!extra) { /* reading I (or the rest's Concat), the Resize before the act */
        assert_int_equal(g->values[q->in[0]].dims[1], CT - C);
        assert_int_equal(q->p.conv.res, BD_RES_PRE_ACT);
        assert_int_equal(g->nodes[g->values[q->in[3]].producer].op, BD_OP_RESIZE);
      }
    }
    assert_int_equal(convs, extra ? 3 : 4);
    assert_int_equal(low, extra ? 0 : 2);
    assert_int_equal(resizes, extra ? 1 : 2);  /* one per conv: the pool's went */
    assert_int_equal(concats, three || extra ? 1 : 0);
    snprintf(what, sizeof what, "upsampled concat variant %d compiled", variant);
    tu_check(g, ins, ref, 1e-4f, what);
    bd_graph_destroy(g);
    free(x), free(wa), free(wb), free(ba), free(w3), free(cat), free(ref);
  }
}

/* ---- Transpose ---- */
static void test_transpose(void **state) {
  (void)state;
  struct { int r; int64_t d[6]; int perm[6]; int n; } cs[] = {
      {4, {2, 3, 4, 5}, {0, 2, 3, 1}, 4},
      {3, {3, 4, 5}, {2, 0, 1}, 3},
      {6, {2, 3, 1, 2, 3, 2}, {5, 3, 0, 4, 2, 1}, 6},
      {3, {3, 4, 5}, {0}, 0}, /* default: reversed */
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    int r = cs[c].r, perm[6];
    for (int i = 0; i < r; i++) perm[i] = cs[c].n ? cs[c].perm[i] : r - 1 - i;
    int64_t yd[6], xs[6], n = tu_numel(r, cs[c].d);
    for (int i = 0; i < r; i++) yd[i] = cs[c].d[perm[i]];
    xs[r - 1] = 1;
    for (int i = r - 2; i >= 0; i--) xs[i] = xs[i + 1] * cs[c].d[i + 1];
    tu_seed(70 + c);
    float *x = tu_randv(n, 1.f), *ref = malloc(sizeof(float) * (size_t)n);
    assert_non_null(ref);
    for (int64_t o = 0; o < n; o++) {
      int64_t t = o, off = 0;
      for (int i = r - 1; i >= 0; i--) {
        off += (t % yd[i]) * xs[perm[i]];
        t /= yd[i];
      }
      ref[o] = x[off];
    }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, r, cs[c].d), yv = tu_output(g, BD_DT_F32, r, yd);
    bd_node *nd = tu_node(g, BD_OP_TRANSPOSE, 1, &xv, yv);
    nd->p.transpose.n = cs[c].n;
    memcpy(nd->p.transpose.perm, cs[c].perm, sizeof cs[c].perm);
    const float *ins[1] = {x};
    tu_check(g, ins, ref, 0.f, "transpose");
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

/* ---- Softmax: opset 11 coerced-2D and opset 13 single axis ---- */
static void test_softmax(void **state) {
  (void)state;
  struct { int axis, opset; } cs[] = {{1, 11}, {1, 13}, {-1, 13}, {0, 11}, {2, 11}, {0, 13}};
  int64_t d[3] = {2, 3, 4};
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    int axis = cs[c].axis < 0 ? cs[c].axis + 3 : cs[c].axis;
    tu_seed(80 + c);
    float *x = tu_randv(24, 4.f), *ref = malloc(sizeof(float) * 24);
    assert_non_null(ref);
    int64_t outer = 1, len = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= d[i];
    if (cs[c].opset < 13) {
      for (int i = axis; i < 3; i++) len *= d[i];
    } else {
      len = d[axis];
      for (int i = axis + 1; i < 3; i++) inner *= d[i];
    }
    for (int64_t o = 0; o < outer; o++)
      for (int64_t in = 0; in < inner; in++) {
        double s = 0;
        for (int64_t i = 0; i < len; i++) s += exp(x[(o * len + i) * inner + in]);
        for (int64_t i = 0; i < len; i++)
          ref[(o * len + i) * inner + in] = (float)(exp(x[(o * len + i) * inner + in]) / s);
      }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 3, d), yv = tu_output(g, BD_DT_F32, 3, d);
    bd_node *nd = tu_node(g, BD_OP_SOFTMAX, 1, &xv, yv);
    nd->p.softmax.axis = cs[c].axis;
    nd->p.softmax.opset = cs[c].opset;
    const float *ins[1] = {x};
    tu_check(g, ins, ref, 1e-5f, "softmax");
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

/* ---- DFL integral (bd_compile's fuse_dfl) ----
 * A two-level DAMO-like box head built by hand: per level Reshape [N,4,R,H,W], the
 * exporter's Transpose - Softmax(last) - Transpose, Reshape [N,4,R,HW], Transpose
 * [N,HW,4,R]; the levels concatenated, Reshape [N*A*4,R], MatMul by the bins' constant,
 * Reshape [N,A,4]. Against the integral computed here from the input: as written, then
 * compiled (Softmax + MatMul -> SoftmaxDot, moves on size-1 bins), for a [R,1] and an
 * [R] constant; and left alone when a moved value has a second reader. */
static int dfl_head(bd_graph *g, int xv, int lvl, int64_t h, int64_t w, int64_t R) {
  const int64_t N = 2;
  int64_t s5[5] = {N, 4, R, h, w}, t5[5] = {N, 4, h, w, R}, s4[4] = {N, 4, R, h * w},
          y4[4] = {N, h * w, 4, R}, five = 5, four = 4;
  int64_t shp1[5] = {N, 4, R, h, w}, shp2[4] = {N, 4, R, -1};
  int c1 = tu_const(g, BD_DT_I64, 1, &five, shp1), c2 = tu_const(g, BD_DT_I64, 1, &four, shp2);
  int a = tu_val(g, BD_DT_F32, 5, s5), b = tu_val(g, BD_DT_F32, 5, t5),
      c = tu_val(g, BD_DT_F32, 5, t5), d = tu_val(g, BD_DT_F32, 5, s5),
      e = tu_val(g, BD_DT_F32, 4, s4), f = tu_val(g, BD_DT_F32, 4, y4);
  int in[2] = {xv, c1};
  tu_node(g, BD_OP_RESHAPE, 2, in, a);
  bd_node *nd = tu_node(g, BD_OP_TRANSPOSE, 1, &a, b);
  nd->p.transpose.n = 5;
  memcpy(nd->p.transpose.perm, (int[5]){0, 1, 3, 4, 2}, sizeof(int) * 5);
  nd = tu_node(g, BD_OP_SOFTMAX, 1, &b, c);
  nd->p.softmax.axis = -1, nd->p.softmax.opset = lvl ? 11 : 13;
  nd = tu_node(g, BD_OP_TRANSPOSE, 1, &c, d);
  nd->p.transpose.n = 5;
  memcpy(nd->p.transpose.perm, (int[5]){0, 1, 4, 2, 3}, sizeof(int) * 5);
  in[0] = d, in[1] = c2;
  tu_node(g, BD_OP_RESHAPE, 2, in, e);
  nd = tu_node(g, BD_OP_TRANSPOSE, 1, &e, f);
  nd->p.transpose.n = 4;
  memcpy(nd->p.transpose.perm, (int[4]){0, 3, 1, 2}, sizeof(int) * 4);
  return f;
}

/* SoftmaxDot alone with the bins strided by 40 positions (2 whole groups of 16 and a
 * partial one on the vector path) and by 7 (the scalar path), against double loops. */
static void test_softmax_dot_direct(void **state) {
  (void)state;
  const int64_t inners[2] = {40, 7};
  for (int t = 0; t < 2; t++) {
    const int64_t N = 2, J = 4, R = 17, I = inners[t];
    int64_t xd[4] = {N, J, R, I}, yd[4] = {N, J, 1, I}, wd[1] = {R};
    tu_seed(77 + (uint64_t)t);
    float *x = tu_randv(tu_numel(4, xd), 6.f), w[17], *ref = malloc(sizeof(float) * N * J * I);
    assert_non_null(ref);
    for (int k = 0; k < R; k++) w[k] = (float)k;
    x[5 * I + 3] = 80.f; /* one large logit: the max subtraction matters */
    for (int64_t o = 0; o < N * J; o++)
      for (int64_t i = 0; i < I; i++) {
        double m = -INFINITY, sum = 0, dot = 0;
        for (int k = 0; k < R; k++) m = fmax(m, x[(o * R + k) * I + i]);
        for (int k = 0; k < R; k++) {
          double e = exp(x[(o * R + k) * I + i] - m);
          sum += e, dot += e * w[k];
        }
        ref[o * I + i] = (float)(dot / sum);
      }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd), wv = tu_const(g, BD_DT_F32, 1, wd, w);
    int yv = tu_output(g, BD_DT_F32, 4, yd), in[2] = {xv, wv};
    tu_node(g, BD_OP_SOFTMAX_DOT, 2, in, yv)->p.softmax.axis = 2;
    const float *ins[1] = {x};
    tu_check(g, ins, ref, 1e-5f, t == 0 ? "SoftmaxDot, 16-position groups" : "SoftmaxDot, scalar");
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

static void test_dfl_fused(void **state) {
  (void)state;
  enum { N = 2, R = 5, H = 4, W = 3, H2 = 2 };
  const int64_t A = H * W + H2 * W;
  int64_t xd[4] = {N, 4 * R, H, W}, x2d[4] = {N, 4 * R, H2, W};
  tu_seed(123);
  float *x = tu_randv(tu_numel(4, xd), 3.f), pw[R], *ref = malloc(sizeof(float) * N * A * 4);
  assert_non_null(ref);
  for (int k = 0; k < R; k++) pw[k] = 0.5f * (float)k + 0.25f * (float)(k % 2);
  for (int n = 0; n < N; n++)
    for (int64_t a = 0; a < A; a++)
      for (int j = 0; j < 4; j++) {
        /* level 1 is the first H2 rows of the input (a Slice) */
        int64_t hw = a < H * W ? a : a - H * W, y = hw / W, xx = hw % W;
        double m = -INFINITY, s = 0, dot = 0;
        for (int k = 0; k < R; k++) m = fmax(m, x[(((int64_t)n * 4 * R + j * R + k) * H + y) * W + xx]);
        for (int k = 0; k < R; k++) {
          double e = exp(x[(((int64_t)n * 4 * R + j * R + k) * H + y) * W + xx] - m);
          s += e, dot += e * pw[k];
        }
        ref[((int64_t)n * A + a) * 4 + j] = (float)(dot / s);
      }
  for (int variant = 0; variant < 3; variant++) {
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd), x2 = tu_val(g, BD_DT_F32, 4, x2d);
    bd_node *nd = tu_node(g, BD_OP_SLICE, 1, &xv, x2);
    nd->p.slice = (bd_slice_params){.n = 1, .axes = {2}, .starts = {0}, .ends = {H2}, .steps = {1}};
    int lv[2] = {dfl_head(g, xv, 0, H, W, R), dfl_head(g, x2, 1, H2, W, R)};
    int64_t cd[4] = {N, A, 4, R}, fd[2] = {N * A * 4, R}, md[2] = {N * A * 4, 1}, two = 2,
            three = 3, pd2[2] = {R, 1}, pd1[1] = {R}, od[3] = {N, A, 4};
    int64_t shp_f[2] = {N * A * 4, R}, shp_o[3] = {N, A, 4};
    int cat = variant == 2 ? tu_output(g, BD_DT_F32, 4, cd) : tu_val(g, BD_DT_F32, 4, cd);
    tu_node(g, BD_OP_CONCAT, 2, lv, cat)->p.concat.axis = 1;
    int flat = tu_val(g, BD_DT_F32, 2, fd), in[2] = {cat, tu_const(g, BD_DT_I64, 1, &two, shp_f)};
    tu_node(g, BD_OP_RESHAPE, 2, in, flat);
    int mm = tu_val(g, BD_DT_F32, variant == 1 ? 1 : 2, md);
    in[0] = flat, in[1] = variant == 1 ? tu_const(g, BD_DT_F32, 1, pd1, pw)
                                       : tu_const(g, BD_DT_F32, 2, pd2, pw);
    tu_node(g, BD_OP_MATMUL, 2, in, mm);
    int yv = tu_output(g, BD_DT_F32, 3, od);
    in[0] = mm, in[1] = tu_const(g, BD_DT_I64, 1, &three, shp_o);
    tu_node(g, BD_OP_RESHAPE, 2, in, yv);
    const float *ins[1] = {x};
    if (variant < 2) tu_check(g, ins, ref, 1e-5f, "dfl head as written");
    bd_compile_report rep;
    bd_err err;
    if (bd_compile(g, NULL, &rep, &err)) fail_msg("compile: %s", err.msg);
    int soft = 0, dots = 0, mats = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      soft += g->nodes[i].op == BD_OP_SOFTMAX;
      dots += g->nodes[i].op == BD_OP_SOFTMAX_DOT;
      mats += g->nodes[i].op == BD_OP_MATMUL;
    }
    if (variant == 2) { /* the probabilities are an output: nothing to fuse */
      assert_int_equal(rep.fused_dfl, 0);
      assert_int_equal(soft, 2);
      assert_int_equal(mats, 1);
    } else {
      assert_int_equal(rep.fused_dfl, 1);
      assert_int_equal(dots, 2);
      assert_int_equal(soft + mats, 0);
      /* the Transposes around each Softmax cancel (sink_transposes): the SoftmaxDot reads
       * the Reshape as it lies, bins on axis 2; each level keeps its last Transpose */
      int transposes = 0;
      for (int i = 0; i < g->n_nodes; i++) {
        transposes += g->nodes[i].op == BD_OP_TRANSPOSE;
        if (g->nodes[i].op == BD_OP_SOFTMAX_DOT) {
          assert_int_equal(g->nodes[i].p.softmax.axis, 2);
          const int p = g->values[g->nodes[i].in[0]].producer;
          assert_true(p >= 0 && g->nodes[p].op == BD_OP_RESHAPE);
        }
      }
      assert_int_equal(transposes, 2);
      assert_int_equal(rep.sunk_transposes, 2);
      /* the moved values downstream carry 1 bin, not R: the Concat's output */
      for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == BD_OP_CONCAT)
          assert_int_equal(bd_value_numel(&g->values[g->nodes[i].out[0]]), N * A * 4);
      tu_check(g, ins, ref, 1e-5f, "dfl head fused");
    }
    bd_graph_destroy(g);
  }
  free(x);
  free(ref);
}

/* ---- A Transpose after a Concat (YOLOX's head: levels joined on the anchor axis, then
 * moved to [N, A, C]) ----
 * bd_compile moves the Transpose onto each piece and renumbers the Concat's axis. Against
 * the Transpose of the Concat computed here, as written and compiled. Piece 0 is the
 * input, piece 1 also a graph output, piece 2 a Transpose of a Transpose (the second and
 * the sunk one cancel). */
static void test_concat_transpose_sunk(void **state) {
  (void)state;
  enum { N = 2, C = 5, A0 = 6, A1 = 3, A2 = 4 };
  const int64_t A = A0 + A1 + A2;
  int64_t xd[3] = {N, C, A0}, pd1[3] = {N, C, A1}, pd2[3] = {N, C, A2}, td2[3] = {N, A2, C},
          cd[3] = {N, C, A}, yd[3] = {N, A, C};
  tu_seed(321);
  float *x = tu_randv(N * C * A0, 1.f), *ref = malloc(sizeof(float) * N * A * C);
  assert_non_null(ref);
  /* y[n, a, c] = cat(x, exp(x[:, :, :A1]), x[:, :, :A2])[n, c, a] */
  for (int n = 0; n < N; n++)
    for (int64_t a = 0; a < A; a++)
      for (int c = 0; c < C; c++) {
        const int64_t j = a < A0 ? a : a < A0 + A1 ? a - A0 : a - A0 - A1;
        const float v = x[((int64_t)n * C + c) * A0 + j];
        ref[((int64_t)n * A + a) * C + c] = a >= A0 && a < A0 + A1 ? expf(v) : v;
      }
  bd_graph *g = tu_graph();
  int xv = tu_input(g, 3, xd), yv = tu_output(g, BD_DT_F32, 3, yd);
  int sl1 = tu_val(g, BD_DT_F32, 3, pd1), ev = tu_output(g, BD_DT_F32, 3, pd1);
  int sl2 = tu_val(g, BD_DT_F32, 3, pd2), t2 = tu_val(g, BD_DT_F32, 3, td2);
  int p2 = tu_val(g, BD_DT_F32, 3, pd2), cat = tu_val(g, BD_DT_F32, 3, cd);
  bd_node *nd = tu_node(g, BD_OP_SLICE, 1, &xv, sl1);
  nd->p.slice = (bd_slice_params){.n = 1, .axes = {2}, .starts = {0}, .ends = {A1}, .steps = {1}};
  tu_node(g, BD_OP_EXP, 1, &sl1, ev);
  nd = tu_node(g, BD_OP_SLICE, 1, &xv, sl2);
  nd->p.slice = (bd_slice_params){.n = 1, .axes = {2}, .starts = {0}, .ends = {A2}, .steps = {1}};
  int from[3] = {sl2, t2, cat}, to[3] = {t2, p2, yv};
  for (int k = 0; k < 3; k++) {
    if (k == 2) {
      int pieces[3] = {xv, ev, p2};
      tu_node(g, BD_OP_CONCAT, 3, pieces, cat)->p.concat.axis = 2;
    }
    nd = tu_node(g, BD_OP_TRANSPOSE, 1, &from[k], to[k]);
    nd->p.transpose.n = 3;
    memcpy(nd->p.transpose.perm, (int[3]){0, 2, 1}, sizeof(int) * 3);
  }
  const float *ins[1] = {x};
  tu_check(g, ins, ref, 0.f, "concat + transpose as written");
  bd_compile_report rep;
  bd_err err;
  if (bd_compile(g, NULL, &rep, &err)) fail_msg("compile: %s", err.msg);
  assert_int_equal(rep.sunk_transposes, 1);
  int transposes = 0, concats = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *q = &g->nodes[i];
    if (q->op == BD_OP_CONCAT) {
      assert_int_equal(q->p.concat.axis, 1); /* the anchor axis of [N, A, C] */
      assert_int_equal(q->out[0], g->outputs[0]);
      concats++;
    }
    if (q->op != BD_OP_TRANSPOSE) continue;
    transposes++;
    const int p = g->values[q->in[0]].producer; /* Transposes in a row merged */
    assert_true(p < 0 || g->nodes[p].op != BD_OP_TRANSPOSE);
  }
  assert_int_equal(concats, 1);
  /* x's and exp's pieces, and piece 2's first: its second and the sunk one cancelled */
  assert_int_equal(transposes, 3);
  tu_check(g, ins, ref, 0.f, "concat + transpose compiled");
  bd_graph_destroy(g);
  free(x);
  free(ref);
}

/* ---- A box decode per coordinate (distance2bbox) ----
 * M = X * stride ([N, A, 4], a stride per anchor) gathered per coordinate on axis 2, each
 * subtracted from or added to an anchor constant [A] (one of them gather - constant),
 * unsqueezed and joined on axis 2: bd_compile makes it Add(K, Mul(M, S)), then the two
 * Muls by constants one. Against the formula computed here, as written and compiled;
 * with two coordinates gathered out of order nothing is rewritten. */
static void test_box_decode_folded(void **state) {
  (void)state;
  enum { N = 2, A = 5 };
  int64_t md[3] = {N, A, 4}, ed[2] = {N, A}, ud[3] = {N, A, 1}, ad = A;
  tu_seed(77);
  float *m = tu_randv(N * A * 4, 3.f), *k = tu_randv(4 * A, 10.f), ref[N * A * 4], st[A];
  for (int a = 0; a < A; a++) st[a] = (float)(8 << (a % 3));
  for (int order = 0; order < 2; order++) {
    const int idx[4] = {order ? 1 : 0, order ? 0 : 1, 2, 3};
    for (int n = 0; n < N; n++)
      for (int a = 0; a < A; a++)
        for (int j = 0; j < 4; j++) {
          const float g = m[((int64_t)n * A + a) * 4 + idx[j]] * st[a], c = k[j * A + a];
          ref[((int64_t)n * A + a) * 4 + j] = j < 2 ? c - g : j == 2 ? c + g : g - c;
        }
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 3, md), yv = tu_output(g, BD_DT_F32, 3, md), pieces[4];
    int64_t sd[2] = {A, 1};
    int mv = tu_val(g, BD_DT_F32, 3, md), sin[2] = {xv, tu_const(g, BD_DT_F32, 2, sd, st)};
    tu_node(g, BD_OP_MUL, 2, sin, mv);
    for (int j = 0; j < 4; j++) {
      const int64_t ix = idx[j];
      int gv = tu_val(g, BD_DT_F32, 2, ed), ev = tu_val(g, BD_DT_F32, 2, ed);
      int in[2] = {mv, tu_const(g, BD_DT_I64, 0, NULL, &ix)};
      tu_node(g, BD_OP_GATHER, 2, in, gv)->p.gather.axis = 2;
      const int kv = tu_const(g, BD_DT_F32, 1, &ad, k + j * A);
      in[0] = j == 3 ? gv : kv, in[1] = j == 3 ? kv : gv;
      tu_node(g, j == 2 ? BD_OP_ADD : BD_OP_SUB, 2, in, ev);
      pieces[j] = tu_val(g, BD_DT_F32, 3, ud);
      bd_node *u = tu_node(g, BD_OP_UNSQUEEZE, 1, &ev, pieces[j]);
      u->p.unsq.n = 1, u->p.unsq.axes[0] = -1;
    }
    tu_node(g, BD_OP_CONCAT, 4, pieces, yv)->p.concat.axis = -1;
    const float *ins[1] = {m};
    tu_check(g, ins, ref, 1e-6f, "box decode as written");
    bd_compile_report rep;
    bd_err err;
    if (bd_compile(g, NULL, &rep, &err)) fail_msg("compile: %s", err.msg);
    int ops[BD_OP__COUNT] = {0};
    for (int i = 0; i < g->n_nodes; i++) ops[g->nodes[i].op]++;
    if (order == 0) { /* Mul by stride x sign, Add of the stacked anchors: nothing else */
      assert_int_equal(rep.folded_gather_concats, 1);
      assert_int_equal(rep.folded_muls, 1);
      assert_int_equal(g->n_nodes, 2);
      assert_int_equal(ops[BD_OP_MUL], 1);
      assert_int_equal(ops[BD_OP_ADD], 1);
    } else {
      assert_int_equal(rep.folded_gather_concats, 0);
      assert_int_equal(rep.folded_muls, 0);
      assert_int_equal(ops[BD_OP_CONCAT], 1);
    }
    tu_check(g, ins, ref, 1e-6f, order ? "box decode, out of order" : "box decode folded");
    bd_graph_destroy(g);
  }
  free(m);
  free(k);
}

/* ---- MatMul ---- */
static void test_matmul(void **state) {
  (void)state;
  struct { int ra, rb, ry; int64_t a[4], b[4], y[4]; int bconst; } cs[] = {
      {3, 2, 3, {2, 3, 4}, {4, 5}, {2, 3, 5}, 1},
      {1, 2, 1, {4}, {4, 5}, {5}, 1},
      {2, 1, 1, {3, 4}, {4}, {3}, 0},
      {4, 3, 4, {2, 1, 3, 4}, {3, 4, 6}, {2, 3, 3, 6}, 0},
      {3, 2, 3, {1, 100, 64}, {64, 70}, {1, 100, 70}, 1},
      {2, 2, 2, {300, 17}, {17, 9}, {300, 9}, 1},
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    int ra = cs[c].ra, rb = cs[c].rb, ry = cs[c].ry;
    int64_t M = ra >= 2 ? cs[c].a[ra - 2] : 1, K = cs[c].a[ra - 1];
    int64_t N = rb >= 2 ? cs[c].b[rb - 1] : 1;
    int64_t na = tu_numel(ra, cs[c].a), nb = tu_numel(rb, cs[c].b), ny = tu_numel(ry, cs[c].y);
    tu_seed(90 + c);
    float *a = tu_randv(na, 1.f), *b = tu_randv(nb, 1.f), *ref = malloc(sizeof(float) * (size_t)ny);
    assert_non_null(ref);
    /* batch index of y -> batch offsets of a and b by explicit broadcasting over the
     * 4-D padded shapes */
    int64_t pa[4] = {1, 1, 1, 1}, pb[4] = {1, 1, 1, 1}, py[4] = {1, 1, 1, 1};
    for (int i = 0; i < (ra > 2 ? ra - 2 : 0); i++) pa[2 - (ra - 2) + i] = cs[c].a[i];
    for (int i = 0; i < (rb > 2 ? rb - 2 : 0); i++) pb[2 - (rb - 2) + i] = cs[c].b[i];
    for (int i = 0; i < 2; i++) py[i] = pa[i] > pb[i] ? pa[i] : pb[i];
    for (int64_t b0 = 0; b0 < py[0]; b0++)
      for (int64_t b1 = 0; b1 < py[1]; b1++) {
        int64_t ia = (pa[0] == 1 ? 0 : b0) * pa[1] + (pa[1] == 1 ? 0 : b1);
        int64_t ib = (pb[0] == 1 ? 0 : b0) * pb[1] + (pb[1] == 1 ? 0 : b1);
        int64_t iy = b0 * py[1] + b1;
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)a[(ia * M + i) * K + k] * b[(ib * K + k) * N + j];
            ref[(iy * M + i) * N + j] = (float)s;
          }
      }
    bd_graph *g = tu_graph();
    int av = tu_input(g, ra, cs[c].a);
    int bv = cs[c].bconst ? tu_const(g, BD_DT_F32, rb, cs[c].b, b) : tu_input(g, rb, cs[c].b);
    int yv = tu_output(g, BD_DT_F32, ry, cs[c].y);
    int in[2] = {av, bv};
    tu_node(g, BD_OP_MATMUL, 2, in, yv);
    const float *ins[2] = {a, b};
    tu_check(g, ins, ref, 1e-4f, "matmul");
    bd_graph_destroy(g);
    free(a);
    free(b);
    free(ref);
  }
}

/* ---- Slice (float), incl. negative steps and clamping ---- */
static void test_slice(void **state) {
  (void)state;
  int64_t d[3] = {4, 6, 7};
  struct { int n; int axes[3]; int64_t st[3], en[3], sp[3]; int64_t y[3]; } cs[] = {
      {1, {1}, {1}, {-1}, {2}, {4, 2, 7}},
      {2, {2, 0}, {-3, 0}, {1000, 100}, {1, 3}, {2, 6, 3}},
      {1, {2}, {-1}, {INT64_MIN}, {-1}, {4, 6, 7}},
      {2, {1, 2}, {4, 5}, {-100, 0}, {-2, -2}, {4, 3, 3}},
      {1, {0}, {10}, {-10}, {-1}, {4, 6, 7}},
      {1, {1}, {3}, {3}, {1}, {4, 0, 7}},
      {1, {2}, {1}, {100}, {2}, {4, 6, 3}},                /* step 2 on the last axis */
      {2, {1, 2}, {0, 0}, {INT64_MAX, 7}, {2, 2}, {4, 3, 4}}, /* Focus-style */
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    int64_t st[3] = {0, 0, 0}, sp[3] = {1, 1, 1};
    for (int i = 0; i < cs[c].n; i++) {
      int a = cs[c].axes[i];
      /* numpy's slice.indices gives the ONNX clamping */
      int64_t dim = d[a], s = cs[c].st[i], step = cs[c].sp[i];
      if (s < 0) s += dim;
      if (step > 0) s = s < 0 ? 0 : s > dim ? dim : s;
      else s = s < 0 ? -1 : s > dim - 1 ? dim - 1 : s;
      st[a] = s;
      sp[a] = step;
    }
    int64_t ny = tu_numel(3, cs[c].y), n = tu_numel(3, d);
    tu_seed(100 + c);
    float *x = tu_randv(n, 1.f), *ref = malloc(sizeof(float) * (size_t)(ny ? ny : 1));
    assert_non_null(ref);
    for (int64_t i = 0; i < cs[c].y[0]; i++)
      for (int64_t j = 0; j < cs[c].y[1]; j++)
        for (int64_t k = 0; k < cs[c].y[2]; k++)
          ref[(i * cs[c].y[1] + j) * cs[c].y[2] + k] =
              x[((st[0] + i * sp[0]) * d[1] + st[1] + j * sp[1]) * d[2] + st[2] + k * sp[2]];
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 3, d), yv = tu_output(g, BD_DT_F32, 3, cs[c].y);
    bd_node *nd = tu_node(g, BD_OP_SLICE, 1, &xv, yv);
    nd->p.slice.n = cs[c].n;
    for (int i = 0; i < cs[c].n; i++) {
      nd->p.slice.axes[i] = cs[c].axes[i];
      nd->p.slice.starts[i] = cs[c].st[i];
      nd->p.slice.ends[i] = cs[c].en[i];
      nd->p.slice.steps[i] = cs[c].sp[i];
    }
    const float *ins[1] = {x};
    char what[32];
    snprintf(what, sizeof what, "slice case %zu", c);
    tu_check(g, ins, ref, 0.f, what);
    bd_graph_destroy(g);
    free(x);
    free(ref);
  }
}

/* ---- Gather (float data; int32 and int64 indices; errors) ---- */
static void test_gather(void **state) {
  (void)state;
  int64_t d[3] = {3, 5, 4};
  tu_seed(110);
  float *x = tu_randv(60, 1.f);
  for (int axis = 0; axis < 3; axis++) {
    int32_t idx32[4] = {-1, 0, 2, -2};
    int64_t idx64[4] = {-1, 0, 2, -2}, id[2] = {2, 2};
    int64_t yd[4];
    int r = 0;
    for (int i = 0; i < axis; i++) yd[r++] = d[i];
    yd[r++] = 2;
    yd[r++] = 2;
    for (int i = axis + 1; i < 3; i++) yd[r++] = d[i];
    int64_t ny = tu_numel(4, yd);
    float ref[4 * 5 * 4];
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= d[i];
    for (int i = axis + 1; i < 3; i++) inner *= d[i];
    for (int64_t o = 0; o < outer; o++)
      for (int j = 0; j < 4; j++)
        for (int64_t in = 0; in < inner; in++) {
          int64_t ix = idx64[j] < 0 ? idx64[j] + d[axis] : idx64[j];
          ref[(o * 4 + j) * inner + in] = x[(o * d[axis] + ix) * inner + in];
        }
    for (int it = 0; it < 2; it++) {
      bd_graph *g = tu_graph();
      int xv = tu_input(g, 3, d);
      int iv = it ? tu_const(g, BD_DT_I32, 2, id, idx32) : tu_const(g, BD_DT_I64, 2, id, idx64);
      int yv = tu_output(g, BD_DT_F32, 4, yd), in[2] = {xv, iv};
      tu_node(g, BD_OP_GATHER, 2, in, yv)->p.gather.axis = axis;
      const float *ins[1] = {x};
      tu_check(g, ins, ref, 0.f, "gather");
      (void)ny;
      bd_graph_destroy(g);
    }
  }
  /* an index out of range is an error, not a read out of bounds */
  int64_t bad[1] = {5}, bd1[1] = {1}, yd[3] = {1, 5, 4};
  bd_graph *g = tu_graph();
  int xv = tu_input(g, 3, d), iv = tu_const(g, BD_DT_I64, 1, bd1, bad);
  int yv = tu_output(g, BD_DT_F32, 3, yd), in[2] = {xv, iv};
  tu_node(g, BD_OP_GATHER, 2, in, yv)->p.gather.axis = 0;
  bd_plan *p = tu_plan(g);
  bd_backend *be = NULL;
  bd_err err;
  assert_int_equal(bd_cpu_backend_new(g, 2, &be, &err), BD_OK);
  assert_int_equal(bd_backend_prepare(be, p, &err), BD_OK);
  float out[20];
  const float *ins[1] = {x};
  float *outs[1] = {out};
  assert_int_equal(bd_backend_run(be, p, ins, outs, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "index 5"));
  bd_backend_destroy(be);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
  free(x);
}

/* ---- Cast, Shape, reshape-like copies, non-float graph output ---- */
static void test_cast_shape_copy(void **state) {
  (void)state;
  int64_t d[2] = {2, 4}, fd[1] = {8}, ud[3] = {2, 1, 4}, sd[1] = {3};
  float x[8] = {-1.7f, 2.9f, 300.5f, -0.2f, 0.f, 255.f, 1e10f, -1e10f};
  const bd_dtype to[5] = {BD_DT_I64, BD_DT_I32, BD_DT_U8, BD_DT_BOOL, BD_DT_F64};
  const float want[5][8] = {
      {-1, 2, 300, 0, 0, 255, 1e10f, -1e10f},
      {-1, 2, 300, 0, 0, 255, 2147483647.f, -2147483648.f},
      {0, 2, 255, 0, 0, 255, 255, 0}, /* saturating (out of range is undefined in ONNX) */
      {1, 1, 1, 1, 0, 1, 1, 1},
      {-1.7f, 2.9f, 300.5f, -0.2f, 0.f, 255.f, 1e10f, -1e10f},
  };
  for (int t = 0; t < 5; t++) {
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 2, d), cv = tu_val(g, to[t], 2, d), fv = tu_val(g, to[t], 1, fd);
    int uv = tu_val(g, to[t], 3, ud), yv = tu_output(g, BD_DT_F32, 3, ud);
    tu_node(g, BD_OP_CAST, 1, &xv, cv)->p.cast.to = to[t];
    tu_node(g, BD_OP_FLATTEN, 1, &cv, fv)->p.flatten.axis = 0;
    tu_node(g, BD_OP_UNSQUEEZE, 1, &fv, uv);
    tu_node(g, BD_OP_CAST, 1, &uv, yv)->p.cast.to = BD_DT_F32;
    const float *ins[1] = {x};
    tu_check(g, ins, want[t], 0.f, bd_dtype_name(to[t]));
    bd_graph_destroy(g);
  }
  /* Shape, as an int64 graph output (converted to float by the backend) */
  bd_graph *g = tu_graph();
  int64_t xd[3] = {2, 5, 7};
  int xv = tu_input(g, 3, xd), sv = tu_output(g, BD_DT_I64, 1, sd);
  tu_node(g, BD_OP_SHAPE, 1, &xv, sv);
  float *xx = calloc(70, sizeof(float));
  assert_non_null(xx);
  const float *ins[1] = {xx};
  const float ref[3] = {2, 5, 7};
  tu_check(g, ins, ref, 0.f, "shape");
  free(xx);
  bd_graph_destroy(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),
      cmocka_unit_test(test_binary),
      cmocka_unit_test(test_int64_chain),
      cmocka_unit_test(test_concat),
      cmocka_unit_test(test_concat_large),
      cmocka_unit_test(test_maxpool),
      cmocka_unit_test(test_spp_chained),
      cmocka_unit_test(test_resize),
      cmocka_unit_test(test_upsampled_concat_split),
      cmocka_unit_test(test_transpose),
      cmocka_unit_test(test_softmax),
      cmocka_unit_test(test_softmax_dot_direct),
      cmocka_unit_test(test_dfl_fused),
      cmocka_unit_test(test_concat_transpose_sunk),
      cmocka_unit_test(test_box_decode_folded),
      cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_gather),
      cmocka_unit_test(test_cast_shape_copy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
