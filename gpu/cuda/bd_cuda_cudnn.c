/* Convolution layers of the cuda backend through cuDNN 9's legacy convolution API
 * (cudnnConvolutionForward on NHWC BF16 tensors with FP32 compute, tensor-op math),
 * followed by our own epilogue kernel for bias + activation + residual, because the
 * legacy fused call (cudnnConvolutionBiasActivationForward) offers neither SiLU nor a
 * post-activation residual. The algorithm is chosen once per layer at prepare by
 * measuring the candidates on the real buffers. Depthwise convolutions and asymmetric
 * padding go to our direct kernel. */
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_internal.h"
#include "bd_graph.h"

/* Upper bound on a layer's workspace: an algorithm needing more is skipped. */
#define BD_CONV_WS_LIMIT ((size_t)256 << 20)

struct bd_cuda_conv_layer {
  bd_cuda_conv_shape p;
  int direct;
#ifdef BD_HAVE_CUDNN
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnConvolutionFwdAlgo_t algo;
#endif
  size_t ws;
};

int bd_cuda_conv_layer_is_direct(const bd_cuda_conv_layer *l) { return l ? l->direct : 1; }

void bd_cuda_conv_layer_destroy(bd_cuda_conv_layer *l) {
  if (!l) return;
#ifdef BD_HAVE_CUDNN
  if (l->xd) cudnnDestroyTensorDescriptor(l->xd);
  if (l->yd) cudnnDestroyTensorDescriptor(l->yd);
  if (l->wd) cudnnDestroyFilterDescriptor(l->wd);
  if (l->cd) cudnnDestroyConvolutionDescriptor(l->cd);
#endif
  free(l);
}

#ifdef BD_HAVE_CUDNN
/* Measures the algorithms and keeps the fastest that succeeded within the workspace
 * limit; sets l->direct when none did. */
static bd_status choose_algo(cudnnHandle_t h, bd_cuda_conv_layer *l, void *x, void *w, void *y,
                             void *probe, size_t probe_bytes, bd_err *err) {
  bd_status st = BD_OK;
  void *ws = probe, *own = NULL;
  size_t ws_bytes = probe_bytes;
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  if (!ws) {
    ws_bytes = bd_cuda_probe_ws_alloc(&own);
    ws = own;
  }
  l->direct = 1;
  /* A configuration cuDNN rejects as a whole (odd channel counts on some versions) is
   * not an error: our direct kernel runs it. */
  if (cudnnFindConvolutionForwardAlgorithmEx(h, l->xd, x, l->wd, w, l->cd, l->yd, y,
                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf, ws,
                                             ws_bytes) != CUDNN_STATUS_SUCCESS) {
    (void)cudaGetLastError();
    got = 0;
  }
  for (int i = 0; i < got; ++i) { /* results come sorted by time */
    if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > ws_bytes) continue;
    l->algo = perf[i].algo;
    l->ws = perf[i].memory;
    l->direct = 0;
    BD_DNN(cudnnSetConvolutionMathType(l->cd, perf[i].mathType));
    break;
  }
out:
  if (own) cudaFree(own);
  return st;
}
#endif

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

bd_status bd_cuda_conv_layer_new(void *cudnn_handle, const bd_cuda_conv_shape *p, int pad_b,
                                 int pad_r, void *x, void *w, void *y, void *probe,
                                 size_t probe_bytes, bd_cuda_conv_layer **out, size_t *ws_bytes,
                                 bd_err *err) {
  bd_status st = BD_OK;
  bd_cuda_conv_layer *l = calloc(1, sizeof(*l));
  *out = NULL;
  *ws_bytes = 0;
  if (!l) return bd_err_set(err, BD_E_NOMEM, "conv layer: out of memory");
  l->p = *p;
  l->direct = 1;
#ifdef BD_HAVE_CUDNN
  int depthwise = p->group > 1 && p->group == p->c;
  if (cudnn_handle && !depthwise && p->pad_t == pad_b && p->pad_l == pad_r) {
    cudnnHandle_t h = (cudnnHandle_t)cudnn_handle;
    BD_DNN(cudnnCreateTensorDescriptor(&l->xd));
    BD_DNN(cudnnCreateTensorDescriptor(&l->yd));
    BD_DNN(cudnnCreateFilterDescriptor(&l->wd));
    BD_DNN(cudnnCreateConvolutionDescriptor(&l->cd));
    BD_DNN(cudnnSetTensor4dDescriptor(l->xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, p->n, p->c,
                                      p->h, p->w));
    BD_DNN(cudnnSetTensor4dDescriptor(l->yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, p->n, p->m,
                                      p->oh, p->ow));
    BD_DNN(cudnnSetFilter4dDescriptor(l->wd, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, p->m,
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
    st = choose_algo(h, l, x, w, y, probe, probe_bytes, err);
    if (st != BD_OK) goto out;
  }
#else
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

bd_status bd_cuda_conv_layer_run(void *cudnn_handle, const bd_cuda_conv_layer *l,
                                 const void *x, const void *w, const float *bias,
                                 const void *r, void *y, void *ws, size_t ws_bytes,
                                 cudaStream_t stream, bd_err *err) {
  bd_status st = BD_OK;
  if (l->direct) {
    BD_CU(bd_cuda_conv_direct(&l->p, x, w, bias, r, y, stream));
    return BD_OK;
  }
#ifdef BD_HAVE_CUDNN
  {
    const float one = 1.0f, zero = 0.0f;
    if (l->ws > ws_bytes)
      return bd_err_set(err, BD_E_INTERNAL, "conv: workspace %zu < %zu", ws_bytes, l->ws);
    BD_DNN(cudnnConvolutionForward((cudnnHandle_t)cudnn_handle, &one, l->xd, x, l->wd, w,
                                   l->cd, l->algo, ws, l->ws, &zero, l->yd, y));
    if (bias || r || l->p.act != BD_ACT_NONE)
      BD_CU(bd_cuda_conv_epilogue(&l->p, bias, r, y, stream));
  }
#else
  (void)cudnn_handle;
  (void)ws;
  (void)ws_bytes;
  st = bd_err_set(err, BD_E_INTERNAL, "conv: built without cuDNN");
#endif
out:
  return st;
}
