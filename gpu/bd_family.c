/* bd_family: see bd_family.h. */
#include "bd_family.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bd_family_name(bd_family f) {
  switch (f) {
    case BD_FAMILY_AUTO:
      return "auto";
    case BD_FAMILY_YOLOX:
      return "yolox";
    case BD_FAMILY_DAMOYOLO:
      return "damoyolo";
    case BD_FAMILY_NONE:
      return "none";
  }
  return "unknown";
}

int bd_family_parse(const char *s, bd_family *out) {
  if (!s) return -1;
  if (strcmp(s, "auto") == 0)
    *out = BD_FAMILY_AUTO;
  else if (strcmp(s, "yolox") == 0)
    *out = BD_FAMILY_YOLOX;
  else if (strcmp(s, "damoyolo") == 0 || strcmp(s, "damo-yolo") == 0)
    *out = BD_FAMILY_DAMOYOLO;
  else if (strcmp(s, "none") == 0)
    *out = BD_FAMILY_NONE;
  else
    return -1;
  return 0;
}

void bd_family_defaults(bd_family f, bd_detect_params *p) {
  if (p->score_thr < 0.f) p->score_thr = 0.3f;
  if (p->iou_thr < 0.f) p->iou_thr = (f == BD_FAMILY_DAMOYOLO) ? 0.7f : 0.45f;
  if (p->max_det <= 0) p->max_det = 100;
}

/* ---------------------------------------------------------------- recognition */

static const int64_t *vdims(const bd_graph *g, int vi, int *rank) {
  *rank = g->values[vi].rank;
  return g->values[vi].dims;
}

static bd_status check_yolox(const bd_graph *g, int h, int w, bd_family_info *fi, bd_err *err) {
  if (g->n_outputs != 1)
    return bd_err_set(err, BD_E_UNSUPPORTED, "yolox: expected 1 output, the graph has %d",
                      g->n_outputs);
  int r;
  const int64_t *d = vdims(g, g->outputs[0], &r);
  int64_t a_want =
      (int64_t)(h / 8) * (w / 8) + (int64_t)(h / 16) * (w / 16) + (int64_t)(h / 32) * (w / 32);
  if (r != 3 || d[2] < 6 || d[2] - 5 > BD_FAMILY_MAX_CLASSES || d[1] != a_want)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "yolox: output must be [B,%lld,5+C] for a %dx%d input (rank %d, dims "
                      "[%lld,%lld,%lld])",
                      (long long)a_want, h, w, r, (long long)d[0], (long long)(r > 1 ? d[1] : 0),
                      (long long)(r > 2 ? d[2] : 0));
  fi->family = BD_FAMILY_YOLOX;
  fi->num_anchors = (int)d[1];
  fi->num_classes = (int)d[2] - 5;
  fi->out_main = 0;
  fi->out_scores = fi->out_boxes = -1;
  return BD_OK;
}

static bd_status check_damo(const bd_graph *g, int h, int w, bd_family_info *fi, bd_err *err) {
  if (g->n_outputs != 2)
    return bd_err_set(err, BD_E_UNSUPPORTED, "damoyolo: expected 2 outputs, the graph has %d",
                      g->n_outputs);
  int r0, r1;
  const int64_t *d0 = vdims(g, g->outputs[0], &r0), *d1 = vdims(g, g->outputs[1], &r1);
  int64_t a_want = 21 * (int64_t)(h / 32) * (w / 32);
  if (r0 != 3 || r1 != 3 || d0[1] != a_want || d1[1] != a_want)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "damoyolo: outputs must be [B,%lld,C] and [B,%lld,4] for a %dx%d input",
                      (long long)a_want, (long long)a_want, h, w);
  /* Scores first is the exporter's order; accept the swap, keyed on the box width 4. */
  int sc = (d0[2] != 4 || d1[2] == 4) ? 0 : 1;
  const int64_t *ds = sc == 0 ? d0 : d1, *db = sc == 0 ? d1 : d0;
  if (db[2] != 4 || ds[2] < 1 || ds[2] > BD_FAMILY_MAX_CLASSES)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "damoyolo: outputs [B,A,%lld] and [B,A,%lld]: "
                      "need scores [B,A,C] and boxes [B,A,4]",
                      (long long)d0[2], (long long)d1[2]);
  fi->family = BD_FAMILY_DAMOYOLO;
  fi->num_anchors = (int)a_want;
  fi->num_classes = (int)ds[2];
  fi->out_main = -1;
  fi->out_scores = sc;
  fi->out_boxes = 1 - sc;
  return BD_OK;
}

bd_status bd_family_recognize(const bd_graph *g, bd_family want, bd_family_info *fi, bd_err *err) {
  memset(fi, 0, sizeof *fi);
  if (g->n_inputs != 1)
    return bd_err_set(err, BD_E_UNSUPPORTED, "family: expected 1 graph input, found %d",
                      g->n_inputs);
  int r;
  const int64_t *d = vdims(g, g->inputs[0], &r);
  if (r != 4 || d[1] != 3 || d[2] < 32 || d[3] < 32 || d[2] > BD_FAMILY_MAX_SIDE ||
      d[3] > BD_FAMILY_MAX_SIDE || d[2] % 32 || d[3] % 32)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "family: input '%s' must be [B,3,H,W] with H, W multiples of 32 in "
                      "32..%d",
                      g->values[g->inputs[0]].name, BD_FAMILY_MAX_SIDE);
  fi->in_h = (int)d[2];
  fi->in_w = (int)d[3];
  for (int i = 0; i < g->n_outputs; i++) {
    int ro;
    const int64_t *od = vdims(g, g->outputs[i], &ro);
    for (int k = 0; k < ro; k++)
      if (od[k] < 1)
        return bd_err_set(err, BD_E_INVALID, "family: output %d ('%s') has unknown dims", i,
                          g->values[g->outputs[i]].name);
  }
  if (want == BD_FAMILY_YOLOX) return check_yolox(g, fi->in_h, fi->in_w, fi, err);
  if (want == BD_FAMILY_DAMOYOLO) return check_damo(g, fi->in_h, fi->in_w, fi, err);
  bd_err e1, e2;
  if (check_yolox(g, fi->in_h, fi->in_w, fi, &e1) == BD_OK) return BD_OK;
  if (check_damo(g, fi->in_h, fi->in_w, fi, &e2) == BD_OK) return BD_OK;
  return bd_err_set(err, BD_E_UNSUPPORTED,
                    "family: the graph is neither yolox (one [B,A,85]-like output) nor damoyolo "
                    "([B,A,C] scores + [B,A,4] boxes): %s; %s",
                    e1.msg, e2.msg);
}

/* ---------------------------------------------------------------- resize */

/* The vertical pass of OpenCV's uint8 INTER_LINEAR (VResizeLinearVec_32s8u and the
 * matching scalar tail of the x86 build) rounds in two truncating steps:
 * ((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2, not the exact
 * (S0*b0 + S1*b1 + 2^21) >> 22. Reproducing it is what makes the tensors bit-identical
 * to cv2.resize (checked against python3-opencv 4.6 on random sizes and the photos). */

static short cv_coef(float v) {
  long r = lrintf(v); /* cvRound: round half to even */
  if (r < -32768) r = -32768;
  if (r > 32767) r = 32767;
  return (short)r;
}

static uint8_t sat_u8(int v) {
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

bd_status bd_family_resize_u8(const uint8_t *src, int sw, int sh, int cn, uint8_t *dst, int dw,
                              int dh, bd_err *err) {
  if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > BD_IMAGE_MAX_SIDE || sh > BD_IMAGE_MAX_SIDE ||
      dw > BD_IMAGE_MAX_SIDE || dh > BD_IMAGE_MAX_SIDE || cn < 1 || cn > 4)
    return bd_err_set(err, BD_E_INVALID, "resize: bad sizes %dx%d -> %dx%d (cn %d)", sw, sh, dw, dh,
                      cn);
  if (sw == dw && sh == dh) { /* cv::resize copies */
    memcpy(dst, src, (size_t)sw * sh * cn);
    return BD_OK;
  }
  const int W = dw * cn;
  bd_status st = BD_OK;
  int *xofs = malloc((size_t)W * sizeof *xofs);
  short *alpha = malloc((size_t)W * 2 * sizeof *alpha);
  int *rowbuf = malloc((size_t)W * 2 * sizeof *rowbuf);
  int cached[2] = {-1, -1};
  if (!xofs || !alpha || !rowbuf) {
    st = bd_err_set(err, BD_E_NOMEM, "resize: buffers for width %d", dw);
    goto out;
  }
  const double scale_x = 1.0 / ((double)dw / sw), scale_y = 1.0 / ((double)dh / sh);
  for (int dx = 0; dx < dw; dx++) {
    float fx = (float)((dx + 0.5) * scale_x - 0.5);
    int sx = (int)floorf(fx);
    fx -= (float)sx;
    if (sx < 0) fx = 0.f, sx = 0;
    if (sx >= sw - 1) fx = 0.f, sx = sw - 1;
    short a0 = cv_coef((1.f - fx) * 2048.f), a1 = cv_coef(fx * 2048.f);
    for (int k = 0; k < cn; k++) {
      xofs[dx * cn + k] = sx * cn + k;
      alpha[(dx * cn + k) * 2] = a0;
      alpha[(dx * cn + k) * 2 + 1] = a1;
    }
  }
  for (int dy = 0; dy < dh; dy++) {
    float fy = (float)((dy + 0.5) * scale_y - 0.5);
    int sy = (int)floorf(fy);
    fy -= (float)sy;
    int b0 = cv_coef((1.f - fy) * 2048.f), b1 = cv_coef(fy * 2048.f);
    int yy[2], slot[2];
    for (int k = 0; k < 2; k++) {
      int y = sy + k;
      yy[k] = y < 0 ? 0 : y >= sh ? sh - 1 : y;
      slot[k] = cached[0] == yy[k] ? 0 : cached[1] == yy[k] ? 1 : -1;
    }
    /* Two cached horizontal rows: consecutive output rows mostly reuse them. */
    for (int k = 0; k < 2; k++) {
      if (slot[k] >= 0) continue;
      if (k == 1 && yy[1] == yy[0]) {
        slot[1] = slot[0];
        continue;
      }
      int other = slot[1 - k];
      slot[k] = other >= 0 ? 1 - other : k;
      const uint8_t *S = src + (size_t)yy[k] * sw * cn;
      int *D = rowbuf + (size_t)slot[k] * W;
      for (int x = 0; x < W; x++) {
        int o = xofs[x], a1 = alpha[2 * x + 1];
        D[x] = a1 ? S[o] * alpha[2 * x] + S[o + cn] * a1 : S[o] * alpha[2 * x];
      }
      cached[slot[k]] = yy[k];
    }
    int *rows[2] = {rowbuf + (size_t)slot[0] * W, rowbuf + (size_t)slot[1] * W};
    const int *S0 = rows[0], *S1 = rows[1];
    uint8_t *D = dst + (size_t)dy * W;
    for (int x = 0; x < W; x++) {
      int v0 = ((S0[x] >> 4) * b0) >> 16, v1 = ((S1[x] >> 4) * b1) >> 16;
      D[x] = sat_u8((v0 + v1 + 2) >> 2);
    }
  }
out:
  free(xofs);
  free(alpha);
  free(rowbuf);
  return st;
}

/* ---------------------------------------------------------------- pre-processing */

bd_status bd_family_prep_geometry(const bd_family_info *fi, int w, int h, bd_prep_info *pi,
                                  bd_err *err) {
  if (w < 1 || h < 1 || w > BD_IMAGE_MAX_SIDE || h > BD_IMAGE_MAX_SIDE)
    return bd_err_set(err, BD_E_INVALID, "preprocess: bad image %dx%d", w, h);
  const int H = fi->in_h, W = fi->in_w;
  memset(pi, 0, sizeof *pi);
  pi->orig_w = w;
  pi->orig_h = h;
  int rw, rh;
  if (fi->family == BD_FAMILY_YOLOX) {
    /* Python: r = min(H / h, W / w); (int(w * r), int(h * r)) in double precision. */
    double r = (double)H / h < (double)W / w ? (double)H / h : (double)W / w;
    rw = (int)(w * r);
    rh = (int)(h * r);
    /* An extreme aspect ratio can truncate one side to 0; keep one pixel. */
    if (rw < 1) rw = 1;
    if (rh < 1) rh = 1;
    if (rw > W) rw = W;
    if (rh > H) rh = H;
    pi->ratio = r;
  } else if (fi->family == BD_FAMILY_DAMOYOLO) {
    rw = W;
    rh = H;
    pi->scale_x = (float)w / (float)W;
    pi->scale_y = (float)h / (float)H;
  } else {
    return bd_err_set(err, BD_E_INTERNAL, "preprocess: family not resolved");
  }
  pi->resized_w = rw;
  pi->resized_h = rh;
  return BD_OK;
}

bd_status bd_family_preprocess(const bd_family_info *fi, const bd_image *im, float *dst,
                               bd_prep_info *pi, bd_err *err) {
  if (!im || !im->data)
    return bd_err_set(err, BD_E_INVALID, "preprocess: no image");
  bd_status st0 = bd_family_prep_geometry(fi, im->w, im->h, pi, err);
  if (st0 != BD_OK) return st0;
  const int H = fi->in_h, W = fi->in_w, rw = pi->resized_w, rh = pi->resized_h;
  const size_t plane = (size_t)H * W;
  uint8_t *rs = malloc((size_t)rw * rh * 3);
  if (!rs) return bd_err_set(err, BD_E_NOMEM, "preprocess: %dx%d resize buffer", rw, rh);
  bd_status st = bd_family_resize_u8(im->data, im->w, im->h, 3, rs, rw, rh, err);
  if (st != BD_OK) {
    free(rs);
    return st;
  }
  /* yolox wants BGR (cv2.imread order); damoyolo RGB. */
  const int bgr = fi->family == BD_FAMILY_YOLOX;
  for (int c = 0; c < 3; c++) {
    float *P = dst + (size_t)c * plane;
    const int sc = bgr ? 2 - c : c;
    for (int y = 0; y < H; y++) {
      float *row = P + (size_t)y * W;
      int x = 0;
      if (y < rh) {
        const uint8_t *S = rs + (size_t)y * rw * 3 + sc;
        for (; x < rw; x++) row[x] = (float)S[3 * x];
      }
      for (; x < W; x++) row[x] = 114.f;
    }
  }
  free(rs);
  return BD_OK;
}

/* ---------------------------------------------------------------- post-processing */

void bd_detections_free(bd_detections *d) {
  if (!d) return;
  free(d->det);
  d->det = NULL;
  d->n = 0;
}

typedef struct {
  bd_det *v;
  int n, cap;
} cand_vec;

static int cand_push(cand_vec *c, const bd_det *d) {
  if (c->n == c->cap) {
    int nc = c->cap ? c->cap * 2 : 1024;
    if (nc > BD_NMS_MAX_CANDIDATES) return -1;
    bd_det *nv = realloc(c->v, (size_t)nc * sizeof *nv);
    if (!nv) return -1;
    c->v = nv;
    c->cap = nc;
  }
  c->v[c->n++] = *d;
  return 0;
}

static float clampf(float v, float lo, float hi) {
  /* NaN maps to lo: a garbage box never leaves the image. */
  return v > lo ? (v < hi ? v : hi) : lo;
}

bd_status bd_family_postprocess(const bd_family_info *fi, const float *const *outs,
                                const bd_prep_info *pi, const bd_detect_params *params,
                                bd_detections *out, bd_err *err) {
  bd_detect_params p = *params;
  bd_family_defaults(fi->family, &p);
  cand_vec cv = {0};
  bd_det *keep = NULL;
  bd_status st = BD_OK;
  out->n = 0;
  out->det = NULL;
  const int A = fi->num_anchors, C = fi->num_classes;
  if (fi->family == BD_FAMILY_YOLOX) {
    const float *o = outs[fi->out_main];
    const int strides[3] = {8, 16, 32};
    int a = 0;
    for (int l = 0; l < 3; l++) {
      const int s = strides[l], gh = fi->in_h / s, gw = fi->in_w / s;
      for (int gy = 0; gy < gh; gy++)
        for (int gx = 0; gx < gw; gx++, a++) {
          const float *r = o + (size_t)a * (5 + C);
          int best = 0;
          for (int c = 1; c < C; c++)
            if (r[5 + c] > r[5 + best]) best = c;
          float score = r[4] * r[5 + best];
          if (!(score >= p.score_thr) || !(score <= FLT_MAX)) continue; /* NaN, +Inf: none */
          float cx = (r[0] + gx) * s, cy = (r[1] + gy) * s;
          float w = expf(r[2]) * s, h = expf(r[3]) * s;
          bd_det d = {cx - w * 0.5f, cy - h * 0.5f, cx + w * 0.5f, cy + h * 0.5f, score, best};
          if (cand_push(&cv, &d)) {
            st = bd_err_set(err, BD_E_NOMEM, "postprocess: candidates");
            goto out;
          }
        }
    }
    if (a != A) {
      st = bd_err_set(err, BD_E_INTERNAL, "postprocess: %d grid anchors, output has %d", a, A);
      goto out;
    }
  } else if (fi->family == BD_FAMILY_DAMOYOLO) {
    const float *sc = outs[fi->out_scores], *bx = outs[fi->out_boxes];
    for (int a = 0; a < A; a++) {
      const float *r = sc + (size_t)a * C, *b = bx + (size_t)a * 4;
      for (int c = 0; c < C; c++) {
        if (!(r[c] > p.score_thr) || !(r[c] <= FLT_MAX)) continue;
        bd_det d = {b[0], b[1], b[2], b[3], r[c], c};
        if (cand_push(&cv, &d)) {
          st = bd_err_set(err, BD_E_NOMEM, "postprocess: candidates");
          goto out;
        }
      }
    }
  } else {
    st = bd_err_set(err, BD_E_INTERNAL, "postprocess: family not resolved");
    goto out;
  }
  if (cv.n == 0) goto out;
  keep = malloc((size_t)(p.max_det < cv.n ? p.max_det : cv.n) * sizeof *keep);
  if (!keep) {
    st = bd_err_set(err, BD_E_NOMEM, "postprocess: %d detections", p.max_det);
    goto out;
  }
  int nk = 0;
  /* NMS in network-input coordinates, as both reference pipelines do. */
  st = bd_nms(cv.v, cv.n, p.iou_thr, p.max_det < cv.n ? p.max_det : cv.n, 0, keep, &nk, err);
  if (st != BD_OK) goto out;
  const float fw = (float)pi->orig_w, fh = (float)pi->orig_h;
  for (int i = 0; i < nk; i++) {
    bd_det *d = &keep[i];
    if (fi->family == BD_FAMILY_YOLOX) {
      /* numpy divides the float32 boxes by a float32-cast ratio. */
      const float r = (float)pi->ratio;
      d->x1 /= r, d->y1 /= r, d->x2 /= r, d->y2 /= r;
    } else {
      d->x1 *= pi->scale_x, d->x2 *= pi->scale_x, d->y1 *= pi->scale_y, d->y2 *= pi->scale_y;
    }
    d->x1 = clampf(d->x1, 0.f, fw), d->x2 = clampf(d->x2, 0.f, fw);
    d->y1 = clampf(d->y1, 0.f, fh), d->y2 = clampf(d->y2, 0.f, fh);
  }
  out->n = nk;
  out->det = keep;
  keep = NULL;
out:
  free(cv.v);
  free(keep);
  return st;
}
