/* Convolution layers of the cuda backend through cuDNN 9's legacy convolution API
 * (cudnnConvolutionForward on NHWC 16-bit tensors with FP32 compute, tensor-op math),
 * followed by our own epilogue kernel for bias + activation + residual, because the
 * legacy fused call (cudnnConvolutionBiasActivationForward) offers neither SiLU nor a
 * post-activation residual. The algorithm is chosen once per layer at prepare by
 * measuring the candidates on the real buffers. Depthwise convolutions and asymmetric
 * padding go to our direct kernel. Dense convs may run on our tensor-core kernel instead
 * (bd_cuda_conv_mma, epilogue fused, any M; C padded as below where it is not a multiple
 * of 8), decided per shape by BATCHDET_CUDA_CONV (auto: measured against cuDNN,
 * bd_cuda_conv_choose at the end).
 *
 * Tensor cores want channel counts that are multiples of 8 (16-byte rows): cuDNN runs
 * other dense convs (the 12-channel Focus stem, 1- and 4-channel prediction convs, 68
 * DAMO-YOLO regression channels) on generic kernels with NCHW<->NHWC conversions around
 * them. Such a layer runs on zero-padded copies: weights [M8][kh][kw][C8] of its own,
 * input [N][H][W][C8] (each run copies the C real channels in) and output
 * [N][OH][OW][M8], from which the epilogue writes the M real channels. The input and
 * output copies are scratch the plan lends from its arena (they live for this layer's
 * step only; the input's pad channels are zeroed on each run, since the arena holds
 * other values' bytes in between), or the layer's own (pad channels zeroed once). On our
 * tensor-core kernel only C is padded (weights [M][kh][kw][C8], the input copy unless
 * the plan stores the input padded and zeroed, shape.xzero): its epilogue writes the M
 * real channels at any pitch itself, with no separate output. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_internal.h"
#include "bd_graph.h"
#include "bd_prof.h"

/* Upper bound on a layer's workspace: an algorithm needing more is skipped. */
#define BD_CONV_WS_LIMIT ((size_t)256 << 20)

struct bd_cuda_conv_layer {
  bd_cuda_conv_shape p; /* the node's shape */
  bd_cuda_conv_shape q; /* what the convolution itself runs: channels padded */
  int direct;
  int mma;  /* runs on our tensor-core kernel (mma_tile) */
  int tile; /* its block tile (bd_cuda_conv_mma_tiled) */
  void *xpad, *ypad, *wpad; /* NULL: not padded */
  int lent;                 /* xpad / ypad belong to the caller (zero xpad on each run) */
#ifdef BD_HAVE_CUDNN
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnConvolutionFwdAlgo_t algo;
  cudnnMathType_t math;
  cudnnActivationDescriptor_t ad; /* fused path only */
  cudnnTensorDescriptor_t bd;
  bd_cuda_dnn_graph *g; /* non-NULL: the convolution runs as this graph-API plan */
  void *gbias16;        /* the bias in 16 bits for g fused (cuDNN's engines take no other) */
#endif
  void *bias16; /* the bias in 16 bits for the fused call; NULL: not fused */
  size_t ws;
};

int bd_cuda_conv_layer_is_direct(const bd_cuda_conv_layer *l) { return l ? l->direct : 1; }
const bd_cuda_conv_shape *bd_cuda_conv_layer_shape(const bd_cuda_conv_layer *l) {
  return &l->p;
}

/* BATCHDET_CUDA_CONV: who runs a dense conv (group 1, any channel counts) - our
 * tensor-core kernel (bd_cuda_conv_mma) or cuDNN. "auto" (the default) decides per layer
 * shape by measurement (bd_cuda_conv_choose; without cuDNN nothing is measured and our
 * direct kernel runs them), "mma" always ours (the default tile, or a split-K tile where
 * bd_cuda_conv_mma_splits says the output is too small to fill the GPU), "patch" as mma
 * but on the patch tile (BD_CONV_PATCH_TILE) wherever it takes the layer, "wgmma" as mma
 * but on the Hopper warpgroup tiles (wgmma_tile: the width that wastes the fewest
 * channels; 20 or 23 where mma would split), only where bd_cuda_conv_wgmma_ready,
 * "cudnn" never ours (cuDNN's legacy calls), "cudnn-graph" never ours, cuDNN's graph API
 * wherever it takes the layer (bd_cuda_dnn_graph.c), the legacy calls elsewhere. Read at
 * each use, so a test can switch it between engines; anything else is refused at
 * prepare. */
typedef enum {
  CONV_AUTO,
  CONV_MMA,
  CONV_PATCH,
  CONV_WGMMA,
  CONV_LIB,
  CONV_GRAPH,
  CONV_BAD
} conv_mode;

static conv_mode conv_mode_now(void) {
  const char *e = getenv("BATCHDET_CUDA_CONV");
  if (!e || !*e || strcmp(e, "auto") == 0) return CONV_AUTO;
  if (strcmp(e, "mma") == 0) return CONV_MMA;
  if (strcmp(e, "patch") == 0) return CONV_PATCH;
  if (strcmp(e, "wgmma") == 0) return CONV_WGMMA;
  if (strcmp(e, "cudnn") == 0) return CONV_LIB;
  if (strcmp(e, "cudnn-graph") == 0) return CONV_GRAPH;
  return CONV_BAD;
}

/* How the choice times each side, BATCHDET_CUDA_CHOICE_TIMING: 1 "replay" (the default:
 * as the plan's graph replays it, bd_cuda_time_replayed), 0 "host" (uncaptured, calls
 * back to back: the timing before, kept as the A/B for a device check), -1 anything else
 * (refused at prepare). */
static int choice_replayed(void) {
  const char *e = getenv("BATCHDET_CUDA_CHOICE_TIMING");
  if (!e || !*e || strcmp(e, "replay") == 0) return 1;
  return strcmp(e, "host") == 0 ? 0 : -1;
}

bd_status bd_cuda_conv_mode_check(bd_err *err) {
  if (choice_replayed() < 0)
    return bd_err_set(err, BD_E_INVALID,
                      "BATCHDET_CUDA_CHOICE_TIMING='%s': expected replay (the default) or host",
                      getenv("BATCHDET_CUDA_CHOICE_TIMING"));
  const conv_mode m = conv_mode_now();
  if (m == CONV_WGMMA && !bd_cuda_conv_wgmma_ready())
    return bd_err_set(err, BD_E_INVALID,
                      "BATCHDET_CUDA_CONV=wgmma: the wgmma tiles run only on a Hopper GPU "
                      "(sm_90) with BATCHDET_CUDA_WGMMA=1");
  if (m != CONV_BAD) return BD_OK;
  return bd_err_set(err, BD_E_INVALID,
                    "BATCHDET_CUDA_CONV='%s': expected auto (the default), mma, patch, wgmma, "
                    "cudnn or cudnn-graph",
                    getenv("BATCHDET_CUDA_CONV"));
}

static int round8(int v) { return (v + 7) / 8 * 8; }

/* BATCHDET_CUDA_DNN_GRAPH: 0 keeps cuDNN's graph API out of the choice (auto); anything
 * else, or unset, lets the choice time it as a third side. */
static int dnn_graph_on(void) {
  const char *e = getenv("BATCHDET_CUDA_DNN_GRAPH");
  return !e || strcmp(e, "0") != 0;
}

/* Shapes a layer runs on our tensor-core kernel (bd_cuda_conv_mma's own checks, less
 * pitches): dense, any M; C not a multiple of 8 through zero-padded weights and input
 * (plan_pads). */
static int mma_fits(const bd_cuda_conv_shape *p) {
  return p->group == 1 && p->c >= 1 && p->m >= 1 &&
         (int64_t)p->kh * p->kw * round8(p->c) < (1 << 30);
}

static int choice_find(const bd_cuda_conv_shape *p, int *tile);

/* BATCHDET_CUDA_CONV=wgmma's tile for shape p: a split one (20, 23) where mma would split
 * (few output blocks), else 18, 19, 21 or 22; among those the one whose channel width
 * wastes the fewest output channels, the widest of equals. */
static int wgmma_tile(const bd_cuda_conv_shape *p) {
  static const int whole[] = {21, 18, 22, 19}, split[] = {23, 20}; /* widest first */
  const int splits = bd_cuda_conv_mma_splits(p, 20) > 1;
  const int *c = splits ? split : whole, n = splits ? 2 : 4;
  int best = splits ? 20 : c[0];
  int64_t best_m = INT64_MAX;
  for (int i = 0; i < n; ++i) {
    if (splits && bd_cuda_conv_mma_splits(p, c[i]) < 2) continue; /* e.g. past the ws cap */
    const int bn = bd_cuda_conv_mma_tile_info(c[i])->bn;
    const int64_t padded = ((int64_t)p->m + bn - 1) / bn * bn;
    if (padded < best_m) best = c[i], best_m = padded;
  }
  return best;
}

/* The block tile our tensor-core kernel runs a layer of shape p on, -1 when the layer
 * does not run on it (cudnn: a handle exists). */
static int mma_tile(const bd_cuda_conv_shape *p, int cudnn) {
  int tile = -1;
  if (!mma_fits(p)) return -1;
  switch (conv_mode_now()) {
  case CONV_PATCH: { /* the shape the kernel runs: C padded to 8 (plan_pads) */
    bd_cuda_conv_shape q = *p;
    q.c = round8(q.c);
    if (bd_cuda_conv_mma_splits(&q, BD_CONV_PATCH_TILE) == 1) return BD_CONV_PATCH_TILE;
  } /* the others as with mma */
  /* fall through */
  case CONV_MMA: { /* unmeasured: split the reduction where the output is small */
    const int split = p->m >= 128 ? 3 : 4;
    return bd_cuda_conv_mma_splits(p, split) > 1 ? split : bd_cuda_conv_mma_default_tile(p->m);
  }
  case CONV_WGMMA: return wgmma_tile(p);
  case CONV_AUTO:
    return cudnn && choice_find(p, &tile) && tile >= 0 ? tile : -1;
  default: return -1;
  }
}

void bd_cuda_conv_layer_destroy(bd_cuda_conv_layer *l) {
  if (!l) return;
#ifdef BD_HAVE_CUDNN
  if (l->xd) cudnnDestroyTensorDescriptor(l->xd);
  if (l->yd) cudnnDestroyTensorDescriptor(l->yd);
  if (l->wd) cudnnDestroyFilterDescriptor(l->wd);
  if (l->cd) cudnnDestroyConvolutionDescriptor(l->cd);
  if (l->ad) cudnnDestroyActivationDescriptor(l->ad);
  if (l->bd) cudnnDestroyTensorDescriptor(l->bd);
  bd_cuda_dnn_graph_destroy(l->g);
  cudaFree(l->gbias16);
#endif
  cudaFree(l->bias16);
  if (!l->lent) {
    cudaFree(l->xpad);
    cudaFree(l->ypad);
  }
  cudaFree(l->wpad);
  free(l);
}

static int same_shape(const bd_cuda_conv_shape *a, const bd_cuda_conv_shape *b) {
  /* act and res do not change the convolution cuDNN runs. */
  return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c && a->oh == b->oh &&
         a->ow == b->ow && a->m == b->m && a->kh == b->kh && a->kw == b->kw && a->sh == b->sh &&
         a->sw == b->sw && a->dh == b->dh && a->dw == b->dw && a->pad_t == b->pad_t &&
         a->pad_l == b->pad_l && a->group == b->group;
}

/* Process-wide memory of per-shape decisions, so that every engine of the process runs
 * a layer shape the same way (engines on one GPU give identical results) and the pool's
 * instances load without measuring again. Two kinds: cuDNN's algorithm for a convolution
 * (key: the shape; act and res do not change what cuDNN runs) and, under
 * BATCHDET_CUDA_CONV=auto, our kernel on a tile or cuDNN (key: the shape with its
 * activation and residual, what cuDNN can fuse, and whether the output is a Concat piece; pitches
 * are not part of it: the plan decides them after this choice, from it). Entries never change once
 * written. Two more for cuDNN's graph API: the configuration of the plain convolution (MEMO_GRAPH,
 * keyed as MEMO_ALGO) and of the fused one (MEMO_GRAPH_FUSED, keyed as MEMO_CHOICE). */
enum { MEMO_ALGO, MEMO_CHOICE, MEMO_GRAPH, MEMO_GRAPH_FUSED };
/* MEMO_CHOICE's tile for cuDNN's legacy calls and for its graph API. */
enum { CHOICE_LIB = -1, CHOICE_GRAPH = -2 };
typedef struct shape_memo {
  int kind, device;
  bd_cuda_conv_shape shape;
  int direct, algo, math; /* MEMO_ALGO: cuDNN's algorithm and math type, as ints;
                             MEMO_GRAPH*: algo the configuration number, -1 none */
  size_t ws;
  int tile;  /* MEMO_CHOICE: ours on this block tile, else CHOICE_LIB or CHOICE_GRAPH */
  int fused; /* MEMO_CHOICE: the kept side ran fused (bias, activation, residual) */
} shape_memo;
#define SHAPE_MEMO_MAX 8192
static shape_memo memo[SHAPE_MEMO_MAX];
static int n_memo;
static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;

/* A pitch as the tensor's own width where packed (0). */
static int pitch_of(int ld, int width) {
  return ld ? ld : width;
}

/* 1 and *out the entry when (kind, device, p) is known. A graph-API plan's entries also
 * key on the pitches: strided tensors are another operation graph, with engines of its
 * own. */
static int memo_get(int kind, int device, const bd_cuda_conv_shape *p, shape_memo *out) {
  int found = 0;
  pthread_mutex_lock(&memo_mu);
  for (int i = 0; i < n_memo && !found; ++i) {
    const shape_memo *m = &memo[i];
    const bd_cuda_conv_shape *k = &m->shape;
    const int graph = kind == MEMO_GRAPH || kind == MEMO_GRAPH_FUSED;
    if (m->kind == kind && m->device == device && same_shape(k, p) &&
        (kind == MEMO_ALGO || kind == MEMO_GRAPH || (k->act == p->act && k->res == p->res)) &&
        (kind != MEMO_CHOICE || k->piece == p->piece) &&
        (!graph || (pitch_of(k->ldx, k->c) == pitch_of(p->ldx, p->c) &&
                    pitch_of(k->ldy, k->m) == pitch_of(p->ldy, p->m) &&
                    pitch_of(k->ldr, k->m) == pitch_of(p->ldr, p->m)))) {
      *out = *m;
      found = 1;
    }
  }
  pthread_mutex_unlock(&memo_mu);
  return found;
}

/* A full memo only means measuring again: the decision is not kept. */
static void memo_put(const shape_memo *m) {
  pthread_mutex_lock(&memo_mu);
  if (n_memo < SHAPE_MEMO_MAX) memo[n_memo++] = *m;
  pthread_mutex_unlock(&memo_mu);
}

/* Whether a graph-API plan of shape p writes its output as a Concat piece (strided) itself:
 * fused (else our epilogue, which refuses the pitch, follows), and without a residual
 * (cuDNN's precompiled engines want the residual strided as the output, and the plan gives
 * the residual none). Else the Concat copies the output. */
static int graph_writes_piece(const bd_cuda_conv_shape *p, int fused) {
  return fused && p->res == BD_RES_NONE;
}

/* How the choice (auto) runs a layer of shape p on cuDNN's graph API: 0 not (or not decided
 * yet), 1 its plain convolution and our epilogue, 2 fused. Decided before the plan's
 * pitches (bd_cuda_plan_conv_choices) and never changed, so that the pitch capabilities,
 * the buffer sizes and the layer agree: a fused plan reads its input and (graph_writes_piece)
 * writes its output as Concat pieces itself (strided tensors), a plain one reads its input
 * so. */
static int graph_decision(const bd_cuda_conv_shape *p) {
  int device = 0;
  shape_memo m;
  if (conv_mode_now() != CONV_AUTO || p->group != 1 || p->c % 8 || p->m % 8) return 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (!memo_get(MEMO_CHOICE, device, p, &m) || m.tile != CHOICE_GRAPH) return 0;
  return m.fused ? 2 : 1;
}

#ifdef BD_HAVE_CUDNN
/* Measures the algorithms and keeps the fastest that succeeded within the workspace
 * limit; sets l->direct when none did. The first search only warms up: with lazy
 * module loading the first launch of each kernel includes loading it, which made the
 * generic kernels (already loaded) win over the tensor-core ones. Of the second,
 * IMPLICIT_PRECOMP_GEMM (the NHWC tensor-core implicit GEMM, no layout conversion) is
 * kept when within 10% of the fastest: timing noise must not pick FFT/Winograd paths
 * that convert layouts internally; then, within 5% of the kept one's time, the smallest
 * workspace. */
static bd_status choose_algo(cudnnHandle_t h, bd_cuda_conv_layer *l, void *x, void *w, void *y,
                             void *probe, size_t probe_bytes, bd_err *err) {
  bd_status st = BD_OK;
  int device = 0;
  void *own = NULL; /* set before any jump to out */
  BD_CU(cudaGetDevice(&device));
  shape_memo known;
  if (memo_get(MEMO_ALGO, device, &l->q, &known)) {
    l->direct = known.direct;
    l->algo = (cudnnConvolutionFwdAlgo_t)known.algo;
    l->math = (cudnnMathType_t)known.math;
    l->ws = known.ws;
    if (!l->direct) BD_DNN(cudnnSetConvolutionMathType(l->cd, l->math));
    return BD_OK;
  }
  void *ws = probe;
  size_t ws_bytes = probe_bytes;
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0, best = -1, pre = -1;
  if (!ws) {
    ws_bytes = bd_cuda_probe_ws_alloc(&own);
    ws = own;
  }
  l->direct = 1;
  for (int pass = 0; pass < 2; ++pass) {
    /* A configuration cuDNN rejects as a whole is not an error: our direct kernel
     * runs it. */
    if (cudnnFindConvolutionForwardAlgorithmEx(h, l->xd, x, l->wd, w, l->cd, l->yd, y,
                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf, ws,
                                               ws_bytes) != CUDNN_STATUS_SUCCESS) {
      (void)cudaGetLastError();
      got = 0;
      break;
    }
  }
  for (int i = 0; i < got; ++i) { /* results come sorted by time */
    if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > ws_bytes) continue;
    if (best < 0) best = i;
    if (pre < 0 && perf[i].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM &&
        perf[i].mathType != CUDNN_FMA_MATH)
      pre = i;
  }
  if (pre >= 0 && best >= 0 && perf[pre].time <= perf[best].time * 1.1f) best = pre;
  /* Within 5% of that time, the smallest workspace: the instance keeps the largest one
   * its layers need (issue 7's memory target), and timing noise is that large anyway. */
  const float limit = best >= 0 ? perf[best].time * 1.05f : 0.0f; /* fixed: no drift */
  for (int i = 0; best >= 0 && i < got; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory < perf[best].memory &&
        perf[i].time <= limit && perf[i].mathType != CUDNN_FMA_MATH)
      best = i;
  if (best >= 0) {
    l->algo = perf[best].algo;
    l->ws = perf[best].memory;
    l->math = perf[best].mathType;
    l->direct = 0;
    BD_DNN(cudnnSetConvolutionMathType(l->cd, perf[best].mathType));
  }
  memo_put(&(shape_memo){.kind = MEMO_ALGO, .device = device, .shape = l->q,
                         .direct = l->direct, .algo = (int)l->algo, .math = (int)l->math,
                         .ws = l->ws});
out:
  if (own) cudaFree(own);
  return st;
}

/* Puts layer l's convolution (l->q) on a graph-API plan (bd_cuda_dnn_graph_new; fused: with
 * bias, activation and residual) when cuDNN has one for it: the configuration the process
 * chose for the shape before, else the fastest, timed on these buffers. Leaves l as it is
 * when there is none. */
static bd_status graph_layer(cudnnHandle_t h, bd_cuda_conv_layer *l, int fused, const void *x,
                             const void *w, const void *bias16, const void *r, void *y, void *probe,
                             size_t probe_bytes, bd_err *err) {
  bd_status st = BD_OK;
  int device = 0;
  void *own = NULL; /* set before any jump to out */
  bd_cuda_dnn_graph *g = NULL;
  shape_memo known;
  const int kind = fused ? MEMO_GRAPH_FUSED : MEMO_GRAPH;
  BD_CU(cudaGetDevice(&device));
  const int memo = memo_get(kind, device, &l->q, &known);
  if (memo && known.algo < 0) return BD_OK;
  if (!probe) {
    probe_bytes = bd_cuda_probe_ws_alloc(&own);
    probe = own;
  }
  const bd_cuda_dnn_args a = {x, w, fused ? bias16 : NULL, fused ? r : NULL, y, probe, probe_bytes};
  st = bd_cuda_dnn_graph_new(h, &l->q, fused, memo ? known.algo : -1, &a, choice_replayed() > 0, &g,
                             err);
  if (st != BD_OK) goto out;
  if (!memo)
    memo_put(&(shape_memo){.kind = kind,
                           .device = device,
                           .shape = l->q,
                           .algo = bd_cuda_dnn_graph_cfg(g),
                           .ws = bd_cuda_dnn_graph_ws(g)});
  if (g) {
    bd_cuda_dnn_graph_destroy(l->g);
    l->g = g;
    l->direct = 0;
    l->ws = bd_cuda_dnn_graph_ws(g);
  }
out:
  if (own) cudaFree(own);
  return st;
}
#endif

/* A 4-D NHWC 16-bit view of [n][h][w][c real channels] in rows of cs channels. */
static bd_cuda_view nhwc_view(void *base, int n, int h, int w, int c, int cs) {
  bd_cuda_view v = {base, BD_CT_H16, 4, {n, h, w, c},
                    {(int64_t)h * w * cs, (int64_t)w * cs, cs, 1}};
  return v;
}

/* How a layer of shape p arranges its channels (see the top of the file): the channels
 * the convolution itself runs (qc, qm: padded to multiples of 8 for dense layers),
 * whether the input needs a padded copy, and whether the convolution writes a separate
 * packed buffer that the epilogue reads (padded output channels, or a pitched output - a
 * Concat piece - that cuDNN cannot write). On our tensor-core kernel (mma) only C is
 * padded (its epilogue writes any M and pitch) and there is no separate output. cudnn: a
 * cuDNN handle exists. */
typedef struct pad_plan {
  int mma, tile, padded, xcopy, ybuf, qc, qm;
} pad_plan;

static pad_plan plan_pads(const bd_cuda_conv_shape *p, int pad_b, int pad_r, int cudnn,
                          int allow_mma) {
  pad_plan r = {0, -1, 0, 0, 0, p->c, p->m};
  if (allow_mma && (r.tile = mma_tile(p, cudnn)) >= 0) {
    r.mma = 1;
    r.padded = p->c % 8 != 0; /* weights [M][kh][kw][C8], input C8 channels */
    r.qc = round8(p->c);
    r.xcopy = r.qc != p->c && !(p->xzero && p->ldx == r.qc);
    return r;
  }
  int sym = p->pad_t == pad_b && p->pad_l == pad_r;
  int depthwise = p->group > 1 && p->group == p->c;
  int pitched_y = p->ldy && p->ldy != p->m;
  /* a fused graph-API plan without a residual writes the pitched output itself */
  const int graph_y = cudnn && sym && graph_writes_piece(p, graph_decision(p) == 2);
  r.padded = p->group == 1 && (p->c % 8 || p->m % 8) && sym;
  if (r.padded) {
    r.qc = round8(p->c);
    r.qm = round8(p->m);
  }
  /* An input already padded with zero channels (xzero) is the padded input itself. */
  r.xcopy = r.qc != p->c && !(p->xzero && p->ldx == r.qc);
  r.ybuf = r.qm != p->m || (pitched_y && !graph_y && (r.padded || (cudnn && sym && !depthwise)));
  return r;
}

/* 1 when a cuDNN layer of shape p goes to cuDNN's graph API: forced (cudnn-graph) or kept
 * there by the choice (auto). */
static int graph_wanted(const bd_cuda_conv_shape *p) {
  const conv_mode m = conv_mode_now();
  int tile = CHOICE_LIB;
  return m == CONV_GRAPH || (m == CONV_AUTO && choice_find(p, &tile) && tile == CHOICE_GRAPH);
}

/* Whether cuDNN can fuse the epilogue of a layer of shape p that has a bias: its graph API
 * (where the layer runs on it) any activation and residual; its legacy call ReLU or
 * nothing, with a residual only before the activation. */
static int lib_fuses(const bd_cuda_conv_shape *p) {
  if (graph_wanted(p)) return 1;
  return p->res != BD_RES_POST_ACT && (p->act == BD_ACT_RELU || p->act == BD_ACT_NONE);
}

int bd_cuda_conv_layer_pitch_caps(const bd_cuda_conv_shape *p, int pad_b, int pad_r, int cudnn,
                                   int may_fuse) {
  pad_plan pp = plan_pads(p, pad_b, pad_r, cudnn, 1);
  if (pp.mma)
    return BD_CONV_PITCH_X | BD_CONV_PITCH_Y | BD_CONV_PITCH_R | BD_CONV_PITCH_ALIGN8 |
           (pp.padded ? BD_CONV_PITCH_XZERO : 0) |
           (pp.tile != BD_CONV_PATCH_TILE ? BD_CONV_PITCH_ROUTE : 0);
  int sym = p->pad_t == pad_b && p->pad_l == pad_r;
  int depthwise = p->group > 1 && p->group == p->c;
  int on_cudnn = cudnn && !depthwise && sym;
  int caps = 0;
  /* On cuDNN's graph API (strided tensors): the input as a Concat piece, the output too
   * where graph_writes_piece. */
  const int gd = on_cudnn ? graph_decision(p) : 0;
  if (gd)
    return BD_CONV_PITCH_X | BD_CONV_PITCH_ALIGN8 |
           (may_fuse && graph_writes_piece(p, gd == 2) ? BD_CONV_PITCH_Y : 0);
  if (!on_cudnn || pp.xcopy) caps |= BD_CONV_PITCH_X;
  if (pp.padded && pp.qc != p->c) caps |= BD_CONV_PITCH_XZERO;
  if (!on_cudnn || pp.padded || !may_fuse || !lib_fuses(p)) caps |= BD_CONV_PITCH_Y;
  return caps;
}

int bd_cuda_conv_layer_pad_bytes(const bd_cuda_conv_shape *p, int pad_b, int pad_r, int cudnn,
                                  size_t *xpad, size_t *ypad) {
  pad_plan pp = plan_pads(p, pad_b, pad_r, cudnn, 1);
  *xpad = pp.xcopy ? (size_t)p->n * p->h * p->w * pp.qc * 2 : 0;
  *ypad = pp.ybuf ? (size_t)p->n * p->oh * p->ow * pp.qm * 2 : 0;
  return *xpad || *ypad;
}

/* The padded weights of a dense layer with channel counts that are not multiples of 8
 * (see the top of the file), its padded input copy and its separate output buffer as pp
 * says: lent by the caller (xpad_lent, ypad_lent as bd_cuda_conv_layer_pad_bytes sized
 * them), else its own. */
static bd_status pad_layer(bd_cuda_conv_layer *l, const void *w, const pad_plan *pp,
                           void *xpad_lent, void *ypad_lent, bd_err *err) {
  bd_status st = BD_OK;
  const bd_cuda_conv_shape *p = &l->p;
  bd_cuda_conv_shape *q = &l->q;
  q->c = pp->qc;
  q->m = pp->qm;
  q->ldx = pp->xcopy || p->ldx == q->c ? 0 : p->ldx; /* the copy, or x padded: packed */
  q->xzero = 0;
  if (pp->ybuf) {
    q->act = BD_ACT_NONE; /* the epilogue runs separately, from the packed output */
    q->res = BD_RES_NONE;
    q->ldy = 0;
  }
  if (pp->padded && !pp->mma) { /* cuDNN's padded output: the epilogue runs from ypad */
    q->act = BD_ACT_NONE;
    q->res = BD_RES_NONE;
  }
  size_t wn = (size_t)q->m * p->kh * p->kw * q->c;
  size_t xn = (size_t)p->n * p->h * p->w * q->c, yn = (size_t)p->n * p->oh * p->ow * q->m;
  if (xpad_lent || ypad_lent) {
    l->lent = 1;
    l->xpad = pp->xcopy ? xpad_lent : NULL;
    l->ypad = pp->ybuf ? ypad_lent : NULL;
    if ((pp->xcopy && !l->xpad) || (pp->ybuf && !l->ypad)) {
      st = bd_err_set(err, BD_E_INTERNAL, "conv: padded buffers lent incompletely");
      goto out;
    }
  } else {
    if (pp->xcopy) {
      BD_CU(cudaMalloc(&l->xpad, xn * 2));
      BD_CU(cudaMemset(l->xpad, 0, xn * 2));
    }
    if (pp->ybuf) BD_CU(cudaMalloc(&l->ypad, yn * 2));
  }
  if (pp->padded) {
    BD_CU(cudaMalloc(&l->wpad, wn * 2));
    BD_CU(cudaMemset(l->wpad, 0, wn * 2));
    /* weights [M][kh][kw][C] -> [M8][kh][kw][C8], viewed as [M][kh*kw][C] */
    bd_cuda_view src = {(void *)w, BD_CT_H16, 3, {p->m, p->kh * p->kw, p->c},
                        {(int64_t)p->kh * p->kw * p->c, p->c, 1}};
    bd_cuda_view dst = {l->wpad, BD_CT_H16, 3, {p->m, p->kh * p->kw, p->c},
                        {(int64_t)p->kh * p->kw * q->c, q->c, 1}};
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, 0));
    BD_CU(cudaDeviceSynchronize());
  }
out:
  return st;
}

size_t bd_cuda_probe_ws_alloc(void **out) {
  size_t bytes = BD_CONV_WS_LIMIT;
  *out = NULL;
  /* Smaller when memory is short: algorithms needing more are then skipped. */
  while (cudaMalloc(out, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    *out = NULL;
    bytes /= 4;
    if (bytes < ((size_t)1 << 20)) return 0;
  }
  return bytes;
}

/* bd_cuda_conv_layer_new; allow_mma 0: never our tensor-core kernel (the alternatives
 * bd_cuda_conv_choose measures it against); graph: cuDNN's graph API where it has a plan
 * for the layer, its legacy calls elsewhere. */
static bd_status layer_new(void *cudnn_handle, const bd_cuda_conv_shape *p, int pad_b, int pad_r,
                           void *x, void *w, void *y, void *xpad, void *ypad, void *probe,
                           size_t probe_bytes, int allow_mma, int graph, bd_cuda_conv_layer **out,
                           size_t *ws_bytes, bd_err *err) {
  bd_status st = BD_OK;
  bd_cuda_conv_layer *l = calloc(1, sizeof(*l));
  *out = NULL;
  *ws_bytes = 0;
  if (!l) return bd_err_set(err, BD_E_NOMEM, "conv layer: out of memory");
  l->p = *p;
  l->q = *p;
  l->direct = 1;
  pad_plan pp = plan_pads(p, pad_b, pad_r, cudnn_handle != NULL, allow_mma);
  if ((p->m1 || p->rup > 1) && (!pp.mma || pp.padded)) { /* the plan decides them so */
    st = bd_err_set(err, BD_E_INTERNAL, "conv: %s needs the tensor-core kernel on unpadded "
                    "channels", p->m1 ? "twin outputs" : "an upsampled residual");
    goto out;
  }
  if (pp.mma) {
    l->mma = 1;
    l->tile = pp.tile;
    l->direct = 0;
    if (pp.padded && (st = pad_layer(l, w, &pp, xpad, ypad, err)) != BD_OK) goto out;
    l->ws = bd_cuda_conv_mma_ws_bytes(&l->q, pp.tile); /* split-K partials */
    goto out;
  }
  if (pp.padded || pp.ybuf || pp.xcopy) {
    st = pad_layer(l, w, &pp, xpad, ypad, err);
    if (st != BD_OK) goto out;
    if (l->xpad) x = l->xpad;
    if (l->ypad) y = l->ypad;
    if (l->wpad) w = l->wpad;
    p = &l->q;
  }
#ifdef BD_HAVE_CUDNN
  int depthwise = p->group > 1 && p->group == p->c;
  /* cuDNN's legacy calls read packed inputs only: a pitched one (a Concat piece) goes to our
   * kernel, or to its graph API (strided tensors; the output too where it fuses). */
  int pitched_x = p->ldx && p->ldx != p->c;
  const int strided = pitched_x || (p->ldy && p->ldy != p->m);
  if (cudnn_handle && !depthwise && (!pitched_x || graph) && p->pad_t == pad_b &&
      p->pad_l == pad_r) {
    cudnnHandle_t h = (cudnnHandle_t)cudnn_handle;
    BD_DNN(cudnnCreateTensorDescriptor(&l->xd));
    BD_DNN(cudnnCreateTensorDescriptor(&l->yd));
    BD_DNN(cudnnCreateFilterDescriptor(&l->wd));
    BD_DNN(cudnnCreateConvolutionDescriptor(&l->cd));
    BD_DNN(cudnnSetTensor4dDescriptor(l->xd, CUDNN_TENSOR_NHWC, BD_DNN_H16, p->n, p->c,
                                      p->h, p->w));
    BD_DNN(cudnnSetTensor4dDescriptor(l->yd, CUDNN_TENSOR_NHWC, BD_DNN_H16, p->n, p->m,
                                      p->oh, p->ow));
    BD_DNN(cudnnSetFilter4dDescriptor(l->wd, BD_DNN_H16, CUDNN_TENSOR_NHWC, p->m,
                                      p->c / p->group, p->kh, p->kw));
    BD_DNN(cudnnSetConvolution2dDescriptor(l->cd, p->pad_t, p->pad_l, p->sh, p->sw, p->dh,
                                           p->dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    BD_DNN(cudnnSetConvolutionGroupCount(l->cd, p->group));
    BD_DNN(cudnnSetConvolutionMathType(l->cd, CUDNN_TENSOR_OP_MATH));
    int dn = 0, dc = 0, dh = 0, dw = 0;
    BD_DNN(cudnnGetConvolution2dForwardOutputDim(l->cd, l->xd, l->wd, &dn, &dc, &dh, &dw));
    if (dn != p->n || dc != p->m || dh != p->oh || dw != p->ow) {
      st = bd_err_set(err, BD_E_INTERNAL,
                      "conv: cuDNN output %dx%dx%dx%d differs from the plan's %dx%dx%dx%d", dn,
                      dc, dh, dw, p->n, p->m, p->oh, p->ow);
      goto out;
    }
    if (graph) st = graph_layer(h, l, 0, x, w, NULL, NULL, y, probe, probe_bytes, err);
    if (st == BD_OK && !l->g && !strided) st = choose_algo(h, l, x, w, y, probe, probe_bytes, err);
    if (st != BD_OK) goto out;
    if (!l->g && strided) /* planned for the graph API, which has no plan for it now */
      fprintf(stderr,
              "batchdet: conv %dx%dx%dx%d -> %d k%dx%d: cuDNN's graph API has no plan "
              "for its Concat pieces here; our direct kernel runs it\n",
              p->n, p->h, p->w, p->c, p->m, p->kh, p->kw);
  }
#else
  (void)graph;
  (void)cudnn_handle;
  (void)pad_b;
  (void)pad_r;
  (void)x;
  (void)w;
  (void)y;
  (void)probe;
  (void)probe_bytes;
  goto out; /* keeps the label used in builds without cuDNN */
#endif
out:
  if (st == BD_OK) {
    *ws_bytes = l->ws;
    *out = l;
    l = NULL;
  }
  bd_cuda_conv_layer_destroy(l);
  return st;
}

bd_status bd_cuda_conv_layer_new(void *cudnn_handle, const bd_cuda_conv_shape *p, int pad_b,
                                 int pad_r, void *x, void *w, void *y, void *xpad, void *ypad,
                                 void *probe, size_t probe_bytes, bd_cuda_conv_layer **out,
                                 size_t *ws_bytes, bd_err *err) {
  return layer_new(cudnn_handle, p, pad_b, pad_r, x, w, y, xpad, ypad, probe, probe_bytes, 1,
                   graph_wanted(p), out, ws_bytes, err);
}

#ifdef BD_HAVE_CUDNN
static void unfuse(bd_cuda_conv_layer *l) {
  if (l->ad) cudnnDestroyActivationDescriptor(l->ad);
  if (l->bd) cudnnDestroyTensorDescriptor(l->bd);
  cudaFree(l->bias16);
  l->ad = NULL;
  l->bd = NULL;
  l->bias16 = NULL;
}

static cudnnStatus_t fused_call(cudnnHandle_t h, const bd_cuda_conv_layer *l, const void *x,
                                const void *w, const void *r, void *y, void *ws) {
  const float one = 1.0f, zero = 0.0f;
  return cudnnConvolutionBiasActivationForward(h, &one, l->xd, x, l->wd, w, l->cd, l->algo, ws,
                                               l->ws, r ? &one : &zero, l->yd, r ? r : y,
                                               l->bd, l->bias16, l->ad, l->yd, y);
}
#endif

#ifdef BD_HAVE_CUDNN
/* The FP32 device bias of m channels in 16 bits, in a new buffer (*out): what cuDNN's fused
 * calls and graph engines take. Done on the legacy default stream and waited for, before
 * the handle's stream reads it. */
static cudaError_t bias_h16(const float *bias, int m, void **out) {
  cudaError_t e = cudaMalloc(out, (size_t)m * 2);
  if (e != cudaSuccess) return e;
  bd_cuda_view src = {(void *)bias, BD_CT_F32, 1, {m}, {1}};
  bd_cuda_view dst = {*out, BD_CT_H16, 1, {m}, {1}};
  e = bd_cuda_map(&dst, &src, BD_UN_ID, 0);
  return e == cudaSuccess ? cudaDeviceSynchronize() : e;
}
#endif

bd_status bd_cuda_conv_layer_fuse(void *cudnn_handle, bd_cuda_conv_layer *l, const float *bias,
                                  void *x, void *w, void *y, void *ws, size_t ws_bytes,
                                  bd_err *err) {
  bd_status st = BD_OK;
#ifdef BD_HAVE_CUDNN
  const bd_cuda_conv_shape *p = &l->p;
  if (l->g) { /* the graph API fuses any activation and residual, where an engine does */
    if (!cudnn_handle || l->wpad || l->ypad || !bias || bd_cuda_dnn_graph_fused(l->g)) return BD_OK;
    if (!l->gbias16) BD_CU(bias_h16(bias, p->m, &l->gbias16));
    st = graph_layer((cudnnHandle_t)cudnn_handle, l, 1, x, w, l->gbias16, p->res ? y : NULL, y, ws,
                     ws_bytes, err);
    if (st == BD_OK && !bd_cuda_dnn_graph_fused(l->g)) { /* no engine fuses it */
      cudaFree(l->gbias16);
      l->gbias16 = NULL;
    }
    if (st == BD_OK && !bd_cuda_dnn_graph_fused(l->g) && p->ldy && p->ldy != p->m) {
      /* planned to write its Concat piece fused, which this cuDNN no longer does here: our
       * direct kernel writes it (epilogue included) */
      fprintf(stderr,
              "batchdet: conv %dx%dx%dx%d -> %d k%dx%d: cuDNN's graph API does not fuse "
              "it here; our direct kernel runs it\n",
              p->n, p->h, p->w, p->c, p->m, p->kh, p->kw);
      bd_cuda_dnn_graph_destroy(l->g);
      l->g = NULL;
      l->direct = 1;
      l->ws = 0;
    }
    return st;
  }
  /* cuDNN's fused activations are ReLU and identity (identity only on the implicit
   * precomputed GEMM); its z input is added before the activation. */
  int precomp = l->algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  int act_ok = p->act == BD_ACT_RELU || (p->act == BD_ACT_NONE && precomp);
  if (!cudnn_handle || l->direct || l->mma || l->wpad || l->ypad || !bias || !act_ok || p->res == BD_RES_POST_ACT ||
      l->ws > ws_bytes)
    return BD_OK;
  BD_CU(bias_h16(bias, p->m, &l->bias16));
  BD_DNN(cudnnCreateActivationDescriptor(&l->ad));
  BD_DNN(cudnnSetActivationDescriptor(
      l->ad, p->act == BD_ACT_RELU ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
      CUDNN_NOT_PROPAGATE_NAN, 0.0));
  BD_DNN(cudnnCreateTensorDescriptor(&l->bd));
  BD_DNN(cudnnSetTensor4dDescriptor(l->bd, CUDNN_TENSOR_NHWC, BD_DNN_H16, 1, p->m, 1, 1));
  /* One trial on the real buffers (y as z): a configuration this cuDNN does not fuse
   * keeps the convolution + epilogue path. */
  if (fused_call((cudnnHandle_t)cudnn_handle, l, x, w, p->res ? y : NULL, y, ws) !=
          CUDNN_STATUS_SUCCESS ||
      cudaDeviceSynchronize() != cudaSuccess) {
    (void)cudaGetLastError();
    unfuse(l);
  }
out:
  if (st != BD_OK) {
    unfuse(l);
    (void)cudaGetLastError();
  }
#else
  (void)cudnn_handle;
  (void)l;
  (void)bias;
  (void)x;
  (void)w;
  (void)y;
  (void)ws;
  (void)ws_bytes;
  (void)err;
#endif
  return st;
}

int bd_cuda_conv_layer_is_fused(const bd_cuda_conv_layer *l) {
#ifdef BD_HAVE_CUDNN
  if (l && l->g) return bd_cuda_dnn_graph_fused(l->g);
#endif
  return l && l->bias16;
}

int bd_cuda_conv_layer_graph_cfg(const bd_cuda_conv_layer *l) {
#ifdef BD_HAVE_CUDNN
  if (l && l->g) return bd_cuda_dnn_graph_cfg(l->g);
#endif
  (void)l;
  return -1;
}

int bd_cuda_conv_layer_tile(const bd_cuda_conv_layer *l) { return l && l->mma ? l->tile : -1; }

int bd_cuda_conv_layer_takes_layout(const bd_cuda_conv_layer *l, const bd_cuda_prep_layout *lo,
                                    int in_h, int in_w) {
  return l && l->mma && l->tile == BD_CONV_PATCH_TILE &&
         bd_cuda_conv_patch_layout_ok(&l->q, lo, in_h, in_w);
}

bd_status bd_cuda_conv_layer_run_layout(const bd_cuda_conv_layer *l, const float *src, int in_h,
                                        int in_w, const bd_cuda_prep_layout *lo, const void *w,
                                        const float *bias, const void *r, void *y,
                                        cudaStream_t stream, bd_err *err) {
  bd_status st = BD_OK;
  if (!bd_cuda_conv_layer_takes_layout(l, lo, in_h, in_w))
    return bd_err_set(err, BD_E_INTERNAL, "conv: the layer cannot read the input's layout");
  /* q: the shape the kernel runs (C padded to 8 on the layer's padded weights) */
  BD_CU(bd_cuda_conv_patch_layout(&l->q, src, in_h, in_w, lo, l->wpad ? l->wpad : w, bias, r, y,
                                  stream));
out:
  return st;
}

size_t bd_cuda_conv_layer_ws(const bd_cuda_conv_layer *l) {
  if (!l || l->direct) return 0;
  return l->mma ? bd_cuda_conv_mma_ws_bytes(&l->q, l->tile) : l->ws;
}

int bd_cuda_conv_layer_algo(const bd_cuda_conv_layer *l, int *padded) {
  *padded = l && l->wpad;
  if (l && l->mma) return -2;
  if (!l || l->direct) return -1;
#ifdef BD_HAVE_CUDNN
  if (l->g) return BD_PROF_GRAPH;
  return (int)l->algo;
#else
  return -1;
#endif
}

bd_status bd_cuda_conv_layer_run(void *cudnn_handle, const bd_cuda_conv_layer *l,
                                 const void *x, const void *w, const float *bias,
                                 const void *r, void *y, void *ws, size_t ws_bytes,
                                 cudaStream_t stream, bd_err *err) {
  bd_status st = BD_OK;
  const bd_cuda_conv_shape *p = &l->p, *q = &l->q;
  void *cy = l->ypad ? l->ypad : y; /* where the convolution writes */
  if (l->wpad) w = l->wpad;
  if (l->xpad) {
    bd_cuda_view src = nhwc_view((void *)x, p->n, p->h, p->w, p->c, p->ldx ? p->ldx : p->c);
    bd_cuda_view dst = nhwc_view(l->xpad, p->n, p->h, p->w, p->c, q->c);
    if (l->lent)
      BD_CU(cudaMemsetAsync(l->xpad, 0, (size_t)p->n * p->h * p->w * q->c * 2, stream));
    BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, stream));
    x = l->xpad;
  }
  if (l->mma) { /* q: p with C padded where it is not a multiple of 8 */
    BD_CU(bd_cuda_conv_mma_tiled(q, l->tile, x, w, bias, r, y, ws, ws_bytes, stream));
    return BD_OK;
  }
  if (l->direct) {
    if (!l->wpad && !l->ypad) { /* our kernel takes the pitches and the epilogue itself */
      BD_CU(bd_cuda_conv_direct(p, x, w, bias, r, y, stream));
      return BD_OK;
    }
    BD_CU(bd_cuda_conv_direct(q, x, w, NULL, NULL, cy, stream));
  } else {
#ifdef BD_HAVE_CUDNN
    const float one = 1.0f, zero = 0.0f;
    if (l->ws > ws_bytes)
      return bd_err_set(err, BD_E_INTERNAL, "conv: workspace %zu < %zu", ws_bytes, l->ws);
    if (l->bias16) { /* bias + activation (+ residual) inside cuDNN's kernel */
      BD_DNN(fused_call((cudnnHandle_t)cudnn_handle, l, x, w, p->res ? r : NULL, y, ws));
      return BD_OK;
    }
    if (l->g) {
      const int fused = bd_cuda_dnn_graph_fused(l->g);
      const bd_cuda_dnn_args a = {
          x,  w,       fused ? l->gbias16 : NULL, fused && p->res ? r : NULL, fused ? y : cy,
          ws, ws_bytes};
      BD_DNN(bd_cuda_dnn_graph_run((cudnnHandle_t)cudnn_handle, l->g, &a));
      if (fused) return BD_OK;
    } else {
      BD_DNN(cudnnConvolutionForward((cudnnHandle_t)cudnn_handle, &one, l->xd, x, l->wd, w, l->cd,
                                     l->algo, ws, l->ws, &zero, l->yd, cy));
    }
#else
    (void)cudnn_handle;
    (void)ws;
    (void)ws_bytes;
    return bd_err_set(err, BD_E_INTERNAL, "conv: built without cuDNN");
#endif
  }
  if (l->ypad)
    BD_CU(bd_cuda_conv_epilogue_from(p, l->ypad, q->m, bias, r, y, stream));
  else if (bias || r || p->act != BD_ACT_NONE)
    BD_CU(bd_cuda_conv_epilogue(p, bias, r, y, stream));
out:
  return st;
}

/* ---- Our tensor-core kernel or cuDNN, per layer shape (BATCHDET_CUDA_CONV=auto) ---- */

/* 1 when shape p is decided on the current GPU (the shape memo, MEMO_CHOICE): *tile
 * our kernel's block tile, -1 for cuDNN (or our direct kernel where cuDNN does not take
 * the layer). */
static int choice_find(const bd_cuda_conv_shape *p, int *tile) {
  int device = 0;
  shape_memo m;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (!memo_get(MEMO_CHOICE, device, p, &m)) return 0;
  *tile = m.tile;
  return 1;
}

int bd_cuda_conv_undecided(void *cudnn_handle, const bd_cuda_conv_shape *p) {
  int tile = -1;
  return cudnn_handle && conv_mode_now() == CONV_AUTO && mma_fits(p) && !choice_find(p, &tile);
}

/* y1 filled with NaN (0xffff in half and in BF16) before a side writes it, so that what the
 * comparison samples is that side's output and nothing left there before (the Concat copy
 * the choice times writes y0's values into it). */
static cudaError_t poison(void *y1, int64_t n, cudaStream_t s) {
  return cudaMemsetAsync(y1, 0xff, (size_t)n * 2, s);
}

/* The largest |a - b| and |a| over the first and last BD_CONV_SAMPLE values of two
 * 16-bit device tensors of n values (converted to FP32 on the device through tmp): a
 * fragment layout or tiling error shows in any tile, an edge error in the last ones.
 * *bad set when b has a NaN or infinity where a has none. */
static bd_status compare_outputs(const void *a, const void *b, int64_t n, float *tmp,
                                 cudaStream_t s, double *diff, double *ref, int *bad,
                                 bd_err *err) {
  bd_status st = BD_OK;
  /* tmp holds 2 x BD_CONV_SAMPLE floats: at most BD_CONV_SAMPLE of each side per pass */
  const int64_t part = n < BD_CONV_SAMPLE ? n : BD_CONV_SAMPLE;
  float *h = malloc(2 * (size_t)part * sizeof(float));
  *diff = *ref = 0;
  *bad = 0;
  if (!h) return bd_err_set(err, BD_E_NOMEM, "conv choice: out of memory");
  for (int k = 0; k < 2 && (k == 0 || part < n); ++k) {
    const int64_t off = k ? n - part : 0;
    for (int t = 0; t < 2; ++t) {
      bd_cuda_view src = {(char *)(t ? b : a) + 2 * off, BD_CT_H16, 1, {part}, {1}};
      bd_cuda_view dst = {tmp + t * part, BD_CT_F32, 1, {part}, {1}};
      BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, s));
    }
    BD_CU(cudaStreamSynchronize(s));
    BD_CU(cudaMemcpy(h, tmp, 2 * (size_t)part * sizeof(float), cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < part; ++i) {
      float va = h[i], vb = h[part + i];
      if (!isfinite(va)) continue;
      if (!isfinite(vb)) {
        *bad = 1;
        continue;
      }
      double d = fabs((double)va - vb);
      if (d > *diff) *diff = d;
      if (fabs((double)va) > *ref) *ref = fabs((double)va);
    }
  }
out:
  free(h);
  return st;
}

/* Whether a side's output agrees with cuDNN's legacy side's (compare_outputs: largest
 * difference diff where the reference reaches ref; bad: non-finite values). Both are FP32
 * sums of the same 16-bit products stored in 16 bits: they differ by the summation order
 * and one rounding (~1e-3 of the output's range). */
static int outputs_agree(double diff, double ref, int bad) {
  return !bad && diff <= 2e-2 * ref + 1e-3;
}

#define CHOICE_REPS 5
/* One run of a side of the choice: ours on `tile` (>= 0) of shape p on x and w, else
 * lib on the scratch and w. */
typedef struct choice_run {
  void *cudnn_handle;
  const bd_cuda_conv_layer *lib;
  int tile;
  const bd_cuda_conv_shape *p;
  const void *x, *w, *r;
  const float *bias;
  void *y;
  const bd_cuda_conv_scratch *sc;
} choice_run;

static bd_status choice_run_one(void *ctx, cudaStream_t stream, bd_err *err) {
  const choice_run *c = ctx;
  bd_status st = BD_OK;
  if (c->tile >= 0)
    BD_CU(bd_cuda_conv_mma_tiled(c->p, c->tile, c->x, c->w, c->bias, c->r, c->y, c->sc->ws,
                                 c->sc->ws_bytes, stream));
  else
    st = bd_cuda_conv_layer_run(c->cudnn_handle, c->lib, c->x, c->w, c->bias, c->r, c->y,
                                c->sc->ws, c->sc->ws_bytes, stream, err);
out:
  return st;
}

/* Times a side of the choice (choice_run) as the plan's graph replays it (capture 1),
 * or uncaptured (0), after `warm` untimed runs (bd_cuda_time_replayed); *ms: the time of
 * CHOICE_REPS runs. *captured cleared when it ran uncaptured. */
static bd_status time_side(const choice_run *c, int warm, int capture, cudaStream_t stream,
                           float *ms, int *captured, bd_err *err) {
  bd_status st = BD_OK;
  int cap = 0;
  for (int i = 0; i < warm && st == BD_OK; ++i) st = choice_run_one((void *)c, stream, err);
  if (st == BD_OK)
    st = bd_cuda_time_replayed(stream, choice_run_one, (void *)c, CHOICE_REPS, capture, ms,
                               &cap, err);
  *ms *= CHOICE_REPS;
  if (!cap) *captured = 0;
  return st;
}

/* A copy of the packed output y0 -> y1: what a Concat costs for a piece its producer
 * cannot write in place. */
typedef struct copy_run {
  const bd_cuda_conv_scratch *sc;
  int64_t n;
} copy_run;

static bd_status copy_run_one(void *ctx, cudaStream_t stream, bd_err *err) {
  const copy_run *c = ctx;
  bd_status st = BD_OK;
  bd_cuda_view src = {c->sc->y0, BD_CT_H16, 1, {c->n}, {1}};
  bd_cuda_view dst = {c->sc->y1, BD_CT_H16, 1, {c->n}, {1}};
  BD_CU(bd_cuda_map(&dst, &src, BD_UN_ID, stream));
out:
  return st;
}

bd_status bd_cuda_conv_choose(void *cudnn_handle, const bd_cuda_conv_shape *shape, int pad_b,
                              int pad_r, const void *w, const float *bias, int may_fuse,
                              const bd_cuda_conv_scratch *sc, cudaStream_t stream, bd_err *err) {
  bd_status st = BD_OK;
  bd_cuda_conv_layer *lib = NULL, *glib = NULL;
  int device = 0, best = -1, n_bad = 0, captured = 1;
  size_t ws = 0;
  float t_lib = 0, t_lib_host = 0, t[BD_CONV_MMA_TILES] = {0};
  double diff[BD_CONV_MMA_TILES] = {0}, ref = 0;
  int agree[BD_CONV_MMA_TILES] = {0}, ran[BD_CONV_MMA_TILES] = {0}, na[BD_CONV_MMA_TILES] = {0};
  int checked[BD_CONV_MMA_TILES] = {0};
  bd_cuda_conv_shape p = *shape;
  p.ldx = p.ldy = p.ldr = 0; /* measured packed: the plan decides pitches after this */
  p.rup = 0;                 /* and whether the residual is read upsampled */
  p.xzero = 0;
  if (!bd_cuda_conv_undecided(cudnn_handle, &p)) return BD_OK;
  BD_CU(cudaGetDevice(&device));
  const void *r = p.res != BD_RES_NONE ? sc->r : NULL;
  const int64_t yn = (int64_t)p.n * p.oh * p.ow * p.m;
  st = layer_new(cudnn_handle, &p, pad_b, pad_r, sc->x, (void *)w, sc->y0, NULL, NULL, sc->ws,
                 sc->ws_bytes, 0, 0, &lib, &ws, err);
  if (st == BD_OK && may_fuse && bias)
    st = bd_cuda_conv_layer_fuse(cudnn_handle, lib, bias, sc->x, (void *)w, sc->y0, sc->ws,
                                 sc->ws_bytes, err);
  if (st != BD_OK) goto out;
  if (ws > sc->ws_bytes) { /* cannot happen: the search skips larger workspaces */
    st = bd_err_set(err, BD_E_INTERNAL, "conv choice: workspace %zu > %zu", ws, sc->ws_bytes);
    goto out;
  }
  const int replay = choice_replayed() > 0;
  choice_run side = {cudnn_handle, lib, -1, &p, sc->x, w, r, bias, sc->y0, sc};
  st = time_side(&side, 1, replay, stream, &t_lib, &captured, err);
  const int lib_captured = captured;
  /* Where the output is a Concat's piece and the legacy side would run fused (its pitch
   * capabilities then refuse the piece: bd_cuda_conv_layer_pitch_caps), the Concat copies
   * it: charged to that side; so where the graph API's side does not write the piece
   * (graph_writes_piece). Our tiles write it in place. Timed here, before any side writes
   * y1 (the copy's destination). */
  float t_copy = 0;
  int lib_padded = 0;
  (void)bd_cuda_conv_layer_algo(lib, &lib_padded);
  const int lib_copies =
      p.piece && !lib->direct && !lib_padded && may_fuse && bias && lib_fuses(&p);
  if (st == BD_OK && p.piece && may_fuse && bias && (lib_copies || dnn_graph_on())) {
    copy_run cr = {sc, yn};
    int ccap = 0;
    st = copy_run_one(&cr, stream, err); /* untimed */
    if (st == BD_OK)
      st = bd_cuda_time_replayed(stream, copy_run_one, &cr, CHOICE_REPS, replay, &t_copy, &ccap,
                                 err);
    t_copy *= CHOICE_REPS;
  }
  const float t_lib_all = t_lib + (lib_copies ? t_copy : 0);
  /* Logged: cuDNN also as the choice timed it before (uncaptured), to see what the
   * host's side of each call costs. */
  const char *log = getenv("BATCHDET_CUDA_CONV_LOG");
  const int logging = log && strcmp(log, "0") != 0;
  int ignored = 1;
  if (st == BD_OK && logging) st = time_side(&side, 0, 0, stream, &t_lib_host, &ignored, err);
  /* cuDNN's graph API, a third side (dnn_graph_on): its fastest configuration for the
   * layer (fused as the legacy side would be), kept instead of the legacy calls when more
   * than timing noise (3%) faster, run captured where the legacy side did, and agreeing
   * with the legacy side's output as our tiles must. Its failures only leave it out. */
  float t_base = t_lib_all, t_graph = 0;
  int graph_ran = 0, graph_kept = 0, graph_bad = 0;
  double graph_diff = 0, graph_ref = 0;
  if (st == BD_OK && dnn_graph_on()) {
    size_t gws = 0;
    st = layer_new(cudnn_handle, &p, pad_b, pad_r, sc->x, (void *)w, sc->y1, NULL, NULL, sc->ws,
                   sc->ws_bytes, 0, 1, &glib, &gws, err);
    const int has_graph = bd_cuda_conv_layer_graph_cfg(glib) >= 0;
    if (st == BD_OK && has_graph && may_fuse && bias)
      st = bd_cuda_conv_layer_fuse(cudnn_handle, glib, bias, sc->x, (void *)w, sc->y1, sc->ws,
                                   sc->ws_bytes, err);
    if (st == BD_OK && has_graph) {
      int gcap = 1, bad = 0;
      bd_err gerr = {0};
      choice_run gs = {cudnn_handle, glib, -1, &p, sc->x, w, r, bias, sc->y1, sc};
      BD_CU(poison(sc->y1, yn, stream));
      graph_ran = time_side(&gs, 1, replay, stream, &t_graph, &gcap, &gerr) == BD_OK &&
                  (gcap || !replay || !lib_captured);
      (void)cudaGetLastError();
      if (p.piece && !graph_writes_piece(&p, bd_cuda_conv_layer_is_fused(glib))) t_graph += t_copy;
      if (graph_ran && t_graph < t_lib_all * 0.97f) {
        st = compare_outputs(sc->y0, sc->y1, yn, sc->tmp, stream, &graph_diff, &graph_ref, &bad,
                             err);
        graph_bad = st == BD_OK && !outputs_agree(graph_diff, graph_ref, bad);
        graph_kept = st == BD_OK && !graph_bad;
        n_bad += graph_bad;
        if (graph_kept) t_base = t_graph;
      }
    }
  }
  /* Ours reads what the channel-padded cuDNN layer reads where C is not a multiple of 8:
   * its zero-padded input copy (filled by the runs above) and weights, as a layer of ours
   * would (plan_pads). cuDNN's time includes that copy, which a plan storing the input
   * padded (a Focus stem's) does not make: a bias towards ours of one pass over the input.
   * Without them (asymmetric padding: our direct kernel) ours is not tried. */
  bd_cuda_conv_shape q = p; /* the shape ours runs */
  const void *ox = sc->x, *ow = w;
  const int pads_ok = p.c % 8 == 0 || (lib->xpad && lib->wpad);
  if (p.c % 8 && pads_ok) {
    q.c = round8(p.c);
    ox = lib->xpad;
    ow = lib->wpad;
  }
  /* Each of our tiles timed; one faster than what is kept so far has its output checked
   * against cuDNN's before it is kept. Both are FP32 sums of the same 16-bit products
   * stored in 16 bits: they differ by the summation order and one rounding (~1e-3 of the
   * output's range). A wrong fragment layout, tile edge or epilogue differs by the values
   * themselves. */
  for (int k = 0; k < BD_CONV_MMA_TILES && st == BD_OK; ++k) {
    int bad = 0;
    /* A split tile that does not apply to this shape (or whose partials pass the scratch
     * workspace), or a wgmma tile where it may not run (bd_cuda_conv_wgmma_ready), is not
     * tried. */
    if (!pads_ok || bd_cuda_conv_mma_splits(&q, k) < 1 ||
        bd_cuda_conv_mma_ws_bytes(&q, k) > sc->ws_bytes || !bd_cuda_conv_tile_ready(k)) {
      na[k] = 1;
      continue;
    }
    /* A tile this GPU cannot launch (resources) is not an error: it is not used. This
     * trial run is also the tile's untimed one. */
    cudaError_t e = poison(sc->y1, yn, stream);
    if (e == cudaSuccess)
      e = bd_cuda_conv_mma_tiled(&q, k, ox, ow, bias, r, sc->y1, sc->ws, sc->ws_bytes, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      n_bad++;
      continue;
    }
    ran[k] = 1;
    side = (choice_run){cudnn_handle, lib, k, &q, ox, ow, r, bias, sc->y1, sc};
    st = time_side(&side, 0, replay, stream, &t[k], &captured, err);
    /* Only a tile that would be kept (faster than cuDNN and every tile kept so far) has
     * its output compared: the copy back and the comparison cost more than the timing,
     * and a tile that is not kept never runs. */
    if (st != BD_OK || t[k] >= t_base || (best >= 0 && t[k] >= t[best])) continue;
    checked[k] = 1;
    st = compare_outputs(sc->y0, sc->y1, yn, sc->tmp, stream, &diff[k], &ref, &bad, err);
    agree[k] = st == BD_OK && outputs_agree(diff[k], ref, bad);
    n_bad += !agree[k];
    if (agree[k]) best = k;
  }
  if (st != BD_OK) goto out;
  memo_put(&(shape_memo){.kind = MEMO_CHOICE,
                         .device = device,
                         .shape = p,
                         .tile = best >= 0    ? best
                                 : graph_kept ? CHOICE_GRAPH
                                              : CHOICE_LIB,
                         .fused = bd_cuda_conv_layer_is_fused(graph_kept ? glib : lib)});
  if (n_bad || logging) {
    int padded = 0, algo = bd_cuda_conv_layer_algo(lib, &padded), shown = best;
    for (int k = 0; k < BD_CONV_MMA_TILES && shown < 0; ++k)
      if (checked[k]) shown = k; /* the diff shown: the kept tile's, else the first compared */
    char ours[1024], host[128] = "", graph[96] = "";
    size_t h = 0;
    if (logging)
      h += (size_t)snprintf(host, sizeof host, " (%.1f us uncaptured)",
                            t_lib_host * 1e3 / CHOICE_REPS);
    if (t_copy > 0 && h < sizeof host)
      snprintf(host + h, sizeof host - h, " + Concat copy %.1f us", t_copy * 1e3 / CHOICE_REPS);
    if (graph_ran)
      snprintf(graph, sizeof graph, "; cuDNN graph cfg %d%s %.1f us%s",
               bd_cuda_conv_layer_graph_cfg(glib),
               bd_cuda_conv_layer_is_fused(glib) ? " fused" : "", t_graph * 1e3 / CHOICE_REPS,
               graph_bad ? " (WRONG)" : "");
    else if (glib)
      snprintf(graph, sizeof graph, "; cuDNN graph n/a");
    size_t o = 0;
    for (int k = 0; k < BD_CONV_MMA_TILES && o < sizeof ours; ++k)
      if (na[k])
        o += (size_t)snprintf(ours + o, sizeof ours - o, "%s%s n/a", k ? ", " : "",
                              bd_cuda_conv_mma_tile_name(k));
      else
        o += (size_t)snprintf(ours + o, sizeof ours - o, "%s%s %.1f us%s", k ? ", " : "",
                              bd_cuda_conv_mma_tile_name(k), t[k] * 1e3 / CHOICE_REPS,
                              !ran[k]                    ? " (launch failed)"
                              : checked[k] && !agree[k] ? " (WRONG)"
                                                         : "");
    fprintf(
        stderr,
        "batchdet: conv %s%dx%dx%dx%d -> %dx%dx%d k%dx%d s%d act %d res %d: cuDNN%s%s %.1f us%s%s; "
        "ours %s; max diff %.3g of %.3g -> %s%s%s\n",
        n_bad ? "WARNING (our tensor-core kernel or cuDNN's graph API failed or disagrees "
                "with cuDNN, not used there) "
              : "",
        p.n, p.h, p.w, p.c, p.oh, p.ow, p.m, p.kh, p.kw, p.sh, p.act, p.res,
        algo >= 0 ? "" : " (direct kernel)", bd_cuda_conv_layer_is_fused(lib) ? " fused" : "",
        t_lib * 1e3 / CHOICE_REPS, host, graph, ours, shown >= 0 ? diff[shown] : 0.0, ref,
        best >= 0    ? "ours "
        : graph_kept ? "cuDNN graph"
                     : "cuDNN",
        best >= 0 ? bd_cuda_conv_mma_tile_name(best) : "",
        captured ? "" : " (timed uncaptured: host gaps included)");
  }
out:
  bd_cuda_conv_layer_destroy(glib);
  bd_cuda_conv_layer_destroy(lib);
  return st;
}
