/* bd_labels: class names for detections. The 80 COCO-2017 names are built in (the
 * standard order used by YOLOX and DAMO-YOLO training); a names file (one per line,
 * like shared/data/coco.names) can replace them. Also the COCO 80-index -> 91-id
 * category mapping used by COCO results files.
 *
 * Ownership: a bd_labels owns its strings; bd_labels_destroy(NULL) is a no-op.
 * Thread safety: read-only after creation. */
#ifndef BD_LABELS_H
#define BD_LABELS_H

#include <stddef.h>

#include "bd_status.h"

#define BD_LABELS_MAX 4096
#define BD_LABELS_MAX_FILE_BYTES (1 << 20)

typedef struct bd_labels bd_labels;

extern const char *const bd_coco80_names[80];

/* COCO category id (1..90) of 0-based class index i (0..79); -1 when out of range. */
int bd_coco80_category_id(int i);

/* The built-in COCO names. */
bd_status bd_labels_coco(bd_labels **out, bd_err *err);
/* Names from a file: one per line, trailing CR/spaces trimmed, empty lines ignored at the
 * end only (an empty line in the middle is an error: it would shift every index). */
bd_status bd_labels_load(const char *path, bd_labels **out, bd_err *err);
/* The labels of a model with num_classes classes that has no names given otherwise:
 * MODEL.names beside the model file (MODEL.onnx -> MODEL.names; loaded as
 * bd_labels_load does, its errors returned), else the COCO names for an 80-class model,
 * else none (*out = NULL, BD_OK: a custom model without names has class indices only).
 * names_path (cap bytes, may be NULL) gets the .names path looked for. */
bd_status bd_labels_for_model(const char *model_path, int num_classes, bd_labels **out,
                              char *names_path, size_t cap, bd_err *err);
void bd_labels_destroy(bd_labels *l);
int bd_labels_count(const bd_labels *l);
/* Name of class i, or NULL when i is out of range. */
const char *bd_labels_name(const bd_labels *l, int i);

#endif
