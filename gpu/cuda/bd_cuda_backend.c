/* The cuda backend: runs a compiled bd_graph in 16-bit storage (IEEE half by
 * default, bfloat16 with BD_CUDA_BF16) with FP32 math on one GPU.
 *
 * Representation: every runtime value has a primary representation chosen at prepare:
 * 4-D outputs of the conv trunk (Conv, activations, binary ops, Concat, MaxPool,
 * Resize, Slice) are 16-bit NHWC; everything else (outputs of Reshape, Transpose,
 * Softmax, MatMul, Gather, ..., and all non-4-D values) is FP32 in ONNX order, so the
 * head's softmax and box decode stay FP32 (damoyolo.md item 20). An op that needs the
 * other representation of an input gets a conversion step inserted before it, into a
 * buffer of its own. Layout-agnostic ops read any representation through strided
 * views, so most boundaries cost nothing extra.
 *
 * Memory: a sizing pass over the plan decides every buffer a run needs - each value's
 * primary in its own representation (16-bit NHWC values take 2 bytes an element) and
 * each conversion - with its lifetime in steps; bd_pack places them in one arena (a
 * buffer is reused once its last reader ran). The arena, the device I/O buffers, their
 * pinned host twins and the cuDNN workspace are shared by all plans of the backend
 * (bd_cuda_shared: everything runs on the backend's one stream, in order), sized by the
 * first plan prepared; the engine prepares its largest batch first. The whole run (H2D
 * copies, every op, D2H copies) is captured once per plan into a CUDA graph and
 * replayed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"
#include "bd_cuda_probe.h"

static int64_t numel_of(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= p->dims[v][d];
  return n;
}
bd_cuda_cplan *bd_cuda_find_plan(bd_cuda_be *b, const bd_plan *p) {
  for (int i = 0; i < b->n_plans; ++i)
    if (b->plans[i]->plan == p && b->plans[i]->batch == p->batch &&
        b->plans[i]->n_steps == p->n_steps)
      return b->plans[i];
  return NULL;
}

static void bd_cuda_cplan_free(bd_cuda_cplan *cp, int n_nodes) {
  if (!cp) return;
  if (cp->exec) cudaGraphExecDestroy(cp->exec);
  if (cp->core_exec) cudaGraphExecDestroy(cp->core_exec);
  if (cp->core_graph) cudaGraphDestroy(cp->core_graph);
  if (cp->graph) cudaGraphDestroy(cp->graph);
  for (int s = 0; s < BD_DD_SLOTS; ++s) {
    if (cp->dd_exec[s]) cudaGraphExecDestroy(cp->dd_exec[s]);
    if (cp->dd_graph[s]) cudaGraphDestroy(cp->dd_graph[s]);
  }
  if (cp->layer)
    for (int i = 0; i < n_nodes; ++i) bd_cuda_conv_layer_destroy(cp->layer[i]);
  /* Private device buffers are in extra, private pinned ones in own_host; the shared
   * ones belong to the backend. */
  for (int i = 0; i < cp->n_extra; ++i) cudaFree(cp->extra[i]);
  for (int i = 0; i < cp->n_own_host; ++i) cudaFreeHost(cp->own_host[i]);
  if (cp->probe) cudaFree(cp->probe);
  free(cp->pred_at);
  free(cp->pred);
  free(cp->ws_slot);
  free(cp->item);
  free(cp->scratch);
  free(cp->alias);
  free(cp->alias_ch);
  free(cp->pad_to);
  free(cp->dd_skip);
  free(cp->rd_skip);
  free(cp->zeroed);
  free(cp->same);
  free(cp->vkind);
  free(cp->vview);
  free(cp->voff);
  free(cp->twin_on);
  free(cp->upsrc);
  free(cp->items);
  free(cp->layer);
  free(cp->extra);
  free(cp->acts);
  free(cp->buf);
  free(cp->prim);
  free(cp);
}

static pthread_mutex_t capture_mu = PTHREAD_MUTEX_INITIALIZER;
void bd_cuda_capture_lock(void) {
  pthread_mutex_lock(&capture_mu);
}
void bd_cuda_capture_unlock(void) {
  pthread_mutex_unlock(&capture_mu);
}

/* Captures one enqueue into a CUDA graph; on an instantiation failure captures once
 * more from scratch (never patches a graph). */
bd_status bd_cuda_capture(bd_cuda_be *b, bd_cuda_cplan *cp,
                          bd_status (*enqueue)(bd_cuda_be *, bd_cuda_cplan *, int, bd_err *),
                          int arg, cudaGraph_t *graph, cudaGraphExec_t *exec, bd_err *err) {
  bd_status st = BD_OK;
  /* The launches captured here carry programmatic dependent launch when this plan's
   * batch wants it (the caller holds the capture lock: no other capture sees the
   * switch; a launch outside a capture reads it 0 or 1, both correct). */
  __atomic_store_n(&bd_cuda_pdl, cp->batch <= b->pdl_max_batch, __ATOMIC_RELAXED);
  for (int attempt = 0; attempt < 2; ++attempt) {
    cudaGraph_t g = NULL;
    /* Relaxed: a library call that queries the device during capture (cuDNN may) must
     * not invalidate it; nothing here allocates or synchronises while capturing. */
    BD_CU(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed));
    st = enqueue(b, cp, arg, err);
    cudaError_t ce = cudaStreamEndCapture(b->stream, &g);
    if (st != BD_OK) {
      if (g) cudaGraphDestroy(g);
      bd_err_prefix(err, "while capturing the CUDA graph");
      goto out;
    }
    BD_CU(ce);
    cudaError_t ie = cudaGraphInstantiate(exec, g, 0);
    if (ie == cudaSuccess) {
      *graph = g;
      goto out;
    }
    cudaGraphDestroy(g);
    *exec = NULL;
    (void)cudaGetLastError();
    if (attempt == 1)
      BD_CU(ie);
  }
out:
  __atomic_store_n(&bd_cuda_pdl, 0, __ATOMIC_RELAXED);
  return st;
}

/* A plan state for p with its tables allocated, nothing bound; NULL when out of memory. */
static bd_cuda_cplan *cplan_new(const bd_graph *g, const bd_plan *p) {
  bd_cuda_cplan *cp = calloc(1, sizeof(*cp));
  if (!cp) return NULL;
  cp->plan = p;
  cp->batch = p->batch;
  cp->n_steps = p->n_steps;
  cp->buf = calloc((size_t)g->n_values, sizeof(*cp->buf));
  cp->prim = malloc((size_t)g->n_values);
  cp->extra = calloc((size_t)g->n_values * 2 + 32, sizeof(void *));
  cp->acts = calloc((size_t)p->n_steps * 6 + 32, sizeof(bd_cuda_action));
  cp->layer = calloc((size_t)g->n_nodes, sizeof(*cp->layer));
  cp->item = malloc(sizeof(*cp->item) * (size_t)g->n_values);
  cp->scratch = malloc(sizeof(*cp->scratch) * (size_t)(g->n_nodes ? g->n_nodes : 1));
  /* Items: a value's two representations, a node's two scratch copies, an output's
   * conversion at the end (at most 8), and one spare. */
  cp->items = calloc((size_t)g->n_values * 2 + (size_t)g->n_nodes * 2 + 8 + 1,
                     sizeof(*cp->items));
  cp->alias = malloc(sizeof(*cp->alias) * (size_t)g->n_values);
  cp->alias_ch = calloc((size_t)g->n_values, sizeof(*cp->alias_ch));
  cp->pad_to = calloc((size_t)g->n_values, sizeof(*cp->pad_to));
  cp->zeroed = calloc((size_t)g->n_values, 1);
  cp->same = malloc(sizeof(*cp->same) * (size_t)g->n_values);
  cp->vkind = calloc((size_t)g->n_values, 1);
  cp->vview = calloc((size_t)g->n_values, sizeof(*cp->vview));
  cp->voff = calloc((size_t)g->n_values, sizeof(*cp->voff));
  cp->twin_on = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
  cp->upsrc = malloc(sizeof(*cp->upsrc) * (size_t)(g->n_values ? g->n_values : 1));
  if (!cp->buf || !cp->prim || !cp->extra || !cp->acts || !cp->layer || !cp->item ||
      !cp->scratch || !cp->items || !cp->alias || !cp->alias_ch || !cp->pad_to ||
      !cp->zeroed || !cp->same || !cp->vkind || !cp->vview || !cp->voff || !cp->twin_on ||
      !cp->upsrc) {
    bd_cuda_cplan_free(cp, g->n_nodes);
    return NULL;
  }
  memset(cp->alias, -1, sizeof(*cp->alias) * (size_t)g->n_values);
  memset(cp->same, -1, sizeof(*cp->same) * (size_t)g->n_values);
  memset(cp->upsrc, -1, sizeof(*cp->upsrc) * (size_t)(g->n_values ? g->n_values : 1));
  memset(cp->item, -1, sizeof(*cp->item) * (size_t)g->n_values);
  memset(cp->scratch, -1, sizeof(*cp->scratch) * (size_t)(g->n_nodes ? g->n_nodes : 1));
  return cp;
}

/* A buffer of `need` bytes from the shared slot (*shared, *shared_bytes): the shared one
 * when it is large enough, a new shared one while no prepared plan uses the old, else a
 * private one owned by cp. host: pinned host memory instead of device memory. */
static bd_status shared_buf(bd_cuda_be *b, bd_cuda_cplan *cp, void **shared,
                            size_t *shared_bytes, size_t need, int host, void **out,
                            bd_err *err) {
  bd_status st = BD_OK;
  void *m = NULL;
  if (!need) need = 64;
  if (need <= *shared_bytes) {
    *out = *shared;
    return BD_OK;
  }
  if (b->n_plans == 0) {
    if (*shared) host ? cudaFreeHost(*shared) : cudaFree(*shared);
    *shared = NULL;
    *shared_bytes = 0;
  }
  BD_CU(host ? cudaMallocHost(&m, need) : cudaMalloc(&m, need));
  if (b->n_plans == 0) {
    *shared = m;
    *shared_bytes = need;
  } else if (host) {
    cp->own_host[cp->n_own_host++] = m;
  } else {
    cp->extra[cp->n_extra++] = m;
  }
  *out = m;
out:
  return st;
}

static void shared_free(bd_cuda_shared *sh) {
  if (sh->arena) cudaFree(sh->arena);
  if (sh->ws) cudaFree(sh->ws);
  for (int i = 0; i < 8; ++i) {
    if (i < 4 && sh->h_in[i]) cudaFreeHost(sh->h_in[i]);
    if (sh->h_out[i]) cudaFreeHost(sh->h_out[i]);
  }
  memset(sh, 0, sizeof(*sh));
}

/* Buffers every pass starts from: constants and graph inputs, nothing computed. */
static bd_status bind_fixed(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  const bd_graph *g = b->base.graph;
  memset(cp->prim, -1, (size_t)g->n_values);
  memset(cp->buf, 0, sizeof(*cp->buf) * (size_t)g->n_values);
  memset(cp->same, -1, sizeof(*cp->same) * (size_t)g->n_values);
  memset(cp->vkind, 0, (size_t)g->n_values);
  for (int v = 0; v < g->n_values; ++v)
    if (b->cdev[v]) {
      cp->buf[v][BD_REP_F32] = b->cdev[v];
      cp->prim[v] = BD_REP_F32;
    }
  return bd_cuda_bind_inputs(g, cp, err);
}

/* The sizing pass and the memory plan: cp->items placed, cp->arena_bytes set. */
static bd_status plan_memory(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const bd_plan *p = cp->plan;
  bd_status st = BD_OK;
  bd_cuda_plan_aliases(b, cp);
  cp->sizing = 1;
  if ((st = bind_fixed(b, cp, err)) != BD_OK) goto out;
  for (int s = 0; s < p->n_steps; ++s) {
    cp->cur_step = s;
    if ((st = bd_cuda_plan_node(b, cp, p->steps[s], err)) != BD_OK) goto out;
  }
  bd_cuda_bind_outputs(g, cp);
  /* Room for parallel branches (bd_cuda_dag.c): in a small batch's plan no buffer is
   * reused until BD_CUDA_BRANCH_PAD steps after its last reader, so that the actions of
   * nearby branches do not wait for each other over reused bytes. */
  for (int i = 0; bd_cuda_branch_room(cp) && i < cp->n_items; ++i) {
    const int last = cp->items[i].last + BD_CUDA_BRANCH_PAD;
    if (cp->items[i].last < p->n_steps) cp->items[i].last = last < p->n_steps ? last : p->n_steps;
  }
  st = bd_pack(cp->items, cp->n_items, 256, &cp->arena_bytes, err);
out:
  cp->sizing = 0;
  return st;
}

static bd_status cuda_prepare(bd_backend *be, const bd_plan *p, bd_err *err) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  const bd_graph *g = be->graph;
  bd_status st = BD_OK;
  bd_cuda_cplan *cp = NULL;
  if (bd_cuda_find_plan(b, p)) return BD_OK;
  if (p->n_values != g->n_values)
    return bd_err_set(err, BD_E_INVALID, "cuda prepare: plan is for another graph");
  bd_cuda_capture_lock();
  BD_CU(cudaSetDevice(b->device));
  if (!(cp = cplan_new(g, p))) {
    st = bd_err_set(err, BD_E_NOMEM, "cuda prepare: out of memory");
    goto out;
  }
  if (g->n_inputs > 4 || g->n_outputs > 8) {
    st = bd_err_set(err, BD_E_UNSUPPORTED, "cuda prepare: %d inputs, %d outputs (at most 4, 8)",
                    g->n_inputs, g->n_outputs);
    goto out;
  }
  /* Nothing of an earlier batch may still use the shared buffers while this plan's
   * algorithm search and first run write them. */
  BD_CU(cudaStreamSynchronize(b->stream));
  for (int i = 0; i < g->n_inputs; ++i) {
    cp->in_bytes[i] = (size_t)numel_of(p, g->inputs[i]) * sizeof(float);
    if ((st = shared_buf(b, cp, &b->sh.h_in[i], &b->sh.h_in_bytes[i], cp->in_bytes[i], 1,
                         &cp->h_in[i], err)) != BD_OK)
      goto out;
  }
  for (int i = 0; i < g->n_outputs; ++i) {
    cp->out_bytes[i] = (size_t)numel_of(p, g->outputs[i]) * sizeof(float);
    if ((st = shared_buf(b, cp, &b->sh.h_out[i], &b->sh.h_out_bytes[i], cp->out_bytes[i], 1,
                         &cp->h_out[i], err)) != BD_OK)
      goto out;
  }
  if ((st = bd_cuda_plan_conv_choices(b, cp, err)) != BD_OK) goto out;
  if ((st = plan_memory(b, cp, err)) != BD_OK) goto out;
  if ((st = shared_buf(b, cp, &b->sh.arena, &b->sh.arena_bytes, cp->arena_bytes, 0, &cp->arena,
                       err)) != BD_OK)
    goto out;
  if ((st = bind_fixed(b, cp, err)) != BD_OK) goto out;
  for (int s = 0; s < p->n_steps; ++s) {
    cp->cur_step = s;
    st = bd_cuda_plan_node(b, cp, p->steps[s], err);
    if (st != BD_OK) goto out;
  }
  bd_cuda_bind_outputs(g, cp);
  if ((st = bd_cuda_raw_direct(b, cp, err)) != BD_OK) goto out;
  if (cp->probe) {
    cudaFree(cp->probe);
    cp->probe = NULL;
  }
  /* The conv workspace: one, or BD_CUDA_BRANCH_WS slots side by side where branches
   * have room (bd_cuda_plan_dag gives each conv that uses it a slot) */
  cp->n_ws = bd_cuda_branch_room(cp) ? BD_CUDA_BRANCH_WS : 1;
  cp->ws_stride = (cp->ws_bytes + 255) / 256 * 256;
  /* a later plan takes no more slots than the shared workspace holds (the first, largest
   * plan sized it), so that slots never add an allocation of their own */
  if (b->n_plans > 0 && cp->ws_stride) {
    const size_t fit = b->sh.ws_bytes / cp->ws_stride;
    if (fit < (size_t)cp->n_ws) cp->n_ws = fit > 1 ? (int)fit : 1;
  }
  if (cp->ws_bytes && (st = shared_buf(b, cp, &b->sh.ws, &b->sh.ws_bytes,
                                       cp->ws_stride * (size_t)cp->n_ws, 0, &cp->ws, err)) != BD_OK)
    goto out;
  if ((st = bd_cuda_plan_dag(b, cp, err)) != BD_OK) goto out; /* every buffer placed */
  /* One direct run first: lazy module loading and cuDNN's first-call setup happen
   * outside the capture. */
  st = bd_cuda_enqueue(b, cp, 1, err);
  if (st != BD_OK) goto out;
  BD_CU(cudaStreamSynchronize(b->stream));
  {
    /* A network that cannot be captured still runs, directly on the stream; the
     * reason is kept for bd_cuda_backend_graph_error (tests assert it is NULL). */
    bd_err cerr = {0};
    if (bd_cuda_capture(b, cp, bd_cuda_enqueue, 1, &cp->graph, &cp->exec, &cerr) != BD_OK) {
      (void)cudaGetLastError();
      snprintf(cp->graph_err, sizeof(cp->graph_err), "%s", cerr.msg);
    }
  }
  {
    bd_cuda_cplan **np = realloc(b->plans, sizeof(*np) * (size_t)(b->n_plans + 1));
    if (!np) {
      st = bd_err_set(err, BD_E_NOMEM, "cuda prepare: out of memory");
      goto out;
    }
    b->plans = np;
    b->plans[b->n_plans++] = cp;
    cp = NULL;
  }
out:
  bd_cuda_capture_unlock();
  if (st != BD_OK) bd_err_prefix(err, "cuda prepare (batch %d)", p->batch);
  bd_cuda_cplan_free(cp, g->n_nodes);
  return st;
}

static bd_status cuda_run(bd_backend *be, const bd_plan *p, const float *const *inputs,
                          float *const *outputs, bd_err *err) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  const bd_graph *g = be->graph;
  bd_status st = BD_OK;
  bd_cuda_cplan *cp = bd_cuda_find_plan(b, p);
  if (!cp) return bd_err_set(err, BD_E_INVALID, "cuda run: plan (batch %d) not prepared", p->batch);
  BD_CU(cudaSetDevice(b->device));
  for (int i = 0; i < g->n_inputs; ++i) memcpy(cp->h_in[i], inputs[i], cp->in_bytes[i]);
  if (b->use_graphs && cp->exec) {
    BD_CU(cudaGraphLaunch(cp->exec, b->stream));
  } else {
    st = bd_cuda_enqueue(b, cp, 1, err);
    if (st != BD_OK) goto out;
  }
  BD_CU(cudaStreamSynchronize(b->stream));
  for (int i = 0; i < g->n_outputs; ++i) memcpy(outputs[i], cp->h_out[i], cp->out_bytes[i]);
out:
  return st;
}

static void cuda_destroy(bd_backend *be) {
  bd_cuda_be *b = (bd_cuda_be *)be;
  const bd_graph *g = be->graph;
  cudaSetDevice(b->device);
  if (b->stream) cudaStreamSynchronize(b->stream);
  bd_cuda_dd_free(b);
  for (int i = 0; i < b->n_plans; ++i) bd_cuda_cplan_free(b->plans[i], g->n_nodes);
  free(b->plans);
  shared_free(&b->sh);
  bd_cuda_weights_release(b->w); /* cdev / wbf point into its blob */
  free(b->cdev);
  free(b->wbf);
  free(b->tbias);
  free(b->twin);
#ifdef BD_HAVE_CUDNN
  if (b->dnn) cudnnDestroy((cudnnHandle_t)b->dnn);
#endif
  if (b->stream) cudaStreamDestroy(b->stream);
  free(b);
}

void bd_cuda_backend_set_graphs(bd_backend *be, int use_graphs) {
  ((bd_cuda_be *)be)->use_graphs = use_graphs;
}

const char *bd_cuda_backend_graph_error(bd_backend *be, const bd_plan *p) {
  bd_cuda_cplan *cp = bd_cuda_find_plan((bd_cuda_be *)be, p);
  if (!cp) return "plan not prepared";
  return cp->exec ? NULL : cp->graph_err;
}

const char *bd_cuda_backend_graph_shape(bd_backend *be, const bd_plan *p) {
  bd_cuda_cplan *cp = bd_cuda_find_plan((bd_cuda_be *)be, p);
  return cp ? cp->dag_info : "plan not prepared";
}

static const bd_backend_vtbl cuda_vtbl = {.name = "cuda",
                                          .shared_plan_memory = 1,
                                          .prepare = cuda_prepare,
                                          .run = cuda_run,
                                          .destroy = cuda_destroy,
                                          .dd_setup = bd_cuda_dd_setup,
                                          .dd_prepare = bd_cuda_dd_prepare,
                                          .dd_stage = bd_cuda_dd_stage,
                                          .dd_launch = bd_cuda_dd_launch,
                                          .dd_wait = bd_cuda_dd_wait};

bd_cuda_weights *bd_cuda_backend_weights(bd_backend *be) {
  return ((bd_cuda_be *)be)->w;
}

bd_cuda_cplan *bd_cuda_backend_plan(bd_cuda_be *b, const bd_plan *p) {
  return bd_cuda_find_plan(b, p);
}

bd_status bd_cuda_plan_memory(const bd_graph *g, const bd_plan *p, bd_cuda_plan_mem *m,
                              bd_err *err) {
  static char marker; /* stands for device buffers: the sizing pass only asks "is there one" */
  bd_status st = BD_OK;
  bd_cuda_be fb;
  bd_cuda_cplan *cp = NULL;
  memset(&fb, 0, sizeof(fb));
  memset(m, 0, sizeof(*m));
  fb.base.graph = g;
  fb.dnn = &marker; /* planned as on a GPU with cuDNN (the sizing pass only asks "is there one") */
  fb.cdev = calloc((size_t)g->n_values, sizeof(void *));
  if (!fb.cdev || !(cp = cplan_new(g, p))) {
    st = bd_err_set(err, BD_E_NOMEM, "cuda memory plan: out of memory");
    goto out;
  }
  if (p->n_values != g->n_values || g->n_inputs > 4 || g->n_outputs > 8) {
    st = bd_err_set(err, BD_E_INVALID, "cuda memory plan: plan not for this graph, or too many I/O");
    goto out;
  }
  if ((st = bd_cuda_weights_bytes(g, &m->weights, fb.cdev, &marker, err)) != BD_OK) goto out;
  if ((st = plan_memory(&fb, cp, err)) != BD_OK) goto out;
  m->arena = cp->arena_bytes;
  for (int n = 0; n < g->n_nodes; ++n)
    for (int k = 0; g->nodes[n].op == BD_OP_CONCAT && k < g->nodes[n].n_in; ++k) {
      int v = g->nodes[n].in[k];
      m->concat_inputs++;
      if (v >= 0 && cp->alias[v] == g->nodes[n].out[0]) m->in_place++;
    }
out:
  if (cp) bd_cuda_cplan_free(cp, g->n_nodes);
  free(fb.cdev);
  return st;
}

bd_status bd_cuda_backend_new(const bd_graph *g, int device, bd_backend **out, bd_err *err) {
  return bd_cuda_backend_new_shared(g, device, NULL, out, err);
}

bd_status bd_cuda_backend_new_shared(const bd_graph *g, int device, bd_cuda_weights *w,
                                     bd_backend **out, bd_err *err) {
  bd_status st = BD_OK;
  bd_cuda_be *b = NULL;
  int count = 0;
  *out = NULL;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  if (device < 0 || device >= count)
    return bd_err_set(err, BD_E_DEVICE, "cuda:%d: no such device (%d visible)", device, count);
  b = calloc(1, sizeof(*b));
  if (!b) return bd_err_set(err, BD_E_NOMEM, "cuda backend: out of memory");
  b->base.vt = &cuda_vtbl;
  b->base.graph = g;
  b->device = device;
  b->use_graphs = 1;
  b->cdev = calloc((size_t)g->n_values, sizeof(void *));
  b->wbf = calloc((size_t)g->n_nodes, sizeof(void *));
  b->tbias = calloc((size_t)g->n_nodes, sizeof(void *));
  b->twin = malloc(sizeof(int) * (size_t)(g->n_nodes ? g->n_nodes : 1));
  if (!b->cdev || !b->wbf || !b->tbias || !b->twin) {
    st = bd_err_set(err, BD_E_NOMEM, "cuda backend: out of memory");
    goto out;
  }
  bd_cuda_conv_twins(g, b->twin);
  BD_CU(cudaSetDevice(device));
  BD_CU(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
  {
    int major = 0;
    const char *e = getenv("BATCHDET_CUDA_PDL");
    BD_CU(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    b->pdl_max_batch = major < 9                ? 0
                       : !e || !strcmp(e, "auto") ? BD_CUDA_PDL_AUTO_BATCH
                       : !strcmp(e, "1")          ? 1 << 30
                                                  : 0;
  }
#ifdef BD_HAVE_CUDNN
  {
    cudnnHandle_t h = NULL;
    BD_DNN(cudnnCreate(&h));
    b->dnn = h;
    BD_DNN(cudnnSetStream(h, b->stream));
  }
#endif
  st = w ? bd_cuda_use_weights(b, w, err) : bd_cuda_upload_constants(b, err);
out:
  if (st != BD_OK) {
    bd_err_prefix(err, "cuda:%d", device);
    cuda_destroy(&b->base);
    return st;
  }
  *out = &b->base;
  return BD_OK;
}
