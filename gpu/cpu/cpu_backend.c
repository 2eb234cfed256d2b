/* The cpu backend: FP32 NCHW execution of a bd_plan, the engine's correctness oracle
 * and its slow path on machines without GPUs.
 *
 * prepare() validates every step of the plan (ops, shapes, buffer bounds) and grows the
 * instance's buffers to the largest plan seen: one arena (activations at the plan's
 * offsets), per-thread scratch (im2col tiles, GEMM packing) and a side buffer for graph
 * inputs/outputs whose dtype is not float32. run() only binds pointers and executes the
 * ops in plan order on the instance's thread pool; it never allocates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu_internal.h"

#ifdef BD_HAVE_BLAS
#include <cblas.h>
#endif

#define CPU_MAX_THREADS BD_CPU_MAX_THREADS
#define CPU_MAX_ARENA ((size_t)64 << 30)

static bd_cpu_op_fn op_fn(bd_op op) {
  switch (op) {
    case BD_OP_CONV: return bd_cpu_op_conv;
    case BD_OP_BATCHNORM: return bd_cpu_op_batchnorm;
    case BD_OP_RELU:
    case BD_OP_SIGMOID:
    case BD_OP_SILU:
    case BD_OP_EXP: return bd_cpu_op_unary;
    case BD_OP_ADD:
    case BD_OP_SUB:
    case BD_OP_MUL:
    case BD_OP_DIV: return bd_cpu_op_binary;
    case BD_OP_CONCAT: return bd_cpu_op_concat;
    case BD_OP_MAXPOOL: return bd_cpu_op_maxpool;
    case BD_OP_RESIZE: return bd_cpu_op_resize;
    case BD_OP_RESHAPE:
    case BD_OP_FLATTEN:
    case BD_OP_UNSQUEEZE:
    case BD_OP_SQUEEZE:
    case BD_OP_IDENTITY: return bd_cpu_op_copy;
    case BD_OP_TRANSPOSE: return bd_cpu_op_transpose;
    case BD_OP_SOFTMAX: return bd_cpu_op_softmax;
    case BD_OP_SOFTMAX_DOT: return bd_cpu_op_softmax_dot;
    case BD_OP_MATMUL: return bd_cpu_op_matmul;
    case BD_OP_SLICE: return bd_cpu_op_slice;
    case BD_OP_GATHER: return bd_cpu_op_gather;
    case BD_OP_CAST: return bd_cpu_op_cast;
    case BD_OP_SHAPE: return bd_cpu_op_shape;
    default: return NULL;
  }
}

/* Minimum inputs each op reads (absent optional inputs are -1 beyond these). */
static int op_min_inputs(bd_op op) {
  switch (op) {
    case BD_OP_BATCHNORM: return 5;
    case BD_OP_ADD:
    case BD_OP_SUB:
    case BD_OP_MUL:
    case BD_OP_DIV:
    case BD_OP_MATMUL:
    case BD_OP_SOFTMAX_DOT:
    case BD_OP_GATHER:
    case BD_OP_CONV: return 2;
    default: return 1;
  }
}

/* Process CPU time, not wall time: the dev machines are shared, and CPU time per op
 * is what a profile of one instance should show (at 1 thread it is the op's cost). */
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void bd_cpu_backend_set_profile(bd_backend *be, double *ms) { ((bd_cpu *)be)->profile = ms; }
void bd_cpu_backend_set_step_profile(bd_backend *be, double *ms) {
  ((bd_cpu *)be)->step_profile = ms;
}

void bd_cpu_backend_set_channel_tiles(bd_backend *be, int mode) {
  ((bd_cpu *)be)->cv_mode = mode;
}

void bd_cpu_backend_set_blas_threads_mode(bd_backend *be, int on) {
  ((bd_cpu *)be)->conv_blas_threads = on ? 1 : 0;
}

const char *bd_cpu_conv_kernels(void) {
  int isa = bd_cpu_fused_isa();
  if (isa == 512) return "AVX-512 fused tiles";
  if (isa == 256) return "AVX2 fused tiles";
#ifdef BD_HAVE_BLAS
  static _Thread_local char buf[96];
  snprintf(buf, sizeof buf, "im2col + OpenBLAS (%s kernels)", openblas_get_corename());
  return buf;
#else
  return "im2col + built-in GEMM";
#endif
}

int bd_cpu_fused_isa(void) {
  return bd_cpu_pw512_available() ? 512 : bd_cpu_pw256_available() ? 256 : 0;
}

void bd_cpu_backend_set_fused_tiles(bd_backend *be, int on) {
  int isa = 0;
  if (on == 1)
    isa = bd_cpu_fused_isa();
  else if (on == 512)
    isa = bd_cpu_pw512_available() ? 512 : 0;
  else if (on == 256)
    isa = bd_cpu_pw256_available() ? 256 : 0;
  ((bd_cpu *)be)->fused = isa;
}

static int io_index(const int *list, int n, int v) {
  for (int i = 0; i < n; i++)
    if (list[i] == v) return i;
  return -1;
}

static void *xaligned(size_t bytes) {
  size_t b = (bytes + 63) & ~(size_t)63;
  return aligned_alloc(64, b ? b : 64);
}

static bd_status check_value(const bd_graph *g, const bd_plan *p, const bd_node *n, int v,
                             bd_err *err) {
  if (v < 0 || v >= g->n_values)
    return bd_err_set(err, BD_E_INVALID, "cpu: node '%s' (%s) refers to value %d", n->name,
                      bd_op_name(n->op), v);
  if (p->rank[v] < 0 || p->rank[v] > BD_MAX_RANK)
    return bd_err_set(err, BD_E_INVALID, "cpu: value '%s' rank %d", g->values[v].name,
                      p->rank[v]);
  int64_t numel = 1;
  for (int d = 0; d < p->rank[v]; d++) {
    if (p->dims[v][d] < 0 || p->dims[v][d] > ((int64_t)1 << 40))
      return bd_err_set(err, BD_E_INVALID, "cpu: value '%s' has unknown or huge dim %d",
                        g->values[v].name, d);
    numel *= p->dims[v][d];
    if (numel > ((int64_t)1 << 40))
      return bd_err_set(err, BD_E_LIMIT, "cpu: value '%s' too large", g->values[v].name);
  }
  size_t es = bd_dtype_size(g->values[v].dtype);
  if (es == 0) return bd_err_set(err, BD_E_INVALID, "cpu: value '%s' dtype", g->values[v].name);
  size_t bytes = (size_t)numel * es;
  const bd_value *val = &g->values[v];
  if (p->offset[v] == SIZE_MAX) {
    if (!val->data && io_index(g->inputs, g->n_inputs, v) < 0 &&
        io_index(g->outputs, g->n_outputs, v) < 0)
      return bd_err_set(err, BD_E_INVALID, "cpu: value '%s' has no storage in the plan",
                        val->name);
    /* A constant baked with the exported batch B0 (identical rows, checked by the
     * compiler) is planned as one row: the first row is what the kernels read. */
    int b0_rows = val->data && val->rank > 0 && p->rank[v] == val->rank &&
                  val->dims[0] == g->batch0 && p->dims[v][0] == 1 && numel > 0 &&
                  bd_value_numel(val) == numel * val->dims[0];
    if (val->data && bd_value_numel(val) != numel && !b0_rows)
      return bd_err_set(err, BD_E_INVALID, "cpu: constant '%s' size differs from the plan",
                        val->name);
  } else if (p->offset[v] > p->arena_bytes || bytes > p->arena_bytes - p->offset[v]) {
    return bd_err_set(err, BD_E_INVALID, "cpu: value '%s' lies outside the arena", val->name);
  }
  return BD_OK;
}

static bd_status cpu_prepare(bd_backend *be, const bd_plan *p, bd_err *err) {
  bd_cpu *c = (bd_cpu *)be;
  const bd_graph *g = be->graph;
  if (!p || p->n_values != g->n_values)
    return bd_err_set(err, BD_E_INVALID, "cpu: plan does not belong to this graph");
  if (p->arena_bytes > CPU_MAX_ARENA)
    return bd_err_set(err, BD_E_LIMIT, "cpu: arena of %zu bytes", p->arena_bytes);
  size_t scratch = bd_cpu_gemm_scratch_floats();
  for (int s = 0; s < p->n_steps; s++) {
    int ni = p->steps[s];
    if (ni < 0 || ni >= g->n_nodes)
      return bd_err_set(err, BD_E_INVALID, "cpu: plan step %d: node %d", s, ni);
    const bd_node *n = &g->nodes[ni];
    if (!op_fn(n->op))
      return bd_err_set(err, BD_E_UNSUPPORTED, "cpu: node '%s': op %s is not supported", n->name,
                        bd_op_name(n->op));
    if (n->n_in < op_min_inputs(n->op) || n->n_out < 1)
      return bd_err_set(err, BD_E_INVALID, "cpu: node '%s' (%s): %d inputs, %d outputs",
                        n->name, bd_op_name(n->op), n->n_in, n->n_out);
    for (int i = 0; i < n->n_in; i++) {
      if (n->in[i] < 0 && i < op_min_inputs(n->op))
        return bd_err_set(err, BD_E_INVALID, "cpu: node '%s': input %d missing", n->name, i);
      if (n->in[i] >= 0) {
        bd_status st = check_value(g, p, n, n->in[i], err);
        if (st != BD_OK) return st;
      }
    }
    bd_status st = check_value(g, p, n, n->out[0], err);
    if (st != BD_OK) return st;
    if (n->op == BD_OP_CONV) {
      st = bd_cpu_conv_check(g, p, n, err);
      if (st != BD_OK) return st;
      size_t need = bd_cpu_conv_scratch(g, p, n);
      if (need > scratch) scratch = need;
    }
    if (n->op == BD_OP_MAXPOOL || n->op == BD_OP_RESIZE) {
      size_t need = n->op == BD_OP_MAXPOOL ? bd_cpu_maxpool_scratch(p, n)
                                           : bd_cpu_resize_scratch(p, n);
      if (need > scratch) scratch = need;
    }
  }
  size_t side = 0;
  for (int i = 0; i < g->n_inputs + g->n_outputs; i++) {
    int v = i < g->n_inputs ? g->inputs[i] : g->outputs[i - g->n_inputs];
    if (v < 0 || v >= g->n_values) return bd_err_set(err, BD_E_INVALID, "cpu: graph I/O value");
    if (g->values[v].dtype != BD_DT_F32)
      side += ((size_t)bd_cpu_numel(p, v) * bd_dtype_size(g->values[v].dtype) + 63) & ~(size_t)63;
  }
  scratch = (scratch + 15) & ~(size_t)15;
  if (p->arena_bytes > c->arena_bytes) {
    void *a = xaligned(p->arena_bytes);
    if (!a) return bd_err_set(err, BD_E_NOMEM, "cpu: arena of %zu bytes", p->arena_bytes);
    free(c->arena);
    c->arena = a;
    c->arena_bytes = p->arena_bytes;
  }
  if (scratch > c->scratch_floats) {
    void *a = xaligned(scratch * sizeof(float) * (size_t)c->threads);
    if (!a) return bd_err_set(err, BD_E_NOMEM, "cpu: scratch of %zu floats", scratch);
    free(c->scratch);
    c->scratch = a;
    c->scratch_floats = scratch;
  }
  if (side > c->side_bytes) {
    void *a = xaligned(side);
    if (!a) return bd_err_set(err, BD_E_NOMEM, "cpu: I/O side buffer");
    free(c->side);
    c->side = a;
    c->side_bytes = side;
  }
  if (!c->ptr) {
    c->ptr = calloc((size_t)g->n_values + 1, sizeof *c->ptr);
    if (!c->ptr) return bd_err_set(err, BD_E_NOMEM, "cpu: value table");
    c->n_values = g->n_values;
  }
  if (!c->wpack) {
    c->wpack = calloc((size_t)g->n_nodes + 1, sizeof *c->wpack);
    c->wpack_cv = calloc((size_t)g->n_nodes + 1, 1);
    if (!c->wpack || !c->wpack_cv) return bd_err_set(err, BD_E_NOMEM, "cpu: packed weight table");
    c->n_nodes = g->n_nodes;
  }
  /* Packed once: the layout depends on the weights' shape, not on the plan. */
  for (int s = 0; s < p->n_steps; s++) {
    int ni = p->steps[s];
    if (g->nodes[ni].op != BD_OP_CONV || c->wpack[ni]) continue;
    int cv = 0;
    bd_status st = bd_cpu_conv_pack(c, g, p, &g->nodes[ni], &c->wpack[ni], &cv, err);
    if (st != BD_OK) return st;
    c->wpack_cv[ni] = (uint8_t)cv;
  }
  return BD_OK;
}

static bd_status cpu_run(bd_backend *be, const bd_plan *p, const float *const *inputs,
                         float *const *outputs, bd_err *err) {
  bd_cpu *c = (bd_cpu *)be;
  const bd_graph *g = be->graph;
  if (!c->ptr || p->n_values != g->n_values || p->arena_bytes > c->arena_bytes)
    return bd_err_set(err, BD_E_INVALID, "cpu: run before prepare for this plan");
  if ((g->n_inputs && !inputs) || (g->n_outputs && !outputs))
    return bd_err_set(err, BD_E_INVALID, "cpu: missing input/output buffers");
  for (int i = 0; i < g->n_inputs; i++)
    if (!inputs[i]) return bd_err_set(err, BD_E_INVALID, "cpu: input %d is NULL", i);
  for (int i = 0; i < g->n_outputs; i++)
    if (!outputs[i]) return bd_err_set(err, BD_E_INVALID, "cpu: output %d is NULL", i);
  size_t side = 0;
  for (int v = 0; v < g->n_values; v++) {
    if (g->values[v].data)
      c->ptr[v] = g->values[v].data;
    else if (p->offset[v] != SIZE_MAX)
      c->ptr[v] = c->arena + p->offset[v];
    else
      c->ptr[v] = NULL;
  }
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (g->values[v].data || g->values[v].producer < 0) continue; /* copied at the end */
    if (g->values[v].dtype == BD_DT_F32) {
      c->ptr[v] = outputs[i];
    } else {
      c->ptr[v] = c->side + side;
      side += ((size_t)bd_cpu_numel(p, v) * bd_dtype_size(g->values[v].dtype) + 63) & ~(size_t)63;
    }
  }
  for (int i = 0; i < g->n_inputs; i++) {
    int v = g->inputs[i];
    if (g->values[v].dtype == BD_DT_F32) {
      c->ptr[v] = (void *)(uintptr_t)inputs[i]; /* read-only: no op writes a graph input */
    } else {
      c->ptr[v] = c->side + side;
      side += ((size_t)bd_cpu_numel(p, v) * bd_dtype_size(g->values[v].dtype) + 63) & ~(size_t)63;
      bd_cpu_convert(inputs[i], BD_DT_F32, c->ptr[v], g->values[v].dtype, bd_cpu_numel(p, v));
    }
  }
  for (int s = 0; s < p->n_steps; s++) {
    const bd_node *n = &g->nodes[p->steps[s]];
    double t0 = c->profile || c->step_profile ? now_ms() : 0;
    bd_status st = op_fn(n->op)(c, p, n, err);
    if (st != BD_OK) return st;
    if (c->profile || c->step_profile) {
      double dt = now_ms() - t0;
      int slot = n->op == BD_OP_CONV ? BD_OP__COUNT + bd_cpu_conv_path(g, p, n) : (int)n->op;
      if (c->profile) c->profile[slot] += dt;
      if (c->step_profile) c->step_profile[s] += dt;
    }
  }
  for (int i = 0; i < g->n_outputs; i++) {
    int v = g->outputs[i];
    if (c->ptr[v] != outputs[i] && c->ptr[v])
      bd_cpu_convert(c->ptr[v], g->values[v].dtype, outputs[i], BD_DT_F32, bd_cpu_numel(p, v));
  }
  return BD_OK;
}

static void cpu_destroy(bd_backend *be) {
  bd_cpu *c = (bd_cpu *)be;
  if (!c) return;
  bd_cpu_pool_destroy(c->pool);
  free(c->arena);
  free(c->scratch);
  free(c->side);
  free(c->ptr);
  if (c->wpack)
    for (int i = 0; i < c->n_nodes; i++) free(c->wpack[i]);
  free(c->wpack);
  free(c->wpack_cv);
  free(c);
}

static const bd_backend_vtbl cpu_vtbl = {
    .name = "cpu", .prepare = cpu_prepare, .run = cpu_run, .destroy = cpu_destroy};

bd_status bd_cpu_backend_new(const bd_graph *g, int threads, bd_backend **out, bd_err *err) {
  if (!g || !out) return bd_err_set(err, BD_E_INVALID, "cpu: no graph");
  if (threads < 0 || threads > CPU_MAX_THREADS)
    return bd_err_set(err, BD_E_LIMIT, "cpu: %d threads (0..%d)", threads, CPU_MAX_THREADS);
  if (threads == 0) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    threads = nc < 1 ? 1 : nc > CPU_MAX_THREADS ? CPU_MAX_THREADS : (int)nc;
  }
  bd_cpu *c = calloc(1, sizeof *c);
  if (!c) return bd_err_set(err, BD_E_NOMEM, "cpu: out of memory");
  c->base.vt = &cpu_vtbl;
  c->base.graph = g;
  c->threads = threads;
  c->fused = bd_cpu_fused_isa();
  bd_status st = bd_cpu_pool_new(threads, &c->pool, err);
  if (st != BD_OK) {
    free(c);
    return st;
  }
#ifdef BD_HAVE_BLAS
  /* Our pool splits every conv into tiles; BLAS threads on top would oversubscribe. */
  openblas_set_num_threads(1);
#endif
  *out = &c->base;
  return BD_OK;
}
