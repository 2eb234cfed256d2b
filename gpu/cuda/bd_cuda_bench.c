/* Benchmark hooks of the cuda backend (see bd_cuda_backend.h): the device time of a
 * plan's network alone, the device time of each of its actions, and the device memory in
 * use. `batchdet bench` reports them next to its host-timed latency so that its numbers
 * compare with peers timed by CUDA events on inputs already on the GPU
 * (tests/bench/gpu_peers.py), and --profile says where the time goes. Nothing on the
 * inference path calls this file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"

/* Captures cp's network without the input/output copies into cp->core_exec. */
static bd_status capture_core(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  bd_cuda_capture_lock();
  bd_status st = bd_cuda_capture(b, cp, bd_cuda_enqueue, 0, &cp->core_graph, &cp->core_exec, err);
  bd_cuda_capture_unlock();
  if (st != BD_OK) {
    cp->core_exec = NULL;
    (void)cudaGetLastError();
    bd_err_prefix(err, "cuda time: capturing the network without copies");
  }
  return st;
}

bd_status bd_cuda_backend_time_device(bd_backend *be, const bd_plan *p, int reps, double *ms,
                                      bd_err *err) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  bd_status st = BD_OK;
  cudaEvent_t e0 = NULL, e1 = NULL;
  float t = 0;
  double total = 0;
  bd_cuda_cplan *cp = bd_cuda_backend_plan(b, p);
  if (!cp)
    return bd_err_set(err, BD_E_INVALID, "cuda time: plan (batch %d) not prepared", p->batch);
  if (reps < 1 || reps > 10000)
    return bd_err_set(err, BD_E_INVALID, "cuda time: reps %d outside 1..10000", reps);
  BD_CU(cudaSetDevice(b->device));
  /* Same execution mode as run(): a graph when the plan's full run is one. */
  int graphed = b->use_graphs && cp->exec;
  if (graphed && !cp->core_exec && (st = capture_core(b, cp, err)) != BD_OK) goto out;
  BD_CU(cudaEventCreate(&e0));
  BD_CU(cudaEventCreate(&e1));
  for (int r = 0; r < reps; ++r) {
    /* The last run's input once more before each rep, outside the timed interval: the
     * input lives in the arena, where the layers after the first ones overwrite it. */
    for (int i = 0; i < be->graph->n_inputs; ++i)
      BD_CU(cudaMemcpyAsync(cp->d_in[i], cp->h_in[i], cp->in_bytes[i], cudaMemcpyHostToDevice,
                            b->stream));
    BD_CU(cudaEventRecord(e0, b->stream));
    if (graphed)
      BD_CU(cudaGraphLaunch(cp->core_exec, b->stream));
    else if ((st = bd_cuda_enqueue(b, cp, 0, err)) != BD_OK)
      goto out;
    BD_CU(cudaEventRecord(e1, b->stream));
    BD_CU(cudaEventSynchronize(e1));
    BD_CU(cudaEventElapsedTime(&t, e0, e1));
    total += t;
  }
  *ms = total / reps;
out:
  if (st != BD_OK) (void)cudaStreamSynchronize(b->stream);
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  return st;
}

/* ---- per-action profile ---- */

_Static_assert(BD_A_OP == (int)BD_PROF_OP && BD_A_CONVERT == (int)BD_PROF_CONVERT &&
                   BD_A_OUTPUT == (int)BD_PROF_OUTPUT && BD_A_ZERO == (int)BD_PROF_ZERO &&
                   BD_A_LAYOUT == (int)BD_PROF_LAYOUT,
               "action kinds and profile row kinds agree");

static double numel_of(const bd_graph *g, const bd_plan *p, int v) {
  if (g->values[v].data) return (double)bd_value_numel(&g->values[v]); /* a constant */
  double n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= (double)p->dims[v][d];
  return n;
}

static double rep_size(int rep) { return rep == BD_REP_H16 ? 2 : 4; }

/* The bytes an op node reads and writes (bd_prof_row.bytes), following the
 * representation choices of bd_cuda_plan_node / run_op. */
static double op_bytes(const bd_cuda_be *b, const bd_cuda_cplan *cp, const bd_node *nd) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  int x = nd->in[0], y = nd->out[0];
  double out = numel_of(g, p, y) * rep_size(cp->prim[y]), in = 0;
  if (cp->vkind[y]) return 0; /* a view: reads its source in place, moves nothing */
  switch (nd->op) {
  case BD_OP_CONV:
    in = numel_of(g, p, x) * 2 + numel_of(g, p, nd->in[1]) * 2; /* 16-bit KRSC weights */
    if (nd->n_in > 2 && nd->in[2] >= 0) in += numel_of(g, p, nd->in[2]) * 4;
    if (nd->n_in > 3 && nd->in[3] >= 0) /* or what it reads upsampled */
      in += numel_of(g, p, bd_cuda_res_src(cp, nd->in[3])) * 2;
    return in + out;
  case BD_OP_MAXPOOL: case BD_OP_RESIZE:
    return numel_of(g, p, x) * 2 + out;
  case BD_OP_RESHAPE: case BD_OP_FLATTEN: case BD_OP_SQUEEZE: case BD_OP_UNSQUEEZE:
  case BD_OP_IDENTITY: case BD_OP_CAST:
    return 2 * numel_of(g, p, y) * 4; /* a copy (in-place ones are views, above) */
  case BD_OP_SOFTMAX:
    return numel_of(g, p, x) * 4 + out;
  case BD_OP_SOFTMAX_DOT: /* the logits in their own representation (a 16-bit view) */
    return numel_of(g, p, x) * rep_size(bd_cuda_rep_read(cp, x)) + out;
  case BD_OP_GATHER:
    return 2 * out;
  case BD_OP_MATMUL:
    return (numel_of(g, p, x) + numel_of(g, p, nd->in[1])) * 4 + out;
  case BD_OP_SLICE:
    return numel_of(g, p, y) * rep_size(bd_cuda_rep_read(cp, x)) + out;
  case BD_OP_CONCAT: /* only the pieces not written in place by their producers */
    out = 0;
    for (int k = 0; k < nd->n_in; ++k) {
      int v = nd->in[k];
      if (v < 0 || cp->alias[v] == y) continue;
      in += numel_of(g, p, v) * rep_size(bd_cuda_rep_read(cp, v));
      out += numel_of(g, p, v) * rep_size(cp->prim[y]);
    }
    return in + out;
  default: /* element-wise, Transpose: every input through a view */
    for (int k = 0; k < nd->n_in; ++k) {
      int v = nd->in[k];
      if (v >= 0) in += numel_of(g, p, v) * rep_size(bd_cuda_rep_read(cp, v));
    }
    return in + out;
  }
}

/* Everything of row r but its times. */
static void describe(const bd_cuda_be *b, const bd_cuda_cplan *cp, int i, bd_prof_row *r) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  const bd_cuda_action *a = &cp->acts[i];
  memset(r, 0, sizeof(*r));
  r->step = i;
  r->kind = (bd_prof_kind)a->kind;
  r->node = a->kind == BD_A_OP ? a->node : -1;
  r->op = -1;
  r->value = a->value;
  r->rep16 = a->kind == BD_A_OUTPUT ? 0 : a->rep == BD_REP_H16;
  r->rank = p->rank[a->value];
  memcpy(r->dims, p->dims[a->value], sizeof(r->dims));
  r->conv_algo = BD_PROF_NOT_CONV;
  r->name = g->values[a->value].name ? g->values[a->value].name : "";
  double n = numel_of(g, p, a->value);
  if (a->kind == BD_A_CONVERT) {
    r->bytes = n * rep_size(cp->prim[a->value]) + n * rep_size(a->rep);
    return;
  }
  if (a->kind == BD_A_OUTPUT) {
    r->bytes = n * rep_size(bd_cuda_rep_read(cp, a->value)) + n * 4;
    return;
  }
  if (a->kind == BD_A_LAYOUT) { /* the FP32 input read once, the 16-bit tensor written */
    const int fused = cp->rd_fuse > 0; /* or nothing: its conv reads the input (rd_fuse) */
    r->name = fused ? "input layout (in the next conv)" : "input layout";
    r->rank = 4;
    r->dims[0] = p->batch, r->dims[1] = cp->rd_lo.pitch, r->dims[2] = cp->rd_lo.out_h;
    r->dims[3] = cp->rd_lo.out_w;
    r->bytes = fused ? 0 : n * 4 + (double)bd_cuda_prep_layout_bytes(&cp->rd_lo, p->batch);
    return;
  }
  if (a->kind == BD_A_ZERO) { /* written once, channels padded */
    r->bytes = (double)bd_cuda_rep_bytes(cp, a->value, a->rep);
    return;
  }
  const bd_node *nd = &g->nodes[a->node];
  r->op = nd->op;
  r->name = nd->name ? nd->name : "";
  r->bytes = op_bytes(b, cp, nd);
  r->upsampled_read = nd->op == BD_OP_RESIZE && cp->upsrc[nd->out[0]] >= 0;
  if (nd->op == BD_OP_CONV) {
    r->conv_upres = nd->n_in > 3 && nd->in[3] >= 0 && cp->upsrc[nd->in[3]] >= 0;
    const int64_t *x = p->dims[nd->in[0]], *y = p->dims[nd->out[0]];
    const bd_conv_params *c = &nd->p.conv;
    int grp = c->group > 0 ? c->group : 1;
    r->flops = 2.0 * (double)y[0] * (double)y[1] * (double)y[2] * (double)y[3] *
               (double)(x[1] / grp) * c->kh * c->kw;
    r->conv_twin = cp->twin_on[a->node];
    if (r->conv_twin == 1) { /* the launch computes both convs: their FLOPs and bytes */
      const bd_node *t = &g->nodes[b->twin[a->node]];
      r->flops = r->flops / (double)y[1] * (double)(y[1] + p->dims[t->out[0]][1]);
      r->bytes += op_bytes(b, cp, t) - numel_of(g, p, t->in[0]) * 2; /* one input read */
    } else if (r->conv_twin == 2)
      r->flops = r->bytes = 0;
    r->conv_algo = bd_cuda_conv_layer_algo(cp->layer[a->node], &r->conv_padded);
    r->conv_fused = bd_cuda_conv_layer_is_fused(cp->layer[a->node]);
    int tile = bd_cuda_conv_layer_tile(cp->layer[a->node]);
    r->conv_tile = tile >= 0 ? bd_cuda_conv_mma_tile_name(tile) : NULL;
  }
}

/* One action of the profile, enqueued as the captured graph runs it (bd_cuda_time_replayed). */
typedef struct prof_action {
  bd_cuda_be *b;
  bd_cuda_cplan *cp;
  int i;
} prof_action;
static bd_status prof_action_run(void *ctx, cudaStream_t s, bd_err *err) {
  const prof_action *a = ctx;
  (void)s; /* the backend's stream */
  a->cp->rd_fusing = a->cp->rd_skip != NULL; /* set with rd_fuse */
  bd_status st = bd_cuda_enqueue_action(a->b, a->cp, a->i, err);
  a->cp->rd_fusing = 0;
  return st;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

bd_status bd_cuda_backend_profile(bd_backend *be, const bd_plan *p, int reps, bd_prof_row **rows,
                                  int *n_rows, bd_err *err) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  bd_status st = BD_OK;
  cudaEvent_t *ev = NULL;
  float *t = NULL; /* [action][rep] ms */
  bd_prof_row *r = NULL;
  int n_ev = 0;
  *rows = NULL;
  *n_rows = 0;
  bd_cuda_cplan *cp = bd_cuda_backend_plan(b, p);
  if (!cp)
    return bd_err_set(err, BD_E_INVALID, "cuda profile: plan (batch %d) not prepared", p->batch);
  if (reps < 1 || reps > 10000)
    return bd_err_set(err, BD_E_INVALID, "cuda profile: reps %d outside 1..10000", reps);
  int n = cp->n_acts;
  if (n < 1) return bd_err_set(err, BD_E_INVALID, "cuda profile: the plan has no actions");
  ev = calloc((size_t)n * 2, sizeof(*ev));
  t = malloc(sizeof(*t) * (size_t)n * (size_t)reps);
  r = calloc((size_t)n, sizeof(*r));
  if (!ev || !t || !r) {
    st = bd_err_set(err, BD_E_NOMEM, "cuda profile: out of memory");
    goto out;
  }
  BD_CU(cudaSetDevice(b->device));
  for (; n_ev < 2 * n; ++n_ev) BD_CU(cudaEventCreate(&ev[n_ev]));
  /* One warm-up rep, then `reps`: each action alone between two events, uncaptured, on
   * the stream a captured run uses; one wait per rep. */
  for (int rep = -1; rep < reps; ++rep) {
    for (int i = 0; i < n; ++i) {
      BD_CU(cudaEventRecord(ev[2 * i], b->stream));
      /* as the captured graph runs them: a layout its conv reads itself left out */
      cp->rd_fusing = cp->rd_skip != NULL; /* set with rd_fuse */
      if (!(cp->rd_fusing && cp->rd_skip[i])) st = bd_cuda_enqueue_action(b, cp, i, err);
      cp->rd_fusing = 0;
      if (st != BD_OK) goto out;
      BD_CU(cudaEventRecord(ev[2 * i + 1], b->stream));
    }
    BD_CU(cudaEventSynchronize(ev[2 * n - 1]));
    for (int i = 0; rep >= 0 && i < n; ++i)
      BD_CU(cudaEventElapsedTime(&t[(size_t)i * reps + rep], ev[2 * i], ev[2 * i + 1]));
  }
  for (int i = 0; i < n; ++i) {
    float *ti = t + (size_t)i * reps;
    qsort(ti, (size_t)reps, sizeof(*ti), cmp_float);
    describe(b, cp, i, &r[i]);
    r[i].ms_min = ti[0];
    r[i].ms_median = reps % 2 ? ti[reps / 2] : 0.5 * ((double)ti[reps / 2 - 1] + ti[reps / 2]);
  }
  /* Each action once more, as a replayed graph runs it: what its kernels cost without the
   * host's gaps (at batch 1 a lone action's interval above is mostly launch latency). */
  for (int i = 0; i < n; ++i) {
    if (cp->rd_skip && cp->rd_skip[i]) continue; /* left out of the run: 0 */
    prof_action pa = {b, cp, i};
    float ms = 0;
    int captured = 0;
    st = bd_cuda_time_replayed(b->stream, prof_action_run, &pa, reps < 20 ? reps : 20, 1, &ms,
                               &captured, err);
    if (st != BD_OK) goto out;
    r[i].ms_replay = ms;
  }
  *rows = r;
  *n_rows = n;
  r = NULL;
out:
  if (st != BD_OK) {
    bd_err_prefix(err, "cuda profile (batch %d)", p->batch);
    (void)cudaStreamSynchronize(b->stream);
  }
  for (int i = 0; i < n_ev; ++i) cudaEventDestroy(ev[i]);
  free(ev);
  free(t);
  free(r);
  return st;
}

bd_status bd_cuda_device_mem_used(int device, size_t *used, size_t *total, bd_err *err) {
  bd_status st = BD_OK;
  size_t fr = 0, tot = 0;
  BD_CU(cudaSetDevice(device));
  BD_CU(cudaMemGetInfo(&fr, &tot));
  if (used) *used = tot - fr;
  if (total) *total = tot;
out:
  return st;
}
