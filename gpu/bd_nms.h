/* bd_nms: greedy per-class non-maximum suppression on the CPU.
 *
 * Semantics (torchvision batched_nms, which both families' reference code uses):
 * candidates are visited in descending score order, ties broken by ascending input
 * index so results are deterministic; a candidate is dropped when its IoU with an
 * already kept box OF THE SAME CLASS is strictly greater than iou_thr (continuous
 * coordinates, no +1). max_det keeps the best max_det survivors overall, in that order.
 * Exactness with speed: the candidates are heapified (O(n)) and popped lazily, so only
 * as many are ordered as needed to fill max_det; the result equals a full sort.
 *
 * Thread safety: reentrant; buffers belong to the caller. */
#ifndef BD_NMS_H
#define BD_NMS_H

#include "bd_status.h"

typedef struct bd_det {
  float x1, y1, x2, y2;
  float score;
  int cls;
} bd_det;

#define BD_NMS_MAX_CANDIDATES (1 << 24)

/* IoU of two xyxy boxes; 0 when the union is empty. */
float bd_box_iou(const bd_det *a, const bd_det *b);

/* Runs NMS over cand[0..n) (reordered in place: heap scratch). Writes at most max_det
 * survivors to out (capacity max_det) in descending score order; *n_out their number.
 * class_agnostic=1 lets every class suppress every other (not used by the families). */
bd_status bd_nms(bd_det *cand, int n, float iou_thr, int max_det, int class_agnostic, bd_det *out,
                 int *n_out, bd_err *err);

#endif
