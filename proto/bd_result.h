/* bd_result: the per-image detection result, stored at det:{job}:{image} and printed
 * by `batchdet detect`, one JSON object per line:
 *
 *   {"image":"img-000123","width":640,"height":480,"model":"yolox_nano",
 *    "detections":[{"class":16,"label":"dog","score":0.93,"box":[x1,y1,x2,y2]}]}
 *   {"image":"img-000124","error":"fetch: HTTP 404"}
 *
 * plus optional "etag", "last_modified" (the source's HTTP validators) and
 * "model_hash" (of the ONNX file) that let a nightly rerun skip unchanged images.
 * "image" is an image id in the cluster and a file name or URL in `detect`, so it is
 * any 1..BD_RESULT_MAX_IMAGE bytes without control characters. A success has width,
 * height (1..BD_RESULT_MAX_DIM) and detections (possibly empty; model optional); an
 * error result has "error" and no detections. Boxes are original-image pixels with
 * x1 <= x2 and y1 <= y2, scores 0..1, classes 0..BD_RESULT_MAX_CLASS. A "v" member,
 * if present, must be 1 (none is written, to keep detect's output as documented).
 *
 * Ownership: bd_result_new/bd_result_decode give a result freed with
 * bd_result_destroy (NULL no-op); it owns its detection array. Encoded text belongs
 * to the caller (free()). Thread safety: no shared state. */
#ifndef BD_RESULT_H
#define BD_RESULT_H

#include <stddef.h>
#include <stdint.h>

#include "bd_proto.h"

#define BD_RESULT_MAX_IMAGE 4096
#define BD_RESULT_MAX_DIM 65535
#define BD_RESULT_MAX_DETS 10000
#define BD_RESULT_MAX_CLASS 65535
#define BD_RESULT_MAX_LABEL 64
#define BD_RESULT_MAX_ERROR 1024
#define BD_RESULT_MAX_ETAG 256
#define BD_RESULT_MAX_LAST_MODIFIED 64
#define BD_RESULT_MAX_MODEL_HASH 128

typedef struct bd_detection {
  int cls;                              /* 0..BD_RESULT_MAX_CLASS */
  char label[BD_RESULT_MAX_LABEL + 1];  /* may be empty: then no "label" is written */
  double score;                         /* 0..1 */
  double box[4];                        /* x1, y1, x2, y2 in original-image pixels */
} bd_detection;

typedef struct bd_result {
  char image[BD_RESULT_MAX_IMAGE + 1];
  char error[BD_RESULT_MAX_ERROR + 1]; /* non-empty: an error result */
  int width, height;                   /* success only */
  char model[BD_ID_MAX + 1];           /* optional (empty = absent) */
  char etag[BD_RESULT_MAX_ETAG + 1];   /* optional */
  char last_modified[BD_RESULT_MAX_LAST_MODIFIED + 1]; /* optional */
  char model_hash[BD_RESULT_MAX_MODEL_HASH + 1];       /* optional */
  size_t n_dets;
  bd_detection *dets; /* owned array of n_dets */
  size_t cap_dets;    /* internal */
} bd_result;

bd_result *bd_result_new(void);
void bd_result_destroy(bd_result *r);

/* Appends one detection (label may be NULL). BD_E_LIMIT beyond BD_RESULT_MAX_DETS. */
bd_status bd_result_add(bd_result *r, int cls, const char *label, double score, const double box[4],
                        bd_err *err);

/* Parses and validates; same contract as bd_manifest_decode. */
bd_status bd_result_decode(const char *json, size_t len, bd_result **out, bd_proto_errors *errs);
bd_status bd_result_validate(const bd_result *r, bd_proto_errors *errs);
/* Validates, then writes compact JSON on one line (no trailing newline). */
bd_status bd_result_encode(const bd_result *r, char **out, size_t *out_len, bd_err *err);

#endif
