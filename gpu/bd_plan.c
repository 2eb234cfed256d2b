/* bd_plan_new: specialises a compiled graph for one batch size N.
 *
 * Shapes are re-inferred with the input's dim 0 = N. Two rules undo what fixed-batch
 * exports bake in at B0 (see bd_infer_node for Reshape):
 *  - Reshape targets: a literal leading entry equal to the B0-time leading dim of a
 *    batch-carrying value scales by N/B0 ([B0,85,-1] -> [N,85,-1], [B0*A*4,R+1] ->
 *    [N*A*4,R+1]).
 *  - Binary ops with a constant operand whose dim 0 is B0 > 1 while the other operand
 *    has dim 0 = N: the constant's rows must be identical (anchor/stride tables copied
 *    per batch row); its plan dims become [1,...] and it broadcasts. Distinct rows are
 *    rejected, since no batch size but B0 could be right then.
 * Memory: every activation (produced by a node, not a graph output) gets a 64-byte
 * aligned arena slot, placed by bd_pack: largest first at the lowest offset not used by
 * a value whose lifetime [producer step, last consumer step] overlaps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bd_compile.h"
#include "bd_compile_int.h"

#define ALIGN 64

static int is_binary(bd_op op) {
  return op == BD_OP_ADD || op == BD_OP_SUB || op == BD_OP_MUL || op == BD_OP_DIV;
}

/* Collapses a B0-row constant operand of a binary node to one row (plan dims only). */
static bd_status rebatch_const(const bd_graph *g, const bd_node *nd, bd_plan *p, bd_err *err) {
  for (int k = 0; k < 2; k++) {
    int cv = nd->in[k], ov = nd->in[1 - k];
    const bd_value *c = &g->values[cv];
    if (!c->data || c->rank < 1 || g->batch0 <= 1 || p->dims[cv][0] != g->batch0) continue;
    if (!g->values[ov].batch_dep || p->rank[ov] != c->rank || p->dims[ov][0] != p->batch) continue;
    int64_t numel = bd_value_numel(c);
    size_t row = (size_t)(numel / g->batch0) * bd_dtype_size(c->dtype);
    for (int64_t r = 1; r < g->batch0; r++)
      if (memcmp((const uint8_t *)c->data + (size_t)r * row, c->data, row) != 0)
        return bd_err_set(err, BD_E_UNSUPPORTED,
                          "node '%s' (%s): constant '%s' has %lld different batch rows; the "
                          "model can only run at batch %lld", nd->name, bd_op_name(nd->op),
                          c->name, (long long)g->batch0, (long long)g->batch0);
    p->dims[cv][0] = 1;
  }
  return BD_OK;
}

static int by_size(const void *a, const void *b) {
  const bd_pack_item *x = *(const bd_pack_item *const *)a, *y = *(const bd_pack_item *const *)b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x < y ? -1 : x > y;
}

static int by_off(const void *a, const void *b) {
  const bd_pack_item *x = *(const bd_pack_item *const *)a, *y = *(const bd_pack_item *const *)b;
  return x->off < y->off ? -1 : x->off > y->off;
}

bd_status bd_pack(bd_pack_item *items, int n, size_t align, size_t *total, bd_err *err) {
  bd_status st = BD_OK;
  size_t nn = (size_t)(n > 0 ? n : 1);
  bd_pack_item **order = malloc(sizeof *order * nn), **live = malloc(sizeof *live * nn);
  *total = 0;
  if (!order || !live) {
    st = bd_err_set(err, BD_E_NOMEM, "memory plan: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    order[i] = &items[i];
    items[i].off = SIZE_MAX;
  }
  /* Largest first, each at the lowest offset free over its whole lifetime. */
  qsort(order, (size_t)n, sizeof *order, by_size);
  for (int i = 0; i < n; i++) {
    bd_pack_item *it = order[i];
    size_t size = (it->size + align - 1) / align * align;
    int nl = 0;
    for (int j = 0; j < i; j++)
      if (order[j]->def <= it->last && it->def <= order[j]->last) live[nl++] = order[j];
    qsort(live, (size_t)nl, sizeof *live, by_off);
    size_t off = 0;
    for (int j = 0; j < nl; j++) {
      size_t lsize = (live[j]->size + align - 1) / align * align;
      if (off + size <= live[j]->off) break;
      if (live[j]->off + lsize > off) off = live[j]->off + lsize;
    }
    it->off = off;
    if (off + size > *total) *total = off + size;
  }
out:
  free(order);
  free(live);
  return st;
}

static bd_status memory_plan(const bd_graph *g, bd_plan *p, bd_err *err) {
  int n = 0;
  bd_pack_item *s = malloc(sizeof *s * (size_t)(g->n_values ? g->n_values : 1));
  int *idx = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
  bd_status st = BD_OK;
  if (!s || !idx) {
    st = bd_err_set(err, BD_E_NOMEM, "plan: out of memory");
    goto out;
  }
  for (int v = 0; v < g->n_values; v++) {
    idx[v] = -1;
    p->offset[v] = SIZE_MAX;
    const bd_value *val = &g->values[v];
    if (val->producer < 0 || val->is_output || val->data || val->is_input) continue;
    int64_t numel = 1;
    for (int k = 0; k < p->rank[v]; k++) numel *= p->dims[v][k];
    size_t sz = (size_t)numel * bd_dtype_size(val->dtype);
    s[n].def = s[n].last = val->producer; /* steps are node order */
    s[n].size = sz;
    idx[v] = n++;
    p->naive_bytes += (sz + ALIGN - 1) / ALIGN * ALIGN;
  }
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      int v = g->nodes[i].in[k];
      if (v >= 0 && idx[v] >= 0 && s[idx[v]].last < i) s[idx[v]].last = i;
    }
  if ((st = bd_pack(s, n, ALIGN, &p->arena_bytes, err)) != BD_OK) goto out;
  for (int v = 0; v < g->n_values; v++)
    if (idx[v] >= 0) p->offset[v] = s[idx[v]].off;
out:
  free(s);
  free(idx);
  return st;
}

bd_status bd_plan_new(const bd_graph *g, int batch, bd_plan **out, bd_err *err) {
  bd_status st = BD_OK;
  *out = NULL;
  if (batch < 1 || batch > 4096)
    return bd_err_set(err, BD_E_LIMIT, "plan: batch %d is outside 1..4096", batch);
  if (g->n_inputs != 1) return bd_err_set(err, BD_E_INVALID, "plan: graph needs one input");
  bd_plan *p = calloc(1, sizeof *p);
  if (!p) return bd_err_set(err, BD_E_NOMEM, "plan: out of memory");
  size_t nv = (size_t)(g->n_values ? g->n_values : 1);
  p->batch = batch;
  p->n_values = g->n_values;
  p->rank = calloc(nv, sizeof *p->rank);
  p->dims = calloc(nv, sizeof *p->dims);
  p->offset = calloc(nv, sizeof *p->offset);
  p->steps = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *p->steps);
  bd_shape ins[8], *pin = NULL;
  if (!p->rank || !p->dims || !p->offset || !p->steps) {
    st = bd_err_set(err, BD_E_NOMEM, "plan: out of memory");
    goto out;
  }
  for (int v = 0; v < g->n_values; v++) {
    p->rank[v] = g->values[v].rank;
    for (int k = 0; k < g->values[v].rank; k++) p->dims[v][k] = g->values[v].dims[k];
  }
  p->dims[g->inputs[0]][0] = batch;
  bd_infer_ctx cx = {g, 1, g->batch0, batch};
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *nd = &g->nodes[i];
    bd_shape o;
    if (is_binary(nd->op) && batch != g->batch0 && (st = rebatch_const(g, nd, p, err))) goto out;
    pin = nd->n_in > 8 ? malloc(sizeof *pin * (size_t)nd->n_in) : ins;
    if (!pin) {
      st = bd_err_set(err, BD_E_NOMEM, "plan: out of memory");
      goto out;
    }
    for (int k = 0; k < nd->n_in; k++) {
      int v = nd->in[k];
      pin[k].rank = v < 0 ? -1 : p->rank[v];
      if (v >= 0) memcpy(pin[k].d, p->dims[v], sizeof pin[k].d);
    }
    st = bd_infer_node(&cx, nd, pin, &o, err);
    if (pin != ins) free(pin);
    pin = NULL;
    if (st) {
      bd_err_prefix(err, "plan for batch %d", batch);
      goto out;
    }
    int ov = nd->out[0];
    p->rank[ov] = o.rank;
    memcpy(p->dims[ov], o.d, sizeof o.d);
    p->steps[p->n_steps++] = i;
  }
  st = memory_plan(g, p, err);
out:
  if (st) bd_plan_destroy(p);
  else *out = p;
  return st;
}
