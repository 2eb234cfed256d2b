/* cpu backend: Conv (all paths and epilogues), BatchNorm and the GEMMs against naive
 * loops written here, independent of the backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "test_cpu_util.h"

typedef struct {
  int N, C, H, W, M, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, group;
  bd_act act;
  bd_res_mode res;
  int bias;
} conv_case;

static double ref_act(double v, bd_act a) {
  switch (a) {
    case BD_ACT_RELU: return v > 0 ? v : 0;
    case BD_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case BD_ACT_SILU: return v / (1.0 + exp(-v));
    default: return v;
  }
}

static void conv_ref(const conv_case *c, const float *x, const float *w, const float *b,
                     const float *r, float *y, int OH, int OW) {
  int Cg = c->C / c->group, Mg = c->M / c->group;
  for (int n = 0; n < c->N; n++)
    for (int m = 0; m < c->M; m++) {
      int g = m / Mg;
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double s = b ? b[m] : 0;
          for (int ci = 0; ci < Cg; ci++)
            for (int i = 0; i < c->kh; i++)
              for (int j = 0; j < c->kw; j++) {
                int ih = oh * c->sh - c->pt + i * c->dh, iw = ow * c->sw - c->pl + j * c->dw;
                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                s += (double)x[((n * c->C + g * Cg + ci) * c->H + ih) * c->W + iw] *
                     w[((m * Cg + ci) * c->kh + i) * c->kw + j];
              }
          size_t o = ((size_t)(n * c->M + m) * OH + oh) * OW + ow;
          if (c->res == BD_RES_PRE_ACT) s += r[o];
          s = ref_act(s, c->act);
          if (c->res == BD_RES_POST_ACT) s += r[o];
          y[o] = (float)s;
        }
    }
}

static void run_conv_case(const conv_case *c, int idx) {
  int OH = (c->H + c->pt + c->pb - c->dh * (c->kh - 1) - 1) / c->sh + 1;
  int OW = (c->W + c->pl + c->pr - c->dw * (c->kw - 1) - 1) / c->sw + 1;
  int64_t xd[4] = {c->N, c->C, c->H, c->W}, wd[4] = {c->M, c->C / c->group, c->kh, c->kw};
  int64_t yd[4] = {c->N, c->M, OH, OW}, bdm[1] = {c->M};
  tu_seed(1000 + (uint64_t)idx);
  float *x = tu_randv(tu_numel(4, xd), 1.0f);
  float *w = tu_randv(tu_numel(4, wd), 0.5f);
  float *b = tu_randv(c->M, 0.5f);
  float *r = tu_randv(tu_numel(4, yd), 1.0f);
  float *ref = malloc(sizeof(float) * (size_t)tu_numel(4, yd));
  assert_non_null(ref);
  conv_ref(c, x, w, c->bias ? b : NULL, r, ref, OH, OW);

  /* weights a constant (packed once at load) and a graph input (packed per tile) */
  for (int wconst = 1; wconst >= 0; wconst--) {
    bd_graph *g = tu_graph();
    int xv = tu_input(g, 4, xd);
    int rv = c->res ? tu_input(g, 4, yd) : -1;
    int wv = wconst ? tu_const(g, BD_DT_F32, 4, wd, w) : tu_input(g, 4, wd);
    int bv = c->bias ? tu_const(g, BD_DT_F32, 1, bdm, b) : -1;
    int yv = tu_output(g, BD_DT_F32, 4, yd);
    int in[4] = {xv, wv, bv, rv};
    bd_node *n = tu_node(g, BD_OP_CONV, c->res ? 4 : 3, in, yv);
    n->p.conv = (bd_conv_params){.kh = c->kh,
                                 .kw = c->kw,
                                 .sh = c->sh,
                                 .sw = c->sw,
                                 .dh = c->dh,
                                 .dw = c->dw,
                                 .pad_t = c->pt,
                                 .pad_l = c->pl,
                                 .pad_b = c->pb,
                                 .pad_r = c->pr,
                                 .group = c->group,
                                 .act = c->act,
                                 .res = c->res};
    const float *ins[3] = {x, c->res ? r : w, w};
    char what[80];
    /* GEMM + epilogue, then the AVX2 and AVX-512 fused tiles where this CPU and build
     * have them, AVX-512 with the implicit GEMM's channel-vector tile never, always and
     * where it computes less */
    static const int modes[][2] = {{0, BD_CPU_CV_AUTO},
                                   {256, BD_CPU_CV_AUTO},
                                   {512, BD_CPU_CV_NEVER},
                                   {512, BD_CPU_CV_ALWAYS},
                                   {512, BD_CPU_CV_AUTO}};
    for (int mi = 0; mi < 5; mi++) {
      tu_fused = modes[mi][0];
      tu_cv = modes[mi][1];
      if ((tu_fused == 256 && !bd_cpu_pw256_available()) ||
          (tu_fused == 512 && !bd_cpu_pw512_available()))
        continue;
      snprintf(what, sizeof what, "conv case %d (fused tiles %d, channel tiles %d, weights %s)",
               idx, tu_fused, tu_cv, wconst ? "constant" : "an input");
      tu_check(g, ins, ref, 1e-4f, what);
    }
    tu_fused = 1;
    tu_cv = BD_CPU_CV_AUTO;
    bd_graph_destroy(g);
  }
  free(x);
  free(w);
  free(b);
  free(r);
  free(ref);
}

static void test_conv_general(void **state) {
  (void)state;
  const conv_case cases[] = {
      /* N  C  H  W  M kh kw sh sw dh dw pt pl pb pr g act res bias */
      {1, 3, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, 0, 1},
      {2, 4, 10, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, 0, 1},
      {1, 5, 12, 13, 7, 3, 3, 2, 2, 1, 1, 0, 1, 1, 0, 1, BD_ACT_NONE, 0, 0},    /* asym pads */
      {1, 4, 11, 11, 4, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, BD_ACT_SIGMOID, 0, 1}, /* dilated */
      {2, 6, 8, 9, 4, 2, 3, 1, 2, 1, 1, 0, 1, 1, 2, 2, BD_ACT_SILU, 0, 1},      /* grouped, rect */
      {1, 8, 7, 7, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, BD_ACT_NONE, 0, 1},     /* groups 4 */
      {1, 64, 40, 40, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, 0, 1},  /* tiles */
      {1, 3, 33, 31, 16, 6, 6, 2, 2, 1, 1, 2, 2, 2, 2, 1, BD_ACT_RELU, 0, 1},   /* big kernel */
      {1, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 1},
      {2, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, BD_RES_POST_ACT, 1},
      {1, 16, 5, 5, 8, 5, 5, 3, 3, 1, 1, 0, 0, 0, 0, 1, BD_ACT_NONE, 0, 1}, /* no pad, s3 */
      /* the fused tiles' implicit GEMM (strides 1 and 2, dilation 1) and its edges */
      {1, 96, 7, 9, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, 0, 1}, /* 12-row, M split */
      {2, 20, 15, 17, 40, 3, 3, 2, 2, 1, 1, 1, 0, 0, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 1},
      {1, 600, 6, 40, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, 0, 1}, /* narrow tiles */
      {1, 8, 30, 3, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, 0, 1}, /* junk > 1/4: im2col */
      {1, 5, 9, 9, 7, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, 1, BD_ACT_SIGMOID, BD_RES_POST_ACT, 1},
      {1, 4, 12, 12, 12, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, 0, 1},  /* even kernel */
      {2, 12, 10, 10, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, BD_ACT_SILU, 0, 1}, /* groups 3 */
      {1, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 3, 2, 1, 4, 1, BD_ACT_NONE, 0, 1},     /* over-padding */
      {1, 7, 33, 35, 36, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, 0, 0},  /* s2 odd sizes */
      /* the channel-vector tile's channel blocks (48 / 32 / 16, the last part padding),
       * partial pixel blocks, both residuals, groups, batch 2, M split into items */
      {1, 64, 10, 10, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SILU, 0, 1}, /* 4x48+32+32 */
      {2, 24, 7, 5, 100, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, BD_RES_PRE_ACT, 1},
      {1, 32, 9, 11, 136, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, BD_ACT_SILU, BD_RES_POST_ACT, 0},
      {1, 16, 6, 6, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_SIGMOID, 0, 1}, /* 32 (24) */
      {1, 16, 5, 3, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_NONE, BD_RES_POST_ACT, 1},
      {2, 40, 4, 4, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, 0, 1}, /* one 48 */
      /* a region past CONV_IG_MAX_REGION (rows of 70002 floats): im2col strips instead */
      {1, 16, 2, 70000, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, BD_ACT_RELU, 0, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_conv_case(&cases[i], (int)i);
}

static void test_conv_pointwise(void **state) {
  (void)state;
  const conv_case cases[] = {
      {1, 16, 13, 13, 24, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, BD_ACT_SILU, 0, 1},
      {2, 32, 9, 7, 64, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, BD_ACT_NONE, 0, 0},
      {1, 64, 52, 52, 32, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, BD_ACT_RELU, 0, 1},
      {1, 8, 4, 4, 128, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, BD_ACT_SIGMOID, 0, 1}, /* M split */
      {1, 8, 6, 6, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, BD_ACT_NONE, BD_RES_POST_ACT, 1},
      {1, 8, 6, 6, 8, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, BD_ACT_NONE, 0, 1},  /* 1x1 s2: im2col */
      {1, 8, 6, 6, 8, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, BD_ACT_NONE, 0, 1},  /* 1x1 padded */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_conv_case(&cases[i], 100 + (int)i);
}

static void test_conv_depthwise(void **state) {
  (void)state;
  const conv_case cases[] = {
      {1, 16, 20, 21, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, BD_ACT_SILU, 0, 1},
      {2, 8, 21, 20, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 8, BD_ACT_RELU, 0, 1},
      {1, 8, 17, 19, 8, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 8, BD_ACT_NONE, 0, 1},
      {1, 6, 17, 19, 6, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, 6, BD_ACT_SIGMOID, 0, 0},
      {1, 4, 15, 15, 4, 3, 3, 1, 1, 2, 3, 2, 3, 2, 3, 4, BD_ACT_NONE, 0, 1},  /* dilated */
      {1, 4, 9, 10, 4, 3, 3, 3, 3, 1, 1, 0, 1, 2, 0, 4, BD_ACT_NONE, 0, 1},  /* s3 asym */
      {1, 4, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, BD_ACT_RELU, BD_RES_PRE_ACT, 1},
      {1, 4, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, BD_ACT_SILU, BD_RES_POST_ACT, 1},
      {1, 4, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, BD_ACT_NONE, 0, 1}, /* multiplier 2 */
      {1, 3, 2, 2, 3, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 3, BD_ACT_NONE, 0, 1}, /* tiny plane */
      {2, 5, 13, 12, 5, 3, 3, 2, 2, 1, 1, 0, 1, 1, 0, 5, BD_ACT_SILU, 0, 1}, /* s2 asym pads */
      {1, 3, 9, 11, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 3, BD_ACT_NONE, 0, 1}, /* no padding */
      {1, 3, 7, 8, 3, 5, 5, 1, 1, 1, 1, 3, 1, 4, 2, 3, BD_ACT_NONE, 0, 1},  /* over-padding */
      {1, 4, 11, 9, 4, 5, 5, 2, 2, 1, 1, 2, 1, 2, 3, 4, BD_ACT_RELU, BD_RES_POST_ACT, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_conv_case(&cases[i], 200 + (int)i);
}

static void gemm_ref(int m, int n, int k, const float *a, const float *b, float *c) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int p = 0; p < k; p++) s += (double)a[i * k + p] * b[p * n + j];
      c[i * n + j] = (float)s;
    }
}

static void test_gemm(void **state) {
  (void)state;
  const int sz[][3] = {{1, 1, 1}, {7, 37, 300}, {6, 16, 256}, {130, 1100, 33}, {13, 5, 0},
                       {64, 64, 600}};
  float *scratch = aligned_alloc(64, (bd_cpu_gemm_scratch_floats() * 4 + 63) & ~(size_t)63);
  assert_non_null(scratch);
  for (size_t t = 0; t < sizeof sz / sizeof sz[0]; t++) {
    int m = sz[t][0], n = sz[t][1], k = sz[t][2];
    tu_seed(300 + t);
    float *a = tu_randv((int64_t)m * k, 1.f), *b = tu_randv((int64_t)k * n, 1.f);
    float *c = malloc(sizeof(float) * (size_t)m * n), *r = malloc(sizeof(float) * (size_t)m * n);
    assert_true(c && r);
    gemm_ref(m, n, k, a, b, r);
    for (int impl = 0; impl < 2; impl++) {
      for (int acc = 0; acc < 2; acc++) {
        for (int i = 0; i < m * n; i++) c[i] = acc ? 1.0f : NAN;
        if (impl)
          bd_cpu_gemm(m, n, k, a, k, b, n, c, n, acc, scratch);
        else
          bd_cpu_gemm_builtin(m, n, k, a, k, b, n, c, n, acc, scratch);
        for (int i = 0; i < m * n; i++) {
          float want = r[i] + (acc ? 1.0f : 0.0f);
          if (!tu_close(c[i], want, 1e-4f)) {
            fprintf(stderr, "gemm %dx%dx%d impl %d acc %d [%d]: %g vs %g\n", m, n, k, impl, acc, i,
                    c[i], want);
            fail();
          }
        }
      }
    }
    free(a);
    free(b);
    free(c);
    free(r);
  }
  free(scratch);
}

static void test_batchnorm(void **state) {
  (void)state;
  int64_t xd[4] = {2, 5, 7, 3}, cd[1] = {5};
  tu_seed(7);
  float *x = tu_randv(tu_numel(4, xd), 2.f), *sc = tu_randv(5, 1.f), *bi = tu_randv(5, 1.f);
  float *mean = tu_randv(5, 1.f), *var = tu_randv(5, 1.f);
  for (int i = 0; i < 5; i++) var[i] = fabsf(var[i]) + 0.1f;
  int64_t n = tu_numel(4, xd);
  float *ref = malloc(sizeof(float) * (size_t)n);
  assert_non_null(ref);
  for (int64_t i = 0; i < n; i++) {
    int ch = (int)((i / 21) % 5);
    ref[i] = (float)((x[i] - mean[ch]) / sqrt((double)var[ch] + 1e-3) * sc[ch] + bi[ch]);
  }
  bd_graph *g = tu_graph();
  int xv = tu_input(g, 4, xd);
  int in[5] = {xv, tu_const(g, BD_DT_F32, 1, cd, sc), tu_const(g, BD_DT_F32, 1, cd, bi),
               tu_const(g, BD_DT_F32, 1, cd, mean), tu_const(g, BD_DT_F32, 1, cd, var)};
  int yv = tu_output(g, BD_DT_F32, 4, xd);
  tu_node(g, BD_OP_BATCHNORM, 5, in, yv)->p.bn.eps = 1e-3f;
  const float *ins[1] = {x};
  tu_check(g, ins, ref, 1e-4f, "batchnorm");
  bd_graph_destroy(g);
  free(x);
  free(sc);
  free(bi);
  free(mean);
  free(var);
  free(ref);
}

/* A bad plan is refused at prepare, not at run. */
static void test_prepare_errors(void **state) {
  (void)state;
  int64_t xd[4] = {1, 4, 5, 5}, wd[4] = {4, 3, 3, 3}, yd[4] = {1, 4, 5, 5};
  float w[108] = {0};
  bd_graph *g = tu_graph();
  int xv = tu_input(g, 4, xd), wv = tu_const(g, BD_DT_F32, 4, wd, w);
  int yv = tu_output(g, BD_DT_F32, 4, yd);
  int in[2] = {xv, wv};
  tu_node(g, BD_OP_CONV, 2, in, yv)->p.conv =
      (bd_conv_params){.kh = 3, .kw = 3, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .pad_t = 1,
                       .pad_l = 1, .pad_b = 1, .pad_r = 1, .group = 1};
  bd_plan *p = tu_plan(g);
  bd_backend *be = NULL;
  bd_err err;
  assert_int_equal(bd_cpu_backend_new(g, 1, &be, &err), BD_OK);
  assert_int_equal(bd_backend_prepare(be, p, &err), BD_E_INVALID); /* W has 3 in-chans, X 4 */
  assert_non_null(strstr(err.msg, "weight shape"));
  bd_backend_destroy(be);
  g->nodes[0].op = BD_OP_CONSTANT;
  assert_int_equal(bd_cpu_backend_new(g, 1, &be, &err), BD_OK);
  assert_int_equal(bd_backend_prepare(be, p, &err), BD_E_UNSUPPORTED);
  bd_backend_destroy(be);
  bd_backend_destroy(NULL);
  assert_int_equal(bd_cpu_backend_new(g, -1, &be, &err), BD_E_LIMIT);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
}

int main(void) {
#ifdef BD_TEST_FUSED
  /* This build compiles the backend optimised, without sanitizers: the only build in
   * which the AVX-512 fused tiles exist (the Debug+ASan suite has their stubs). */
  printf("fused tiles on this CPU: AVX-512 %s, AVX2 %s\n", bd_cpu_pw512_available() ? "yes" : "no",
         bd_cpu_pw256_available() ? "yes" : "no");
  if (!bd_cpu_pw512_available() && !bd_cpu_pw256_available()) {
    printf("fused tiles: this CPU has neither; nothing to test here\n");
    return 0;
  }
#endif
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gemm),           cmocka_unit_test(test_conv_general),
      cmocka_unit_test(test_conv_pointwise), cmocka_unit_test(test_conv_depthwise),
      cmocka_unit_test(test_batchnorm),      cmocka_unit_test(test_prepare_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
