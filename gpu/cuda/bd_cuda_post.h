/* bd_cuda_post: detection post-processing on the GPU (issue 6), FP32, for the yolox and
 * damoyolo families, with the semantics of bd_family_postprocess + bd_nms:
 *  - yolox: grid decode of raw [N,A,5+C] (strides 8, 16, 32; cx = (x + gx) * s, ...,
 *    w = exp(w) * s; none when `decoded`: the graph decoded the boxes itself, channels
 *    0..3 are cx, cy, w, h in input pixels, bd_family_info.boxes_decoded), one label
 *    per anchor (the first best class), score = obj * cls,
 *    candidate when score >= score_thr;
 *  - damoyolo: scores [N,A,C] + boxes [N,A,4], every (anchor, class) with score >
 *    score_thr (strictly) is a candidate (multi-label);
 *  - candidates are ordered by (score desc, candidate index asc), the index being the
 *    CPU's push order (anchor for yolox, anchor * C + class for damoyolo); then greedy
 *    per-class NMS in that order (IoU > iou_thr suppresses, continuous coordinates), at
 *    most max_det survivors. The kernel takes the ordered list in rounds of `topk`
 *    (<= BD_CUDA_POST_MAX_TOPK, its shared-memory sort) until max_det boxes are kept or
 *    no candidate is left; a round's candidates start suppressed by the boxes earlier
 *    rounds kept. An image with at most topk candidates costs one round; one with many
 *    more (a low threshold, a crowded or untrained model) costs a pass over its scores
 *    per round;
 *  - survivors mapped to original pixels (yolox: / r; damoyolo: * sx, * sy) and clipped
 *    to the image, written to dets[N][out_cap][6] = x1, y1, x2, y2, score, class, in
 *    descending score order; counts[N] their number; rows past the count are zeroed.
 * The result is that of the CPU (bd_family_postprocess) exactly, for any number of
 * candidates, up to the device expf in the yolox decode (2 ulp): greedy NMS decides each
 * box from better boxes only, so splitting the ordered list into rounds changes no
 * decision. Nothing is dropped before NMS (no "nms_pre" cap).
 *
 * Capture-safe: every launcher only enqueues kernels on `stream`; no allocation, no host
 * synchronisation, no host-read results. Descriptors live in device memory, workspace
 * is the caller's (bd_cuda_post_workspace_bytes). One block per image does, per round,
 * the selection (count, radix select of the topk-th key, ordered compaction), a bitonic
 * sort and the NMS in shared memory; kept boxes wait in the image's output rows.
 *
 * The CPU twins (bd_cuda_post_ref_*, host pointers, plain C in bd_cuda_post_ref.c)
 * run the same algorithm step for step; tests compare kernel vs twin vs the family code.
 * Thread safety: launchers are reentrant; buffers belong to the caller. */
#ifndef BD_CUDA_POST_H
#define BD_CUDA_POST_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BD_CUDA_POST_MAX_TOPK 1024 /* round size limit: the per-image block's sort */
#define BD_CUDA_POST_DEFAULT_TOPK 1000
#define BD_CUDA_POST_MAX_DET 1024 /* out_cap limit */
#define BD_CUDA_POST_MAX_CLASSES 4096
#define BD_CUDA_POST_MAX_ANCHORS (1 << 20)
#define BD_CUDA_POST_MAX_SCORES (1 << 30) /* A * C of one damoyolo image */

/* Per-image parameters (device array, one per image). Thresholds already resolved
 * (bd_family_defaults); max_det <= out_cap. */
typedef struct bd_cuda_post_desc {
  float score_thr, iou_thr;
  int max_det;
  int orig_w, orig_h;
  float ratio;            /* yolox: (float)bd_prep_info.ratio */
  float scale_x, scale_y; /* damoyolo: bd_prep_info.scale_x / scale_y */
} bd_cuda_post_desc;

/* Bytes of workspace the yolox path needs for n images of A anchors (decoded boxes,
 * scores and classes); 0 for damoyolo, which reads its inputs in place. */
size_t bd_cuda_post_workspace_bytes(int yolox, int n, int num_anchors);

/* yolox grid decode alone: raw [n][A][5+C] -> score[n][A] (obj * best cls), box[n][A][4]
 * (xyxy in network-input pixels) and cls[n][A]. A must equal the grid of in_h x in_w.
 * decoded: 1 when raw's channels 0..3 are cx, cy, w, h in pixels already (no grid decode). */
cudaError_t bd_cuda_post_yolox_decode(const float *raw, int n, int in_h, int in_w, int num_classes,
                                      int decoded, float *score, float *box, int *cls,
                                      cudaStream_t stream);

/* The whole yolox post-processing. ws: bd_cuda_post_workspace_bytes(1, n, A) bytes,
 * 16-byte aligned. dets: n * out_cap * 6 floats, counts: n ints. */
cudaError_t bd_cuda_post_yolox(const float *raw, int n, int in_h, int in_w, int num_classes,
                               int decoded, const bd_cuda_post_desc *descs, int topk, int out_cap,
                               void *ws, float *dets, int *counts, cudaStream_t stream);

/* The whole damoyolo post-processing: scores [n][A][C], boxes [n][A][4] (input pixels). */
cudaError_t bd_cuda_post_damo(const float *scores, const float *boxes, int n, int num_anchors,
                              int num_classes, const bd_cuda_post_desc *descs, int topk,
                              int out_cap, float *dets, int *counts, cudaStream_t stream);

/* CPU twins, host pointers, same arguments and outputs (descs is a host array). Return
 * 0, or -1 on bad arguments or allocation failure. */
int bd_cuda_post_ref_yolox_decode(const float *raw, int n, int in_h, int in_w, int num_classes,
                                  int decoded, float *score, float *box, int *cls);
int bd_cuda_post_ref_yolox(const float *raw, int n, int in_h, int in_w, int num_classes,
                           int decoded, const bd_cuda_post_desc *descs, int topk, int out_cap,
                           float *dets, int *counts);
int bd_cuda_post_ref_damo(const float *scores, const float *boxes, int n, int num_anchors,
                          int num_classes, const bd_cuda_post_desc *descs, int topk, int out_cap,
                          float *dets, int *counts);

#ifdef __cplusplus
}
#endif
#endif
