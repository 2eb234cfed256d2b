/* bd_cuda_post_ref: the CPU twins of the bd_cuda_post kernels (see bd_cuda_post.h). They
 * follow the kernels' arithmetic (decode, candidate predicate, the total order, greedy
 * per-class NMS over the sorted list, map and clip) in plain C, so that a kernel can be
 * compared with them bit for bit and they with bd_family_postprocess. The kernels take
 * the sorted list in rounds of topk; the twins sort it whole, which decides every box
 * the same way (greedy NMS looks only at better boxes), so topk is only checked here. */
#include "bd_cuda_post.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t bd_cuda_post_workspace_bytes(int yolox, int n, int num_anchors) {
  if (!yolox || n < 1 || num_anchors < 1) return 0;
  /* score, 4 box coordinates, class: 6 words per anchor; 256-byte slices. */
  size_t per = ((size_t)n * num_anchors * sizeof(float) + 255) / 256 * 256;
  return per * 6;
}

/* Same rules as the kernels' argument checks. */
static int grid_anchors(int in_h, int in_w) {
  return (in_h / 8) * (in_w / 8) + (in_h / 16) * (in_w / 16) + (in_h / 32) * (in_w / 32);
}

int bd_cuda_post_ref_yolox_decode(const float *raw, int n, int in_h, int in_w, int num_classes,
                                  int decoded, float *score, float *box, int *cls) {
  if (n < 1 || in_h < 32 || in_w < 32 || in_h > 4096 || in_w > 4096 || num_classes < 1 ||
      num_classes > BD_CUDA_POST_MAX_CLASSES)
    return -1;
  const int A = grid_anchors(in_h, in_w), C = num_classes;
  for (int b = 0; b < n; b++) {
    int a = 0;
    for (int l = 0; l < 3; l++) {
      const int s = 8 << l, gh = in_h / s, gw = in_w / s;
      for (int gy = 0; gy < gh; gy++)
        for (int gx = 0; gx < gw; gx++, a++) {
          const float *r = raw + ((size_t)b * A + a) * (5 + C);
          int best = 0;
          for (int c = 1; c < C; c++)
            if (r[5 + c] > r[5 + best]) best = c;
          const size_t o = (size_t)b * A + a;
          float cx, cy, w, h;
          if (decoded) { /* the graph decoded: cx, cy, w, h in input pixels */
            cx = r[0], cy = r[1], w = r[2], h = r[3];
          } else {
            cx = (r[0] + (float)gx) * (float)s, cy = (r[1] + (float)gy) * (float)s;
            w = expf(r[2]) * (float)s, h = expf(r[3]) * (float)s;
          }
          score[o] = r[4] * r[5 + best];
          box[o * 4 + 0] = cx - w * 0.5f;
          box[o * 4 + 1] = cy - h * 0.5f;
          box[o * 4 + 2] = cx + w * 0.5f;
          box[o * 4 + 3] = cy + h * 0.5f;
          cls[o] = best;
        }
    }
  }
  return 0;
}

/* The kernels' total order: score descending (as a float: -0 == +0), index ascending. */
typedef struct {
  float score;
  int idx;
} cand;

static int cand_cmp(const void *pa, const void *pb) {
  const cand *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Written as bd_box_iou so that both round identically. */
static float iou(const float *a, const float *b) {
  float iw = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
  float ih = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
  if (iw <= 0.f || ih <= 0.f) return 0.f;
  float inter = iw * ih;
  float aa = (a[2] - a[0]) * (a[3] - a[1]);
  float ab = (b[2] - b[0]) * (b[3] - b[1]);
  float uni = aa + ab - inter;
  return uni > 0.f ? inter / uni : 0.f;
}

static float clampf(float v, float lo, float hi) {
  return v > lo ? (v < hi ? v : hi) : lo;
}

/* One image: S = its M candidate scores, boxes through (box_of, cls_of). */
typedef struct {
  const float *S; /* M scores */
  int M, strict;
  const float *boxes; /* yolox: [A][4] by candidate index; damo: [A][4] by idx / C */
  const int *cls;     /* yolox: [A]; damo: NULL (class = idx % C) */
  int C;
  int yolox;
} img_src;

static int one_image(const img_src *src, const bd_cuda_post_desc *d, int out_cap, float *dets,
                     int *count, cand *cv, float *kb, int *kc) {
  int n = 0;
  for (int i = 0; i < src->M; i++) {
    float s = src->S[i];
    if (!(src->strict ? s > d->score_thr : s >= d->score_thr) || !(s <= FLT_MAX)) continue;
    cv[n].score = s == 0.f ? 0.f : s;
    cv[n].idx = i;
    n++;
  }
  qsort(cv, (size_t)n, sizeof *cv, cand_cmp);
  int max_det = d->max_det < out_cap ? d->max_det : out_cap, kept = 0;
  for (int i = 0; i < n && kept < max_det; i++) {
    const int idx = cv[i].idx;
    const float *bx =
        src->yolox ? src->boxes + (size_t)idx * 4 : src->boxes + (size_t)(idx / src->C) * 4;
    const int c = src->yolox ? src->cls[idx] : idx % src->C;
    int keep = 1;
    for (int k = 0; k < kept && keep; k++)
      if (kc[k] == c && iou(kb + (size_t)k * 4, bx) > d->iou_thr) keep = 0;
    if (!keep) continue;
    memcpy(kb + (size_t)kept * 4, bx, 4 * sizeof(float));
    kc[kept] = c;
    float *o = dets + (size_t)kept * 6;
    for (int j = 0; j < 4; j++) {
      float v = bx[j];
      if (src->yolox)
        v /= d->ratio;
      else
        v *= (j & 1) ? d->scale_y : d->scale_x;
      o[j] = clampf(v, 0.f, (j & 1) ? (float)d->orig_h : (float)d->orig_w);
    }
    o[4] = src->S[idx];
    o[5] = (float)c;
    kept++;
  }
  memset(dets + (size_t)kept * 6, 0, (size_t)(out_cap - kept) * 6 * sizeof(float));
  *count = kept;
  return 0;
}

static int check_common(int n, int topk, int out_cap, const bd_cuda_post_desc *descs) {
  if (n < 1 || topk < 1 || topk > BD_CUDA_POST_MAX_TOPK || out_cap < 1 ||
      out_cap > BD_CUDA_POST_MAX_DET || !descs)
    return -1;
  return 0;
}

int bd_cuda_post_ref_yolox(const float *raw, int n, int in_h, int in_w, int num_classes,
                           int decoded, const bd_cuda_post_desc *descs, int topk, int out_cap,
                           float *dets, int *counts) {
  if (check_common(n, topk, out_cap, descs)) return -1;
  const int A = grid_anchors(in_h, in_w);
  float *score = malloc((size_t)n * A * sizeof *score);
  float *box = malloc((size_t)n * A * 4 * sizeof *box);
  int *cls = malloc((size_t)n * A * sizeof *cls);
  cand *cv = malloc((size_t)A * sizeof *cv);
  float *kb = malloc((size_t)out_cap * 4 * sizeof *kb);
  int *kc = malloc((size_t)out_cap * sizeof *kc);
  int rc = -1;
  if (!score || !box || !cls || !cv || !kb || !kc) goto out;
  if (bd_cuda_post_ref_yolox_decode(raw, n, in_h, in_w, num_classes, decoded, score, box, cls))
    goto out;
  for (int b = 0; b < n; b++) {
    img_src s = {score + (size_t)b * A, A,           0, box + (size_t)b * A * 4,
                 cls + (size_t)b * A,   num_classes, 1};
    one_image(&s, &descs[b], out_cap, dets + (size_t)b * out_cap * 6, &counts[b], cv, kb, kc);
  }
  rc = 0;
out:
  free(score);
  free(box);
  free(cls);
  free(cv);
  free(kb);
  free(kc);
  return rc;
}

int bd_cuda_post_ref_damo(const float *scores, const float *boxes, int n, int num_anchors,
                          int num_classes, const bd_cuda_post_desc *descs, int topk, int out_cap,
                          float *dets, int *counts) {
  if (check_common(n, topk, out_cap, descs) || num_anchors < 1 ||
      num_anchors > BD_CUDA_POST_MAX_ANCHORS || num_classes < 1 ||
      num_classes > BD_CUDA_POST_MAX_CLASSES ||
      (int64_t)num_anchors * num_classes > BD_CUDA_POST_MAX_SCORES)
    return -1;
  const int A = num_anchors, C = num_classes, M = A * C;
  cand *cv = malloc((size_t)M * sizeof *cv);
  float *kb = malloc((size_t)out_cap * 4 * sizeof *kb);
  int *kc = malloc((size_t)out_cap * sizeof *kc);
  int rc = -1;
  if (!cv || !kb || !kc) goto out;
  for (int b = 0; b < n; b++) {
    img_src s = {scores + (size_t)b * M, M, 1, boxes + (size_t)b * A * 4, NULL, C, 0};
    one_image(&s, &descs[b], out_cap, dets + (size_t)b * out_cap * 6, &counts[b], cv, kb, kc);
  }
  rc = 0;
out:
  free(cv);
  free(kb);
  free(kc);
  return rc;
}
