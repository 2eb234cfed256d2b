/* bd_cost: see bd_cost.h. */
#include "bd_cost.h"

#include <stdlib.h>
#include <string.h>

static double plan_numel(const bd_plan *p, int v) {
  double n = 1;
  for (int d = 0; d < p->rank[v]; d++) n *= (double)p->dims[v][d];
  return n;
}

static int is_view(bd_op op) {
  return op == BD_OP_RESHAPE || op == BD_OP_FLATTEN || op == BD_OP_SQUEEZE ||
         op == BD_OP_UNSQUEEZE || op == BD_OP_IDENTITY;
}

static int is_graph_output(const bd_graph *g, int v) {
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == v) return 1;
  return 0;
}

static bd_status conv_cost(const bd_graph *g, const bd_plan *p, const bd_node *nd, bd_cost *c,
                           bd_err *err) {
  int x = nd->in[0], w = nd->n_in > 1 ? nd->in[1] : -1, y = nd->out[0];
  if (w < 0 || g->values[w].rank != 4 || p->rank[y] != 4 || p->rank[x] != 4)
    return bd_err_set(err, BD_E_INVALID, "cost: conv '%s' is not 2-D with a 4-D weight", nd->name);
  const int64_t *wd = g->values[w].dims;
  int group = nd->p.conv.group > 0 ? nd->p.conv.group : 1;
  if (wd[0] != p->dims[y][1] || wd[1] * group != p->dims[x][1])
    return bd_err_set(err, BD_E_INVALID, "cost: conv '%s' weight [%lld,%lld,..] vs C=%lld M=%lld",
                      nd->name, (long long)wd[0], (long long)wd[1], (long long)p->dims[x][1],
                      (long long)p->dims[y][1]);
  double macs = plan_numel(p, y) * (double)wd[1] * (double)wd[2] * (double)wd[3];
  c->n_conv++;
  c->conv_macs += macs;
  if (group > 1) {
    c->n_conv_grouped++;
    c->conv_grouped_macs += macs;
  }
  return BD_OK;
}

static bd_status matmul_cost(const bd_graph *g, const bd_plan *p, const bd_node *nd, bd_cost *c,
                             bd_err *err) {
  (void)g;
  int a = nd->in[0], y = nd->out[0];
  if (p->rank[a] < 1)
    return bd_err_set(err, BD_E_INVALID, "cost: matmul '%s' has a scalar input", nd->name);
  c->n_matmul++;
  c->matmul_macs += plan_numel(p, y) * (double)p->dims[a][p->rank[a] - 1];
  return BD_OK;
}

bd_status bd_cost_of(const bd_graph *g, const bd_plan *p, bd_cost *c, bd_err *err) {
  bd_status st = BD_OK;
  int *uses = NULL;
  unsigned char *seen = NULL;
  memset(c, 0, sizeof *c);
  if (!g || !p || p->n_values != g->n_values)
    return bd_err_set(err, BD_E_INVALID, "cost: the plan is not for this graph");
  c->batch = p->batch;
  uses = calloc((size_t)g->n_values, sizeof *uses);
  seen = calloc((size_t)g->n_values, 1);
  if (!uses || !seen) {
    st = bd_err_set(err, BD_E_NOMEM, "cost: out of memory");
    goto out;
  }
  for (int s = 0; s < p->n_steps; s++) {
    const bd_node *nd = &g->nodes[p->steps[s]];
    for (int i = 0; i < nd->n_in; i++)
      if (nd->in[i] >= 0 && nd->in[i] < g->n_values) uses[nd->in[i]]++;
  }
  for (int s = 0; s < p->n_steps; s++) {
    const bd_node *nd = &g->nodes[p->steps[s]];
    int weighted = nd->op == BD_OP_CONV || nd->op == BD_OP_MATMUL || nd->op == BD_OP_SOFTMAX_DOT;
    if (nd->op == BD_OP_CONV && (st = conv_cost(g, p, nd, c, err)) != BD_OK) goto out;
    if (nd->op == BD_OP_MATMUL && (st = matmul_cost(g, p, nd, c, err)) != BD_OK) goto out;
    if (nd->op == BD_OP_SOFTMAX_DOT) /* a fused DFL integral: the MatMul's dot products */
      c->matmul_macs += plan_numel(p, nd->out[0]) * (double)p->dims[nd->in[0]][nd->p.softmax.axis];
    for (int i = 0; i < nd->n_in; i++) {
      int v = nd->in[i];
      if (v < 0 || v >= g->n_values || !g->values[v].data || seen[v]) continue;
      seen[v] = 1; /* a constant shared by several nodes is read once */
      if (g->values[v].dtype != BD_DT_F32) continue;
      double n = (double)bd_value_numel(&g->values[v]);
      if (weighted) {
        c->weight_values += n;
        c->weight_bytes += 2 * n;
      } else {
        c->other_const_bytes += 4 * n;
      }
    }
    for (int o = 0; o < nd->n_out; o++) {
      int v = nd->out[o];
      if (v < 0 || v >= g->n_values || is_graph_output(g, v)) continue;
      double n = plan_numel(p, v);
      if (nd->op == BD_OP_CONV) c->act_min_bytes += 2 * 2 * n;
      if (!is_view(nd->op)) c->act_graph_bytes += 2 * n * (1 + uses[v]);
    }
  }
  for (int i = 0; i < g->n_inputs; i++) c->in_bytes += plan_numel(p, g->inputs[i]);
  for (int i = 0; i < g->n_outputs; i++) c->out_bytes += 4 * plan_numel(p, g->outputs[i]);
out:
  free(uses);
  free(seen);
  return st;
}

double bd_cost_min_bytes(const bd_cost *c) {
  return c->weight_bytes + c->other_const_bytes + c->in_bytes + c->act_min_bytes + c->out_bytes;
}

double bd_cost_floor_ms(const bd_cost *c, double tb_per_s, double tflops, double *mem_ms,
                        double *math_ms) {
  double mem = tb_per_s > 0 ? bd_cost_min_bytes(c) / (tb_per_s * 1e12) * 1e3 : 0;
  double math = tflops > 0 ? 2 * (c->conv_macs + c->matmul_macs) / (tflops * 1e12) * 1e3 : 0;
  if (mem_ms) *mem_ms = mem;
  if (math_ms) *math_ms = math;
  return mem > math ? mem : math;
}
