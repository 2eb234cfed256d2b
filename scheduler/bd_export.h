/* bd_export: a job's results (det:{job}:*) as COCO results JSON, JSON lines or YOLO
 * label files, streamed with SCAN + MGET one page (512 keys) at a time.
 *
 * Memory is bounded by a page plus an 8-byte hash per image already written (SCAN may
 * return a key twice; the hash set drops the repeat), so a 100k-image job exports in a
 * few MB. COCO needs two arrays, so annotations go to an unlinked temporary file while
 * images are written, and are appended at the end.
 *
 * Formats:
 *  - coco: {"info", "images":[{id, file_name, width, height, image_key}],
 *    "annotations":[{id, image_id, category_id, bbox:[x,y,w,h], area, score, iscrowd}],
 *    "categories":[{id, name}]}. Image ids are 1.. in export order; category ids follow
 *    COCO's 80 -> 91 mapping (class 0 -> 1 ... class 79 -> 90); classes >= 80 (non-COCO
 *    models) get 1000 + class. file_name is the basename of the image's URL
 *    (job:{job}:urls) or the image id. Error results are left out.
 *  - jsonl: every stored result, errors included, one per line, as stored.
 *  - yolo: directory PATH (created), one PATH/{image}.txt per successful image with
 *    one "class cx cy w h" line per detection, normalised by the image size to 0..1.
 *    Standard YOLO label files have these 5 columns, so the score is NOT written;
 *    use jsonl or coco to keep scores. An image without detections gets an empty file.
 *
 * A job without a record (job:{job}) is BD_E_NOT_FOUND ("job X: no such job"), found
 * before PATH is created. Every format counts detections the same way (boxes it can
 * read), so the summaries agree.
 *
 * Thread safety: one call at a time per handle (no shared state). */
#ifndef BD_EXPORT_H
#define BD_EXPORT_H

#include <stddef.h>

#include "bd_status.h"

typedef enum { BD_EXPORT_COCO = 0, BD_EXPORT_JSONL, BD_EXPORT_YOLO } bd_export_format;

/* Parses "coco|jsonl|yolo"; -1 when unknown. */
int bd_export_format_parse(const char *s);

/* COCO category id of a class index (see above), and its name ("" beyond 79). */
int bd_export_coco_category(int cls);
const char *bd_export_coco_name(int cls);

typedef struct bd_export_summary {
  size_t images;      /* results written (jsonl) or successful images (coco, yolo) */
  size_t errors;      /* error results (skipped by coco and yolo) */
  size_t annotations; /* detections written */
  size_t duplicates;  /* SCAN repeats dropped */
  size_t bad;         /* stored values that are not a readable result (skipped) */
  long long total;    /* the job's total, -1 when unknown */
} bd_export_summary;

/* Called after each page with the number of results seen so far. */
typedef void (*bd_export_progress_fn)(void *ctx, size_t seen, long long total);

bd_status bd_export_run(const char *redis_url, const char *job, bd_export_format fmt,
                        const char *path, bd_export_progress_fn progress, void *ctx,
                        bd_export_summary *sum, bd_err *err);

#endif
