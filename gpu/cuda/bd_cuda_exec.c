/* The cuda backend's per-op work: constant upload, the prepare-time choice of each
 * value's representation and buffer, and the enqueueing of a prepared run. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_compile_int.h"
#include "bd_cuda_internal.h"
#include "bd_cuda_nccl.h"

static int64_t numel_of(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= p->dims[v][d];
  return n;
}

/* Channels between v's pixels once the plan is made: its Concat's width for a piece, the
 * padded width for a channel-padded value, else 0 (packed). Known before the buffers are
 * (both passes). */
static int64_t planned_pitch(const bd_cuda_cplan *cp, int v) {
  if (v < 0) return 0;
  int u = cp->alias[v] >= 0 ? cp->alias[v] : v;
  if (cp->pad_to[u]) return cp->pad_to[u];
  return cp->alias[v] >= 0 ? cp->plan->dims[u][1] : 0;
}

/* The view of value v in representation rep, dims from the plan. */
static void view_of(const bd_cuda_cplan *cp, int v, int rep, bd_cuda_view *o) {
  const bd_plan *p = cp->plan;
  int r = p->rank[v];
  memset(o, 0, sizeof(*o));
  o->base = cp->buf[v][rep];
  o->dtype = rep == BD_REP_H16 ? BD_CT_H16 : BD_CT_F32;
  if (r == 0) {
    o->rank = 1;
    o->dims[0] = 1;
    o->strides[0] = 1;
    return;
  }
  o->rank = r;
  for (int d = 0; d < r; ++d) o->dims[d] = p->dims[v][d];
  if (rep == BD_REP_H16) { /* logical NCHW over NHWC memory, pixels `pitch` apart */
    int64_t pitch = planned_pitch(cp, v);
    int64_t c = pitch ? pitch : o->dims[1], h = o->dims[2], w = o->dims[3];
    o->strides[0] = h * w * c;
    o->strides[1] = 1;
    o->strides[2] = w * c;
    o->strides[3] = c;
  } else {
    int64_t s = 1;
    for (int d = r - 1; d >= 0; --d) {
      o->strides[d] = s;
      s *= o->dims[d];
    }
  }
}

/* The buffer a strided view (vkind 2) reads: its source's, down the chain. */
static void *view_base(const bd_cuda_cplan *cp, int v) {
  int u = cp->same[v];
  if (cp->vkind[u] == 2) return view_base(cp, u);
  return cp->buf[u][cp->vview[v].dtype == BD_CT_H16 ? BD_REP_H16 : BD_REP_F32];
}

/* A strided view's own layout over its source's buffer (voff elements in). */
static void view_src(const bd_cuda_cplan *cp, int v, bd_cuda_view *o) {
  *o = cp->vview[v];
  o->base = view_base(cp, v);
  if (o->base)
    o->base = (char *)o->base + cp->voff[v] * (o->dtype == BD_CT_H16 ? 2 : 4);
}

/* Any available representation, the primary first; -1: v is a strided view read in
 * place (not materialised). */
static int rep_any(const bd_cuda_cplan *cp, int v) {
  if (cp->vkind[v] == 2)
    return cp->buf[v][BD_REP_F32] ? BD_REP_F32 : cp->buf[v][BD_REP_H16] ? BD_REP_H16 : -1;
  if (cp->prim[v] >= 0 && cp->buf[v][(int)cp->prim[v]]) return cp->prim[v];
  return cp->buf[v][BD_REP_F32] ? BD_REP_F32 : BD_REP_H16;
}

static void view_any(const bd_cuda_cplan *cp, int v, bd_cuda_view *o) {
  int r = rep_any(cp, v);
  if (r < 0)
    view_src(cp, v, o);
  else
    view_of(cp, v, r, o);
}

/* in viewed with out's dims under numpy broadcasting (right-aligned, 1 -> stride 0). */
static void bcast(const bd_cuda_view *in, int in_rank, const bd_cuda_view *out,
                  bd_cuda_view *o) {
  bd_cuda_view t = *in;
  t.rank = out->rank;
  for (int d = 0; d < out->rank; ++d) {
    int id = d - (out->rank - in_rank);
    t.dims[d] = out->dims[d];
    t.strides[d] = (id < 0 || in->dims[id] == 1) ? 0 : in->strides[id];
  }
  *o = t;
}

static bd_status dev_alloc(bd_cuda_cplan *cp, size_t bytes, void **out, bd_err *err) {
  bd_status st = BD_OK;
  void *p = NULL;
  BD_CU(cudaMalloc(&p, bytes ? bytes : 16));
  cp->extra[cp->n_extra++] = p;
  *out = p;
out:
  return st;
}

static void push(bd_cuda_cplan *cp, int kind, int node, int value, int rep) {
  bd_cuda_action *a = &cp->acts[cp->n_acts++];
  a->kind = kind;
  a->node = node;
  a->value = value;
  a->rep = rep;
  a->out_index = -1;
}

size_t bd_cuda_rep_bytes(const bd_cuda_cplan *cp, int v, int rep) {
  if (rep == BD_REP_H16 && cp->pad_to[v]) /* channels padded */
    return (size_t)(numel_of(cp->plan, v) / cp->plan->dims[v][1] * cp->pad_to[v]) * 2;
  return (size_t)numel_of(cp->plan, v) * (rep == BD_REP_H16 ? 2 : 4);
}

/* 1 when representation rep of v exists (or, in the sizing pass, will exist). */
static int has(const bd_cuda_cplan *cp, int v, int rep) {
  return cp->buf[v][rep] ||
         (cp->sizing && (cp->item[v][rep] >= 0 || (rep == BD_REP_F32 && cp->vkind[v] == 1)));
}

/* Sizing pass: (v, rep) needs a buffer from the current step on. */
static void size_item(bd_cuda_cplan *cp, int v, int rep) {
  bd_pack_item *it = &cp->items[cp->n_items];
  size_t bytes = bd_cuda_rep_bytes(cp, v, rep);
  it->def = it->last = cp->cur_step;
  it->size = bytes ? bytes : 16;
  cp->item[v][rep] = cp->n_items++;
}

/* The buffer of (v, rep): its place in the arena, or its own allocation when the
 * memory plan has none for it. */
static bd_status place(bd_cuda_cplan *cp, int v, int rep, bd_err *err) {
  int i = cp->item[v][rep];
  if (i >= 0 && cp->arena) {
    cp->buf[v][rep] = (char *)cp->arena + cp->items[i].off;
    return BD_OK;
  }
  return dev_alloc(cp, bd_cuda_rep_bytes(cp, v, rep), &cp->buf[v][rep], err);
}

/* Makes representation rep of v available before the next op (a conversion step). */
static bd_status need(bd_cuda_cplan *cp, int v, int rep, const char *node, bd_err *err) {
  if (has(cp, v, rep)) return BD_OK;
  if (cp->prim[v] < 0)
    return bd_err_set(err, BD_E_INTERNAL, "node '%s': input %d has no buffer", node, v);
  if (rep == BD_REP_H16 && cp->plan->rank[v] != 4)
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': 16-bit NHWC needs a 4-D input", node);
  if (cp->sizing) {
    size_item(cp, v, rep);
    return BD_OK;
  }
  bd_status st = place(cp, v, rep, err);
  if (st != BD_OK) return st;
  push(cp, BD_A_CONVERT, -1, v, rep);
  return BD_OK;
}

/* The graph's inputs and outputs are arena items like every other value: an input from
 * its upload before step 0 to its last reader, an output from its producer to the copy
 * back after the last step. So they reuse the memory of the layers that are dead by
 * then (the input's after the first layers, the outputs' the early layers'). */
bd_status bd_cuda_bind_inputs(const bd_graph *g, bd_cuda_cplan *cp, bd_err *err) {
  for (int i = 0; i < g->n_inputs; ++i) {
    int v = g->inputs[i];
    cp->prim[v] = BD_REP_F32;
    if (cp->sizing) {
      cp->cur_step = 0;
      size_item(cp, v, BD_REP_F32);
      continue;
    }
    bd_status st = place(cp, v, BD_REP_F32, err);
    if (st != BD_OK) return st;
    cp->d_in[i] = cp->buf[v][BD_REP_F32];
  }
  return BD_OK;
}

/* 1 when output v's primary buffer is its packed FP32 array (the copy back reads it). */
static int output_direct(const bd_cuda_cplan *cp, int v) {
  return cp->prim[v] == BD_REP_F32 && cp->vkind[v] == 0;
}

void bd_cuda_bind_outputs(const bd_graph *g, bd_cuda_cplan *cp) {
  const int end = cp->plan->n_steps;
  for (int i = 0; i < g->n_outputs; ++i) {
    int v = g->outputs[i];
    if (cp->sizing) {
      bd_cuda_extend_items(cp, v, end); /* read by the copy back after the last step */
      cp->out_item[i] = -1;
      if (!output_direct(cp, v)) { /* converted into an FP32 array of its own at the end */
        bd_pack_item *it = &cp->items[cp->n_items];
        it->def = it->last = end;
        it->size = bd_cuda_rep_bytes(cp, v, BD_REP_F32);
        cp->out_item[i] = cp->n_items++;
      }
      continue;
    }
    if (cp->out_item[i] < 0) {
      cp->d_out[i] = cp->buf[v][BD_REP_F32];
    } else {
      cp->d_out[i] = (char *)cp->arena + cp->items[cp->out_item[i]].off;
      push(cp, BD_A_OUTPUT, -1, v, BD_REP_F32);
      cp->acts[cp->n_acts - 1].out_index = i;
    }
  }
}

void bd_cuda_extend_items(bd_cuda_cplan *cp, int v, int step) {
  for (int rep = 0; rep < 2; ++rep) {
    int i = cp->item[v][rep];
    if (i >= 0 && cp->items[i].last < step) cp->items[i].last = step;
  }
  if (cp->alias[v] >= 0) bd_cuda_extend_items(cp, cp->alias[v], step); /* its Concat's buffer */
  if (cp->same[v] >= 0) bd_cuda_extend_items(cp, cp->same[v], step);   /* a view's source */
}

/* Pixels of v's 16-bit NHWC buffer are this many channels apart. */
static int pitch_of(const bd_cuda_cplan *cp, int v) {
  int64_t pitch = planned_pitch(cp, v);
  return (int)(pitch ? pitch : cp->plan->dims[v][1]);
}

static int is_trunk(bd_op op) {
  switch (op) {
  case BD_OP_CONV: case BD_OP_RELU: case BD_OP_SIGMOID: case BD_OP_SILU: case BD_OP_EXP:
  case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV: case BD_OP_CONCAT:
  case BD_OP_MAXPOOL: case BD_OP_RESIZE: case BD_OP_SLICE:
    return 1;
  default:
    return 0;
  }
}

/* Whether a value is stored 16-bit NHWC (a 4-D output of a trunk op). A Concat is only
 * when one of its inputs is: a Concat of FP32 head tensors that happen to be 4-D (DAMO-YOLO's
 * [N, anchors, 4, 17] DFL logits) stays FP32 in ONNX order. From the graph alone (both
 * passes, and the planner before them). */
static int value_h16(const bd_graph *g, const bd_plan *p, int v) {
  if (v < 0 || g->values[v].producer < 0 || p->rank[v] != 4) return 0;
  const bd_node *nd = &g->nodes[g->values[v].producer];
  if (!is_trunk(nd->op)) return 0;
  if (nd->op != BD_OP_CONCAT) return 1;
  for (int k = 0; k < nd->n_in; ++k)
    if (value_h16(g, p, nd->in[k])) return 1;
  return 0;
}

/* Ops whose FP32 output is its input's bytes in ONNX order (contiguous row-major). */
static int is_view(bd_op op) {
  return op == BD_OP_RESHAPE || op == BD_OP_FLATTEN || op == BD_OP_SQUEEZE ||
         op == BD_OP_UNSQUEEZE || op == BD_OP_IDENTITY || op == BD_OP_CAST;
}

static void conv_shape(const bd_graph *g, const bd_cuda_cplan *cp, const bd_node *nd,
                       bd_cuda_conv_shape *s) {
  const bd_plan *p = cp->plan;
  const int64_t *x = p->dims[nd->in[0]], *y = p->dims[nd->out[0]];
  const bd_conv_params *c = &nd->p.conv;
  s->n = (int)x[0];
  s->c = (int)x[1];
  s->h = (int)x[2];
  s->w = (int)x[3];
  s->m = (int)y[1];
  s->oh = (int)y[2];
  s->ow = (int)y[3];
  s->kh = c->kh;
  s->kw = c->kw;
  s->sh = c->sh;
  s->sw = c->sw;
  s->dh = c->dh;
  s->dw = c->dw;
  s->pad_t = c->pad_t;
  s->pad_l = c->pad_l;
  s->group = c->group;
  s->act = c->act;
  s->res = c->res;
  s->ldx = (int)planned_pitch(cp, nd->in[0]);
  s->ldy = (int)planned_pitch(cp, nd->out[0]);
  s->xzero = cp->pad_to[nd->in[0]] != 0;
  const int r = nd->n_in > 3 ? nd->in[3] : -1, rs = bd_cuda_res_src(cp, r);
  s->ldr = rs >= 0 ? (int)planned_pitch(cp, rs) : 0;
  s->rup = rs != r ? (int)(p->dims[r][2] / p->dims[rs][2]) : 0; /* read upsampled */
  s->m1 = s->ldy2 = s->ldr2 = s->act2 = 0;
  s->y2 = NULL;
  s->r2 = NULL;
  s->piece = bd_cuda_concat_piece(g, nd->out[0]);
}

/* Whether twin convs a (the first) and b->twin[a] may run as one launch:
 * BATCHDET_CUDA_TWINS unset or 1 every pair, "even" only pairs of one activation with
 * channel counts multiples of 8 (the A/B for ragged twins), 0 none. */
static int twins_allowed(const bd_cuda_be *b, int a) {
  const char *e = getenv("BATCHDET_CUDA_TWINS");
  if (b->twin[a] <= a || (e && !strcmp(e, "0"))) return 0;
  if (!e || strcmp(e, "even") != 0) return 1;
  const bd_graph *g = b->base.graph;
  const bd_node *x = &g->nodes[a], *y = &g->nodes[b->twin[a]];
  return x->p.conv.act == y->p.conv.act && g->values[x->in[1]].dims[0] % 8 == 0 &&
         g->values[y->in[1]].dims[0] % 8 == 0;
}

/* The stacked shape of twin convs a (the first) and b->twin[a]: both outputs' channels
 * (the second's from the first's rounded up to 8, bd_cuda_kernels.h), one packed output,
 * the first's activation for all (what the conv choice measures: its sides are compared,
 * and cuDNN runs one activation). */
static void twin_shape(const bd_cuda_be *b, const bd_cuda_cplan *cp, int a,
                       bd_cuda_conv_shape *s) {
  const bd_graph *g = b->base.graph;
  conv_shape(g, cp, &g->nodes[a], s);
  s->m = bd_cuda_twin_m1s(s->m) + (int)cp->plan->dims[g->nodes[b->twin[a]].out[0]][1];
  s->ldy = 0;
  s->piece = 0; /* two outputs: each its own */
}

/* The shape conv node n runs: its own, or for the first of twins this plan runs as one
 * launch the stacked one with both outputs (y2: the second's buffer, NULL while sizing). */
static void node_shape(const bd_cuda_be *b, const bd_cuda_cplan *cp, int n,
                       bd_cuda_conv_shape *s) {
  const bd_graph *g = b->base.graph;
  if (cp->twin_on[n] != 1) {
    conv_shape(g, cp, &g->nodes[n], s);
    return;
  }
  const int y = g->nodes[n].out[0], y2 = g->nodes[b->twin[n]].out[0];
  twin_shape(b, cp, n, s);
  s->m1 = (int)cp->plan->dims[y][1];
  s->ldy = (int)planned_pitch(cp, y);
  s->ldy2 = (int)planned_pitch(cp, y2);
  if (!s->ldy) s->ldy = s->m1;
  if (!s->ldy2) s->ldy2 = s->m - bd_cuda_twin_m1s(s->m1);
  s->y2 = cp->buf[y2][BD_REP_H16];
  const bd_node *t = &g->nodes[b->twin[n]]; /* its residual, or what that upsamples */
  s->act2 = t->p.conv.act + 1;
  if (t->n_in > 3 && t->in[3] >= 0) {
    const int r2 = bd_cuda_res_src(cp, t->in[3]);
    s->r2 = cp->buf[r2][BD_REP_H16];
    s->ldr2 = (int)planned_pitch(cp, r2);
  }
}

/* cuDNN's fused bias + activation is on unless BATCHDET_CUDA_FUSE=0: a switch to rule
 * it out quickly on a new cuDNN version without a rebuild. */
static int fuse_enabled(void) {
  const char *e = getenv("BATCHDET_CUDA_FUSE");
  return !e || strcmp(e, "0") != 0;
}

/* Whether conv node nd would try cuDNN's fused epilogue (which activations and residuals
 * each of cuDNN's paths fuses is bd_cuda_cudnn.c's to say). */
static int conv_may_fuse(const bd_cuda_be *b, const bd_node *nd) {
  int has_bias = nd->n_in > 2 && nd->in[2] >= 0;
  return b->dnn && has_bias && fuse_enabled();
}

/* The pitch capabilities of conv node nd (bd_cuda_conv_layer_pitch_caps); twins in one
 * launch: their stacked shape's. */
static int conv_caps(const bd_cuda_be *b, const bd_cuda_cplan *cp, const bd_node *nd) {
  bd_cuda_conv_shape s;
  const int n = (int)(nd - b->base.graph->nodes);
  if (cp->twin_on[n]) {
    const int a = cp->twin_on[n] == 1 ? n : b->twin[n];
    nd = &b->base.graph->nodes[a];
    twin_shape(b, cp, a, &s);
  } else {
    conv_shape(b->base.graph, cp, nd, &s);
  }
  return bd_cuda_conv_layer_pitch_caps(&s, nd->p.conv.pad_b, nd->p.conv.pad_r, b->dnn != NULL,
                                       conv_may_fuse(b, nd));
}

/* Which twin convs this plan runs as one launch (cp->twin_on): those whose stacked shape
 * the conv choice (or BATCHDET_CUDA_CONV) puts on our tensor-core kernel without channel
 * padding. After the choices, before the aliases. */
static void plan_twins(const bd_cuda_be *b, bd_cuda_cplan *cp) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  memset(cp->twin_on, 0, (size_t)g->n_nodes);
  for (int k = 0; k < p->n_steps; ++k) {
    const int n = p->steps[k], t = b->twin[n];
    const bd_node *nd = &g->nodes[n];
    if (!twins_allowed(b, n) || !b->tbias[n] || !b->wbf[n] || p->rank[nd->in[0]] != 4)
      continue;
    bd_cuda_conv_shape s;
    twin_shape(b, cp, n, &s);
    const int caps = bd_cuda_conv_layer_pitch_caps(&s, nd->p.conv.pad_b, nd->p.conv.pad_r,
                                                   b->dnn != NULL, conv_may_fuse(b, nd));
    if (!(caps & BD_CONV_PITCH_ALIGN8) || (caps & BD_CONV_PITCH_XZERO) ||
        (s.res != BD_RES_NONE && !(caps & BD_CONV_PITCH_ROUTE)))
      continue; /* twins with residuals: each read its own (not on the patch tile) */
    cp->twin_on[n] = 1;
    cp->twin_on[t] = 2;
  }
}

static int upres_enabled(void) {
  const char *e = getenv("BATCHDET_CUDA_UPRES");
  return !e || strcmp(e, "0") != 0;
}

/* The factor f > 1 by which Resize node rz upsamples on both axes when its nearest output
 * pixel (oy, ox) is exactly input pixel (oy / f, ox / f) under its coordinate and
 * rounding modes (the ONNX formulas in FP32, as bd_cuda_resize.cu computes them), else 0. */
static int resize_factor(const bd_node *rz, const int64_t *x, const int64_t *y) {
  const bd_resize_params *rp = &rz->p.resize;
  if (rz->op != BD_OP_RESIZE || rp->mode != BD_RESIZE_NEAREST || x[2] < 1 || x[3] < 1 ||
      y[2] % x[2] || y[3] % x[3] || y[2] / x[2] != y[3] / x[3] || y[2] / x[2] < 2 ||
      y[2] > 65536 || y[3] > 65536)
    return 0;
  const int f = (int)(y[2] / x[2]);
  for (int ax = 0; ax < 2; ++ax) {
    const int in = (int)x[2 + ax], out = (int)y[2 + ax];
    const float sc = ax ? rp->scale_w : rp->scale_h;
    for (int o = 0; o < out; ++o) {
      float c;
      switch (rp->coord) {
      case BD_COORD_HALF_PIXEL: c = ((float)o + 0.5f) / sc - 0.5f; break;
      case BD_COORD_PYTORCH_HALF_PIXEL: c = out > 1 ? ((float)o + 0.5f) / sc - 0.5f : 0.0f; break;
      case BD_COORD_ALIGN_CORNERS:
        c = out > 1 ? (float)o * (float)(in - 1) / (float)(out - 1) : 0.0f;
        break;
      default: c = (float)o / sc; break;
      }
      int i;
      switch (rp->nearest) {
      case BD_NEAREST_ROUND_PREFER_FLOOR: i = (int)ceilf(c - 0.5f); break;
      case BD_NEAREST_ROUND_PREFER_CEIL: i = (int)floorf(c + 0.5f); break;
      case BD_NEAREST_CEIL: i = (int)ceilf(c); break;
      default: i = (int)floorf(c); break;
      }
      i = i < 0 ? 0 : i >= in ? in - 1 : i;
      if (i != o / f) return 0;
    }
  }
  return f;
}

/* What a reader test of bd_graph_readers sees: the plan, the value read (v), the node
 * that may read it whatever it is (skip), the Concat slice it would be (ch of width). */
typedef struct {
  const bd_cuda_be *b;
  const bd_cuda_cplan *cp;
  int v, skip;
  int64_t ch, width;
} rd_ctx;

/* A conv's residual, read upsampled by its epilogue (and not also its input). */
static int reads_upsampled(void *ctx, int n, int j) {
  const rd_ctx *x = ctx;
  const bd_node *nd = &x->b->base.graph->nodes[n];
  if (nd->op != BD_OP_CONV || j != 3 || nd->p.conv.res == BD_RES_NONE || nd->in[0] == x->v)
    return 0;
  const int c = conv_caps(x->b, x->cp, nd);
  return (c & BD_CONV_PITCH_ROUTE) && !(c & BD_CONV_PITCH_XZERO);
}

/* Which Resizes this plan leaves to their readers (cp->upsrc): a nearest upsample by an
 * integer factor (resize_factor) of a 16-bit tensor whose every reader is a conv taking it
 * as its residual only, on our tensor-core kernel without channel padding (bd_compile's
 * split_upsampled_concats makes such pairs: the FPN top-down path's Resize moves a conv's
 * few channels, and is then read by the next conv's epilogue instead of being written).
 * After the choices and twins, before the aliases. BATCHDET_CUDA_UPRES=0 turns it off. */
static void plan_upres(const bd_cuda_be *b, bd_cuda_cplan *cp) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  for (int v = 0; v < g->n_values; ++v) cp->upsrc[v] = -1;
  if (!upres_enabled()) return;
  for (int k = 0; k < p->n_steps; ++k) {
    const bd_node *rz = &g->nodes[p->steps[k]];
    const int u = rz->out[0], z = rz->in[0];
    if (rz->op != BD_OP_RESIZE || g->values[u].is_output || !value_h16(g, p, u) ||
        !value_h16(g, p, z) || !resize_factor(rz, p->dims[z], p->dims[u]) ||
        p->dims[u][0] * p->dims[u][2] * p->dims[u][3] >= ((int64_t)1 << 31))
      continue;
    rd_ctx x = {b, cp, u, -1, 0, 0};
    if (bd_graph_readers(g, u, reads_upsampled, &x) > 0) cp->upsrc[u] = z;
  }
  /* Twins in one launch read both residuals alike (one rup): where they would not, both
   * their Resizes run. */
  for (int n = 0; n < g->n_nodes; ++n) {
    if (cp->twin_on[n] != 1) continue;
    const bd_node *a = &g->nodes[n], *t = &g->nodes[b->twin[n]];
    if (a->n_in < 4 || a->in[3] < 0 || t->n_in < 4 || t->in[3] < 0) continue;
    const int ua = a->in[3], ut = t->in[3];
    if ((cp->upsrc[ua] < 0) != (cp->upsrc[ut] < 0) ||
        (cp->upsrc[ua] >= 0 &&
         (p->dims[ua][2] != p->dims[ut][2] ||
          p->dims[cp->upsrc[ua]][2] != p->dims[cp->upsrc[ut]][2])))
      cp->upsrc[ua] = cp->upsrc[ut] = -1;
  }
}

/* Fills n bytes of 16-bit device memory with pseudo-random values in [-1, 1) (a fixed
 * pattern, repeated), converted on the device from FP32 through tmp (2 x BD_CONV_SAMPLE
 * floats), so that it works in any storage. */
static bd_status fill_h16(void *d, size_t n, float *tmp, cudaStream_t s, bd_err *err) {
  bd_status st = BD_OK;
  const int64_t blk = 2 * BD_CONV_SAMPLE;
  float *h = malloc((size_t)blk * sizeof(float));
  uint32_t z = 0x9E3779B9u;
  if (!h) return bd_err_set(err, BD_E_NOMEM, "conv choice: out of memory");
  for (int64_t i = 0; i < blk; ++i) {
    z ^= z << 13, z ^= z >> 17, z ^= z << 5;
    h[i] = (float)(z >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  BD_CU(cudaMemcpy(tmp, h, (size_t)blk * sizeof(float), cudaMemcpyHostToDevice));
  for (int64_t off = 0, total = (int64_t)(n / 2); off < total; off += blk) {
    int64_t cnt = total - off < blk ? total - off : blk;
    bd_cuda_view src = {tmp, BD_CT_F32, 1, {cnt}, {1}};
    bd_cuda_view dst = {(char *)d + 2 * off, BD_CT_H16, 1, {cnt}, {1}};
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, s));
  }
  BD_CU(cudaStreamSynchronize(s));
out:
  free(h);
  return st;
}

/* The shape the conv choice measures for step k's node: t 0 its own, t 1 the stacked
 * shape of the twins it is the first of (0 returned where it is none). */
static int choice_shape(const bd_cuda_be *b, const bd_cuda_cplan *cp, int k, int t,
                        bd_cuda_conv_shape *s) {
  const bd_graph *g = b->base.graph;
  const int n = cp->plan->steps[k];
  const bd_node *nd = &g->nodes[n];
  if (nd->op != BD_OP_CONV || cp->plan->rank[nd->in[0]] != 4) return 0;
  if (!t) {
    conv_shape(g, cp, nd, s);
    return 1;
  }
  if (!twins_allowed(b, n) || !b->tbias[n]) return 0;
  twin_shape(b, cp, n, s);
  return 1;
}

static int alias_enabled(void);

static int is_channel_concat(void *ctx, int n, int j) {
  const bd_node *nd = &((const bd_graph *)ctx)->nodes[n];
  (void)j;
  return nd->op == BD_OP_CONCAT && nd->p.concat.axis == 1;
}

int bd_cuda_concat_piece(const bd_graph *g, int v) {
  if (v < 0 || g->values[v].is_output || !alias_enabled()) return 0;
  return bd_graph_readers(g, v, is_channel_concat, (void *)g) == 1;
}

static bd_status conv_choices(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  bd_status st = BD_OK;
  bd_cuda_conv_scratch sc = {0};
  size_t xb = 0, yb = 0;
  for (int k = 0; k < p->n_steps; ++k)
    for (int t = 0; t < 2; ++t) {
      bd_cuda_conv_shape s;
      if (!choice_shape(b, cp, k, t, &s) || !bd_cuda_conv_undecided(b->dnn, &s)) continue;
      size_t x = (size_t)s.n * s.h * s.w * s.c * 2, y = (size_t)s.n * s.oh * s.ow * s.m * 2;
      xb = x > xb ? x : xb;
      yb = y > yb ? y : yb;
    }
  if (!xb) return BD_OK;
  /* Scratch for the measurement; without the memory the layers stay on cuDNN. */
  if (cudaMalloc(&sc.x, xb) != cudaSuccess || cudaMalloc(&sc.r, yb) != cudaSuccess ||
      cudaMalloc(&sc.y0, yb) != cudaSuccess || cudaMalloc(&sc.y1, yb) != cudaSuccess ||
      cudaMalloc((void **)&sc.tmp, 2 * BD_CONV_SAMPLE * sizeof(float)) != cudaSuccess) {
    (void)cudaGetLastError();
    fprintf(stderr, "batchdet: no device memory to compare convolution kernels (%zu + 3 x %zu "
                    "bytes); cuDNN runs this batch size's layers\n", xb, yb);
    goto out;
  }
  if ((st = fill_h16(sc.x, xb, sc.tmp, b->stream, err)) != BD_OK ||
      (st = fill_h16(sc.r, yb, sc.tmp, b->stream, err)) != BD_OK)
    goto out;
  if (!cp->probe) cp->probe_bytes = bd_cuda_probe_ws_alloc(&cp->probe);
  sc.ws = cp->probe;
  sc.ws_bytes = cp->probe_bytes;
  for (int k = 0; k < p->n_steps && st == BD_OK; ++k)
    for (int t = 0; t < 2 && st == BD_OK; ++t) {
      const int n = p->steps[k];
      const bd_node *nd = &g->nodes[n];
      bd_cuda_conv_shape s;
      if (!choice_shape(b, cp, k, t, &s)) continue;
      const float *bias = t                                ? (const float *)b->tbias[n]
                          : nd->n_in > 2 && nd->in[2] >= 0 ? (const float *)b->cdev[nd->in[2]]
                                                           : NULL;
      st = bd_cuda_conv_choose(b->dnn, &s, nd->p.conv.pad_b, nd->p.conv.pad_r, b->wbf[n], bias,
                               conv_may_fuse(b, nd), &sc, b->stream, err);
      if (st != BD_OK)
        bd_err_prefix(err, "node '%s'%s", nd->name ? nd->name : "", t ? " (with its twin)" : "");
    }
out:
  cudaFree(sc.x);
  cudaFree(sc.r);
  cudaFree(sc.y0);
  cudaFree(sc.y1);
  cudaFree(sc.tmp);
  return st;
}

bd_status bd_cuda_plan_conv_choices(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  bd_status st = bd_cuda_conv_mode_check(err);
  if (st == BD_OK && b->dnn) st = conv_choices(b, cp, err);
  if (st == BD_OK) plan_twins(b, cp);
  if (st == BD_OK) plan_upres(b, cp);
  return st;
}

/* Whether node nd can write its output as a channel slice (channel offset ch) of a Concat
 * `width` channels wide: ops writing through strided views, MaxPool and Resize (pitch
 * arguments), convs whose layer allows it. */
static int writes_pitched(const bd_cuda_be *b, const bd_cuda_cplan *cp, const bd_node *nd,
                          int64_t ch, int64_t width) {
  switch (nd->op) {
  case BD_OP_SLICE: case BD_OP_RELU: case BD_OP_SIGMOID: case BD_OP_SILU: case BD_OP_EXP:
  case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV: case BD_OP_MAXPOOL:
  case BD_OP_RESIZE:
    return 1;
  case BD_OP_CONV: {
    int c = conv_caps(b, cp, nd);
    return (c & BD_CONV_PITCH_Y) && (!(c & BD_CONV_PITCH_ALIGN8) || (ch % 8 == 0 && width % 8 == 0));
  }
  default:
    return 0;
  }
}

/* Whether input k of node nd can be such a slice: everything reading through views,
 * pitch arguments or a conversion step (which reads a view); a conv's input or residual
 * when its layer allows it. */
static int reads_pitched(const bd_cuda_be *b, const bd_cuda_cplan *cp, const bd_node *nd, int k,
                         int64_t ch, int64_t width) {
  if (nd->op != BD_OP_CONV) return 1;
  if (k != 0 && k != 3) return 0;
  int c = conv_caps(b, cp, nd);
  return (c & (k ? BD_CONV_PITCH_R : BD_CONV_PITCH_X)) &&
         (!(c & BD_CONV_PITCH_ALIGN8) || (ch % 8 == 0 && width % 8 == 0));
}

static int alias_enabled(void) {
  const char *e = getenv("BATCHDET_CUDA_ALIAS");
  return !e || strcmp(e, "0") != 0;
}

/* A conv's input read channel-padded (the pad zeroed). */
static int reads_padded(void *ctx, int n, int j) {
  const rd_ctx *x = ctx;
  const bd_node *nd = &x->b->base.graph->nodes[n];
  return nd->op == BD_OP_CONV && j == 0 && (conv_caps(x->b, x->cp, nd) & BD_CONV_PITCH_XZERO);
}

/* Input j of node n read as the slice x->ch of a Concat x->width wide (the Concat itself,
 * x->skip, reads it so by construction). */
static int reads_slice(void *ctx, int n, int j) {
  const rd_ctx *x = ctx;
  return n == x->skip ||
         reads_pitched(x->b, x->cp, &x->b->base.graph->nodes[n], j, x->ch, x->width);
}

void bd_cuda_plan_aliases(bd_cuda_be *b, bd_cuda_cplan *cp) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  int *in_concat;
  for (int v = 0; v < g->n_values; ++v) {
    cp->alias[v] = -1;
    cp->alias_ch[v] = 0;
    cp->pad_to[v] = 0;
  }
  if (!alias_enabled()) return;
  /* Values only channel-padded convs read (a Focus stem's Concat): stored padded to 8
   * channels, zeroed, read by the convs as their padded input. */
  for (int v = 0; v < g->n_values; ++v) {
    const bd_value *val = &g->values[v];
    if (val->producer < 0 || val->is_output || val->data || p->rank[v] != 4 ||
        p->dims[v][1] % 8 == 0 || !value_h16(g, p, v))
      continue;
    int64_t w8 = (p->dims[v][1] + 7) / 8 * 8;
    const bd_node *pn = &g->nodes[val->producer];
    rd_ctx x = {b, cp, v, -1, 0, w8};
    if ((pn->op == BD_OP_CONCAT || writes_pitched(b, cp, pn, 0, w8)) &&
        bd_graph_readers(g, v, reads_padded, &x) > 0)
      cp->pad_to[v] = w8;
  }
  in_concat = calloc((size_t)g->n_values, sizeof(int)); /* times v is a Concat input */
  if (!in_concat) return; /* no aliasing: correct, only more memory */
  for (int n = 0; n < g->n_nodes; ++n) {
    const bd_node *nd = &g->nodes[n];
    for (int k = 0; nd->op == BD_OP_CONCAT && k < nd->n_in; ++k)
      if (nd->in[k] >= 0) in_concat[nd->in[k]]++;
  }
  for (int n = 0; n < g->n_nodes; ++n) {
    const bd_node *nd = &g->nodes[n];
    int y = nd->out[0];
    if (nd->op != BD_OP_CONCAT || nd->n_out < 1 || !value_h16(g, p, y) || nd->p.concat.axis != 1)
      continue;
    int64_t ch = 0, width = cp->pad_to[y] ? cp->pad_to[y] : p->dims[y][1];
    for (int k = 0; k < nd->n_in; ch += p->dims[nd->in[k]][1], ++k) {
      int v = nd->in[k];
      const bd_value *val = &g->values[v];
      if (v < 0 || val->producer < 0 || val->is_output || val->is_input || val->data ||
          p->rank[v] != 4 || in_concat[v] != 1 || val->dtype != BD_DT_F32 ||
          !writes_pitched(b, cp, &g->nodes[val->producer], ch, width))
        continue;
      rd_ctx x = {b, cp, v, n, ch, width};
      if (bd_graph_readers(g, v, reads_slice, &x) < 0) continue;
      cp->alias[v] = y;
      cp->alias_ch[v] = ch;
    }
  }
  free(in_concat);
}

/* Inputs no op reads on the device as FP32: read on the host (Reshape's shape, Gather's
 * indices), or a conv's weights (kept only as 16-bit KRSC copies in the weights blob). */
static int host_input(bd_op op, int k) {
  return k == 1 && (op == BD_OP_RESHAPE || op == BD_OP_GATHER || op == BD_OP_CONV);
}

/* Device weights: one blob per model and GPU holding every float constant an op reads
 * on the device (FP32, ONNX order) and every conv's 16-bit KRSC weights, each at a
 * 256-byte aligned offset. The layout is a function of the compiled graph alone, so an
 * engine of the same model can use a blob made by another (same GPU), or a copy of it
 * broadcast to its GPU. */
struct bd_cuda_weights {
  int device;
  void *blob;
  size_t bytes;
  int n_values, n_nodes;
  int64_t *voff, *noff; /* per value / node: offset in the blob, -1 none */
  int64_t *toff;        /* per node, first of twin convs: their stacked biases, -1 none */
  atomic_int refs;
};

#define W_ALIGN 256

/* Whether convs a and b can run as twins (bd_cuda_conv_twins). */
static int twins_ok(const bd_graph *g, int a, int b) {
  const bd_node *x = &g->nodes[a], *y = &g->nodes[b];
  if (x->op != BD_OP_CONV || y->op != BD_OP_CONV || x->n_in < 2 || y->n_in < 2 ||
      x->in[0] != y->in[0] || x->n_out < 1 || y->n_out < 1)
    return 0;
  const bd_conv_params *p = &x->p.conv, *q = &y->p.conv;
  if (p->kh != q->kh || p->kw != q->kw || p->sh != q->sh || p->sw != q->sw || p->dh != q->dh ||
      p->dw != q->dw || p->pad_t != q->pad_t || p->pad_l != q->pad_l || p->pad_b != q->pad_b ||
      p->pad_r != q->pad_r || p->group != 1 || q->group != 1 || p->res != q->res)
    return 0;
  /* Residuals: both (of one mode) or neither; the second's computed before the first
   * runs, since the one launch at the first's step reads it. */
  const int rx = x->n_in > 3 ? x->in[3] : -1, ry = y->n_in > 3 ? y->in[3] : -1;
  if ((p->res != BD_RES_NONE) != (rx >= 0) || (q->res != BD_RES_NONE) != (ry >= 0) ||
      (ry >= 0 && (ry == x->out[0] || g->values[ry].producer >= a)))
    return 0;
  /* Each its own activation (shape.act2); output channels any count but with residuals
   * (ragged twins, bd_cuda_kernels.h: a head's 68 box and 80 class channels). */
  const bd_value *wa = &g->values[x->in[1]], *wb = &g->values[y->in[1]];
  if (!wa->data || !wb->data || wa->rank != 4 || wb->rank != 4 || wa->dims[1] != wb->dims[1] ||
      wa->dims[2] != wb->dims[2] || wa->dims[3] != wb->dims[3] || wa->dims[1] % 8 ||
      wa->dims[0] < 1 || wb->dims[0] < 1 ||
      ((wa->dims[0] % 8 || wb->dims[0] % 8) && p->res != BD_RES_NONE))
    return 0;
  for (int t = 0; t < 2; ++t) { /* biases, where present, float constants of M values */
    const bd_node *nd = t ? y : x;
    if (nd->n_in <= 2 || nd->in[2] < 0) continue;
    const bd_value *bv = &g->values[nd->in[2]];
    if (!bv->data || bv->dtype != BD_DT_F32 || bd_value_numel(bv) != g->values[nd->in[1]].dims[0])
      return 0;
  }
  return !g->values[x->out[0]].is_output && !g->values[y->out[0]].is_output;
}

void bd_cuda_conv_twins(const bd_graph *g, int *twin) {
  for (int n = 0; n < g->n_nodes; ++n) twin[n] = -1;
  for (int a = 0; a < g->n_nodes; ++a) {
    if (g->nodes[a].op != BD_OP_CONV || twin[a] >= 0) continue;
    for (int b = a + 1; b < g->n_nodes; ++b)
      if (twin[b] < 0 && twins_ok(g, a, b)) {
        twin[a] = b;
        twin[b] = a;
        break;
      }
  }
}

static bd_status weights_layout(const bd_graph *g, int64_t *voff, int64_t *noff, int64_t *toff,
                                size_t *bytes, bd_err *err) {
  bd_status st = BD_OK;
  size_t at = 0;
  int *twin = malloc(sizeof(int) * (size_t)(g->n_nodes ? g->n_nodes : 1));
  if (!twin) return bd_err_set(err, BD_E_NOMEM, "cuda weights: out of memory");
  bd_cuda_conv_twins(g, twin);
  for (int v = 0; v < g->n_values; ++v) voff[v] = -1;
  for (int n = 0; n < g->n_nodes; ++n) noff[n] = toff[n] = -1;
  for (int n = 0; n < g->n_nodes; ++n) {
    const bd_node *nd = &g->nodes[n];
    for (int k = 0; k < nd->n_in; ++k) {
      int v = nd->in[k];
      if (v < 0 || !g->values[v].data || voff[v] >= 0 || host_input(nd->op, k)) continue;
      const bd_value *cv = &g->values[v];
      if (cv->dtype != BD_DT_F32) {
        st = bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): constant '%s' is %s, not float",
                        nd->name, bd_op_name(nd->op), cv->name, bd_dtype_name(cv->dtype));
        goto out;
      }
      int64_t ne = bd_value_numel(cv);
      if (ne < 0) {
        st = bd_err_set(err, BD_E_INVALID, "constant '%s': unknown dims", cv->name);
        goto out;
      }
      voff[v] = (int64_t)at;
      at += ((size_t)(ne ? ne : 1) * sizeof(float) + W_ALIGN - 1) / W_ALIGN * W_ALIGN;
    }
    if (nd->op == BD_OP_CONV && noff[n] < 0) { /* a second twin is placed with its first */
      const bd_value *w = &g->values[nd->in[1]];
      if (!w->data || w->rank != 4) {
        st = bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': conv weights must be a 4-D constant",
                        nd->name);
        goto out;
      }
      size_t wb = (size_t)bd_value_numel(w) * 2;
      noff[n] = (int64_t)at;
      if (twin[n] > n) { /* its twin's weights from row round8(M) on (the blob's zeros
                          * between; C % 8 == 0: 16-byte aligned) */
        const bd_value *w2 = &g->values[g->nodes[twin[n]].in[1]];
        const int64_t m8 = bd_cuda_twin_m1s((int)w->dims[0]);
        wb = wb / (size_t)w->dims[0] * (size_t)m8;
        noff[twin[n]] = (int64_t)(at + wb);
        wb += (size_t)bd_value_numel(w2) * 2;
        at += (wb + W_ALIGN - 1) / W_ALIGN * W_ALIGN;
        toff[n] = (int64_t)at; /* and the two biases, stacked the same way */
        wb = (size_t)(m8 + w2->dims[0]) * sizeof(float);
      }
      at += (wb + W_ALIGN - 1) / W_ALIGN * W_ALIGN;
    }
  }
  *bytes = at ? at : W_ALIGN;
out:
  free(twin);
  return st;
}

void bd_cuda_weights_release(bd_cuda_weights *w) {
  if (!w || atomic_fetch_sub(&w->refs, 1) != 1) return;
  if (w->blob) {
    int prev = 0;
    int have = cudaGetDevice(&prev) == cudaSuccess;
    cudaSetDevice(w->device);
    cudaFree(w->blob);
    if (have) cudaSetDevice(prev);
  }
  free(w->voff);
  free(w->noff);
  free(w->toff);
  free(w);
}

bd_cuda_weights *bd_cuda_weights_ref(bd_cuda_weights *w) {
  if (w) atomic_fetch_add(&w->refs, 1);
  return w;
}

int bd_cuda_weights_device(const bd_cuda_weights *w) {
  return w->device;
}

/* A weights object (one reference) for device with room for the offsets of n_values
 * values and n_nodes nodes; no layout, no blob yet. NULL when out of memory. */
static bd_cuda_weights *weights_alloc(int device, int n_values, int n_nodes) {
  bd_cuda_weights *w = calloc(1, sizeof(*w));
  if (!w) return NULL;
  atomic_init(&w->refs, 1);
  w->device = device;
  w->n_values = n_values;
  w->n_nodes = n_nodes;
  w->voff = malloc(sizeof(int64_t) * (size_t)(n_values ? n_values : 1));
  w->noff = malloc(sizeof(int64_t) * (size_t)(n_nodes ? n_nodes : 1));
  w->toff = malloc(sizeof(int64_t) * (size_t)(n_nodes ? n_nodes : 1));
  if (!w->voff || !w->noff || !w->toff) {
    bd_cuda_weights_release(w);
    return NULL;
  }
  return w;
}

/* A weights object with g's layout for device, no blob yet. */
static bd_status weights_new(const bd_graph *g, int device, bd_cuda_weights **out, bd_err *err) {
  bd_cuda_weights *w = weights_alloc(device, g->n_values, g->n_nodes);
  if (!w) return bd_err_set(err, BD_E_NOMEM, "cuda weights: out of memory");
  bd_status st = weights_layout(g, w->voff, w->noff, w->toff, &w->bytes, err);
  if (st != BD_OK) {
    bd_cuda_weights_release(w);
    return st;
  }
  *out = w;
  return BD_OK;
}

bd_status bd_cuda_weights_bytes(const bd_graph *g, size_t *bytes, void **cdev, void *marker,
                                bd_err *err) {
  bd_cuda_weights *w = NULL;
  bd_status st = weights_new(g, 0, &w, err); /* the layout only: no blob */
  if (st != BD_OK) return st;
  *bytes = w->bytes;
  for (int v = 0; cdev && v < g->n_values; ++v) cdev[v] = w->voff[v] >= 0 ? marker : NULL;
  bd_cuda_weights_release(w);
  return BD_OK;
}

/* Points the backend's constant and conv weight tables into w's blob. */
static void weights_bind(bd_cuda_be *b, const bd_cuda_weights *w) {
  const bd_graph *g = b->base.graph;
  for (int v = 0; v < g->n_values; ++v)
    b->cdev[v] = w->voff[v] >= 0 ? (char *)w->blob + w->voff[v] : NULL;
  for (int n = 0; n < g->n_nodes; ++n) {
    b->wbf[n] = w->noff[n] >= 0 ? (char *)w->blob + w->noff[n] : NULL;
    b->tbias[n] = w->toff[n] >= 0 ? (char *)w->blob + w->toff[n] : NULL;
  }
}

bd_status bd_cuda_upload_constants(bd_cuda_be *b, bd_err *err) {
  const bd_graph *g = b->base.graph;
  bd_status st = weights_new(g, b->device, &b->w, err);
  if (st != BD_OK) return st;
  void *tmp = NULL;
  size_t tmp_bytes = 0;
  BD_CU(cudaMalloc(&b->w->blob, b->w->bytes));
  /* zeros where nothing is copied: the rows and biases between twin convs' stacked ones */
  BD_CU(cudaMemsetAsync(b->w->blob, 0, b->w->bytes, b->stream));
  weights_bind(b, b->w);
  for (int v = 0; v < g->n_values; ++v)
    if (b->cdev[v]) /* on b->stream: the weight conversion below runs there, after it */
      BD_CU(cudaMemcpyAsync(b->cdev[v], g->values[v].data,
                            (size_t)bd_value_numel(&g->values[v]) * sizeof(float),
                            cudaMemcpyHostToDevice, b->stream));
  /* Conv weights go through one FP32 staging buffer (the largest layer's), reused in
   * stream order and freed: the blob keeps only the 16-bit copies. */
  for (int n = 0; n < g->n_nodes; ++n)
    if (b->wbf[n]) {
      size_t nb = (size_t)bd_value_numel(&g->values[g->nodes[n].in[1]]) * sizeof(float);
      if (nb > tmp_bytes) tmp_bytes = nb;
    }
  if (tmp_bytes) BD_CU(cudaMalloc(&tmp, tmp_bytes));
  for (int n = 0; n < g->n_nodes; ++n) {
    const bd_node *nd = &g->nodes[n];
    if (!b->wbf[n]) continue;
    /* ONNX [M][C/g][kh][kw] FP32 -> KRSC 16-bit [M][kh][kw][C/g], on the device. */
    const bd_value *w = &g->values[nd->in[1]];
    int64_t m = w->dims[0], cg = w->dims[1], kh = w->dims[2], kw = w->dims[3];
    BD_CU(cudaMemcpyAsync(tmp, w->data, (size_t)bd_value_numel(w) * sizeof(float),
                          cudaMemcpyHostToDevice, b->stream));
    bd_cuda_view src = {tmp, BD_CT_F32, 4, {m, cg, kh, kw}, {cg * kh * kw, kh * kw, kw, 1}};
    bd_cuda_view dst = {b->wbf[n], BD_CT_H16, 4, {m, cg, kh, kw}, {kh * kw * cg, 1, kw * cg, cg}};
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, b->stream));
  }
  /* Twin convs' stacked biases (zeros for a conv without one; the second's from the
   * first's M rounded up to 8, the blob's zeros between). */
  for (int n = 0; n < g->n_nodes; ++n) {
    if (!b->tbias[n]) continue;
    const int pair[2] = {n, b->twin[n]};
    size_t at = 0;
    for (int t = 0; t < 2; ++t) {
      const bd_node *nd = &g->nodes[pair[t]];
      const int64_t mt = g->values[nd->in[1]].dims[0];
      const size_t m = (size_t)mt * sizeof(float);
      char *d = (char *)b->tbias[n] + at;
      if (nd->n_in > 2 && nd->in[2] >= 0)
        BD_CU(cudaMemcpyAsync(d, g->values[nd->in[2]].data, m, cudaMemcpyHostToDevice, b->stream));
      else
        BD_CU(cudaMemsetAsync(d, 0, m, b->stream));
      at += (size_t)bd_cuda_twin_m1s((int)mt) * sizeof(float);
    }
  }
  BD_CU(cudaStreamSynchronize(b->stream));
out:
  if (tmp) {
    if (st != BD_OK) (void)cudaStreamSynchronize(b->stream);
    cudaFree(tmp);
  }
  return st;
}

bd_status bd_cuda_use_weights(bd_cuda_be *b, bd_cuda_weights *w, bd_err *err) {
  const bd_graph *g = b->base.graph;
  bd_cuda_weights *mine = NULL;
  bd_status st = BD_OK;
  if (w->device != b->device)
    return bd_err_set(err, BD_E_INVALID, "cuda weights: on GPU %d, backend on GPU %d", w->device,
                      b->device);
  /* Same model: the layout computed from this graph must be the one of the blob. */
  if ((st = weights_new(g, b->device, &mine, err)) != BD_OK) return st;
  int same = mine->bytes == w->bytes && w->n_values == g->n_values && w->n_nodes == g->n_nodes &&
             !memcmp(mine->voff, w->voff, sizeof(int64_t) * (size_t)g->n_values) &&
             !memcmp(mine->noff, w->noff, sizeof(int64_t) * (size_t)g->n_nodes) &&
             !memcmp(mine->toff, w->toff, sizeof(int64_t) * (size_t)g->n_nodes);
  bd_cuda_weights_release(mine);
  if (!same)
    return bd_err_set(err, BD_E_INVALID, "cuda weights: made for another model");
  b->w = bd_cuda_weights_ref(w);
  weights_bind(b, w);
  return BD_OK;
}

bd_status bd_cuda_weights_broadcast(bd_cuda_weights *src, int n, const int *devices,
                                    bd_cuda_weights **out, bd_err *err) {
  bd_status st = BD_OK;
  int devs[BD_CUDA_NCCL_MAX_DEVICES];
  void *dst[BD_CUDA_NCCL_MAX_DEVICES] = {0};
  bd_cuda_weights *made[BD_CUDA_NCCL_MAX_DEVICES] = {0}; /* per other device, its copy */
  int nd = 0;
  if (n < 1 || n > 4096)
    return bd_err_set(err, BD_E_INVALID, "cuda weights: broadcast to %d devices", n);
  for (int i = 0; i < n; ++i) out[i] = NULL;
  /* The source first (root of the broadcast, its blob is its own destination), then
   * every other distinct device once. */
  devs[nd] = src->device;
  dst[nd++] = src->blob;
  for (int i = 0; i < n; ++i) {
    int seen = 0;
    for (int k = 0; k < nd; ++k) seen |= devs[k] == devices[i];
    if (seen) continue;
    if (nd == BD_CUDA_NCCL_MAX_DEVICES)
      return bd_err_set(err, BD_E_LIMIT, "cuda weights: more than %d GPUs",
                        BD_CUDA_NCCL_MAX_DEVICES);
    devs[nd++] = devices[i];
  }
  if (nd > 1 && (st = bd_cuda_nccl_broadcast(src->blob, src->bytes, nd, devs, dst, err)) != BD_OK)
    return st;
  /* One weights object per other device owns its copy of the blob and the layout. */
  for (int k = 1; k < nd; ++k) {
    if (!(made[k] = weights_alloc(devs[k], src->n_values, src->n_nodes))) {
      st = bd_err_set(err, BD_E_NOMEM, "cuda weights: out of memory");
      goto out;
    }
    memcpy(made[k]->voff, src->voff, sizeof(int64_t) * (size_t)src->n_values);
    memcpy(made[k]->noff, src->noff, sizeof(int64_t) * (size_t)src->n_nodes);
    memcpy(made[k]->toff, src->toff, sizeof(int64_t) * (size_t)src->n_nodes);
    made[k]->bytes = src->bytes;
    made[k]->blob = dst[k];
    dst[k] = NULL;
  }
  /* Every instance of a device shares that device's copy. */
  made[0] = src;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < nd; ++k)
      if (devs[k] == devices[i]) out[i] = bd_cuda_weights_ref(made[k]);
out:
  for (int k = 1; k < nd; ++k) {
    bd_cuda_weights_release(made[k]); /* the creation reference; instances hold theirs */
    if (dst[k]) { /* a blob no weights object took (a failure half way) */
      cudaSetDevice(devs[k]);
      cudaFree(dst[k]);
    }
  }
  if (st != BD_OK)
    for (int i = 0; i < n; ++i) {
      bd_cuda_weights_release(out[i]);
      out[i] = NULL;
    }
  return st;
}

/* Output buffer of an op in representation rep: the memory plan's (its Concat's buffer
 * for a piece written in place). */
static bd_status assign_out(bd_cuda_be *b, bd_cuda_cplan *cp, int v, int rep, bd_err *err) {
  const bd_graph *g = b->base.graph;
  cp->prim[v] = (signed char)rep;
  int u = rep == BD_REP_H16 ? cp->alias[v] : -1;
  if (cp->sizing) {
    /* A Concat piece makes its Concat's buffer live from its own step; the Concat finds
     * the buffer there. */
    int w = u >= 0 ? u : v;
    if (cp->item[w][BD_REP_H16] >= 0 && rep == BD_REP_H16)
      bd_cuda_extend_items(cp, w, cp->cur_step);
    else
      size_item(cp, w, rep);
    return BD_OK;
  }
  int w = u >= 0 ? u : v;
  if (rep == BD_REP_H16 && cp->pad_to[w] && !cp->zeroed[w]) { /* before its first writer */
    cp->zeroed[w] = 1;
    push(cp, BD_A_ZERO, -1, w, BD_REP_H16);
  }
  if (u >= 0) { /* written in place: its channels of the Concat's buffer */
    int i = cp->item[u][BD_REP_H16];
    if (i < 0 || !cp->arena)
      return bd_err_set(err, BD_E_INTERNAL, "value '%s': its Concat has no buffer",
                        g->values[v].name);
    cp->buf[v][rep] = (char *)cp->arena + cp->items[i].off + cp->alias_ch[v] * 2;
    return BD_OK;
  }
  return place(cp, v, rep, err);
}

static void *offset_ptr(void *base, int64_t elems, size_t es) {
  return (char *)base + elems * (int64_t)es;
}

/* The elements Slice node nd takes of view vi (its dims: the input's): vi's strides
 * times the steps, *off the element offset of the first. 0 for a bad axis or step. */
static int slice_strides(const bd_node *nd, bd_cuda_view *vi, int64_t *off) {
  const bd_slice_params *sp = &nd->p.slice;
  *off = 0;
  for (int k = 0; k < sp->n; ++k) {
    int a = sp->axes[k];
    if (a < 0 || a >= vi->rank || sp->steps[k] == 0) return 0;
    int64_t dim = vi->dims[a], st0 = 0, step = sp->steps[k];
    /* the compiler's clamping (start and count); a step only matters, and is only
     * multiplied in (|step| < dim then, so it cannot overflow), when more than one element
     * is taken */
    int64_t len = bd_slice_len(dim, sp->starts[k], sp->ends[k], step, &st0);
    *off += st0 * vi->strides[a];
    if (len > 1) vi->strides[a] *= step;
  }
  return 1;
}

/* The layout v is read in, from the plan alone (both passes; base where known): a
 * strided view's own, else its primary representation's (16-bit NHWC at its planned
 * pitch, FP32 in ONNX order). */
static void layout_of(const bd_cuda_cplan *cp, int v, bd_cuda_view *o) {
  if (cp->vkind[v] == 2)
    view_src(cp, v, o);
  else
    view_of(cp, v, cp->prim[v], o);
}

/* Strides of `nr` dims nd over the elements of view s without moving them (numpy's
 * no-copy reshape: runs of dims merged or split only where s is contiguous across them);
 * 0 when that is impossible. */
static int reshape_strides(const bd_cuda_view *s, int nr, const int64_t *nd, int64_t *ns) {
  int64_t od[BD_CUDA_MAX_RANK], os[BD_CUDA_MAX_RANK];
  int on = 0;
  for (int i = 0; i < s->rank; ++i)
    if (s->dims[i] != 1) {
      od[on] = s->dims[i];
      os[on++] = s->strides[i];
    }
  int oi = 0, oj = 1, ni = 0, nj = 1;
  while (ni < nr && oi < on) {
    int64_t np = nd[ni], op = od[oi];
    while (np != op) {
      if (np < op) {
        if (nj >= nr) return 0;
        np *= nd[nj++];
      } else {
        if (oj >= on) return 0;
        op *= od[oj++];
      }
    }
    for (int ok = oi; ok < oj - 1; ++ok)
      if (os[ok] != od[ok + 1] * os[ok + 1]) return 0;
    ns[nj - 1] = os[oj - 1];
    for (int nk = nj - 1; nk > ni; --nk) ns[nk - 1] = ns[nk] * nd[nk];
    ni = nj++;
    oi = oj++;
  }
  if (oi < on) return 0;
  for (; ni < nr; ++ni) {
    if (nd[ni] != 1) return 0;
    ns[ni] = 1;
  }
  return 1;
}

static int contiguous_f32(const bd_cuda_view *v) {
  int64_t s = 1;
  if (v->dtype != BD_CT_F32) return 0;
  for (int d = v->rank - 1; d >= 0; --d) {
    if (v->dims[d] != 1 && v->strides[d] != s) return 0;
    s *= v->dims[d];
  }
  return 1;
}

/* Makes y = Transpose / Reshape & co. / Slice / Gather of one index of x a view of x's
 * buffer when its elements can be addressed in place: vkind 1 (FP32 in ONNX order: x's
 * buffer itself, usable by every reader) or 2 (strided: read through its view; a reader
 * that needs a buffer gets a conversion step). 0: y needs its own buffer. */
static int try_view(const bd_graph *g, bd_cuda_cplan *cp, const bd_node *nd) {
  const bd_plan *p = cp->plan;
  int x = nd->in[0], y = nd->out[0], r = p->rank[y];
  bd_cuda_view sv, nv;
  int64_t off = 0;
  if (x < 0 || cp->prim[x] < 0 || r < 1 || r > BD_CUDA_MAX_RANK) return 0;
  layout_of(cp, x, &sv);
  nv = sv;
  nv.rank = r;
  if (nd->op == BD_OP_SLICE) {
    if (sv.rank != r || !slice_strides(nd, &nv, &off)) return 0;
    for (int d = 0; d < r; ++d) nv.dims[d] = p->dims[y][d];
  } else if (nd->op == BD_OP_GATHER) { /* one index: that plane, its axis dropped */
    const bd_value *iv = &g->values[nd->in[1]];
    int a = nd->p.gather.axis < 0 ? nd->p.gather.axis + sv.rank : nd->p.gather.axis;
    if (!iv->data || iv->rank != 0 || a < 0 || a >= sv.rank || r != sv.rank - 1) return 0;
    int64_t idx = iv->dtype == BD_DT_I64 ? *(const int64_t *)iv->data
                  : iv->dtype == BD_DT_I32 ? *(const int32_t *)iv->data : -1 - sv.dims[a];
    if (idx < 0) idx += sv.dims[a];
    if (idx < 0 || idx >= sv.dims[a]) return 0;
    off = idx * sv.strides[a];
    for (int d = 0, e = 0; d < sv.rank; ++d)
      if (d != a) {
        nv.dims[e] = sv.dims[d];
        nv.strides[e++] = sv.strides[d];
      }
  } else if (nd->op == BD_OP_TRANSPOSE) {
    if (sv.rank != r) return 0;
    for (int d = 0; d < r; ++d) {
      int src = nd->p.transpose.n ? nd->p.transpose.perm[d] : r - 1 - d;
      if (src < 0 || src >= r) return 0;
      nv.dims[d] = sv.dims[src];
      nv.strides[d] = sv.strides[src];
    }
  } else {
    for (int d = 0; d < r; ++d) nv.dims[d] = p->dims[y][d];
    if (!reshape_strides(&sv, r, nv.dims, nv.strides)) return 0;
  }
  cp->same[y] = x;
  cp->vview[y] = nv;
  cp->vview[y].base = NULL;
  cp->voff[y] = (cp->vkind[x] == 2 ? cp->voff[x] : 0) + off; /* from view_base's buffer */
  if (contiguous_f32(&nv)) {
    cp->vkind[y] = 1;
    cp->prim[y] = BD_REP_F32;
    cp->buf[y][BD_REP_F32] = sv.base ? offset_ptr(sv.base, off, 4) : NULL; /* NULL: sizing */
  } else {
    cp->vkind[y] = 2;
    cp->prim[y] = nv.dtype == BD_CT_H16 ? BD_REP_H16 : BD_REP_F32;
  }
  return 1;
}

bd_status bd_cuda_plan_node(bd_cuda_be *b, bd_cuda_cplan *cp, int n, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_node *nd = &g->nodes[n];
  const bd_plan *p = cp->plan;
  bd_status st = BD_OK;
  const char *name = nd->name ? nd->name : "";
  if (nd->n_out < 1)
    return bd_err_set(err, BD_E_INVALID, "node '%s': no output", name);
  int y = nd->out[0];
  if (g->values[y].dtype != BD_DT_F32)
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): output dtype %s is not float",
                      name, bd_op_name(nd->op), bd_dtype_name(g->values[y].dtype));
  for (int k = 0; k < nd->n_in; ++k) {
    int v = nd->in[k];
    if (v < 0 || host_input(nd->op, k)) continue;
    if (cp->prim[v] < 0)
      return bd_err_set(err, BD_E_INTERNAL, "node '%s': input '%s' is not computed yet", name,
                        g->values[v].name);
  }
  if (nd->op == BD_OP_CONV && cp->twin_on[n] == 2) {
    /* Its twin's launch (an earlier step) writes its output; its step does nothing. */
    if (!cp->sizing) push(cp, BD_A_OP, n, y, cp->prim[y]);
    return BD_OK;
  }
  if (nd->op == BD_OP_RESIZE && cp->upsrc[y] >= 0) {
    /* Read upsampled by its convs (plan_upres): y is a view of its input, nothing runs. */
    const int x = nd->in[0];
    cp->same[y] = x;
    cp->vkind[y] = 3;
    cp->prim[y] = BD_REP_H16;
    cp->buf[y][BD_REP_H16] = cp->buf[x][BD_REP_H16]; /* NULL in the sizing pass */
    if (!cp->sizing) push(cp, BD_A_OP, n, y, BD_REP_H16);
    return BD_OK;
  }
  if ((is_view(nd->op) || nd->op == BD_OP_TRANSPOSE || nd->op == BD_OP_GATHER ||
       (nd->op == BD_OP_SLICE && cp->alias[y] < 0 && !cp->pad_to[y])) &&
      !g->values[y].is_output && try_view(g, cp, nd)) {
    /* No work: y reads x's buffer in place (the step stays, doing nothing). */
    if (!cp->sizing) push(cp, BD_A_OP, n, y, cp->prim[y]);
    return BD_OK;
  }
  switch (nd->op) {
  case BD_OP_CONV:
  case BD_OP_MAXPOOL:
  case BD_OP_RESIZE:
    if (p->rank[nd->in[0]] != 4 || p->rank[y] != 4)
      return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): only 4-D tensors", name,
                        bd_op_name(nd->op));
    st = need(cp, nd->in[0], BD_REP_H16, name, err);
    for (int t = 0; t < 2 && st == BD_OK && nd->op == BD_OP_CONV; ++t) {
      /* its residual (or what that upsamples, where the conv reads that), and where it
       * runs its twin too, the twin's */
      if (t && cp->twin_on[n] != 1) continue;
      const bd_node *c = t ? &g->nodes[b->twin[n]] : nd;
      if (c->n_in < 4 || c->in[3] < 0) continue;
      st = need(cp, bd_cuda_res_src(cp, c->in[3]), BD_REP_H16, name, err);
    }
    break;
  case BD_OP_RESHAPE: case BD_OP_FLATTEN: case BD_OP_SQUEEZE: case BD_OP_UNSQUEEZE:
  case BD_OP_IDENTITY: case BD_OP_CAST: case BD_OP_SOFTMAX: case BD_OP_GATHER:
    st = need(cp, nd->in[0], BD_REP_F32, name, err);
    break;
  case BD_OP_MATMUL:
    st = need(cp, nd->in[0], BD_REP_F32, name, err);
    if (st == BD_OK) st = need(cp, nd->in[1], BD_REP_F32, name, err);
    break;
  case BD_OP_RELU: case BD_OP_SIGMOID: case BD_OP_SILU: case BD_OP_EXP: case BD_OP_ADD:
  case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV: case BD_OP_CONCAT: case BD_OP_SLICE:
  case BD_OP_TRANSPOSE:
  case BD_OP_SOFTMAX_DOT: /* reads its input through any view: no FP32 copy of the logits */
    break;
  default:
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': op %s is not supported by the cuda backend",
                      name, bd_op_name(nd->op));
  }
  if (st != BD_OK) return st;
  if (is_view(nd->op) && cp->vkind[nd->in[0]] == 2 && cp->alias[y] < 0 &&
      !g->values[y].is_output) {
    /* A reshape of a strided view it cannot address in place (DAMO-YOLO's DFL output, H
     * and W transposed, then flattened): the conversion above materialises x in ONNX
     * order, and y is that buffer, reshaped - not a copy of it. */
    const int x = nd->in[0];
    cp->same[y] = x;
    cp->vkind[y] = 1;
    cp->prim[y] = BD_REP_F32;
    cp->voff[y] = 0;
    cp->buf[y][BD_REP_F32] = cp->buf[x][BD_REP_F32]; /* NULL in the sizing pass */
    if (cp->sizing) bd_cuda_extend_items(cp, x, cp->cur_step);
    else push(cp, BD_A_OP, n, y, BD_REP_F32);
    return BD_OK;
  }
  if (nd->op == BD_OP_GATHER) {
    const bd_value *iv = &g->values[nd->in[1]];
    if (!iv->data || (iv->dtype != BD_DT_I64 && iv->dtype != BD_DT_I32) ||
        bd_value_numel(iv) > 4096)
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "node '%s' (Gather): indices must be a small int constant", name);
  }
  st = assign_out(b, cp, y, value_h16(g, p, y) ? BD_REP_H16 : BD_REP_F32, err);
  if (st == BD_OK && nd->op == BD_OP_CONV && cp->twin_on[n] == 1) {
    /* the first of twins in one launch writes its twin's output too: from this step on */
    const int y2 = g->nodes[b->twin[n]].out[0];
    if (!value_h16(g, p, y) || !value_h16(g, p, y2))
      return bd_err_set(err, BD_E_INTERNAL, "node '%s': twin conv outputs not 16-bit", name);
    st = assign_out(b, cp, y2, BD_REP_H16, err);
  }
  if (st != BD_OK) return st;
  if (cp->sizing) {
    /* every buffer this node reads lives until now; a channel-padded conv's copies live
     * for this step only */
    for (int k = 0; k < nd->n_in; ++k)
      if (nd->in[k] >= 0 && !host_input(nd->op, k)) bd_cuda_extend_items(cp, nd->in[k], cp->cur_step);
    if (nd->op == BD_OP_CONV && cp->twin_on[n] == 1) { /* the launch reads its twin's residual */
      const bd_node *t = &g->nodes[b->twin[n]];
      if (t->n_in > 3 && t->in[3] >= 0) bd_cuda_extend_items(cp, t->in[3], cp->cur_step);
    }
    if (nd->op == BD_OP_CONV) {
      bd_cuda_conv_shape s;
      size_t pad[2];
      node_shape(b, cp, n, &s);
      if (bd_cuda_conv_layer_pad_bytes(&s, nd->p.conv.pad_b, nd->p.conv.pad_r, b->dnn != NULL,
                                       &pad[0], &pad[1]))
        for (int k = 0; k < 2; ++k)
          if (pad[k]) {
            bd_pack_item *it = &cp->items[cp->n_items];
            it->def = it->last = cp->cur_step;
            it->size = pad[k];
            cp->scratch[n][k] = cp->n_items++;
          }
    }
    return BD_OK;
  }
  if (nd->op == BD_OP_CONV) {
    bd_cuda_conv_shape s;
    size_t ws = 0;
    void *pad[2] = {NULL, NULL};
    node_shape(b, cp, n, &s);
    if (nd->n_in > 3 && nd->in[3] >= 0 && planned_pitch(cp, nd->in[3]) &&
        !(conv_caps(b, cp, nd) & BD_CONV_PITCH_R))
      return bd_err_set(err, BD_E_INTERNAL, "node '%s': conv residual in a Concat's buffer",
                        name);
    for (int k = 0; k < 2 && cp->arena; ++k)
      if (cp->scratch[n][k] >= 0) pad[k] = (char *)cp->arena + cp->items[cp->scratch[n][k]].off;
    if (b->dnn && !cp->probe) cp->probe_bytes = bd_cuda_probe_ws_alloc(&cp->probe);
    st = bd_cuda_conv_layer_new(b->dnn, &s, nd->p.conv.pad_b, nd->p.conv.pad_r,
                                cp->buf[nd->in[0]][BD_REP_H16], b->wbf[n],
                                cp->buf[y][BD_REP_H16], pad[0], pad[1], cp->probe,
                                cp->probe_bytes, &cp->layer[n], &ws, err);
    if (st == BD_OK && b->dnn && nd->n_in > 2 && nd->in[2] >= 0 && fuse_enabled() &&
        !cp->twin_on[n])
      st = bd_cuda_conv_layer_fuse(b->dnn, cp->layer[n], b->cdev[nd->in[2]],
                                   cp->buf[nd->in[0]][BD_REP_H16], b->wbf[n],
                                   cp->buf[y][BD_REP_H16], cp->probe, cp->probe_bytes, err);
    if (st != BD_OK) {
      bd_err_prefix(err, "node '%s'", name);
      return st;
    }
    if (ws > cp->ws_bytes) cp->ws_bytes = ws;
  }
  push(cp, BD_A_OP, n, y, cp->prim[y]);
  return BD_OK;
}

static size_t esize(const bd_cuda_view *v) { return v->dtype == BD_CT_H16 ? 2 : 4; }

static int64_t prod(const int64_t *d, int from, int to) {
  int64_t n = 1;
  for (int i = from; i < to; ++i) n *= d[i];
  return n;
}

static bd_status run_slice(bd_cuda_cplan *cp, const bd_node *nd, const bd_cuda_view *vo,
                           cudaStream_t s, bd_err *err) {
  bd_status st = BD_OK;
  bd_cuda_view vi;
  int64_t off = 0;
  view_any(cp, nd->in[0], &vi);
  if (!slice_strides(nd, &vi, &off))
    return bd_err_set(err, BD_E_INVALID, "node '%s' (Slice): bad axis or step", nd->name);
  vi.base = offset_ptr(vi.base, off, esize(&vi));
  BD_CU(bd_cuda_map(vo, &vi, BD_UN_ID, s));
out:
  return st;
}

static bd_status run_gather(bd_cuda_be *b, bd_cuda_cplan *cp, const bd_node *nd,
                            const bd_cuda_view *vo, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  bd_status st = BD_OK;
  int x = nd->in[0], r = p->rank[x], a = nd->p.gather.axis;
  if (a < 0) a += r;
  if (a < 0 || a >= r) return bd_err_set(err, BD_E_INVALID, "node '%s' (Gather): bad axis", nd->name);
  const bd_value *iv = &g->values[nd->in[1]];
  int64_t ni = bd_value_numel(iv);
  int64_t pre = prod(p->dims[x], 0, a), len = p->dims[x][a], post = prod(p->dims[x], a + 1, r);
  for (int64_t j = 0; j < ni; ++j) {
    int64_t idx = iv->dtype == BD_DT_I64 ? ((const int64_t *)iv->data)[j]
                                         : ((const int32_t *)iv->data)[j];
    if (idx < 0) idx += len;
    if (idx < 0 || idx >= len)
      return bd_err_set(err, BD_E_INVALID, "node '%s' (Gather): index out of range", nd->name);
    bd_cuda_view src = {offset_ptr(cp->buf[x][BD_REP_F32], idx * post, 4), BD_CT_F32, 2,
                        {pre, post}, {len * post, 1}};
    bd_cuda_view dst = {offset_ptr(vo->base, j * post, 4), BD_CT_F32, 2, {pre, post},
                        {ni * post, 1}};
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, b->stream));
  }
out:
  return st;
}

static bd_status run_matmul(bd_cuda_cplan *cp, const bd_node *nd, cudaStream_t s,
                            bd_err *err) {
  const bd_plan *p = cp->plan;
  bd_status st = BD_OK;
  int a = nd->in[0], bb = nd->in[1], y = nd->out[0];
  int ra = p->rank[a], rb = p->rank[bb];
  if (ra < 1 || rb < 1) return bd_err_set(err, BD_E_INVALID, "node '%s' (MatMul): scalar input", nd->name);
  int64_t m = ra >= 2 ? p->dims[a][ra - 2] : 1, k = p->dims[a][ra - 1];
  int64_t kb = rb >= 2 ? p->dims[bb][rb - 2] : p->dims[bb][0], n = rb >= 2 ? p->dims[bb][rb - 1] : 1;
  if (k != kb) return bd_err_set(err, BD_E_INVALID, "node '%s' (MatMul): K mismatch", nd->name);
  int64_t batch = (m > 0 && n > 0) ? numel_of(p, y) / (m * n) : 0;
  int64_t ba = ra > 2 ? prod(p->dims[a], 0, ra - 2) : 1, bbn = rb > 2 ? prod(p->dims[bb], 0, rb - 2) : 1;
  int64_t as = ba == batch ? m * k : (ba == 1 ? 0 : -1), bs = bbn == batch ? k * n : (bbn == 1 ? 0 : -1);
  if (as < 0 || bs < 0)
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (MatMul): partial batch broadcast", nd->name);
  BD_CU(bd_cuda_matmul_f32(batch, m, k, n, cp->buf[a][BD_REP_F32], as, cp->buf[bb][BD_REP_F32],
                           bs, cp->buf[y][BD_REP_F32], s));
out:
  return st;
}

/* Copies n Concat pieces of `elems` values in all (ins of one dtype): in one launch where
 * bd_cuda_map would take its generic path anyway (FP32 to FP32: the head's box Concats,
 * 10-17 us for three launches on the H100 at batch 1 and 32) or where they are small,
 * under BD_CONCAT_ONE_LAUNCH values (the launches cost more than the bytes); else one
 * launch each (bd_cuda_map's 16-byte vector paths for 16-bit pieces). */
#define BD_CONCAT_ONE_LAUNCH (1 << 20)
static cudaError_t copy_pieces(const bd_cuda_view *outs, const bd_cuda_view *ins, int n,
                               int64_t elems, cudaStream_t s) {
  const int f32 = ins[0].dtype == BD_CT_F32 && outs[0].dtype == BD_CT_F32;
  if (n > 1 && (f32 || elems <= BD_CONCAT_ONE_LAUNCH))
    return bd_cuda_map_multi(n, outs, ins, BD_UN_ID, s);
  for (int k = 0; k < n; ++k) {
    cudaError_t e = bd_cuda_map(&outs[k], &ins[k], BD_UN_ID, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

/* Node n's work (action i). */
static bd_status run_op(bd_cuda_be *b, bd_cuda_cplan *cp, int n, int i, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_node *nd = &g->nodes[n];
  const bd_plan *p = cp->plan;
  cudaStream_t s = b->stream;
  bd_status st = BD_OK;
  int x = nd->in[0], y = nd->out[0];
  bd_cuda_view vo, va, vb, t;
  if (cp->vkind[y]) return BD_OK; /* a view of x: nothing to compute */
  view_of(cp, y, cp->prim[y], &vo);
  switch (nd->op) {
  case BD_OP_CONV: {
    const float *bias = NULL;
    const void *r = NULL;
    if (cp->twin_on[n] == 2) return BD_OK; /* its twin's launch wrote y */
    if (cp->twin_on[n] == 1) { /* both twins: stacked weights and biases (residuals: shape) */
      bias = (const float *)b->tbias[n];
    } else if (nd->n_in > 2 && nd->in[2] >= 0) {
      bias = b->cdev[nd->in[2]];
      if (!bias) return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': bias is not a constant", nd->name);
    }
    if (nd->n_in > 3 && nd->in[3] >= 0) r = cp->buf[nd->in[3]][BD_REP_H16]; /* the first's */
    if (cp->rd_fusing && i == cp->rd_fuse) { /* the input's layout read by the conv itself */
      const int v = g->inputs[0];
      const int64_t *d = p->dims[v];
      return bd_cuda_conv_layer_run_layout(cp->layer[n], cp->buf[v][BD_REP_F32], (int)d[2],
                                           (int)d[3], &cp->rd_lo, b->wbf[n], bias, r,
                                           cp->buf[y][BD_REP_H16], s, err);
    }
    void *ws = cp->ws ? (char *)cp->ws + (cp->ws_slot ? cp->ws_slot[i] : 0) * cp->ws_stride : NULL;
    return bd_cuda_conv_layer_run(b->dnn, cp->layer[n], cp->buf[x][BD_REP_H16], b->wbf[n],
                                  bias, r, cp->buf[y][BD_REP_H16], ws, cp->ws_bytes, s, err);
  }
  case BD_OP_RELU: case BD_OP_SIGMOID: case BD_OP_SILU: case BD_OP_EXP: {
    int u = nd->op == BD_OP_RELU ? BD_UN_RELU
            : nd->op == BD_OP_SIGMOID ? BD_UN_SIGMOID
            : nd->op == BD_OP_SILU ? BD_UN_SILU : BD_UN_EXP;
    view_any(cp, x, &va);
    BD_CU(bd_cuda_map(&vo, &va, u, s));
    break;
  }
  case BD_OP_ADD: case BD_OP_SUB: case BD_OP_MUL: case BD_OP_DIV: {
    int op = nd->op == BD_OP_ADD ? BD_BIN_ADD
             : nd->op == BD_OP_SUB ? BD_BIN_SUB
             : nd->op == BD_OP_MUL ? BD_BIN_MUL : BD_BIN_DIV;
    view_any(cp, nd->in[0], &t);
    bcast(&t, t.rank, &vo, &va);
    view_any(cp, nd->in[1], &t);
    bcast(&t, t.rank, &vo, &vb);
    BD_CU(bd_cuda_binary(&vo, &va, &vb, op, s));
    break;
  }
  case BD_OP_CONCAT: {
    /* The pieces not written in place by their producers are copied, up to
     * BD_CUDA_MAP_MULTI of one dtype at a time (copy_pieces). */
    bd_cuda_view outs[BD_CUDA_MAP_MULTI], ins[BD_CUDA_MAP_MULTI];
    int a = nd->p.concat.axis, nc = 0;
    int64_t off = 0, elems = 0;
    for (int k = 0; k < nd->n_in; ++k) {
      t = vo;
      t.dims[a] = p->dims[nd->in[k]][a];
      t.base = offset_ptr(vo.base, off * vo.strides[a], esize(&vo));
      off += t.dims[a];
      if (cp->alias[nd->in[k]] == y) continue; /* its producer wrote it in place */
      view_any(cp, nd->in[k], &va);
      if (nc == BD_CUDA_MAP_MULTI || (nc && va.dtype != ins[0].dtype)) {
        BD_CU(copy_pieces(outs, ins, nc, elems, s));
        nc = 0;
        elems = 0;
      }
      outs[nc] = t;
      ins[nc++] = va;
      elems += numel_of(p, nd->in[k]);
    }
    BD_CU(copy_pieces(outs, ins, nc, elems, s));
    break;
  }
  case BD_OP_MAXPOOL: {
    const bd_pool_params *pp = &nd->p.pool;
    const int64_t *xd = p->dims[x], *yd = p->dims[y];
    BD_CU(bd_cuda_maxpool_nhwc((int)xd[0], (int)xd[2], (int)xd[3], (int)xd[1], (int)yd[2],
                               (int)yd[3], pp->kh, pp->kw, pp->sh, pp->sw, pp->pad_t, pp->pad_l,
                               pitch_of(cp, x), pitch_of(cp, y), cp->buf[x][BD_REP_H16], vo.base,
                               s));
    break;
  }
  case BD_OP_RESIZE: {
    const bd_resize_params *rp = &nd->p.resize;
    const int64_t *xd = p->dims[x], *yd = p->dims[y];
    BD_CU(bd_cuda_resize_nhwc((int)xd[0], (int)xd[2], (int)xd[3], (int)xd[1], (int)yd[2],
                              (int)yd[3], rp->mode, rp->coord, rp->nearest, rp->scale_h,
                              rp->scale_w, pitch_of(cp, x), pitch_of(cp, y),
                              cp->buf[x][BD_REP_H16], vo.base, s));
    break;
  }
  case BD_OP_SLICE:
    return run_slice(cp, nd, &vo, s, err);
  case BD_OP_RESHAPE: case BD_OP_FLATTEN: case BD_OP_SQUEEZE: case BD_OP_UNSQUEEZE:
  case BD_OP_IDENTITY: case BD_OP_CAST:
    if (vo.base != cp->buf[x][BD_REP_F32])
      BD_CU(cudaMemcpyAsync(vo.base, cp->buf[x][BD_REP_F32], (size_t)numel_of(p, y) * 4,
                            cudaMemcpyDeviceToDevice, s));
    break;
  case BD_OP_TRANSPOSE: {
    view_any(cp, x, &va);
    t = va;
    int r = va.rank;
    for (int d = 0; d < r; ++d) {
      int src = nd->p.transpose.n ? nd->p.transpose.perm[d] : r - 1 - d;
      if (src < 0 || src >= r)
        return bd_err_set(err, BD_E_INVALID, "node '%s' (Transpose): bad perm", nd->name);
      t.strides[d] = va.strides[src];
      t.dims[d] = va.dims[src];
    }
    BD_CU(bd_cuda_map(&vo, &t, BD_UN_ID, s));
    break;
  }
  case BD_OP_SOFTMAX: {
    int r = p->rank[x], a = nd->p.softmax.axis;
    if (a < 0) a += r;
    if (a < 0 || a >= r) return bd_err_set(err, BD_E_INVALID, "node '%s' (Softmax): bad axis", nd->name);
    int64_t outer = prod(p->dims[x], 0, a), len, inner;
    if (nd->p.softmax.opset < 13) {
      len = prod(p->dims[x], a, r);
      inner = 1;
    } else {
      len = p->dims[x][a];
      inner = prod(p->dims[x], a + 1, r);
    }
    BD_CU(bd_cuda_softmax_f32(outer, len, inner, cp->buf[x][BD_REP_F32], vo.base, s));
    break;
  }
  case BD_OP_SOFTMAX_DOT: {
    const float *w = nd->n_in > 1 && nd->in[1] >= 0 ? b->cdev[nd->in[1]] : NULL;
    if (!w) return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': P is not a constant", nd->name);
    view_any(cp, x, &va);
    BD_CU(bd_cuda_softmax_dot(&vo, &va, nd->p.softmax.axis, w, s));
    break;
  }
  case BD_OP_MATMUL:
    return run_matmul(cp, nd, s, err);
  case BD_OP_GATHER:
    return run_gather(b, cp, nd, &vo, err);
  default:
    return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s': op %s", nd->name, bd_op_name(nd->op));
  }
out:
  return st;
}

int bd_cuda_rep_read(const bd_cuda_cplan *cp, int v) {
  int r = rep_any(cp, v);
  return r >= 0 ? r : cp->prim[v];
}

/* What a conversion of v reads: its primary representation, or for a strided view
 * materialised for a buffer reader, the view. */
static void convert_src(const bd_cuda_cplan *cp, int v, bd_cuda_view *o) {
  if (cp->vkind[v] == 2)
    view_src(cp, v, o);
  else
    view_of(cp, v, cp->prim[v], o);
}

bd_status bd_cuda_enqueue_action(bd_cuda_be *b, bd_cuda_cplan *cp, int i, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_cuda_action *a = &cp->acts[i];
  bd_status st = BD_OK;
  bd_cuda_view src, dst;
  switch (a->kind) {
  case BD_A_OP:
    st = run_op(b, cp, a->node, i, err);
    if (st != BD_OK)
      bd_err_prefix(err, "node '%s' (%s)", g->nodes[a->node].name,
                    bd_op_name(g->nodes[a->node].op));
    break;
  case BD_A_CONVERT:
    convert_src(cp, a->value, &src);
    view_of(cp, a->value, a->rep, &dst);
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, b->stream));
    break;
  case BD_A_LAYOUT: {
    const int64_t *d = cp->plan->dims[a->value];
    BD_CU(bd_cuda_layout_f32_h16(cp->buf[a->value][BD_REP_F32], (int)d[0], (int)d[2], (int)d[3],
                                 &cp->rd_lo, cp->rd_dst, b->stream));
    break;
  }
  case BD_A_ZERO:
    BD_CU(cudaMemsetAsync(cp->buf[a->value][a->rep], 0, bd_cuda_rep_bytes(cp, a->value, a->rep),
                          b->stream));
    break;
  default: /* BD_A_OUTPUT */
    view_any(cp, a->value, &src);
    view_of(cp, a->value, BD_REP_F32, &dst);
    dst.base = cp->d_out[a->out_index];
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, b->stream));
    break;
  }
out:
  return st;
}

/* ---- What each action reads and writes (bd_cuda_dag.c orders the actions by it) ---- */

/* The bytes view v covers: its lowest to its highest element; a 16-bit NHWC view whose
 * pixels are further apart than its channels (a Concat piece, a channel-padded value)
 * as a channel slice: span bytes (its channels, rounded up to 8: a padded conv reads the
 * zeroed pad channels too) at the start of every pitch. */
static void fp_view(const bd_cuda_view *v, int write, bd_cuda_fp *f) {
  const int64_t es = (int64_t)esize(v);
  int64_t lo = 0, hi = 0;
  memset(f, 0, sizeof(*f));
  f->write = write;
  for (int d = 0; d < v->rank; ++d) {
    if (v->dims[d] <= 0) return; /* empty: lo == hi, no bytes */
    const int64_t e = (v->dims[d] - 1) * v->strides[d];
    if (e < 0) lo += e;
    else hi += e;
  }
  f->lo = (uintptr_t)v->base + (uintptr_t)(lo * es);
  f->hi = (uintptr_t)v->base + (uintptr_t)((hi + 1) * es);
  if (v->dtype == BD_CT_H16 && v->rank == 4 && v->strides[1] == 1 &&
      v->strides[3] > v->dims[1] && v->strides[2] == v->dims[3] * v->strides[3] &&
      v->strides[0] == v->dims[2] * v->strides[2]) {
    const int64_t span = (v->dims[1] + 7) / 8 * 8;
    if (span < v->strides[3]) {
      f->pitch = v->strides[3] * es;
      f->span = span * es;
    }
  }
}

static void fp_bytes(const void *p, size_t n, int write, bd_cuda_fp *f) {
  memset(f, 0, sizeof(*f));
  f->lo = (uintptr_t)p;
  f->hi = (uintptr_t)p + n;
  f->write = write;
}

/* Every buffer value v is read from: each representation it has, and the buffer a
 * strided view reads. */
static int fp_value_reads(const bd_cuda_cplan *cp, int v, bd_cuda_fp *f) {
  bd_cuda_view t;
  int n = 0;
  if (cp->vkind[v] == 3) return fp_value_reads(cp, cp->same[v], f); /* read upsampled */
  for (int rep = 0; rep < 2; ++rep)
    if (cp->buf[v][rep]) {
      view_of(cp, v, rep, &t);
      fp_view(&t, 0, &f[n++]);
    }
  if (cp->vkind[v] == 2) {
    view_src(cp, v, &t);
    if (t.base) fp_view(&t, 0, &f[n++]);
  }
  return n;
}

/* The ranges an op action of node nd may give: per input up to 3 (fp_value_reads); the
 * output, a twin's output and residual (up to 3), the FP32 input, two scratch copies. */
static int op_fps_max(const bd_node *nd) { return 3 * nd->n_in + 8; }

int bd_cuda_action_fps_cap(const bd_graph *g) {
  int cap = 8; /* and the other actions' at most 4 */
  for (int i = 0; i < g->n_nodes; ++i)
    if (op_fps_max(&g->nodes[i]) > cap) cap = op_fps_max(&g->nodes[i]);
  return cap;
}

int bd_cuda_action_fps(const bd_cuda_be *b, const bd_cuda_cplan *cp, int i, bd_cuda_fp *f,
                       int cap) {
  const bd_graph *g = b->base.graph;
  const bd_cuda_action *a = &cp->acts[i];
  bd_cuda_view t;
  int n = 0;
  switch (a->kind) {
  case BD_A_OP: {
    const bd_node *nd = &g->nodes[a->node];
    const int y = nd->out[0];
    if (cp->vkind[y]) return 0; /* a view: nothing runs */
    if (nd->op == BD_OP_CONV && cp->twin_on[a->node] == 2) return 0; /* its twin's launch */
    if (cap < op_fps_max(nd)) return -1;
    for (int k = 0; k < nd->n_in; ++k)
      if (nd->in[k] >= 0 && !host_input(nd->op, k)) n += fp_value_reads(cp, nd->in[k], &f[n]);
    view_of(cp, y, cp->prim[y], &t);
    fp_view(&t, 1, &f[n++]);
    if (nd->op == BD_OP_CONV && cp->twin_on[a->node] == 1) { /* and its twin's output */
      const bd_node *tw = &g->nodes[b->twin[a->node]];
      view_of(cp, tw->out[0], BD_REP_H16, &t);
      fp_view(&t, 1, &f[n++]);
      if (tw->n_in > 3 && tw->in[3] >= 0) /* and residual */
        n += fp_value_reads(cp, tw->in[3], &f[n]);
    }
    if (i == cp->rd_fuse && cp->rd_fuse > 0) { /* and the FP32 input, where it reads that */
      const int v = g->inputs[0];
      fp_bytes(cp->buf[v][BD_REP_F32], (size_t)numel_of(cp->plan, v) * 4, 0, &f[n++]);
    }
    /* a padded conv's copies (its workspace slot: bd_cuda_plan_dag) */
    for (int k = 0; nd->op == BD_OP_CONV && k < 2 && cp->arena; ++k)
      if (cp->scratch[a->node][k] >= 0) {
        const bd_pack_item *it = &cp->items[cp->scratch[a->node][k]];
        fp_bytes((char *)cp->arena + it->off, it->size, 1, &f[n++]);
      }
    return n;
  }
  case BD_A_CONVERT:
    if (cap < 2) return -1;
    convert_src(cp, a->value, &t);
    fp_view(&t, 0, &f[n++]);
    view_of(cp, a->value, a->rep, &t);
    fp_view(&t, 1, &f[n++]);
    return n;
  case BD_A_ZERO:
    if (cap < 1) return -1;
    fp_bytes(cp->buf[a->value][a->rep], bd_cuda_rep_bytes(cp, a->value, a->rep), 1, &f[n++]);
    return n;
  case BD_A_OUTPUT:
    if (cap < 4) return -1;
    n = fp_value_reads(cp, a->value, f);
    fp_bytes(cp->d_out[a->out_index], cp->out_bytes[a->out_index], 1, &f[n++]);
    return n;
  default: /* BD_A_LAYOUT (the first action): everything after it follows it */
    return -1;
  }
}

bd_status bd_cuda_enqueue(bd_cuda_be *b, bd_cuda_cplan *cp, int io, bd_err *err) {
  const bd_graph *g = b->base.graph;
  bd_status st = BD_OK;
  for (int i = 0; io && i < g->n_inputs; ++i)
    BD_CU(cudaMemcpyAsync(cp->d_in[i], cp->h_in[i], cp->in_bytes[i], cudaMemcpyHostToDevice,
                          b->stream));
  /* the layout read by its conv (rd_fuse): the layout action left out */
  cp->rd_fusing = cp->rd_skip != NULL; /* set with rd_fuse */
  st = bd_cuda_enqueue_actions(b, cp, cp->rd_fusing ? cp->rd_skip : NULL, err);
  cp->rd_fusing = 0;
  if (st != BD_OK) goto out;
  for (int i = 0; io && i < g->n_outputs; ++i)
    BD_CU(cudaMemcpyAsync(cp->h_out[i], cp->d_out[i], cp->out_bytes[i], cudaMemcpyDeviceToHost,
                          b->stream));
out:
  return st;
}

/* ---- Device detection: pre-processing straight into the network's first 16-bit tensor ---- */

/* 1 when the 16-bit buffer of w may be written before the first step: no other arena
 * item sharing its bytes is live before w's own first step (the FP32 input, which the
 * detection runs then never write, aside). */
static int written_early_ok(const bd_cuda_cplan *cp, int w, int in) {
  const int i = cp->item[w][BD_REP_H16];
  if (i < 0 || !cp->arena) return 1; /* its own allocation */
  const bd_pack_item *a = &cp->items[i];
  for (int j = 0; j < cp->n_items; ++j) {
    const bd_pack_item *o = &cp->items[j];
    if (j == i || j == cp->item[in][BD_REP_F32] || o->def >= a->def) continue;
    if (o->off < a->off + a->size && a->off < o->off + o->size) return 0;
  }
  return 1;
}

/* The action of kind on value v (BD_A_CONVERT, BD_A_ZERO) or node n (BD_A_OP); -1: none. */
static int find_action(const bd_cuda_cplan *cp, int kind, int v, int n) {
  for (int i = 0; i < cp->n_acts; ++i)
    if (cp->acts[i].kind == kind &&
        (kind == BD_A_OP ? cp->acts[i].node == n : cp->acts[i].value == v))
      return i;
  return -1;
}

/* The input's own 16-bit NHWC copy, when only convs, max-pools and resizes read the
 * input (they read that copy): its conversion is left out. */
static int direct_plain(const bd_graph *g, const bd_cuda_cplan *cp, int v,
                        bd_cuda_prep_layout *lo, void **dst, unsigned char *skip) {
  const int64_t *d = cp->plan->dims[v];
  const int ai = find_action(cp, BD_A_CONVERT, v, -1);
  if (ai < 0 || cp->acts[ai].rep != BD_REP_H16 || cp->vkind[v] != 0 || cp->alias[v] >= 0 ||
      cp->pad_to[v] || !cp->buf[v][BD_REP_H16] || !written_early_ok(cp, v, v))
    return 0;
  for (int n = 0; n < g->n_nodes; ++n) {
    const bd_node *nd = &g->nodes[n];
    for (int k = 0; k < nd->n_in; ++k) {
      if (nd->in[k] != v) continue;
      int conv_in = nd->op == BD_OP_CONV && (k == 0 || k == 3);
      int first_in = (nd->op == BD_OP_MAXPOOL || nd->op == BD_OP_RESIZE) && k == 0;
      if (!conv_in && !first_in) return 0;
    }
  }
  *lo = (bd_cuda_prep_layout){.stride = 1, .out_w = (int)d[3], .out_h = (int)d[2], .pitch = 3,
                              .n_pieces = 1};
  lo->piece[0].nc = 3;
  *dst = cp->buf[v][BD_REP_H16];
  skip[ai] = 1;
  return 1;
}

/* A Focus stem's space-to-depth Concat: the input read only through Slices (strided
 * views of it, then Slices written in place as the pieces of one Concat, which has no
 * other inputs). Each piece's element map over the FP32 NCHW input, as run_slice reads
 * it, must be channels c0.., rows oy + S i, columns ox + S j. Left out: the pieces'
 * Slices and the Concat's zeroing (the layout writes its padding channels). */
static int direct_focus(const bd_graph *g, const bd_cuda_cplan *cp, int v,
                        bd_cuda_prep_layout *lo, void **dst, unsigned char *skip) {
  const int64_t H = cp->plan->dims[v][2], W = cp->plan->dims[v][3], HW = H * W;
  int seen[64], n_seen = 0, pieces[BD_PREP_MAX_PIECES], n_pieces = 0, u = -1;
  seen[n_seen++] = v;
  for (int s = 0; s < n_seen; ++s) { /* v and its strided views: every reader a Slice */
    const int x = seen[s];
    if (g->values[x].is_output || find_action(cp, BD_A_CONVERT, x, -1) >= 0) return 0;
    for (int n = 0; n < g->n_nodes; ++n) {
      const bd_node *nd = &g->nodes[n];
      for (int k = 0; k < nd->n_in; ++k) {
        if (nd->in[k] != x) continue;
        const int y = nd->out[0];
        if (nd->op != BD_OP_SLICE || k != 0 || g->values[y].is_output) return 0;
        if (cp->vkind[y] == 2) {
          if (n_seen == 64) return 0;
          seen[n_seen++] = y;
        } else if (cp->alias[y] >= 0 && (u < 0 || cp->alias[y] == u) &&
                   cp->prim[y] == BD_REP_H16 && n_pieces < BD_PREP_MAX_PIECES) {
          u = cp->alias[y];
          pieces[n_pieces++] = n;
        } else {
          return 0;
        }
      }
    }
  }
  if (u < 0 || g->values[u].producer < 0 || !cp->buf[u][BD_REP_H16] ||
      !written_early_ok(cp, u, v))
    return 0;
  const bd_node *cat = &g->nodes[g->values[u].producer];
  if (cat->op != BD_OP_CONCAT || cat->n_in != n_pieces || cp->plan->rank[u] != 4) return 0;
  for (int k = 0; k < n_pieces; ++k) { /* in the Concat's order */
    int j = k;
    while (j < n_pieces && g->nodes[pieces[j]].out[0] != cat->in[k]) ++j;
    if (j == n_pieces) return 0;
    int t = pieces[k];
    pieces[k] = pieces[j];
    pieces[j] = t;
  }
  const int64_t *ud = cp->plan->dims[u];
  *lo = (bd_cuda_prep_layout){.out_w = (int)ud[3], .out_h = (int)ud[2],
                              .pitch = (int)planned_pitch(cp, cat->in[0]),
                              .n_pieces = n_pieces};
  for (int k = 0; k < n_pieces; ++k) {
    const bd_node *nd = &g->nodes[pieces[k]];
    const int y = nd->out[0];
    const int64_t *yd = cp->plan->dims[y];
    bd_cuda_view vi;
    int64_t off = 0;
    view_any(cp, nd->in[0], &vi);
    if (cat->in[k] != y || cp->pad_to[y] || vi.dtype != BD_CT_F32 || vi.rank != 4 ||
        !slice_strides(nd, &vi, &off) || (char *)vi.base < (char *)cp->buf[v][BD_REP_F32])
      return 0;
    off += ((char *)vi.base - (char *)cp->buf[v][BD_REP_F32]) / 4;
    const int64_t S = vi.strides[3], c0 = off / HW, oy = off % HW / W, ox = off % W;
    if (S < 1 || S > 8 || vi.strides[2] != S * W || vi.strides[1] != HW ||
        vi.strides[0] != 3 * HW || yd[2] != ud[2] || yd[3] != ud[3] || c0 + yd[1] > 3 ||
        (k && S != lo->stride) || planned_pitch(cp, y) != lo->pitch)
      return 0;
    lo->stride = (int)S;
    lo->piece[k].oy = (int)oy;
    lo->piece[k].ox = (int)ox;
    lo->piece[k].c0 = (int)c0;
    lo->piece[k].nc = (int)yd[1];
    lo->piece[k].ch = (int)cp->alias_ch[y];
  }
  if (!bd_cuda_prep_layout_ok(lo) || !bd_cuda_prep_layout_inside(lo, (int)H, (int)W)) return 0;
  for (int k = 0; k < n_pieces; ++k) {
    int ai = find_action(cp, BD_A_OP, -1, pieces[k]);
    if (ai < 0) return 0;
    skip[ai] = 1;
  }
  const int zi = find_action(cp, BD_A_ZERO, u, -1);
  if (zi >= 0) skip[zi] = 1;
  *dst = cp->buf[u][BD_REP_H16];
  return 1;
}

/* On unless BATCHDET_CUDA_PREP16=0: the network's first 16-bit tensor written straight
 * from the input (detection's pre-processing, the raw path's layout action). */
int bd_cuda_prep16_enabled(void) {
  const char *e = getenv("BATCHDET_CUDA_PREP16");
  return !e || strcmp(e, "0") != 0;
}

/* Whether action a is a Concat whose pieces were all written in place (it runs nothing). */
static int concat_in_place(const bd_graph *g, const bd_cuda_cplan *cp, const bd_cuda_action *a) {
  if (a->kind != BD_A_OP || g->nodes[a->node].op != BD_OP_CONCAT) return 0;
  const bd_node *nd = &g->nodes[a->node];
  for (int k = 0; k < nd->n_in; ++k)
    if (cp->alias[nd->in[k]] != nd->out[0]) return 0;
  return 1;
}

static int spans_meet(const char *a, size_t na, const char *b, size_t nb) {
  return a < b + nb && b < a + na;
}

/* After bd_cuda_raw_direct placed the layout action (action 0, writing o_bytes at
 * cp->rd_dst from the FP32 input at in): where exactly one action reads any of those
 * bytes before another writes some, and it is a conv whose layer can read the input
 * through the layout itself (bd_cuda_conv_layer_takes_layout: the patch tile) and whose
 * output does not meet the input, the raw path runs that conv from the input and leaves
 * the layout action out (cp->rd_fuse, rd_skip). Off with BATCHDET_CUDA_FUSE_LAYOUT=0. No
 * memory is freed: the tensor stays in the plan for detection, whose pre-processing
 * writes it. */
static void fuse_layout(const bd_cuda_be *b, bd_cuda_cplan *cp, const char *in, size_t in_bytes,
                        size_t o_bytes) {
  const bd_graph *g = b->base.graph;
  const char *o = cp->rd_dst, *e = getenv("BATCHDET_CUDA_FUSE_LAYOUT");
  int reader = -1;
  const int cap = bd_cuda_action_fps_cap(g);
  if ((e && strcmp(e, "0") == 0) || cp->n_acts < 2) return;
  bd_cuda_fp *f = malloc(sizeof(*f) * (size_t)cap);
  if (!f) return; /* runs unfused */
  /* Readers of the bytes until an action writes some of them (the tensor is dead by
   * then: the arena reuses bytes only after their value's last reader). */
  for (int i = 1, done = 0; i < cp->n_acts && reader != -2 && !done; ++i) {
    if (concat_in_place(g, cp, &cp->acts[i])) continue; /* runs nothing */
    const int k = bd_cuda_action_fps(b, cp, i, f, cap);
    if (k < 0) reader = -2; /* cannot tell what it reads */
    for (int j = 0; j < k && reader != -2; ++j) {
      if (!spans_meet((const char *)f[j].lo, f[j].hi - f[j].lo, o, o_bytes)) continue;
      if (f[j].write)
        done = 1;
      else
        reader = reader >= 0 && reader != i ? -2 : i; /* -2: a second reader */
    }
  }
  free(f);
  if (reader < 0 || cp->acts[reader].kind != BD_A_OP) return;
  const int n = cp->acts[reader].node;
  const bd_node *nd = &g->nodes[n];
  if (nd->op != BD_OP_CONV || cp->twin_on[n] || cp->buf[nd->in[0]][BD_REP_H16] != cp->rd_dst)
    return; /* twins read the tensor both: their one launch reads it as it lies */
  const int64_t *d = cp->plan->dims[g->inputs[0]];
  const char *y = cp->buf[nd->out[0]][BD_REP_H16];
  if (!bd_cuda_conv_layer_takes_layout(cp->layer[n], &cp->rd_lo, (int)d[2], (int)d[3]) || !y ||
      spans_meet(y, bd_cuda_rep_bytes(cp, nd->out[0], BD_REP_H16), in, in_bytes))
    return;
  if (!(cp->rd_skip = calloc((size_t)cp->n_acts + 1, 1))) return; /* runs unfused */
  cp->rd_skip[0] = 1;
  cp->rd_fuse = reader;
}

bd_status bd_cuda_raw_direct(const bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  const bd_graph *g = b->base.graph;
  bd_cuda_prep_layout lo;
  void *dst = NULL;
  cp->rd_direct = 0;
  cp->rd_fuse = -1;
  free(cp->rd_skip);
  cp->rd_skip = NULL;
  if (!bd_cuda_prep16_enabled() || cp->n_acts < 1) return BD_OK;
  unsigned char *skip = calloc((size_t)cp->n_acts + 1, 1);
  if (!skip) return bd_err_set(err, BD_E_NOMEM, "cuda prepare: out of memory");
  if (bd_cuda_prep_direct(b, cp, &lo, &dst, skip)) {
    const int v = g->inputs[0];
    const int64_t *d = cp->plan->dims[v];
    const char *in = cp->buf[v][BD_REP_F32], *o = dst;
    const size_t in_bytes = (size_t)numel_of(cp->plan, v) * 4;
    const size_t o_bytes = bd_cuda_prep_layout_bytes(&lo, d[0]);
    /* the kernel reads the input while it writes: the two must not share a byte */
    if (in && o && (o + o_bytes <= in || in + in_bytes <= o)) {
      int w = 0; /* at least one action goes: the layout action fits */
      for (int i = 0; i < cp->n_acts; ++i)
        if (!skip[i]) cp->acts[w++] = cp->acts[i];
      memmove(cp->acts + 1, cp->acts, sizeof(*cp->acts) * (size_t)w);
      cp->n_acts = w + 1;
      cp->acts[0] = (bd_cuda_action){BD_A_LAYOUT, -1, v, BD_REP_H16, -1};
      cp->rd_direct = 1;
      cp->rd_lo = lo;
      cp->rd_dst = dst;
      fuse_layout(b, cp, in, in_bytes, o_bytes);
    }
  }
  free(skip);
  return BD_OK;
}

int bd_cuda_prep_direct(const bd_cuda_be *b, const bd_cuda_cplan *cp, bd_cuda_prep_layout *lo,
                        void **dst, unsigned char *skip) {
  const bd_graph *g = b->base.graph;
  if (g->n_inputs != 1) return 0;
  const int v = g->inputs[0];
  if (cp->plan->rank[v] != 4 || cp->plan->dims[v][1] != 3 || g->values[v].is_output) return 0;
  memset(skip, 0, (size_t)cp->n_acts);
  /* direct_plain marks skip only when it succeeds; direct_focus may fail after marking. */
  if (direct_plain(g, cp, v, lo, dst, skip) || direct_focus(g, cp, v, lo, dst, skip)) return 1;
  memset(skip, 0, (size_t)cp->n_acts);
  return 0;
}
