/* A prepared plan's actions as a DAG, and their capture as parallel branches of one CUDA
 * graph (issue 7). A batch-1 network is ~145 small kernels, each filling a fraction of
 * the GPU, run one after another; the ones that touch nothing another writes - a CSP
 * merge's first conv beside its chain, the head's convs of three levels - can share it.
 *
 * Which action must follow which comes from the bytes each reads and writes
 * (bd_cuda_action_fps): its inputs, its output, a padded conv's copies, the conv
 * workspace, all placed in the arena by the memory plan. Two actions conflict when one
 * writes bytes the other touches, so read-after-write, write-after-read (the arena reuses
 * a dead value's bytes) and write-after-write are all kept; a Concat piece written in
 * place is a channel slice of its Concat's buffer and conflicts only with slices that
 * share channels. Each action follows its conflicting predecessors, less those already
 * implied through another (a transitive reduction). While a stream captures, the work
 * of each action is made to depend on the work of those actions only
 * (cudaStreamUpdateCaptureDependencies on the one capturing stream), and everything is
 * joined before what comes after (output copies, detection's post-processing).
 *
 * tests/gpu/cuda_rt_emu.c replays a captured graph in an order as far from the capture
 * order as its edges allow, so a missing edge shows as wrong outputs in the emulated
 * model tests. BATCHDET_CUDA_BRANCHES: auto (the default) for plans up to batch
 * BD_CUDA_BRANCH_BATCH, 1 for every plan, 0 for none (chains, as before). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_internal.h"

/* 1 when a and b touch a common byte and one of them writes it. */
static int fp_conflict(const bd_cuda_fp *a, const bd_cuda_fp *b) {
  if (!a->write && !b->write) return 0;
  if (a->lo == a->hi || b->lo == b->hi || a->hi <= b->lo || b->hi <= a->lo) return 0;
  if (!a->pitch || a->pitch != b->pitch) return 1;
  /* both channel slices of one pitch: b's slice starts d bytes into a's pixel */
  int64_t d = (int64_t)(b->lo - a->lo) % a->pitch;
  if (d < 0) d += a->pitch;
  return d < a->span || d + b->span > a->pitch;
}

int bd_cuda_branches(const bd_cuda_cplan *cp) {
  const char *e = getenv("BATCHDET_CUDA_BRANCHES");
  if (e && strcmp(e, "0") == 0) return 0;
  if (e && strcmp(e, "1") == 0) return 1;
  return cp->batch <= BD_CUDA_BRANCH_BATCH; /* auto (unset, or anything else) */
}

int bd_cuda_branch_room(const bd_cuda_cplan *cp) {
  return bd_cuda_branches(cp) && cp->batch <= BD_CUDA_BRANCH_BATCH;
}

/* 1 when action i is a conv that uses the workspace. */
static int uses_ws(const bd_cuda_cplan *cp, int i) {
  const bd_cuda_action *a = &cp->acts[i];
  return cp->ws && a->kind == BD_A_OP && a->node >= 0 && cp->layer[a->node] &&
         bd_cuda_conv_layer_ws(cp->layer[a->node]) > 0;
}

/* Appends j to the predecessors, and what j follows to cov (every action i follows). */
static int add_pred(int **pred, size_t *cap, int *n, int j, const uint64_t *anc, uint64_t *cov,
                    int words) {
  if ((size_t)*n == *cap) {
    int *t = realloc(*pred, sizeof(int) * (*cap * 2));
    if (!t) return 0;
    *pred = t;
    *cap *= 2;
  }
  (*pred)[(*n)++] = j;
  const uint64_t *aj = &anc[(size_t)j * words];
  for (int w = 0; w < words; ++w) cov[w] |= aj[w];
  cov[j / 64] |= (uint64_t)1 << (j % 64);
  return 1;
}

bd_status bd_cuda_plan_dag(const bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err) {
  const bd_graph *g = b->base.graph;
  const int n = cp->n_acts, words = (n + 63) / 64;
  bd_status st = BD_OK;
  const int cap = bd_cuda_action_fps_cap(g);
  int n_fp = 0, n_pred = 0;
  free(cp->pred_at);
  free(cp->pred);
  free(cp->ws_slot);
  cp->pred_at = cp->pred = cp->ws_slot = NULL;
  snprintf(cp->dag_info, sizeof(cp->dag_info), "%d actions in order (BATCHDET_CUDA_BRANCHES)",
           n);
  if (!bd_cuda_branches(cp) || n < 2) return BD_OK;
  bd_cuda_fp *fp = malloc(sizeof(*fp) * (size_t)n * (size_t)cap);
  int *fp_at = malloc(sizeof(int) * ((size_t)n + 1)), *all = calloc((size_t)n, sizeof(int));
  uint64_t *anc = calloc((size_t)n * (size_t)words, sizeof(uint64_t));
  int *pred_at = malloc(sizeof(int) * ((size_t)n + 1)), *pred = NULL;
  int *slot = calloc((size_t)n, sizeof(int)), last_user[BD_CUDA_BRANCH_WS];
  const int n_ws = cp->n_ws >= 1 && cp->n_ws <= BD_CUDA_BRANCH_WS ? cp->n_ws : 1;
  for (int s = 0; s < BD_CUDA_BRANCH_WS; ++s) last_user[s] = -1;
  size_t pred_cap = (size_t)n * 2;
  pred = malloc(sizeof(int) * pred_cap);
  if (!fp || !fp_at || !all || !anc || !pred_at || !pred || !slot) goto nomem;
  for (int i = 0; i < n; ++i) {
    fp_at[i] = n_fp;
    const int k = bd_cuda_action_fps(b, cp, i, &fp[n_fp], cap);
    if (k < 0) all[i] = 1; /* conflicts with every action */
    else n_fp += k;
  }
  fp_at[n] = n_fp;
  for (int i = 0; i < n; ++i) {
    uint64_t *cov = &anc[(size_t)i * words]; /* every action i follows, so far */
    pred_at[i] = n_pred;
    for (int j = i - 1; j >= 0; --j) {
      if (cov[j / 64] >> (j % 64) & 1) continue; /* implied through a later predecessor */
      int hit = all[i] || all[j];
      for (int x = fp_at[i]; x < fp_at[i + 1] && !hit; ++x)
        for (int y = fp_at[j]; y < fp_at[j + 1] && !hit; ++y) hit = fp_conflict(&fp[x], &fp[y]);
      if (hit && !add_pred(&pred, &pred_cap, &n_pred, j, anc, cov, words)) goto nomem;
    }
    if (uses_ws(cp, i)) {
      /* a workspace slot: one whose last user action i follows anyway, else the one used
       * longest ago (action i then follows its last user) */
      int s = -1;
      for (int k = 0; k < n_ws && s < 0; ++k)
        if (last_user[k] < 0 || (cov[last_user[k] / 64] >> (last_user[k] % 64) & 1)) s = k;
      if (s < 0) { /* every slot in use beside i: the one used longest ago */
        s = 0;
        for (int k = 1; k < n_ws; ++k)
          if (last_user[k] < last_user[s]) s = k;
      }
      const int j = last_user[s];
      if (j >= 0 && !(cov[j / 64] >> (j % 64) & 1) &&
          !add_pred(&pred, &pred_cap, &n_pred, j, anc, cov, words))
        goto nomem;
      slot[i] = s;
      last_user[s] = i;
    }
  }
  pred_at[n] = n_pred;
  { /* its shape: longest chain, widest level (all reuses `all` as each action's level) */
    int depth = 0, width = 0;
    for (int i = 0; i < n; ++i) {
      all[i] = 0;
      for (int k = pred_at[i]; k < pred_at[i + 1]; ++k)
        if (all[pred[k]] + 1 > all[i]) all[i] = all[pred[k]] + 1;
      if (all[i] + 1 > depth) depth = all[i] + 1;
    }
    for (int lv = 0; lv < depth; ++lv) {
      int w = 0;
      for (int i = 0; i < n; ++i) w += all[i] == lv;
      if (w > width) width = w;
    }
    snprintf(cp->dag_info, sizeof(cp->dag_info),
             "%d actions as a DAG: longest chain %d, widest level %d", n, depth, width);
  }
  cp->pred_at = pred_at;
  cp->pred = pred;
  cp->ws_slot = slot;
  pred_at = pred = slot = NULL;
  goto out;
nomem:
  st = bd_err_set(err, BD_E_NOMEM, "cuda plan: out of memory ordering %d actions", n);
out:
  free(slot);
  free(fp);
  free(fp_at);
  free(all);
  free(anc);
  free(pred_at);
  free(pred);
  return st;
}

/* Graph nodes, a growing list; an action's tail is a range of it. */
typedef struct node_list {
  cudaGraphNode_t *v;
  size_t n, cap;
} node_list;

static int nl_push(node_list *l, cudaGraphNode_t x) {
  if (l->n == l->cap) {
    size_t c = l->cap ? l->cap * 2 : 256;
    cudaGraphNode_t *t = realloc(l->v, sizeof(*t) * c);
    if (!t) return 0;
    l->v = t;
    l->cap = c;
  }
  l->v[l->n++] = x;
  return 1;
}

/* Appends the nodes [from, to) of l to set (l too), skipping those already in set
 * (which starts at index s0). */
static int nl_union(node_list *l, size_t s0, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    const cudaGraphNode_t x = l->v[i];
    int dup = 0;
    for (size_t k = s0; k < l->n && !dup; ++k) dup = l->v[k] == x;
    if (!dup && !nl_push(l, x)) return 0;
  }
  return 1;
}

/* 1 when l's ranges [a0, a1) and [b0, b1) hold the same nodes. */
static int nl_same(const node_list *l, size_t a0, size_t a1, size_t b0, size_t b1) {
  if (a1 - a0 != b1 - b0) return 0;
  for (size_t i = a0; i < a1; ++i) {
    int found = 0;
    for (size_t k = b0; k < b1 && !found; ++k) found = l->v[i] == l->v[k];
    if (!found) return 0;
  }
  return 1;
}

/* Appends the capturing stream's current dependencies to l. Their edge data is asked for
 * (without it a programmatic edge would make the query fail as lossy) and dropped: the
 * edges made from them later are plain ones, a full dependency, never weaker. */
static cudaError_t nl_take_deps(cudaStream_t s, node_list *l) {
  enum cudaStreamCaptureStatus cs;
  const cudaGraphNode_t *d = NULL;
  const cudaGraphEdgeData *ed = NULL;
  size_t nd = 0;
  cudaError_t e = cudaStreamGetCaptureInfo(s, &cs, NULL, NULL, &d, &ed, &nd);
  if (e != cudaSuccess) return e;
  for (size_t i = 0; i < nd; ++i)
    if (!nl_push(l, d[i])) return cudaErrorMemoryAllocation;
  return cudaSuccess;
}

bd_status bd_cuda_enqueue_actions(bd_cuda_be *b, bd_cuda_cplan *cp, const unsigned char *skip,
                                  bd_err *err) {
  bd_status st = BD_OK;
  enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  node_list l = {NULL, 0, 0};
  size_t *tail = NULL; /* action i's nodes: l.v[tail[2i] .. tail[2i + 1]) */
  char *succ = NULL;   /* action i has a successor */
  const int n = cp->n_acts;
  if (cp->pred_at) BD_CU(cudaStreamIsCapturing(b->stream, &cs));
  if (cs != cudaStreamCaptureStatusActive) {
    for (int i = 0; i < n; ++i)
      if ((!skip || !skip[i]) && (st = bd_cuda_enqueue_action(b, cp, i, err)) != BD_OK) goto out;
    goto out;
  }
  tail = malloc(sizeof(size_t) * 2 * ((size_t)n + 1));
  succ = calloc((size_t)n + 1, 1);
  if (!tail || !succ) goto nomem;
  BD_CU(nl_take_deps(b->stream, &l)); /* the root: what came before the network */
  const size_t root_end = l.n;
  size_t cur0 = 0, cur1 = root_end; /* the stream's dependencies now */
  for (int i = 0; i < n; ++i) {
    const size_t s0 = l.n;
    int ok = 1;
    if (cp->pred_at[i] == cp->pred_at[i + 1]) ok = nl_union(&l, s0, 0, root_end);
    for (int k = cp->pred_at[i]; k < cp->pred_at[i + 1] && ok; ++k) {
      const int j = cp->pred[k];
      succ[j] = 1;
      ok = nl_union(&l, s0, tail[2 * j], tail[2 * j + 1]);
    }
    if (!ok) goto nomem;
    /* Set only where they differ (a fork or a join): along a chain the stream's own edges
     * stay, and with them programmatic dependent launch's (a set made here has plain
     * edges). */
    if (!nl_same(&l, s0, l.n, cur0, cur1))
      BD_CU(cudaStreamUpdateCaptureDependencies(b->stream, l.v + s0, NULL, l.n - s0,
                                                cudaStreamSetCaptureDependencies));
    if ((!skip || !skip[i]) && (st = bd_cuda_enqueue_action(b, cp, i, err)) != BD_OK) goto out;
    l.n = s0; /* the gathered set was only the argument; the tail replaces it */
    BD_CU(nl_take_deps(b->stream, &l));
    tail[2 * i] = cur0 = s0;
    tail[2 * i + 1] = cur1 = l.n;
  }
  { /* join: what follows depends on every action without a successor (a DAG has >= 2) */
    const size_t s0 = l.n;
    int ok = 1;
    for (int i = 0; i < n && ok; ++i)
      if (!succ[i]) ok = nl_union(&l, s0, tail[2 * i], tail[2 * i + 1]);
    if (!ok) goto nomem;
    BD_CU(cudaStreamUpdateCaptureDependencies(b->stream, l.v + s0, NULL, l.n - s0,
                                              cudaStreamSetCaptureDependencies));
  }
  goto out;
nomem:
  st = bd_err_set(err, BD_E_NOMEM, "cuda: out of memory capturing %d actions", n);
out:
  free(l.v);
  free(tail);
  free(succ);
  return st;
}
