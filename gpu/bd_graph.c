#include "bd_graph.h"

#include <stdlib.h>
#include <string.h>

size_t bd_dtype_size(bd_dtype t) {
  switch (t) {
    case BD_DT_F32: return 4;
    case BD_DT_I64: return 8;
    case BD_DT_I32: return 4;
    case BD_DT_U8: return 1;
    case BD_DT_BOOL: return 1;
    case BD_DT_F64: return 8;
  }
  return 0;
}

const char *bd_dtype_name(bd_dtype t) {
  switch (t) {
    case BD_DT_F32: return "float32";
    case BD_DT_I64: return "int64";
    case BD_DT_I32: return "int32";
    case BD_DT_U8: return "uint8";
    case BD_DT_BOOL: return "bool";
    case BD_DT_F64: return "float64";
  }
  return "?";
}

static const char *const op_names[BD_OP__COUNT] = {
    [BD_OP_CONV] = "Conv",         [BD_OP_BATCHNORM] = "BatchNormalization",
    [BD_OP_RELU] = "Relu",         [BD_OP_SIGMOID] = "Sigmoid",
    [BD_OP_SILU] = "SiLU",         [BD_OP_EXP] = "Exp",
    [BD_OP_ADD] = "Add",           [BD_OP_SUB] = "Sub",
    [BD_OP_MUL] = "Mul",           [BD_OP_DIV] = "Div",
    [BD_OP_CONCAT] = "Concat",     [BD_OP_MAXPOOL] = "MaxPool",
    [BD_OP_RESIZE] = "Resize",     [BD_OP_RESHAPE] = "Reshape",
    [BD_OP_FLATTEN] = "Flatten",   [BD_OP_TRANSPOSE] = "Transpose",
    [BD_OP_SOFTMAX] = "Softmax",   [BD_OP_MATMUL] = "MatMul",
    [BD_OP_SLICE] = "Slice",       [BD_OP_GATHER] = "Gather",
    [BD_OP_UNSQUEEZE] = "Unsqueeze", [BD_OP_SQUEEZE] = "Squeeze",
    [BD_OP_CAST] = "Cast",         [BD_OP_SHAPE] = "Shape",
    [BD_OP_CONSTANT] = "Constant", [BD_OP_IDENTITY] = "Identity",
    [BD_OP_SOFTMAX_DOT] = "SoftmaxDot",
};

const char *bd_op_name(bd_op op) {
  if ((int)op <= 0 || op >= BD_OP__COUNT || !op_names[op]) return "?";
  return op_names[op];
}

bd_status bd_graph_new(bd_graph **out, bd_err *err) {
  bd_graph *g = calloc(1, sizeof *g);
  if (!g) return bd_err_set(err, BD_E_NOMEM, "graph: out of memory");
  g->batch0 = 1;
  *out = g;
  return BD_OK;
}

void bd_graph_destroy(bd_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_values; i++) {
    free(g->values[i].name);
    free(g->values[i].data);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    free(g->nodes[i].name);
    free(g->nodes[i].in);
    free(g->nodes[i].out);
  }
  free(g->values);
  free(g->nodes);
  free(g);
}

int bd_graph_add_value(bd_graph *g, const char *name, bd_dtype dt, int rank, const int64_t *dims) {
  if (rank < 0 || rank > BD_MAX_RANK) return -1;
  if (g->n_values == g->cap_values) {
    int cap = g->cap_values ? g->cap_values * 2 : 64;
    bd_value *nv = realloc(g->values, (size_t)cap * sizeof *nv);
    if (!nv) return -1;
    g->values = nv;
    g->cap_values = cap;
  }
  bd_value *v = &g->values[g->n_values];
  memset(v, 0, sizeof *v);
  v->name = strdup(name ? name : "");
  if (!v->name) return -1;
  v->dtype = dt;
  v->rank = rank;
  for (int i = 0; i < rank; i++) v->dims[i] = dims ? dims[i] : -1;
  v->producer = -1;
  return g->n_values++;
}

int bd_graph_add_node(bd_graph *g, bd_op op, const char *name, int n_in, const int *in, int n_out,
                      const int *out) {
  if (n_in < 0 || n_out < 0) return -1;
  if (g->n_nodes == g->cap_nodes) {
    int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
    bd_node *nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
    if (!nn) return -1;
    g->nodes = nn;
    g->cap_nodes = cap;
  }
  bd_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->n_in = n_in;
  n->n_out = n_out;
  n->name = strdup(name ? name : "");
  n->in = malloc(sizeof(int) * (size_t)(n_in ? n_in : 1));
  n->out = malloc(sizeof(int) * (size_t)(n_out ? n_out : 1));
  if (!n->name || !n->in || !n->out) {
    free(n->name);
    free(n->in);
    free(n->out);
    return -1;
  }
  if (n_in) memcpy(n->in, in, sizeof(int) * (size_t)n_in);
  if (n_out) memcpy(n->out, out, sizeof(int) * (size_t)n_out);
  for (int i = 0; i < n_out; i++)
    if (out[i] >= 0 && out[i] < g->n_values) g->values[out[i]].producer = g->n_nodes;
  return g->n_nodes++;
}

int64_t bd_value_numel(const bd_value *v) {
  int64_t n = 1;
  for (int i = 0; i < v->rank; i++) {
    if (v->dims[i] < 0) return -1;
    n *= v->dims[i];
  }
  return n;
}

int bd_graph_readers(const bd_graph *g, int v, int (*visit)(void *ctx, int n, int j), void *ctx) {
  int reads = 0;
  for (int n = 0; n < g->n_nodes; n++)
    for (int j = 0; j < g->nodes[n].n_in; j++) {
      if (g->nodes[n].in[j] != v) continue;
      if (visit && !visit(ctx, n, j)) return -1;
      reads++;
    }
  return reads;
}

void bd_plan_destroy(bd_plan *p) {
  if (!p) return;
  free(p->rank);
  free(p->dims);
  free(p->offset);
  free(p->steps);
  free(p);
}
