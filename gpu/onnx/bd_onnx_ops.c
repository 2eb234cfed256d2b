/* ONNX nodes -> bd_node: op mapping and attribute parsing into the typed params.
 * Unknown attributes, attributes of another type than ONNX defines or given twice, and
 * unsupported attribute values are errors that name the node, the op and the attribute,
 * so a model never runs with silently different semantics.
 * Inputs that ONNX passes as tensors (Slice starts/ends/axes/steps at opset >= 10,
 * Unsqueeze/Squeeze axes at >= 13, Resize scales/sizes) stay node inputs here; the
 * compiler resolves them into params once they are constant (they may be computed
 * by Shape subgraphs). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_onnx_int.h"

typedef Onnx__AttributeProto attr_t;

typedef struct {
  bd_onnx_imp *im;
  const Onnx__NodeProto *np;
  const char *label;
  const char *op;
  bd_err *err;
} nctx;

static const attr_t *find_attr(const nctx *c, const char *name) {
  for (size_t i = 0; i < c->np->n_attribute; i++) {
    const attr_t *a = c->np->attribute[i];
    if (a->name && strcmp(a->name, name) == 0) return a;
  }
  return NULL;
}

static bd_status bad_attr(const nctx *c, const char *attr, const char *why) {
  return bd_err_set(c->err, BD_E_UNSUPPORTED, "node '%s' (%s): attribute %s %s", c->label,
                    c->op, attr, why);
}

static const struct {
  const char *name;
  int type;
} attr_types[] = {
    {"FLOAT", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT},
    {"INT", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT},
    {"STRING", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING},
    {"TENSOR", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR},
    {"GRAPH", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH},
    {"FLOATS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS},
    {"INTS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS},
    {"STRINGS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS},
    {"TENSORS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS},
    {"GRAPHS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS},
    {"SPARSE_TENSOR", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR},
    {"SPARSE_TENSORS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS},
    {"TYPE_PROTO", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO},
    {"TYPE_PROTOS", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS},
};

static const char *attr_type_name(int t) {
  for (size_t i = 0; i < sizeof attr_types / sizeof attr_types[0]; i++)
    if (attr_types[i].type == t) return attr_types[i].name;
  return t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED ? "UNDEFINED" : "unknown";
}

/* The attribute's type. IR 1 files did not write it; ONNX says the field in use tells. */
static int attr_type(const attr_t *a) {
  if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
    return (int)a->type;
  if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
  return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

/* Every attribute must be one the op knows, of its ONNX type, and given once. `known`
 * is a space-separated list of NAME:TYPE (at most 32). onnxruntime refuses the others
 * as invalid models; reading them as absent would run the op with its defaults. */
static bd_status check_known(const nctx *c, const char *known) {
  uint32_t seen = 0;
  for (size_t i = 0; i < c->np->n_attribute; i++) {
    const attr_t *a = c->np->attribute[i];
    const char *n = a->name ? a->name : "";
    size_t l = strlen(n);
    const char *p = known;
    int j = 0, want = -1;
    while (l && *p) {
      const char *colon = strchr(p, ':');
      const char *end = strchr(p, ' ');
      if (!end) end = p + strlen(p);
      if (!colon || colon > end) break; /* a malformed list: nothing matches */
      if ((size_t)(colon - p) == l && memcmp(p, n, l) == 0) {
        for (size_t k = 0; k < sizeof attr_types / sizeof attr_types[0]; k++)
          if (strlen(attr_types[k].name) == (size_t)(end - colon - 1) &&
              memcmp(attr_types[k].name, colon + 1, (size_t)(end - colon - 1)) == 0)
            want = attr_types[k].type;
        break;
      }
      j++;
      p = *end ? end + 1 : end;
    }
    if (want < 0 || j >= 32) return bad_attr(c, n, "is not supported");
    if (seen >> j & 1)
      return bd_err_set(c->err, BD_E_INVALID, "node '%s' (%s): attribute %s is given twice",
                        c->label, c->op, n);
    seen |= 1u << j;
    int t = attr_type(a);
    if (t != want)
      return bd_err_set(c->err, BD_E_INVALID,
                        "node '%s' (%s): attribute %s has type %s; ONNX defines it as %s", c->label,
                        c->op, n, attr_type_name(t), attr_type_name(want));
  }
  return BD_OK;
}

/* The readers below run after check_known: a present attribute has the type asked for. */
static int64_t attr_i(const nctx *c, const char *name, int64_t def) {
  const attr_t *a = find_attr(c, name);
  return a && a->has_i ? a->i : def;
}

static float attr_f(const nctx *c, const char *name, float def) {
  const attr_t *a = find_attr(c, name);
  return a && a->has_f ? a->f : def;
}

/* Copies a string attribute into buf (`def` when absent). */
static void attr_s(const nctx *c, const char *name, char *buf, size_t cap, const char *def) {
  const attr_t *a = find_attr(c, name);
  if (!a || !a->has_s) {
    snprintf(buf, cap, "%s", def);
    return;
  }
  size_t n = a->s.len < cap - 1 ? a->s.len : cap - 1;
  if (n) memcpy(buf, a->s.data, n);
  buf[n] = 0;
}

/* ints attribute with exactly `want` entries (or want < 0: 1..BD_MAX_RANK entries);
 * returns the count, 0 when absent, -1 after setting an error. */
static int attr_ints(const nctx *c, const char *name, int want, int64_t *out) {
  const attr_t *a = find_attr(c, name);
  if (!a) return 0;
  size_t n = a->n_ints;
  if ((want >= 0 && n != (size_t)want) || (want < 0 && n > BD_MAX_RANK)) {
    bad_attr(c, name, want == 2 || want == 4 ? "has the wrong length (only 2-D is supported)"
                                             : "has the wrong length");
    return -1;
  }
  for (size_t i = 0; i < n; i++) out[i] = a->ints[i];
  return (int)n;
}

static int to_int(int64_t v) { return v < -(1 << 30) ? -(1 << 30) : v > (1 << 30) ? 1 << 30 : (int)v; }

static bd_status parse_auto_pad(const nctx *c, int *out) {
  char s[32];
  attr_s(c, "auto_pad", s, sizeof s, "NOTSET");
  if (strcmp(s, "NOTSET") == 0) *out = BD_PAD_NOTSET;
  else if (strcmp(s, "VALID") == 0) *out = BD_PAD_VALID;
  else if (strcmp(s, "SAME_UPPER") == 0) *out = BD_PAD_SAME_UPPER;
  else if (strcmp(s, "SAME_LOWER") == 0) *out = BD_PAD_SAME_LOWER;
  else return bad_attr(c, "auto_pad", "has an unknown value");
  return BD_OK;
}

/* kernel/strides/dilations/pads of a 2-D window op */
static bd_status parse_window(const nctx *c, int *kh, int *kw, int *sh, int *sw, int *dh,
                              int *dw, int pads[4]) {
  int64_t v[4];
  int n = attr_ints(c, "kernel_shape", 2, v);
  if (n < 0) return c->err->code;
  *kh = n ? to_int(v[0]) : 0; /* 0: taken from the weights (Conv) */
  *kw = n ? to_int(v[1]) : 0;
  if (n && (v[0] < 1 || v[1] < 1 || v[0] > 1024 || v[1] > 1024))
    return bad_attr(c, "kernel_shape", "is out of range");
  if ((n = attr_ints(c, "strides", 2, v)) < 0) return c->err->code;
  *sh = n ? to_int(v[0]) : 1;
  *sw = n ? to_int(v[1]) : 1;
  if (*sh < 1 || *sw < 1 || *sh > 1024 || *sw > 1024)
    return bad_attr(c, "strides", "is out of range");
  if (dh) {
    if ((n = attr_ints(c, "dilations", 2, v)) < 0) return c->err->code;
    *dh = n ? to_int(v[0]) : 1;
    *dw = n ? to_int(v[1]) : 1;
    if (*dh < 1 || *dw < 1 || *dh > 1024 || *dw > 1024)
      return bad_attr(c, "dilations", "is out of range");
  }
  if ((n = attr_ints(c, "pads", 4, v)) < 0) return c->err->code;
  for (int i = 0; i < 4; i++) {
    pads[i] = n ? to_int(v[i]) : 0;
    if (pads[i] < 0 || pads[i] > 1024) return bad_attr(c, "pads", "is out of range");
  }
  return BD_OK;
}

static bd_status input_count(const nctx *c, int lo, int hi) {
  int n = (int)c->np->n_input;
  /* trailing empty names are absent optionals */
  while (n > 0 && (!c->np->input[n - 1] || !*c->np->input[n - 1])) n--;
  if (n < lo || n > hi)
    return bd_err_set(c->err, BD_E_INVALID, "node '%s' (%s): %d inputs (expected %d..%d)",
                      c->label, c->op, n, lo, hi);
  return BD_OK;
}

static int in_idx(const nctx *c, size_t i) {
  if (i >= c->np->n_input || !c->np->input[i] || !*c->np->input[i]) return -1;
  return bd_onnx_find(c->im, c->np->input[i]);
}

bd_status bd_onnx_constant(bd_onnx_imp *im, const Onnx__NodeProto *np, const char *label,
                           bd_err *err) {
  nctx c = {im, np, label, "Constant", err};
  bd_status st;
  if (np->n_output != 1 || !np->output[0] || !*np->output[0])
    return bd_err_set(err, BD_E_INVALID, "node '%s' (Constant): needs one output", label);
  if ((st = check_known(
           &c, "value:TENSOR value_float:FLOAT value_floats:FLOATS value_int:INT value_ints:INTS")))
    return st;
  if (np->n_attribute != 1)
    return bd_err_set(err, BD_E_INVALID, "node '%s' (Constant): needs exactly one attribute",
                      label);
  const attr_t *a = np->attribute[0];
  const char *name = np->output[0];
  int v;
  if (strcmp(a->name, "value") == 0) {
    if (!a->t) return bad_attr(&c, "value", "has no tensor");
    return bd_onnx_tensor_value(im, a->t, name, &v, err);
  }
  /* the scalar/list forms: build the tensor directly */
  int is_f = a->name[6] == 'f';
  int is_list = a->name[strlen(a->name) - 1] == 's';
  size_t n = is_list ? (is_f ? a->n_floats : a->n_ints) : 1;
  if (n > (size_t)1 << 24) return bad_attr(&c, a->name, "is too long");
  int64_t dim = (int64_t)n;
  v = bd_graph_add_value(im->g, name, is_f ? BD_DT_F32 : BD_DT_I64, is_list ? 1 : 0, &dim);
  if (v < 0) return bd_err_set(err, BD_E_NOMEM, "node '%s' (Constant): out of memory", label);
  void *d = malloc(n ? n * 8 : 1);
  if (!d) return bd_err_set(err, BD_E_NOMEM, "node '%s' (Constant): out of memory", label);
  im->g->values[v].data = d;
  /* An empty list is an empty 1-D tensor (the buffer is 1 byte then: nothing to write). */
  if (is_list) {
    if (n) memcpy(d, is_f ? (const void *)a->floats : (const void *)a->ints, n * (is_f ? 4 : 8));
  } else if (is_f) {
    *(float *)d = a->f;
  } else {
    *(int64_t *)d = a->i;
  }
  return bd_onnx_register(im, v, err);
}

typedef struct {
  const char *name;
  bd_op op;
  int lo, hi; /* input count */
  const char *attrs; /* NAME:TYPE list (check_known) */
} op_spec;

static const op_spec specs[] = {
    {"Conv", BD_OP_CONV, 2, 3,
     "auto_pad:STRING dilations:INTS group:INT kernel_shape:INTS pads:INTS strides:INTS"},
    {"BatchNormalization", BD_OP_BATCHNORM, 5, 5,
     "epsilon:FLOAT momentum:FLOAT spatial:INT training_mode:INT"},
    {"Relu", BD_OP_RELU, 1, 1, ""},
    {"Sigmoid", BD_OP_SIGMOID, 1, 1, ""},
    {"Exp", BD_OP_EXP, 1, 1, ""},
    {"Add", BD_OP_ADD, 2, 2, ""},
    {"Sub", BD_OP_SUB, 2, 2, ""},
    {"Mul", BD_OP_MUL, 2, 2, ""},
    {"Div", BD_OP_DIV, 2, 2, ""},
    {"Concat", BD_OP_CONCAT, 1, 1024, "axis:INT"},
    {"MaxPool", BD_OP_MAXPOOL, 1, 1,
     "auto_pad:STRING ceil_mode:INT dilations:INTS kernel_shape:INTS pads:INTS storage_order:INT "
     "strides:INTS"},
    {"Resize", BD_OP_RESIZE, 1, 4,
     "mode:STRING coordinate_transformation_mode:STRING nearest_mode:STRING cubic_coeff_a:FLOAT "
     "exclude_outside:INT extrapolation_value:FLOAT"},
    {"Upsample", BD_OP_RESIZE, 1, 2, "mode:STRING scales:FLOATS"},
    {"Reshape", BD_OP_RESHAPE, 2, 2, "allowzero:INT"},
    {"Flatten", BD_OP_FLATTEN, 1, 1, "axis:INT"},
    {"Transpose", BD_OP_TRANSPOSE, 1, 1, "perm:INTS"},
    {"Softmax", BD_OP_SOFTMAX, 1, 1, "axis:INT"},
    {"MatMul", BD_OP_MATMUL, 2, 2, ""},
    {"Slice", BD_OP_SLICE, 1, 5, "starts:INTS ends:INTS axes:INTS"},
    {"Gather", BD_OP_GATHER, 2, 2, "axis:INT"},
    {"Unsqueeze", BD_OP_UNSQUEEZE, 1, 2, "axes:INTS"},
    {"Squeeze", BD_OP_SQUEEZE, 1, 2, "axes:INTS"},
    {"Cast", BD_OP_CAST, 1, 1, "to:INT saturate:INT"},
    {"Shape", BD_OP_SHAPE, 1, 1, ""},
    {"Identity", BD_OP_IDENTITY, 1, 1, ""},
};

static bd_status parse_resize(const nctx *c, bd_node *n, int upsample, int64_t opset) {
  char s[40];
  bd_resize_params *r = &n->p.resize;
  attr_s(c, "mode", s, sizeof s, "nearest");
  if (strcmp(s, "nearest") == 0) r->mode = BD_RESIZE_NEAREST;
  else if (strcmp(s, "linear") == 0 || (upsample && strcmp(s, "bilinear") == 0))
    r->mode = BD_RESIZE_LINEAR;
  else return bad_attr(c, "mode", "must be nearest or linear");
  /* Upsample and Resize-10 are asymmetric with floor rounding (onnxruntime) */
  r->coord = BD_COORD_ASYMMETRIC;
  r->nearest = BD_NEAREST_FLOOR;
  if (!upsample && opset >= 11) {
    attr_s(c, "coordinate_transformation_mode", s, sizeof s, "half_pixel");
    if (strcmp(s, "half_pixel") == 0) r->coord = BD_COORD_HALF_PIXEL;
    else if (strcmp(s, "pytorch_half_pixel") == 0) r->coord = BD_COORD_PYTORCH_HALF_PIXEL;
    else if (strcmp(s, "align_corners") == 0) r->coord = BD_COORD_ALIGN_CORNERS;
    else if (strcmp(s, "asymmetric") == 0) r->coord = BD_COORD_ASYMMETRIC;
    else return bad_attr(c, "coordinate_transformation_mode", "value is not supported");
    attr_s(c, "nearest_mode", s, sizeof s, "round_prefer_floor");
    if (strcmp(s, "round_prefer_floor") == 0) r->nearest = BD_NEAREST_ROUND_PREFER_FLOOR;
    else if (strcmp(s, "round_prefer_ceil") == 0) r->nearest = BD_NEAREST_ROUND_PREFER_CEIL;
    else if (strcmp(s, "floor") == 0) r->nearest = BD_NEAREST_FLOOR;
    else if (strcmp(s, "ceil") == 0) r->nearest = BD_NEAREST_CEIL;
    else return bad_attr(c, "nearest_mode", "value is not supported");
    if (attr_i(c, "exclude_outside", 0) != 0) return bad_attr(c, "exclude_outside", "must be 0");
  }
  if (upsample && opset < 9) {
    const attr_t *a = find_attr(c, "scales");
    if (!a || a->n_floats != 4) return bad_attr(c, "scales", "must have 4 entries");
    if (a->floats[0] != 1.0f || a->floats[1] != 1.0f)
      return bad_attr(c, "scales", "may only scale H and W");
    if (!(a->floats[2] > 0 && a->floats[2] < 1e4 && a->floats[3] > 0 && a->floats[3] < 1e4))
      return bad_attr(c, "scales", "is out of range");
    r->scale_h = a->floats[2];
    r->scale_w = a->floats[3];
    n->n_in = 1;
  }
  return BD_OK;
}

/* ---- activations lowered to Relu / Add / Sub / Mul ----
 * LeakyRelu, Clip, HardSigmoid and HardSwish have no kernel of their own in any backend:
 * the importer writes them as Relu, Add, Sub and Mul nodes on scalar constants (values
 * named OUT::k...), so every backend runs them, unfused, an elementwise pass per node.
 *   LeakyRelu: r = relu(x), out = r + a * (x - r)   (x - r is min(x, 0): exact, as a*x)
 *   max(x, lo) = lo + relu(x - lo)   (relu(x) for lo = 0: exact)
 *   min(y, hi) = hi - relu(hi - y)   (exact at and above hi; below, within ulp(hi))
 *   HardSigmoid: clamp(a*x + b, 0, 1); HardSwish: x * HardSigmoid(x; 1/6, 1/2). */
typedef struct {
  nctx *c;
  char name[4200]; /* OUT::k<n> */
  int k;
} lower_ctx;

static int lower_const(lower_ctx *l, float f) {
  bd_onnx_imp *im = l->c->im;
  snprintf(l->name, sizeof l->name, "%s::k%d", l->c->np->output[0], l->k++);
  int64_t one = 1;
  int v = bd_graph_add_value(im->g, l->name, BD_DT_F32, 1, &one);
  float *d = v < 0 ? NULL : malloc(sizeof *d);
  if (!d) return -1;
  *d = f;
  im->g->values[v].data = d;
  return bd_onnx_register(im, v, l->c->err) == BD_OK ? v : -2;
}

/* out (the node's output when last) = op(a, b); b < 0 for a unary op */
static int lower_op(lower_ctx *l, bd_op op, int a, int b, int last) {
  bd_onnx_imp *im = l->c->im;
  if (a < 0 || (b < 0 && op != BD_OP_RELU)) return a < -1 || b < -1 ? -2 : -1;
  if (last)
    snprintf(l->name, sizeof l->name, "%s", l->c->np->output[0]);
  else
    snprintf(l->name, sizeof l->name, "%s::k%d", l->c->np->output[0], l->k++);
  int v = bd_graph_add_value(im->g, l->name, BD_DT_F32, 0, NULL);
  if (v < 0) return -1;
  im->g->values[v].rank = -1;
  if (bd_onnx_register(im, v, l->c->err) != BD_OK) return -2;
  int in[2] = {a, b};
  return bd_graph_add_node(im->g, op, l->c->label, b < 0 ? 1 : 2, in, 1, &v) < 0 ? -1 : v;
}

/* clamp(x, lo, hi), lo = -inf / hi = +inf for no bound; last: its output is the node's */
static int lower_clamp(lower_ctx *l, int x, float lo, float hi, int last) {
  int has_lo = lo > -INFINITY, has_hi = hi < INFINITY;
  int y = x;
  if (has_lo) {
    if (lo == 0.0f) {
      y = lower_op(l, BD_OP_RELU, x, -1, last && !has_hi);
    } else {
      int k = lower_const(l, lo);
      y = lower_op(l, BD_OP_ADD, k, lower_op(l, BD_OP_RELU, lower_op(l, BD_OP_SUB, x, k, 0), -1, 0),
                   last && !has_hi);
    }
  }
  if (has_hi) {
    int k = lower_const(l, hi);
    y = lower_op(l, BD_OP_SUB, k, lower_op(l, BD_OP_RELU, lower_op(l, BD_OP_SUB, k, y, 0), -1, 0),
                 last);
  }
  if (!has_lo && !has_hi) /* x + 0 */
    y = lower_op(l, BD_OP_ADD, x, lower_const(l, 0.0f), last);
  return y;
}

/* A scalar float constant input (Clip's min / max since opset 11); absent: def. */
static bd_status const_scalar(const nctx *c, size_t i, float def, float *out) {
  *out = def;
  if (i >= c->np->n_input || !c->np->input[i] || !*c->np->input[i]) return BD_OK;
  int v = in_idx(c, i);
  const bd_value *val = v >= 0 ? &c->im->g->values[v] : NULL;
  if (!val || !val->data || val->dtype != BD_DT_F32 || bd_value_numel(val) != 1)
    return bd_err_set(c->err, BD_E_UNSUPPORTED,
                      "node '%s' (%s): input %zu must be a constant float scalar", c->label, c->op,
                      i);
  *out = *(const float *)val->data;
  return BD_OK;
}

static int lowered_act(const char *op) {
  return !strcmp(op, "LeakyRelu") || !strcmp(op, "Clip") || !strcmp(op, "HardSigmoid") ||
         !strcmp(op, "HardSwish");
}

static bd_status lower_act(nctx *c) {
  bd_status st;
  const char *op = c->op;
  int clip = !strcmp(op, "Clip"), lrelu = !strcmp(op, "LeakyRelu");
  const char *attrs = lrelu  ? "alpha:FLOAT"
                      : clip ? (c->im->opset < 11 ? "min:FLOAT max:FLOAT" : "")
                      : !strcmp(op, "HardSigmoid") ? "alpha:FLOAT beta:FLOAT"
                                                   : "";
  if ((st = check_known(c, attrs))) return st;
  if ((st = input_count(c, 1, clip && c->im->opset >= 11 ? 3 : 1))) return st;
  if (c->np->n_output != 1 || !c->np->output[0] || !*c->np->output[0])
    return bd_err_set(c->err, BD_E_INVALID, "node '%s' (%s): needs one output", c->label, op);
  int x = in_idx(c, 0);
  if (x < 0)
    return bd_err_set(c->err, BD_E_INVALID, "node '%s' (%s): input is not defined before use",
                      c->label, op);
  lower_ctx l = {c, "", 0};
  int y;
  if (lrelu) {
    float a = attr_f(c, "alpha", 0.01f);
    if (!isfinite(a)) return bad_attr(c, "alpha", "is not finite");
    int r = lower_op(&l, BD_OP_RELU, x, -1, a == 0.0f);
    y = a == 0.0f ? r
                  : lower_op(&l, BD_OP_ADD, r,
                             lower_op(&l, BD_OP_MUL, lower_op(&l, BD_OP_SUB, x, r, 0),
                                      lower_const(&l, a), 0),
                             1);
  } else if (clip) {
    float lo, hi;
    if (c->im->opset < 11) {
      lo = attr_f(c, "min", -INFINITY);
      hi = attr_f(c, "max", INFINITY);
    } else if ((st = const_scalar(c, 1, -INFINITY, &lo)) ||
               (st = const_scalar(c, 2, INFINITY, &hi))) {
      return st;
    }
    if (isnan(lo) || isnan(hi) || lo > hi)
      return bd_err_set(c->err, BD_E_UNSUPPORTED, "node '%s' (Clip): min %g > max %g", c->label,
                        (double)lo, (double)hi);
    if (lo <= -FLT_MAX) lo = -INFINITY; /* ONNX's defaults are the float limits */
    if (hi >= FLT_MAX) hi = INFINITY;
    y = lower_clamp(&l, x, lo, hi, 1);
  } else {
    int swish = !strcmp(op, "HardSwish");
    float a = swish ? 1.0f / 6.0f : attr_f(c, "alpha", 0.2f);
    float b = swish ? 0.5f : attr_f(c, "beta", 0.5f);
    if (!isfinite(a) || !isfinite(b)) return bad_attr(c, "alpha", "or beta is not finite");
    int z = lower_op(&l, BD_OP_ADD, lower_op(&l, BD_OP_MUL, x, lower_const(&l, a), 0),
                     lower_const(&l, b), 0);
    y = lower_clamp(&l, z, 0.0f, 1.0f, !swish);
    if (swish) y = lower_op(&l, BD_OP_MUL, x, y, 1);
  }
  if (y == -1) return bd_err_set(c->err, BD_E_NOMEM, "node '%s' (%s): out of memory", c->label, op);
  if (y < 0) return c->err->code ? c->err->code : BD_E_INVALID;
  return BD_OK;
}

bd_status bd_onnx_add_node(bd_onnx_imp *im, const Onnx__NodeProto *np, const char *label,
                           bd_err *err) {
  const char *opname = np->op_type ? np->op_type : "";
  nctx c = {im, np, label, opname, err};
  bd_status st;
  if (lowered_act(opname)) return lower_act(&c);
  const op_spec *sp = NULL;
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
    if (strcmp(specs[i].name, opname) == 0) sp = &specs[i];
  if (!sp)
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): unsupported op%s", label, opname,
                      bd_onnx_nms_hint(opname));
  if ((st = check_known(&c, sp->attrs))) return st;
  if ((st = input_count(&c, sp->lo, sp->hi))) return st;
  if (np->n_output < 1 || !np->output[0] || !*np->output[0])
    return bd_err_set(err, BD_E_INVALID, "node '%s' (%s): no output", label, opname);
  for (size_t i = 1; i < np->n_output; i++)
    if (np->output[i] && *np->output[i])
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "node '%s' (%s): only the first output is supported", label, opname);
  int in[8];
  int n_in = (int)np->n_input;
  if (n_in > 5 && sp->op != BD_OP_CONCAT) n_in = 5;
  int *ins = in;
  if (n_in > 8) {
    ins = malloc(sizeof(int) * (size_t)n_in);
    if (!ins) return bd_err_set(err, BD_E_NOMEM, "node '%s': out of memory", label);
  }
  for (int i = 0; i < n_in; i++) {
    ins[i] = in_idx(&c, (size_t)i);
    if (ins[i] < 0 && np->input[i] && *np->input[i]) {
      st = bd_err_set(err, BD_E_INVALID, "node '%s' (%s): input '%s' is not defined before use",
                      label, opname, np->input[i]);
      goto out;
    }
  }
  /* trailing absent inputs are dropped */
  while (n_in > 1 && ins[n_in - 1] < 0) n_in--;
  if (ins[0] < 0) {
    st = bd_err_set(err, BD_E_INVALID, "node '%s' (%s): first input is missing", label, opname);
    goto out;
  }
  if (sp->op == BD_OP_RESIZE && strcmp(opname, "Resize") == 0 && im->opset >= 11) {
    /* canonical layout [X, scales, sizes]: roi only matters for tf_crop_and_resize */
    int x = ins[0], sc = n_in > 2 ? ins[2] : -1, sz = n_in > 3 ? ins[3] : -1;
    ins[0] = x;
    ins[1] = sc;
    ins[2] = sz;
    n_in = 3;
  }
  int outv = bd_graph_add_value(im->g, np->output[0], BD_DT_F32, 0, NULL);
  if (outv < 0) {
    st = bd_err_set(err, BD_E_NOMEM, "node '%s': out of memory", label);
    goto out;
  }
  im->g->values[outv].rank = -1; /* unknown until shape inference */
  if ((st = bd_onnx_register(im, outv, err))) goto out;
  int ni = bd_graph_add_node(im->g, sp->op, label, n_in, ins, 1, &outv);
  if (ni < 0) {
    st = bd_err_set(err, BD_E_NOMEM, "node '%s': out of memory", label);
    goto out;
  }
  bd_node *n = &im->g->nodes[ni];
  int64_t v[BD_MAX_RANK];
  int cnt;
  switch (sp->op) {
    case BD_OP_CONV: {
      bd_conv_params *p = &n->p.conv;
      int pads[4];
      if ((st = parse_window(&c, &p->kh, &p->kw, &p->sh, &p->sw, &p->dh, &p->dw, pads))) break;
      p->pad_t = pads[0], p->pad_l = pads[1], p->pad_b = pads[2], p->pad_r = pads[3];
      int64_t gr = attr_i(&c, "group", 1);
      if (gr < 1 || gr > (1 << 20)) st = bad_attr(&c, "group", "is out of range");
      p->group = (int)gr;
      if (!st) st = parse_auto_pad(&c, &p->auto_pad);
      break;
    }
    case BD_OP_BATCHNORM:
      n->p.bn.eps = attr_f(&c, "epsilon", 1e-5f);
      if (!(n->p.bn.eps >= 0)) st = bad_attr(&c, "epsilon", "is negative");
      else if (attr_i(&c, "spatial", 1) != 1) st = bad_attr(&c, "spatial", "must be 1");
      else if (attr_i(&c, "training_mode", 0) != 0) st = bad_attr(&c, "training_mode", "must be 0");
      break;
    case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV:
      break;
    case BD_OP_CONCAT:
      if (!find_attr(&c, "axis")) st = bad_attr(&c, "axis", "is required");
      n->p.concat.axis = to_int(attr_i(&c, "axis", 0));
      break;
    case BD_OP_MAXPOOL: {
      bd_pool_params *p = &n->p.pool;
      int pads[4];
      if (!find_attr(&c, "kernel_shape")) { st = bad_attr(&c, "kernel_shape", "is required"); break; }
      if ((st = parse_window(&c, &p->kh, &p->kw, &p->sh, &p->sw, NULL, NULL, pads))) break;
      p->pad_t = pads[0], p->pad_l = pads[1], p->pad_b = pads[2], p->pad_r = pads[3];
      if (attr_i(&c, "ceil_mode", 0) != 0) st = bad_attr(&c, "ceil_mode", "must be 0");
      else if (attr_i(&c, "storage_order", 0) != 0) st = bad_attr(&c, "storage_order", "must be 0");
      else if ((cnt = attr_ints(&c, "dilations", 2, v)) < 0) st = err->code;
      else if (cnt && (v[0] != 1 || v[1] != 1)) st = bad_attr(&c, "dilations", "must be 1");
      if (!st) st = parse_auto_pad(&c, &p->auto_pad);
      break;
    }
    case BD_OP_RESIZE:
      st = parse_resize(&c, n, strcmp(opname, "Upsample") == 0, im->opset);
      break;
    case BD_OP_RESHAPE:
      n->p.reshape.allowzero = (int)attr_i(&c, "allowzero", 0);
      break;
    case BD_OP_FLATTEN:
      n->p.flatten.axis = to_int(attr_i(&c, "axis", 1));
      break;
    case BD_OP_TRANSPOSE:
      if ((cnt = attr_ints(&c, "perm", -1, v)) < 0) { st = err->code; break; }
      n->p.transpose.n = cnt; /* 0: reversed, resolved with the rank */
      for (int i = 0; i < cnt; i++) n->p.transpose.perm[i] = to_int(v[i]);
      break;
    case BD_OP_SOFTMAX:
      n->p.softmax.opset = (int)im->opset;
      n->p.softmax.axis = to_int(attr_i(&c, "axis", im->opset < 13 ? 1 : -1));
      break;
    case BD_OP_SLICE:
      if (im->opset < 10) {
        int64_t e[BD_MAX_RANK], ax[BD_MAX_RANK];
        int ns = attr_ints(&c, "starts", -1, v), ne, na;
        if (ns < 0) { st = err->code; break; }
        if ((ne = attr_ints(&c, "ends", -1, e)) < 0) { st = err->code; break; }
        if ((na = attr_ints(&c, "axes", -1, ax)) < 0) { st = err->code; break; }
        if (ns < 1 || ne != ns || (na && na != ns)) {
          st = bad_attr(&c, "starts/ends/axes", "have inconsistent lengths");
          break;
        }
        bd_slice_params *p = &n->p.slice;
        p->n = ns;
        for (int i = 0; i < ns; i++) {
          p->axes[i] = na ? to_int(ax[i]) : i; /* normalised by shape inference */
          p->starts[i] = v[i];
          p->ends[i] = e[i];
          p->steps[i] = 1;
        }
      } else if (find_attr(&c, "starts")) {
        st = bad_attr(&c, "starts", "is an input since opset 10");
      } else if (n_in < 3) {
        st = bd_err_set(err, BD_E_INVALID, "node '%s' (Slice): needs starts and ends", label);
      }
      break;
    case BD_OP_GATHER:
      n->p.gather.axis = to_int(attr_i(&c, "axis", 0));
      break;
    case BD_OP_UNSQUEEZE:
    case BD_OP_SQUEEZE:
      if (im->opset < 13) {
        if ((cnt = attr_ints(&c, "axes", -1, v)) < 0) { st = err->code; break; }
        if (!cnt && sp->op == BD_OP_UNSQUEEZE) { st = bad_attr(&c, "axes", "is required"); break; }
        n->p.unsq.n = cnt;
        for (int i = 0; i < cnt; i++) n->p.unsq.axes[i] = to_int(v[i]);
      } else if (find_attr(&c, "axes")) {
        st = bad_attr(&c, "axes", "is an input since opset 13");
      } else if (sp->op == BD_OP_UNSQUEEZE && n_in < 2) {
        st = bd_err_set(err, BD_E_INVALID, "node '%s' (Unsqueeze): needs axes", label);
      }
      break;
    case BD_OP_CAST: {
      if (!find_attr(&c, "to")) { st = bad_attr(&c, "to", "is required"); break; }
      bd_dtype to = bd_onnx_dtype((int32_t)attr_i(&c, "to", 0));
      if (!to) st = bad_attr(&c, "to", "names a data type that is not supported");
      n->p.cast.to = to;
      break;
    }
    default:
      break;
  }
out:
  if (ins != in) free(ins);
  return st;
}
