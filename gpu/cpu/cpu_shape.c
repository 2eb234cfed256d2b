/* Data-movement ops of the cpu backend: Reshape/Flatten/Unsqueeze/Squeeze/Identity
 * (copies), Transpose, Slice, Gather, Cast, Shape, and MatMul (numpy semantics, batched
 * with broadcasting, through the GEMM). Any dtype where ONNX allows it: int64 tensors
 * reach Gather/Slice/Concat/Reshape/Cast at run time in exported shape subgraphs. */
#include <math.h>
#include <string.h>

#include "bd_compile_int.h"
#include "cpu_internal.h"

BD_CPU_HOT

static size_t vbytes(const bd_cpu *c, const bd_plan *p, int v) {
  return (size_t)bd_cpu_numel(p, v) * bd_dtype_size(c->base.graph->values[v].dtype);
}

bd_status bd_cpu_op_copy(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  size_t in = vbytes(c, p, n->in[0]), out = vbytes(c, p, n->out[0]);
  if (in != out)
    return bd_err_set(err, BD_E_INVALID, "%s '%s': %zu bytes in, %zu out", bd_op_name(n->op),
                      n->name, in, out);
  if (c->ptr[n->out[0]] != c->ptr[n->in[0]] && in)
    memcpy(c->ptr[n->out[0]], c->ptr[n->in[0]], in);
  return BD_OK;
}

/* ---------------- strided copy (Transpose, Slice) ---------------- */
typedef struct {
  const uint8_t *x;
  uint8_t *y;
  size_t es;
  int rank;
  int64_t od[BD_MAX_RANK];
  int64_t is[BD_MAX_RANK]; /* input element stride per output dim (may be negative) */
  int64_t base;            /* input element offset of output index 0 */
} sc_ctx;

BD_CPU_CLONES
static void sc_task(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sc_ctx *k = arg;
  int r = k->rank;
  int64_t len = k->od[r - 1], st = k->is[r - 1];
  for (int64_t row = b; row < e; row++) {
    int64_t off = k->base, t = row;
    for (int d = r - 2; d >= 0; d--) {
      off += (t % k->od[d]) * k->is[d];
      t /= k->od[d];
    }
    uint8_t *dst = k->y + (size_t)(row * len) * k->es;
    if (st == 1) {
      memcpy(dst, k->x + (size_t)off * k->es, (size_t)len * k->es);
    } else if (k->es == 4 && st == 2) { /* space-to-depth slices (YOLOX Focus) */
      const float *restrict s = (const float *)k->x + off;
      float *restrict d = (float *)dst;
      for (int64_t j = 0; j < len; j++) d[j] = s[2 * j];
    } else if (k->es == 4) {
      const float *s = (const float *)k->x + off;
      float *d = (float *)dst;
      for (int64_t j = 0; j < len; j++) d[j] = s[j * st];
    } else {
      for (int64_t j = 0; j < len; j++)
        memcpy(dst + (size_t)j * k->es, k->x + (size_t)(off + j * st) * k->es, k->es);
    }
  }
}

static void sc_run(bd_cpu *c, sc_ctx *k) {
  if (k->rank == 0) {
    k->rank = 1;
    k->od[0] = 1;
    k->is[0] = 1;
  }
  int64_t rows = 1;
  for (int d = 0; d < k->rank - 1; d++) rows *= k->od[d];
  if (k->od[k->rank - 1] == 0) return;
  bd_cpu_pool_for(c->pool, rows, sc_task, k);
}

bd_status bd_cpu_op_transpose(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], yv = n->out[0], r = p->rank[xv];
  int perm[BD_MAX_RANK];
  if (n->p.transpose.n == 0) {
    for (int d = 0; d < r; d++) perm[d] = r - 1 - d; /* ONNX default: reverse */
  } else {
    if (n->p.transpose.n != r)
      return bd_err_set(err, BD_E_INVALID, "transpose '%s': perm size", n->name);
    memcpy(perm, n->p.transpose.perm, sizeof(int) * (size_t)r);
  }
  int64_t xs[BD_MAX_RANK];
  int64_t s = 1;
  for (int d = r - 1; d >= 0; d--) {
    xs[d] = s;
    s *= p->dims[xv][d];
  }
  sc_ctx k;
  memset(&k, 0, sizeof k);
  k.x = c->ptr[xv];
  k.y = c->ptr[yv];
  k.es = bd_dtype_size(c->base.graph->values[xv].dtype);
  k.rank = r;
  unsigned seen = 0;
  for (int d = 0; d < r; d++) {
    if (perm[d] < 0 || perm[d] >= r || (seen & (1u << perm[d])) ||
        p->dims[yv][d] != p->dims[xv][perm[d]])
      return bd_err_set(err, BD_E_INVALID, "transpose '%s': bad perm", n->name);
    seen |= 1u << perm[d];
    k.od[d] = p->dims[yv][d];
    k.is[d] = xs[perm[d]];
  }
  sc_run(c, &k);
  return BD_OK;
}

bd_status bd_cpu_op_slice(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], yv = n->out[0], r = p->rank[xv];
  const bd_slice_params *sp = &n->p.slice;
  if (p->rank[yv] != r || sp->n < 0 || sp->n > r)
    return bd_err_set(err, BD_E_INVALID, "slice '%s': rank", n->name);
  int64_t start[BD_MAX_RANK], step[BD_MAX_RANK], cnt[BD_MAX_RANK];
  for (int d = 0; d < r; d++) {
    start[d] = 0;
    step[d] = 1;
    cnt[d] = p->dims[xv][d];
  }
  for (int i = 0; i < sp->n; i++) {
    int a = sp->axes[i];
    if (a < 0) a += r;
    if (a < 0 || a >= r || sp->steps[i] == 0)
      return bd_err_set(err, BD_E_INVALID, "slice '%s': axis/step", n->name);
    /* the compiler's count (ONNX clamping, overflow-free for any int64 starts/ends/steps) */
    cnt[a] = bd_slice_len(p->dims[xv][a], sp->starts[i], sp->ends[i], sp->steps[i], &start[a]);
    step[a] = sp->steps[i];
  }
  sc_ctx k;
  memset(&k, 0, sizeof k);
  k.x = c->ptr[xv];
  k.y = c->ptr[yv];
  k.es = bd_dtype_size(c->base.graph->values[xv].dtype);
  k.rank = r;
  int64_t s = 1;
  for (int d = r - 1; d >= 0; d--) {
    if (cnt[d] != p->dims[yv][d])
      return bd_err_set(err, BD_E_INVALID,
                        "slice '%s': axis %d gives %lld elements, plan says %lld", n->name, d,
                        (long long)cnt[d], (long long)p->dims[yv][d]);
    k.od[d] = cnt[d];
    /* more than one element: |step| < dim, so the stride stays within the tensor */
    k.is[d] = cnt[d] > 1 ? s * step[d] : s;
    k.base += start[d] * s;
    s *= p->dims[xv][d];
  }
  for (int d = 0; d < r; d++)
    if (cnt[d] == 0) return BD_OK;
  sc_run(c, &k);
  return BD_OK;
}

/* ---------------- Gather ---------------- */
bd_status bd_cpu_op_gather(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  const bd_graph *g = c->base.graph;
  int xv = n->in[0], iv = n->in[1], yv = n->out[0], r = p->rank[xv];
  int axis = n->p.gather.axis;
  if (axis < 0) axis += r;
  bd_dtype it = g->values[iv].dtype;
  if (axis < 0 || axis >= r || (it != BD_DT_I64 && it != BD_DT_I32))
    return bd_err_set(err, BD_E_INVALID, "gather '%s': axis %d / index dtype", n->name, axis);
  int64_t outer = 1, inner = 1, dim = p->dims[xv][axis], ni = bd_cpu_numel(p, iv);
  for (int d = 0; d < axis; d++) outer *= p->dims[xv][d];
  for (int d = axis + 1; d < r; d++) inner *= p->dims[xv][d];
  if (outer * ni * inner != bd_cpu_numel(p, yv))
    return bd_err_set(err, BD_E_INVALID, "gather '%s': output size", n->name);
  size_t es = bd_dtype_size(g->values[xv].dtype), row = (size_t)inner * es;
  const uint8_t *x = c->ptr[xv];
  uint8_t *y = c->ptr[yv];
  for (int64_t j = 0; j < ni; j++) {
    int64_t ix = it == BD_DT_I64 ? ((const int64_t *)c->ptr[iv])[j] : ((const int32_t *)c->ptr[iv])[j];
    if (ix < -dim || ix >= dim)
      return bd_err_set(err, BD_E_INVALID, "gather '%s': index %lld out of [-%lld, %lld)",
                        n->name, (long long)ix, (long long)dim, (long long)dim);
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < ni; j++) {
      int64_t ix = it == BD_DT_I64 ? ((const int64_t *)c->ptr[iv])[j] : ((const int32_t *)c->ptr[iv])[j];
      if (ix < 0) ix += dim;
      memcpy(y + (size_t)(o * ni + j) * row, x + (size_t)(o * dim + ix) * row, row);
    }
  return BD_OK;
}

/* ---------------- Cast / Shape ---------------- */
static int64_t f2i(double v, int64_t lo, int64_t hi) {
  /* float -> int truncates toward zero (numpy); out-of-range and NaN are undefined in
   * ONNX and in C, so saturate instead of invoking UB */
  if (v != v) return 0;
  if (v <= (double)lo) return lo;
  if (v >= (double)hi) return hi;
  return (int64_t)v;
}

void bd_cpu_convert(const void *src, bd_dtype st, void *dst, bd_dtype dt, int64_t n) {
  int src_float = st == BD_DT_F32 || st == BD_DT_F64;
  for (int64_t i = 0; i < n; i++) {
    double fv = 0;
    int64_t iv = 0;
    switch (st) {
      case BD_DT_F32: fv = ((const float *)src)[i]; break;
      case BD_DT_F64: fv = ((const double *)src)[i]; break;
      case BD_DT_I64: iv = ((const int64_t *)src)[i]; break;
      case BD_DT_I32: iv = ((const int32_t *)src)[i]; break;
      case BD_DT_U8: iv = ((const uint8_t *)src)[i]; break;
      case BD_DT_BOOL: iv = ((const uint8_t *)src)[i] != 0; break;
    }
    switch (dt) {
      case BD_DT_F32: ((float *)dst)[i] = src_float ? (float)fv : (float)iv; break;
      case BD_DT_F64: ((double *)dst)[i] = src_float ? fv : (double)iv; break;
      case BD_DT_I64: ((int64_t *)dst)[i] = src_float ? f2i(fv, INT64_MIN, INT64_MAX) : iv; break;
      case BD_DT_I32:
        ((int32_t *)dst)[i] = src_float ? (int32_t)f2i(fv, INT32_MIN, INT32_MAX) : (int32_t)(uint32_t)iv;
        break;
      case BD_DT_U8:
        ((uint8_t *)dst)[i] = src_float ? (uint8_t)f2i(fv, 0, 255) : (uint8_t)iv;
        break;
      case BD_DT_BOOL: ((uint8_t *)dst)[i] = src_float ? fv != 0 : iv != 0; break;
    }
  }
}

bd_status bd_cpu_op_cast(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  const bd_graph *g = c->base.graph;
  int xv = n->in[0], yv = n->out[0];
  if (g->values[yv].dtype != n->p.cast.to || bd_dtype_size(n->p.cast.to) == 0)
    return bd_err_set(err, BD_E_INVALID, "cast '%s': output dtype", n->name);
  bd_cpu_convert(c->ptr[xv], g->values[xv].dtype, c->ptr[yv], n->p.cast.to, bd_cpu_numel(p, xv));
  return BD_OK;
}

bd_status bd_cpu_op_shape(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  int xv = n->in[0], yv = n->out[0];
  if (c->base.graph->values[yv].dtype != BD_DT_I64 || bd_cpu_numel(p, yv) != p->rank[xv])
    return bd_err_set(err, BD_E_INVALID, "shape '%s': output", n->name);
  int64_t *y = c->ptr[yv];
  for (int d = 0; d < p->rank[xv]; d++) y[d] = p->dims[xv][d];
  return BD_OK;
}

/* ---------------- MatMul ---------------- */
typedef struct {
  bd_cpu *c;
  const float *a, *b;
  float *y;
  int M, K, N, mb, nmb;
  int rank; /* batch rank */
  int64_t bd[BD_MAX_RANK], sa[BD_MAX_RANK], sb[BD_MAX_RANK];
} mm_ctx;

static void mm_task(void *arg, int64_t item, int64_t end, int tid) {
  (void)end;
  const mm_ctx *k = arg;
  int64_t bi = item / k->nmb;
  int m0 = (int)(item % k->nmb) * k->mb;
  int mc = k->M - m0 < k->mb ? k->M - m0 : k->mb;
  int64_t oa = 0, ob = 0, t = bi;
  for (int d = k->rank - 1; d >= 0; d--) {
    int64_t i = t % k->bd[d];
    t /= k->bd[d];
    oa += i * k->sa[d];
    ob += i * k->sb[d];
  }
  const float *a = k->a + oa * k->M * k->K + (size_t)m0 * k->K;
  const float *b = k->b + ob * k->K * k->N;
  float *y = k->y + (bi * k->M + m0) * (int64_t)k->N;
  bd_cpu_gemm(mc, k->N, k->K, a, k->K, b, k->N, y, k->N, 0, bd_cpu_scratch(k->c, tid));
}

bd_status bd_cpu_op_matmul(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err) {
  const bd_graph *g = c->base.graph;
  int av = n->in[0], bv = n->in[1], yv = n->out[0];
  int ra = p->rank[av], rb = p->rank[bv];
  if (g->values[av].dtype != BD_DT_F32 || g->values[bv].dtype != BD_DT_F32 || ra < 1 || rb < 1)
    return bd_err_set(err, BD_E_UNSUPPORTED, "matmul '%s': float32 of rank >= 1", n->name);
  mm_ctx k;
  memset(&k, 0, sizeof k);
  k.c = c;
  k.a = c->ptr[av];
  k.b = c->ptr[bv];
  k.y = c->ptr[yv];
  /* numpy: a 1-D A is [1, K] and a 1-D B is [K, 1]; the added dims are dropped after */
  int64_t M = ra >= 2 ? p->dims[av][ra - 2] : 1, K = p->dims[av][ra - 1];
  int64_t K2 = rb >= 2 ? p->dims[bv][rb - 2] : p->dims[bv][0], N = rb >= 2 ? p->dims[bv][rb - 1] : 1;
  if (K != K2 || M > INT32_MAX / 2 || K > INT32_MAX / 2 || N > INT32_MAX / 2)
    return bd_err_set(err, BD_E_INVALID, "matmul '%s': inner dims %lld vs %lld", n->name,
                      (long long)K, (long long)K2);
  int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
  int br = ba > bb ? ba : bb;
  int64_t nb = 1, stra = 1, strb = 1;
  for (int d = br - 1; d >= 0; d--) {
    int da = d - (br - ba), db = d - (br - bb);
    int64_t ea = da >= 0 ? p->dims[av][da] : 1, eb = db >= 0 ? p->dims[bv][db] : 1;
    if (ea != eb && ea != 1 && eb != 1)
      return bd_err_set(err, BD_E_INVALID, "matmul '%s': batch dims do not broadcast", n->name);
    k.bd[d] = ea > eb ? ea : eb;
    k.sa[d] = ea == 1 ? 0 : stra;
    k.sb[d] = eb == 1 ? 0 : strb;
    stra *= ea;
    strb *= eb;
    nb *= k.bd[d];
  }
  k.rank = br;
  k.M = (int)M;
  k.K = (int)K;
  k.N = (int)N;
  if (nb * M * N != bd_cpu_numel(p, yv))
    return bd_err_set(err, BD_E_INVALID, "matmul '%s': output size", n->name);
  k.mb = k.M;
  if (nb < 8 && k.M >= 64) k.mb = (k.M + 7) / 8 < 16 ? 16 : ((k.M + 7) / 8 + 7) & ~7;
  if (k.mb < 1) k.mb = 1;
  k.nmb = (k.M + k.mb - 1) / k.mb;
  if (k.M == 0 || k.N == 0) return BD_OK;
  bd_cpu_pool_for_each(c->pool, nb * k.nmb, mm_task, &k);
  return BD_OK;
}
