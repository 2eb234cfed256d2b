/* bd_compile: the backend-independent passes, in order: shape inference with constant
 * folding (one forward pass at B0), no-op removal, BatchNorm folding, constant scale
 * folding, RepConv merge, Conv activation/residual fusion, standalone SiLU, SPP pool
 * chaining, the DFL integral (SoftmaxDot), Transposes sunk, per-coordinate box decodes
 * folded, Muls by constants merged, dead-node removal, compaction. Patterns are matched
 * by structure and shapes only, never by names. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_compile.h"
#include "bd_compile_int.h"

#define NAME(nd) ((nd)->name && *(nd)->name ? (nd)->name : "?")

static bd_shape vshape(const bd_value *v) {
  bd_shape s;
  s.rank = v->rank;
  for (int i = 0; i < v->rank && i < BD_MAX_RANK; i++) s.d[i] = v->dims[i];
  return s;
}

/* ---------- forward pass: resolve, infer, fold ---------- */
static bd_status forward(bd_graph *g, int fold, int *folded, bd_err *err) {
  bd_infer_ctx cx = {g, 0, g->batch0, g->batch0};
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    bd_shape ins[8], out, *pin = ins;
    bd_status st = BD_OK;
    int pending = 0, all_const = 1, bdep = 0;
    for (int k = 0; k < nd->n_in; k++) {
      int v = nd->in[k];
      if (v < 0) continue;
      if (g->values[v].rank < 0)
        return bd_err_set(err, BD_E_INTERNAL, "node '%s' (%s): input '%s' has no shape", NAME(nd),
                          bd_op_name(nd->op), g->values[v].name);
    }
    if ((st = bd_resolve_params(g, nd, &pending, err))) return st;
    if (pending)
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "node '%s' (%s): an input that must be constant is computed at run time",
                        NAME(nd), bd_op_name(nd->op));
    if (nd->n_in > 8 && !(pin = malloc(sizeof *pin * (size_t)nd->n_in)))
      return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    for (int k = 0; k < nd->n_in; k++) {
      int v = nd->in[k];
      if (v < 0) {
        pin[k].rank = -1;
        continue;
      }
      pin[k] = vshape(&g->values[v]);
      if (!g->values[v].data) all_const = 0;
      bdep |= g->values[v].batch_dep;
    }
    st = bd_infer_node(&cx, nd, pin, &out, err);
    if (pin != ins) free(pin);
    if (st) return st;
    bd_value *o = &g->values[nd->out[0]];
    o->rank = out.rank;
    for (int k = 0; k < out.rank; k++) o->dims[k] = out.d[k];
    o->dtype = bd_infer_dtype(g, nd);
    o->batch_dep = (uint8_t)(nd->op == BD_OP_SHAPE ? 0 : bdep);
    if (fold && bd_fold_supported(nd->op) && (all_const || nd->op == BD_OP_SHAPE)) {
      void *data;
      if ((st = bd_fold_eval(g, nd, &data, err))) return st;
      o = &g->values[nd->out[0]];
      o->data = data;
      o->producer = -1;
      o->batch_dep = 0;
      nd->dead = 1;
      if (folded) (*folded)++;
    }
  }
  return BD_OK;
}

bd_status bd_graph_infer_shapes(bd_graph *g, bd_err *err) { return forward(g, 1, NULL, err); }

/* ---------- use bookkeeping ---------- */
typedef struct {
  bd_graph *g;
  int *uses;  /* live-node input references per value */
  int *first; /* first live consumer node per value */
} ctx_t;

static void recount(ctx_t *c) {
  bd_graph *g = c->g;
  for (int v = 0; v < g->n_values; v++) c->uses[v] = 0, c->first[v] = -1;
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int k = 0; k < nd->n_in; k++) {
      int v = nd->in[k];
      if (v < 0) continue;
      if (c->first[v] < 0) c->first[v] = i;
      c->uses[v]++;
    }
  }
}

/* The node that is the only consumer of v (v not a graph output), else -1. */
static int sole(const ctx_t *c, int v) {
  if (v < 0 || c->uses[v] != 1 || c->g->values[v].is_output) return -1;
  return c->first[v];
}

static int producer(const ctx_t *c, int v, bd_op op) {
  if (v < 0) return -1;
  int p = c->g->values[v].producer;
  if (p < 0 || c->g->nodes[p].dead || c->g->nodes[p].op != op) return -1;
  return p;
}

static void replace_uses(bd_graph *g, int from, int to) {
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] == from) nd->in[k] = to;
  }
}

/* Node p now writes value v (the output of a node being fused away). */
static void set_out(bd_graph *g, int p, int v) {
  g->values[g->nodes[p].out[0]].producer = -1;
  g->nodes[p].out[0] = v;
  g->values[v].producer = p;
}

static int is_f32_const(const bd_graph *g, int v) {
  return v >= 0 && g->values[v].data && g->values[v].dtype == BD_DT_F32;
}

/* A new constant value of type dt that takes data (malloc'd; freed here on failure);
 * returns its index or -1. Invalidates value pointers. */
static int new_const_of(bd_graph *g, const char *base, bd_dtype dt, int rank, const int64_t *dims,
                        void *data) {
  char name[300];
  snprintf(name, sizeof name, "%s#c%d", base, g->n_values);
  int v = bd_graph_add_value(g, name, dt, rank, dims);
  if (v < 0) {
    free(data);
    return -1;
  }
  g->values[v].data = data;
  return v;
}

static int new_const(bd_graph *g, const char *base, int rank, const int64_t *dims, float *data) {
  return new_const_of(g, base, BD_DT_F32, rank, dims, data);
}

static bd_status set_wb(ctx_t *c, int p, float *w, float *b, bd_err *err);
static bd_status copy_wb(const bd_graph *g, int p, float **w, float **b, int64_t *m, int64_t *per,
                         bd_err *err);

/* ---------- no-op removal ---------- */
static int is_noop(const bd_graph *g, const bd_node *nd) {
  const bd_value *x = &g->values[nd->in[0]], *o = &g->values[nd->out[0]];
  if (nd->op == BD_OP_IDENTITY) return 1;
  if (nd->op == BD_OP_CAST) return nd->p.cast.to == x->dtype;
  if (nd->op == BD_OP_SLICE) {
    for (int i = 0; i < nd->p.slice.n; i++) {
      int a = nd->p.slice.axes[i];
      int64_t s = nd->p.slice.starts[i];
      if (nd->p.slice.steps[i] != 1) return 0;
      if (s < 0) s += x->dims[a];
      if (s > 0) return 0;
      if (x->batch_dep && a == 0) {
        /* a batch-axis slice is full-range at every batch only if it is open-ended */
        if (nd->p.slice.ends[i] < (int64_t)1 << 40) return 0;
      }
    }
    return o->rank == x->rank && memcmp(o->dims, x->dims, sizeof(int64_t) * (size_t)x->rank) == 0;
  }
  return 0;
}

/* Readers of a no-op read its input instead. One pass in node order (topological):
 * alias[v] is the value v stands for, final by the time a node reads it, so a chain of
 * 10^5 Identities costs one pass, not a scan of every node per Identity. */
static bd_status remove_noops(ctx_t *c, int *removed, bd_err *err) {
  bd_graph *g = c->g;
  int *alias = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
  if (!alias) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  for (int v = 0; v < g->n_values; v++) alias[v] = v;
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] >= 0) nd->in[k] = alias[nd->in[k]];
    if (!is_noop(g, nd) || g->values[nd->out[0]].is_output) continue;
    alias[nd->out[0]] = nd->in[0];
    nd->dead = 1;
    (*removed)++;
  }
  free(alias);
  recount(c);
  /* A no-op writing a graph output: its input's producer writes the output instead, when
   * the no-op is that input's only reader. At most one such node per graph output. */
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead || !is_noop(g, nd)) continue;
    int x = nd->in[0], o = nd->out[0];
    int p = g->values[x].producer;
    if (p < 0 || g->values[x].is_output || sole(c, x) != i) continue;
    set_out(g, p, o);
    nd->dead = 1;
    (*removed)++;
    recount(c);
  }
  return BD_OK;
}

static bd_status grow_book(ctx_t *c, bd_err *err) {
  int *u = realloc(c->uses, sizeof(int) * (size_t)c->g->n_values);
  if (u) c->uses = u;
  int *f = realloc(c->first, sizeof(int) * (size_t)c->g->n_values);
  if (f) c->first = f;
  if (!u || !f) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  recount(c);
  return BD_OK;
}

/* ---------- BatchNorm folding ---------- */
static bd_status fold_bn(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  bd_status st;
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *bn = &g->nodes[i];
    if (bn->dead || bn->op != BD_OP_BATCHNORM) continue;
    int x = bn->in[0];
    int p = producer(c, x, BD_OP_CONV);
    if (p < 0 || sole(c, x) != i) continue;
    bd_node *cv = &g->nodes[p];
    if (cv->p.conv.act || cv->p.conv.res || !is_f32_const(g, cv->in[1])) continue;
    int b = cv->n_in > 2 ? cv->in[2] : -1;
    if (b >= 0 && !is_f32_const(g, b)) continue;
    int ok = 1;
    for (int k = 1; k < 5; k++) ok &= is_f32_const(g, bn->in[k]);
    if (!ok) continue;
    const bd_value *w = &g->values[cv->in[1]];
    int64_t m = w->dims[0], per = bd_value_numel(w) / (m ? m : 1);
    float *nw = malloc(sizeof(float) * (size_t)(m * per)), *nb = malloc(sizeof(float) * (size_t)m);
    if (!nw || !nb) {
      free(nw);
      free(nb);
      return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    }
    const float *W = w->data, *B = b >= 0 ? g->values[b].data : NULL;
    const float *ga = g->values[bn->in[1]].data, *be = g->values[bn->in[2]].data;
    const float *mu = g->values[bn->in[3]].data, *va = g->values[bn->in[4]].data;
    for (int64_t o = 0; o < m; o++) {
      double s = (double)ga[o] / sqrt((double)va[o] + (double)bn->p.bn.eps);
      for (int64_t k = 0; k < per; k++) nw[o * per + k] = (float)((double)W[o * per + k] * s);
      nb[o] = (float)(((B ? (double)B[o] : 0.0) - (double)mu[o]) * s + (double)be[o]);
    }
    if ((st = set_wb(c, p, nw, nb, err))) return st;
    set_out(g, p, g->nodes[i].out[0]);
    g->nodes[i].dead = 1;
    (*count)++;
    recount(c);
  }
  return BD_OK;
}

/* ---------- constant scale folding ---------- */
/* Conv (no activation, no residual) followed by Mul with an FP32 constant that is one
 * value or one per output channel ([M], [M,1,1], [1,M,1,1]), the conv's output read by that
 * Mul alone: the scale goes into the weights and bias (DAMO-YOLO's per-level `scales` on
 * its regression convs). */
static bd_status fold_scale(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  bd_status st;
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *mul = &g->nodes[i];
    if (mul->dead || mul->op != BD_OP_MUL || mul->n_in != 2) continue;
    for (int side = 0; side < 2; side++) {
      int x = mul->in[side], sv = mul->in[1 - side];
      int p = producer(c, x, BD_OP_CONV);
      if (p < 0 || sole(c, x) != i || !is_f32_const(g, sv)) continue;
      bd_node *cv = &g->nodes[p];
      if (cv->p.conv.act || cv->p.conv.res || !is_f32_const(g, cv->in[1]) ||
          (cv->n_in > 2 && cv->in[2] >= 0 && !is_f32_const(g, cv->in[2])))
        continue;
      const bd_value *s = &g->values[sv];
      int64_t m = g->values[cv->in[1]].dims[0], ns = bd_value_numel(s);
      /* one value (rank <= 4: the product keeps the conv's shape), or M along the channel
       * axis under right-aligned broadcasting ([M,1,1], [1,M,1,1]; not [M]: that is W) */
      int per_channel = ns == m && m > 1 &&
                        ((s->rank == 3 && s->dims[1] == 1 && s->dims[2] == 1) ||
                         (s->rank == 4 && s->dims[0] == 1 && s->dims[2] == 1 && s->dims[3] == 1));
      if (!(ns == 1 && s->rank <= 4) && !per_channel) continue;
      float *nw, *nb;
      int64_t mm, per;
      if ((st = copy_wb(g, p, &nw, &nb, &mm, &per, err))) return st;
      const float *f = s->data;
      for (int64_t o = 0; o < mm; o++) {
        float k = f[per_channel ? o : 0];
        for (int64_t j = 0; j < per; j++) nw[o * per + j] *= k;
        nb[o] *= k;
      }
      if ((st = set_wb(c, p, nw, nb, err))) return st;
      set_out(g, p, g->nodes[i].out[0]);
      g->nodes[i].dead = 1;
      (*count)++;
      recount(c);
      break;
    }
  }
  return BD_OK;
}

/* ---------- RepConv merge ---------- */
static int plain_conv(const bd_graph *g, const bd_node *cv) {
  const bd_conv_params *p = &cv->p.conv;
  return !p->act && !p->res && p->dh == 1 && p->dw == 1 && is_f32_const(g, cv->in[1]) &&
         (cv->n_in < 3 || cv->in[2] < 0 || is_f32_const(g, cv->in[2])) &&
         (cv->n_in < 4 || cv->in[3] < 0);
}

static int is_k(const bd_conv_params *p, int k, int pad) {
  return p->kh == k && p->kw == k && p->pad_t == pad && p->pad_l == pad && p->pad_b == pad &&
         p->pad_r == pad;
}

/* Replaces conv p's W and B by new constants (data owned by the graph afterwards). */
static bd_status set_wb(ctx_t *c, int p, float *w, float *b, bd_err *err) {
  bd_graph *g = c->g;
  int64_t wd[4], m;
  memcpy(wd, g->values[g->nodes[p].in[1]].dims, sizeof wd);
  m = wd[0];
  char base[200];
  snprintf(base, sizeof base, "%s", g->values[g->nodes[p].in[1]].name);
  int vw = new_const(g, base, 4, wd, w);
  if (vw < 0) {
    free(b);
    return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  }
  int vb = new_const(g, base, 1, &m, b);
  if (vb < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  bd_node *cv = &g->nodes[p];
  if (cv->n_in < 3) {
    int *ni = realloc(cv->in, sizeof(int) * 3);
    if (!ni) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    cv->in = ni;
    cv->n_in = 3;
  }
  cv->in[1] = vw;
  cv->in[2] = vb;
  return grow_book(c, err);
}

/* Copies of conv p's weights and bias (zero bias when absent). */
static bd_status copy_wb(const bd_graph *g, int p, float **w, float **b, int64_t *m, int64_t *per,
                         bd_err *err) {
  const bd_node *cv = &g->nodes[p];
  const bd_value *wv = &g->values[cv->in[1]];
  *m = wv->dims[0];
  *per = bd_value_numel(wv) / (*m ? *m : 1);
  *w = malloc(sizeof(float) * (size_t)(*m * *per));
  *b = calloc((size_t)*m, sizeof(float));
  if (!*w || !*b) {
    free(*w);
    free(*b);
    return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  }
  memcpy(*w, wv->data, sizeof(float) * (size_t)(*m * *per));
  if (cv->n_in > 2 && cv->in[2] >= 0)
    memcpy(*b, g->values[cv->in[2]].data, sizeof(float) * (size_t)*m);
  return BD_OK;
}

/* Folds an identity branch y (= x, or BatchNorm(x)) into 3x3 conv p: out = conv + y. */
static bd_status merge_identity(ctx_t *c, int p, int add, int y, int *merged, bd_err *err) {
  bd_graph *g = c->g;
  bd_node *cv = &g->nodes[p];
  int x = cv->in[0], bn = -1;
  *merged = 0;
  if (y != x) {
    bn = producer(c, y, BD_OP_BATCHNORM);
    if (bn < 0 || g->nodes[bn].in[0] != x || sole(c, y) != add) return BD_OK;
    for (int k = 1; k < 5; k++)
      if (!is_f32_const(g, g->nodes[bn].in[k])) return BD_OK;
  }
  const bd_value *xv = &g->values[x], *wv = &g->values[cv->in[1]];
  int64_t cin = xv->dims[1], m = wv->dims[0], cpg = wv->dims[1];
  if (m != cin || cv->p.conv.sh != 1 || cv->p.conv.sw != 1 || !is_k(&cv->p.conv, 3, 1)) return BD_OK;
  float *w, *b;
  int64_t per;
  bd_status st = copy_wb(g, p, &w, &b, &m, &per, err);
  if (st) return st;
  for (int64_t o = 0; o < m; o++) {
    double s = 1.0, t = 0.0;
    if (bn >= 0) {
      const bd_node *bnn = &g->nodes[bn];
      const float *ga = g->values[bnn->in[1]].data, *be = g->values[bnn->in[2]].data;
      const float *mu = g->values[bnn->in[3]].data, *va = g->values[bnn->in[4]].data;
      s = (double)ga[o] / sqrt((double)va[o] + (double)bnn->p.bn.eps);
      t = (double)be[o] - (double)mu[o] * s;
    }
    /* output channel o reads input channel o: index o % cpg inside its group */
    w[(o * cpg + o % cpg) * 9 + 4] += (float)s;
    b[o] = (float)((double)b[o] + t);
  }
  if ((st = set_wb(c, p, w, b, err))) return st;
  set_out(g, p, g->nodes[add].out[0]);
  g->nodes[add].dead = 1;
  if (bn >= 0) g->nodes[bn].dead = 1;
  *merged = 1;
  return grow_book(c, err);
}

static bd_status merge_repconv(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  bd_status st;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead || g->nodes[i].op != BD_OP_ADD) continue;
    int a = g->nodes[i].in[0], b = g->nodes[i].in[1];
    int pa = producer(c, a, BD_OP_CONV), pb = producer(c, b, BD_OP_CONV);
    if (pa < 0 || pb < 0 || sole(c, a) != i || sole(c, b) != i) continue;
    if (is_k(&g->nodes[pb].p.conv, 3, 1)) {
      int t = pa;
      pa = pb, pb = t;
    }
    bd_node *c3 = &g->nodes[pa], *c1 = &g->nodes[pb];
    if (!plain_conv(g, c3) || !plain_conv(g, c1) || !is_k(&c3->p.conv, 3, 1) ||
        !is_k(&c1->p.conv, 1, 0) || c3->in[0] != c1->in[0] || c3->p.conv.sh != c1->p.conv.sh ||
        c3->p.conv.sw != c1->p.conv.sw || c3->p.conv.group != c1->p.conv.group)
      continue;
    const bd_value *w3 = &g->values[c3->in[1]], *w1 = &g->values[c1->in[1]];
    if (w3->dims[0] != w1->dims[0] || w3->dims[1] != w1->dims[1]) continue;
    float *w, *bias, *w1b, *b1;
    int64_t m, per, m1, per1;
    if ((st = copy_wb(g, pa, &w, &bias, &m, &per, err))) return st;
    if ((st = copy_wb(g, pb, &w1b, &b1, &m1, &per1, err))) {
      free(w);
      free(bias);
      return st;
    }
    /* the 1x1/pad-0 tap samples the 3x3/pad-1 centre, for any stride */
    for (int64_t k = 0; k < m * per1; k++) w[k * 9 + 4] += w1b[k];
    for (int64_t o = 0; o < m; o++) bias[o] += b1[o];
    free(w1b);
    free(b1);
    if ((st = set_wb(c, pa, w, bias, err))) return st;
    set_out(g, pa, g->nodes[i].out[0]);
    g->nodes[i].dead = 1;
    g->nodes[pb].dead = 1;
    (*count)++;
    recount(c);
    /* optional third branch: Add(merged, x) or Add(merged, BatchNorm(x)) */
    int o = g->nodes[pa].out[0], add2 = sole(c, o);
    if (add2 >= 0 && g->nodes[add2].op == BD_OP_ADD) {
      int y = g->nodes[add2].in[0] == o ? g->nodes[add2].in[1] : g->nodes[add2].in[0];
      int merged;
      if ((st = merge_identity(c, pa, add2, y, &merged, err))) return st;
    }
  }
  return BD_OK;
}

/* ---------- Conv + activation / residual fusion ---------- */
/* Fuses the activation consuming conv p's output, if any; returns 1 when fused. */
static int fuse_act(ctx_t *c, int p) {
  bd_graph *g = c->g;
  bd_node *cv = &g->nodes[p];
  int o = cv->out[0];
  if (cv->p.conv.act || g->values[o].is_output) return 0;
  if (c->uses[o] == 1) {
    int q = c->first[o];
    bd_op op = g->nodes[q].op;
    if (op != BD_OP_RELU && op != BD_OP_SIGMOID && op != BD_OP_SILU) return 0;
    cv->p.conv.act = op == BD_OP_RELU ? BD_ACT_RELU : op == BD_OP_SIGMOID ? BD_ACT_SIGMOID : BD_ACT_SILU;
    set_out(g, p, g->nodes[q].out[0]);
    g->nodes[q].dead = 1;
    recount(c);
    return 1;
  }
  if (c->uses[o] != 2) return 0;
  /* x * sigmoid(x): the conv output feeds exactly one Sigmoid and the Mul */
  int s = -1, m = -1;
  for (int i = c->first[o]; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] == o) {
        if (nd->op == BD_OP_SIGMOID && s < 0) s = i;
        else if (nd->op == BD_OP_MUL && m < 0) m = i;
        else return 0;
        break;
      }
  }
  if (s < 0 || m < 0) return 0;
  int so = g->nodes[s].out[0];
  const bd_node *mn = &g->nodes[m];
  if (!((mn->in[0] == o && mn->in[1] == so) || (mn->in[1] == o && mn->in[0] == so))) return 0;
  if (sole(c, so) != m) return 0;
  cv->p.conv.act = BD_ACT_SILU;
  set_out(g, p, mn->out[0]);
  g->nodes[s].dead = 1;
  g->nodes[m].dead = 1;
  recount(c);
  return 1;
}

/* Add(conv, r) with r ready before the conv runs and of the same shape. */
static int fuse_res(ctx_t *c, int p) {
  bd_graph *g = c->g;
  bd_node *cv = &g->nodes[p];
  int o = cv->out[0], q = sole(c, o);
  if (cv->p.conv.res || q < 0 || g->nodes[q].op != BD_OP_ADD || cv->n_in > 3) return 0;
  const bd_node *ad = &g->nodes[q];
  int r = ad->in[0] == o ? ad->in[1] : ad->in[0];
  if (r == o || r < 0) return 0;
  const bd_value *rv = &g->values[r], *ov = &g->values[o];
  int rp = rv->producer;
  if (rv->dtype != BD_DT_F32 || (rp >= 0 && rp >= p) || rv->rank != ov->rank ||
      memcmp(rv->dims, ov->dims, sizeof(int64_t) * (size_t)ov->rank) != 0)
    return 0;
  int *ni = realloc(cv->in, sizeof(int) * 4);
  if (!ni) return 0;
  cv->in = ni;
  if (cv->n_in < 3) cv->in[2] = -1;
  cv->in[3] = r;
  cv->n_in = 4;
  cv->p.conv.res = cv->p.conv.act ? BD_RES_POST_ACT : BD_RES_PRE_ACT;
  set_out(g, p, g->nodes[q].out[0]);
  g->nodes[q].dead = 1;
  recount(c);
  return 1;
}

static void fuse_conv(ctx_t *c, int *acts, int *res) {
  bd_graph *g = c->g;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead || g->nodes[i].op != BD_OP_CONV) continue;
    *acts += fuse_act(c, i);
    if (fuse_res(c, i)) {
      (*res)++;
      /* act(conv + b + r) when the activation follows the Add */
      if (g->nodes[i].p.conv.res == BD_RES_PRE_ACT) *acts += fuse_act(c, i);
    }
  }
}

/* Standalone x * sigmoid(x) -> SiLU node. */
static void fuse_silu(ctx_t *c, int *count) {
  bd_graph *g = c->g;
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *s = &g->nodes[i];
    if (s->dead || s->op != BD_OP_SIGMOID) continue;
    int x = s->in[0], so = s->out[0], m = sole(c, so);
    if (m < 0 || g->nodes[m].op != BD_OP_MUL) continue;
    bd_node *mn = &g->nodes[m];
    int other = mn->in[0] == so ? mn->in[1] : mn->in[0];
    if (other != x) continue;
    /* the Sigmoid's slot becomes the SiLU writing the Mul's output */
    s->op = BD_OP_SILU;
    set_out(g, i, mn->out[0]);
    mn->dead = 1;
    (*count)++;
    recount(c);
  }
}

/* ---------- SPP: max pools chained ---------- */

/* A stride-1 MaxPool whose -inf padding keeps the size ("same": odd kernel, k/2 on each
 * side); its kernel in *kh, *kw. */
static int same_pool(const bd_node *nd, int *kh, int *kw) {
  const bd_pool_params *p = &nd->p.pool;
  if (nd->dead || nd->op != BD_OP_MAXPOOL || p->sh != 1 || p->sw != 1 || !(p->kh & 1) ||
      !(p->kw & 1) || p->pad_t != p->kh / 2 || p->pad_b != p->kh / 2 || p->pad_l != p->kw / 2 ||
      p->pad_r != p->kw / 2)
    return 0;
  *kh = p->kh, *kw = p->kw;
  return 1;
}

/* YOLOX's SPP and DAMO-YOLO's SPP pool one tensor with kernels 5, 9 and 13. With -inf
 * padding and stride 1, max over a (ka + kb - 1) window = max over a ka window of the
 * kb-window maxima, exactly (at the borders too: the clipped windows compose). So a pool
 * P of x with kernel kp becomes a pool with kernel kp - kq + 1 of the output of an
 * earlier pool Q of the same x with the largest kq < kp: 5, 9, 13 read 25 + 25 + 25 input
 * pixels per output instead of 25 + 81 + 169. Only over earlier nodes (node order is the
 * plan's step order), and inputs compared as they were before any rewrite. */
static int chain_pools(ctx_t *c) {
  bd_graph *g = c->g;
  int count = 0;
  /* per node: its input and, for a same pool, its kernel (0: not one), as written */
  int *orig = malloc(sizeof(int) * 3 * (size_t)(g->n_nodes ? g->n_nodes : 1));
  if (!orig) return 0; /* an optimisation: skipped when memory is short */
  for (int i = 0; i < g->n_nodes; i++) {
    int *o = orig + 3 * i;
    o[0] = g->nodes[i].n_in ? g->nodes[i].in[0] : -1;
    if (!same_pool(&g->nodes[i], &o[1], &o[2])) o[1] = o[2] = 0;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const int kh = orig[3 * i + 1], kw = orig[3 * i + 2];
    int best = -1, bh = 0, bw = 0;
    if (!kh) continue;
    for (int j = 0; j < i; j++) {
      const int qh = orig[3 * j + 1], qw = orig[3 * j + 2];
      if (!qh || orig[3 * j] != orig[3 * i]) continue;
      if (qh > kh || qw > kw || (qh == kh && qw == kw)) continue;
      if (best < 0 || qh * qw > bh * bw) best = j, bh = qh, bw = qw;
    }
    if (best < 0) continue;
    bd_pool_params *p = &g->nodes[i].p.pool;
    p->kh = kh - bh + 1, p->kw = kw - bw + 1;
    p->pad_t = p->pad_b = p->kh / 2;
    p->pad_l = p->pad_r = p->kw / 2;
    g->nodes[i].in[0] = g->nodes[best].out[0];
    count++;
  }
  free(orig);
  if (count) recount(c);
  return count;
}

/* ---------- DFL integral: Softmax, data movement, dot with a constant ---------- */
/* A DFL box head (DAMO-YOLO's GFL head, YOLOv6/v8-style heads) takes a Softmax over R
 * bins, moves the probabilities around (Transpose, Reshape, Concat of the levels) and
 * reduces the bins with a MatMul by a constant [R,1] (or [R]) vector. Every op between
 * the two only relabels elements while keeping the bin axis whole, so the dot commutes
 * with them: each Softmax becomes a SoftmaxDot writing 1 value per R bins, the moves
 * carry a size-1 axis instead (Reshape targets rewritten) and the MatMul goes. The
 * moves then touch R times fewer bytes (DAMO-T at 640: ~140 MB per image of FP32
 * probabilities never written). Matched by structure and shapes; all or nothing. */
#define DFL_MAX_NODES 64

typedef struct {
  int n;
  int node[DFL_MAX_NODES]; /* Softmax leaves and Reshape moves to rewrite */
  int axis[DFL_MAX_NODES]; /* the bin axis in that node's output */
} dfl_set;

/* The axis of in (dims xd, rank xr) that a reshape to yd (rank yr) keeps as its axis a:
 * same length and as many elements before it (row-major order then maps bin k to bin k),
 * else -1. */
static int reshape_axis_back(const int64_t *xd, int xr, const int64_t *yd, int a) {
  int64_t before = 1, p = 1;
  for (int i = 0; i < a; i++) before *= yd[i];
  for (int i = 0; i < xr; i++) {
    if (p == before && xd[i] == yd[a]) return i;
    p *= xd[i];
    if (p > before) break;
  }
  return -1;
}

/* Whether a Reshape's literal target stays right with the bin axis (output axis a,
 * input axis ia) shrunk to 1: a literal R there becomes 1, a -1 is inferred, a 0 copies
 * the input's own (shrunk) axis only at a == ia. */
static int dfl_reshape_ok(const bd_graph *g, const bd_node *nd, int a, int ia) {
  const bd_value *t = &g->values[nd->in[1]];
  const bd_value *y = &g->values[nd->out[0]];
  if (nd->n_in != 2 || !t->data || t->rank != 1 || t->dims[0] != y->rank ||
      (t->dtype != BD_DT_I64 && t->dtype != BD_DT_I32))
    return 0;
  for (int i = 0; i < y->rank; i++) {
    int64_t v = t->dtype == BD_DT_I64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    if (v == 0 && (nd->p.reshape.allowzero || (i == a) != (i == ia))) return 0;
    if (i == a && v != 0 && v != -1 && v != y->dims[a]) return 0;
  }
  return 1;
}

/* Collects the nodes that make value v (bin axis a, length R) from Softmaxes over that
 * axis through moves only, each value read by its one consumer. */
static int dfl_walk(const ctx_t *c, int v, int a, int64_t R, dfl_set *s, int depth) {
  const bd_graph *g = c->g;
  const bd_value *val = &g->values[v];
  if (depth > 32 || a <= 0 || a >= val->rank || val->dims[a] != R || sole(c, v) < 0 ||
      val->producer < 0 || s->n >= DFL_MAX_NODES)
    return 0;
  const bd_node *nd = &g->nodes[val->producer];
  if (nd->dead) return 0;
  int x = nd->in[0];
  const bd_value *xv = &g->values[x];
  switch (nd->op) {
  case BD_OP_SOFTMAX:
    if (nd->p.softmax.axis != a || (nd->p.softmax.opset < 13 && a != val->rank - 1)) return 0;
    s->node[s->n] = val->producer, s->axis[s->n++] = a;
    return 1;
  case BD_OP_TRANSPOSE: {
    int r = val->rank, src = nd->p.transpose.n ? nd->p.transpose.perm[a] : r - 1 - a;
    return dfl_walk(c, x, src, R, s, depth + 1);
  }
  case BD_OP_RESHAPE: case BD_OP_FLATTEN: case BD_OP_SQUEEZE: case BD_OP_UNSQUEEZE: {
    /* a Squeeze of "all 1s" that found none would, re-resolved, drop the size-1 bins */
    if (nd->op == BD_OP_SQUEEZE && nd->p.unsq.n == 0) return 0;
    int ia = reshape_axis_back(xv->dims, xv->rank, val->dims, a);
    if (ia < 0) return 0;
    if (nd->op == BD_OP_RESHAPE) {
      if (!dfl_reshape_ok(g, nd, a, ia)) return 0;
      s->node[s->n] = val->producer, s->axis[s->n++] = a;
    }
    return dfl_walk(c, x, ia, R, s, depth + 1);
  }
  case BD_OP_CONCAT:
    if (nd->p.concat.axis == a) return 0;
    for (int k = 0; k < nd->n_in; k++)
      if (!dfl_walk(c, nd->in[k], a, R, s, depth + 1)) return 0;
    return 1;
  default:
    return 0;
  }
}

/* Rewrites one matched integral (MatMul node m, bins R, P its constant). */
static bd_status dfl_rewrite(ctx_t *c, int m, const dfl_set *s, int *done, bd_err *err) {
  bd_graph *g = c->g;
  for (int i = 0; i < s->n; i++) {
    bd_node *nd = &g->nodes[s->node[i]];
    if (nd->op != BD_OP_RESHAPE) continue;
    const bd_value *t = &g->values[nd->in[1]];
    const int64_t dims[1] = {t->dims[0]};
    const size_t bytes = bd_dtype_size(t->dtype) * (size_t)dims[0];
    void *d = malloc(bytes);
    if (!d) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    memcpy(d, t->data, bytes);
    if (t->dtype == BD_DT_I64) {
      int64_t *q = d;
      if (q[s->axis[i]] > 0) q[s->axis[i]] = 1;
    } else {
      int32_t *q = d;
      if (q[s->axis[i]] > 0) q[s->axis[i]] = 1;
    }
    int v = new_const_of(g, t->name, t->dtype, 1, dims, d);
    if (v < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->nodes[s->node[i]].in[1] = v;
  }
  bd_node *mm = &g->nodes[m];
  int pv = mm->in[1], a = mm->in[0], y = mm->out[0];
  for (int i = 0; i < s->n; i++) {
    bd_node *nd = &g->nodes[s->node[i]];
    if (nd->op != BD_OP_SOFTMAX) continue;
    int *in = realloc(nd->in, sizeof(int) * 2);
    if (!in) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    nd->in = in;
    nd->in[1] = pv;
    nd->n_in = 2;
    nd->op = BD_OP_SOFTMAX_DOT;
    nd->p.softmax.axis = s->axis[i];
  }
  if (g->values[pv].rank == 1) {
    /* [.., R] x [R] -> [..]: the size-1 axis left by the dot goes */
    mm->op = BD_OP_SQUEEZE;
    mm->n_in = 1;
    mm->p.unsq.n = 1;
    mm->p.unsq.axes[0] = g->values[a].rank - 1;
  } else if (g->values[y].is_output) {
    mm->op = BD_OP_IDENTITY;
    mm->n_in = 1;
  } else {
    replace_uses(g, y, a);
    mm->dead = 1;
  }
  (*done)++;
  return BD_OK;
}

static bd_status fuse_dfl(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  bd_status st = BD_OK;
  int done = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    if (nd->dead || nd->op != BD_OP_MATMUL || nd->n_in != 2 || !is_f32_const(g, nd->in[1]))
      continue;
    const bd_value *av = &g->values[nd->in[0]], *pv = &g->values[nd->in[1]];
    if (av->rank < 2 || av->data) continue;
    int64_t R = av->dims[av->rank - 1];
    if (R < 2 || !((pv->rank == 2 && pv->dims[0] == R && pv->dims[1] == 1) ||
                   (pv->rank == 1 && pv->dims[0] == R)))
      continue;
    dfl_set s = {0};
    if (!dfl_walk(c, nd->in[0], av->rank - 1, R, &s, 0)) continue;
    if ((st = dfl_rewrite(c, i, &s, &done, err))) break;
    if ((st = grow_book(c, err))) break; /* new constants; recounts */
  }
  if (st == BD_OK && done) st = forward(g, 0, NULL, err);
  *count = done;
  return st;
}

/* ---------- Transposes sunk into the ops before them ---------- */
/* A Transpose whose input it alone reads moves up through the op that made that input
 * when that op does not care how its axes are ordered: a SoftmaxDot (its bin axis
 * renumbered) or a Concat (each piece transposed instead, its axis renumbered). Two
 * Transposes in a row then become one, and one that leaves every axis in place goes.
 * Exporters write Transpose - Softmax - Transpose around a DFL integral (DAMO-YOLO's GFL
 * head: after fuse_dfl the two cancel and the SoftmaxDot reads the conv's output as it
 * lies) and Concat - Transpose at the end of a head (YOLOX: the pieces' transposes are
 * views of the conv outputs on the CUDA backend, so the output is written by one copy
 * in memory order instead of a transposing Concat and a transposing Transpose). */
#define SINK_MAX_PIECES 64

/* Moves the node just appended (index n_nodes - 1) to index pos, shifting the ones from
 * pos on up by one (their outputs' producers follow). */
static void move_last_to(bd_graph *g, int pos) {
  int last = g->n_nodes - 1;
  bd_node t = g->nodes[last];
  memmove(&g->nodes[pos + 1], &g->nodes[pos], sizeof(bd_node) * (size_t)(last - pos));
  g->nodes[pos] = t;
  for (int i = pos; i <= last; i++)
    for (int k = 0; k < g->nodes[i].n_out; k++)
      if (g->nodes[i].out[k] >= 0) g->values[g->nodes[i].out[k]].producer = i;
}

static int perm_is_identity(const int *perm, int r) {
  for (int i = 0; i < r; i++)
    if (perm[i] != i) return 0;
  return 1;
}

/* The axis of a Transpose's output that its input axis a becomes. */
static int perm_where(const int *perm, int r, int a) {
  for (int i = 0; i < r; i++)
    if (perm[i] == a) return i;
  return -1;
}

/* Transpose t (reading x, x read by it alone, made by SoftmaxDot s) and s trade places:
 * the Transpose at s's index now permutes s's input into x, s at t's index writes t's
 * output, its bin axis renumbered. */
static void sink_through_dot(bd_graph *g, int s, int t) {
  bd_node sn = g->nodes[s], tn = g->nodes[t];
  const int r = tn.p.transpose.n, x = sn.out[0], y = tn.out[0];
  sn.p.softmax.axis = perm_where(tn.p.transpose.perm, r, sn.p.softmax.axis);
  tn.in[0] = sn.in[0];
  tn.out[0] = x;
  sn.in[0] = x;
  sn.out[0] = y;
  g->nodes[s] = tn;
  g->nodes[t] = sn;
  g->values[x].producer = s;
  g->values[y].producer = t;
}

/* Transpose t reads Concat k's output alone: each piece gets its own Transpose (inserted
 * before k), the Concat joins those along its renumbered axis and writes t's output. */
static bd_status sink_through_concat(ctx_t *c, int k, int t, bd_err *err) {
  bd_graph *g = c->g;
  const int n_in = g->nodes[k].n_in, r = g->nodes[t].p.transpose.n;
  int perm[BD_MAX_RANK];
  memcpy(perm, g->nodes[t].p.transpose.perm, sizeof(int) * (size_t)r);
  for (int i = 0; i < n_in; i++) {
    const int x = g->nodes[k].in[i];
    int64_t d[BD_MAX_RANK];
    for (int a = 0; a < r; a++) d[a] = g->values[x].dims[perm[a]];
    char name[160];
    snprintf(name, sizeof name, "%.140s/piece%d", NAME(&g->nodes[t]), i);
    const int v = bd_graph_add_value(g, name, g->values[x].dtype, r, d);
    if (v < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->values[v].batch_dep = g->values[x].batch_dep;
    const int nn = bd_graph_add_node(g, BD_OP_TRANSPOSE, name, 1, &x, 1, &v);
    if (nn < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->nodes[nn].p.transpose.n = r;
    memcpy(g->nodes[nn].p.transpose.perm, perm, sizeof(int) * (size_t)r);
    move_last_to(g, k); /* before the Concat, which moves up one */
    ++k, ++t;
    g->nodes[k].in[i] = v;
  }
  bd_node *cn = &g->nodes[k];
  cn->p.concat.axis = perm_where(perm, r, cn->p.concat.axis);
  set_out(g, k, g->nodes[t].out[0]);
  g->nodes[t].dead = 1;
  return grow_book(c, err); /* new values; recounts */
}

/* Transpose t reading a Transpose's output alone: one Transpose of the first's input
 * (the first goes); one that keeps every axis in place goes too (its readers read its
 * input). Returns 1 when t changed. */
static int merge_transposes(ctx_t *c, int t) {
  bd_graph *g = c->g;
  bd_node *tn = &g->nodes[t];
  const int r = tn->p.transpose.n;
  int z = tn->in[0], u = producer(c, z, BD_OP_TRANSPOSE), changed = 0;
  if (u >= 0 && sole(c, z) == t && g->nodes[u].p.transpose.n == r) {
    int q[BD_MAX_RANK];
    for (int d = 0; d < r; d++) q[d] = g->nodes[u].p.transpose.perm[tn->p.transpose.perm[d]];
    memcpy(tn->p.transpose.perm, q, sizeof(int) * (size_t)r);
    tn->in[0] = g->nodes[u].in[0];
    g->nodes[u].dead = 1;
    changed = 1;
  }
  const int x = tn->in[0], y = tn->out[0];
  if (perm_is_identity(tn->p.transpose.perm, r)) {
    if (!g->values[y].is_output) {
      replace_uses(g, y, x);
      tn->dead = 1;
      changed = 1;
    } else if (g->values[x].producer >= 0 && !g->values[x].is_output &&
               !g->values[x].is_input) {
      recount(c);
      if (sole(c, x) == t) {
        set_out(g, g->values[x].producer, y);
        tn->dead = 1;
        changed = 1;
      }
    }
  }
  if (changed) recount(c);
  return changed;
}

static bd_status sink_transposes(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  bd_status st = BD_OK;
  int done = 0;
  recount(c);
  for (int t = 0; t < g->n_nodes; t++) {
    if (g->nodes[t].dead || g->nodes[t].op != BD_OP_TRANSPOSE) continue;
    const int x = g->nodes[t].in[0], r = g->nodes[t].p.transpose.n;
    const int s = g->values[x].producer;
    if (s < 0 || g->nodes[s].dead || sole(c, x) != t || r != g->values[x].rank) continue;
    if (g->nodes[s].op == BD_OP_SOFTMAX_DOT) {
      sink_through_dot(g, s, t);
      recount(c);
      merge_transposes(c, s);
      done++;
    } else if (g->nodes[s].op == BD_OP_CONCAT && g->nodes[s].n_in <= SINK_MAX_PIECES) {
      const int n_in = g->nodes[s].n_in;
      int computed = 1; /* a constant piece would be transposed at run time: left alone */
      for (int i = 0; i < n_in; i++) {
        const int v = g->nodes[s].in[i];
        computed &= v >= 0 && !g->values[v].data && g->values[v].rank == r;
      }
      if (!computed) continue;
      if ((st = sink_through_concat(c, s, t, err))) break;
      for (int i = 0; i < n_in; i++) merge_transposes(c, s + i);
      t += n_in; /* the nodes moved up by the inserted Transposes */
      done++;
    }
  }
  if (st == BD_OK && done) st = forward(g, 0, NULL, err);
  *count = done;
  return st;
}

/* ---------- A Concat of +-constant Gathers: one Mul and one Add ---------- */
/* A box decode written per coordinate (DAMO-YOLO's and other GFL heads' distance2bbox):
 * the coordinates of M are gathered one by one along an axis, each is subtracted from or
 * added to a constant (the anchor points), and the results are unsqueezed and joined
 * along that same axis in gather order. That is Add(K, Mul(M, S)): S the signs (-1 where
 * the piece is constant - gather), K the constants stacked along the axis (negated where
 * the piece is gather - constant). The Gathers, the k element-wise ops, the Unsqueezes
 * and the Concat become two element-wise ops (DAMO-T: 6 kernels of the box branch, the
 * last ones before its output, become 2). Matched by structure and shapes. */
#define GC_MAX_PIECES 16

/* The pieces' parts: element-wise node, its constant input, the sign of M in it. */
typedef struct {
  int ew, konst, sign;
} gc_piece;

/* Whether Concat node k is such a join; fills the pieces and M, the axis, on success. */
static int gc_match(const ctx_t *c, int k, gc_piece *pc, int *m_out, int *axis_out) {
  const bd_graph *g = c->g;
  const bd_node *cn = &g->nodes[k];
  const int y = cn->out[0], r = g->values[y].rank, a = cn->p.concat.axis, n = cn->n_in;
  int m = -1;
  if (n < 2 || n > GC_MAX_PIECES || r < 1 || a < 0 || a >= r || g->values[y].dims[a] != n)
    return 0;
  for (int j = 0; j < n; j++) {
    const int u = cn->in[j], un = u >= 0 ? g->values[u].producer : -1;
    if (un < 0 || sole(c, u) != k) return 0;
    const bd_node *us = &g->nodes[un];
    if (us->dead || us->op != BD_OP_UNSQUEEZE || us->p.unsq.n != 1 || us->p.unsq.axes[0] != a)
      return 0;
    const int e = us->in[0], en = e >= 0 ? g->values[e].producer : -1;
    if (en < 0 || sole(c, e) != un) return 0;
    const bd_node *es = &g->nodes[en];
    if (es->dead || (es->op != BD_OP_ADD && es->op != BD_OP_SUB) || es->n_in != 2) return 0;
    int side = -1; /* the input that is the Gather */
    for (int t = 0; t < 2; t++) {
      const int gv = es->in[t], gn = gv >= 0 ? g->values[gv].producer : -1;
      if (gn < 0 || g->nodes[gn].dead || g->nodes[gn].op != BD_OP_GATHER) continue;
      const bd_node *gs = &g->nodes[gn];
      const bd_value *iv = &g->values[gs->in[1]];
      if (!iv->data || iv->rank != 0 || (iv->dtype != BD_DT_I64 && iv->dtype != BD_DT_I32))
        continue;
      int64_t ix = iv->dtype == BD_DT_I64 ? *(const int64_t *)iv->data : *(const int32_t *)iv->data;
      const bd_value *mv = &g->values[gs->in[0]];
      if (gs->p.gather.axis != a || mv->rank != r || mv->dims[a] != n) continue;
      if (ix < 0) ix += n;
      if (ix != j || (m >= 0 && gs->in[0] != m)) continue;
      side = t;
      m = gs->in[0];
      break;
    }
    if (side < 0) return 0;
    const int kv = es->in[1 - side];
    const bd_value *kc = &g->values[kv];
    if (!is_f32_const(g, kv) || kc->rank > r - 1) return 0;
    pc[j].ew = en;
    pc[j].konst = kv;
    pc[j].sign = es->op == BD_OP_SUB && side == 1 ? -1 : 1;
  }
  /* M's shape is the Concat's: the constants broadcast against the rest */
  for (int d = 0; d < r; d++)
    if (g->values[m].dims[d] != g->values[y].dims[d]) return 0;
  *m_out = m;
  *axis_out = a;
  return 1;
}

/* The rewrite of a matched Concat k: K and S built, the first piece's element-wise node
 * becomes Mul(M, S), the Concat becomes Add(that, K). */
static bd_status gc_rewrite(ctx_t *c, int k, const gc_piece *pc, int m, int a, bd_err *err) {
  bd_graph *g = c->g;
  const int r = g->values[g->nodes[k].out[0]].rank, n = g->nodes[k].n_in;
  int64_t kd[BD_MAX_RANK], sd[BD_MAX_RANK];
  /* K's dims: per axis of the Concat, the constants' (right-aligned over the rank without
   * the axis, then the axis put back), which must agree where they are not 1 */
  for (int d = 0; d < r; d++) kd[d] = 1, sd[d] = 1;
  kd[a] = sd[a] = n;
  for (int j = 0; j < n; j++) {
    const bd_value *kc = &g->values[pc[j].konst];
    for (int i = 0; i < kc->rank; i++) {
      int d = r - 1 - kc->rank + i; /* its place in the rank without the axis */
      if (d >= a) d++;
      const int64_t v = kc->dims[i];
      if (v == 1) continue;
      if (kd[d] != 1 && kd[d] != v) return BD_E_UNSUPPORTED; /* do not rewrite */
      kd[d] = v;
    }
  }
  int64_t kn = 1;
  for (int d = 0; d < r; d++) kn *= kd[d];
  if (kn > ((int64_t)1 << 24)) return BD_E_UNSUPPORTED;
  float *kb = malloc(sizeof(float) * (size_t)kn), *sb = malloc(sizeof(float) * (size_t)n);
  if (!kb || !sb) {
    free(kb);
    free(sb);
    return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  }
  for (int64_t i = 0; i < kn; i++) { /* element i of K: its piece j, then K_j's element */
    int64_t t = i, off = 0, stride = 1, coord[BD_MAX_RANK];
    for (int d = r - 1; d >= 0; d--) coord[d] = t % kd[d], t /= kd[d];
    const int j = (int)coord[a];
    const bd_value *kc = &g->values[pc[j].konst];
    for (int q = kc->rank - 1; q >= 0; q--) {
      int d = r - 1 - kc->rank + q;
      if (d >= a) d++;
      if (kc->dims[q] != 1) off += coord[d] * stride;
      stride *= kc->dims[q];
    }
    const float v = ((const float *)kc->data)[off];
    kb[i] = pc[j].sign < 0 || g->nodes[pc[j].ew].op == BD_OP_ADD ? v : -v;
  }
  for (int j = 0; j < n; j++) sb[j] = (float)pc[j].sign;
  const int kv = new_const(g, "box_decode_K", r, kd, kb);
  const int sv = kv >= 0 ? new_const(g, "box_decode_S", r, sd, sb) : -1;
  if (kv < 0) free(sb);
  if (kv < 0 || sv < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  bd_node *mul = &g->nodes[pc[0].ew];
  mul->op = BD_OP_MUL;
  mul->in[0] = m;
  mul->in[1] = sv;
  bd_node *add = &g->nodes[k];
  int *in = realloc(add->in, sizeof(int) * 2);
  if (!in) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  add->in = in;
  add->n_in = 2;
  add->op = BD_OP_ADD;
  add->in[0] = mul->out[0];
  add->in[1] = kv;
  return BD_OK;
}

static bd_status fold_gather_concats(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  int done = 0;
  recount(c);
  for (int k = 0; k < g->n_nodes; k++) {
    gc_piece pc[GC_MAX_PIECES];
    int m = -1, a = -1;
    if (g->nodes[k].dead || g->nodes[k].op != BD_OP_CONCAT || !gc_match(c, k, pc, &m, &a))
      continue;
    bd_status st = gc_rewrite(c, k, pc, m, a, err);
    if (st == BD_E_UNSUPPORTED) continue; /* constants that do not stack: left alone */
    if (st != BD_OK) return st;
    if ((st = grow_book(c, err))) return st; /* new constants; recounts */
    done++;
  }
  *count = done;
  return done ? forward(g, 0, NULL, err) : BD_OK;
}

/* ---------- Mul by a constant, then by another: one Mul ---------- */
/* (x * c1) * c2 = x * (c1 * c2) with numpy broadcasting (the DFL integral's stride scale,
 * then fold_gather_concats' signs: one kernel fewer). The first Mul becomes c1 * c2, the
 * second x times that, and the forward pass folds the product like any constant Mul. The
 * result may differ from the two products in the last bit. */
static bd_status fold_const_muls(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  int done = 0;
  recount(c);
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead || nd->op != BD_OP_MUL || nd->n_in != 2) continue;
    const int kq = is_f32_const(g, nd->in[1]) ? 1 : is_f32_const(g, nd->in[0]) ? 0 : -1;
    if (kq < 0) continue;
    const int y = nd->in[1 - kq], p = producer(c, y, BD_OP_MUL);
    if (p < 0 || sole(c, y) != i || g->nodes[p].n_in != 2) continue;
    bd_node *pn = &g->nodes[p];
    const int kp = is_f32_const(g, pn->in[1]) ? 1 : is_f32_const(g, pn->in[0]) ? 0 : -1;
    if (kp < 0) continue;
    bd_shape sa = vshape(&g->values[pn->in[kp]]), sb = vshape(&g->values[nd->in[kq]]), so;
    bd_err scratch;
    if (bd_broadcast(&sa, &sb, &so, nd, &scratch) != BD_OK ||
        bd_shape_numel(&so) > ((int64_t)1 << 24))
      continue; /* constants that do not broadcast together, or a large product */
    const int x = pn->in[1 - kp];
    pn->in[1 - kp] = nd->in[kq]; /* p: c1 * c2 */
    nd->in[kq] = x;              /* i: x * (c1 * c2) */
    done++;
  }
  *count = done;
  recount(c);
  return done ? forward(g, 1, NULL, err) : BD_OK;
}

/* ---------- upsampled Concat pieces through 1x1 convs ---------- */
/* A 1x1 conv (stride 1, no padding, no residual) of Concat(.., Resize(x), ..) on the
 * channel axis splits by linearity: W [y; up(x)] + b = W_y y + b + up(W_x x), and a Resize
 * (nearest or linear: each output pixel a fixed combination of input pixels) commutes with
 * a per-pixel linear map. So the conv becomes Conv(rest, W_y, b, act, residual up(z)
 * before the activation) with z = Conv(x, W_x) computed at the low resolution: the
 * upsampled tensor (every FPN/PAN's top-down path: DAMO-YOLO's merge_4/5, YOLOX's two C3
 * inputs) is neither written at full size nor read by the conv, the Resize moves the
 * conv's few output channels instead of x's many, and W_x's share of the FLOPs drops by
 * the scale's square. Done only where every reader of the Concat takes the rewrite, so
 * the Concat with the upsampled piece goes (its other pieces joined in a smaller one). The
 * partial sums round differently (z is stored in 16 bits on the CUDA backend). */
#define UPC_MAX_READERS 8

static int upc_conv_ok(const bd_graph *g, const bd_node *cv, int y) {
  const bd_conv_params *p = &cv->p.conv;
  return !cv->dead && cv->op == BD_OP_CONV && cv->n_in >= 2 && cv->in[0] == y &&
         cv->in[1] != y && (cv->n_in < 3 || cv->in[2] != y) && (cv->n_in < 4 || cv->in[3] < 0) &&
         p->res == BD_RES_NONE && p->group == 1 && is_k(p, 1, 0) && p->sh == 1 && p->sw == 1 &&
         is_f32_const(g, cv->in[1]) && g->values[cv->in[1]].rank == 4;
}

/* Concat k's upsampled piece j (its Resize node *rz) and readers (*nr of them in rd) when
 * the rewrite applies; else 0. */
static int upc_match(const ctx_t *c, int k, int *j_out, int *rz, int *rd, int *nr) {
  const bd_graph *g = c->g;
  const bd_node *cn = &g->nodes[k];
  const int y = cn->out[0];
  const bd_value *yv = &g->values[y];
  if (cn->p.concat.axis != 1 || cn->n_in < 2 || yv->rank != 4 || yv->is_output ||
      yv->dtype != BD_DT_F32 || c->uses[y] < 1 || c->uses[y] > UPC_MAX_READERS)
    return 0;
  int j = -1;
  for (int i = 0; i < cn->n_in && j < 0; i++) {
    const int u = cn->in[i], p = producer(c, u, BD_OP_RESIZE);
    if (p < 0 || g->values[g->nodes[p].in[0]].rank != 4 || g->nodes[p].n_in != 1) continue;
    int twice = 0; /* the same upsampled tensor twice in the Concat: left alone */
    for (int q = 0; q < cn->n_in; q++) twice += q != i && cn->in[q] == u;
    if (!twice) j = i, *rz = p;
  }
  if (j < 0) return 0;
  int n = 0;
  for (int i = k + 1; i < g->n_nodes && n <= c->uses[y]; i++) {
    const bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    int reads = 0;
    for (int q = 0; q < nd->n_in; q++) reads += nd->in[q] == y;
    if (!reads) continue;
    if (reads != 1 || !upc_conv_ok(g, nd, y) || n == UPC_MAX_READERS) return 0;
    const bd_value *w = &g->values[nd->in[1]];
    if (w->dims[1] != yv->dims[1]) return 0;
    rd[n++] = i;
  }
  if (n != c->uses[y]) return 0;
  *j_out = j;
  *nr = n;
  return 1;
}

/* Appends node `op` reading `in` (n_in of them) and writing a new value shaped like value
 * `like` with ch channels (shapes are inferred again after the pass), moves it to index
 * pos; returns the value or -1. */
static int upc_node(bd_graph *g, bd_op op, const char *name, int n_in, const int *in, int like,
                    int64_t ch, int pos) {
  const bd_value *l = &g->values[like];
  const int64_t d[4] = {l->dims[0], ch, l->dims[2], l->dims[3]};
  const uint8_t bdep = l->batch_dep;
  const int v = bd_graph_add_value(g, name, BD_DT_F32, 4, d);
  if (v < 0) return -1;
  g->values[v].batch_dep = bdep;
  const int nn = bd_graph_add_node(g, op, name, n_in, in, 1, &v);
  if (nn < 0) return -1;
  move_last_to(g, pos);
  return v;
}

/* The rewrite of Concat k (upc_match's j, rz, rd, nr): new nodes go before k, the
 * readers (all after k) follow their shift. */
static bd_status upc_rewrite(ctx_t *c, int k, int j, int rz, int *rd, int nr, bd_err *err) {
  bd_graph *g = c->g;
  const int n_in = g->nodes[k].n_in, x = g->nodes[rz].in[0], up = g->nodes[k].in[j];
  const bd_resize_params rp = g->nodes[rz].p.resize;
  int64_t off = 0, cx = g->values[g->nodes[k].in[j]].dims[1];
  for (int i = 0; i < j; i++) off += g->values[g->nodes[k].in[i]].dims[1];
  const int64_t ctot = g->values[g->nodes[k].out[0]].dims[1];
  char name[200];
  int rest;
  if (n_in == 2) {
    rest = g->nodes[k].in[1 - j];
  } else { /* the other pieces, joined */
    int pieces[64], np = 0;
    if (n_in - 1 > 64) return BD_E_UNSUPPORTED;
    for (int i = 0; i < n_in; i++)
      if (i != j) pieces[np++] = g->nodes[k].in[i];
    snprintf(name, sizeof name, "%.160s/rest", NAME(&g->nodes[k]));
    rest = upc_node(g, BD_OP_CONCAT, name, np, pieces, g->nodes[k].out[0], ctot - cx, k);
    if (rest < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->nodes[k].p = g->nodes[k + 1].p; /* the new Concat (now at k): axis 1 */
    k++;
    for (int i = 0; i < nr; i++) rd[i]++;
  }
  for (int i = 0; i < nr; i++) {
    bd_node *cv = &g->nodes[rd[i]];
    const bd_value *wv = &g->values[cv->in[1]];
    const int64_t m = wv->dims[0];
    float *wz = malloc(sizeof(float) * (size_t)(m * cx)),
          *wy = malloc(sizeof(float) * (size_t)(m * (ctot - cx)));
    if (!wz || !wy) {
      free(wz);
      free(wy);
      return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    }
    const float *w = wv->data;
    for (int64_t o = 0; o < m; o++)
      for (int64_t q = 0, a = 0; q < ctot; q++) {
        if (q >= off && q < off + cx)
          wz[o * cx + q - off] = w[o * ctot + q];
        else
          wy[o * (ctot - cx) + a++] = w[o * ctot + q];
      }
    char base[200];
    snprintf(base, sizeof base, "%.180s", NAME(cv));
    int64_t dz[4] = {m, cx, 1, 1}, dy[4] = {m, ctot - cx, 1, 1};
    const int vz = new_const(g, base, 4, dz, wz);
    const int vy = vz >= 0 ? new_const(g, base, 4, dy, wy) : -1;
    if (vz < 0) free(wy);
    if (vz < 0 || vy < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    bd_conv_params zp = g->nodes[rd[i]].p.conv;
    zp.act = BD_ACT_NONE;
    zp.res = BD_RES_NONE;
    int zin[2] = {x, vz};
    snprintf(name, sizeof name, "%.160s/low", base);
    const int z = upc_node(g, BD_OP_CONV, name, 2, zin, x, m, k);
    if (z < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->nodes[k].p.conv = zp;
    k++;
    snprintf(name, sizeof name, "%.160s/up", base);
    const int u = upc_node(g, BD_OP_RESIZE, name, 1, &z, up, m, k);
    if (u < 0) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    g->nodes[k].p.resize = rp;
    k++;
    for (int q = 0; q < nr; q++) rd[q] += 2;
    cv = &g->nodes[rd[i]];
    if (cv->n_in < 4) {
      int *ni = realloc(cv->in, sizeof(int) * 4);
      if (!ni) return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
      cv->in = ni;
      if (cv->n_in < 3) cv->in[2] = -1;
      cv->n_in = 4;
    }
    cv->in[0] = rest;
    cv->in[1] = vy;
    cv->in[3] = u;
    cv->p.conv.res = BD_RES_PRE_ACT;
  }
  g->nodes[k].dead = 1; /* the Concat; its Resize goes with dead-node removal if unread */
  return grow_book(c, err);
}

static bd_status split_upsampled_concats(ctx_t *c, int *count, bd_err *err) {
  bd_graph *g = c->g;
  int done = 0;
  const char *e = getenv("BATCHDET_SPLIT_UPSAMPLED"); /* 0: off (device A/B runs) */
  *count = 0;
  if (e && strcmp(e, "0") == 0) return BD_OK;
  recount(c);
  for (int k = 0; k < g->n_nodes; k++) {
    int j, rz, rd[UPC_MAX_READERS], nr;
    if (g->nodes[k].dead || g->nodes[k].op != BD_OP_CONCAT || !upc_match(c, k, &j, &rz, rd, &nr))
      continue;
    const int before = g->n_nodes;
    bd_status st = upc_rewrite(c, k, j, rz, rd, nr, err);
    if (st == BD_E_UNSUPPORTED) continue;
    if (st != BD_OK) return st;
    k += g->n_nodes - before; /* past the Concat, now further down */
    done++;
  }
  *count = done;
  return done ? forward(g, 0, NULL, err) : BD_OK;
}

/* ---------- dead nodes and compaction ---------- */
static int remove_dead(bd_graph *g) {
  uint8_t *need = calloc((size_t)g->n_values, 1);
  int removed = 0;
  if (!need) return 0;
  for (int k = 0; k < g->n_outputs; k++) need[g->outputs[k]] = 1;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead) continue;
    if (!need[nd->out[0]]) {
      nd->dead = 1;
      removed++;
      continue;
    }
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] >= 0) need[nd->in[k]] = 1;
  }
  free(need);
  return removed;
}

static bd_status compact(bd_graph *g, bd_err *err) {
  int *map = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
  uint8_t *keep = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!map || !keep) {
    free(map);
    free(keep);
    return bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
  }
  for (int k = 0; k < g->n_inputs; k++) keep[g->inputs[k]] = 1;
  for (int k = 0; k < g->n_outputs; k++) keep[g->outputs[k]] = 1;
  int nn = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    bd_node *nd = &g->nodes[i];
    if (nd->dead) {
      free(nd->name);
      free(nd->in);
      free(nd->out);
      continue;
    }
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] >= 0) keep[nd->in[k]] = 1;
    keep[nd->out[0]] = 1;
    g->nodes[nn++] = *nd;
  }
  g->n_nodes = nn;
  int nv = 0;
  for (int v = 0; v < g->n_values; v++) {
    if (!keep[v]) {
      free(g->values[v].name);
      free(g->values[v].data);
      map[v] = -1;
      continue;
    }
    map[v] = nv;
    g->values[nv++] = g->values[v];
  }
  g->n_values = nv;
  for (int v = 0; v < nv; v++) g->values[v].producer = -1;
  for (int i = 0; i < nn; i++) {
    bd_node *nd = &g->nodes[i];
    for (int k = 0; k < nd->n_in; k++)
      if (nd->in[k] >= 0) nd->in[k] = map[nd->in[k]];
    nd->out[0] = map[nd->out[0]];
    g->values[nd->out[0]].producer = i;
  }
  for (int k = 0; k < g->n_inputs; k++) g->inputs[k] = map[g->inputs[k]];
  for (int k = 0; k < g->n_outputs; k++) g->outputs[k] = map[g->outputs[k]];
  free(map);
  free(keep);
  return BD_OK;
}

/* What every backend may rely on after bd_compile. */
static bd_status validate(const bd_graph *g, bd_err *err) {
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    const char *why = NULL;
    switch (nd->op) {
      case BD_OP_CONV:
        if (!is_f32_const(g, nd->in[1]) || (nd->n_in > 2 && nd->in[2] >= 0 && !is_f32_const(g, nd->in[2])))
          why = "weights and bias must be float32 constants";
        break;
      case BD_OP_BATCHNORM:
        for (int k = 1; k < 5; k++)
          if (!is_f32_const(g, nd->in[k])) why = "parameters must be float32 constants";
        break;
      case BD_OP_SHAPE: case BD_OP_CONSTANT:
        why = "left after folding";
        break;
      default:
        break;
    }
    if (!why && nd->op != BD_OP_SHAPE && g->values[nd->out[0]].dtype != BD_DT_F32 &&
        nd->op != BD_OP_CAST)
      why = "computes a non-float tensor at run time";
    if (why)
      return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): %s", NAME(nd), bd_op_name(nd->op),
                        why);
  }
  return BD_OK;
}

bd_status bd_compile(bd_graph *g, const bd_compile_opts *opts, bd_compile_report *rep,
                     bd_err *err) {
  bd_compile_report r = {0};
  bd_status st;
  ctx_t c = {g, NULL, NULL};
  r.nodes_in = g->n_nodes;
  if (g->n_inputs != 1 || g->n_outputs < 1)
    return bd_err_set(err, BD_E_INVALID, "compile: graph needs one input and outputs");
  if ((st = forward(g, 1, &r.folded_constants, err))) goto out;
  c.uses = malloc(sizeof(int) * (size_t)g->n_values);
  c.first = malloc(sizeof(int) * (size_t)g->n_values);
  if (!c.uses || !c.first) {
    st = bd_err_set(err, BD_E_NOMEM, "compile: out of memory");
    goto out;
  }
  recount(&c);
  if ((st = remove_noops(&c, &r.removed, err))) goto out;
  if ((st = fold_bn(&c, &r.folded_bn, err))) goto out;
  if ((st = fold_scale(&c, &r.folded_scale, err))) goto out;
  if ((st = merge_repconv(&c, &r.merged_repconv, err))) goto out;
  if (!opts || !opts->no_fusion) {
    fuse_conv(&c, &r.fused_act, &r.fused_residual);
    fuse_silu(&c, &r.fused_act);
    r.chained_pools = chain_pools(&c);
    if ((!opts || !opts->keep_upsampled) &&
        (st = split_upsampled_concats(&c, &r.split_upsampled, err)))
      goto out;
    if ((st = fuse_dfl(&c, &r.fused_dfl, err))) goto out;
    if ((st = sink_transposes(&c, &r.sunk_transposes, err))) goto out;
    if ((st = fold_gather_concats(&c, &r.folded_gather_concats, err))) goto out;
    r.removed += remove_dead(g); /* the replaced pieces: their Gathers no longer read M */
    if ((st = fold_const_muls(&c, &r.folded_muls, err))) goto out;
  }
  r.removed += remove_dead(g);
  if ((st = compact(g, err))) goto out;
  if ((st = validate(g, err))) goto out;
  r.nodes_out = g->n_nodes;
out:
  free(c.uses);
  free(c.first);
  if (rep) *rep = r;
  return st;
}
