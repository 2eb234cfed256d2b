/* A convolution layer as a cuDNN graph-API execution plan (the backend descriptors of
 * cudnn_graph.h), the alternative to the legacy calls in bd_cuda_cudnn.c.
 *
 * Why: cuDNN 9 implements its legacy convolution calls over a fixed engine per algorithm
 * enum; the graph API offers the whole engine list for an operation graph (on Hopper the
 * engines built on its own tensor-core instructions among them), each configuration to
 * be timed, and fusions the legacy call lacks: SiLU, sigmoid, a residual added after the
 * activation. What PyTorch runs for its convolutions comes from the same list.
 *
 * The graph: NHWC 16-bit X [N][H][W][C] and W [M][kh][kw][C] -> convolution in FP32 ->
 * (fused) [+ residual R, where it comes before the activation] + bias (16-bit, [1][M][1][1])
 * [activation] [+ R after it] -> 16-bit Y [N][OH][OW][M]; unfused, the convolution writes Y
 * (the pre-bias sum, as the legacy call does) and the caller's epilogue follows. Tensors by
 * unique id: X 1, W 2, Y 3, bias 4, R 5, intermediates (virtual, FP32) from 100.
 *
 * That form is what cuDNN's precompiled engines take (test_cuda_dnn_survey asks the real
 * library, without a GPU): cuDNN 9.19 for an H100 lists 16 precompiled configurations for
 * the plain convolution and for conv [+ R] + bias [+ ReLU] with a 16-bit bias, R added
 * first and R's strides Y's; with an FP32 bias, R added after the bias, R strided unlike
 * Y, SiLU, sigmoid or R added after the activation it lists only engines that compile at
 * run time (kept out below unless asked for).
 *
 * The configurations are heuristics mode A's, in its order (a memo's cfg number names one
 * of them again: the same cuDNN on the same GPU lists them the same way). Kept out: those
 * that compile at run time (NVRTC: seconds per layer at load, and a library that may be
 * missing; BATCHDET_CUDA_DNN_RTC=1 lets them in), nondeterministic ones (split reductions with
 * atomics: two instances must give identical results), those needing more workspace than the caller
 * has, those that fail to finalize or to run, and, where the caller times as the plan's graph
 * replays (replay), those that do not run captured. Each error of cuDNN here only removes a
 * configuration or the whole graph: the legacy path stays. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "bd_cuda_internal.h"

#ifdef BD_HAVE_CUDNN

#define GRAPH_DESCS 24 /* descriptors of one operation graph */
#define GRAPH_CFGS 16  /* configurations asked of the heuristics */
#define GRAPH_REPS 3   /* runs per timing */
/* Configurations timed per graph at most, the heuristics' first eligible ones: each costs a
 * plan, a capture and four launches at load, for every layer shape. */
#define GRAPH_TIMED 6
/* The handle attributes, deprecated in cuDNN 9.19 (still honoured) and required before: by
 * number, so that headers of either age compile without a deprecation warning. */
#define ATTR_OPGRAPH_HANDLE ((cudnnBackendAttributeName_t)800)
#define ATTR_PLAN_HANDLE ((cudnnBackendAttributeName_t)400)
/* The deviceless survey's attributes (cuDNN 9.8 and later), by number too: older headers
 * lack the names. */
#define ATTR_HEUR_DEVICEPROP ((cudnnBackendAttributeName_t)204)
#define ATTR_PLAN_DEVICEPROP ((cudnnBackendAttributeName_t)407)
#define ATTR_DEVICEPROP_DEVICE_ID ((cudnnBackendAttributeName_t)2700)
#define ATTR_DEVICEPROP_JSON ((cudnnBackendAttributeName_t)2702)
#define DESC_DEVICEPROP ((cudnnBackendDescriptorType_t)38)

enum { UID_X = 1, UID_W = 2, UID_Y = 3, UID_B = 4, UID_R = 5, UID_TMP = 100 };

struct bd_cuda_dnn_graph {
  cudnnBackendDescriptor_t d[GRAPH_DESCS]; /* tensors, ops, the operation graph */
  int n_d;
  cudnnBackendDescriptor_t opgraph, plan;
  int fused, has_r, cfg;
  size_t ws;
};

typedef cudnnBackendDescriptor_t desc;

/* A new descriptor kept in g (destroyed with it); NULL when cuDNN refuses or g is full. */
static desc g_new(bd_cuda_dnn_graph *g, cudnnBackendDescriptorType_t type) {
  desc d = NULL;
  if (g->n_d >= GRAPH_DESCS || cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS)
    return NULL;
  g->d[g->n_d++] = d;
  return d;
}

/* BATCHDET_CUDA_DNN_GRAPH_LOG=1: every refusal on the way to a plan (the step, cuDNN's
 * status and its last error message), each configuration's fate and time, to stderr: what
 * a first run against a new cuDNN needs to see. */
static int graph_log(void) {
  const char *e = getenv("BATCHDET_CUDA_DNN_GRAPH_LOG");
  return e && strcmp(e, "0") != 0;
}

static void log_refusal(const char *what, long what_n, cudnnStatus_t st) {
  char msg[512] = "";
  if (!graph_log()) return;
  cudnnGetLastErrorString(msg, sizeof msg);
  fprintf(stderr, "batchdet: cuDNN graph:   %s %ld: %s%s%s\n", what, what_n,
          cudnnGetErrorString(st), msg[0] ? ": " : "", msg);
}

static int set(desc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
               int64_t n, const void *v) {
  if (!d) return 0;
  const cudnnStatus_t st = cudnnBackendSetAttribute(d, name, type, n, v);
  if (st != CUDNN_STATUS_SUCCESS) log_refusal("set attribute", (long)name, st);
  return st == CUDNN_STATUS_SUCCESS;
}

/* Finalizes d (what: its descriptor type, for the log). */
static int fin(desc d, cudnnBackendDescriptorType_t what) {
  const cudnnStatus_t st = cudnnBackendFinalize(d);
  if (st != CUDNN_STATUS_SUCCESS) log_refusal("finalize descriptor type", (long)what, st);
  return st == CUDNN_STATUS_SUCCESS;
}

/* An NHWC tensor [n][c][h][w] in cuDNN's dimension order, rows of ld channels (16-bit
 * or FP32); virtual ones are the graph's intermediates. */
static desc g_tensor(bd_cuda_dnn_graph *g, int64_t uid, cudnnDataType_t type, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t ld, int virt) {
  desc t = g_new(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {n, c, h, w}, strides[4] = {h * w * ld, 1, w * ld, ld};
  const int64_t align = 16;
  const bool v = virt != 0;
  if (!set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type) ||
      !set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims) ||
      !set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides) ||
      !set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid) ||
      !set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align) ||
      (v && !set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v)) ||
      !fin(t, CUDNN_BACKEND_TENSOR_DESCRIPTOR))
    return NULL;
  return t;
}

/* The operation y = mode(x[, b]) in FP32. */
static desc g_pointwise(bd_cuda_dnn_graph *g, cudnnPointwiseMode_t mode, desc x, desc b, desc y) {
  desc pw = g_new(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  if (!set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode) ||
      !set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec) ||
      !fin(pw, CUDNN_BACKEND_POINTWISE_DESCRIPTOR))
    return NULL;
  desc op = g_new(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  if (!x || !y ||
      !set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &pw) ||
      !set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x) ||
      (b && !set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b)) ||
      !set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y) ||
      !fin(op, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR))
    return NULL;
  return op;
}

/* The operation graph of q (see the top); 0 when cuDNN refuses any part of it. */
static int g_ops(bd_cuda_dnn_graph *g, cudnnHandle_t h, const bd_cuda_conv_shape *q) {
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT, h16 = BD_DNN_H16;
  desc ops[5];
  int n_ops = 0, tmp = UID_TMP;
  const int act = g->fused && q->act != BD_ACT_NONE;
  const int pre = g->fused && q->res == BD_RES_PRE_ACT,
            post = g->fused && q->res == BD_RES_POST_ACT;
  const int last = !g->fused ? 0 : 1 + pre + act + post; /* pointwise steps after the conv */
  desc x = g_tensor(g, UID_X, h16, q->n, q->c, q->h, q->w, q->ldx ? q->ldx : q->c, 0);
  desc w = g_tensor(g, UID_W, h16, q->m, q->c, q->kh, q->kw, q->c, 0);
  desc y = g_tensor(g, UID_Y, h16, q->n, q->m, q->oh, q->ow, q->ldy ? q->ldy : q->m, 0);
  desc r = pre || post
               ? g_tensor(g, UID_R, h16, q->n, q->m, q->oh, q->ow, q->ldr ? q->ldr : q->m, 0)
               : NULL;
  desc b = g->fused ? g_tensor(g, UID_B, h16, 1, q->m, 1, 1, q->m, 0) : NULL;
  if (!x || !w || !y || ((pre || post) && !r) || (g->fused && !b)) return 0;
    /* Each step's output: Y for the last, else a new FP32 intermediate. */
#define STEP_OUT(k) ((k) == last ? y : g_tensor(g, tmp++, f32, q->n, q->m, q->oh, q->ow, q->m, 1))
  desc cur = STEP_OUT(0);
  desc conv = g_new(g, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const int64_t dims = 2, pad[2] = {q->pad_t, q->pad_l}, stride[2] = {q->sh, q->sw},
                dil[2] = {q->dh, q->dw};
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  if (!cur || !set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad) ||
      !set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad) ||
      !fin(conv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR))
    return 0;
  desc op = g_new(g, CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  const float one = 1.0f, zero = 0.0f;
  if (!set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x) ||
      !set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w) ||
      !set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &cur) ||
      !set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &conv) ||
      !set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &one) ||
      !set(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &zero) ||
      !fin(op, CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR))
    return 0;
  ops[n_ops++] = op;
  static const cudnnPointwiseMode_t act_mode[] = {[BD_ACT_RELU] = CUDNN_POINTWISE_RELU_FWD,
                                                  [BD_ACT_SIGMOID] = CUDNN_POINTWISE_SIGMOID_FWD,
                                                  [BD_ACT_SILU] = CUDNN_POINTWISE_SWISH_FWD};
  for (int k = 1; k <= last; ++k) { /* [R], bias, [act], [R] */
    desc out = STEP_OUT(k);
    const int is_act = act && k == 2 + pre;
    const cudnnPointwiseMode_t m = is_act ? act_mode[q->act] : CUDNN_POINTWISE_ADD;
    desc other = k == 1 + pre ? b : is_act ? NULL : r;
    if (!out || !(op = g_pointwise(g, m, cur, other, out))) return 0;
    ops[n_ops++] = op;
    cur = out;
  }
#undef STEP_OUT
  g->opgraph = g_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  /* No handle (h NULL): a deviceless survey's graph, which cuDNN 9.8 and later take. */
  return set(g->opgraph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops,
             ops) &&
         (!h || set(g->opgraph, ATTR_OPGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h)) &&
         fin(g->opgraph, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
}

/* BATCHDET_CUDA_DNN_RTC=1 lets configurations that compile at run time in (NVRTC, which the
 * process must find; each compiles at load, per layer shape). */
static int rtc_allowed(void) {
  const char *e = getenv("BATCHDET_CUDA_DNN_RTC");
  return e && strcmp(e, "1") == 0;
}

/* Why configuration cfg is kept out (see the top): EX_NONE when it is not; *engine, when
 * not NULL, its engine's global index (-1 unread). */
enum { EX_NONE = 0, EX_RTC, EX_NONDET, EX_UNREAD };
static int excluded(desc cfg, int64_t *engine) {
  desc eng = NULL;
  int64_t n = 0;
  int out = EX_UNREAD;
  cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
  cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  if (engine) *engine = -1;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS)
    return EX_UNREAD;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &n, &eng) != CUDNN_STATUS_SUCCESS ||
      n != 1)
    goto done;
  if (engine && (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                          &n, engine) != CUDNN_STATUS_SUCCESS ||
                 n != 1))
    *engine = -1;
  if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                               CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, bn) != CUDNN_STATUS_SUCCESS)
    goto done;
  for (int64_t i = 0; i < n && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; ++i)
    if (bn[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION && !rtc_allowed()) {
      out = EX_RTC;
      goto done;
    }
  if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, nn) != CUDNN_STATUS_SUCCESS)
    goto done;
  for (int64_t i = 0; i < n && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; ++i)
    if (nn[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) {
      out = EX_NONDET;
      goto done;
    }
  out = EX_NONE;
done:
  cudnnBackendDestroyDescriptor(eng);
  return out;
}

/* An execution plan of configuration cfg for handle h's GPU, or (h NULL) for the GPU that
 * devprop describes (deviceless, cuDNN 9.8 and later); its workspace in *ws; NULL when it
 * does not finalize. */
static desc make_plan(cudnnHandle_t h, desc devprop, desc cfg, size_t *ws) {
  desc plan = NULL;
  int64_t bytes = 0, n = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) !=
      CUDNN_STATUS_SUCCESS)
    return NULL;
  if ((h ? !set(plan, ATTR_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h)
         : !set(plan, ATTR_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &devprop)) ||
      !set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) ||
      !fin(plan, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) ||
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                               &n, &bytes) != CUDNN_STATUS_SUCCESS ||
      n != 1 || bytes < 0) {
    cudnnBackendDestroyDescriptor(plan);
    return NULL;
  }
  *ws = (size_t)bytes;
  return plan;
}

static int aligned16(const void *p) {
  return ((uintptr_t)p & 15) == 0;
}

cudnnStatus_t bd_cuda_dnn_graph_run(cudnnHandle_t h, const bd_cuda_dnn_graph *g,
                                    const bd_cuda_dnn_args *a) {
  int64_t uids[5] = {UID_X, UID_W, UID_Y, UID_B, UID_R};
  void *ptrs[5] = {(void *)a->x, (void *)a->w, a->y, (void *)a->bias, (void *)a->r};
  const int64_t n = !g->fused ? 3 : g->has_r ? 5 : 4;
  desc vp = NULL;
  cudnnStatus_t st = CUDNN_STATUS_BAD_PARAM;
  /* the tensors' declared alignment; a missing operand */
  for (int64_t i = 0; i < n; ++i)
    if (!ptrs[i] || !aligned16(ptrs[i])) return CUDNN_STATUS_BAD_PARAM;
  if (g->ws > a->ws_bytes || (g->ws && !a->ws)) return CUDNN_STATUS_BAD_PARAM;
  if ((st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp)) !=
      CUDNN_STATUS_SUCCESS)
    return st;
  void *ws = a->ws;
  if ((st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
                                     uids)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
                                     n, ptrs)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                     &ws)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendFinalize(vp)) == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendExecute(h, g->plan, vp);
  cudnnBackendDestroyDescriptor(vp);
  return st;
}

typedef struct timed_run {
  cudnnHandle_t h;
  const bd_cuda_dnn_graph *g;
  const bd_cuda_dnn_args *a;
} timed_run;

static bd_status run_timed(void *ctx, cudaStream_t s, bd_err *err) {
  const timed_run *t = ctx;
  (void)s;
  cudnnStatus_t e = bd_cuda_dnn_graph_run(t->h, t->g, t->a);
  if (e == CUDNN_STATUS_SUCCESS) return BD_OK;
  return bd_err_set(err, BD_E_DEVICE, "cudnnBackendExecute: %s", cudnnGetErrorString(e));
}

/* 1 when stream s captures at all (an empty capture): where it does not, nothing of a plan
 * is captured, and a configuration need not be either. */
static int stream_captures(cudaStream_t s) {
  cudaGraph_t cg = NULL;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  const cudaError_t e = cudaStreamEndCapture(s, &cg);
  if (cg) cudaGraphDestroy(cg);
  (void)cudaGetLastError();
  return e == cudaSuccess;
}

/* Whether the current configuration (g->plan) runs - one untimed run, which also loads its
 * kernels - and then, when ms, its time: GRAPH_REPS runs as the plan's graph replays them
 * (replay: the stream captures) or back to back. 0: it failed, or did not run captured
 * where replay asks. */
static int try_plan(cudnnHandle_t h, const bd_cuda_dnn_graph *g, const bd_cuda_dnn_args *a,
                    int replay, float *ms) {
  cudaStream_t s = NULL;
  bd_err err = {0};
  int captured = 0;
  timed_run t = {h, g, a};
  if (cudnnGetStream(h, &s) != CUDNN_STATUS_SUCCESS) return 0;
  cudaError_t e = cudaSuccess;
  if (run_timed(&t, s, &err) != BD_OK || (e = cudaStreamSynchronize(s)) != cudaSuccess) {
    if (graph_log())
      fprintf(stderr, "batchdet: cuDNN graph:   it did not run: %s\n",
              e != cudaSuccess ? cudaGetErrorString(e) : err.msg);
    (void)cudaGetLastError();
    return 0;
  }
  if (!ms) return 1;
  if (bd_cuda_time_replayed(s, run_timed, &t, GRAPH_REPS, replay, ms, &captured, &err) != BD_OK ||
      (replay && !captured)) {
    if (graph_log())
      fprintf(stderr, "batchdet: cuDNN graph:   it did not run %s: %s\n",
              replay && !captured ? "captured" : "timed", err.msg);
    (void)cudaGetLastError();
    return 0;
  }
  return 1;
}

void bd_cuda_dnn_graph_destroy(bd_cuda_dnn_graph *g) {
  if (!g) return;
  if (g->plan) cudnnBackendDestroyDescriptor(g->plan);
  for (int i = g->n_d - 1; i >= 0; --i) cudnnBackendDestroyDescriptor(g->d[i]);
  free(g);
}

/* Whether q is a graph this file builds: dense layers on 16-byte rows (tensor-core
 * engines), and, fused, an activation it maps. */
static int graph_takes(const bd_cuda_conv_shape *q, int fused) {
  return q->group == 1 && q->c % 8 == 0 && q->m % 8 == 0 &&
         (!fused || (q->act >= BD_ACT_NONE && q->act <= BD_ACT_SILU));
}

static bd_cuda_dnn_graph *graph_alloc(const bd_cuda_conv_shape *q, int fused) {
  bd_cuda_dnn_graph *g = calloc(1, sizeof(*g));
  if (!g) return NULL;
  g->fused = fused;
  g->has_r = fused && q->res != BD_RES_NONE;
  g->cfg = -1;
  return g;
}

/* BATCHDET_CUDA_DNN_GRAPH_SHAPES=file: each graph asked for is written to file (emptied by
 * the process's first) as a line of BD_CUDA_DNN_SHAPE_FIELDS numbers, what a deviceless
 * survey (bd_cuda_dnn_graph_survey, test_cuda_dnn_survey) reads back to ask this or another
 * cuDNN about the same graphs without a GPU. */
static void dump_shape(const bd_cuda_conv_shape *q, int fused) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  static int started;
  const char *path = getenv("BATCHDET_CUDA_DNN_GRAPH_SHAPES");
  if (!path || !path[0]) return;
  pthread_mutex_lock(&mu);
  FILE *f = fopen(path, started ? "a" : "w");
  started = 1;
  if (f) {
    fprintf(f, "%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d\n", q->n, q->h,
            q->w, q->c, q->oh, q->ow, q->m, q->kh, q->kw, q->sh, q->sw, q->dh, q->dw, q->pad_t,
            q->pad_l, q->group, q->act, q->res, q->ldx, q->ldy, q->ldr, fused);
    fclose(f);
  }
  pthread_mutex_unlock(&mu);
}

/* Heuristics mode A's configurations for g's operation graph on the handle's GPU, or
 * (devprop not NULL) on the GPU devprop describes: how many, in cfgs (all GRAPH_CFGS
 * created here; the caller destroys them and *heur); 0 when cuDNN refuses. */
static int64_t list_cfgs(const bd_cuda_dnn_graph *g, desc devprop, desc *heur,
                         desc cfgs[GRAPH_CFGS]) {
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  int64_t got = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, heur) !=
      CUDNN_STATUS_SUCCESS) {
    *heur = NULL;
    return 0;
  }
  if (!set(*heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
           &g->opgraph) ||
      !set(*heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ||
      (devprop && !set(*heur, ATTR_HEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &devprop)) ||
      !fin(*heur, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR))
    return 0;
  for (int i = 0; i < GRAPH_CFGS; ++i)
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[i]) !=
        CUDNN_STATUS_SUCCESS) {
      cfgs[i] = NULL;
      return 0;
    }
  const cudnnStatus_t e = cudnnBackendGetAttribute(
      *heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, GRAPH_CFGS, &got, cfgs);
  if (e != CUDNN_STATUS_SUCCESS) log_refusal("heuristics results", (long)got, e);
  return e == CUDNN_STATUS_SUCCESS && got > 0 ? (got < GRAPH_CFGS ? got : GRAPH_CFGS) : 0;
}

bd_status bd_cuda_dnn_graph_new(cudnnHandle_t h, const bd_cuda_conv_shape *q, int fused, int cfg,
                                const bd_cuda_dnn_args *a, int replay, bd_cuda_dnn_graph **out,
                                bd_err *err) {
  bd_status st = BD_OK;
  desc heur = NULL, cfgs[GRAPH_CFGS] = {NULL};
  int64_t got = 0;
  int timed = 0;
  float best_ms = 0;
  *out = NULL;
  if (!graph_takes(q, fused)) return BD_OK;
  dump_shape(q, fused);
  bd_cuda_dnn_graph *g = graph_alloc(q, fused);
  if (!g) return bd_err_set(err, BD_E_NOMEM, "cuDNN graph: out of memory");
  if (!g_ops(g, h, q)) goto out; /* this cuDNN does not take the graph */
  got = list_cfgs(g, NULL, &heur, cfgs);
  cudaStream_t stream = NULL;
  if (replay && cfg < 0) /* a stream that does not capture times every configuration uncaptured */
    replay = cudnnGetStream(h, &stream) == CUDNN_STATUS_SUCCESS && stream_captures(stream);
  if (graph_log())
    fprintf(stderr,
            "batchdet: cuDNN graph: conv %dx%dx%dx%d -> %d k%dx%d s%d act %d res %d pitches "
            "%d/%d%s: %lld configurations%s\n",
            q->n, q->h, q->w, q->c, q->m, q->kh, q->kw, q->sh, q->act, q->res, q->ldx, q->ldy,
            fused ? " fused" : "", (long long)got, cfg >= 0 ? " (the memo's)" : "");
  for (int i = 0; i < got && timed < GRAPH_TIMED; ++i) {
    if (cfg >= 0 && i != cfg) continue;
    size_t ws = 0;
    float ms = 0;
    if (excluded(cfgs[i], NULL) != EX_NONE) {
      if (graph_log()) fprintf(stderr, "batchdet: cuDNN graph:   cfg %d: kept out (notes)\n", i);
      continue;
    }
    desc plan = make_plan(h, NULL, cfgs[i], &ws);
    if (!plan) continue;
    if (graph_log())
      fprintf(stderr, "batchdet: cuDNN graph:   cfg %d: workspace %zu of %zu\n", i, ws,
              a->ws_bytes);
    desc keep = g->plan;
    const size_t keep_ws = g->ws;
    g->plan = plan;
    g->ws = ws;
    /* A memo's cfg only runs once (it was timed when chosen). */
    const int ran = ws <= a->ws_bytes && try_plan(h, g, a, replay, cfg >= 0 ? NULL : &ms);
    timed += ran;
    if (ran && cfg < 0 && graph_log())
      fprintf(stderr, "batchdet: cuDNN graph:   cfg %d: %.1f us\n", i, ms * 1e3);
    if (ran && (!keep || ms < best_ms)) {
      if (keep) cudnnBackendDestroyDescriptor(keep);
      g->cfg = i;
      best_ms = ms;
      continue;
    }
    g->plan = keep;
    g->ws = keep_ws;
    cudnnBackendDestroyDescriptor(plan);
  }
out:
  (void)cudaGetLastError(); /* a refused configuration is not the caller's error */
  for (int i = 0; i < GRAPH_CFGS; ++i)
    if (cfgs[i]) cudnnBackendDestroyDescriptor(cfgs[i]);
  if (heur) cudnnBackendDestroyDescriptor(heur);
  if (g->plan) {
    *out = g;
    g = NULL;
  }
  bd_cuda_dnn_graph_destroy(g);
  return st;
}

int bd_cuda_dnn_graph_cfg(const bd_cuda_dnn_graph *g) {
  return g ? g->cfg : -1;
}
size_t bd_cuda_dnn_graph_ws(const bd_cuda_dnn_graph *g) {
  return g ? g->ws : 0;
}
int bd_cuda_dnn_graph_fused(const bd_cuda_dnn_graph *g) {
  return g && g->fused;
}

/* ---- deviceless survey (cuDNN 9.8 and later) ---- */

/* A device-properties descriptor from cuDNN's JSON of one (what bd_cuda_dnn_devprop_json
 * wrote on a GPU); NULL, and err set, when this cuDNN refuses it. */
static desc devprop_from_json(const char *json, bd_err *err) {
  desc d = NULL;
  char msg[512] = "";
  const size_t len = strlen(json);
  if (len == 0 || len > BD_CUDA_DNN_DEVPROP_MAX) {
    bd_err_set(err, BD_E_INVALID, "cuDNN device properties: %zu bytes of JSON (1..%d)", len,
               BD_CUDA_DNN_DEVPROP_MAX);
    return NULL;
  }
  cudnnStatus_t e = cudnnBackendCreateDescriptor(DESC_DEVICEPROP, &d);
  if (e == CUDNN_STATUS_SUCCESS &&
      (e = cudnnBackendSetAttribute(d, ATTR_DEVICEPROP_JSON, CUDNN_TYPE_CHAR, (int64_t)len,
                                    json)) == CUDNN_STATUS_SUCCESS &&
      (e = cudnnBackendFinalize(d)) == CUDNN_STATUS_SUCCESS)
    return d;
  cudnnGetLastErrorString(msg, sizeof msg);
  bd_err_set(err, BD_E_INVALID, "cuDNN %zu does not take these device properties: %s%s%s",
             cudnnGetVersion(), cudnnGetErrorString(e), msg[0] ? ": " : "", msg);
  if (d) cudnnBackendDestroyDescriptor(d);
  return NULL;
}

bd_status bd_cuda_dnn_devprop_json(int device, char *buf, size_t cap, bd_err *err) {
  desc d = NULL;
  const int32_t id = device; /* cuDNN 9.19 takes the id as INT32 only */
  int64_t n = 0;
  cudnnStatus_t e = cudnnBackendCreateDescriptor(DESC_DEVICEPROP, &d);
  if (e == CUDNN_STATUS_SUCCESS &&
      (e = cudnnBackendSetAttribute(d, ATTR_DEVICEPROP_DEVICE_ID, CUDNN_TYPE_INT32, 1, &id)) ==
          CUDNN_STATUS_SUCCESS &&
      (e = cudnnBackendFinalize(d)) == CUDNN_STATUS_SUCCESS)
    e = cudnnBackendGetAttribute(d, ATTR_DEVICEPROP_JSON, CUDNN_TYPE_CHAR, (int64_t)cap - 1, &n,
                                 buf);
  if (d) cudnnBackendDestroyDescriptor(d);
  if (e != CUDNN_STATUS_SUCCESS || cap == 0 || n < 0 || (size_t)n >= cap)
    return bd_err_set(err, BD_E_DEVICE, "cuDNN %zu: device %d's properties as JSON: %s",
                      cudnnGetVersion(), device,
                      e != CUDNN_STATUS_SUCCESS ? cudnnGetErrorString(e) : "too long");
  buf[n] = 0;
  return BD_OK;
}

/* 1 when plan's engine tiles thread-block clusters (its JSON names a TILE_CGA knob:
 * Hopper's kind of kernel), 0 not, -1 unread. */
static int plan_tiles_clusters(desc plan) {
  static const int64_t cap = 1 << 16;
  char *js = malloc((size_t)cap);
  int64_t n = 0;
  int out = -1;
  if (js &&
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                               cap - 1, &n, js) == CUDNN_STATUS_SUCCESS &&
      n >= 0 && n < cap) {
    js[n] = 0;
    out = strstr(js, "TILE_CGA") != NULL;
  }
  free(js);
  return out;
}

bd_status bd_cuda_dnn_graph_survey(const char *devprop_json, const bd_cuda_conv_shape *q, int fused,
                                   size_t ws_cap, bd_cuda_dnn_survey *sv, bd_err *err) {
  desc heur = NULL, cfgs[GRAPH_CFGS] = {NULL};
  bd_cuda_dnn_graph *g = NULL;
  memset(sv, 0, sizeof(*sv));
  sv->first = sv->cluster = -1;
  sv->engine = sv->top_engine = -1;
  if (!graph_takes(q, fused)) return BD_OK;
  desc dp = devprop_from_json(devprop_json, err);
  if (!dp) return BD_E_INVALID;
  bd_status st = BD_OK;
  if (!(g = graph_alloc(q, fused))) {
    st = bd_err_set(err, BD_E_NOMEM, "cuDNN graph: out of memory");
    goto out;
  }
  sv->taken = 1;
  if (!g_ops(g, NULL, q)) goto out;
  sv->graph = 1;
  sv->listed = (int)list_cfgs(g, dp, &heur, cfgs);
  for (int i = 0; i < sv->listed; ++i) {
    int64_t engine = -1;
    size_t ws = 0;
    const int why = excluded(cfgs[i], &engine);
    if (i == 0) sv->top_engine = engine;
    sv->rtc += why == EX_RTC;
    sv->nondet += why == EX_NONDET;
    if (why != EX_NONE) continue;
    desc plan = make_plan(NULL, dp, cfgs[i], &ws);
    if (!plan) {
      sv->unplanned++;
      continue;
    }
    if (ws > ws_cap) {
      sv->over_ws++;
    } else if (sv->eligible++ == 0) {
      sv->first = i;
      sv->engine = engine;
      sv->ws = ws;
      sv->cluster = plan_tiles_clusters(plan);
    }
    cudnnBackendDestroyDescriptor(plan);
  }
out:
  for (int i = 0; i < GRAPH_CFGS; ++i)
    if (cfgs[i]) cudnnBackendDestroyDescriptor(cfgs[i]);
  if (heur) cudnnBackendDestroyDescriptor(heur);
  bd_cuda_dnn_graph_destroy(g);
  cudnnBackendDestroyDescriptor(dp);
  return st;
}

#endif
