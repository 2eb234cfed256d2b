/* Internals of the cuda backend shared by its host C files and its tests. */
#ifndef BD_CUDA_INTERNAL_H
#define BD_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#ifdef BD_HAVE_CUDNN
#include <cudnn.h>
/* cuDNN's name for BD_CT_H16. */
#ifdef BD_CUDA_BF16
#define BD_DNN_H16 CUDNN_DATA_BFLOAT16
#else
#define BD_DNN_H16 CUDNN_DATA_HALF
#endif
#endif

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_cuda_backend.h"
#include "bd_cuda_kernels.h"
#include "bd_cuda_post.h"

/* Checks a CUDA runtime call; on failure records the call, the error and file:line in
 * err, sets `st` and jumps to the function's `out` label. */
#define BD_CU(call)                                                                      \
  do {                                                                                   \
    cudaError_t e_ = (call);                                                             \
    if (e_ != cudaSuccess) {                                                             \
      st = bd_err_set(err, BD_E_DEVICE, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), \
                      __FILE__, __LINE__);                                               \
      goto out;                                                                          \
    }                                                                                    \
  } while (0)

#define BD_DNN(call)                                                                      \
  do {                                                                                    \
    cudnnStatus_t e_ = (call);                                                            \
    if (e_ != CUDNN_STATUS_SUCCESS) {                                                     \
      st = bd_err_set(err, BD_E_DEVICE, "%s: %s (%s:%d)", #call, cudnnGetErrorString(e_), \
                      __FILE__, __LINE__);                                                \
      goto out;                                                                           \
    }                                                                                     \
  } while (0)

/* Test hook: 1 (default) replays the captured CUDA graph, 0 runs the same work directly
 * on the stream (the graph-vs-stream bitwise test uses both). */
void bd_cuda_backend_set_graphs(bd_backend *be, int use_graphs);

/* Per-conv-layer state of one plan (cuDNN descriptors and chosen algorithm). */
typedef struct bd_cuda_conv_layer bd_cuda_conv_layer;

/* Sets up a conv layer for shape p: descriptors, algorithm chosen by measurement
 * (cudnnFindConvolutionForwardAlgorithmEx on the real buffers, with the scratch
 * workspace probe of probe_bytes; NULL: allocated for this call) the first time the
 * process meets this shape on this GPU, then remembered (every engine of the process
 * runs a shape the same way: identical results), workspace need in *ws_bytes. Our own kernel runs it (bd_cuda_conv_layer_is_direct) for depthwise convs,
 * asymmetric padding, or when cuDNN has no algorithm. handle may be NULL without cuDNN. */
bd_status bd_cuda_conv_layer_new(void *cudnn_handle, const bd_cuda_conv_shape *p, int pad_b,
                                 int pad_r, void *x, void *w, void *y, void *xpad, void *ypad,
                                 void *probe, size_t probe_bytes, bd_cuda_conv_layer **out,
                                 size_t *ws_bytes, bd_err *err);
/* What a conv layer of shape p can do with Concat pieces (bd_cuda_plan_aliases):
 * BD_CONV_PITCH_X read a pitched input (our kernels, or through its padded copy);
 * BD_CONV_PITCH_Y write a pitched output without giving up cuDNN's fused epilogue
 * (may_fuse: the layer would try to fuse); BD_CONV_PITCH_ALIGN8: the pitches and channel
 * offsets must be multiples of 8 (the tensor-core kernel); BD_CONV_PITCH_XZERO: it pads
 * its input channels to 8 and can read an input stored that way with zero pad channels
 * (shape.xzero) instead of copying it; BD_CONV_PITCH_R read a pitched residual
 * (shape.ldr: our tensor-core kernel); BD_CONV_PITCH_ROUTE read its residual upsampled
 * (shape.rup) or as twins each its own (shape.r2): our tensor-core kernel on a tile other
 * than the patch tile. */
enum {
  BD_CONV_PITCH_X = 1,
  BD_CONV_PITCH_Y = 2,
  BD_CONV_PITCH_ALIGN8 = 4,
  BD_CONV_PITCH_XZERO = 8,
  BD_CONV_PITCH_R = 16,
  BD_CONV_PITCH_ROUTE = 32
};
int bd_cuda_conv_layer_pitch_caps(const bd_cuda_conv_shape *p, int pad_b, int pad_r, int cudnn,
                                  int may_fuse);
/* 1 when a layer of shape p runs on a channel-padded copy of its input and/or writes a
 * separate packed output first (padded channels, or a pitched output cuDNN cannot write;
 * cudnn: a cuDNN handle will be given); their sizes in bytes (0: not needed). A caller
 * may lend such buffers to bd_cuda_conv_layer_new (xpad, ypad; both NULL: the layer
 * allocates its own); they are used only while the layer runs. */
int bd_cuda_conv_layer_pad_bytes(const bd_cuda_conv_shape *p, int pad_b, int pad_r, int cudnn,
                                 size_t *xpad, size_t *ypad);
/* Allocates the algorithm-search workspace (256 MiB, less when memory is short);
 * returns its size, 0 (and *out NULL) when none could be had. */
size_t bd_cuda_probe_ws_alloc(void **out);
/* Enqueues the convolution + epilogue on stream. */
bd_status bd_cuda_conv_layer_run(void *cudnn_handle, const bd_cuda_conv_layer *l,
                                 const void *x, const void *w, const float *bias,
                                 const void *r, void *y, void *ws, size_t ws_bytes,
                                 cudaStream_t stream, bd_err *err);
/* 1 when layer l can read its input as the FP32 NCHW network input (in_h x in_w) through
 * layout lo instead of the 16-bit tensor that layout writes: it runs on the patch tile
 * (BD_CONV_PATCH_TILE) and bd_cuda_conv_patch_layout_ok takes the shape it runs. */
int bd_cuda_conv_layer_takes_layout(const bd_cuda_conv_layer *l, const bd_cuda_prep_layout *lo,
                                    int in_h, int in_w);
/* bd_cuda_conv_layer_run for such a layer, reading src through lo (bd_cuda_conv_patch_layout:
 * the layout and the conv in one kernel). */
bd_status bd_cuda_conv_layer_run_layout(const bd_cuda_conv_layer *l, const float *src, int in_h,
                                        int in_w, const bd_cuda_prep_layout *lo, const void *w,
                                        const float *bias, const void *r, void *y,
                                        cudaStream_t stream, bd_err *err);
/* Switches a cuDNN layer to cudnnConvolutionBiasActivationForward (bias, ReLU or
 * identity, pre-activation residual in one kernel) when its epilogue allows it and a
 * trial call on the real buffers (ws: at least the layer's workspace) succeeds; other
 * layers are left as they are. Not an error when cuDNN refuses. */
bd_status bd_cuda_conv_layer_fuse(void *cudnn_handle, bd_cuda_conv_layer *l, const float *bias,
                                  void *x, void *w, void *y, void *ws, size_t ws_bytes,
                                  bd_err *err);
/* 1 when the layer runs fused in cuDNN. */
int bd_cuda_conv_layer_is_fused(const bd_cuda_conv_layer *l);
/* The workspace bytes a run of the layer uses (0: it leaves the workspace alone). */
size_t bd_cuda_conv_layer_ws(const bd_cuda_conv_layer *l);
/* The block tile of a layer on our tensor-core kernel (bd_cuda_conv_mma_tiled), else -1. */
int bd_cuda_conv_layer_tile(const bd_cuda_conv_layer *l);
/* The cuDNN algorithm (cudnnConvolutionFwdAlgo_t) the layer runs, -1 on our direct
 * kernel, -2 on our tensor-core kernel, -4 (BD_PROF_GRAPH) on a cuDNN graph-API plan
 * (bd_cuda_conv_layer_graph_cfg: which configuration); *padded set to 1 when it runs on
 * channel-padded copies (diagnostics). */
int bd_cuda_conv_layer_algo(const bd_cuda_conv_layer *l, int *padded);
/* The heuristics' configuration number of a layer on a cuDNN graph-API plan, else -1. */
int bd_cuda_conv_layer_graph_cfg(const bd_cuda_conv_layer *l);
/* BD_E_INVALID when BATCHDET_CUDA_CONV is set to something other than auto, mma, patch,
 * cudnn. */
bd_status bd_cuda_conv_mode_check(bd_err *err);
/* 1 when a layer of shape p (pitches ignored) waits for bd_cuda_conv_choose: auto mode
 * (the default) with a cuDNN handle, a shape our tensor-core kernel takes, not decided
 * yet on the current GPU. */
int bd_cuda_conv_undecided(void *cudnn_handle, const bd_cuda_conv_shape *p);
/* Device scratch for bd_cuda_conv_choose: x (input), r (residual), y0, y1 (outputs), each
 * at least the packed shape's bytes, x and r filled with finite values; tmp: 2 x
 * BD_CONV_SAMPLE floats (the outputs' samples, compared on the host); ws: the algorithm
 * search's workspace. */
#define BD_CONV_SAMPLE ((int64_t)1 << 18)
typedef struct bd_cuda_conv_scratch {
  void *x, *r, *y0, *y1, *ws;
  float *tmp;
  size_t ws_bytes;
} bd_cuda_conv_scratch;
/* BATCHDET_CUDA_CONV=auto: decides, once per process, GPU and shape (with activation and
 * residual), whether our tensor-core kernel (on which block tile) or cuDNN (its best
 * algorithm, fused when may_fuse and cuDNN fuses it; our direct kernel where cuDNN
 * refuses the layer) runs an undecided layer: cuDNN and each of our tiles run on the
 * scratch buffers (w, bias: the layer's own), timed between CUDA events on stream. A tile
 * of ours is kept only when it is the fastest of all and its output agrees with cuDNN's
 * (sampled; a tile that disagrees or fails to launch is never used, and a warning goes to
 * stderr). Later layers of the shape follow the decision (bd_cuda_conv_layer_new and the
 * pitch/pad queries). Where the output is a Concat's piece (p->piece; decided apart from
 * other layers of the shape), which every side but cuDNN's fused legacy call writes in
 * place, that side is charged the Concat's copy (timed: a copy of the output).
 * BATCHDET_CUDA_CONV_LOG=1 prints every decision with both times. */
bd_status bd_cuda_conv_choose(void *cudnn_handle, const bd_cuda_conv_shape *p, int pad_b, int pad_r,
                              const void *w, const float *bias, int may_fuse,
                              const bd_cuda_conv_scratch *sc, cudaStream_t stream, bd_err *err);
/* 1 when the layer runs on our direct kernel. */
int bd_cuda_conv_layer_is_direct(const bd_cuda_conv_layer *l);
/* The shape layer l was made for (its act and res: what the plan fused into it). */
const bd_cuda_conv_shape *bd_cuda_conv_layer_shape(const bd_cuda_conv_layer *l);
/* 1 when value v is read only by one channel Concat (not a network output): the plan stores
 * it as that Concat's piece where its producer can write one (bd_cuda_plan_aliases), else
 * the Concat copies it (bd_cuda_conv_shape.piece). */
int bd_cuda_concat_piece(const bd_graph *g, int v);
void bd_cuda_conv_layer_destroy(bd_cuda_conv_layer *l);

#ifdef BD_HAVE_CUDNN
/* A convolution as a cuDNN graph-API execution plan (bd_cuda_dnn_graph.c; the graph and
 * which engine configurations it keeps out are described there). */
typedef struct bd_cuda_dnn_graph bd_cuda_dnn_graph;
/* A run's operands: 16-bit NHWC x, w, y (and r, the residual), 16-bit bias; workspace. */
typedef struct bd_cuda_dnn_args {
  const void *x, *w;
  const void *bias;
  const void *r;
  void *y, *ws;
  size_t ws_bytes;
} bd_cuda_dnn_args;
/* Builds the convolution q (fused: with q's bias, activation and residual, written in 16
 * bits once; else the pre-bias sum) and picks its engine configuration: number cfg of the
 * heuristics' list (cfg >= 0, a memo's; it runs once on a), else each eligible one run on
 * a and timed (replay: as a replayed CUDA graph, where it must also run captured), the
 * fastest kept. *out NULL when no configuration runs it: not an error. */
bd_status bd_cuda_dnn_graph_new(cudnnHandle_t h, const bd_cuda_conv_shape *q, int fused, int cfg,
                                const bd_cuda_dnn_args *a, int replay, bd_cuda_dnn_graph **out,
                                bd_err *err);
/* Enqueues a run on the handle's stream. */
cudnnStatus_t bd_cuda_dnn_graph_run(cudnnHandle_t h, const bd_cuda_dnn_graph *g,
                                    const bd_cuda_dnn_args *a);
int bd_cuda_dnn_graph_cfg(const bd_cuda_dnn_graph *g);
size_t bd_cuda_dnn_graph_ws(const bd_cuda_dnn_graph *g);
int bd_cuda_dnn_graph_fused(const bd_cuda_dnn_graph *g);
void bd_cuda_dnn_graph_destroy(bd_cuda_dnn_graph *g);

/* Without a GPU (cuDNN 9.8 and later): what this cuDNN makes of the graph of q (fused or
 * not) for the GPU whose properties devprop_json holds (cuDNN's JSON of them, from
 * bd_cuda_dnn_devprop_json on that GPU). The graph, the heuristics' list, the notes that
 * keep configurations out and the execution plans are all cuDNN's own; nothing runs. */
typedef struct bd_cuda_dnn_survey {
  int taken;        /* q is a graph bd_cuda_dnn_graph_new builds (dense, 16-byte rows) */
  int graph;        /* cuDNN finalized its operation graph */
  int listed;       /* configurations listed (at most the 16 bd_cuda_dnn_graph_new asks) */
  int rtc, nondet;  /* of them, kept out: compiled at run time; nondeterministic */
  int unplanned;    /* eligible by their notes, but no plan finalized */
  int over_ws;      /* planned, but needing more than ws_cap bytes of workspace */
  int eligible;     /* the rest: what bd_cuda_dnn_graph_new would time */
  int first;        /* the first eligible's number in the list, -1 none */
  long long engine; /* its engine's global index, -1 none or unread */
  size_t ws;        /* its workspace */
  int cluster;      /* its engine tiles thread-block clusters (Hopper's kind): 1, 0, -1 unread */
  long long top_engine; /* the list's first configuration's engine, -1 none */
} bd_cuda_dnn_survey;
/* Numbers per line of BATCHDET_CUDA_DNN_GRAPH_SHAPES's file (bd_cuda_dnn_graph.c): n h w c
 * oh ow m kh kw sh sw dh dw pad_t pad_l group act res ldx ldy ldr fused. */
#define BD_CUDA_DNN_SHAPE_FIELDS 22
#define BD_CUDA_DNN_DEVPROP_MAX 65536 /* bytes of device-properties JSON at most */
bd_status bd_cuda_dnn_graph_survey(const char *devprop_json, const bd_cuda_conv_shape *q, int fused,
                                   size_t ws_cap, bd_cuda_dnn_survey *sv, bd_err *err);
/* GPU device's properties as cuDNN's JSON (needs that GPU), NUL-terminated in buf. */
bd_status bd_cuda_dnn_devprop_json(int device, char *buf, size_t cap, bd_err *err);
#endif

/* ---- plan state shared by bd_cuda_backend.c and bd_cuda_exec.c ---- */
enum { BD_REP_F32 = 0, BD_REP_H16 = 1 };
enum { BD_A_OP = 0, BD_A_CONVERT, BD_A_OUTPUT, BD_A_ZERO, BD_A_LAYOUT };

/* One step of a prepared run: an op, a representation conversion, the copy of a graph
 * output into its FP32 device output buffer, the zeroing of a channel-padded value's
 * buffer before its first writer, or (first, in place of the actions it replaces:
 * bd_cuda_raw_direct) the FP32 input written as the network's first 16-bit tensor. */
typedef struct bd_cuda_action {
  int kind, node, value, rep, out_index;
} bd_cuda_action;

/* Bytes an action reads or writes (bd_cuda_action_fps): [lo, hi), or where pitch is not
 * 0 only the first span bytes of every pitch bytes from lo (a channel slice of a 16-bit
 * NHWC buffer: a Concat piece written or read in place). */
typedef struct bd_cuda_fp {
  uintptr_t lo, hi;
  int64_t pitch, span;
  int write;
} bd_cuda_fp;
typedef struct bd_cuda_cplan {
  const bd_plan *plan;
  int batch, n_steps;
  void *arena;        /* the backend's shared arena, or a private one (in extra) */
  size_t arena_bytes; /* what this plan's buffers need (16-bit where 16-bit) */
  /* Memory plan: per value and representation the index of its bd_pack_item, -1 none.
   * Made by a sizing pass over the steps (sizing = 1: representations and conversions
   * decided, nothing allocated or enqueued), placed by bd_pack. */
  int (*item)[2];
  int (*scratch)[2]; /* per node: items of a padded conv's input / output copies, -1 none */
  /* Concat pieces written in place (bd_cuda_plan_aliases): per value, the Concat output
   * whose buffer holds it (-1: its own buffer) and its first channel there (the distance
   * between its pixels: planned_pitch in bd_cuda_exec.c). */
  int *alias;
  int64_t *alias_ch;
  /* Values stored with their channels padded to 8 and zeroed (read by channel-padded
   * convs as their padded input, no copy): the padded width, 0 = not. */
  int64_t *pad_to;
  char *zeroed; /* real pass: the zeroing step is in place */
  /* Views (Reshape & co., Transpose, Slice): per value the value whose buffer it reads (-1
   * none), how (vkind 1: that FP32 buffer itself, ONNX order; 2: through vview's dims and
   * strides, base resolved at run time) */
  int *same;
  char *vkind;
  bd_cuda_view *vview;
  int64_t *voff; /* vkind 2: elements from the source chain's buffer to the view's first */
  /* Twin convs (bd_cuda_conv_twins) this plan runs as one launch: per node 1 for the
   * first (it writes both outputs), 2 for the second (nothing left to run), 0 none. */
  signed char *twin_on;
  /* Resizes read upsampled by their convs (plan_upres): per value, for a Resize output
   * every reader of which is a conv taking it as its residual through the epilogue
   * (bd_cuda_conv_shape.rup), the value it upsamples; -1 none. Such an output is a view of
   * that value (vkind 3): nothing runs for the Resize, no buffer of its own. */
  int *upsrc;
  bd_pack_item *items;
  int n_items;
  int sizing, cur_step;
  void *own_host[12]; /* private pinned buffers (when the shared ones are too small) */
  int n_own_host;
  void *(*buf)[2]; /* per value: [BD_REP_F32], [BD_REP_H16] device pointers, NULL = absent */
  signed char *prim; /* per value: primary representation, -1 = none yet */
  void **extra;      /* conversion and output buffers, freed with the plan */
  int n_extra;
  bd_cuda_action *acts;
  int n_acts;
  bd_cuda_conv_layer **layer; /* per node */
  /* The conv workspace: n_ws slots of ws_bytes, ws_stride apart from ws; the slot each
   * action's conv uses (ws_slot[i]; NULL: slot 0), given by bd_cuda_plan_dag */
  void *ws;
  size_t ws_bytes, ws_stride;
  int n_ws;
  int *ws_slot;
  void *probe; /* algorithm-search workspace, only during prepare */
  size_t probe_bytes;
  /* The network's FP32 input and outputs on the device: places in the arena (or, for an
   * output that is a constant, its buffer) set by prepare; and their pinned host copies. */
  void *d_in[4], *h_in[4];
  size_t in_bytes[4];
  void *d_out[8], *h_out[8];
  size_t out_bytes[8];
  int out_item[8]; /* the arena item of an output converted there at the end, -1 none */
  /* The actions' order as a DAG (bd_cuda_plan_dag): action i must follow the actions
   * pred[pred_at[i] .. pred_at[i + 1]) (all earlier), because it touches bytes they
   * touch and one of them writes; the others may run beside it. NULL: in order. */
  int *pred_at, *pred;
  char dag_info[128]; /* its shape in words (bd_cuda_backend_graph_shape) */
  cudaGraph_t graph;
  cudaGraphExec_t exec; /* NULL: capture failed, runs go directly on the stream */
  char graph_err[BD_ERR_MSG_MAX];
  /* Device detection (bd_cuda_detect.c): one graph per slot, pre-processing from the
   * slot's staging -> network -> post-processing into the backend's detection buffers. */
  int dd_ready;
  /* Detection pre-processing straight into the network's first 16-bit tensor
   * (bd_cuda_prep_direct): dd_direct 1, the tensor at dd_dst in layout dd_lo, and the
   * actions that made it from the FP32 input flagged in dd_skip (n_acts entries). */
  int dd_direct;
  bd_cuda_prep_layout dd_lo;
  void *dd_dst;
  unsigned char *dd_skip;
  /* The raw network path's first action, when it is a BD_A_LAYOUT (bd_cuda_raw_direct):
   * the FP32 input in layout rd_lo at rd_dst. Detection then pre-processes straight into
   * rd_dst and leaves that action out. */
  int rd_direct;
  bd_cuda_prep_layout rd_lo;
  void *rd_dst;
  /* And where that tensor's one reader is a conv on the patch tile that can read the FP32
   * input through rd_lo itself (bd_cuda_conv_layer_takes_layout; BATCHDET_CUDA_FUSE_LAYOUT
   * not 0): rd_fuse is its action, and the raw path's enqueue (rd_fusing set meanwhile)
   * leaves the layout action out (rd_skip) and runs the conv from the input. Detection,
   * whose pre-processing writes the tensor, runs the conv as usual. -1: none. */
  int rd_fuse, rd_fusing;
  unsigned char *rd_skip;
  cudaGraph_t dd_graph[BD_DD_SLOTS];
  cudaGraphExec_t dd_exec[BD_DD_SLOTS]; /* NULL: runs go directly on the stream */
  char dd_graph_err[BD_ERR_MSG_MAX];
  /* Benchmark hook (bd_cuda_bench.c): the network without its host<->device copies,
   * captured on first use. */
  cudaGraph_t core_graph;
  cudaGraphExec_t core_exec;
} bd_cuda_cplan;

/* Device detection state of a backend (bd_cuda_detect.c), shared by its plans. */
typedef struct bd_cuda_dd_slot {
  uint8_t *h_src; /* pinned staging, cfg.stage_bytes */
  bd_cuda_prep_desc *h_prep, *d_prep; /* max_batch rows each */
  bd_cuda_post_desc *h_post, *d_post;
  float *h_dets; /* max_batch x out_cap x 6, pinned */
  int *h_counts;
  cudaEvent_t copied, done;
  int busy, n;
} bd_cuda_dd_slot;

typedef struct bd_cuda_dd {
  bd_dd_config cfg;
  int max_batch;
  cudaStream_t copy; /* host-to-device copies of staged slots */
  bd_cuda_dd_slot slot[BD_DD_SLOTS];
  /* The device staging, cfg.stage_bytes, one for all slots: a batch's pixels are read
   * only by its pre-processing, whose end each run records in `prepped` (an external
   * event node in the graphs); the next upload waits for it. */
  void *d_src;
  cudaEvent_t prepped;
  float *d_dets; /* max_batch x out_cap x 6 */
  int *d_counts;
  void *ws; /* yolox decode workspace */
} bd_cuda_dd;

/* Buffers every plan of a backend uses in turn (all its work is on one stream): sized
 * by the first plan prepared (the engine prepares its largest batch first); a later
 * plan that needs more gets private buffers instead. */
typedef struct bd_cuda_shared {
  void *arena;
  size_t arena_bytes;
  void *h_in[4];
  size_t h_in_bytes[4];
  void *h_out[8];
  size_t h_out_bytes[8];
  void *ws;
  size_t ws_bytes;
} bd_cuda_shared;

typedef struct bd_cuda_be {
  bd_backend base;
  bd_cuda_shared sh;
  int device;
  cudaStream_t stream;
  void *dnn;   /* cudnnHandle_t, NULL without cuDNN */
  void **cdev; /* per value: FP32 device copy of a float constant */
  void **wbf;  /* per node: 16-bit KRSC conv weights */
  void **tbias; /* per node, first of twin convs: both biases stacked, FP32 (zeros where
                   a conv has none); NULL for the others */
  int *twin;    /* per node: its twin conv (bd_cuda_conv_twins), -1 none */
  bd_cuda_cplan **plans;
  int n_plans;
  int use_graphs;
  bd_cuda_dd *dd; /* NULL until dd_setup */
  bd_cuda_weights *w; /* the device weights cdev / wbf point into (shared, refcounted) */
  int pdl_max_batch;  /* graphs of plans up to this batch launch with programmatic
                         dependent launch (bd_cuda_capture); 0: none */
} bd_cuda_be;

/* BATCHDET_CUDA_PDL: unset or "auto" -> plans of batch <= BD_CUDA_PDL_AUTO_BATCH, "1" -> all,
 * "0" -> none; always none below compute capability 9.0. On the H100 (2026-11-27, DAMO-T
 * 640) it took batch 1 from 0.880 to 0.797 ms and batch 32 from 4.90 to 5.06 ms. */
#define BD_CUDA_PDL_AUTO_BATCH 4

/* Twin convs: pairs of convs of g reading one input with the same geometry, input
 * channels a multiple of 8, residuals of one mode or none (with residuals: output channels
 * multiples of 8), neither a graph output; each its own activation (in node order, each
 * with the nearest later one that is free). Fills twin[n] (n_nodes
 * entries) with n's partner, -1 for none. Their weights lie back to back in the weights
 * blob, and a plan whose conv choice puts the stacked shape on our tensor-core kernel
 * runs each pair as one launch (bd_cuda_kernels.h's m1; BATCHDET_CUDA_TWINS=0: never):
 * the input is read once and the GEMM is twice as wide. */
void bd_cuda_conv_twins(const bd_graph *g, int *twin);
/* The size of g's weights blob; with cdev (n_values entries), cdev[v] = marker for
 * every value the blob holds, NULL for the others (a host-only view of the layout). */
bd_status bd_cuda_weights_bytes(const bd_graph *g, size_t *bytes, void **cdev, void *marker,
                                bd_err *err);
/* Uploads float constants and converts conv weights into a new weights blob (at
 * backend creation). */
bd_status bd_cuda_upload_constants(bd_cuda_be *b, bd_err *err);
/* Uses w (same GPU, same model: checked) instead of uploading; takes a reference. */
bd_status bd_cuda_use_weights(bd_cuda_be *b, bd_cuda_weights *w, bd_err *err);
/* The bytes of value v's buffer in representation rep (16-bit: channels padded where the
 * plan pads them). */
size_t bd_cuda_rep_bytes(const bd_cuda_cplan *cp, int v, int rep);
/* The bytes action i of cp reads and writes, at most cap entries into f: their count, or
 * -1 where they are not known (the action must follow, and precede, every other). */
int bd_cuda_action_fps(const bd_cuda_be *b, const bd_cuda_cplan *cp, int i, bd_cuda_fp *f,
                       int cap);
/* A cap that bd_cuda_action_fps never finds too small for any action of graph g. */
int bd_cuda_action_fps_cap(const bd_graph *g);
/* The value a conv reads as residual v: v, or the input of the Resize that made v where
 * the plan leaves that Resize to its readers (cp->upsrc). */
static inline int bd_cuda_res_src(const bd_cuda_cplan *cp, int v) {
  return v >= 0 && cp->upsrc[v] >= 0 ? cp->upsrc[v] : v;
}
/* Graphs with parallel branches (bd_cuda_dag.c), BATCHDET_CUDA_BRANCHES: auto (default)
 * for plans up to batch BD_CUDA_BRANCH_BATCH, whose kernels each fill a fraction of the
 * GPU; 1 for every plan; 0 for none. Plans of batch <= BD_CUDA_BRANCH_BATCH with
 * branches are laid out for them: no arena bytes reused within BD_CUDA_BRANCH_PAD steps
 * of their last reader, and BD_CUDA_BRANCH_WS conv workspaces (from a DAMO-T batch-1
 * profile: the ideal critical path of its actions 1.38 -> 1.03 ms with both, 1.20 with
 * one workspace). Larger batches keep their memory (unmeasured: whether branches help
 * them, hence not by default). */
#define BD_CUDA_BRANCH_BATCH 4
#define BD_CUDA_BRANCH_PAD 8
#define BD_CUDA_BRANCH_WS 3
/* 1 when cp's graphs get parallel branches (BATCHDET_CUDA_BRANCHES, above). */
int bd_cuda_branches(const bd_cuda_cplan *cp);
/* 1 when cp's memory is laid out for branches (above). */
int bd_cuda_branch_room(const bd_cuda_cplan *cp);
/* Orders cp's actions as a DAG (cp->pred_at, cp->pred, and each conv's workspace slot
 * cp->ws_slot; after the buffers and the workspace are placed) where bd_cuda_branches. */
bd_status bd_cuda_plan_dag(const bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err);
/* Enqueues cp's actions (those skip marks aside; skip may be NULL) on b->stream: in
 * order, or, while the stream captures a graph and cp has a DAG, each action's work
 * depending only on the work of the actions it must follow (independent branches of the
 * network become parallel branches of the graph), all of it joined at the end. */
bd_status bd_cuda_enqueue_actions(bd_cuda_be *b, bd_cuda_cplan *cp, const unsigned char *skip,
                                  bd_err *err);
/* Decides which Concat inputs are written straight into their slice of the Concat's
 * buffer (cp->alias; before the sizing pass). BATCHDET_CUDA_ALIAS=0 turns it off. */
void bd_cuda_plan_aliases(bd_cuda_be *b, bd_cuda_cplan *cp);
/* Extends the lifetime of every memory-plan item of value v to step (sizing pass). */
void bd_cuda_extend_items(bd_cuda_cplan *cp, int v, int step);
/* The graph's inputs and outputs in the arena (bd_cuda_exec.c): inputs bound before the
 * first step, outputs after the last (in the real pass: d_in, d_out set, and the output
 * conversions appended). */
bd_status bd_cuda_bind_inputs(const bd_graph *g, bd_cuda_cplan *cp, bd_err *err);
void bd_cuda_bind_outputs(const bd_graph *g, bd_cuda_cplan *cp);
/* BATCHDET_CUDA_CONV=auto: decides, by measurement, our tensor-core kernel or cuDNN for
 * each of the plan's convs not decided yet on this GPU (bd_cuda_conv_choose; before the
 * sizing pass, which follows the decisions). Refuses a bad BATCHDET_CUDA_CONV. */
bd_status bd_cuda_plan_conv_choices(bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err);
/* Adds node's conversions and op step to cp, assigning its output buffer; in the sizing
 * pass (cp->sizing, step cp->cur_step) only records the buffers they need. */
bd_status bd_cuda_plan_node(bd_cuda_be *b, bd_cuda_cplan *cp, int node, bd_err *err);
/* Enqueues a whole run of cp on b->stream (used directly and under capture); io = 1
 * includes the copies of the input from its pinned host buffer and of the outputs to
 * theirs, io = 0 only the network between the device buffers d_in and d_out. */
bd_status bd_cuda_enqueue(bd_cuda_be *b, bd_cuda_cplan *cp, int io, bd_err *err);
/* Enqueues action i of cp (0 <= i < cp->n_acts) on b->stream: bd_cuda_enqueue's loop
 * body, also run one action at a time by the per-action profile (bd_cuda_bench.c). */
bd_status bd_cuda_enqueue_action(bd_cuda_be *b, bd_cuda_cplan *cp, int i, bd_err *err);
/* Device detection: whether pre-processing can write the 16-bit tensor the network's
 * first layers make of its input - the input's own 16-bit copy (only convs, max-pools
 * and resizes read the input) or a Focus stem's space-to-depth Concat (the input read
 * only through Slices written in place as that Concat's pieces) - so that the actions
 * making it from the FP32 input are left out of the detection runs. 1 with *lo, *dst
 * and skip[i] = 1 for each action left out (skip: cp->n_acts entries); 0: neither. */
int bd_cuda_prep_direct(const bd_cuda_be *b, const bd_cuda_cplan *cp, bd_cuda_prep_layout *lo,
                        void **dst, unsigned char *skip);
/* On unless BATCHDET_CUDA_PREP16=0 (detection's pre-processing and the raw path's layout
 * action then leave the plan's actions as they are). */
int bd_cuda_prep16_enabled(void);
/* The raw network path's input layout (after planning, before the first run): when
 * bd_cuda_prep_direct finds one (and BATCHDET_CUDA_PREP16 is not 0), the actions it
 * replaces go and one BD_A_LAYOUT action comes first (cp->rd_*). */
bd_status bd_cuda_raw_direct(const bd_cuda_be *b, bd_cuda_cplan *cp, bd_err *err);
/* The representation in which layout-agnostic ops read value v (its primary when it
 * has a buffer, else whichever exists); for the profile's byte estimate. */
int bd_cuda_rep_read(const bd_cuda_cplan *cp, int v);
/* The prepared plan state for p, NULL when p was not prepared. */
bd_cuda_cplan *bd_cuda_find_plan(bd_cuda_be *b, const bd_plan *p);
/* Process-wide lock around plan preparation and graph capture: a capture never runs
 * while another thread's engine chooses algorithms or captures (cuDNN and lazy module
 * loading in one thread can invalidate a capture in another). */
void bd_cuda_capture_lock(void);
void bd_cuda_capture_unlock(void);
/* Captures enqueue(b, cp, arg) on b->stream into *exec (relaxed mode; a second try from
 * scratch when instantiation fails). */
bd_status bd_cuda_capture(bd_cuda_be *b, bd_cuda_cplan *cp,
                          bd_status (*enqueue)(bd_cuda_be *, bd_cuda_cplan *, int, bd_err *),
                          int arg, cudaGraph_t *graph, cudaGraphExec_t *exec, bd_err *err);

/* One run of the work being timed, enqueued on s. */
typedef bd_status (*bd_cuda_timed_fn)(void *ctx, cudaStream_t s, bd_err *err);
/* Times fn as a replayed graph runs it: `reps` calls (1..1000) captured into one graph
 * (relaxed mode), launched once untimed and then three times, each between two events;
 * *ms: the median launch over reps, *captured 1. Uncaptured, calls run back to back
 * only as fast as the host issues them: on the second H100 session the conv choice
 * measured cuDNN's 3x3s at 58-93 us that took 36-46 us in the plan, and made our
 * kernels look faster than they are in the replayed plan. With capture 0, or where the
 * stream does not capture, a call fails captured or the graph does not instantiate, the
 * reps run uncaptured between two events instead (*captured 0; warm the work up first
 * either way). Holds no lock: the caller does not capture on s meanwhile. */
bd_status bd_cuda_time_replayed(cudaStream_t s, bd_cuda_timed_fn fn, void *ctx, int reps,
                                int capture, float *ms, int *captured, bd_err *err);

/* Device detection entry points (bd_backend_vtbl's dd_*), and the teardown. */
bd_status bd_cuda_dd_setup(bd_backend *be, const bd_dd_config *cfg, int max_batch, bd_err *err);
bd_status bd_cuda_dd_prepare(bd_backend *be, const bd_plan *p, bd_err *err);
uint8_t *bd_cuda_dd_stage(bd_backend *be, int slot);
bd_status bd_cuda_dd_launch(bd_backend *be, const bd_plan *p, int slot, int n,
                            const bd_dd_image *rows, bd_err *err);
bd_status bd_cuda_dd_wait(bd_backend *be, int slot, const float **dets, const int **counts,
                          bd_err *err);
void bd_cuda_dd_free(bd_cuda_be *b);
/* The prepared state of plan p (bd_cuda_find_plan), for bd_cuda_bench.c. */
bd_cuda_cplan *bd_cuda_backend_plan(bd_cuda_be *b, const bd_plan *p);

#endif
