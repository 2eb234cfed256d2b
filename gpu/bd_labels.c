/* bd_labels: see bd_labels.h. */
#include "bd_labels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bd_text.h"

const char *const bd_coco80_names[80] = {"person",        "bicycle",      "car",
                                         "motorcycle",    "airplane",     "bus",
                                         "train",         "truck",        "boat",
                                         "traffic light", "fire hydrant", "stop sign",
                                         "parking meter", "bench",        "bird",
                                         "cat",           "dog",          "horse",
                                         "sheep",         "cow",          "elephant",
                                         "bear",          "zebra",        "giraffe",
                                         "backpack",      "umbrella",     "handbag",
                                         "tie",           "suitcase",     "frisbee",
                                         "skis",          "snowboard",    "sports ball",
                                         "kite",          "baseball bat", "baseball glove",
                                         "skateboard",    "surfboard",    "tennis racket",
                                         "bottle",        "wine glass",   "cup",
                                         "fork",          "knife",        "spoon",
                                         "bowl",          "banana",       "apple",
                                         "sandwich",      "orange",       "broccoli",
                                         "carrot",        "hot dog",      "pizza",
                                         "donut",         "cake",         "chair",
                                         "couch",         "potted plant", "bed",
                                         "dining table",  "toilet",       "tv",
                                         "laptop",        "mouse",        "remote",
                                         "keyboard",      "cell phone",   "microwave",
                                         "oven",          "toaster",      "sink",
                                         "refrigerator",  "book",         "clock",
                                         "vase",          "scissors",     "teddy bear",
                                         "hair drier",    "toothbrush"};

/* COCO-2017 keeps the 91-id numbering of the 2014 paper with 11 ids unused. */
static const int coco91[80] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 13, 14, 15, 16, 17,
                               18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36,
                               37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
                               54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73,
                               74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90};

int bd_coco80_category_id(int i) {
  return (i >= 0 && i < 80) ? coco91[i] : -1;
}

struct bd_labels {
  int n;
  char **names;
};

void bd_labels_destroy(bd_labels *l) {
  if (!l) return;
  for (int i = 0; i < l->n; i++) free(l->names[i]);
  free(l->names);
  free(l);
}

int bd_labels_count(const bd_labels *l) {
  return l ? l->n : 0;
}

const char *bd_labels_name(const bd_labels *l, int i) {
  return (l && i >= 0 && i < l->n) ? l->names[i] : NULL;
}

static bd_status labels_from_list(const char *const *names, int n, bd_labels **out, bd_err *err) {
  bd_labels *l = calloc(1, sizeof *l);
  if (!l || !(l->names = calloc((size_t)(n ? n : 1), sizeof *l->names))) {
    free(l);
    return bd_err_set(err, BD_E_NOMEM, "labels: %d names", n);
  }
  for (; l->n < n; l->n++) {
    if (!(l->names[l->n] = strdup(names[l->n]))) {
      bd_labels_destroy(l);
      return bd_err_set(err, BD_E_NOMEM, "labels: copying names");
    }
  }
  *out = l;
  return BD_OK;
}

bd_status bd_labels_coco(bd_labels **out, bd_err *err) {
  return labels_from_list(bd_coco80_names, 80, out, err);
}

bd_status bd_labels_load(const char *path, bd_labels **out, bd_err *err) {
  bd_status st = BD_OK;
  char *buf = NULL;
  char **names = NULL;
  int n = 0, blank_seen = 0;
  FILE *f = fopen(path, "rb");
  struct stat sb;
  if (!f) return bd_err_set(err, BD_E_NOT_FOUND, "labels %s: cannot open", path);
  if (fstat(fileno(f), &sb) == 0 && !S_ISREG(sb.st_mode)) {
    fclose(f);
    return bd_err_set(err, BD_E_INVALID, "labels %s: not a regular file%s", path,
                      S_ISDIR(sb.st_mode) ? " (a directory)" : "");
  }
  buf = malloc(BD_LABELS_MAX_FILE_BYTES + 1);
  names = calloc(BD_LABELS_MAX, sizeof *names);
  if (!buf || !names) {
    st = bd_err_set(err, BD_E_NOMEM, "labels %s", path);
    goto out;
  }
  size_t len = fread(buf, 1, BD_LABELS_MAX_FILE_BYTES + 1, f);
  if (ferror(f)) {
    st = bd_err_set(err, BD_E_IO, "labels %s: read error", path);
    goto out;
  }
  if (len > BD_LABELS_MAX_FILE_BYTES) {
    st = bd_err_set(err, BD_E_LIMIT, "labels %s: larger than %d bytes", path,
                    BD_LABELS_MAX_FILE_BYTES);
    goto out;
  }
  buf[len] = '\0';
  if (memchr(buf, '\0', len)) {
    st = bd_err_set(err, BD_E_INVALID, "labels %s: binary file", path);
    goto out;
  }
  int line = 0;
  for (char *p = buf; *p;) {
    char *e = strchr(p, '\n');
    char *next = e ? e + 1 : p + strlen(p);
    if (e) *e = '\0';
    line++;
    size_t l = strlen(p);
    while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t')) p[--l] = '\0';
    if (l == 0) {
      blank_seen = line;
    } else {
      if (blank_seen) {
        st = bd_err_set(err, BD_E_INVALID, "labels %s: empty line %d inside the list", path,
                        blank_seen);
        goto out;
      }
      size_t bad = 0;
      if (!bd_utf8_valid(p, l, &bad)) {
        /* names go into JSON results, which must be UTF-8 */
        st = bd_err_set(err, BD_E_INVALID, "labels %s: line %d is not UTF-8 (column %zu)", path,
                        line, bad + 1);
        goto out;
      }
      if (n >= BD_LABELS_MAX) {
        st = bd_err_set(err, BD_E_LIMIT, "labels %s: more than %d names", path, BD_LABELS_MAX);
        goto out;
      }
      names[n++] = p;
    }
    p = next;
  }
  if (n == 0) {
    st = bd_err_set(err, BD_E_INVALID, "labels %s: no names", path);
    goto out;
  }
  st = labels_from_list((const char *const *)names, n, out, err);
out:
  fclose(f);
  free(buf);
  free(names);
  return st;
}

bd_status bd_labels_for_model(const char *model_path, int num_classes, bd_labels **out,
                              char *names_path, size_t cap, bd_err *err) {
  *out = NULL;
  char path[4096];
  size_t n = strlen(model_path);
  if (n >= 5 && strcmp(model_path + n - 5, ".onnx") == 0) n -= 5;
  if (n + sizeof ".names" > sizeof path)
    return bd_err_set(err, BD_E_LIMIT, "labels: model path too long");
  memcpy(path, model_path, n);
  memcpy(path + n, ".names", sizeof ".names");
  if (names_path && cap) snprintf(names_path, cap, "%s", path);
  struct stat st;
  if (stat(path, &st) == 0) return bd_labels_load(path, out, err);
  return num_classes == 80 ? bd_labels_coco(out, err) : BD_OK;
}
