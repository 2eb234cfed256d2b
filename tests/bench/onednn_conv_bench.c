/* onednn_conv_bench: every convolution of a model (batch 1, the file's input size) through
 * our cpu backend and through oneDNN (C API), per layer, at 1 and 2 threads.
 *
 * Measurement-only: this answers "should convolutions go through a kept library?" (issue 4,
 * item 3). oneDNN is not a dependency of batchdet; the target exists only where libdnnl-dev is
 * installed (tests/gpu/onednn_bench.cmake).
 *
 * For each BD_OP_CONV node of the compiled graph (shapes from the plan, kernel / stride / pad /
 * group / fused activation / fused residual from bd_conv_params) it times:
 *   ours   a one-node graph run by bd_cpu_backend (the product's conv code, same weights);
 *   dnnl   oneDNN's convolution with format tag any (oneDNN picks blocked layouts), weights
 *          reordered once, bias + activation (+ residual as a sum post-op) fused;
 *   reo    the reorders that conv needs to live in our NCHW pipeline: input NCHW -> blocked,
 *          residual NCHW -> blocked dst, dst blocked -> NCHW (0 where oneDNN chose NCHW);
 *   nchw   oneDNN's convolution forced to plain NCHW activations (a drop-in replacement).
 * Repetitions are interleaved (each round runs every layer, variant and thread count once,
 * with a pause between runs so that no runtime's spinning workers steal the core of the
 * next) and the minimum is kept: the development machines are shared and noisy. oneDNN's
 * reference fallbacks (ref:any, ~70 ms) are timed in two rounds only. Each variant is checked against ours
 * (rel L2 <= 1e-4 on the NCHW output).
 *
 * Usage: onednn_conv_bench MODEL.onnx [rounds [gap_us]]. Prints tables; exit 1 on a
 * mismatch or an error. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_graph.h"
#include "bd_onnx.h"

#define MAX_LAYERS 512
#define MAX_ROUNDS 1000
#define REL_L2_LIMIT 1e-4

typedef struct {
  int N, C, H, W, M, OH, OW, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, G;
  bd_act act;
  bd_res_mode res;
  const float *w, *b; /* model constants (b may be NULL) */
  double mflop;
  int cls;
  char name[48];
} layer;

enum { CL_STEM, CL_PW, CL_DENSE, CL_DW3, CL_DW5, CL_DWX, CL_STRIDED, CL__N };
static const char *cls_name[CL__N] = {"stem", "1x1", "dense kxk s1", "dw 3x3 s1",
                                      "dw 5x5 s1", "dw other s1", "strided (s2)"};

/* One oneDNN convolution with the reorders around it. Memories named *_plain are NCHW. */
typedef struct {
  dnnl_primitive_t conv, src_in, res_in, dst_out; /* reorders NULL when layouts match */
  dnnl_memory_t src_plain, res_plain, dst_plain, src, wei, bias, dst;
  char impl[64];
} dconv;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void pause_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

static void fill(float *v, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = (float)(seed >> 8) / (float)(1u << 24) * 2.f - 1.f;
  }
}

static double rel_l2(const float *a, const float *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define DNNL_TRY(call)                                                                 \
  do {                                                                                 \
    dnnl_status_t s_ = (call);                                                         \
    if (s_ != dnnl_success) {                                                          \
      fprintf(stderr, "oneDNN: %s failed (status %d) at line %d\n", #call, (int)s_, __LINE__); \
      goto out;                                                                        \
    }                                                                                  \
  } while (0)

static void dconv_destroy(dconv *d) {
  dnnl_primitive_t prims[4] = {d->conv, d->src_in, d->res_in, d->dst_out};
  for (int i = 0; i < 4; i++)
    if (prims[i]) dnnl_primitive_destroy(prims[i]);
  dnnl_memory_t mems[7] = {d->src_plain, d->res_plain, d->dst_plain, d->wei, d->bias, NULL, NULL};
  if (d->src != d->src_plain) mems[5] = d->src;
  if (d->dst != d->dst_plain) mems[6] = d->dst;
  for (int i = 0; i < 7; i++)
    if (mems[i]) dnnl_memory_destroy(mems[i]);
  memset(d, 0, sizeof *d);
}

static int reorder_new(dnnl_primitive_t *out, const dnnl_memory_desc_t *from,
                       const dnnl_memory_desc_t *to, dnnl_engine_t eng) {
  dnnl_primitive_desc_t rpd = NULL;
  int ok = 0;
  DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, from, eng, to, eng, NULL));
  DNNL_TRY(dnnl_primitive_create(out, rpd));
  ok = 1;
out:
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  return ok;
}

static int reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to, dnnl_stream_t s) {
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  return dnnl_primitive_execute(r, s, 2, a) == dnnl_success && dnnl_stream_wait(s) == dnnl_success;
}

/* Builds the convolution for the current OpenMP thread count. blocked: activations with format
 * tag any (oneDNN's choice); else plain NCHW. Weights are always oneDNN's choice, reordered
 * here once from OIHW / GOIHW. x, r: the caller's NCHW input and residual (r NULL if none). */
static int dconv_new(dconv *d, const layer *L, int blocked, dnnl_engine_t eng, dnnl_stream_t s,
                     float *x, float *r, const float *bias) {
  memset(d, 0, sizeof *d);
  int ok = 0;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_t wre = NULL;
  dnnl_memory_t wplain = NULL;
  dnnl_dims_t xd = {L->N, L->C, L->H, L->W}, yd = {L->N, L->M, L->OH, L->OW}, bd = {L->M};
  dnnl_dims_t wd4 = {L->M, L->C / L->G, L->kh, L->kw};
  dnnl_dims_t wd5 = {L->G, L->M / L->G, L->C / L->G, L->kh, L->kw};
  dnnl_dims_t st = {L->sh, L->sw}, dil = {L->dh - 1, L->dw - 1};
  dnnl_dims_t pl = {L->pt, L->pl}, pr = {L->pb, L->pr};
  dnnl_memory_desc_t xp, yp, wp, bp, xa, ya, wa;
  int wr = L->G > 1 ? 5 : 4;
  dnnl_format_tag_t act_tag = blocked ? dnnl_format_tag_any : dnnl_nchw;
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&xp, 4, xd, dnnl_f32, dnnl_nchw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&yp, 4, yd, dnnl_f32, dnnl_nchw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&wp, wr, wr == 5 ? wd5 : wd4, dnnl_f32,
                                        wr == 5 ? dnnl_goihw : dnnl_oihw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&bp, 1, bd, dnnl_f32, dnnl_x));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&xa, 4, xd, dnnl_f32, act_tag));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&ya, 4, yd, dnnl_f32, act_tag));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&wa, wr, wr == 5 ? wd5 : wd4, dnnl_f32,
                                        dnnl_format_tag_any));
  dnnl_convolution_desc_t cd;
  DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                      dnnl_convolution_direct, &xa, &wa, &bp,
                                                      &ya, st, dil, pl, pr));
  DNNL_TRY(dnnl_primitive_attr_create(&attr));
  DNNL_TRY(dnnl_post_ops_create(&po));
  /* y = act(conv + b + r) (PRE) or act(conv + b) + r (POST): sum reads r from dst. */
  if (L->res == BD_RES_PRE_ACT) DNNL_TRY(dnnl_post_ops_append_sum(po, 1.f));
  if (L->act == BD_ACT_RELU) DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f));
  if (L->act == BD_ACT_SIGMOID)
    DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_logistic, 0.f, 0.f));
  if (L->act == BD_ACT_SILU) DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_swish, 1.f, 0.f));
  if (L->res == BD_RES_POST_ACT) DNNL_TRY(dnnl_post_ops_append_sum(po, 1.f));
  DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, po));
  DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
    snprintf(d->impl, sizeof d->impl, "%s", impl);
  const dnnl_memory_desc_t *xm = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *wm = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *ym = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  DNNL_TRY(dnnl_primitive_create(&d->conv, pd));
  DNNL_TRY(dnnl_memory_create(&d->src_plain, &xp, eng, x));
  DNNL_TRY(dnnl_memory_create(&d->dst_plain, &yp, eng, DNNL_MEMORY_ALLOCATE));
  if (r) DNNL_TRY(dnnl_memory_create(&d->res_plain, &yp, eng, r));
  DNNL_TRY(dnnl_memory_create(&d->bias, &bp, eng, (void *)(uintptr_t)bias));
  DNNL_TRY(dnnl_memory_create(&d->wei, wm, eng, DNNL_MEMORY_ALLOCATE));
  DNNL_TRY(dnnl_memory_create(&wplain, &wp, eng, (void *)(uintptr_t)L->w));
  if (!reorder_new(&wre, &wp, wm, eng) || !reorder_run(wre, wplain, d->wei, s)) goto out;
  if (dnnl_memory_desc_equal(xm, &xp)) {
    d->src = d->src_plain;
  } else {
    DNNL_TRY(dnnl_memory_create(&d->src, xm, eng, DNNL_MEMORY_ALLOCATE));
    if (!reorder_new(&d->src_in, &xp, xm, eng)) goto out;
  }
  if (dnnl_memory_desc_equal(ym, &yp)) {
    d->dst = d->dst_plain;
  } else {
    DNNL_TRY(dnnl_memory_create(&d->dst, ym, eng, DNNL_MEMORY_ALLOCATE));
    if (!reorder_new(&d->dst_out, ym, &yp, eng)) goto out;
    if (r && !reorder_new(&d->res_in, &yp, ym, eng)) goto out;
  }
  /* The blocked input never changes: convert it once so the conv alone can be timed. */
  if (d->src_in && !reorder_run(d->src_in, d->src_plain, d->src, s)) goto out;
  ok = 1;
out:
  if (wre) dnnl_primitive_destroy(wre);
  if (wplain) dnnl_memory_destroy(wplain);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!ok) dconv_destroy(d);
  return ok;
}

/* dst := r before a residual conv. A plain dst could alias r in a real pipeline (r dead after
 * the add), so that copy is not counted; a blocked dst needs a reorder, counted as such. */
static int dconv_seed(dconv *d, dnnl_stream_t s, size_t ny) {
  if (!d->res_plain) return 1;
  if (d->res_in) return reorder_run(d->res_in, d->res_plain, d->dst, s);
  void *rp = NULL, *dp = NULL;
  dnnl_memory_get_data_handle(d->res_plain, &rp);
  dnnl_memory_get_data_handle(d->dst, &dp);
  memcpy(dp, rp, ny * sizeof(float));
  return 1;
}

static int dconv_conv(dconv *d, dnnl_stream_t s) {
  dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, d->src},
                          {DNNL_ARG_WEIGHTS, d->wei},
                          {DNNL_ARG_BIAS, d->bias},
                          {DNNL_ARG_DST, d->dst}};
  return dnnl_primitive_execute(d->conv, s, 4, a) == dnnl_success &&
         dnnl_stream_wait(s) == dnnl_success;
}

/* The layout conversions an NCHW pipeline needs around the blocked conv. */
static int dconv_reorders(dconv *d, dnnl_stream_t s) {
  if (d->src_in && !reorder_run(d->src_in, d->src_plain, d->src, s)) return 0;
  if (d->res_in && !reorder_run(d->res_in, d->res_plain, d->dst, s)) return 0;
  if (d->dst_out && !reorder_run(d->dst_out, d->dst, d->dst_plain, s)) return 0;
  return 1;
}

/* Full NCHW -> NCHW result, for the comparison with ours. */
static const float *dconv_result(dconv *d, dnnl_stream_t s, size_t ny) {
  if (!dconv_seed(d, s, ny) || !dconv_conv(d, s)) return NULL;
  if (d->dst_out && !reorder_run(d->dst_out, d->dst, d->dst_plain, s)) return NULL;
  void *p = NULL;
  dnnl_memory_get_data_handle(d->dst_plain, &p);
  return p;
}

/* One-node graph with this layer's conv, run by our cpu backend. */
typedef struct {
  bd_graph *g;
  bd_plan p;
  int rank[5];
  int64_t dims[5][BD_MAX_RANK];
  size_t off[5];
  int steps[1];
} ours_graph;

static int ours_build(ours_graph *o, const layer *L, const float *bias, bd_err *err) {
  memset(o, 0, sizeof *o);
  if (bd_graph_new(&o->g, err) != BD_OK) return 0;
  bd_graph *g = o->g;
  int64_t xd[4] = {L->N, L->C, L->H, L->W}, wd[4] = {L->M, L->C / L->G, L->kh, L->kw};
  int64_t yd[4] = {L->N, L->M, L->OH, L->OW}, bd[1] = {L->M};
  int xv = bd_graph_add_value(g, "x", BD_DT_F32, 4, xd);
  int wv = bd_graph_add_value(g, "w", BD_DT_F32, 4, wd);
  int bv = bd_graph_add_value(g, "b", BD_DT_F32, 1, bd);
  int yv = bd_graph_add_value(g, "y", BD_DT_F32, 4, yd);
  int rv = L->res ? bd_graph_add_value(g, "r", BD_DT_F32, 4, yd) : -1;
  if (xv < 0 || wv < 0 || bv < 0 || yv < 0 || (L->res && rv < 0)) return 0;
  size_t nw = (size_t)(wd[0] * wd[1] * wd[2] * wd[3]);
  g->values[wv].data = malloc(nw * sizeof(float));
  g->values[bv].data = malloc((size_t)L->M * sizeof(float));
  if (!g->values[wv].data || !g->values[bv].data) return 0;
  memcpy(g->values[wv].data, L->w, nw * sizeof(float));
  memcpy(g->values[bv].data, bias, (size_t)L->M * sizeof(float));
  g->values[xv].is_input = 1;
  g->inputs[g->n_inputs++] = xv;
  if (rv >= 0) {
    g->values[rv].is_input = 1;
    g->inputs[g->n_inputs++] = rv;
  }
  g->values[yv].is_output = 1;
  g->outputs[g->n_outputs++] = yv;
  int in[4] = {xv, wv, bv, rv};
  int ni = bd_graph_add_node(g, BD_OP_CONV, "conv", rv >= 0 ? 4 : 3, in, 1, &yv);
  if (ni < 0) return 0;
  g->nodes[ni].p.conv = (bd_conv_params){.kh = L->kh, .kw = L->kw, .sh = L->sh, .sw = L->sw,
                                         .dh = L->dh, .dw = L->dw, .pad_t = L->pt,
                                         .pad_l = L->pl, .pad_b = L->pb, .pad_r = L->pr,
                                         .group = L->G, .act = L->act, .res = L->res};
  const int64_t *d[5] = {xd, wd, bd, yd, yd};
  int r[5] = {4, 4, 1, 4, 4};
  for (int v = 0; v < g->n_values; v++) {
    o->rank[v] = r[v];
    memcpy(o->dims[v], d[v], (size_t)r[v] * sizeof(int64_t));
    o->off[v] = SIZE_MAX; /* constants and graph I/O: no arena */
  }
  o->p = (bd_plan){.batch = L->N, .n_values = g->n_values, .rank = o->rank, .dims = o->dims,
                   .offset = o->off, .n_steps = 1, .steps = o->steps};
  return 1;
}

static int classify(const layer *L, int first) {
  if (first) return CL_STEM;
  if (L->sh > 1 || L->sw > 1) return CL_STRIDED;
  if (L->G == L->C && L->G == L->M)
    return L->kh == 3 && L->kw == 3 ? CL_DW3 : L->kh == 5 && L->kw == 5 ? CL_DW5 : CL_DWX;
  return L->kh == 1 && L->kw == 1 ? CL_PW : CL_DENSE;
}

/* Layers in execution order, with the checks any size from a file gets before use. */
static int collect(const bd_graph *g, const bd_plan *p, layer *out, int max) {
  int n = 0;
  for (int s = 0; s < p->n_steps; s++) {
    const bd_node *nd = &g->nodes[p->steps[s]];
    if (nd->op != BD_OP_CONV) continue;
    if (n == max || nd->n_in < 2) return -1;
    int xv = nd->in[0], wv = nd->in[1], yv = nd->out[0];
    int bv = nd->n_in > 2 ? nd->in[2] : -1;
    if (p->rank[xv] != 4 || p->rank[wv] != 4 || p->rank[yv] != 4 || !g->values[wv].data) return -1;
    for (int i = 0; i < 4; i++)
      if (p->dims[xv][i] < 1 || p->dims[xv][i] > 65536 || p->dims[yv][i] < 1 ||
          p->dims[yv][i] > 65536 || p->dims[wv][i] < 1 || p->dims[wv][i] > 65536)
        return -1;
    const bd_conv_params *cp = &nd->p.conv;
    layer *L = &out[n];
    *L = (layer){.N = (int)p->dims[xv][0], .C = (int)p->dims[xv][1], .H = (int)p->dims[xv][2],
                 .W = (int)p->dims[xv][3], .M = (int)p->dims[yv][1], .OH = (int)p->dims[yv][2],
                 .OW = (int)p->dims[yv][3], .kh = cp->kh, .kw = cp->kw, .sh = cp->sh,
                 .sw = cp->sw, .dh = cp->dh, .dw = cp->dw, .pt = cp->pad_t, .pl = cp->pad_l,
                 .pb = cp->pad_b, .pr = cp->pad_r, .G = cp->group, .act = cp->act,
                 .res = cp->res, .w = g->values[wv].data,
                 .b = bv >= 0 ? g->values[bv].data : NULL};
    if (L->G < 1 || L->C % L->G || L->M % L->G || L->kh < 1 || L->kh > 64 || L->kw < 1 ||
        L->kw > 64 || (int64_t)L->C * L->H * L->W > (1 << 26) ||
        (int64_t)L->M * L->OH * L->OW > (1 << 26))
      return -1;
    L->mflop = 2.0 * L->N * L->M * L->OH * L->OW * (double)(L->C / L->G) * L->kh * L->kw / 1e6;
    L->cls = classify(L, n == 0);
    snprintf(L->name, sizeof L->name, "%s%d->%d k%d s%d g%d @%d%s%s",
             L->G == L->C && L->G == L->M ? "dw " : "", L->C, L->M, L->kh, L->sh, L->G, L->H,
             L->act == BD_ACT_SILU ? " silu" : L->act == BD_ACT_SIGMOID ? " sigm"
             : L->act == BD_ACT_RELU ? " relu" : "", L->res ? " +res" : "");
    n++;
  }
  return n;
}

/* One layer's buffers, our two backends (1 and 2 threads) and the four oneDNN convs. */
typedef struct {
  float *x, *r, *yo, *bias; /* input, residual, our output (the reference), bias */
  size_t nx, ny;
  ours_graph og;
  bd_backend *be[2];
  dconv dc[2][2]; /* [threads - 1][0: blocked, 1: nchw] */
} lrun;

/* Per layer, per thread count (index 0: 1 thread, 1: 2 threads): best ms. */
enum { J_OURS, J_DNNL, J_REO, J_NCHW, J__N };
static const char *job_name[J__N] = {"ours", "dnnl", "reo", "nchw"};

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.onnx [rounds [gap_us]]\n", argv[0]);
    return 2;
  }
  int rounds = argc > 2 ? atoi(argv[2]) : 15;
  long gap_us = argc > 3 ? atol(argv[3]) : 3000;
  if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 15;
  if (gap_us < 0 || gap_us > 1000000) gap_us = 3000;
  int rc = 1;
  bd_err err = {0};
  bd_graph *g = NULL;
  bd_plan *p = NULL;
  bd_compile_report rep;
  dnnl_engine_t eng = NULL;
  dnnl_stream_t strm = NULL;
  static layer L[MAX_LAYERS];
  static double best[MAX_LAYERS][2][J__N];
  static double err_l2[MAX_LAYERS];
  static char impl[MAX_LAYERS][2][132];
  static lrun run[MAX_LAYERS]; /* zero: teardown of unused entries is a no-op */
  if (bd_onnx_load_file(argv[1], &g, &err) != BD_OK || bd_compile(g, NULL, &rep, &err) != BD_OK ||
      bd_plan_new(g, 1, &p, &err) != BD_OK) {
    fprintf(stderr, "%s\n", err.msg);
    goto out;
  }
  int nl = collect(g, p, L, MAX_LAYERS);
  if (nl <= 0) {
    fprintf(stderr, "%s: no usable conv layers (or a conv out of the benchmark's limits)\n", argv[1]);
    goto out;
  }
  DNNL_TRY(dnnl_engine_create(&eng, dnnl_cpu, 0));
  DNNL_TRY(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
  const dnnl_version_t *ver = dnnl_version();
  printf("%s: %d conv layers, batch 1; %d rounds interleaved, min kept, %ld us between runs; "
         "oneDNN %d.%d.%d (%s)\n",
         argv[1], nl, rounds, gap_us, ver->major, ver->minor, ver->patch, ver->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");
  int bad = 0;
  /* Set up every layer first, then interleave the rounds over all layers: a burst of other
   * work on the machine then spoils one round of many layers rather than all rounds of one. */
  for (int li = 0; li < nl; li++) {
    const layer *ly = &L[li];
    lrun *u = &run[li];
    u->nx = (size_t)ly->C * ly->H * ly->W;
    u->ny = (size_t)ly->M * ly->OH * ly->OW;
    u->x = malloc(u->nx * sizeof *u->x);
    u->r = ly->res ? malloc(u->ny * sizeof *u->r) : NULL;
    u->yo = malloc(u->ny * sizeof *u->yo);
    u->bias = calloc((size_t)ly->M, sizeof *u->bias);
    int ok = u->x && u->yo && u->bias && (!ly->res || u->r);
    if (ok && ly->b) memcpy(u->bias, ly->b, (size_t)ly->M * sizeof *u->bias);
    ok = ok && ours_build(&u->og, ly, u->bias, &err);
    if (ok) {
      fill(u->x, u->nx, 1234u + (uint32_t)li);
      if (u->r) fill(u->r, u->ny, 99u + (uint32_t)li);
    }
    for (int t = 0; ok && t < 2; t++) {
      ok = bd_cpu_backend_new(u->og.g, t + 1, &u->be[t], &err) == BD_OK &&
           bd_backend_prepare(u->be[t], &u->og.p, &err) == BD_OK;
      omp_set_num_threads(t + 1); /* oneDNN picks its blocking for the thread count at creation */
      for (int v = 0; ok && v < 2; v++)
        ok = dconv_new(&u->dc[t][v], ly, v == 0, eng, strm, u->x, u->r, u->bias);
      if (ok)
        snprintf(impl[li][t], sizeof impl[li][t], "%.63s/%.63s", u->dc[t][0].impl, u->dc[t][1].impl);
    }
    const float *ins[2] = {u->x, u->r};
    float *outs[1] = {u->yo};
    if (!ok || bd_backend_run(u->be[0], &u->og.p, ins, outs, &err) != BD_OK) {
      fprintf(stderr, "layer %d (%s): setup failed: %s\n", li, ly->name, err.msg);
      goto out;
    }
    for (int t = 0; t < 2; t++)
      for (int j = 0; j < J__N; j++) best[li][t][j] = 1e30;
  }
  for (int rd = 0; rd < rounds; rd++) {
    for (int li = 0; li < nl; li++) {
      lrun *u = &run[li];
      const float *ins[2] = {u->x, u->r};
      float *outs[1] = {u->yo};
      for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        for (int j = 0; j < J__N; j++) {
          /* oneDNN's reference fallbacks (nchw with a residual: ~70 ms) are timed in 2 rounds */
          if (rd > 1 && j == J_NCHW && !strncmp(u->dc[t][1].impl, "ref", 3)) continue;
          /* a warm-up call, then the timed one: workers awake, caches as after a run */
          double ms = 0;
          dconv *d = &u->dc[t][j == J_NCHW];
          for (int k = 0; k < 2; k++) {
            if (j != J_OURS && j != J_REO) dconv_seed(d, strm, u->ny);
            double t0 = now_ms();
            if (j == J_OURS) bd_backend_run(u->be[t], &u->og.p, ins, outs, &err);
            else if (j == J_REO) dconv_reorders(d, strm);
            else dconv_conv(d, strm);
            ms = now_ms() - t0;
          }
          if (ms < best[li][t][j]) best[li][t][j] = ms;
          pause_us(gap_us);
        }
      }
    }
  }
  for (int li = 0; li < nl; li++) {
    lrun *u = &run[li];
    err_l2[li] = 0;
    for (int t = 0; t < 2; t++)
      for (int v = 0; v < 2; v++) {
        const float *yd = dconv_result(&u->dc[t][v], strm, u->ny);
        double e = yd ? rel_l2(yd, u->yo, u->ny) : INFINITY;
        if (e > err_l2[li]) err_l2[li] = e;
      }
    if (!(err_l2[li] <= REL_L2_LIMIT)) {
      fprintf(stderr, "layer %d (%s): oneDNN differs from ours, rel L2 %.3g > %.0e\n", li,
              L[li].name, err_l2[li], REL_L2_LIMIT);
      bad = 1;
    }
  }

  printf("\nPer layer, best ms (ours = our cpu backend; dnnl = oneDNN conv on its blocked layouts;\n"
         "reo = the NCHW<->blocked reorders that conv needs in our pipeline; nchw = oneDNN conv on "
         "plain NCHW;\n"
         "nchw convs on oneDNN's reference implementation (ref:any) are timed in 2 rounds only)\n");
  printf("%3s %-34s %7s | %7s %7s %7s %7s | %7s %7s %7s %7s | %8s  %s\n", "#", "layer", "MFLOP",
         "ours@1", "dnnl@1", "reo@1", "nchw@1", "ours@2", "dnnl@2", "reo@2", "nchw@2", "relL2",
         "oneDNN impl @1 (blocked/nchw)");
  for (int li = 0; li < nl; li++) {
    printf("%3d %-34s %7.1f |", li, L[li].name, L[li].mflop);
    for (int t = 0; t < 2; t++) {
      for (int j = 0; j < J__N; j++) printf(" %7.3f", best[li][t][j]);
      printf(" |");
    }
    printf(" %8.1e  %s\n", err_l2[li], impl[li][0]);
  }
  printf("\nPer layer class, sum of best ms; ratio = ours / oneDNN (> 1: oneDNN faster)\n");
  printf("%-14s %3s %7s |", "class", "n", "MFLOP");
  for (int t = 0; t < 2; t++)
    printf(" %6s@%d %6s@%d %6s@%d %6s@%d %5s %5s |", job_name[0], t + 1, job_name[1], t + 1,
           job_name[2], t + 1, job_name[3], t + 1, "o/d", "o/d+r");
  printf("\n");
  for (int c = 0; c <= CL__N; c++) {
    double s[2][J__N] = {{0}}, mf = 0;
    int n = 0;
    for (int li = 0; li < nl; li++) {
      if (c < CL__N && L[li].cls != c) continue;
      n++;
      mf += L[li].mflop;
      for (int t = 0; t < 2; t++)
        for (int j = 0; j < J__N; j++) s[t][j] += best[li][t][j];
    }
    if (!n) continue;
    printf("%-14s %3d %7.1f |", c < CL__N ? cls_name[c] : "WHOLE NETWORK", n, mf);
    for (int t = 0; t < 2; t++)
      printf(" %8.3f %8.3f %8.3f %8.3f %5.2f %5.2f |", s[t][J_OURS], s[t][J_DNNL], s[t][J_REO],
             s[t][J_NCHW], s[t][J_OURS] / s[t][J_DNNL],
             s[t][J_OURS] / (s[t][J_DNNL] + s[t][J_REO]));
    printf("\n");
  }
  printf("o/d: ours vs oneDNN conv alone (a pipeline that stays in oneDNN's layouts); o/d+r: vs "
         "conv + reorders (oneDNN convs inside our NCHW pipeline)\n");
  double worst = 0;
  for (int li = 0; li < nl; li++)
    if (err_l2[li] > worst) worst = err_l2[li];
  printf("max rel L2 oneDNN vs ours over all layers and variants: %.2e (limit %.0e)\n", worst,
         REL_L2_LIMIT);
  rc = bad;
out:
  for (int li = 0; li < MAX_LAYERS; li++) {
    lrun *u = &run[li];
    for (int t = 0; t < 2; t++) {
      bd_backend_destroy(u->be[t]);
      for (int v = 0; v < 2; v++) dconv_destroy(&u->dc[t][v]);
    }
    bd_graph_destroy(u->og.g);
    free(u->x);
    free(u->r);
    free(u->yo);
    free(u->bias);
  }
  if (strm) dnnl_stream_destroy(strm);
  if (eng) dnnl_engine_destroy(eng);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
  return rc;
}
