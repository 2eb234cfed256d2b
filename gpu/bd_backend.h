/* bd_backend: what every execution backend (cpu, cuda) offers the engine.
 *
 * A backend instance is bound to one compiled graph (which must outlive it). It runs a
 * bd_plan (one batch size) on host float32 input in the ONNX layout (NCHW) and writes
 * host float32 outputs in the ONNX layout, in graph output order. prepare() is called
 * once per plan before the first run: it allocates everything a run needs (arena,
 * workspaces, captured CUDA graphs), so that run() never allocates.
 *
 * Thread safety: one instance is used by one thread at a time; different instances
 * are independent. */
#ifndef BD_BACKEND_H
#define BD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bd_graph.h"

typedef struct bd_backend bd_backend;

/* ---- Device detection: an optional capability (NULL entries where a backend lacks it,
 * as the cpu backend does). The whole detection of a batch runs on the device: the host
 * copies decoded RGB8 images into the backend's pinned staging buffer of a slot and
 * fills one bd_dd_image per row; the device does the family's resize (stretch, or
 * letterbox on 114), colour order and layout, the network, the box decode, the score
 * filter and per-class NMS, and hands back rows x out_cap x 6 floats (x1, y1, x2, y2,
 * score, class in original pixels, best first) and a count per row.
 * Flow: dd_setup once (buffers for max_batch rows), dd_prepare per plan (after prepare),
 * then per batch: fill dd_stage(slot), dd_launch(slot), ..., dd_wait(slot). BD_DD_SLOTS
 * batches may be in flight at once, one per slot, so that the host stages and copies one
 * batch while the device computes the other. */
#define BD_DD_SLOTS 2

typedef struct bd_dd_config {
  int yolox;             /* 1: yolox (grid decode of [B,A,5+C], BGR, letterbox on 114);
                            0: damoyolo (scores [B,A,C] + boxes [B,A,4], RGB, stretch) */
  int in_w, in_h;        /* network input */
  int num_classes, num_anchors;
  int out_main;          /* yolox: graph output index of [B,A,5+C] */
  int yolox_decoded;     /* yolox: the graph decodes boxes itself (bd_family_info.boxes_decoded) */
  int out_scores, out_boxes; /* damoyolo: graph output indices */
  int topk;              /* best candidates per image that enter NMS */
  int out_cap;           /* rows of detections per image (max_det is clamped to it) */
  size_t stage_bytes;    /* pixel bytes one slot can stage */
} bd_dd_config;

typedef struct bd_dd_image {
  int64_t offset;          /* the staged RGB8 pixels (packed HWC) at stage + offset */
  int sw, sh;              /* staged size (the decoded image, or it already resized) */
  int rw, rh;              /* size inside the network input (0 x 0: an empty padding row) */
  double scale_x, scale_y; /* 1 / (rw / sw), 1 / (rh / sh) as bd_family_resize_u8 has them */
  float score_thr, iou_thr;
  int max_det;             /* thresholds resolved (bd_family_defaults); max_det <= out_cap */
  int orig_w, orig_h;      /* frame boxes are mapped to and clipped to */
  float ratio;             /* yolox: boxes / ratio */
  float box_sx, box_sy;    /* damoyolo: boxes * box_sx, * box_sy */
} bd_dd_image;

typedef struct bd_backend_vtbl {
  const char *name; /* "cpu", "cuda" */
  /* 1: the plans of an instance share buffers sized by the first plan prepared, so the
   * largest batch should be prepared first (the engine does). */
  int shared_plan_memory;
  bd_status (*prepare)(bd_backend *be, const bd_plan *plan, bd_err *err);
  bd_status (*run)(bd_backend *be, const bd_plan *plan, const float *const *inputs,
                   float *const *outputs, bd_err *err);
  void (*destroy)(bd_backend *be);
  /* Device detection (see above); all NULL or all set. */
  bd_status (*dd_setup)(bd_backend *be, const bd_dd_config *cfg, int max_batch, bd_err *err);
  bd_status (*dd_prepare)(bd_backend *be, const bd_plan *plan, bd_err *err);
  /* The pinned staging buffer of slot (cfg.stage_bytes); the host may write it only
   * while the slot is idle (never launched, or waited for). */
  uint8_t *(*dd_stage)(bd_backend *be, int slot);
  /* Enqueues rows 0..n-1 (n <= plan batch) of slot on plan; returns without waiting. */
  bd_status (*dd_launch)(bd_backend *be, const bd_plan *plan, int slot, int n,
                         const bd_dd_image *rows, bd_err *err);
  /* Waits for slot's batch; *dets (n x out_cap x 6) and *counts (n) stay valid until the
   * slot is launched again. */
  bd_status (*dd_wait)(bd_backend *be, int slot, const float **dets, const int **counts,
                       bd_err *err);
} bd_backend_vtbl;

struct bd_backend {
  const bd_backend_vtbl *vt;
  const bd_graph *graph;
};

static inline bd_status bd_backend_prepare(bd_backend *be, const bd_plan *p, bd_err *err) {
  return be->vt->prepare(be, p, err);
}
static inline bd_status bd_backend_run(bd_backend *be, const bd_plan *p,
                                       const float *const *inputs, float *const *outputs,
                                       bd_err *err) {
  return be->vt->run(be, p, inputs, outputs, err);
}
static inline void bd_backend_destroy(bd_backend *be) {
  if (be) be->vt->destroy(be);
}

/* The cpu backend (gpu/cpu/): FP32, `threads` worker threads (0 = all cores, else at
 * most BD_CPU_MAX_THREADS). */
#define BD_CPU_MAX_THREADS 256
bd_status bd_cpu_backend_new(const bd_graph *g, int threads, bd_backend **out, bd_err *err);
/* What runs the cpu backend's pointwise and dense convs on this CPU and build, for people:
 * "AVX-512 fused tiles", "AVX2 fused tiles", or "im2col + OpenBLAS (<its core> kernels)" /
 * "im2col + built-in GEMM" (OpenBLAS names the kernels it picked; "Prescott" on a modern
 * CPU means it did not recognise it and runs SSE3 code). */
const char *bd_cpu_conv_kernels(void);

#endif
