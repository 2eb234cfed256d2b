/* bd_engine: the inference engine facade. One handle = one model on one device:
 * ONNX import -> compile -> one plan per batch-size bucket -> a backend instance.
 *
 * Buckets: 1, 8, 16, 32, 64 and max_batch (those <= max_batch). A call with n rows runs
 * in the smallest bucket >= n, the extra rows padded with zeros and their outputs
 * dropped; more than max_batch rows run in chunks. Plans are built and the backend
 * prepared lazily, the first time a bucket is used (opts.prepare_all = 1 does every
 * bucket at load, for servers that want all memory allocated up front).
 *
 * Two APIs:
 *  - raw: float32 NCHW input [n,C,H,W] -> float32 outputs in ONNX layout and graph order,
 *    output i of row r at outputs[i] + r * bd_engine_output_row_numel(e, i);
 *  - detection: n decoded RGB8 images -> per-image detections in original-image pixels,
 *    with the family's pre/post-processing and per-image thresholds.
 *
 * Detection on cuda runs whole on the device (bd_backend.h "device detection"): the host
 * only copies the decoded pixels into pinned staging (or, for an image larger than 4x
 * the network input, resizes it first with the same OpenCV-exact code, so the pixels
 * are the same) and fills per-image descriptors; resize, letterbox, colour order,
 * layout, network, box decode, score filter and per-class NMS are one CUDA graph per
 * bucket. Two batches are in flight per engine (bd_engine_detect_begin/_end). Device
 * limits: the best 1000 candidates of an image enter NMS (mmdet's nms_pre) and max_det
 * is clamped to 1024; with fewer candidates the result is the CPU path's.
 *
 * Devices: "cpu"; "cuda" / "cuda:N" when the CUDA backend was built (else
 * BD_E_UNSUPPORTED naming the build). Thread safety: one engine is used by one thread at
 * a time; separate engines are independent. Ownership: bd_engine_destroy(NULL) is a
 * no-op; detections returned by bd_engine_detect belong to the caller
 * (bd_detections_free). */
#ifndef BD_ENGINE_H
#define BD_ENGINE_H

#include <stdint.h>

#include "bd_family.h"
#include "bd_image.h"
#include "bd_prof.h"
#include "bd_status.h"

#define BD_ENGINE_MAX_BATCH 1024
#define BD_ENGINE_MAX_THREADS 256 /* cpu backend threads (bd_engine_opts.threads) */
/* The most bytes of float32 outputs for max_batch rows, each output and all of them
 * together (bd_engine_load refuses larger models with BD_E_LIMIT): the cpu backend's
 * arena limit, which its intermediates already have. */
#define BD_ENGINE_MAX_OUTPUT_BYTES ((uint64_t)64 << 30)

typedef struct bd_engine bd_engine;

/* Device weights of a model (cuda: one blob per GPU), shareable between engines of the
 * same model: see bd_engine_weights_get. Opaque, refcounted. */
typedef struct bd_engine_weights bd_engine_weights;

typedef struct bd_engine_opts {
  const char *device; /* "cpu" (default when NULL), "cuda", "cuda:N" */
  int threads;        /* cpu backend worker threads; 0 = all cores */
  int max_batch;      /* largest bucket; 0 = 64 */
  bd_family family;   /* BD_FAMILY_AUTO recognises it from the graph; BD_FAMILY_NONE
                         loads any single-input graph for the raw API only */
  int prepare_all;    /* 1: build every bucket's plan at load */
  int host_prepost;   /* 1: pre/post-processing on the CPU even where the device does it
                         (cuda); for comparisons */
  bd_engine_weights *weights; /* cuda: use these device weights (same model, on this
                                 engine's GPU; checked) instead of uploading; NULL: upload */
} bd_engine_opts;

/* Parses "cpu", "cuda", "cuda:N" (N 0..63). Returns 0 and sets *is_cuda, *index, else -1. */
int bd_engine_parse_device(const char *s, int *is_cuda, int *index);

bd_status bd_engine_load(const char *onnx_path, const bd_engine_opts *opts, bd_engine **out,
                         bd_err *err);
void bd_engine_destroy(bd_engine *e);

const bd_family_info *bd_engine_family(const bd_engine *e);
const char *bd_engine_device(const bd_engine *e); /* e.g. "cpu", "cuda:0" */
int bd_engine_max_batch(const bd_engine *e);
/* Input [C,H,W] of one row (a family model; 0s for other input ranks). */
void bd_engine_input_chw(const bd_engine *e, int *c, int *h, int *w);
/* Floats in one input row (any graph). */
int64_t bd_engine_input_row_numel(const bd_engine *e);
int bd_engine_num_outputs(const bd_engine *e);
const char *bd_engine_output_name(const bd_engine *e, int i);
/* Dims of output i for `batch` rows (dims[0] = batch); returns the rank. */
int bd_engine_output_dims(const bd_engine *e, int i, int batch, int64_t dims[8]);
int64_t bd_engine_output_row_numel(const bd_engine *e, int i);

/* Raw API. input: n*C*H*W floats; outputs[i]: n * row_numel(i) floats (caller's). */
bd_status bd_engine_run_raw(bd_engine *e, int n, const float *input, float *const *outputs,
                            bd_err *err);

/* The family's pre-processing of one image into dst (C*H*W floats), as fed to the network. */
bd_status bd_engine_preprocess(const bd_engine *e, const bd_image *im, float *dst, bd_prep_info *pi,
                               bd_err *err);

/* A new reference to e's device weights, NULL on cpu. */
bd_engine_weights *bd_engine_weights_get(bd_engine *e);
void bd_engine_weights_release(bd_engine_weights *w);
/* out[i] (new references): w's weights on GPU devices[i], broadcast with NCCL from w's GPU
 * to each other distinct GPU once (w itself for its own GPU). For a pool that loads one
 * engine per GPU: the host uploads the model once. */
bd_status bd_engine_weights_broadcast(bd_engine_weights *w, int n, const int *devices,
                                      bd_engine_weights **out, bd_err *err);

/* 1 when bd_engine_detect pre- and post-processes on the device (cuda with a family). */
int bd_engine_device_prepost(const bd_engine *e);

/* BD_OK when pre-processing takes a w x h image (1..BD_IMAGE_MAX_SIDE per side), else
 * BD_E_LIMIT with a message: callers check decoded images with it so that the per-image
 * error says why (bd_engine_detect reports a status only). */
bd_status bd_engine_check_image_size(int w, int h, bd_err *err);

/* Detection API. images[i] may be NULL (skipped: out[i] empty, status[i] = BD_E_INVALID).
 * params: n entries, or NULL for the family defaults. out: n entries, filled. status: n
 * entries (per-image result) or NULL. Returns BD_OK when the batch ran (per-image
 * failures are only in status[]), an error when the network itself failed. */
bd_status bd_engine_detect(bd_engine *e, int n, const bd_image *const *images,
                           const bd_detect_params *params, bd_detections *out, bd_status *status,
                           bd_err *err);

/* Asynchronous detection: up to BD_ENGINE_MAX_INFLIGHT batches begun and not yet ended.
 * begin takes 1..bd_engine_max_batch(e) images with bd_engine_detect's arguments, which
 * must all stay valid until the matching end; on a device with device pre/post-processing
 * it stages the batch, launches it and returns at once (the host can stage the next batch
 * while the device runs this one); elsewhere it runs the batch. *ticket identifies it.
 * BD_E_UNAVAILABLE when BD_ENGINE_MAX_INFLIGHT batches are in flight. end waits for the
 * ticket's batch, fills out/status and returns what bd_engine_detect would have; any
 * order of ends is allowed. bd_engine_destroy waits for batches never ended (their out
 * entries stay empty). */
#define BD_ENGINE_MAX_INFLIGHT 2
bd_status bd_engine_detect_begin(bd_engine *e, int n, const bd_image *const *images,
                                 const bd_detect_params *params, bd_detections *out,
                                 bd_status *status, int *ticket, bd_err *err);
bd_status bd_engine_detect_end(bd_engine *e, int ticket, bd_err *err);

/* Benchmark hooks (batchdet bench), for cuda engines; BD_E_UNSUPPORTED on the cpu and in
 * builds without CUDA.
 * bd_engine_time_device: the device time (CUDA events) of the network alone for a batch of
 * n rows, n one of the engine's buckets (1, 8, 16, 32, 64, max_batch), run `reps` times on
 * the input the last bd_engine_run_raw of n rows uploaded, without host<->device copies;
 * *ms = mean per run. That run_raw must have happened (BD_E_INVALID otherwise).
 * bd_engine_device_mem_used: memory in use on the GPU named by `device` ("cuda", "cuda:N";
 * total - free, all processes), bytes; creates the CUDA context when there is none, so a
 * first call before bd_engine_load gives the baseline of an engine's footprint. */
bd_status bd_engine_time_device(bd_engine *e, int n, int reps, double *ms, bd_err *err);
/* bd_engine_profile_device: per action of the network for a batch of n rows (as
 * bd_engine_time_device: a bucket, after a run_raw of n rows) its device time, run one
 * action at a time `reps` times after a warm-up, and what it is (bd_prof.h;
 * bd_cuda_backend_profile). *rows: *n_rows entries in execution order, the caller frees
 * it with free(); names in it are borrowed from the engine. */
bd_status bd_engine_profile_device(bd_engine *e, int n, int reps, bd_prof_row **rows, int *n_rows,
                                   bd_err *err);
bd_status bd_engine_device_mem_used(const char *device, size_t *used, bd_err *err);
/* Whether the engine's prepared plan for exactly n rows runs as captured CUDA graphs:
 * NULL when it does (dd: its device-detection graphs, else the raw-run graph), else why
 * not ("not a cuda engine", "no prepared plan", or the capture's error). */
const char *bd_engine_graph_status(bd_engine *e, int n, int dd);
/* How the cuda plan for exactly n rows orders its actions (bd_cuda_backend_graph_shape);
 * NULL for other engines. */
const char *bd_engine_graph_shape(bd_engine *e, int n);

/* The device memory a cuda instance would hold for plan p of compiled graph g, computed
 * on the host (no GPU needed; see bd_cuda_plan_memory): weights (the model's blob, one
 * per GPU), arena (activations, conversions, padded-conv scratch, the network's FP32
 * input and outputs), and how many Concat inputs are written in place. BD_E_UNSUPPORTED
 * in builds without CUDA. */
typedef struct bd_engine_plan_mem {
  size_t weights, arena;
  int concat_inputs, concat_in_place; /* Concat inputs, and those written in place */
} bd_engine_plan_mem;
bd_status bd_engine_cuda_plan_memory(const bd_graph *g, const bd_plan *p, bd_engine_plan_mem *m,
                                     bd_err *err);

#endif
