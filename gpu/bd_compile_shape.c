/* Shape inference for every op (ONNX semantics), and compile-time resolution of params
 * that ONNX passes as inputs or leaves rank-relative. Used at B0 by bd_compile and at
 * batch N by bd_plan_new. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_compile.h"
#include "bd_compile_int.h"

#define NAME(nd) ((nd)->name && *(nd)->name ? (nd)->name : "?")

static bd_status fail(bd_err *err, const bd_node *nd, const char *fmt, const char *what) {
  char buf[256];
  snprintf(buf, sizeof buf, fmt, what);
  return bd_err_set(err, BD_E_INVALID, "node '%s' (%s): %s", NAME(nd), bd_op_name(nd->op), buf);
}

bd_status bd_broadcast(const bd_shape *a, const bd_shape *b, bd_shape *out, const bd_node *nd,
                       bd_err *err) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  out->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da != db && da != 1 && db != 1)
      return fail(err, nd, "%s", "shapes cannot be broadcast together");
    out->d[i] = da == 1 ? db : da;
  }
  return BD_OK;
}

static int norm_axis(int64_t axis, int rank, int *out) {
  if (axis < -rank || axis >= rank) return -1;
  *out = (int)(axis < 0 ? axis + rank : axis);
  return 0;
}

/* Reads a 1-D (or scalar) constant int64/int32 tensor; returns count or -1. */
static int const_ints(const bd_graph *g, int vi, int64_t *out, int cap) {
  if (vi < 0) return -1;
  const bd_value *v = &g->values[vi];
  if (!v->data || v->rank > 1) return -1;
  int64_t n = bd_value_numel(v);
  if (n < 0 || n > cap) return -1;
  for (int64_t i = 0; i < n; i++) {
    if (v->dtype == BD_DT_I64) out[i] = ((const int64_t *)v->data)[i];
    else if (v->dtype == BD_DT_I32) out[i] = ((const int32_t *)v->data)[i];
    else return -1;
  }
  return (int)n;
}

static int is_const(const bd_graph *g, int vi) { return vi >= 0 && g->values[vi].data != NULL; }

static void drop_inputs(bd_node *nd) { nd->n_in = 1; }

/* conv/pool window output size with auto_pad resolution */
static bd_status window(const bd_node *nd, int64_t in, int k, int s, int d, int auto_pad,
                        int *pb, int *pe, int64_t *out, bd_err *err) {
  int64_t ke = (int64_t)(k - 1) * d + 1;
  if (auto_pad == BD_PAD_VALID) *pb = *pe = 0;
  if (auto_pad == BD_PAD_SAME_UPPER || auto_pad == BD_PAD_SAME_LOWER) {
    int64_t o = (in + s - 1) / s;
    int64_t total = (o - 1) * s + ke - in;
    if (total < 0) total = 0;
    int64_t small = total / 2, big = total - small;
    *pb = (int)(auto_pad == BD_PAD_SAME_UPPER ? small : big);
    *pe = (int)(auto_pad == BD_PAD_SAME_UPPER ? big : small);
  }
  int64_t span = in + *pb + *pe - ke;
  if (span < 0) return fail(err, nd, "%s", "kernel is larger than the padded input");
  *out = span / s + 1;
  return BD_OK;
}

bd_status bd_resolve_params(bd_graph *g, bd_node *nd, int *pending, bd_err *err) {
  *pending = 0;
  const bd_value *x = &g->values[nd->in[0]];
  int r = x->rank;
  int64_t v[BD_MAX_RANK];
  switch (nd->op) {
    case BD_OP_CONV: {
      bd_conv_params *p = &nd->p.conv;
      const bd_value *w = nd->n_in > 1 && nd->in[1] >= 0 ? &g->values[nd->in[1]] : NULL;
      if (!w || w->rank != 4 || r != 4) return fail(err, nd, "%s", "needs 4-D X and W (2-D conv only)");
      if (w->dims[0] < 1 || w->dims[1] < 1)
        return fail(err, nd, "%s", "W has no elements (0 output or input channels)");
      /* the kernel_shape attribute's limits hold for a kernel taken from W too */
      if (!p->kh) {
        if (w->dims[2] < 1 || w->dims[3] < 1 || w->dims[2] > 1024 || w->dims[3] > 1024)
          return fail(err, nd, "%s", "W's kernel dims are out of range (1..1024)");
        p->kh = (int)w->dims[2], p->kw = (int)w->dims[3];
      }
      if (p->auto_pad) {
        int64_t o;
        bd_status st;
        if ((st = window(nd, x->dims[2], p->kh, p->sh, p->dh, p->auto_pad, &p->pad_t, &p->pad_b, &o, err)) ||
            (st = window(nd, x->dims[3], p->kw, p->sw, p->dw, p->auto_pad, &p->pad_l, &p->pad_r, &o, err)))
          return st;
        p->auto_pad = BD_PAD_NOTSET;
      }
      break;
    }
    case BD_OP_MAXPOOL: {
      bd_pool_params *p = &nd->p.pool;
      if (r != 4) return fail(err, nd, "%s", "only 2-D pooling (4-D input) is supported");
      if (p->auto_pad) {
        int64_t o;
        bd_status st;
        if ((st = window(nd, x->dims[2], p->kh, p->sh, 1, p->auto_pad, &p->pad_t, &p->pad_b, &o, err)) ||
            (st = window(nd, x->dims[3], p->kw, p->sw, 1, p->auto_pad, &p->pad_l, &p->pad_r, &o, err)))
          return st;
        p->auto_pad = BD_PAD_NOTSET;
      }
      break;
    }
    case BD_OP_CONCAT:
      if (norm_axis(nd->p.concat.axis, r, &nd->p.concat.axis)) return fail(err, nd, "%s", "axis out of range");
      break;
    case BD_OP_SOFTMAX: case BD_OP_SOFTMAX_DOT:
      if (norm_axis(nd->p.softmax.axis, r, &nd->p.softmax.axis)) return fail(err, nd, "%s", "axis out of range");
      break;
    case BD_OP_GATHER:
      if (norm_axis(nd->p.gather.axis, r, &nd->p.gather.axis)) return fail(err, nd, "%s", "axis out of range");
      if (!is_const(g, nd->in[1])) *pending = 1;
      break;
    case BD_OP_FLATTEN:
      if (nd->p.flatten.axis < 0) nd->p.flatten.axis += r;
      if (nd->p.flatten.axis < 0 || nd->p.flatten.axis > r) return fail(err, nd, "%s", "axis out of range");
      break;
    case BD_OP_TRANSPOSE:
      if (nd->p.transpose.n == 0) {
        nd->p.transpose.n = r;
        for (int i = 0; i < r; i++) nd->p.transpose.perm[i] = r - 1 - i;
      }
      break;
    case BD_OP_RESHAPE:
      if (!is_const(g, nd->in[1])) *pending = 1;
      break;
    case BD_OP_UNSQUEEZE:
    case BD_OP_SQUEEZE: {
      if (nd->n_in > 1) {
        if (!is_const(g, nd->in[1])) { *pending = 1; break; }
        int n = const_ints(g, nd->in[1], v, BD_MAX_RANK);
        if (n < 0) return fail(err, nd, "%s", "axes must be a 1-D int tensor of at most 6 entries");
        nd->p.unsq.n = n;
        for (int i = 0; i < n; i++) nd->p.unsq.axes[i] = (int)v[i];
        drop_inputs(nd);
      }
      int rr = nd->op == BD_OP_UNSQUEEZE ? r + nd->p.unsq.n : r;
      if (rr > BD_MAX_RANK) return fail(err, nd, "%s", "result rank exceeds 6");
      if (nd->op == BD_OP_SQUEEZE && nd->p.unsq.n == 0) {
        /* "all 1s", fixed at B0 so that a plan never squeezes a different set */
        for (int i = 0; i < r; i++)
          if (x->dims[i] == 1) nd->p.unsq.axes[nd->p.unsq.n++] = i;
      }
      for (int i = 0; i < nd->p.unsq.n; i++)
        if (norm_axis(nd->p.unsq.axes[i], rr, &nd->p.unsq.axes[i])) return fail(err, nd, "%s", "axes out of range");
      break;
    }
    case BD_OP_SLICE: {
      bd_slice_params *p = &nd->p.slice;
      if (nd->n_in > 1) {
        for (int i = 1; i < nd->n_in; i++)
          if (nd->in[i] >= 0 && !is_const(g, nd->in[i])) *pending = 1;
        if (*pending) break;
        int64_t e[BD_MAX_RANK], a[BD_MAX_RANK], s[BD_MAX_RANK];
        int ns = const_ints(g, nd->in[1], v, BD_MAX_RANK);
        int ne = const_ints(g, nd->in[2], e, BD_MAX_RANK);
        int na = nd->n_in > 3 && nd->in[3] >= 0 ? const_ints(g, nd->in[3], a, BD_MAX_RANK) : 0;
        int nst = nd->n_in > 4 && nd->in[4] >= 0 ? const_ints(g, nd->in[4], s, BD_MAX_RANK) : 0;
        if (ns < 1 || ne != ns || (na && na != ns) || (nst && nst != ns) || na < 0 || nst < 0)
          return fail(err, nd, "%s", "starts/ends/axes/steps must be 1-D int tensors of equal length");
        p->n = ns;
        for (int i = 0; i < ns; i++) {
          p->axes[i] = na ? (int)(a[i] < -100 ? -100 : a[i] > 100 ? 100 : a[i]) : i;
          p->starts[i] = v[i];
          p->ends[i] = e[i];
          p->steps[i] = nst ? s[i] : 1;
          if (p->steps[i] == 0) return fail(err, nd, "%s", "step 0");
        }
        drop_inputs(nd);
      }
      for (int i = 0; i < p->n; i++) {
        if (norm_axis(p->axes[i], r, &p->axes[i])) return fail(err, nd, "%s", "axes out of range");
        for (int j = 0; j < i; j++)
          if (p->axes[j] == p->axes[i]) return fail(err, nd, "%s", "repeated axis");
      }
      break;
    }
    case BD_OP_RESIZE: {
      bd_resize_params *p = &nd->p.resize;
      if (r != 4) return fail(err, nd, "%s", "only 4-D input is supported");
      if (nd->n_in > 1) {
        int sc = nd->in[1], sz = nd->n_in > 2 ? nd->in[2] : -1;
        if ((sc >= 0 && !is_const(g, sc)) || (sz >= 0 && !is_const(g, sz))) { *pending = 1; break; }
        const bd_value *scv = sc >= 0 ? &g->values[sc] : NULL;
        if (scv && bd_value_numel(scv) > 0) {
          if (scv->dtype != BD_DT_F32 || bd_value_numel(scv) != 4)
            return fail(err, nd, "%s", "scales must be 4 float32 values");
          const float *f = scv->data;
          if (f[0] != 1.0f || f[1] != 1.0f) return fail(err, nd, "%s", "only H and W may be scaled");
          if (!(f[2] > 0 && f[2] < 1e4f && f[3] > 0 && f[3] < 1e4f)) return fail(err, nd, "%s", "scales out of range");
          p->scale_h = f[2], p->scale_w = f[3];
        } else {
          int n = const_ints(g, sz, v, BD_MAX_RANK);
          if (n != 4) return fail(err, nd, "%s", "needs scales or 4 sizes");
          if (v[0] != x->dims[0] || v[1] != x->dims[1]) return fail(err, nd, "%s", "only H and W may be resized");
          if (v[2] < 1 || v[3] < 1 || v[2] > (1 << 20) || v[3] > (1 << 20)) return fail(err, nd, "%s", "sizes out of range");
          p->out_h = v[2], p->out_w = v[3];
          p->scale_h = (float)((double)v[2] / (double)x->dims[2]);
          p->scale_w = (float)((double)v[3] / (double)x->dims[3]);
        }
        drop_inputs(nd);
      }
      break;
    }
    default:
      break;
  }
  return BD_OK;
}

bd_dtype bd_infer_dtype(const bd_graph *g, const bd_node *nd) {
  switch (nd->op) {
    case BD_OP_SHAPE: return BD_DT_I64;
    case BD_OP_CAST: return nd->p.cast.to;
    default: return g->values[nd->in[0]].dtype;
  }
}

void bd_slice_resolve(const bd_slice_params *p, const bd_shape *in, int64_t *start,
                      int64_t *step, bd_shape *out) {
  *out = *in;
  for (int i = 0; i < in->rank; i++) start[i] = 0, step[i] = 1;
  for (int i = 0; i < p->n; i++) {
    int a = p->axes[i];
    out->d[a] = bd_slice_len(in->d[a], p->starts[i], p->ends[i], p->steps[i], &start[a]);
    step[a] = p->steps[i];
  }
}

static bd_status infer_node(const bd_infer_ctx *cx, const bd_node *nd, const bd_shape *ins,
                            bd_shape *out, bd_err *err);

/* Every inferred shape is checked against the same limits as the importer's tensors, so
 * that a hostile model cannot make later size arithmetic overflow (found by fuzzing). */
#define BD_SHAPE_MAX_DIM ((int64_t)1 << 31)
#define BD_SHAPE_MAX_NUMEL ((int64_t)1 << 40)

bd_status bd_infer_node(const bd_infer_ctx *cx, const bd_node *nd, const bd_shape *ins,
                        bd_shape *out, bd_err *err) {
  bd_status st = infer_node(cx, nd, ins, out, err);
  if (st != BD_OK) return st;
  int64_t n = 1;
  for (int i = 0; i < out->rank; i++) {
    if (out->d[i] < 0 || out->d[i] > BD_SHAPE_MAX_DIM || __builtin_mul_overflow(n, out->d[i], &n) ||
        n > BD_SHAPE_MAX_NUMEL)
      return fail(err, nd, "%s", "output shape out of range (dims <= 2^31, elements <= 2^40)");
  }
  return BD_OK;
}

static bd_status infer_node(const bd_infer_ctx *cx, const bd_node *nd, const bd_shape *ins,
                            bd_shape *out, bd_err *err) {
  const bd_graph *g = cx->g;
  const bd_shape *x = &ins[0];
  int64_t v[BD_MAX_RANK];
  *out = *x;
  switch (nd->op) {
    case BD_OP_CONV: {
      const bd_conv_params *p = &nd->p.conv;
      const bd_shape *w = &ins[1];
      if (x->rank != 4 || w->rank != 4) return fail(err, nd, "%s", "needs 4-D X and W");
      if (p->group < 1 || x->d[1] != w->d[1] * p->group || w->d[0] % p->group)
        return fail(err, nd, "%s", "channel count does not match W and group");
      if (w->d[2] != p->kh || w->d[3] != p->kw) return fail(err, nd, "%s", "kernel_shape does not match W");
      if (nd->n_in > 2 && nd->in[2] >= 0 && (ins[2].rank != 1 || ins[2].d[0] != w->d[0]))
        return fail(err, nd, "%s", "bias shape does not match W");
      int pt = p->pad_t, pb = p->pad_b, pl = p->pad_l, pr = p->pad_r;
      bd_status st;
      out->d[1] = w->d[0];
      if ((st = window(nd, x->d[2], p->kh, p->sh, p->dh, 0, &pt, &pb, &out->d[2], err)) ||
          (st = window(nd, x->d[3], p->kw, p->sw, p->dw, 0, &pl, &pr, &out->d[3], err)))
        return st;
      if (nd->n_in > 3 && nd->in[3] >= 0)
        for (int i = 0; i < 4; i++)
          if (ins[3].rank != 4 || ins[3].d[i] != out->d[i]) return fail(err, nd, "%s", "residual shape differs");
      return BD_OK;
    }
    case BD_OP_MAXPOOL: {
      const bd_pool_params *p = &nd->p.pool;
      int pt = p->pad_t, pb = p->pad_b, pl = p->pad_l, pr = p->pad_r;
      bd_status st;
      if (x->rank != 4) return fail(err, nd, "%s", "needs 4-D input");
      if ((st = window(nd, x->d[2], p->kh, p->sh, 1, 0, &pt, &pb, &out->d[2], err)) ||
          (st = window(nd, x->d[3], p->kw, p->sw, 1, 0, &pl, &pr, &out->d[3], err)))
        return st;
      return BD_OK;
    }
    case BD_OP_BATCHNORM:
      if (x->rank < 2) return fail(err, nd, "%s", "needs rank >= 2");
      for (int i = 1; i < 5; i++)
        if (ins[i].rank != 1 || ins[i].d[0] != x->d[1]) return fail(err, nd, "%s", "parameter shape is not [C]");
      return BD_OK;
    case BD_OP_RELU: case BD_OP_SIGMOID: case BD_OP_SILU: case BD_OP_EXP: case BD_OP_CAST:
    case BD_OP_IDENTITY: case BD_OP_SOFTMAX:
      return BD_OK;
    case BD_OP_SOFTMAX_DOT: {
      int a = nd->p.softmax.axis;
      if (nd->n_in != 2 || a < 0 || a >= x->rank) return fail(err, nd, "%s", "needs X, P and an axis of X");
      int64_t np = 1;
      for (int i = 0; i < ins[1].rank; i++) np *= ins[1].d[i];
      if (ins[1].rank < 1 || np != x->d[a]) return fail(err, nd, "%s", "P's length differs from the axis");
      out->d[a] = 1;
      return BD_OK;
    }
    case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV:
      return bd_broadcast(&ins[0], &ins[1], out, nd, err);
    case BD_OP_CONCAT: {
      int a = nd->p.concat.axis;
      if (a < 0 || a >= x->rank) return fail(err, nd, "%s", "axis out of range");
      for (int i = 1; i < nd->n_in; i++) {
        if (ins[i].rank != x->rank) return fail(err, nd, "%s", "inputs differ in rank");
        for (int k = 0; k < x->rank; k++)
          if (k != a && ins[i].d[k] != x->d[k]) return fail(err, nd, "%s", "inputs differ in shape off the axis");
        out->d[a] += ins[i].d[a];
      }
      return BD_OK;
    }
    case BD_OP_RESIZE: {
      const bd_resize_params *p = &nd->p.resize;
      if (nd->n_in > 1) return fail(err, nd, "%s", "scales/sizes are not constant");
      out->d[2] = p->out_h > 0 ? p->out_h : (int64_t)((double)x->d[2] * (double)p->scale_h);
      out->d[3] = p->out_w > 0 ? p->out_w : (int64_t)((double)x->d[3] * (double)p->scale_w);
      if (out->d[2] < 1 || out->d[3] < 1) return fail(err, nd, "%s", "output size is 0");
      return BD_OK;
    }
    case BD_OP_RESHAPE: {
      const bd_value *tv = &g->values[nd->in[1]];
      int n = const_ints(g, nd->in[1], v, BD_MAX_RANK);
      if (!tv->data) return fail(err, nd, "%s", "shape is not constant");
      if (n < 0) return fail(err, nd, "%s", "shape must be a 1-D int tensor of at most 6 entries");
      int64_t numel = bd_shape_numel(x);
      /* Exports bake B0 into targets ([B0,85,-1], [B0*A*4,R+1]): when the reshaped value
       * carries the batch and the literal leading entry is the B0-time leading dim,
       * it scales with the batch. */
      if (cx->plan && cx->n != cx->b0 && g->values[nd->in[0]].batch_dep && n > 0 && v[0] > 0 &&
          v[0] == g->values[nd->out[0]].dims[0] && v[0] % cx->b0 == 0)
        v[0] = v[0] / cx->b0 * cx->n;
      out->rank = n;
      int neg = -1;
      int64_t prod = 1;
      for (int i = 0; i < n; i++) {
        if (v[i] == 0 && !nd->p.reshape.allowzero) {
          if (i >= x->rank) return fail(err, nd, "%s", "0 refers to a missing input dim");
          v[i] = x->d[i];
        }
        if (v[i] == -1) {
          if (neg >= 0) return fail(err, nd, "%s", "more than one -1");
          neg = i;
          continue;
        }
        if (v[i] < 0) return fail(err, nd, "%s", "negative dim");
        if (v[i] > BD_SHAPE_MAX_DIM || __builtin_mul_overflow(prod, v[i], &prod))
          return fail(err, nd, "%s", "shape entry too large");
        out->d[i] = v[i];
      }
      if (neg >= 0) {
        if (prod == 0 || numel % prod) return fail(err, nd, "%s", "shape does not fit the element count");
        out->d[neg] = numel / prod;
      } else if (prod != numel) {
        return fail(err, nd, "%s", "shape does not fit the element count");
      }
      return BD_OK;
    }
    case BD_OP_FLATTEN: {
      int a = nd->p.flatten.axis;
      int64_t p0 = 1, p1 = 1;
      for (int i = 0; i < x->rank; i++) {
        if (i < a) p0 *= x->d[i];
        else p1 *= x->d[i];
      }
      out->rank = 2, out->d[0] = p0, out->d[1] = p1;
      return BD_OK;
    }
    case BD_OP_TRANSPOSE: {
      int seen = 0;
      if (nd->p.transpose.n != x->rank) return fail(err, nd, "%s", "perm length differs from the rank");
      for (int i = 0; i < x->rank; i++) {
        int q = nd->p.transpose.perm[i];
        if (q < 0 || q >= x->rank || (seen >> q & 1)) return fail(err, nd, "%s", "perm is not a permutation");
        seen |= 1 << q;
        out->d[i] = x->d[q];
      }
      return BD_OK;
    }
    case BD_OP_MATMUL: {
      bd_shape a = ins[0], b = ins[1], ba, bb, bo;
      if (a.rank < 1 || b.rank < 1) return fail(err, nd, "%s", "scalar operand");
      int a1 = a.rank == 1, b1 = b.rank == 1;
      if (a1) a.rank = 2, a.d[1] = a.d[0], a.d[0] = 1;
      if (b1) b.rank = 2, b.d[1] = 1;
      if (a.d[a.rank - 1] != b.d[b.rank - 2]) return fail(err, nd, "%s", "inner dims differ");
      ba.rank = a.rank - 2, bb.rank = b.rank - 2;
      memcpy(ba.d, a.d, sizeof(int64_t) * (size_t)ba.rank);
      memcpy(bb.d, b.d, sizeof(int64_t) * (size_t)bb.rank);
      bd_status st = bd_broadcast(&ba, &bb, &bo, nd, err);
      if (st) return st;
      *out = bo;
      if (!a1) out->d[out->rank++] = a.d[a.rank - 2];
      if (!b1) out->d[out->rank++] = b.d[b.rank - 1];
      return BD_OK;
    }
    case BD_OP_SLICE: {
      int64_t st[BD_MAX_RANK], sp[BD_MAX_RANK];
      if (nd->n_in > 1) return fail(err, nd, "%s", "starts/ends/axes/steps are not constant");
      bd_slice_resolve(&nd->p.slice, x, st, sp, out);
      return BD_OK;
    }
    case BD_OP_GATHER: {
      const bd_shape *ix = &ins[1];
      int a = nd->p.gather.axis;
      if (x->rank + ix->rank - 1 > BD_MAX_RANK || x->rank < 1) return fail(err, nd, "%s", "result rank exceeds 6");
      out->rank = 0;
      for (int i = 0; i < a; i++) out->d[out->rank++] = x->d[i];
      for (int i = 0; i < ix->rank; i++) out->d[out->rank++] = ix->d[i];
      for (int i = a + 1; i < x->rank; i++) out->d[out->rank++] = x->d[i];
      const bd_value *iv = &g->values[nd->in[1]];
      if (iv->dtype != BD_DT_I64 && iv->dtype != BD_DT_I32)
        return fail(err, nd, "indices must be int32 or int64, not %s", bd_dtype_name(iv->dtype));
      if (iv->data) {
        int64_t n = bd_shape_numel(ix);
        for (int64_t i = 0; i < n; i++) {
          int64_t q = iv->dtype == BD_DT_I64 ? ((const int64_t *)iv->data)[i]
                                             : ((const int32_t *)iv->data)[i];
          if (q < -x->d[a] || q >= x->d[a]) return fail(err, nd, "%s", "index out of range");
        }
      }
      return BD_OK;
    }
    case BD_OP_UNSQUEEZE: {
      int r = x->rank + nd->p.unsq.n, k = 0;
      uint32_t mask = 0;
      for (int i = 0; i < nd->p.unsq.n; i++) mask |= 1u << nd->p.unsq.axes[i];
      out->rank = r;
      for (int i = 0; i < r; i++) out->d[i] = (mask >> i & 1) ? 1 : x->d[k++];
      if (k != x->rank) return fail(err, nd, "%s", "repeated axes");
      return BD_OK;
    }
    case BD_OP_SQUEEZE: {
      uint32_t mask = 0;
      for (int i = 0; i < nd->p.unsq.n; i++) mask |= 1u << nd->p.unsq.axes[i];
      out->rank = 0;
      for (int i = 0; i < x->rank; i++) {
        if (mask >> i & 1) {
          if (x->d[i] != 1) return fail(err, nd, "%s", "squeezed dim is not 1");
          continue;
        }
        out->d[out->rank++] = x->d[i];
      }
      return BD_OK;
    }
    case BD_OP_SHAPE:
      out->rank = 1, out->d[0] = x->rank;
      return BD_OK;
    default:
      return fail(err, nd, "%s", "no shape rule");
  }
}
