/* bd_nms: see bd_nms.h. Lazy heap ordering + greedy per-class suppression. */
#include "bd_nms.h"

#include <stdint.h>
#include <stdlib.h>

float bd_box_iou(const bd_det *a, const bd_det *b) {
  float iw = (a->x2 < b->x2 ? a->x2 : b->x2) - (a->x1 > b->x1 ? a->x1 : b->x1);
  float ih = (a->y2 < b->y2 ? a->y2 : b->y2) - (a->y1 > b->y1 ? a->y1 : b->y1);
  if (iw <= 0.f || ih <= 0.f) return 0.f;
  float inter = iw * ih;
  float aa = (a->x2 - a->x1) * (a->y2 - a->y1);
  float ab = (b->x2 - b->x1) * (b->y2 - b->y1);
  float uni = aa + ab - inter;
  return uni > 0.f ? inter / uni : 0.f;
}

/* Heap of candidate indices ordered by (score desc, index asc): "a before b". */
static int before(const bd_det *c, int32_t a, int32_t b) {
  if (c[a].score != c[b].score) return c[a].score > c[b].score;
  return a < b;
}

static void sift_down(const bd_det *c, int32_t *h, int n, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && before(c, h[l], h[m])) m = l;
    if (r < n && before(c, h[r], h[m])) m = r;
    if (m == i) return;
    int32_t t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

bd_status bd_nms(bd_det *cand, int n, float iou_thr, int max_det, int class_agnostic, bd_det *out,
                 int *n_out, bd_err *err) {
  *n_out = 0;
  if (n < 0 || n > BD_NMS_MAX_CANDIDATES)
    return bd_err_set(err, BD_E_LIMIT, "nms: %d candidates (limit %d)", n, BD_NMS_MAX_CANDIDATES);
  if (max_det < 0) return bd_err_set(err, BD_E_INVALID, "nms: max_det %d < 0", max_det);
  if (n == 0 || max_det == 0) return BD_OK;
  /* Kept boxes are chained per class (one chain when class-agnostic), so that a box is
   * checked only against the kept boxes it could be suppressed by. */
  int n_chains = 1;
  for (int i = 0; i < n && !class_agnostic; i++) {
    if (cand[i].cls < 0) return bd_err_set(err, BD_E_INVALID, "nms: class %d < 0", cand[i].cls);
    if (cand[i].cls >= n_chains) n_chains = cand[i].cls + 1;
  }
  const int by_class = n_chains <= (1 << 16); /* else one chain, classes compared */
  if (!by_class) n_chains = 1;
  bd_status st = BD_OK;
  int32_t *h = malloc((size_t)n * sizeof *h);
  int *tail = malloc((size_t)n_chains * sizeof *tail); /* last kept box of each chain */
  int *prev = malloc((size_t)max_det * sizeof *prev);  /* the kept box before it in its chain */
  if (!h || !tail || !prev) {
    st = bd_err_set(err, BD_E_NOMEM, "nms: heap of %d candidates", n);
    goto out;
  }
  for (int i = 0; i < n_chains; i++) tail[i] = -1;
  for (int i = 0; i < n; i++) h[i] = i;
  for (int i = n / 2 - 1; i >= 0; i--) sift_down(cand, h, n, i);
  /* IoU is at most 1: a threshold of 1 or more suppresses nothing */
  const int check = !(iou_thr >= 1.f);
  int hn = n, kept = 0;
  while (hn > 0 && kept < max_det) {
    const bd_det *d = &cand[h[0]];
    h[0] = h[--hn];
    sift_down(cand, h, hn, 0);
    const int chain = class_agnostic || !by_class ? 0 : d->cls;
    int keep = 1;
    /* Kept boxes all score >= d, so checking them is exactly greedy NMS. */
    for (int k = check ? tail[chain] : -1; k >= 0; k = prev[k])
      if ((class_agnostic || out[k].cls == d->cls) && bd_box_iou(&out[k], d) > iou_thr) {
        keep = 0;
        break;
      }
    if (keep) {
      prev[kept] = tail[chain];
      tail[chain] = kept;
      out[kept++] = *d;
    }
  }
  *n_out = kept;
out:
  free(h);
  free(tail);
  free(prev);
  return st;
}
