/* Convolution for the cpu backend (NCHW, FP32), three paths:
 *  - depthwise (group == C == M): direct per-plane loops, one output row at a time,
 *    each kernel tap a contiguous (stride 1) multiply-add over the valid columns;
 *  - pointwise (1x1, stride 1, pad 0): the input plane already is the GEMM's B matrix;
 *  - general: im2col of a block of output columns into per-thread scratch, then GEMM.
 * Where the CPU has AVX-512 or AVX2 + FMA (optimised builds), pointwise and general convs
 * with at least 6 output channels per group run on the fused tiles of cpu_pw512.c instead
 * of GEMM + epilogue: weights packed once at load
 * into panels of 12 or 8 output channels (bd_cpu_conv_pack); convs with equal strides 1
 * or 2 and dilation 1 as an implicit GEMM that reads a padded, phase-split copy of the
 * tile's input rows instead of an im2col matrix (conv_ig_tile); the rest im2col'd into
 * 32-column strips. On small planes (AVX-512) the implicit GEMM and pointwise convs can
 * instead run the channel-vector tile, whose lanes are output channels and whose pixels
 * are the valid outputs only (cv_choose: where it computes less). This does not depend
 * on OpenBLAS recognising the CPU (Debian 12's 0.3.21 takes an Emerald Rapids for a
 * Prescott and runs SSE3 kernels).
 * Work items are (image, group, output-channel block, output-column block) tiles handed
 * out dynamically to the pool; each tile's bias / residual / activation epilogue runs
 * right after its GEMM while the tile is in cache. The tiling depends on the shapes and,
 * beyond 4 threads, on the thread count (2 items per thread at least); the path and the
 * tile a conv takes depend on the shapes only, and every output's sum runs over k in
 * one order whatever the tiling, so results are bit-identical for any thread count. */
#include <stdlib.h>
#include <string.h>

#include "cpu_act.h"
#include "cpu_internal.h"

#ifdef BD_HAVE_BLAS
#include <cblas.h>
#endif

BD_CPU_HOT

#define CONV_COL_TARGET 131072 /* im2col floats per tile (512 KiB, half an L2) */
/* Work items a conv is split into at least (planes into column blocks, then channels
 * into blocks), so that every thread has work: 8, or 2 per thread beyond 4 threads. */
#define CONV_MIN_TASKS 8
static int conv_min_tasks(int threads) {
  int t = 2 * threads;
  return t < CONV_MIN_TASKS ? CONV_MIN_TASKS : t > 512 ? 512 : t;
}

typedef struct {
  int N, C, H, W, M, OH, OW, G, Cg, Mg, K;
  int kind; /* 0 general, 1 pointwise, 2 depthwise */
  /* kind 0 through the fused tiles as an implicit GEMM (no im2col), where strides are
   * equal (1 or 2) and dilations 1: output t = oh * Wq + ow (ow >= OW junk, dropped)
   * reads tap (ci, ki, kj) at a constant offset from t in a zero-padded copy of the
   * input split into S x S phase planes of pitch Wq. Columns below are then flat t. */
  int ig, S, Wq, T;
  /* an implicit GEMM through the channel-vector tile (bd_cpu_cv512_tile): lanes are
   * output channels and only valid outputs are computed (small planes) */
  int cv;
  int min_tasks; /* conv_min_tasks of the backend's threads */
  int cb, ncb, mb, nmb;
} conv_shape;

typedef struct {
  bd_cpu *c;
  const bd_conv_params *cp;
  conv_shape s;
  const float *x, *w, *bias, *res;
  float *y;
  int fused;          /* the fused tiles' ISA (512 or 256), 0: GEMM + epilogue */
  const float *wpack; /* weights packed at load (bd_cpu_conv_pack), or NULL: pack per tile */
  /* per thread: 1 + the (image, group, column block) whose input strips or region its
   * scratch holds, 0 for none; the output-channel blocks of one column block are
   * consecutive items, so a thread that takes two in a row fills once */
  int64_t held[BD_CPU_MAX_THREADS];
} conv_ctx;

static void conv_tiling(conv_shape *s) {
  int ohw = s->ig ? s->T : s->OH * s->OW;
  int cb;
  if (s->ig) {
    /* the tile's padded input region, about Cg * S * S * cb floats, in half an L2 */
    cb = (int)((65536 / ((int64_t)s->Cg * s->S * s->S)) & ~31);
    if (cb < 64) cb = 64;
    if (cb > 4096) cb = 4096;
  } else if (s->kind == 1) {
    cb = 2048;
  } else {
    cb = CONV_COL_TARGET / (s->K > 0 ? s->K : 1);
    cb &= ~31; /* whole 32-column strips for the fused tiles */
    if (cb < 64) cb = 64;
    if (cb > 4096) cb = 4096;
  }
  if (cb > ohw) cb = ohw;
  int64_t base = (int64_t)s->N * s->G;
  int ncb = (ohw + cb - 1) / cb;
  if (base * ncb < s->min_tasks && cb > 64) {
    int64_t want = (s->min_tasks + base - 1) / base;
    int nc = (int)((ohw + want - 1) / want);
    nc = (nc + 15) & ~15;
    if (nc < 64) nc = 64;
    if (nc < cb) cb = nc;
    if (cb > ohw) cb = ohw;
    ncb = (ohw + cb - 1) / cb;
  }
  int mb = s->Mg, nmb = 1;
  if (base * ncb < s->min_tasks && s->Mg >= 32) {
    int64_t want = (s->min_tasks + base * ncb - 1) / (base * ncb);
    int m = (int)((s->Mg + want - 1) / want);
    /* whole panels of the packed weights (12 or 8 rows), whole 48-channel blocks of the
     * channel-vector tile's */
    m = s->cv ? (m + 47) / 48 * 48 : (m + 23) / 24 * 24;
    mb = m;
    nmb = (s->Mg + mb - 1) / mb;
  }
  s->cb = cb;
  s->ncb = ncb;
  s->mb = mb;
  s->nmb = nmb;
}

/* The fused tiles take pointwise and dense convs with at most BD_CPU_PW512_MAX_K taps and at
 * least 6 output channels per group (their blocks are 8 or 12 channels: fewer would be
 * mostly padding, in compute and in the packed weights). */
static int fused_ok(const conv_shape *s) {
  return s->kind != 2 && s->K <= BD_CPU_PW512_MAX_K && s->Mg >= 6;
}

/* An implicit-GEMM tile's region at most this many floats (16 MiB per thread); beyond
 * (huge planes with many channels) the conv takes the im2col strips instead. */
#define CONV_IG_MAX_REGION ((size_t)1 << 22)
static size_t ig_region_floats(const conv_shape *s, const bd_conv_params *cp, int cw);

/* Which fused tiles a conv would run on: the backend's ISA (0 none, 256, 512) and its
 * channel-vector choice (BD_CPU_CV_*); and the backend's thread count. */
typedef struct {
  int isa, cv, threads;
} conv_tiles;

static int cv_choose(const conv_shape *s, int mode);

/* t: the fused tiles (AVX-512 or AVX2) that will run it (the implicit GEMM tiles
 * differently), or NULL for none. */
static bd_status conv_shape_of(const bd_graph *g, const bd_plan *p, const bd_node *n,
                               const conv_tiles *t, conv_shape *s, bd_err *err) {
  int fused = t && t->isa;
  s->min_tasks = CONV_MIN_TASKS; /* the choices below never depend on the thread count */
  const bd_conv_params *cp = &n->p.conv;
  if (n->n_in < 2 || n->n_out < 1 || n->in[0] < 0 || n->in[1] < 0)
    return bd_err_set(err, BD_E_INVALID, "conv '%s': needs X and W", n->name);
  int xv = n->in[0], wv = n->in[1], yv = n->out[0];
  if (p->rank[xv] != 4 || p->rank[wv] != 4 || p->rank[yv] != 4)
    return bd_err_set(err, BD_E_UNSUPPORTED, "conv '%s': only 2-D convolutions (rank 4)",
                      n->name);
  if (g->values[xv].dtype != BD_DT_F32 || g->values[wv].dtype != BD_DT_F32)
    return bd_err_set(err, BD_E_UNSUPPORTED, "conv '%s': only float32", n->name);
  const int64_t *xd = p->dims[xv], *wd = p->dims[wv], *yd = p->dims[yv];
  for (int i = 0; i < 4; i++)
    if (xd[i] < 0 || xd[i] > (1 << 24) || wd[i] < 0 || wd[i] > (1 << 24) || yd[i] < 0 ||
        yd[i] > (1 << 24))
      return bd_err_set(err, BD_E_LIMIT, "conv '%s': dimension out of range", n->name);
  if (cp->group < 1 || cp->kh < 1 || cp->kw < 1 || cp->sh < 1 || cp->sw < 1 || cp->dh < 1 ||
      cp->dw < 1 || cp->pad_t < 0 || cp->pad_l < 0 || cp->pad_b < 0 || cp->pad_r < 0)
    return bd_err_set(err, BD_E_INVALID, "conv '%s': bad parameters", n->name);
  s->N = (int)xd[0];
  s->C = (int)xd[1];
  s->H = (int)xd[2];
  s->W = (int)xd[3];
  s->M = (int)wd[0];
  s->G = cp->group;
  if (s->C % s->G || s->M % s->G || wd[1] * s->G != s->C || wd[2] != cp->kh || wd[3] != cp->kw)
    return bd_err_set(err, BD_E_INVALID, "conv '%s': weight shape does not match input/group",
                      n->name);
  s->Cg = s->C / s->G;
  s->Mg = s->M / s->G;
  int64_t oh = ((int64_t)s->H + cp->pad_t + cp->pad_b - (int64_t)cp->dh * (cp->kh - 1) - 1) / cp->sh + 1;
  int64_t ow = ((int64_t)s->W + cp->pad_l + cp->pad_r - (int64_t)cp->dw * (cp->kw - 1) - 1) / cp->sw + 1;
  if (oh < 1 || ow < 1 || yd[0] != s->N || yd[1] != s->M || yd[2] != oh || yd[3] != ow)
    return bd_err_set(err, BD_E_INVALID, "conv '%s': output shape does not match", n->name);
  if (oh * ow > INT32_MAX / 2 || (int64_t)s->H * s->W > INT32_MAX / 2)
    return bd_err_set(err, BD_E_LIMIT, "conv '%s': plane too large", n->name);
  s->OH = (int)oh;
  s->OW = (int)ow;
  int64_t k = (int64_t)s->Cg * cp->kh * cp->kw;
  if (k > (1 << 24)) return bd_err_set(err, BD_E_LIMIT, "conv '%s': kernel too large", n->name);
  s->K = (int)k;
  if (n->n_in > 2 && n->in[2] >= 0 && bd_cpu_numel(p, n->in[2]) != s->M)
    return bd_err_set(err, BD_E_INVALID, "conv '%s': bias size", n->name);
  if (cp->res != BD_RES_NONE) {
    if (n->n_in < 4 || n->in[3] < 0 || bd_cpu_numel(p, n->in[3]) != bd_cpu_numel(p, yv))
      return bd_err_set(err, BD_E_INVALID, "conv '%s': residual missing or wrong size", n->name);
  }
  if (s->G == s->C && s->G == s->M)
    s->kind = 2;
  else if (cp->kh == 1 && cp->kw == 1 && cp->sh == 1 && cp->sw == 1 && !cp->pad_t && !cp->pad_l &&
           !cp->pad_b && !cp->pad_r)
    s->kind = 1;
  else
    s->kind = 0;
  s->ig = 0;
  if (fused && s->kind == 0 && fused_ok(s) && cp->sh == cp->sw && (cp->sh == 1 || cp->sh == 2) &&
      cp->dh == 1 && cp->dw == 1) {
    int S = cp->sh;
    int64_t wp = (int64_t)s->W + cp->pad_l + cp->pad_r;
    if (wp < (int64_t)S * (s->OW - 1) + cp->kw) wp = (int64_t)S * (s->OW - 1) + cp->kw;
    int64_t wq = (wp + S - 1) / S;
    /* junk columns at most a quarter of the work, and the flat range an int */
    if ((wq - s->OW) * 4 <= wq && wq * s->OH < INT32_MAX / 2) {
      s->ig = 1;
      s->S = S;
      s->Wq = (int)wq;
      s->T = (int)(wq * s->OH);
    }
  }
  conv_tiling(s);
  if (s->ig && ig_region_floats(s, cp, s->cb) > CONV_IG_MAX_REGION) {
    s->ig = 0;
    conv_tiling(s);
  }
  s->cv = t && t->isa == 512 && (s->ig || (s->kind == 1 && fused_ok(s))) && cv_choose(s, t->cv);
  s->min_tasks = conv_min_tasks(t ? t->threads : 1);
  if (s->cv || s->min_tasks != CONV_MIN_TASKS) conv_tiling(s);
  return BD_OK;
}

/* The channel-vector tile where it costs less than the row tile. The row tile's columns
 * are flat t including the junk ones, in 32-column strips (16 for a last strip of at
 * most 16), and its channels whole panels of R. The channel-vector tile's pixels are the
 * valid outputs in blocks of 8 (about 4 lost per tile), its channels whole blocks
 * (bd_cpu_cv512_blocks); writing each result out channel by channel costs about what 32
 * more taps would, and with fewer loads per FMA it is ~5% faster per useful FMA on the
 * implicit GEMM (measured with cpu_conv_bench, DAMO-YOLO layers: 0.92-0.97 of the row
 * tile's time at equal work, 0.87 for 3x3 256->256 on a 32 x 32 plane, 1.08 at K = 288),
 * not on pointwise convs, whose row tile reads the input in place (1.03-1.04 at 20 x 20
 * and 40 x 40, 0.89 at 10 x 10). */
static int cv_choose(const conv_shape *s, int mode) {
  if (mode == BD_CPU_CV_NEVER || s->Mg > BD_CPU_CV512_MAX_MG) return 0;
  if (mode == BD_CPU_CV_ALWAYS) return 1;
  double P = (double)s->OH * s->OW, row = 0;
  int cols = s->ig ? s->T : s->OH * s->OW;
  for (int i = 0; i < s->ncb; i++) {
    int cw = i < s->ncb - 1 ? s->cb : cols - i * s->cb, r = cw % 32;
    row += cw - r + (r == 0 ? 0 : r <= 16 ? 16 : 32);
  }
  int R = bd_cpu_pw512_rows(s->Mg);
  row *= (double)((s->Mg + R - 1) / R * R) / ((double)s->Mg * P);
  int st[BD_CPU_CV512_MAX_BLOCKS], wd[BD_CPU_CV512_MAX_BLOCKS];
  int nb = bd_cpu_cv512_blocks(s->Mg, st, wd);
  double cv = (P + 4.0 * s->ncb) * (st[nb - 1] + wd[nb - 1]) / ((double)s->Mg * P) *
              (1.0 + 32.0 / s->K) * (s->ig ? 0.95 : 1.0);
  return cv < row;
}

bd_status bd_cpu_conv_check(const bd_graph *g, const bd_plan *p, const bd_node *n, bd_err *err) {
  conv_shape s;
  return conv_shape_of(g, p, n, NULL, &s, err);
}

int bd_cpu_conv_path(const bd_graph *g, const bd_plan *p, const bd_node *n) {
  conv_shape s;
  if (conv_shape_of(g, p, n, NULL, &s, NULL) != BD_OK) return 0;
  return s.kind;
}

static int dw_fast(const bd_conv_params *cp);
static size_t dw_scratch(const conv_shape *s, const bd_conv_params *cp);

size_t bd_cpu_conv_scratch(const bd_graph *g, const bd_plan *p, const bd_node *n) {
  conv_shape s;
  if (conv_shape_of(g, p, n, NULL, &s, NULL) != BD_OK) return 0;
  size_t need = bd_cpu_gemm_scratch_floats();
  if (s.kind == 0) need += (size_t)s.K * (size_t)((s.cb + 31) & ~31) + 16;     /* strips */
  if (fused_ok(&s)) need += (size_t)12 * s.K + 16;                             /* w panel */
  if (s.kind == 1 && need < bd_cpu_gemm_scratch_floats() + 2 * (size_t)s.cb + 16)
    need = bd_cpu_gemm_scratch_floats() + 2 * (size_t)s.cb + 16; /* channel-vector lists */
  if (s.kind == 2 && dw_fast(&n->p.conv) && dw_scratch(&s, &n->p.conv) > need)
    need = dw_scratch(&s, &n->p.conv);
  /* the implicit GEMM: region, raw output tile (or the channel-vector tile's pixel
   * lists), w panel, tap offsets */
  conv_shape f;
  const conv_tiles rows = {.isa = 512, .cv = BD_CPU_CV_NEVER};
  if (conv_shape_of(g, p, n, &rows, &f, NULL) == BD_OK && f.ig) {
    size_t ig = ig_region_floats(&f, &n->p.conv, f.cb) + (size_t)f.mb * (size_t)f.cb + 16 +
                (size_t)12 * f.K + 16 + (size_t)f.K + 16;
    if (ig > need) need = ig;
  }
  return need;
}

/* y = act(y + b [+ r]) [+ r] over one row segment. */
BD_CPU_CLONES
static void epilogue_row(float *restrict y, int len, float b, const float *restrict r,
                         bd_act act, bd_res_mode res) {
  if (res == BD_RES_PRE_ACT)
    for (int j = 0; j < len; j++) y[j] += b + r[j];
  else
    for (int j = 0; j < len; j++) y[j] += b;
  switch (act) {
    case BD_ACT_RELU:
      for (int j = 0; j < len; j++) y[j] = y[j] > 0.f ? y[j] : 0.f;
      break;
    case BD_ACT_SIGMOID:
      bd_cpu_sigmoid_inplace(y, len, 0);
      break;
    case BD_ACT_SILU:
      bd_cpu_sigmoid_inplace(y, len, 1);
      break;
    case BD_ACT_NONE:
      break;
  }
  if (res == BD_RES_POST_ACT)
    for (int j = 0; j < len; j++) y[j] += r[j];
}

/* Rows [0, K) x columns [j0, j0 + cw) of the image's im2col matrix for group g, row r at
 * col + r * ld. */
static void im2col_block(const conv_ctx *cx, const float *xg, int j0, int cw, float *col,
                         size_t ld) {
  const conv_shape *s = &cx->s;
  const bd_conv_params *cp = cx->cp;
  int row = 0;
  for (int ci = 0; ci < s->Cg; ci++) {
    const float *xp = xg + (size_t)ci * s->H * s->W;
    for (int ki = 0; ki < cp->kh; ki++) {
      for (int kj = 0; kj < cp->kw; kj++, row++) {
        float *dst = col + (size_t)row * ld;
        int j = j0, end = j0 + cw;
        while (j < end) {
          int oh = j / s->OW, ow0 = j % s->OW;
          int ow1 = s->OW;
          if (ow1 - ow0 > end - j) ow1 = ow0 + (end - j);
          int len = ow1 - ow0;
          float *d = dst + (j - j0);
          int ih = oh * cp->sh - cp->pad_t + ki * cp->dh;
          if (ih < 0 || ih >= s->H) {
            memset(d, 0, (size_t)len * sizeof *d);
          } else {
            const float *xr = xp + (size_t)ih * s->W;
            int off = kj * cp->dw - cp->pad_l;
            /* valid ow: 0 <= ow * sw + off < W */
            int lo = off >= 0 ? 0 : (-off + cp->sw - 1) / cp->sw;
            int hi = (s->W - 1 - off) >= 0 ? (s->W - 1 - off) / cp->sw + 1 : 0;
            if (hi > s->OW) hi = s->OW;
            for (int ow = ow0; ow < ow1; ow++) {
              if (ow < lo || ow >= hi) {
                d[ow - ow0] = 0.f;
              } else if (cp->sw == 1) {
                int e = ow1 < hi ? ow1 : hi;
                memcpy(d + (ow - ow0), xr + ow + off, (size_t)(e - ow) * sizeof *d);
                ow = e - 1;
              } else {
                d[ow - ow0] = xr[ow * cp->sw + off];
              }
            }
          }
          j += len;
        }
      }
    }
  }
}

#ifdef BD_HAVE_BLAS
static void conv_rows_epilogue_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const conv_ctx *cx = arg;
  size_t ohw = (size_t)cx->s.OH * cx->s.OW;
  for (int64_t i = b; i < e; i++) {
    int oc = (int)(i % cx->s.M);
    epilogue_row(cx->y + (size_t)i * ohw, (int)ohw, cx->bias ? cx->bias[oc] : 0.f,
                 cx->res ? cx->res + (size_t)i * ohw : NULL, cx->cp->act, cx->cp->res);
  }
}
#endif

/* One run of the fused tiles over `rows` channels: AVX-512 with the epilogue in
 * registers, or AVX2 raw followed (unless raw) by the epilogue over each row. */
static void fused_run(const conv_ctx *cx, int raw, int R, int rows, int cw, const float *panel,
                      const float *x, int ldx, size_t sstride, const int *koff, float *y, int ldy,
                      const float *bias, const float *res, bd_act act, bd_res_mode rmode) {
  const int K = cx->s.K;
  if (cx->fused == 512) {
    bd_cpu_pw512_tile(R, rows, cw, K, panel, x, ldx, sstride, koff, y, ldy, bias, res, act, rmode);
    return;
  }
  bd_cpu_pw256_tile(R, rows, cw, K, panel, x, ldx, sstride, koff, y, ldy);
  if (raw) return;
  for (int r = 0; r < rows; r++)
    epilogue_row(y + (size_t)r * ldy, cw, bias ? bias[r] : 0.f, res ? res + (size_t)r * ldy : NULL,
                 act, rmode);
}

/* Output channels [m0, m0 + mc) of group g of image n through the channel-vector tile,
 * over np pixels (input x[koff[k] + pb[i]], or x[k * ldx + pb[i]] without koff; output
 * y's plane offset yo[i]), on the weights packed for it at load. */
static void cv_run(const conv_ctx *cx, int n, int g, int m0, int mc, const float *x,
                   const int *koff, int ldx, int np, const int *pb, const int *yo) {
  const conv_shape *s = &cx->s;
  size_t ohw = (size_t)s->OH * s->OW, yg = ((size_t)n * s->M + (size_t)g * s->Mg) * ohw;
  bd_cpu_cv512_tile(s->Mg, m0, m0 + mc, s->K,
                    cx->wpack + (size_t)g * bd_cpu_cv512_packed_floats(s->Mg, s->K), x, koff, ldx,
                    np, pb, yo, cx->y + yg, (int)ohw, cx->bias ? cx->bias + g * s->Mg : NULL,
                    cx->res ? cx->res + yg : NULL, cx->cp->act, cx->cp->res);
}

/* d = a + b over one row segment. */
BD_CPU_CLONES
static void add_rows(float *restrict d, const float *restrict a, const float *restrict b, int len) {
  for (int j = 0; j < len; j++) d[j] = a[j] + b[j];
}

/* Output channels [m0, m0 + mc) of group g (first global channel oc0) through the fused
 * tiles, raw (no bias, activation or residual) or with the conv's epilogue (the residual
 * only where res is given): with the
 * weights packed at load, one run over every panel (strips outer); otherwise each block
 * of R channels is packed into wpan here, then run. */
static void fused_rows(const conv_ctx *cx, int g, int m0, int mc, int oc0, int raw, float *y,
                       int ldy, const float *x, int ldx, size_t sstride, const int *koff,
                       const float *res, int cw, float *wpan) {
  const conv_shape *s = &cx->s;
  int R = bd_cpu_pw512_rows(s->Mg); /* m0 is a multiple of 24, so of R */
  const float *bias = !raw && cx->bias ? cx->bias + oc0 : NULL;
  bd_act act = raw ? BD_ACT_NONE : cx->cp->act;
  bd_res_mode rmode = raw || !res ? BD_RES_NONE : cx->cp->res;
  if (raw) res = NULL;
  if (cx->wpack) {
    const float *panels =
        cx->wpack + ((size_t)g * ((s->Mg + R - 1) / R) + (size_t)m0 / R) * (size_t)R * s->K;
    fused_run(cx, raw, R, mc, cw, panels, x, ldx, sstride, koff, y, ldy, bias, res, act, rmode);
    return;
  }
  for (int i = 0; i < mc; i += R) {
    int rows = mc - i < R ? mc - i : R;
    bd_cpu_pw512_pack_w(R, rows, s->K, cx->w + (size_t)(oc0 + i) * s->K, s->K, wpan);
    fused_run(cx, raw, R, rows, cw, wpan, x, ldx, sstride, koff, y + (size_t)i * ldy, ldy,
              bias ? bias + i : NULL, res ? res + (size_t)i * ldy : NULL, act, rmode);
  }
}

/* ---- implicit GEMM (fused tiles, strides 1 or 2, dilation 1) ----
 * A tile covers flat outputs [t0, t0 + cw) (t = oh * Wq + ow), i.e. output rows
 * oh_a..oh_b. Its region holds, per input channel and phase (pr, pc), Hr rows of Wq
 * padded input: row r is padded input row (oh_a + r) * S + pr, column c' padded column
 * c' * S + pc. Tap (ci, ki, kj) of output t then sits at koff(ci, ki, kj) + t - oh_a * Wq.
 * The last row is slack for junk columns reading past the row end. */
static int ig_rows(const conv_shape *s, const bd_conv_params *cp, int oh_a, int oh_b) {
  return oh_b - oh_a + 1 + (cp->kh - 1) / s->S + 1;
}

static size_t ig_region_floats(const conv_shape *s, const bd_conv_params *cp, int cw) {
  /* cw flat columns span at most cw / Wq + 2 output rows */
  int rows = ig_rows(s, cp, 0, cw / s->Wq + 1);
  return (size_t)s->Cg * (size_t)(s->S * s->S) * (size_t)rows * (size_t)s->Wq + 16;
}

/* Rows are short (a phase plane of a 20-pixel row is 11 floats), so the fill is plain
 * loops: GCC would turn the zeroing loops into memset calls, whose call costs more
 * than the row. */
BD_CPU_CLONES BD_CPU_NO_LOOP_CALLS static void ig_fill(const conv_ctx *cx, const float *xg,
                                                       int oh_a, int Hr, float *region) {
  const conv_shape *s = &cx->s;
  const bd_conv_params *cp = cx->cp;
  const int S = s->S, Wq = s->Wq;
  for (int ci = 0; ci < s->Cg; ci++) {
    const float *xp = xg + (size_t)ci * s->H * s->W;
    for (int pr = 0; pr < S; pr++)
      for (int pc = 0; pc < S; pc++) {
        float *pl = region + ((size_t)(ci * S + pr) * S + pc) * (size_t)Hr * Wq;
        /* columns c' with 0 <= c' * S + pc - pad_l < W */
        int off = pc - cp->pad_l;
        int lo = off >= 0 ? 0 : (-off + S - 1) / S;
        int hi = s->W - 1 - off >= 0 ? (s->W - 1 - off) / S + 1 : 0;
        if (hi > Wq) hi = Wq;
        if (lo > hi) lo = hi;
        for (int r = 0; r < Hr; r++) {
          float *restrict d = pl + (size_t)r * Wq;
          int ih = (oh_a + r) * S + pr - cp->pad_t;
          int c = 0;
          if (ih >= 0 && ih < s->H) {
            const float *restrict xr = xp + (size_t)ih * s->W + off;
            for (; c < lo; c++) d[c] = 0.f;
            if (S == 1)
              for (; c < hi; c++) d[c] = xr[c];
            else
              for (; c < hi; c++) d[c] = xr[2 * c];
          }
          for (; c < Wq; c++) d[c] = 0.f;
        }
      }
  }
}

static void conv_ig_tile(const conv_ctx *cx, int n, int g, int m0, int mc, int oc0, int t0, int cw,
                         int fill, float *scr) {
  const conv_shape *s = &cx->s;
  const bd_conv_params *cp = cx->cp;
  const int S = s->S, Wq = s->Wq, ohw = s->OH * s->OW;
  int oh_a = t0 / Wq, oh_b = (t0 + cw - 1) / Wq;
  int Hr = ig_rows(s, cp, oh_a, oh_b);
  float *region = scr;
  float *out = region + ig_region_floats(s, cp, s->cb);
  float *wpan = out + (size_t)s->mb * (size_t)s->cb + 16;
  int *koff = (int *)(wpan + (size_t)12 * s->K + 16);
  const float *xg = cx->x + ((size_t)n * s->C + (size_t)g * s->Cg) * s->H * s->W;
  if (fill) { /* else this thread's scratch holds this tile's region and offsets already */
    ig_fill(cx, xg, oh_a, Hr, region);
    int k = 0;
    for (int ci = 0; ci < s->Cg; ci++)
      for (int ki = 0; ki < cp->kh; ki++)
        for (int kj = 0; kj < cp->kw; kj++)
          koff[k++] = (int)(((size_t)(ci * S + ki % S) * S + kj % S) * (size_t)Hr * Wq +
                            (size_t)(ki / S) * Wq + (size_t)(kj / S));
  }
  if (s->cv) {
    /* the valid outputs of [t0, t0 + cw): region offset and offset in y's plane */
    int *pb = (int *)out, *yo = pb + cw, np = 0;
    for (int oh = oh_a; oh <= oh_b; oh++) {
      int lo = t0 - oh * Wq > 0 ? t0 - oh * Wq : 0;
      int hi = t0 + cw - oh * Wq < s->OW ? t0 + cw - oh * Wq : s->OW;
      for (int ow = lo; ow < hi; ow++, np++) {
        pb[np] = (oh - oh_a) * Wq + ow;
        yo[np] = oh * s->OW + ow;
      }
    }
    cv_run(cx, n, g, m0, mc, region, koff, 0, np, pb, yo);
    return;
  }
  const float *x = region + (t0 - oh_a * Wq);
  /* bias and activation in the tile's registers; a residual lives in y's layout (no junk
   * columns), so it is added on the way into y, unless it goes in before the activation
   * (then the tile is raw and the whole epilogue runs on the way) */
  int raw = cp->res == BD_RES_PRE_ACT;
  fused_rows(cx, g, m0, mc, oc0, raw, out, cw, x, 0, 32, koff, NULL, cw, wpan);
  /* drop the junk columns */
  for (int i = 0; i < mc; i++) {
    size_t yo = ((size_t)n * s->M + oc0 + i) * ohw;
    float b = cx->bias ? cx->bias[oc0 + i] : 0.f;
    for (int oh = oh_a; oh <= oh_b; oh++) {
      int lo = t0 - oh * Wq > 0 ? t0 - oh * Wq : 0;
      int hi = t0 + cw - oh * Wq < s->OW ? t0 + cw - oh * Wq : s->OW;
      if (lo >= hi) continue;
      float *d = cx->y + yo + (size_t)oh * s->OW + lo;
      const float *o = out + (size_t)i * cw + (oh * Wq + lo - t0);
      const float *r = cx->res ? cx->res + yo + (size_t)oh * s->OW + lo : NULL;
      if (raw) {
        memcpy(d, o, (size_t)(hi - lo) * sizeof *d);
        epilogue_row(d, hi - lo, b, r, cp->act, cp->res);
      } else if (r) {
        add_rows(d, o, r, hi - lo);
      } else {
        memcpy(d, o, (size_t)(hi - lo) * sizeof *d);
      }
    }
  }
}

static void conv_gemm_task(void *arg, int64_t item, int64_t end, int tid) {
  (void)end;
  conv_ctx *cx = arg; /* only held[tid] is written, by this thread */
  const conv_shape *s = &cx->s;
  int64_t t = item;
  int mbi = (int)(t % s->nmb);
  t /= s->nmb;
  int cbi = (int)(t % s->ncb);
  t /= s->ncb;
  int64_t key = t * s->ncb + cbi + 1;
  int fill = cx->held[tid] != key;
  cx->held[tid] = key;
  int g = (int)(t % s->G);
  int n = (int)(t / s->G);
  int ohw = s->OH * s->OW, hw = s->H * s->W;
  int cols = cx->fused && s->ig ? s->T : ohw; /* the implicit GEMM's columns are flat t */
  int j0 = cbi * s->cb, cw = s->cb;
  if (j0 + cw > cols) cw = cols - j0;
  int m0 = mbi * s->mb, mc = s->mb;
  if (m0 + mc > s->Mg) mc = s->Mg - m0;
  float *scr = bd_cpu_scratch(cx->c, tid);
  float *gemm_scr = scr;
  const float *xg = cx->x + ((size_t)n * s->C + (size_t)g * s->Cg) * hw;
  int oc0 = g * s->Mg + m0;
  float *y = cx->y + ((size_t)n * s->M + oc0) * ohw + j0;
  if (cx->fused && s->ig) {
    conv_ig_tile(cx, n, g, m0, mc, oc0, j0, cw, fill, scr);
    return;
  }
  if (cx->fused && s->cv) { /* pointwise: the input planes in place, pixels j0.. */
    int *pb = (int *)(scr + bd_cpu_gemm_scratch_floats()), *yo = pb + cw;
    for (int j = 0; j < cw; j++) {
      pb[j] = j;
      yo[j] = j0 + j;
    }
    cv_run(cx, n, g, m0, mc, xg + j0, NULL, hw, cw, pb, yo);
    return;
  }
  if (cx->fused) {
    /* Fused tiles: the im2col matrix goes into 32-column strips, each K x 32 and
     * contiguous (the pointwise input is read in place); the weights of R output channels
     * are a K x R panel. */
    float *col = scr + bd_cpu_gemm_scratch_floats();
    const float *b = xg + j0;
    int ldb = hw;
    size_t sstride = 32;
    if (s->kind == 0) {
      for (int jj = 0; fill && jj < cw; jj += 32)
        im2col_block(cx, xg, j0 + jj, cw - jj < 32 ? cw - jj : 32, col + (size_t)jj * s->K, 32);
      b = col;
      ldb = 32;
      sstride = (size_t)32 * s->K;
    }
    float *wpan = col + (s->kind == 0 ? (size_t)s->K * (size_t)((cw + 31) & ~31) + 16 : 0);
    fused_rows(cx, g, m0, mc, oc0, 0, y, ohw, b, ldb, sstride, NULL,
               cx->res ? cx->res + ((size_t)n * s->M + oc0) * ohw + j0 : NULL, cw, wpan);
    return;
  }
  const float *b;
  int ldb;
  if (s->kind == 1) {
    b = xg + j0;
    ldb = hw;
  } else {
    float *col = scr + bd_cpu_gemm_scratch_floats();
    im2col_block(cx, xg, j0, cw, col, (size_t)cw);
    b = col;
    ldb = cw;
  }
  bd_cpu_gemm(mc, cw, s->K, cx->w + (size_t)oc0 * s->K, s->K, b, ldb, y, ohw, 0, gemm_scr);
  for (int i = 0; i < mc; i++) {
    size_t off = (size_t)i * ohw;
    const float *r = cx->res ? cx->res + ((size_t)n * s->M + oc0) * ohw + j0 + off : NULL;
    epilogue_row(y + off, cw, cx->bias ? cx->bias[oc0 + i] : 0.f, r, cx->cp->act, cx->cp->res);
  }
}

/* Output columns [lo, hi) for which kernel column kj reads inside the input row. */
static inline void tap_range(const conv_shape *s, const bd_conv_params *cp, int kj, int *lo,
                             int *hi) {
  int off = kj * cp->dw - cp->pad_l;
  *lo = off >= 0 ? 0 : (-off + cp->sw - 1) / cp->sw;
  *hi = (s->W - 1 - off) >= 0 ? (s->W - 1 - off) / cp->sw + 1 : 0;
  if (*hi > s->OW) *hi = s->OW;
  if (*lo > *hi) *lo = *hi;
}

BD_CPU_CLONES
static void dw_plane(const conv_ctx *cx, int n, int ch) {
  const conv_shape *s = &cx->s;
  const bd_conv_params *cp = cx->cp;
  int ohw = s->OH * s->OW;
  const float *xp = cx->x + ((size_t)n * s->C + ch) * s->H * s->W;
  const float *wp = cx->w + (size_t)ch * cp->kh * cp->kw;
  float *yp = cx->y + ((size_t)n * s->M + ch) * ohw;
  const float *rp = cx->res ? cx->res + ((size_t)n * s->M + ch) * ohw : NULL;
  float b = cx->bias ? cx->bias[ch] : 0.f;
  for (int oh = 0; oh < s->OH; oh++) {
    float *restrict yr = yp + (size_t)oh * s->OW;
    for (int ow = 0; ow < s->OW; ow++) yr[ow] = 0.f;
    for (int ki = 0; ki < cp->kh; ki++) {
      int ih = oh * cp->sh - cp->pad_t + ki * cp->dh;
      if (ih < 0 || ih >= s->H) continue;
      const float *restrict xr = xp + (size_t)ih * s->W;
      const float *wk = wp + ki * cp->kw;
      if ((cp->kw == 3 || cp->kw == 5) && cp->dw == 1 && (cp->sw == 1 || cp->sw == 2)) {
        /* all taps of the kernel row in one pass over the output row (one load/store of
         * y per kernel row instead of per tap); the borders tap by tap */
        int L = 0, Hh = s->OW;
        for (int kj = 0; kj < cp->kw; kj++) {
          int lo, hi;
          tap_range(s, cp, kj, &lo, &hi);
          if (lo > L) L = lo;
          if (hi < Hh) Hh = hi;
        }
        if (L < Hh) {
          const float *restrict xs = xr;
          const int o = -cp->pad_l; /* in range for every ow in [L, Hh) */
          float w0 = wk[0], w1 = wk[1], w2 = wk[2];
          if (cp->kw == 3 && cp->sw == 1) {
            for (int ow = L; ow < Hh; ow++)
              yr[ow] += w0 * xs[ow + o] + w1 * xs[ow + o + 1] + w2 * xs[ow + o + 2];
          } else if (cp->kw == 3) {
            for (int ow = L; ow < Hh; ow++)
              yr[ow] += w0 * xs[2 * ow + o] + w1 * xs[2 * ow + o + 1] + w2 * xs[2 * ow + o + 2];
          } else if (cp->sw == 1) {
            float w3 = wk[3], w4 = wk[4];
            for (int ow = L; ow < Hh; ow++)
              yr[ow] += w0 * xs[ow + o] + w1 * xs[ow + o + 1] + w2 * xs[ow + o + 2] + w3 * xs[ow + o + 3] +
                        w4 * xs[ow + o + 4];
          } else {
            float w3 = wk[3], w4 = wk[4];
            for (int ow = L; ow < Hh; ow++)
              yr[ow] += w0 * xs[2 * ow + o] + w1 * xs[2 * ow + o + 1] + w2 * xs[2 * ow + o + 2] +
                        w3 * xs[2 * ow + o + 3] + w4 * xs[2 * ow + o + 4];
          }
        } else {
          L = Hh = 0;
        }
        for (int kj = 0; kj < cp->kw; kj++) {
          int lo, hi, off = kj - cp->pad_l;
          tap_range(s, cp, kj, &lo, &hi);
          for (int ow = lo; ow < hi && ow < L; ow++) yr[ow] += wk[kj] * xr[ow * cp->sw + off];
          for (int ow = lo > Hh ? lo : Hh; ow < hi; ow++) yr[ow] += wk[kj] * xr[ow * cp->sw + off];
        }
        continue;
      }
      for (int kj = 0; kj < cp->kw; kj++) {
        float w = wk[kj];
        int off = kj * cp->dw - cp->pad_l;
        int lo, hi;
        tap_range(s, cp, kj, &lo, &hi);
        if (cp->sw == 1) {
          const float *restrict xs = xr + off;
          for (int ow = lo; ow < hi; ow++) yr[ow] += w * xs[ow];
        } else {
          for (int ow = lo; ow < hi; ow++) yr[ow] += w * xr[ow * cp->sw + off];
        }
      }
    }
  }
  /* the plane is contiguous and the bias per channel: one epilogue call for all rows */
  epilogue_row(yp, ohw, b, rp, cp->act, cp->res);
}

/* Depthwise 3x3 / 5x5 (dilation 1, equal strides 1 or 2) on a zero-padded copy of the
 * plane, so that no tap needs a bounds check. Stride 1: with row pitch Wp, output
 * t = oh * Wp + ow reads padded input t + ki * Wp + kj, so the whole plane is one long
 * vector loop with constant tap offsets; columns ow >= OW are junk, dropped when rows are
 * compacted into y. Stride 2: one vector loop per output row. */
typedef struct {
  int Wp, Hp;
  size_t in_floats, out_floats;
} dw_geom;

static dw_geom dw_geometry(const conv_shape *s, const bd_conv_params *cp) {
  dw_geom g;
  int S = cp->sw, K = cp->kw;
  int wp = s->W + cp->pad_l + cp->pad_r;
  if (wp < S * (s->OW - 1) + K) wp = S * (s->OW - 1) + K;
  int hp = s->H + cp->pad_t + cp->pad_b;
  if (hp < S * (s->OH - 1) + K) hp = S * (s->OH - 1) + K;
  g.Wp = wp;
  g.Hp = hp;
  /* slack: junk columns of the last output row read up to Wp + K past the last row */
  g.in_floats = ((size_t)hp * wp + (size_t)wp + (size_t)K + 16 + 15) & ~(size_t)15;
  g.out_floats = S == 1 ? (size_t)s->OH * wp + 16 : 0;
  return g;
}

static size_t dw_scratch(const conv_shape *s, const bd_conv_params *cp) {
  dw_geom g = dw_geometry(s, cp);
  return g.in_floats + g.out_floats;
}

static int dw_fast(const bd_conv_params *cp) {
  return (cp->kw == 3 || cp->kw == 5) && cp->kh == cp->kw && cp->dh == 1 && cp->dw == 1 &&
         (cp->sw == 1 || cp->sw == 2) && cp->sh == cp->sw;
}

#define DW_9(I)                                                                           \
  (w[0] * xq[I + o0] + w[1] * xq[I + o0 + 1] + w[2] * xq[I + o0 + 2] + w[3] * xq[I + o1] + \
   w[4] * xq[I + o1 + 1] + w[5] * xq[I + o1 + 2] + w[6] * xq[I + o2] + w[7] * xq[I + o2 + 1] + \
   w[8] * xq[I + o2 + 2])
#define DW_5ROW(I, r, oo)                                                                 \
  (w[(r)*5] * xq[I + oo] + w[(r)*5 + 1] * xq[I + oo + 1] + w[(r)*5 + 2] * xq[I + oo + 2] +  \
   w[(r)*5 + 3] * xq[I + oo + 3] + w[(r)*5 + 4] * xq[I + oo + 4])
#define DW_25(I) \
  (DW_5ROW(I, 0, o0) + DW_5ROW(I, 1, o1) + DW_5ROW(I, 2, o2) + DW_5ROW(I, 3, o3) + DW_5ROW(I, 4, o4))

BD_CPU_CLONES
static void dw_plane_k(const conv_ctx *cx, int n, int ch, float *scr) {
  const conv_shape *s = &cx->s;
  const bd_conv_params *cp = cx->cp;
  const int K = cp->kw, S = cp->sw;
  dw_geom g = dw_geometry(s, cp);
  int ohw = s->OH * s->OW;
  const float *xp = cx->x + ((size_t)n * s->C + ch) * s->H * s->W;
  float *restrict xq = scr, *restrict yq = scr + g.in_floats;
  size_t top = (size_t)cp->pad_t * g.Wp;
  memset(xq, 0, top * sizeof(float));
  for (int h = 0; h < s->H; h++) {
    float *row = xq + top + (size_t)h * g.Wp;
    memset(row, 0, (size_t)cp->pad_l * sizeof(float));
    memcpy(row + cp->pad_l, xp + (size_t)h * s->W, (size_t)s->W * sizeof(float));
    memset(row + cp->pad_l + s->W, 0, (size_t)(g.Wp - cp->pad_l - s->W) * sizeof(float));
  }
  size_t used = top + (size_t)s->H * g.Wp;
  memset(xq + used, 0, (g.in_floats - used) * sizeof(float));
  float w[25];
  memcpy(w, cx->w + (size_t)ch * K * K, sizeof(float) * (size_t)(K * K));
  const int o0 = 0, o1 = g.Wp, o2 = 2 * g.Wp, o3 = 3 * g.Wp, o4 = 4 * g.Wp;
  float *yp = cx->y + ((size_t)n * s->M + ch) * ohw;
  if (S == 1) {
    int T = s->OH * g.Wp;
    if (K == 3)
      for (int t = 0; t < T; t++) yq[t] = DW_9(t);
    else
      for (int t = 0; t < T; t++) yq[t] = DW_25(t);
    for (int oh = 0; oh < s->OH; oh++)
      memcpy(yp + (size_t)oh * s->OW, yq + (size_t)oh * g.Wp, (size_t)s->OW * sizeof(float));
  } else {
    for (int oh = 0; oh < s->OH; oh++) {
      float *restrict yr = yp + (size_t)oh * s->OW;
      const int base = 2 * oh * g.Wp;
      if (K == 3)
        for (int ow = 0; ow < s->OW; ow++) yr[ow] = DW_9(base + 2 * ow);
      else
        for (int ow = 0; ow < s->OW; ow++) yr[ow] = DW_25(base + 2 * ow);
    }
  }
  const float *rp = cx->res ? cx->res + ((size_t)n * s->M + ch) * ohw : NULL;
  epilogue_row(yp, ohw, cx->bias ? cx->bias[ch] : 0.f, rp, cp->act, cp->res);
}

static void conv_dw_task(void *arg, int64_t begin, int64_t end, int tid) {
  const conv_ctx *cx = arg;
  if (dw_fast(cx->cp)) {
    for (int64_t i = begin; i < end; i++)
      dw_plane_k(cx, (int)(i / cx->s.C), (int)(i % cx->s.C), bd_cpu_scratch(cx->c, tid));
    return;
  }
  for (int64_t i = begin; i < end; i++) dw_plane(cx, (int)(i / cx->s.C), (int)(i % cx->s.C));
}

bd_status bd_cpu_op_conv(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  conv_ctx cx;
  memset(&cx, 0, sizeof cx);
  /* the tile was chosen at load (below), not again per run */
  const conv_tiles t = {.isa = c->fused, .cv = BD_CPU_CV_NEVER, .threads = c->threads};
  bd_status st = conv_shape_of(c->base.graph, p, n, &t, &cx.s, err);
  if (st != BD_OK) return st;
  ptrdiff_t ni = n - c->base.graph->nodes;
  int packed = c->wpack && ni < c->n_nodes && c->wpack[ni];
  /* The weights' layout, chosen at load, decides between the implicit GEMM's two tiles
   * (a plan of another batch size may have chosen otherwise): the channel-vector tile
   * only runs on its panels; the row tiles run on theirs or pack per tile (weights that
   * are a graph input, tiles changed after prepare). */
  int cv_packed = packed && c->wpack_cv[ni];
  int cv = (cx.s.ig || cx.s.kind == 1) && c->fused == 512 && cv_packed;
  if (cx.s.cv != cv) {
    cx.s.cv = cv;
    conv_tiling(&cx.s);
  }
  cx.c = c;
  cx.cp = &n->p.conv;
  cx.x = c->ptr[n->in[0]];
  cx.w = c->ptr[n->in[1]];
  cx.bias = n->n_in > 2 && n->in[2] >= 0 ? c->ptr[n->in[2]] : NULL;
  cx.res = cx.cp->res != BD_RES_NONE ? c->ptr[n->in[3]] : NULL;
  cx.y = c->ptr[n->out[0]];
  cx.fused = fused_ok(&cx.s) ? c->fused : 0;
  if (cx.fused && packed && cv_packed == cx.s.cv) cx.wpack = c->wpack[ni];
  if (cx.s.kind == 2) {
    bd_cpu_pool_for(c->pool, (int64_t)cx.s.N * cx.s.C, conv_dw_task, &cx);
#ifdef BD_HAVE_BLAS
  } else if (cx.s.kind == 1 && c->conv_blas_threads) {
    /* The measured alternative (benchmarks only): one GEMM per image and group,
     * parallelised inside OpenBLAS, then the epilogue over output rows on our pool. */
    int ohw = cx.s.OH * cx.s.OW;
    openblas_set_num_threads(c->threads);
    for (int i = 0; i < cx.s.N; i++)
      for (int gi = 0; gi < cx.s.G; gi++) {
        size_t oc0 = (size_t)gi * cx.s.Mg;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cx.s.Mg, ohw, cx.s.Cg, 1.0f,
                    cx.w + oc0 * cx.s.K, cx.s.K,
                    cx.x + ((size_t)i * cx.s.C + (size_t)gi * cx.s.Cg) * ohw, ohw, 0.0f,
                    cx.y + ((size_t)i * cx.s.M + oc0) * ohw, ohw);
      }
    openblas_set_num_threads(1);
    bd_cpu_pool_for(c->pool, (int64_t)cx.s.N * cx.s.M, conv_rows_epilogue_task, &cx);
#endif
  } else {
    int64_t items = (int64_t)cx.s.N * cx.s.G * cx.s.nmb * cx.s.ncb;
    bd_cpu_pool_for_each(c->pool, items, conv_gemm_task, &cx);
  }
  return BD_OK;
}

bd_status bd_cpu_conv_pack(const bd_cpu *c, const bd_graph *g, const bd_plan *p, const bd_node *n,
                           float **out, int *cv, bd_err *err) {
  *out = NULL;
  *cv = 0;
  conv_shape s;
  const conv_tiles t = {.isa = c->fused, .cv = c->cv_mode, .threads = c->threads};
  bd_status st = conv_shape_of(g, p, n, &t, &s, err);
  if (st != BD_OK) return st;
  const float *w = g->values[n->in[1]].data;
  if (!c->fused || !fused_ok(&s) || !w) return BD_OK;
  if (s.cv) {
    size_t per = bd_cpu_cv512_packed_floats(s.Mg, s.K);
    float *pk = aligned_alloc(64, ((size_t)s.G * per * sizeof(float) + 63) & ~(size_t)63);
    if (!pk) return bd_err_set(err, BD_E_NOMEM, "conv '%s': packed weights", n->name);
    for (int gi = 0; gi < s.G; gi++)
      bd_cpu_cv512_pack_w(s.Mg, s.K, w + (size_t)gi * s.Mg * s.K, s.K, pk + (size_t)gi * per);
    *out = pk;
    *cv = 1;
    return BD_OK;
  }
  int R = bd_cpu_pw512_rows(s.Mg), nrb = (s.Mg + R - 1) / R;
  size_t floats = (size_t)s.G * (size_t)nrb * (size_t)R * (size_t)s.K;
  float *pk = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
  if (!pk) return bd_err_set(err, BD_E_NOMEM, "conv '%s': packed weights", n->name);
  for (int gi = 0; gi < s.G; gi++)
    for (int rb = 0; rb < nrb; rb++) {
      int rows = s.Mg - rb * R < R ? s.Mg - rb * R : R;
      bd_cpu_pw512_pack_w(R, rows, s.K, w + ((size_t)gi * s.Mg + (size_t)rb * R) * s.K, s.K,
                          pk + ((size_t)gi * nrb + rb) * (size_t)R * s.K);
    }
  *out = pk;
  return BD_OK;
}
