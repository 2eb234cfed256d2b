/* Pictures and detection comparison shared by the engine-level GPU tests (test_pool,
 * test_cuda_detect): PPM reading (photos decoded by djpeg at configure time), synthetic
 * pictures, and the box matching the issues' acceptance uses (same class, IoU >= 0.9). */
#ifndef TEST_IMAGES_H
#define TEST_IMAGES_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_family.h"
#include "bd_image.h"
#include "bd_nms.h"

/* The model a test runs into out: $env when set, else $BD_TEST_DATA/models/yolox_nano.onnx
 * (../shared/data without BD_TEST_DATA). 0, or 77 (the skip code, after saying why) when
 * $env names a file that is not there (made by another test that did not run). */
static inline int tim_model_path(const char *env, char *out, size_t n) {
  const char *d = getenv("BD_TEST_DATA"), *m = getenv(env);
  if (m)
    snprintf(out, n, "%s", m);
  else
    snprintf(out, n, "%s/models/yolox_nano.onnx", d ? d : "../shared/data");
  FILE *f = m ? fopen(m, "rb") : NULL;
  if (m && !f) {
    printf("SKIP: model %s not there\n", m);
    return 77;
  }
  if (f) fclose(f);
  return 0;
}

/* Reads a binary PPM (P6, maxval 255, sides <= 8192) into im; 1 on success, else 0 with
 * im empty (im need not be initialised). */
static inline int tim_read_ppm(const char *path, bd_image *im) {
  *im = (bd_image){0};
  FILE *f = path ? fopen(path, "rb") : NULL;
  int w = 0, h = 0, mx = 0, ok = 0;
  if (f && fscanf(f, "P6 %d %d %d", &w, &h, &mx) == 3 && w > 0 && h > 0 && w <= 8192 && h <= 8192 &&
      mx == 255 && fgetc(f) != EOF) {
    im->data = malloc((size_t)w * h * 3);
    ok = im->data && fread(im->data, 3, (size_t)w * h, f) == (size_t)w * h;
    im->w = w, im->h = h;
  }
  if (f) fclose(f);
  if (!ok) bd_image_free(im);
  return ok;
}

/* Reads the *.ppm files of dir (at most cap, in name order; NULL or missing dir: none)
 * into out; returns how many were read (files that are not P6 PPMs are skipped). */
static inline int tim_read_ppm_dir(const char *dir, bd_image *out, int cap) {
  DIR *d = dir && strlen(dir) <= 4096 ? opendir(dir) : NULL;
  if (!d) return 0;
  char names[64][256];
  int n = 0, got = 0;
  struct dirent *de;
  while ((de = readdir(d)) && n < 64) {
    size_t l = strlen(de->d_name);
    if (l > 4 && l < 250 && strcmp(de->d_name + l - 4, ".ppm") == 0)
      snprintf(names[n++], sizeof names[0], "%s", de->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
  for (int i = 0; i < n && got < cap; i++) {
    char path[4096 + 256 + 2];
    snprintf(path, sizeof path, "%.4096s/%.255s", dir, names[i]);
    if (tim_read_ppm(path, &out[got])) got++;
  }
  return got;
}

/* Blocks of colour on a gradient: edges and shapes give the network something. */
static inline void tim_synth(bd_image *im, int w, int h, int seed) {
  im->w = w, im->h = h;
  im->data = malloc((size_t)w * h * 3);
  if (!im->data) return;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++) {
        int v = ((x / 40 + y / 30 + seed) % 3 == c) ? 220 : (x * 255 / w + y * 128 / h) / 2;
        im->data[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
      }
}

/* Nearest-neighbour rescale of src to w x h (a bigger or smaller picture of the same
 * scene, to exercise other resize paths). */
static inline void tim_rescale(const bd_image *src, bd_image *dst, int w, int h) {
  dst->w = w, dst->h = h;
  dst->data = malloc((size_t)w * h * 3);
  if (!dst->data) return;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      const uint8_t *s = src->data + (((size_t)y * src->h / h) * src->w + (size_t)x * src->w / w) * 3;
      uint8_t *d = dst->data + ((size_t)y * w + x) * 3;
      d[0] = s[0], d[1] = s[1], d[2] = s[2];
    }
}

/* How many boxes of want have a partner in got (same class, IoU >= min_iou, each box of
 * got used once, best IoU first by greedy order of want). */
static inline int tim_matched(const bd_detections *want, const bd_detections *got, float min_iou) {
  int matched = 0;
  unsigned char used[4096] = {0};
  for (int i = 0; i < want->n; i++) {
    int best = -1;
    float best_iou = min_iou;
    for (int j = 0; j < got->n && j < 4096; j++) {
      if (used[j] || got->det[j].cls != want->det[i].cls) continue;
      float iou = bd_box_iou(&want->det[i], &got->det[j]);
      if (iou >= best_iou) best = j, best_iou = iou;
    }
    if (best >= 0) used[best] = 1, matched++;
  }
  return matched;
}

#endif
