/* bd_manifest: the job manifest, one Kafka message per shard (key: the job id).
 *
 *   {"v":1,"job":"archive-2026-11","shard":17,"model":"yolox_nano",
 *    "score_thr":0.3,"iou_thr":0.45,"max_det":100,
 *    "images":[{"id":"img-000123","url":"s3://photos/2019/000123.jpg"}, ...]}
 *
 * Required: v, job, shard, model, images. score_thr, iou_thr, max_det are optional
 * (the model's defaults apply; has_* says whether they were given). Unknown fields,
 * top level or per image, are ignored. Ids (job, model, image ids) are 1..BD_ID_MAX
 * chars of [A-Za-z0-9._-]; image ids are unique within a manifest. URLs: http://HOST...,
 * https://HOST..., s3://BUCKET/KEY (both non-empty), file:///PATH; at most
 * BD_MANIFEST_MAX_URL bytes, no whitespace or control characters.
 *
 * Ownership: a bd_manifest comes from bd_manifest_new or bd_manifest_decode and is
 * freed with bd_manifest_destroy (NULL is a no-op); it owns its image strings. The
 * JSON text from bd_manifest_encode belongs to the caller (free()).
 * Thread safety: no shared state; a manifest may be read from many threads at once
 * but modified by one only. */
#ifndef BD_MANIFEST_H
#define BD_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "bd_proto.h"

#define BD_MANIFEST_MAX_IMAGES 10000
#define BD_MANIFEST_MAX_URL 4096
#define BD_MANIFEST_MAX_DET 10000 /* max_det in 1..BD_MANIFEST_MAX_DET */
#define BD_MANIFEST_MAX_SHARD 2147483647LL /* shard in 0..2^31-1 */

typedef struct bd_manifest_image {
  char *id;  /* owned; valid id */
  char *url; /* owned */
} bd_manifest_image;

typedef struct bd_manifest {
  char job[BD_ID_MAX + 1];
  int64_t shard;
  /* The submission this shard belongs to ("gen", optional; "" = none): submit writes it
   * into the job record and every manifest, so that a shard of a submission replaced by
   * `submit --force` while in flight is recognised and dropped, not counted. */
  char gen[BD_ID_MAX + 1];
  char model[BD_ID_MAX + 1];
  int has_score_thr, has_iou_thr, has_max_det;
  double score_thr; /* 0..1, meaningful when has_score_thr */
  double iou_thr;   /* 0..1, meaningful when has_iou_thr */
  int max_det;      /* 1..BD_MANIFEST_MAX_DET, meaningful when has_max_det */
  size_t n_images;
  bd_manifest_image *images; /* owned array of n_images */
  size_t cap_images;         /* internal: allocated length of images */
} bd_manifest;

/* An empty manifest (no images, no thresholds) for a producer to fill. NULL on OOM. */
bd_manifest *bd_manifest_new(void);
void bd_manifest_destroy(bd_manifest *m);

/* Appends a copy of id and url (validated only by bd_manifest_validate/encode).
 * BD_E_LIMIT beyond BD_MANIFEST_MAX_IMAGES, BD_E_NOMEM on allocation failure. */
bd_status bd_manifest_add_image(bd_manifest *m, const char *id, const char *url, bd_err *err);

/* Parses and validates json[0..len). On success *out is a new manifest (caller
 * destroys). On failure *out is NULL, errs lists every problem found (up to its cap)
 * and the return is the first error's code (BD_E_INVALID, BD_E_UNSUPPORTED for a
 * "v" other than 1, BD_E_LIMIT for a document over BD_PROTO_MAX_DOC or too many
 * images). errs may be NULL. */
bd_status bd_manifest_decode(const char *json, size_t len, bd_manifest **out,
                             bd_proto_errors *errs);

/* Checks a manifest built in memory with the same rules as the decoder. */
bd_status bd_manifest_validate(const bd_manifest *m, bd_proto_errors *errs);

/* Validates, then writes compact JSON (fields in the order shown above, optional ones
 * only when set). *out is NUL-terminated, caller frees; *out_len may be NULL. On a
 * validation failure err holds the first problem and the count of the others. */
bd_status bd_manifest_encode(const bd_manifest *m, char **out, size_t *out_len, bd_err *err);

/* Checks one URL against the rules above; records "<path><key>: ..." errors. */
int bd_manifest_url_check(const char *url, const char *path, const char *key,
                          bd_proto_errors *errs);

#endif
