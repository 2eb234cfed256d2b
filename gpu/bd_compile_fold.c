/* Constant evaluators for the shape-arithmetic op set (Shape, Gather, Slice, Concat,
 * Unsqueeze, Squeeze, Cast, Reshape, Flatten, Identity, Add/Sub/Mul/Div), any dtype.
 * Data movement ops copy elements by size; arithmetic runs in int64 for integer types
 * (division truncates, as onnxruntime) and in double for float types. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bd_compile_int.h"

#define FOLD_MAX_ELEMS ((int64_t)1 << 26)

int bd_fold_supported(bd_op op) {
  switch (op) {
    case BD_OP_SHAPE: case BD_OP_GATHER: case BD_OP_SLICE: case BD_OP_CONCAT:
    case BD_OP_UNSQUEEZE: case BD_OP_SQUEEZE: case BD_OP_CAST: case BD_OP_RESHAPE:
    case BD_OP_FLATTEN: case BD_OP_IDENTITY: case BD_OP_ADD: case BD_OP_SUB:
    case BD_OP_MUL: case BD_OP_DIV:
      return 1;
    default:
      return 0;
  }
}

static bd_shape shape_of(const bd_value *v) {
  bd_shape s;
  s.rank = v->rank;
  for (int i = 0; i < v->rank; i++) s.d[i] = v->dims[i];
  return s;
}

static void strides_of(const bd_shape *s, int64_t *st) {
  int64_t m = 1;
  for (int i = s->rank - 1; i >= 0; i--) st[i] = m, m *= s->d[i];
}

static double get_d(const void *p, bd_dtype t, int64_t i) {
  switch (t) {
    case BD_DT_F32: return ((const float *)p)[i];
    case BD_DT_F64: return ((const double *)p)[i];
    case BD_DT_I64: return (double)((const int64_t *)p)[i];
    case BD_DT_I32: return ((const int32_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
  }
}

static int64_t get_i(const void *p, bd_dtype t, int64_t i) {
  switch (t) {
    case BD_DT_I64: return ((const int64_t *)p)[i];
    case BD_DT_I32: return ((const int32_t *)p)[i];
    case BD_DT_U8: case BD_DT_BOOL: return ((const uint8_t *)p)[i];
    default: {
      double d = get_d(p, t, i);
      /* float -> int truncates toward zero; NaN/out of range saturate (no UB) */
      if (!(d == d)) return 0;
      if (d >= 9.2e18) return INT64_MAX;
      if (d <= -9.2e18) return INT64_MIN;
      return (int64_t)d;
    }
  }
}

static void put(void *p, bd_dtype t, int64_t i, double d, int64_t n, int is_float) {
  switch (t) {
    case BD_DT_F32: ((float *)p)[i] = (float)(is_float ? d : (double)n); break;
    case BD_DT_F64: ((double *)p)[i] = is_float ? d : (double)n; break;
    case BD_DT_I64: ((int64_t *)p)[i] = n; break;
    case BD_DT_I32: ((int32_t *)p)[i] = (int32_t)n; break;
    case BD_DT_U8: ((uint8_t *)p)[i] = (uint8_t)n; break;
    case BD_DT_BOOL: ((uint8_t *)p)[i] = is_float ? d != 0 : n != 0; break;
  }
}

static int is_float_t(bd_dtype t) { return t == BD_DT_F32 || t == BD_DT_F64; }

static bd_status binary(const bd_graph *g, const bd_node *nd, void *out, bd_err *err) {
  const bd_value *a = &g->values[nd->in[0]], *b = &g->values[nd->in[1]];
  const bd_value *o = &g->values[nd->out[0]];
  bd_shape sa = shape_of(a), sb = shape_of(b), so = shape_of(o);
  int64_t sta[BD_MAX_RANK] = {0}, stb[BD_MAX_RANK] = {0}, ta[BD_MAX_RANK], tb[BD_MAX_RANK];
  strides_of(&sa, ta);
  strides_of(&sb, tb);
  /* broadcast strides aligned to the output rank (0 along broadcast dims) */
  for (int i = 0; i < so.rank; i++) {
    int ia = i - (so.rank - sa.rank), ib = i - (so.rank - sb.rank);
    sta[i] = ia >= 0 && sa.d[ia] != 1 ? ta[ia] : 0;
    stb[i] = ib >= 0 && sb.d[ib] != 1 ? tb[ib] : 0;
  }
  if (a->dtype != b->dtype)
    return bd_err_set(err, BD_E_INVALID, "node '%s' (%s): operand types differ", nd->name,
                      bd_op_name(nd->op));
  int fl = is_float_t(a->dtype);
  int64_t n = bd_shape_numel(&so), idx[BD_MAX_RANK] = {0};
  for (int64_t k = 0; k < n; k++) {
    int64_t oa = 0, ob = 0;
    for (int i = 0; i < so.rank; i++) oa += idx[i] * sta[i], ob += idx[i] * stb[i];
    if (fl) {
      double x = get_d(a->data, a->dtype, oa), y = get_d(b->data, b->dtype, ob), r;
      switch (nd->op) {
        case BD_OP_ADD: r = x + y; break;
        case BD_OP_SUB: r = x - y; break;
        case BD_OP_MUL: r = x * y; break;
        default: r = x / y; break;
      }
      if (a->dtype == BD_DT_F32) /* per-element float32 rounding, as the runtime does */
        r = (double)(float)(nd->op == BD_OP_ADD   ? (float)x + (float)y
                            : nd->op == BD_OP_SUB ? (float)x - (float)y
                            : nd->op == BD_OP_MUL ? (float)x * (float)y
                                                  : (float)x / (float)y);
      put(out, o->dtype, k, r, 0, 1);
    } else {
      int64_t x = get_i(a->data, a->dtype, oa), y = get_i(b->data, b->dtype, ob), r;
      /* unsigned arithmetic: wraps instead of overflowing (no UB) */
      switch (nd->op) {
        case BD_OP_ADD: r = (int64_t)((uint64_t)x + (uint64_t)y); break;
        case BD_OP_SUB: r = (int64_t)((uint64_t)x - (uint64_t)y); break;
        case BD_OP_MUL: r = (int64_t)((uint64_t)x * (uint64_t)y); break;
        default:
          if (y == 0 || (x == INT64_MIN && y == -1))
            return bd_err_set(err, BD_E_INVALID, "node '%s' (Div): integer division by zero",
                              nd->name);
          r = x / y;
      }
      put(out, o->dtype, k, 0, r, 0);
    }
    for (int i = so.rank - 1; i >= 0; i--) {
      if (++idx[i] < so.d[i]) break;
      idx[i] = 0;
    }
  }
  return BD_OK;
}

bd_status bd_fold_eval(const bd_graph *g, const bd_node *nd, void **data, bd_err *err) {
  const bd_value *x = &g->values[nd->in[0]];
  const bd_value *o = &g->values[nd->out[0]];
  bd_shape so = shape_of(o), sx = shape_of(x);
  int64_t n = bd_shape_numel(&so);
  size_t esz = bd_dtype_size(o->dtype), xesz = bd_dtype_size(x->dtype);
  bd_status st = BD_OK;
  *data = NULL;
  if (n < 0 || n > FOLD_MAX_ELEMS)
    return bd_err_set(err, BD_E_LIMIT, "node '%s' (%s): constant too large to fold", nd->name,
                      bd_op_name(nd->op));
  uint8_t *out = malloc(n ? (size_t)n * esz : 1);
  if (!out) return bd_err_set(err, BD_E_NOMEM, "constant folding: out of memory");
  const uint8_t *xd = x->data;
  switch (nd->op) {
    case BD_OP_SHAPE:
      for (int i = 0; i < x->rank; i++) ((int64_t *)out)[i] = x->dims[i];
      break;
    case BD_OP_IDENTITY: case BD_OP_RESHAPE: case BD_OP_FLATTEN: case BD_OP_UNSQUEEZE:
    case BD_OP_SQUEEZE:
      memcpy(out, xd, (size_t)n * esz);
      break;
    case BD_OP_CAST: {
      int fl = is_float_t(x->dtype);
      for (int64_t i = 0; i < n; i++)
        put(out, o->dtype, i, fl ? get_d(xd, x->dtype, i) : 0, get_i(xd, x->dtype, i), fl);
      break;
    }
    case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV:
      st = binary(g, nd, out, err);
      break;
    case BD_OP_CONCAT: {
      int a = nd->p.concat.axis;
      int64_t outer = 1, pos = 0;
      for (int i = 0; i < a; i++) outer *= so.d[i];
      size_t orow = (size_t)(n / (outer ? outer : 1)) * esz;
      for (int k = 0; k < nd->n_in; k++) {
        const bd_value *v = &g->values[nd->in[k]];
        int64_t vn = bd_value_numel(v);
        size_t row = (size_t)(vn / (outer ? outer : 1)) * esz;
        for (int64_t r = 0; r < outer && row; r++)
          memcpy(out + (size_t)r * orow + pos, (const uint8_t *)v->data + (size_t)r * row, row);
        pos += (int64_t)row;
      }
      break;
    }
    case BD_OP_GATHER: {
      const bd_value *iv = &g->values[nd->in[1]];
      int a = nd->p.gather.axis;
      int64_t outer = 1, inner = 1, ni = bd_value_numel(iv), da = sx.d[a];
      for (int i = 0; i < a; i++) outer *= sx.d[i];
      for (int i = a + 1; i < sx.rank; i++) inner *= sx.d[i];
      size_t chunk = (size_t)inner * esz;
      for (int64_t r = 0; r < outer && st == BD_OK; r++)
        for (int64_t j = 0; j < ni; j++) {
          int64_t q = get_i(iv->data, iv->dtype, j);
          if (q < 0) q += da;
          if (q < 0 || q >= da) {
            st = bd_err_set(err, BD_E_INVALID, "node '%s' (Gather): index %lld out of range 0..%lld",
                            nd->name, (long long)get_i(iv->data, iv->dtype, j), (long long)da - 1);
            break;
          }
          memcpy(out + (size_t)(r * ni + j) * chunk, xd + (size_t)(r * da + q) * chunk, chunk);
        }
      break;
    }
    case BD_OP_SLICE: {
      int64_t start[BD_MAX_RANK], step[BD_MAX_RANK], xs[BD_MAX_RANK], idx[BD_MAX_RANK] = {0};
      bd_shape tmp;
      bd_slice_resolve(&nd->p.slice, &sx, start, step, &tmp);
      strides_of(&sx, xs);
      for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int i = 0; i < so.rank; i++) off += (start[i] + idx[i] * step[i]) * xs[i];
        memcpy(out + (size_t)k * esz, xd + (size_t)off * xesz, esz);
        for (int i = so.rank - 1; i >= 0; i--) {
          if (++idx[i] < so.d[i]) break;
          idx[i] = 0;
        }
      }
      break;
    }
    default:
      st = bd_err_set(err, BD_E_INTERNAL, "node '%s' (%s): no constant evaluator", nd->name,
                      bd_op_name(nd->op));
  }
  if (st) free(out);
  else *data = out;
  return st;
}
