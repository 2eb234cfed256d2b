/* Element-wise and spatial ops of the cpu backend: BatchNormalization, Relu/Sigmoid/
 * SiLU/Exp, Add/Sub/Mul/Div with numpy broadcasting, Concat, MaxPool, Resize, Softmax.
 * All NCHW float32 (binary ops and Concat also take int64 / any dtype where ONNX
 * shape arithmetic may put them). Parallel over outer dimensions through the pool. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "cpu_act.h"
#include "cpu_internal.h"

BD_CPU_HOT

#define EW_GRAIN 16384 /* elements per parallel chunk for element-wise ops */

/* ---------------- BatchNormalization ---------------- */
typedef struct {
  const float *x, *scale, *bias, *mean, *var;
  float *y;
  int64_t C, inner;
  float eps;
} bn_ctx;

static void bn_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const bn_ctx *k = arg;
  for (int64_t i = b; i < e; i++) {
    int64_t ch = i % k->C;
    float a = k->scale[ch] / sqrtf(k->var[ch] + k->eps);
    float s = k->bias[ch] - k->mean[ch] * a;
    const float *x = k->x + i * k->inner;
    float *y = k->y + i * k->inner;
    for (int64_t j = 0; j < k->inner; j++) y[j] = x[j] * a + s;
  }
}

bd_status bd_cpu_op_batchnorm(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0];
  if (n->n_in < 5 || p->rank[xv] < 2)
    return bd_err_set(err, BD_E_INVALID, "batchnorm '%s': needs 5 inputs, rank >= 2", n->name);
  bn_ctx k = {c->ptr[xv], c->ptr[n->in[1]], c->ptr[n->in[2]], c->ptr[n->in[3]],
              c->ptr[n->in[4]], c->ptr[n->out[0]], p->dims[xv][1], 1, n->p.bn.eps};
  for (int i = 2; i < p->rank[xv]; i++) k.inner *= p->dims[xv][i];
  for (int i = 1; i < 5; i++)
    if (bd_cpu_numel(p, n->in[i]) != k.C)
      return bd_err_set(err, BD_E_INVALID, "batchnorm '%s': parameter size", n->name);
  bd_cpu_pool_for(c->pool, p->dims[xv][0] * k.C, bn_task, &k);
  return BD_OK;
}

/* ---------------- unary ---------------- */
typedef struct {
  const float *x;
  float *y;
  int64_t n;
  bd_op op;
} un_ctx;

BD_CPU_CLONES
static void un_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const un_ctx *k = arg;
  int64_t lo = b * EW_GRAIN, hi = e * EW_GRAIN;
  if (hi > k->n) hi = k->n;
  const float *restrict x = k->x;
  float *restrict y = k->y;
  switch (k->op) {
    case BD_OP_RELU:
      for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0.f ? x[i] : (x[i] == x[i] ? 0.f : x[i]);
      break;
    case BD_OP_SIGMOID:
    case BD_OP_SILU:
      if (y != x) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof *y);
      bd_cpu_sigmoid_inplace(y + lo, hi - lo, k->op == BD_OP_SILU);
      break;
    default: /* Exp: libm, exact to the last ulp (used in box decoding) */
      for (int64_t i = lo; i < hi; i++) y[i] = expf(x[i]);
      break;
  }
}

bd_status bd_cpu_op_unary(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  if (c->base.graph->values[n->in[0]].dtype != BD_DT_F32)
    return bd_err_set(err, BD_E_UNSUPPORTED, "%s '%s': only float32", bd_op_name(n->op), n->name);
  un_ctx k = {c->ptr[n->in[0]], c->ptr[n->out[0]], bd_cpu_numel(p, n->in[0]), n->op};
  bd_cpu_pool_for(c->pool, (k.n + EW_GRAIN - 1) / EW_GRAIN, un_task, &k);
  return BD_OK;
}

/* ---------------- binary with broadcasting ---------------- */
typedef struct {
  const void *a, *b;
  void *y;
  int rank; /* after collapsing; the last dim is the inner loop */
  int64_t od[BD_MAX_RANK], sa[BD_MAX_RANK], sb[BD_MAX_RANK];
  int64_t rows; /* product of od[0..rank-1) */
  bd_op op;
  int i64;
} bin_ctx;

#define BIN_LOOP(T, OPX)                                                          \
  do {                                                                            \
    const T *restrict pa = (const T *)k->a + oa;                                  \
    const T *restrict pb = (const T *)k->b + ob;                                  \
    T *restrict py = (T *)k->y + oy;                                              \
    if (sa == 1 && sb == 1)                                                       \
      for (int64_t j = 0; j < len; j++) py[j] = OPX(pa[j], pb[j]);                \
    else if (sa == 1 && sb == 0) {                                                \
      T vb = pb[0];                                                               \
      for (int64_t j = 0; j < len; j++) py[j] = OPX(pa[j], vb);                   \
    } else if (sa == 0 && sb == 1) {                                              \
      T va = pa[0];                                                               \
      for (int64_t j = 0; j < len; j++) py[j] = OPX(va, pb[j]);                   \
    } else                                                                        \
      for (int64_t j = 0; j < len; j++) py[j] = OPX(pa[j * sa], pb[j * sb]);      \
  } while (0)

#define OP_ADD(x, y) ((x) + (y))
#define OP_SUB(x, y) ((x) - (y))
#define OP_MUL(x, y) ((x) * (y))
#define OP_DIVF(x, y) ((x) / (y))
/* Integer division by zero is undefined in C; ONNX leaves it undefined too: yield 0. */
#define OP_DIVI(x, y) ((y) == 0 ? 0 : ((x) == INT64_MIN && (y) == -1) ? (x) : (x) / (y))

static void bin_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const bin_ctx *k = arg;
  int r = k->rank;
  int64_t full = k->od[r - 1], sa = k->sa[r - 1], sb = k->sb[r - 1];
  int64_t nch = (full + EW_GRAIN - 1) / EW_GRAIN;
  for (int64_t u = b; u < e; u++) {
    int64_t row = u / nch, j0 = (u % nch) * EW_GRAIN;
    int64_t len = full - j0 < EW_GRAIN ? full - j0 : EW_GRAIN;
    int64_t oa = j0 * sa, ob = j0 * sb, t = row;
    for (int d = r - 2; d >= 0; d--) {
      int64_t i = t % k->od[d];
      t /= k->od[d];
      oa += i * k->sa[d];
      ob += i * k->sb[d];
    }
    int64_t oy = row * full + j0;
    if (!k->i64) {
      switch (k->op) {
        case BD_OP_ADD: BIN_LOOP(float, OP_ADD); break;
        case BD_OP_SUB: BIN_LOOP(float, OP_SUB); break;
        case BD_OP_MUL: BIN_LOOP(float, OP_MUL); break;
        default: BIN_LOOP(float, OP_DIVF); break;
      }
    } else {
      /* wrap-around like numpy, without signed-overflow UB */
#define OP_ADDI(x, y) ((int64_t)((uint64_t)(x) + (uint64_t)(y)))
#define OP_SUBI(x, y) ((int64_t)((uint64_t)(x) - (uint64_t)(y)))
#define OP_MULI(x, y) ((int64_t)((uint64_t)(x) * (uint64_t)(y)))
      switch (k->op) {
        case BD_OP_ADD: BIN_LOOP(int64_t, OP_ADDI); break;
        case BD_OP_SUB: BIN_LOOP(int64_t, OP_SUBI); break;
        case BD_OP_MUL: BIN_LOOP(int64_t, OP_MULI); break;
        default: BIN_LOOP(int64_t, OP_DIVI); break;
      }
    }
  }
}

bd_status bd_cpu_op_binary(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  const bd_graph *g = c->base.graph;
  int av = n->in[0], bv = n->in[1], yv = n->out[0];
  bd_dtype dt = g->values[av].dtype;
  if (dt != g->values[bv].dtype || (dt != BD_DT_F32 && dt != BD_DT_I64))
    return bd_err_set(err, BD_E_UNSUPPORTED, "%s '%s': dtypes %s/%s", bd_op_name(n->op), n->name,
                      bd_dtype_name(dt), bd_dtype_name(g->values[bv].dtype));
  bin_ctx k;
  memset(&k, 0, sizeof k);
  k.a = c->ptr[av];
  k.b = c->ptr[bv];
  k.y = c->ptr[yv];
  k.op = n->op;
  k.i64 = dt == BD_DT_I64;
  int r = p->rank[yv];
  int ra = p->rank[av], rb = p->rank[bv];
  if (ra > r || rb > r)
    return bd_err_set(err, BD_E_INVALID, "%s '%s': input rank above output rank",
                      bd_op_name(n->op), n->name);
  int64_t od[BD_MAX_RANK + 1], sa[BD_MAX_RANK + 1], sb[BD_MAX_RANK + 1];
  int64_t stra = 1, strb = 1;
  for (int d = r - 1; d >= 0; d--) {
    int da = d - (r - ra), db = d - (r - rb);
    int64_t ea = da >= 0 ? p->dims[av][da] : 1, eb = db >= 0 ? p->dims[bv][db] : 1;
    od[d] = p->dims[yv][d];
    if ((ea != od[d] && ea != 1) || (eb != od[d] && eb != 1))
      return bd_err_set(err, BD_E_INVALID, "%s '%s': shapes do not broadcast to the output",
                        bd_op_name(n->op), n->name);
    sa[d] = ea == 1 && od[d] != 1 ? 0 : stra;
    sb[d] = eb == 1 && od[d] != 1 ? 0 : strb;
    stra *= ea;
    strb *= eb;
  }
  if (r == 0) {
    od[0] = 1;
    sa[0] = sb[0] = 1;
    r = 1;
  }
  /* Collapse adjacent dims that are contiguous in both inputs, so that per-channel
   * [N,C,H,W] x [1,C,1,1] runs H*W-long inner loops. Dims of size 1 are dropped. */
  int cr = 0;
  for (int d = 0; d < r; d++) {
    if (od[d] == 1 && r > 1) continue;
    if (cr > 0 && sa[d] * od[d] == k.sa[cr - 1] && sb[d] * od[d] == k.sb[cr - 1] &&
        (sa[d] != 0) == (k.sa[cr - 1] != 0) && (sb[d] != 0) == (k.sb[cr - 1] != 0)) {
      k.od[cr - 1] *= od[d];
      k.sa[cr - 1] = sa[d];
      k.sb[cr - 1] = sb[d];
      continue;
    }
    if (cr > 0 && sa[d] == 0 && sb[d] == 0 && k.sa[cr - 1] == 0 && k.sb[cr - 1] == 0) {
      k.od[cr - 1] *= od[d];
      continue;
    }
    k.od[cr] = od[d];
    k.sa[cr] = sa[d];
    k.sb[cr] = sb[d];
    cr++;
  }
  if (cr == 0) {
    k.od[0] = 1;
    k.sa[0] = k.sb[0] = 1;
    cr = 1;
  }
  k.rank = cr;
  k.rows = 1;
  for (int d = 0; d < cr - 1; d++) k.rows *= k.od[d];
  int64_t nch = (k.od[cr - 1] + EW_GRAIN - 1) / EW_GRAIN;
  bd_cpu_pool_for(c->pool, k.rows * nch, bin_task, &k);
  return BD_OK;
}

/* ---------------- Concat ---------------- */
typedef struct {
  bd_cpu *c;
  const bd_node *n;
  const bd_plan *p;
  int64_t inner_bytes[64];
  int64_t in_off[64]; /* byte offset of each input's block in an output row */
  int64_t row_bytes;
  int pieces;
} cat_ctx;

/* Units are (outer index, input, piece): with batch 1 and a channel concat there is a
 * single outer index, so the inputs and pieces of them are what the threads share. */
static void cat_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const cat_ctx *k = arg;
  uint8_t *y = k->c->ptr[k->n->out[0]];
  int nin = k->n->n_in, P = k->pieces;
  for (int64_t u = b; u < e; u++) {
    int pc = (int)(u % P);
    int i = (int)((u / P) % nin);
    int64_t o = u / P / nin;
    int64_t len = k->inner_bytes[i], lo = len * pc / P, hi = len * (pc + 1) / P;
    if (hi <= lo) continue; /* an empty input (0 on the axis) has no storage */
    const uint8_t *src = k->c->ptr[k->n->in[i]];
    memcpy(y + o * k->row_bytes + k->in_off[i] + lo, src + o * len + lo, (size_t)(hi - lo));
  }
}

bd_status bd_cpu_op_concat(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  const bd_graph *g = c->base.graph;
  int yv = n->out[0], r = p->rank[yv], axis = n->p.concat.axis;
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r || n->n_in < 1 || n->n_in > 64)
    return bd_err_set(err, BD_E_INVALID, "concat '%s': axis %d / %d inputs", n->name, axis,
                      n->n_in);
  cat_ctx k;
  memset(&k, 0, sizeof k);
  k.c = c;
  k.n = n;
  k.p = p;
  size_t es = bd_dtype_size(g->values[yv].dtype);
  int64_t outer = 1;
  for (int d = 0; d < axis; d++) outer *= p->dims[yv][d];
  int64_t total = 0;
  for (int i = 0; i < n->n_in; i++) {
    int v = n->in[i];
    if (v < 0 || p->rank[v] != r || g->values[v].dtype != g->values[yv].dtype)
      return bd_err_set(err, BD_E_INVALID, "concat '%s': input %d rank/dtype", n->name, i);
    int64_t inner = 1;
    for (int d = axis; d < r; d++) inner *= p->dims[v][d];
    k.inner_bytes[i] = inner * (int64_t)es;
    k.in_off[i] = total * (int64_t)es;
    total += inner;
  }
  int64_t yin = 1;
  for (int d = axis; d < r; d++) yin *= p->dims[yv][d];
  if (yin != total) return bd_err_set(err, BD_E_INVALID, "concat '%s': sizes", n->name);
  k.row_bytes = total * (int64_t)es;
  k.pieces = outer == 1 && k.row_bytes > (1 << 17) ? 8 : 1;
  bd_cpu_pool_for(c->pool, outer * n->n_in * k.pieces, cat_task, &k);
  return BD_OK;
}

/* ---------------- MaxPool ---------------- */
/* Separable: a max over the window's columns into per-thread scratch (H x OW), then
 * over its rows. Exact for max; costs kh + kw instead of kh * kw per output, which
 * matters for SPP's 13x13 windows. Padding is -inf, i.e. simply skipped. */
typedef struct {
  bd_cpu *c;
  const float *x;
  float *y;
  int H, W, OH, OW;
  const bd_pool_params *pp;
} pool_ctx;

size_t bd_cpu_maxpool_scratch(const bd_plan *p, const bd_node *n) {
  int xv = n->in[0], yv = n->out[0];
  if (p->rank[xv] != 4 || p->rank[yv] != 4) return 0;
  return (size_t)p->dims[xv][2] * (size_t)p->dims[yv][3] + 16;
}

BD_CPU_CLONES
static void pool_task(void *arg, int64_t b, int64_t e, int tid) {
  const pool_ctx *k = arg;
  const bd_pool_params *pp = k->pp;
  float *restrict tmp = bd_cpu_scratch(k->c, tid);
  for (int64_t pl = b; pl < e; pl++) {
    const float *x = k->x + pl * k->H * k->W;
    float *y = k->y + pl * k->OH * k->OW;
    for (int h = 0; h < k->H; h++) {
      const float *restrict xr = x + (size_t)h * k->W;
      float *restrict tr = tmp + (size_t)h * k->OW;
      for (int ow = 0; ow < k->OW; ow++) tr[ow] = -INFINITY;
      for (int j = 0; j < pp->kw; j++) {
        int off = j - pp->pad_l; /* column read: ow * sw + off */
        int lo = off >= 0 ? 0 : (-off + pp->sw - 1) / pp->sw;
        int hi = k->W - 1 - off >= 0 ? (k->W - 1 - off) / pp->sw + 1 : 0;
        if (hi > k->OW) hi = k->OW;
        if (pp->sw == 1) {
          for (int ow = lo; ow < hi; ow++) {
            float v = xr[ow + off];
            tr[ow] = v > tr[ow] ? v : tr[ow];
          }
        } else {
          for (int ow = lo; ow < hi; ow++) {
            float v = xr[ow * pp->sw + off];
            tr[ow] = v > tr[ow] ? v : tr[ow];
          }
        }
      }
    }
    for (int oh = 0; oh < k->OH; oh++) {
      float *restrict yr = y + (size_t)oh * k->OW;
      for (int ow = 0; ow < k->OW; ow++) yr[ow] = -INFINITY;
      int h0 = oh * pp->sh - pp->pad_t, h1 = h0 + pp->kh;
      if (h0 < 0) h0 = 0;
      if (h1 > k->H) h1 = k->H;
      for (int h = h0; h < h1; h++) {
        const float *restrict tr = tmp + (size_t)h * k->OW;
        for (int ow = 0; ow < k->OW; ow++) yr[ow] = tr[ow] > yr[ow] ? tr[ow] : yr[ow];
      }
    }
  }
}

bd_status bd_cpu_op_maxpool(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], yv = n->out[0];
  const bd_pool_params *pp = &n->p.pool;
  if (p->rank[xv] != 4 || p->rank[yv] != 4 || pp->kh < 1 || pp->kw < 1 || pp->sh < 1 ||
      pp->sw < 1 || p->dims[yv][0] != p->dims[xv][0] || p->dims[yv][1] != p->dims[xv][1] ||
      p->dims[xv][2] > INT32_MAX / 4 || p->dims[xv][3] > INT32_MAX / 4 ||
      p->dims[yv][2] * p->dims[yv][3] > INT32_MAX / 4 ||
      bd_cpu_maxpool_scratch(p, n) > c->scratch_floats)
    return bd_err_set(err, BD_E_UNSUPPORTED, "maxpool '%s': only 2-D NCHW pooling", n->name);
  pool_ctx k = {c, c->ptr[xv], c->ptr[yv], (int)p->dims[xv][2], (int)p->dims[xv][3],
                (int)p->dims[yv][2], (int)p->dims[yv][3], pp};
  bd_cpu_pool_for(c->pool, p->dims[xv][0] * p->dims[xv][1], pool_task, &k);
  return BD_OK;
}

/* ---------------- Resize ---------------- */
typedef struct {
  bd_cpu *c;
  const float *x;
  float *y;
  int H, W, OH, OW;
  const bd_resize_params *rp;
  float sh, sw;
} rs_ctx;

static float rs_coord(bd_coord_mode m, int o, float scale, int in, int out) {
  switch (m) {
    case BD_COORD_HALF_PIXEL: return ((float)o + 0.5f) / scale - 0.5f;
    case BD_COORD_PYTORCH_HALF_PIXEL: return out > 1 ? ((float)o + 0.5f) / scale - 0.5f : 0.f;
    case BD_COORD_ALIGN_CORNERS:
      return out == 1 ? 0.f : (float)o * (float)(in - 1) / (float)(out - 1);
    case BD_COORD_ASYMMETRIC: break;
  }
  return (float)o / scale;
}

static int rs_nearest(bd_nearest_mode m, float x, int in) {
  float f = floorf(x);
  int64_t i;
  switch (m) {
    case BD_NEAREST_FLOOR: i = (int64_t)f; break;
    case BD_NEAREST_CEIL: i = (int64_t)ceilf(x); break;
    case BD_NEAREST_ROUND_PREFER_CEIL: i = x - f >= 0.5f ? (int64_t)f + 1 : (int64_t)f; break;
    default: i = x - f > 0.5f ? (int64_t)f + 1 : (int64_t)f; break;
  }
  if (i < 0) i = 0;
  if (i > in - 1) i = in - 1;
  return (int)i;
}

static void rs_linear_coef(const rs_ctx *k, int o, float scale, int in, int out, int *i0, int *i1,
                           float *l) {
  float x = rs_coord(k->rp->coord, o, scale, in, out);
  if (x < 0.f) x = 0.f;
  if (x > (float)(in - 1)) x = (float)(in - 1);
  int a = (int)x;
  *i0 = a;
  *i1 = a + 1 < in ? a + 1 : in - 1;
  *l = x - (float)a;
}

size_t bd_cpu_resize_scratch(const bd_plan *p, const bd_node *n) {
  int yv = n->out[0];
  if (p->rank[yv] != 4) return 0;
  return 3 * (size_t)p->dims[yv][3] + 16;
}

/* Column source indices (and weights for linear) are computed once per task into
 * per-thread scratch; rows repeat them. */
static void rs_task(void *arg, int64_t b, int64_t e, int tid) {
  const rs_ctx *k = arg;
  float *scr = bd_cpu_scratch(k->c, tid);
  int32_t *c0 = (int32_t *)(void *)scr, *c1 = c0 + k->OW;
  float *cl = scr + 2 * (size_t)k->OW;
  for (int ow = 0; ow < k->OW; ow++) {
    if (k->rp->mode == BD_RESIZE_NEAREST) {
      c0[ow] = rs_nearest(k->rp->nearest, rs_coord(k->rp->coord, ow, k->sw, k->W, k->OW), k->W);
    } else {
      int w0, w1;
      float lw;
      rs_linear_coef(k, ow, k->sw, k->W, k->OW, &w0, &w1, &lw);
      c0[ow] = w0;
      c1[ow] = w1;
      cl[ow] = lw;
    }
  }
  for (int64_t pl = b; pl < e; pl++) {
    const float *x = k->x + pl * k->H * k->W;
    float *y = k->y + pl * k->OH * k->OW;
    int prev_ih = -1;
    for (int oh = 0; oh < k->OH; oh++) {
      float *yr = y + (size_t)oh * k->OW;
      if (k->rp->mode == BD_RESIZE_NEAREST) {
        int ih = rs_nearest(k->rp->nearest, rs_coord(k->rp->coord, oh, k->sh, k->H, k->OH), k->H);
        if (ih == prev_ih) { /* upsampling repeats rows */
          memcpy(yr, yr - k->OW, sizeof(float) * (size_t)k->OW);
          continue;
        }
        prev_ih = ih;
        const float *xr = x + (size_t)ih * k->W;
        for (int ow = 0; ow < k->OW; ow++) yr[ow] = xr[c0[ow]];
      } else {
        int h0, h1;
        float lh;
        rs_linear_coef(k, oh, k->sh, k->H, k->OH, &h0, &h1, &lh);
        const float *r0 = x + (size_t)h0 * k->W, *r1 = x + (size_t)h1 * k->W;
        for (int ow = 0; ow < k->OW; ow++) {
          int w0 = c0[ow], w1 = c1[ow];
          float lw = cl[ow];
          float top = r0[w0] + (r0[w1] - r0[w0]) * lw;
          float bot = r1[w0] + (r1[w1] - r1[w0]) * lw;
          yr[ow] = top + (bot - top) * lh;
        }
      }
    }
  }
}

bd_status bd_cpu_op_resize(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], yv = n->out[0];
  if (p->rank[xv] != 4 || p->rank[yv] != 4 || p->dims[yv][0] != p->dims[xv][0] ||
      p->dims[yv][1] != p->dims[xv][1] || p->dims[xv][2] < 1 || p->dims[xv][3] < 1 ||
      p->dims[xv][2] > INT32_MAX / 4 || p->dims[xv][3] > INT32_MAX / 4 ||
      p->dims[yv][2] > INT32_MAX / 4 || p->dims[yv][3] > INT32_MAX / 4)
    return bd_err_set(err, BD_E_UNSUPPORTED, "resize '%s': only spatial resize of NCHW",
                      n->name);
  if (bd_cpu_resize_scratch(p, n) > c->scratch_floats)
    return bd_err_set(err, BD_E_INTERNAL, "resize '%s': scratch not prepared", n->name);
  rs_ctx k = {c, c->ptr[xv], c->ptr[yv], (int)p->dims[xv][2], (int)p->dims[xv][3],
              (int)p->dims[yv][2], (int)p->dims[yv][3], &n->p.resize, n->p.resize.scale_h,
              n->p.resize.scale_w};
  /* Sizes given instead of scales: ONNX then uses out/in as the scale. */
  if (n->p.resize.out_h > 0 || !(k.sh > 0.f)) k.sh = (float)k.OH / (float)k.H;
  if (n->p.resize.out_w > 0 || !(k.sw > 0.f)) k.sw = (float)k.OW / (float)k.W;
  bd_cpu_pool_for(c->pool, p->dims[xv][0] * p->dims[xv][1], rs_task, &k);
  return BD_OK;
}

/* ---------------- Softmax ---------------- */
typedef struct {
  const float *x;
  float *y;
  int64_t len, inner; /* normalise len elements at stride inner */
} sm_ctx;

static void sm_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sm_ctx *k = arg;
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / k->inner, in = u % k->inner;
    const float *x = k->x + o * k->len * k->inner + in;
    float *y = k->y + o * k->len * k->inner + in;
    float m = -INFINITY;
    for (int64_t i = 0; i < k->len; i++) m = x[i * k->inner] > m ? x[i * k->inner] : m;
    double s = 0;
    for (int64_t i = 0; i < k->len; i++) {
      float v = expf(x[i * k->inner] - m);
      y[i * k->inner] = v;
      s += v;
    }
    float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < k->len; i++) y[i * k->inner] *= inv;
  }
}

bd_status bd_cpu_op_softmax(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], r = p->rank[xv], axis = n->p.softmax.axis;
  if (axis < 0) axis += r;
  if (r < 1 || axis < 0 || axis >= r || c->base.graph->values[xv].dtype != BD_DT_F32)
    return bd_err_set(err, BD_E_INVALID, "softmax '%s': axis %d of rank %d", n->name,
                      n->p.softmax.axis, r);
  sm_ctx k = {c->ptr[xv], c->ptr[n->out[0]], 1, 1};
  int64_t outer = 1;
  for (int d = 0; d < axis; d++) outer *= p->dims[xv][d];
  if (n->p.softmax.opset < 13) {
    /* coerced to 2-D: [prod(dims[:axis]), prod(dims[axis:])] */
    for (int d = axis; d < r; d++) k.len *= p->dims[xv][d];
  } else {
    k.len = p->dims[xv][axis];
    for (int d = axis + 1; d < r; d++) k.inner *= p->dims[xv][d];
  }
  if (k.len == 0) return BD_OK;
  bd_cpu_pool_for(c->pool, outer * k.inner, sm_task, &k);
  return BD_OK;
}

/* ---------------- SoftmaxDot (fused DFL integral) ---------------- */
typedef struct {
  const float *x, *w;
  float *y;
  int64_t len, inner; /* len bins at stride inner -> one value */
} sd_ctx;

static void sd_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sd_ctx *k = arg;
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / k->inner, in = u % k->inner;
    const float *x = k->x + o * k->len * k->inner + in;
    float m = -INFINITY;
    for (int64_t i = 0; i < k->len; i++) m = x[i * k->inner] > m ? x[i * k->inner] : m;
    double s = 0, d = 0;
    for (int64_t i = 0; i < k->len; i++) {
      float v = expf(x[i * k->inner] - m);
      s += v;
      d += (double)v * k->w[i];
    }
    k->y[u] = (float)(d / s);
  }
}

/* Positions in0 .. in0 + lanes - 1 (lanes <= 16) of outer index o on 16 vector lanes,
 * with the vectorised exponential (libm's expf is scalar: the scalar loop above took
 * 3 ms of DAMO-T's 160). Units are fixed groups of 16 positions, so every output is
 * computed the same way whatever the thread count. */
/* lanes [0, lanes) of p into *v, the others 0 */
static inline __attribute__((always_inline)) void sd_load(const float *p, int lanes, bd_v16f *v) {
  float t[16] = {0};
  memcpy(t, p, sizeof(float) * (size_t)lanes);
  memcpy(v, t, sizeof *v);
}

BD_CPU_CLONES
static void sd_group(const sd_ctx *k, int64_t o, int64_t in0, int lanes) {
  const float *x = k->x + o * k->len * k->inner + in0;
  bd_v16f m = BD_V16_SPLAT(-INFINITY), s = BD_V16_SPLAT(0.f), d = BD_V16_SPLAT(0.f), v;
  for (int64_t i = 0; i < k->len; i++) {
    sd_load(x + i * k->inner, lanes, &v);
    m = BD_V16_SELECT(v > m, v, m);
  }
  for (int64_t i = 0; i < k->len; i++) {
    sd_load(x + i * k->inner, lanes, &v);
    v -= m;
    bd_v16_exp(&v);
    s += v;
    d += v * k->w[i];
  }
  v = d / s;
  float t[16];
  memcpy(t, &v, sizeof v);
  memcpy(k->y + o * k->inner + in0, t, sizeof(float) * (size_t)lanes);
}

static void sd16_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sd_ctx *k = arg;
  int64_t ng = (k->inner + 15) / 16;
  for (int64_t u = b; u < e; u++) {
    int64_t o = u / ng, in0 = u % ng * 16;
    sd_group(k, o, in0, k->inner - in0 < 16 ? (int)(k->inner - in0) : 16);
  }
}

bd_status bd_cpu_op_softmax_dot(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], r = p->rank[xv], axis = n->p.softmax.axis;
  if (n->n_in != 2 || r < 1 || axis < 0 || axis >= r ||
      c->base.graph->values[xv].dtype != BD_DT_F32 || !c->base.graph->values[n->in[1]].data)
    return bd_err_set(err, BD_E_INVALID, "SoftmaxDot '%s': axis %d of rank %d", n->name, axis, r);
  sd_ctx k = {c->ptr[xv], c->ptr[n->in[1]], c->ptr[n->out[0]], p->dims[xv][axis], 1};
  int64_t outer = 1;
  for (int d = 0; d < axis; d++) outer *= p->dims[xv][d];
  for (int d = axis + 1; d < r; d++) k.inner *= p->dims[xv][d];
  if (k.len == 0) return BD_OK;
  if (k.inner >= 16) /* bins strided: 16 neighbouring positions per vector */
    bd_cpu_pool_for(c->pool, outer * ((k.inner + 15) / 16), sd16_task, &k);
  else
    bd_cpu_pool_for(c->pool, outer * k.inner, sd_task, &k);
  return BD_OK;
}
