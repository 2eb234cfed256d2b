/* bd_family: model families (yolox, damoyolo): recognition from the graph, CPU
 * pre-processing (decoded RGB8 image -> the float32 NCHW tensor the network expects)
 * and CPU post-processing (raw network outputs -> boxes in original-image pixels).
 *
 * Recognition is by output SHAPES, never by names (exporters name outputs freely):
 *  - yolox:    one input [B,3,H,W]; one output [B,A,5+C] with A = sum over strides
 *              8,16,32 of (H/s)*(W/s);
 *  - damoyolo: one input [B,3,H,W]; two outputs [B,A,C] (scores) and [B,A,4] (boxes)
 *              in either order, with A = 21*(H/32)*(W/32).
 * then by structure where shapes cannot tell:
 *  - yolox exports with the box decode in the graph (YOLOX's decode_in_inference:
 *    Concat[(xy + grid) * stride, exp(wh) * stride, scores]) have the output shape of raw
 *    ones. The box channels 0..3 are traced back from the output (through Identity, Concat
 *    and Slice on the last axis) over the elementwise ops with a constant operand (Add,
 *    Sub, Mul, Div) and Exp that follow the raw head. No such op: raw outputs (decoded
 *    here). Ops that compute exactly this engine's decode for every anchor (checked on
 *    the graph's constants): boxes_decoded = 1, the decode is skipped. Any other box
 *    arithmetic is refused (BD_E_UNSUPPORTED) rather than decoded a second time, and so
 *    is an untraced output that an Exp reaches with no Conv/MatMul between (a decode
 *    behind a Reshape); an Exp inside the network (an activation) is allowed;
 *  - damoyolo with C == 4 (both outputs [B,A,4]): the scores output is the one whose
 *    values come, through layout-only ops (Identity, Reshape, Transpose, Flatten,
 *    (Un)Squeeze, Slice, Gather, Concat), from Sigmoid / Softmax nodes (or a conv with a
 *    fused sigmoid) only; boxes end in decode arithmetic. Where structure does not tell,
 *    the exporter's order (scores first) is assumed.
 *
 * Pre-processing reproduces the reference Python pipelines bit for bit: OpenCV's
 * cv2.resize(INTER_LINEAR) on uint8 (11-bit fixed-point weights, half-pixel centres,
 * and the SIMD rounding of OpenCV's x86 build), then
 *  - yolox: r = min(H/h, W/w), resize to (int(w*r), int(h*r)), pasted top-left on an
 *    H x W canvas of 114, channels BGR, values 0..255;
 *  - damoyolo: stretch to W x H, channels RGB, values 0..255.
 * Post-processing:
 *  - yolox: grid decode (cx=(x+gx)*s, cy=(y+gy)*s, w=exp(w)*s, h=exp(h)*s; none where
 *    boxes_decoded: the output holds cx, cy, w, h in input pixels already), one label
 *    per anchor (best class), score = obj * cls >= score_thr (YOLOX postprocess), per-class
 *    NMS, boxes / r, clipped to the image;
 *  - damoyolo: multi-label (every class with score > score_thr, strictly), per-class NMS,
 *    x * (w/W), y * (h/H), clipped to the image.
 *
 * Thread safety: every function is reentrant. */
#ifndef BD_FAMILY_H
#define BD_FAMILY_H

#include <stdint.h>

#include "bd_graph.h"
#include "bd_image.h"
#include "bd_nms.h"
#include "bd_status.h"

/* NONE: no family (raw tensor use of any graph: `batchdet infer`, op tests). */
typedef enum { BD_FAMILY_AUTO = 0, BD_FAMILY_YOLOX, BD_FAMILY_DAMOYOLO, BD_FAMILY_NONE } bd_family;

#define BD_FAMILY_MAX_CLASSES 4096
#define BD_FAMILY_MAX_SIDE 4096 /* network input side limit */
#define BD_IMAGE_MAX_SIDE 65535 /* decoded image side limit accepted by pre-processing */

const char *bd_family_name(bd_family f);
/* "auto", "yolox", "damoyolo" (also "damo-yolo"), "none"; -1 when unknown. */
int bd_family_parse(const char *s, bd_family *out);

typedef struct bd_family_info {
  bd_family family;
  int in_h, in_w;  /* network input size */
  int num_classes; /* C */
  int num_anchors; /* A */
  int out_main;    /* yolox: index (in graph output order) of [B,A,5+C] */
  int out_scores;  /* damoyolo: index of [B,A,C] */
  int out_boxes;   /* damoyolo: index of [B,A,4] */
  int boxes_decoded; /* yolox: 1 when the graph decodes the boxes itself (channels 0..3 are
                        cx, cy, w, h in network-input pixels); 0: raw grid offsets */
} bd_family_info;

/* Recognises the family of a graph whose values carry dims (after import/compile). With
 * want != AUTO, checks that the graph fits that family. */
bd_status bd_family_recognize(const bd_graph *g, bd_family want, bd_family_info *info, bd_err *err);

/* Per-image detection parameters. Negative / zero values mean "family default". */
typedef struct bd_detect_params {
  float score_thr;
  float iou_thr;
  int max_det;
} bd_detect_params;

/* Fills unset (< 0 for thresholds, <= 0 for max_det) fields with the family defaults:
 * yolox 0.3 / 0.45 / 100, damoyolo 0.3 / 0.7 / 100. */
void bd_family_defaults(bd_family f, bd_detect_params *p);

/* What pre-processing did to one image, needed to map boxes back. */
typedef struct bd_prep_info {
  int orig_w, orig_h;
  double ratio; /* yolox letterbox ratio r (double, as Python computes it) */
  int resized_w, resized_h;
  float scale_x, scale_y; /* damoyolo: orig_w / in_w, orig_h / in_h */
} bd_prep_info;

/* OpenCV-exact cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR) for uint8 images
 * with cn interleaved channels. Sizes 1..BD_IMAGE_MAX_SIDE. */
bd_status bd_family_resize_u8(const uint8_t *src, int sw, int sh, int cn, uint8_t *dst, int dw,
                              int dh, bd_err *err);

/* The geometry pre-processing gives a w x h image (pi->resized_w/h, ratio, scale_x/y,
 * orig_w/h), without touching pixels: what a device pre-processor needs. */
bd_status bd_family_prep_geometry(const bd_family_info *fi, int w, int h, bd_prep_info *pi,
                                  bd_err *err);

/* Image -> dst float32 [3, in_h, in_w] (one batch row). */
bd_status bd_family_preprocess(const bd_family_info *fi, const bd_image *im, float *dst,
                               bd_prep_info *pi, bd_err *err);

/* One image's detections. */
typedef struct bd_detections {
  int n;
  bd_det *det; /* owned, malloc'd; n entries in descending score order */
} bd_detections;

void bd_detections_free(bd_detections *d);

/* Raw outputs of one batch row -> detections. outs[i] points at graph output i's row. */
bd_status bd_family_postprocess(const bd_family_info *fi, const float *const *outs,
                                const bd_prep_info *pi, const bd_detect_params *params,
                                bd_detections *out, bd_err *err);

#endif
