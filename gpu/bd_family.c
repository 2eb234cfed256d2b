/* bd_family: see bd_family.h. */
#include "bd_family.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bd_family_name(bd_family f) {
  switch (f) {
    case BD_FAMILY_AUTO:
      return "auto";
    case BD_FAMILY_YOLOX:
      return "yolox";
    case BD_FAMILY_DAMOYOLO:
      return "damoyolo";
    case BD_FAMILY_NONE:
      return "none";
  }
  return "unknown";
}

int bd_family_parse(const char *s, bd_family *out) {
  if (!s) return -1;
  if (strcmp(s, "auto") == 0)
    *out = BD_FAMILY_AUTO;
  else if (strcmp(s, "yolox") == 0)
    *out = BD_FAMILY_YOLOX;
  else if (strcmp(s, "damoyolo") == 0 || strcmp(s, "damo-yolo") == 0)
    *out = BD_FAMILY_DAMOYOLO;
  else if (strcmp(s, "none") == 0)
    *out = BD_FAMILY_NONE;
  else
    return -1;
  return 0;
}

void bd_family_defaults(bd_family f, bd_detect_params *p) {
  if (p->score_thr < 0.f) p->score_thr = 0.3f;
  if (p->iou_thr < 0.f) p->iou_thr = (f == BD_FAMILY_DAMOYOLO) ? 0.7f : 0.45f;
  if (p->max_det <= 0) p->max_det = 100;
}

/* ---------------------------------------------------------------- recognition */

static const int64_t *vdims(const bd_graph *g, int vi, int *rank) {
  *rank = g->values[vi].rank;
  return g->values[vi].dims;
}

/* ---- yolox: a box decode inside the graph ----
 * One output channel traced back from the graph output: through Identity, Concat and
 * Slice (step 1) on the last axis, and over the elementwise ops with one FP32 constant
 * operand and Exp, which are recorded. Every value on the way is [B,A,L]. */
#define TRACE_MAX_OPS 8
#define TRACE_MAX_STEPS 64

typedef struct {
  bd_op op;
  int k;       /* the constant operand's value index (-1 for Exp) */
  int k_first; /* the constant is the first operand (c - x, c / x) */
  int ch;      /* the traced channel in this op's output */
} trace_op;

typedef struct {
  int src, ch; /* where the trace stopped: value and channel */
  int n_ops;
  trace_op ops[TRACE_MAX_OPS]; /* output side first */
  int odd; /* stopped at box arithmetic it cannot evaluate (too many ops, a constant that
              does not broadcast as [1|A, 1|L]) */
} chan_trace;

static int is_f32_const(const bd_graph *g, int v) {
  return v >= 0 && v < g->n_values && g->values[v].data && g->values[v].dtype == BD_DT_F32;
}

static int is_bav(const bd_graph *g, int v, int64_t A) { /* [B,A,L] with L known */
  const bd_value *x = &g->values[v];
  return x->rank == 3 && x->dims[1] == A && x->dims[2] >= 1;
}

/* A constant broadcast against [B,A,len]: rank <= 3, dims [1, 1|A, 1|len] right-aligned. */
static int const_fits(const bd_graph *g, int k, int64_t A, int64_t len) {
  const bd_value *c = &g->values[k];
  if (c->rank > 3) return 0;
  int64_t d[3] = {1, 1, 1};
  for (int i = 0; i < c->rank; i++) d[3 - c->rank + i] = c->dims[i];
  return d[0] == 1 && (d[1] == 1 || d[1] == A) && (d[2] == 1 || d[2] == len);
}

static float const_at(const bd_graph *g, int k, int a, int ch) {
  const bd_value *c = &g->values[k];
  int64_t d[3] = {1, 1, 1};
  for (int i = 0; i < c->rank; i++) d[3 - c->rank + i] = c->dims[i];
  const int64_t i = (d[1] == 1 ? 0 : a) * d[2] + (d[2] == 1 ? 0 : ch);
  return ((const float *)c->data)[i];
}

static void trace_channel(const bd_graph *g, int v, int ch, int64_t A, chan_trace *t) {
  memset(t, 0, sizeof *t);
  for (int step = 0; step < TRACE_MAX_STEPS && is_bav(g, v, A); step++) {
    const bd_value *val = &g->values[v];
    const int p = val->producer;
    if (p < 0 || p >= g->n_nodes) break;
    const bd_node *nd = &g->nodes[p];
    if (nd->op == BD_OP_IDENTITY && nd->n_in >= 1 && nd->in[0] >= 0) {
      v = nd->in[0];
      continue;
    }
    if (nd->op == BD_OP_CONCAT && nd->p.concat.axis == 2) {
      int64_t off = 0;
      int next = -1;
      for (int j = 0; j < nd->n_in && next < 0; j++) {
        if (nd->in[j] < 0 || !is_bav(g, nd->in[j], A)) break;
        const int64_t L = g->values[nd->in[j]].dims[2];
        if (ch < off + L)
          next = j;
        else
          off += L;
      }
      if (next < 0) break;
      v = nd->in[next];
      ch -= (int)off;
      continue;
    }
    if (nd->op == BD_OP_SLICE && nd->n_in >= 1 && nd->in[0] >= 0 && nd->p.slice.n == 1 &&
        nd->p.slice.axes[0] == 2 && nd->p.slice.steps[0] == 1 && is_bav(g, nd->in[0], A)) {
      const int64_t L = g->values[nd->in[0]].dims[2];
      int64_t s0 = nd->p.slice.starts[0];
      if (s0 < 0) s0 += L;
      s0 = s0 < 0 ? 0 : s0 > L ? L : s0;
      if (s0 + ch >= L) break;
      v = nd->in[0];
      ch += (int)s0;
      continue;
    }
    int x = -1, k = -1, k_first = 0;
    if (nd->op == BD_OP_EXP && nd->n_in >= 1) {
      x = nd->in[0];
    } else if ((nd->op == BD_OP_ADD || nd->op == BD_OP_SUB || nd->op == BD_OP_MUL ||
                nd->op == BD_OP_DIV) &&
               nd->n_in == 2) {
      const int c0 = is_f32_const(g, nd->in[0]), c1 = is_f32_const(g, nd->in[1]);
      if (c0 == c1) break; /* both computed: not a decode step */
      k_first = c0;
      k = nd->in[c0 ? 0 : 1];
      x = nd->in[c0 ? 1 : 0];
    } else {
      break;
    }
    /* Box arithmetic: it must be evaluable, or the box channels are refused. */
    if (x < 0 || !is_bav(g, x, A) || g->values[x].dims[2] != val->dims[2] ||
        t->n_ops == TRACE_MAX_OPS || (k >= 0 && !const_fits(g, k, A, val->dims[2]))) {
      t->odd = 1;
      t->n_ops++;
      break;
    }
    t->ops[t->n_ops++] = (trace_op){nd->op, k, k_first, ch};
    v = x;
  }
  t->src = v;
  t->ch = ch;
}

/* The traced ops applied, source side first, to x at anchor a. */
static float trace_eval(const bd_graph *g, const chan_trace *t, int a, float x) {
  for (int i = t->n_ops - 1; i >= 0; i--) {
    const trace_op *o = &t->ops[i];
    const float c = o->k >= 0 ? const_at(g, o->k, a, o->ch) : 0.f;
    switch (o->op) {
      case BD_OP_EXP:
        x = expf(x);
        break;
      case BD_OP_ADD:
        x = x + c;
        break;
      case BD_OP_SUB:
        x = o->k_first ? c - x : x - c;
        break;
      case BD_OP_MUL:
        x = x * c;
        break;
      case BD_OP_DIV:
        x = o->k_first ? c / x : x / c;
        break;
      default:
        break;
    }
  }
  return x;
}

static int near(float got, double want) {
  const double tol = 1e-5 * (fabs(want) > 1.0 ? fabs(want) : 1.0);
  return fabs((double)got - want) <= tol; /* NaN: no */
}

/* fi->boxes_decoded from the structure of output 0 (see bd_family.h). */
static bd_status yolox_decode_in_graph(const bd_graph *g, int h, int w, bd_family_info *fi,
                                       bd_err *err) {
  const int64_t A = fi->num_anchors;
  const char *oname = g->values[g->outputs[0]].name;
  chan_trace t[4];
  int any = 0;
  for (int k = 0; k < 4; k++) {
    trace_channel(g, g->outputs[0], k, A, &t[k]);
    any |= t[k].n_ops > 0;
  }
  fi->boxes_decoded = 0;
  if (!any) {
    /* Raw head outputs, unless a decode sits where the trace does not reach (behind a
     * Reshape, per level before the Concat): an Exp from which the output is reached
     * with no Conv or MatMul between. An Exp inside the network (an activation) is
     * followed by a conv before any output, and stays allowed. One pass: nodes are in
     * topological order. */
    int *exp_of = malloc(sizeof *exp_of * (size_t)(g->n_values ? g->n_values : 1));
    if (!exp_of) return bd_err_set(err, BD_E_NOMEM, "yolox: out of memory");
    for (int v = 0; v < g->n_values; v++) exp_of[v] = -1; /* the Exp node it comes from */
    for (int i = 0; i < g->n_nodes; i++) {
      const bd_node *nd = &g->nodes[i];
      int from = -1;
      if (nd->op == BD_OP_EXP)
        from = i;
      else if (nd->op != BD_OP_CONV && nd->op != BD_OP_MATMUL)
        for (int j = 0; j < nd->n_in && from < 0; j++)
          if (nd->in[j] >= 0) from = exp_of[nd->in[j]];
      for (int j = 0; j < nd->n_out && from >= 0; j++)
        if (nd->out[j] >= 0) exp_of[nd->out[j]] = from;
    }
    int bad = exp_of[g->outputs[0]];
    free(exp_of);
    if (bad >= 0)
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "yolox: output '%s' is computed from an Exp node ('%s') after the last "
                        "conv, but its box channels are not a decode batchdet recognises "
                        "(Concat[(xy + grid) * stride, exp(wh) * stride, scores]); export "
                        "the model without the decode (decode_in_inference off)",
                        oname, g->nodes[bad].name);
    return BD_OK; /* the engine decodes */
  }
  for (int k = 0; k < 4; k++) {
    int exps = 0;
    for (int i = 0; i < t[k].n_ops && !t[k].odd; i++) exps += t[k].ops[i].op == BD_OP_EXP;
    if (t[k].odd || t[k].src != t[0].src || t[k].ch != k || is_f32_const(g, t[k].src) ||
        exps != (k < 2 ? 0 : 1))
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "yolox: output '%s' computes box channel %d in the graph with "
                        "arithmetic batchdet does not recognise as the YOLOX decode "
                        "(Concat[(xy + grid) * stride, exp(wh) * stride, scores]); export "
                        "the model without the decode (decode_in_inference off)",
                        oname, k);
  }
  /* The graph's decode must be this engine's, anchor by anchor: same grid order, same
   * strides. Two points fix the affine xy map, three the exp one. */
  static const double e = 2.718281828459045;
  int a = 0;
  for (int l = 0; l < 3; l++) {
    const int s = 8 << l, gh = h / s, gw = w / s;
    for (int gy = 0; gy < gh; gy++)
      for (int gx = 0; gx < gw; gx++, a++)
        for (int k = 0; k < 4; k++) {
          int ok;
          if (k < 2) {
            const double gk = k == 0 ? gx : gy;
            ok = near(trace_eval(g, &t[k], a, 0.f), gk * s) &&
                 near(trace_eval(g, &t[k], a, 1.f), (gk + 1) * s);
          } else {
            ok = near(trace_eval(g, &t[k], a, 0.f), s) &&
                 near(trace_eval(g, &t[k], a, 1.f), e * s) &&
                 near(trace_eval(g, &t[k], a, -1.f), s / e);
          }
          if (!ok)
            return bd_err_set(err, BD_E_UNSUPPORTED,
                              "yolox: output '%s' decodes boxes in the graph, but not as "
                              "(xy + grid) * stride, exp(wh) * stride over strides 8, 16, 32 "
                              "in row-major grid order (anchor %d, channel %d); export the "
                              "model without the decode (decode_in_inference off)",
                              oname, a, k);
        }
  }
  fi->boxes_decoded = 1;
  return BD_OK;
}

static bd_status check_yolox(const bd_graph *g, int h, int w, bd_family_info *fi, bd_err *err) {
  if (g->n_outputs != 1)
    return bd_err_set(err, BD_E_UNSUPPORTED, "yolox: expected 1 output, the graph has %d",
                      g->n_outputs);
  int r;
  const int64_t *d = vdims(g, g->outputs[0], &r);
  int64_t a_want =
      (int64_t)(h / 8) * (w / 8) + (int64_t)(h / 16) * (w / 16) + (int64_t)(h / 32) * (w / 32);
  if (r != 3 || d[2] < 6 || d[2] - 5 > BD_FAMILY_MAX_CLASSES || d[1] != a_want)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "yolox: output must be [B,%lld,5+C] for a %dx%d input (rank %d, dims "
                      "[%lld,%lld,%lld])",
                      (long long)a_want, h, w, r, (long long)d[0], (long long)(r > 1 ? d[1] : 0),
                      (long long)(r > 2 ? d[2] : 0));
  fi->family = BD_FAMILY_YOLOX;
  fi->num_anchors = (int)d[1];
  fi->num_classes = (int)d[2] - 5;
  fi->out_main = 0;
  fi->out_scores = fi->out_boxes = -1;
  return BD_OK;
}

/* 1 when every element of v comes, through layout-only ops, from a Sigmoid or Softmax (or
 * a conv with a fused sigmoid): class scores, never box coordinates. *budget bounds the
 * nodes visited (a Concat fans out). */
static int is_probability(const bd_graph *g, int v, int *budget) {
  if (v < 0 || v >= g->n_values || --*budget < 0) return 0;
  const int p = g->values[v].producer;
  if (p < 0 || p >= g->n_nodes) return 0;
  const bd_node *nd = &g->nodes[p];
  switch (nd->op) {
    case BD_OP_SIGMOID:
    case BD_OP_SOFTMAX:
      return 1;
    case BD_OP_CONV:
      return nd->p.conv.act == BD_ACT_SIGMOID && nd->p.conv.res != BD_RES_POST_ACT;
    case BD_OP_IDENTITY:
    case BD_OP_RESHAPE:
    case BD_OP_TRANSPOSE:
    case BD_OP_FLATTEN:
    case BD_OP_SQUEEZE:
    case BD_OP_UNSQUEEZE:
    case BD_OP_SLICE:
    case BD_OP_GATHER:
      return nd->n_in >= 1 && is_probability(g, nd->in[0], budget);
    case BD_OP_CONCAT: {
      int n = 0;
      for (int j = 0; j < nd->n_in; j++) {
        if (nd->in[j] < 0) continue;
        if (!is_probability(g, nd->in[j], budget)) return 0;
        n++;
      }
      return n > 0;
    }
    default:
      return 0;
  }
}

static bd_status check_damo(const bd_graph *g, int h, int w, bd_family_info *fi, bd_err *err) {
  if (g->n_outputs != 2)
    return bd_err_set(err, BD_E_UNSUPPORTED, "damoyolo: expected 2 outputs, the graph has %d",
                      g->n_outputs);
  int r0, r1;
  const int64_t *d0 = vdims(g, g->outputs[0], &r0), *d1 = vdims(g, g->outputs[1], &r1);
  int64_t a_want = 21 * (int64_t)(h / 32) * (w / 32);
  if (r0 != 3 || r1 != 3 || d0[1] != a_want || d1[1] != a_want)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "damoyolo: outputs must be [B,%lld,C] and [B,%lld,4] for a %dx%d input",
                      (long long)a_want, (long long)a_want, h, w);
  /* Scores first is the exporter's order; accept the swap, keyed on the box width 4, and
   * with 4 classes (both [B,A,4]) on which output is made of probabilities. */
  int sc = (d0[2] != 4 || d1[2] == 4) ? 0 : 1;
  if (d0[2] == 4 && d1[2] == 4) {
    int b0 = 4096, b1 = 4096;
    const int p0 = is_probability(g, g->outputs[0], &b0),
              p1 = is_probability(g, g->outputs[1], &b1);
    if (p1 && !p0) sc = 1;
  }
  const int64_t *ds = sc == 0 ? d0 : d1, *db = sc == 0 ? d1 : d0;
  if (db[2] != 4 || ds[2] < 1 || ds[2] > BD_FAMILY_MAX_CLASSES)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "damoyolo: outputs [B,A,%lld] and [B,A,%lld]: "
                      "need scores [B,A,C] and boxes [B,A,4]",
                      (long long)d0[2], (long long)d1[2]);
  fi->family = BD_FAMILY_DAMOYOLO;
  fi->num_anchors = (int)a_want;
  fi->num_classes = (int)ds[2];
  fi->out_main = -1;
  fi->out_scores = sc;
  fi->out_boxes = 1 - sc;
  return BD_OK;
}

bd_status bd_family_recognize(const bd_graph *g, bd_family want, bd_family_info *fi, bd_err *err) {
  memset(fi, 0, sizeof *fi);
  if (g->n_inputs != 1)
    return bd_err_set(err, BD_E_UNSUPPORTED, "family: expected 1 graph input, found %d",
                      g->n_inputs);
  int r;
  const int64_t *d = vdims(g, g->inputs[0], &r);
  if (r != 4 || d[1] != 3 || d[2] < 32 || d[3] < 32 || d[2] > BD_FAMILY_MAX_SIDE ||
      d[3] > BD_FAMILY_MAX_SIDE || d[2] % 32 || d[3] % 32)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "family: input '%s' must be [B,3,H,W] with H, W multiples of 32 in "
                      "32..%d",
                      g->values[g->inputs[0]].name, BD_FAMILY_MAX_SIDE);
  fi->in_h = (int)d[2];
  fi->in_w = (int)d[3];
  for (int i = 0; i < g->n_outputs; i++) {
    int ro;
    const int64_t *od = vdims(g, g->outputs[i], &ro);
    for (int k = 0; k < ro; k++)
      if (od[k] < 1)
        return bd_err_set(err, BD_E_INVALID, "family: output %d ('%s') has unknown dims", i,
                          g->values[g->outputs[i]].name);
  }
  bd_status st;
  if (want == BD_FAMILY_YOLOX) {
    if ((st = check_yolox(g, fi->in_h, fi->in_w, fi, err)) != BD_OK) return st;
    return yolox_decode_in_graph(g, fi->in_h, fi->in_w, fi, err);
  }
  if (want == BD_FAMILY_DAMOYOLO) return check_damo(g, fi->in_h, fi->in_w, fi, err);
  bd_err e1, e2;
  /* A yolox-shaped output whose box arithmetic is not understood is refused as such. */
  if (check_yolox(g, fi->in_h, fi->in_w, fi, &e1) == BD_OK)
    return yolox_decode_in_graph(g, fi->in_h, fi->in_w, fi, err);
  if (check_damo(g, fi->in_h, fi->in_w, fi, &e2) == BD_OK) return BD_OK;
  return bd_err_set(err, BD_E_UNSUPPORTED,
                    "family: the graph is neither yolox (one [B,A,85]-like output) nor damoyolo "
                    "([B,A,C] scores + [B,A,4] boxes): %s; %s",
                    e1.msg, e2.msg);
}

/* ---------------------------------------------------------------- resize */

/* The vertical pass of OpenCV's uint8 INTER_LINEAR (VResizeLinearVec_32s8u and the
 * matching scalar tail of the x86 build) rounds in two truncating steps:
 * ((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2, not the exact
 * (S0*b0 + S1*b1 + 2^21) >> 22. Reproducing it is what makes the tensors bit-identical
 * to cv2.resize (checked against python3-opencv 4.6 on random sizes and the photos). */

static short cv_coef(float v) {
  long r = lrintf(v); /* cvRound: round half to even */
  if (r < -32768) r = -32768;
  if (r > 32767) r = 32767;
  return (short)r;
}

static uint8_t sat_u8(int v) {
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

bd_status bd_family_resize_u8(const uint8_t *src, int sw, int sh, int cn, uint8_t *dst, int dw,
                              int dh, bd_err *err) {
  if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > BD_IMAGE_MAX_SIDE || sh > BD_IMAGE_MAX_SIDE ||
      dw > BD_IMAGE_MAX_SIDE || dh > BD_IMAGE_MAX_SIDE || cn < 1 || cn > 4)
    return bd_err_set(err, BD_E_INVALID, "resize: bad sizes %dx%d -> %dx%d (cn %d)", sw, sh, dw, dh,
                      cn);
  if (sw == dw && sh == dh) { /* cv::resize copies */
    memcpy(dst, src, (size_t)sw * sh * cn);
    return BD_OK;
  }
  const int W = dw * cn;
  bd_status st = BD_OK;
  int *xofs = malloc((size_t)W * sizeof *xofs);
  short *alpha = malloc((size_t)W * 2 * sizeof *alpha);
  int *rowbuf = malloc((size_t)W * 2 * sizeof *rowbuf);
  int cached[2] = {-1, -1};
  if (!xofs || !alpha || !rowbuf) {
    st = bd_err_set(err, BD_E_NOMEM, "resize: buffers for width %d", dw);
    goto out;
  }
  const double scale_x = 1.0 / ((double)dw / sw), scale_y = 1.0 / ((double)dh / sh);
  for (int dx = 0; dx < dw; dx++) {
    float fx = (float)((dx + 0.5) * scale_x - 0.5);
    int sx = (int)floorf(fx);
    fx -= (float)sx;
    if (sx < 0) fx = 0.f, sx = 0;
    if (sx >= sw - 1) fx = 0.f, sx = sw - 1;
    short a0 = cv_coef((1.f - fx) * 2048.f), a1 = cv_coef(fx * 2048.f);
    for (int k = 0; k < cn; k++) {
      xofs[dx * cn + k] = sx * cn + k;
      alpha[(dx * cn + k) * 2] = a0;
      alpha[(dx * cn + k) * 2 + 1] = a1;
    }
  }
  for (int dy = 0; dy < dh; dy++) {
    float fy = (float)((dy + 0.5) * scale_y - 0.5);
    int sy = (int)floorf(fy);
    fy -= (float)sy;
    int b0 = cv_coef((1.f - fy) * 2048.f), b1 = cv_coef(fy * 2048.f);
    int yy[2], slot[2];
    for (int k = 0; k < 2; k++) {
      int y = sy + k;
      yy[k] = y < 0 ? 0 : y >= sh ? sh - 1 : y;
      slot[k] = cached[0] == yy[k] ? 0 : cached[1] == yy[k] ? 1 : -1;
    }
    /* Two cached horizontal rows: consecutive output rows mostly reuse them. */
    for (int k = 0; k < 2; k++) {
      if (slot[k] >= 0) continue;
      if (k == 1 && yy[1] == yy[0]) {
        slot[1] = slot[0];
        continue;
      }
      int other = slot[1 - k];
      slot[k] = other >= 0 ? 1 - other : k;
      const uint8_t *S = src + (size_t)yy[k] * sw * cn;
      int *D = rowbuf + (size_t)slot[k] * W;
      for (int x = 0; x < W; x++) {
        int o = xofs[x], a1 = alpha[2 * x + 1];
        D[x] = a1 ? S[o] * alpha[2 * x] + S[o + cn] * a1 : S[o] * alpha[2 * x];
      }
      cached[slot[k]] = yy[k];
    }
    int *rows[2] = {rowbuf + (size_t)slot[0] * W, rowbuf + (size_t)slot[1] * W};
    const int *S0 = rows[0], *S1 = rows[1];
    uint8_t *D = dst + (size_t)dy * W;
    for (int x = 0; x < W; x++) {
      int v0 = ((S0[x] >> 4) * b0) >> 16, v1 = ((S1[x] >> 4) * b1) >> 16;
      D[x] = sat_u8((v0 + v1 + 2) >> 2);
    }
  }
out:
  free(xofs);
  free(alpha);
  free(rowbuf);
  return st;
}

/* ---------------------------------------------------------------- pre-processing */

bd_status bd_family_prep_geometry(const bd_family_info *fi, int w, int h, bd_prep_info *pi,
                                  bd_err *err) {
  if (w < 1 || h < 1 || w > BD_IMAGE_MAX_SIDE || h > BD_IMAGE_MAX_SIDE)
    return bd_err_set(err, BD_E_INVALID, "preprocess: bad image %dx%d", w, h);
  const int H = fi->in_h, W = fi->in_w;
  memset(pi, 0, sizeof *pi);
  pi->orig_w = w;
  pi->orig_h = h;
  int rw, rh;
  if (fi->family == BD_FAMILY_YOLOX) {
    /* Python: r = min(H / h, W / w); (int(w * r), int(h * r)) in double precision. */
    double r = (double)H / h < (double)W / w ? (double)H / h : (double)W / w;
    rw = (int)(w * r);
    rh = (int)(h * r);
    /* An extreme aspect ratio can truncate one side to 0; keep one pixel. */
    if (rw < 1) rw = 1;
    if (rh < 1) rh = 1;
    if (rw > W) rw = W;
    if (rh > H) rh = H;
    pi->ratio = r;
  } else if (fi->family == BD_FAMILY_DAMOYOLO) {
    rw = W;
    rh = H;
    pi->scale_x = (float)w / (float)W;
    pi->scale_y = (float)h / (float)H;
  } else {
    return bd_err_set(err, BD_E_INTERNAL, "preprocess: family not resolved");
  }
  pi->resized_w = rw;
  pi->resized_h = rh;
  return BD_OK;
}

bd_status bd_family_preprocess(const bd_family_info *fi, const bd_image *im, float *dst,
                               bd_prep_info *pi, bd_err *err) {
  if (!im || !im->data)
    return bd_err_set(err, BD_E_INVALID, "preprocess: no image");
  bd_status st0 = bd_family_prep_geometry(fi, im->w, im->h, pi, err);
  if (st0 != BD_OK) return st0;
  const int H = fi->in_h, W = fi->in_w, rw = pi->resized_w, rh = pi->resized_h;
  const size_t plane = (size_t)H * W;
  uint8_t *rs = malloc((size_t)rw * rh * 3);
  if (!rs) return bd_err_set(err, BD_E_NOMEM, "preprocess: %dx%d resize buffer", rw, rh);
  bd_status st = bd_family_resize_u8(im->data, im->w, im->h, 3, rs, rw, rh, err);
  if (st != BD_OK) {
    free(rs);
    return st;
  }
  /* yolox wants BGR (cv2.imread order); damoyolo RGB. */
  const int bgr = fi->family == BD_FAMILY_YOLOX;
  for (int c = 0; c < 3; c++) {
    float *P = dst + (size_t)c * plane;
    const int sc = bgr ? 2 - c : c;
    for (int y = 0; y < H; y++) {
      float *row = P + (size_t)y * W;
      int x = 0;
      if (y < rh) {
        const uint8_t *S = rs + (size_t)y * rw * 3 + sc;
        for (; x < rw; x++) row[x] = (float)S[3 * x];
      }
      for (; x < W; x++) row[x] = 114.f;
    }
  }
  free(rs);
  return BD_OK;
}

/* ---------------------------------------------------------------- post-processing */

void bd_detections_free(bd_detections *d) {
  if (!d) return;
  free(d->det);
  d->det = NULL;
  d->n = 0;
}

typedef struct {
  bd_det *v;
  int n, cap;
} cand_vec;

static int cand_push(cand_vec *c, const bd_det *d) {
  if (c->n == c->cap) {
    int nc = c->cap ? c->cap * 2 : 1024;
    if (nc > BD_NMS_MAX_CANDIDATES) return -1;
    bd_det *nv = realloc(c->v, (size_t)nc * sizeof *nv);
    if (!nv) return -1;
    c->v = nv;
    c->cap = nc;
  }
  c->v[c->n++] = *d;
  return 0;
}

static float clampf(float v, float lo, float hi) {
  /* NaN maps to lo: a garbage box never leaves the image. */
  return v > lo ? (v < hi ? v : hi) : lo;
}

bd_status bd_family_postprocess(const bd_family_info *fi, const float *const *outs,
                                const bd_prep_info *pi, const bd_detect_params *params,
                                bd_detections *out, bd_err *err) {
  bd_detect_params p = *params;
  bd_family_defaults(fi->family, &p);
  cand_vec cv = {0};
  bd_det *keep = NULL;
  bd_status st = BD_OK;
  out->n = 0;
  out->det = NULL;
  const int A = fi->num_anchors, C = fi->num_classes;
  if (fi->family == BD_FAMILY_YOLOX) {
    const float *o = outs[fi->out_main];
    const int strides[3] = {8, 16, 32};
    int a = 0;
    for (int l = 0; l < 3; l++) {
      const int s = strides[l], gh = fi->in_h / s, gw = fi->in_w / s;
      for (int gy = 0; gy < gh; gy++)
        for (int gx = 0; gx < gw; gx++, a++) {
          const float *r = o + (size_t)a * (5 + C);
          int best = 0;
          for (int c = 1; c < C; c++)
            if (r[5 + c] > r[5 + best]) best = c;
          float score = r[4] * r[5 + best];
          if (!(score >= p.score_thr) || !(score <= FLT_MAX)) continue; /* NaN, +Inf: none */
          float cx, cy, w, h;
          if (fi->boxes_decoded) { /* the graph did it: cx, cy, w, h in input pixels */
            cx = r[0], cy = r[1], w = r[2], h = r[3];
          } else {
            cx = (r[0] + gx) * s, cy = (r[1] + gy) * s;
            w = expf(r[2]) * s, h = expf(r[3]) * s;
          }
          bd_det d = {cx - w * 0.5f, cy - h * 0.5f, cx + w * 0.5f, cy + h * 0.5f, score, best};
          if (cand_push(&cv, &d)) {
            st = bd_err_set(err, BD_E_NOMEM, "postprocess: candidates");
            goto out;
          }
        }
    }
    if (a != A) {
      st = bd_err_set(err, BD_E_INTERNAL, "postprocess: %d grid anchors, output has %d", a, A);
      goto out;
    }
  } else if (fi->family == BD_FAMILY_DAMOYOLO) {
    const float *sc = outs[fi->out_scores], *bx = outs[fi->out_boxes];
    for (int a = 0; a < A; a++) {
      const float *r = sc + (size_t)a * C, *b = bx + (size_t)a * 4;
      for (int c = 0; c < C; c++) {
        if (!(r[c] > p.score_thr) || !(r[c] <= FLT_MAX)) continue;
        bd_det d = {b[0], b[1], b[2], b[3], r[c], c};
        if (cand_push(&cv, &d)) {
          st = bd_err_set(err, BD_E_NOMEM, "postprocess: candidates");
          goto out;
        }
      }
    }
  } else {
    st = bd_err_set(err, BD_E_INTERNAL, "postprocess: family not resolved");
    goto out;
  }
  if (cv.n == 0) goto out;
  keep = malloc((size_t)(p.max_det < cv.n ? p.max_det : cv.n) * sizeof *keep);
  if (!keep) {
    st = bd_err_set(err, BD_E_NOMEM, "postprocess: %d detections", p.max_det);
    goto out;
  }
  int nk = 0;
  /* NMS in network-input coordinates, as both reference pipelines do. */
  st = bd_nms(cv.v, cv.n, p.iou_thr, p.max_det < cv.n ? p.max_det : cv.n, 0, keep, &nk, err);
  if (st != BD_OK) goto out;
  const float fw = (float)pi->orig_w, fh = (float)pi->orig_h;
  for (int i = 0; i < nk; i++) {
    bd_det *d = &keep[i];
    if (fi->family == BD_FAMILY_YOLOX) {
      /* numpy divides the float32 boxes by a float32-cast ratio. */
      const float r = (float)pi->ratio;
      d->x1 /= r, d->y1 /= r, d->x2 /= r, d->y2 /= r;
    } else {
      d->x1 *= pi->scale_x, d->x2 *= pi->scale_x, d->y1 *= pi->scale_y, d->y2 *= pi->scale_y;
    }
    d->x1 = clampf(d->x1, 0.f, fw), d->x2 = clampf(d->x2, 0.f, fw);
    d->y1 = clampf(d->y1, 0.f, fh), d->y2 = clampf(d->y2, 0.f, fh);
  }
  out->n = nk;
  out->det = keep;
  keep = NULL;
out:
  free(cv.v);
  free(keep);
  return st;
}
