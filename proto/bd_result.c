/* Per-image detection result: decode, validate, encode. */
#include "bd_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_proto_internal.h"

/* Box coordinates beyond this are nonsense for any image we accept. */
#define BOX_ABS_MAX 1e9

bd_result *bd_result_new(void) { return calloc(1, sizeof(bd_result)); }

void bd_result_destroy(bd_result *r) {
  if (!r) return;
  free(r->dets);
  free(r);
}

static bd_status reserve(bd_result *r, size_t n, bd_err *err) {
  if (n <= r->cap_dets) return BD_OK;
  size_t cap = r->cap_dets ? r->cap_dets : 16;
  while (cap < n) cap *= 2;
  if (cap > BD_RESULT_MAX_DETS) cap = BD_RESULT_MAX_DETS;
  bd_detection *nd = realloc(r->dets, cap * sizeof *nd);
  if (!nd) return bd_err_set(err, BD_E_NOMEM, "result: out of memory");
  r->dets = nd;
  r->cap_dets = cap;
  return BD_OK;
}

bd_status bd_result_add(bd_result *r, int cls, const char *label, double score, const double box[4],
                        bd_err *err) {
  if (!r || !box) return bd_err_set(err, BD_E_INVALID, "result: add needs a result and a box");
  if (r->n_dets >= BD_RESULT_MAX_DETS)
    return bd_err_set(err, BD_E_LIMIT, "detections: more than %d entries", BD_RESULT_MAX_DETS);
  bd_status st = reserve(r, r->n_dets + 1, err);
  if (st != BD_OK) return st;
  bd_detection *d = &r->dets[r->n_dets++];
  memset(d, 0, sizeof *d);
  d->cls = cls;
  if (label) snprintf(d->label, sizeof d->label, "%s", label);
  d->score = score;
  memcpy(d->box, box, sizeof d->box);
  return BD_OK;
}

static void check_det_values(const bd_detection *d, const char *path, bd_proto_errors *errs) {
  if (d->cls < 0 || d->cls > BD_RESULT_MAX_CLASS)
    bd_proto_errors_add(errs, BD_E_INVALID, "%sclass: must be an integer in 0..%d", path,
                        BD_RESULT_MAX_CLASS);
  if (d->label[0]) bd_proto_check_text(d->label, BD_RESULT_MAX_LABEL, path, "label", errs);
  if (!(d->score >= 0 && d->score <= 1))
    bd_proto_errors_add(errs, BD_E_INVALID, "%sscore: must be a number in 0..1", path);
  for (int k = 0; k < 4; k++) {
    if (!(fabs(d->box[k]) <= BOX_ABS_MAX)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%sbox[%d]: must be a number in -%g..%g", path, k,
                          BOX_ABS_MAX, BOX_ABS_MAX);
      return;
    }
  }
  if (d->box[0] > d->box[2] || d->box[1] > d->box[3])
    bd_proto_errors_add(errs, BD_E_INVALID, "%sbox: must be [x1,y1,x2,y2] with x1 <= x2 and y1 <= y2",
                        path);
}

/* Checks common to both kinds of result. */
static void check_optional(const bd_result *r, bd_proto_errors *errs) {
  if (r->model[0]) bd_proto_check_id(r->model, "", "model", errs);
  if (r->etag[0]) bd_proto_check_text(r->etag, BD_RESULT_MAX_ETAG, "", "etag", errs);
  if (r->last_modified[0])
    bd_proto_check_text(r->last_modified, BD_RESULT_MAX_LAST_MODIFIED, "", "last_modified", errs);
  if (r->model_hash[0])
    bd_proto_check_text(r->model_hash, BD_RESULT_MAX_MODEL_HASH, "", "model_hash", errs);
}

bd_status bd_result_validate(const bd_result *r, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!r) {
    bd_proto_errors_add(errs, BD_E_INVALID, "result: NULL");
    return errs->code;
  }
  bd_proto_check_text(r->image, BD_RESULT_MAX_IMAGE, "", "image", errs);
  check_optional(r, errs);
  if (r->error[0]) {
    bd_proto_check_text(r->error, BD_RESULT_MAX_ERROR, "", "error", errs);
    if (r->n_dets > 0)
      bd_proto_errors_add(errs, BD_E_INVALID, "detections: must not appear with \"error\"");
    return errs->code;
  }
  if (r->width < 1 || r->width > BD_RESULT_MAX_DIM)
    bd_proto_errors_add(errs, BD_E_INVALID, "width: must be an integer in 1..%d", BD_RESULT_MAX_DIM);
  if (r->height < 1 || r->height > BD_RESULT_MAX_DIM)
    bd_proto_errors_add(errs, BD_E_INVALID, "height: must be an integer in 1..%d", BD_RESULT_MAX_DIM);
  if (r->n_dets > BD_RESULT_MAX_DETS)
    bd_proto_errors_add(errs, BD_E_LIMIT, "detections: %zu entries exceed the limit of %d", r->n_dets,
                        BD_RESULT_MAX_DETS);
  else
    for (size_t i = 0; i < r->n_dets; i++) {
      char path[48];
      snprintf(path, sizeof path, "detections[%zu].", i);
      check_det_values(&r->dets[i], path, errs);
    }
  return errs->code;
}

static void decode_det(const json_t *o, const char *path, bd_detection *d, bd_proto_errors *errs) {
  int64_t cls = 0;
  if (bd_proto_get_int(o, path, "class", 1, 0, BD_RESULT_MAX_CLASS, &cls, errs)) d->cls = (int)cls;
  bd_proto_get_text(o, path, "label", 0, BD_RESULT_MAX_LABEL, d->label, errs);
  bd_proto_get_num(o, path, "score", 1, 0, 1, &d->score, errs);
  json_t *box = json_object_get(o, "box");
  if (!box) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%sbox: missing (required)", path);
    return;
  }
  if (!json_is_array(box) || json_array_size(box) != 4) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%sbox: must be an array of 4 numbers [x1,y1,x2,y2]",
                        path);
    return;
  }
  for (int k = 0; k < 4; k++) {
    json_t *v = json_array_get(box, (size_t)k);
    d->box[k] = json_is_number(v) ? json_number_value(v) : NAN;
  }
  /* NaN (a non-number above) fails the range check too. */
  if (!(fabs(d->box[0]) <= BOX_ABS_MAX && fabs(d->box[1]) <= BOX_ABS_MAX &&
        fabs(d->box[2]) <= BOX_ABS_MAX && fabs(d->box[3]) <= BOX_ABS_MAX)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%sbox: must be 4 numbers in -%g..%g", path, BOX_ABS_MAX,
                        BOX_ABS_MAX);
    return;
  }
  if (d->box[0] > d->box[2] || d->box[1] > d->box[3])
    bd_proto_errors_add(errs, BD_E_INVALID, "%sbox: must be [x1,y1,x2,y2] with x1 <= x2 and y1 <= y2",
                        path);
}

bd_status bd_result_decode(const char *json, size_t len, bd_result **out, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!out) {
    bd_proto_errors_add(errs, BD_E_INVALID, "result: no output pointer");
    return errs->code;
  }
  *out = NULL;
  bd_result *r = NULL;
  json_t *root = bd_proto_parse(json, len, 0, errs);
  if (!root) goto out;
  r = bd_result_new();
  if (!r) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "result: out of memory");
    goto out;
  }
  bd_proto_check_version(root, 0, errs);
  bd_proto_get_text(root, "", "image", 1, BD_RESULT_MAX_IMAGE, r->image, errs);
  bd_proto_get_id(root, "", "model", 0, r->model, errs);
  bd_proto_get_text(root, "", "etag", 0, BD_RESULT_MAX_ETAG, r->etag, errs);
  bd_proto_get_text(root, "", "last_modified", 0, BD_RESULT_MAX_LAST_MODIFIED, r->last_modified,
                    errs);
  bd_proto_get_text(root, "", "model_hash", 0, BD_RESULT_MAX_MODEL_HASH, r->model_hash, errs);
  json_t *dets = json_object_get(root, "detections");
  if (json_object_get(root, "error")) {
    bd_proto_get_text(root, "", "error", 1, BD_RESULT_MAX_ERROR, r->error, errs);
    if (dets) bd_proto_errors_add(errs, BD_E_INVALID, "detections: must not appear with \"error\"");
    goto out;
  }
  int64_t v = 0;
  if (bd_proto_get_int(root, "", "width", 1, 1, BD_RESULT_MAX_DIM, &v, errs)) r->width = (int)v;
  if (bd_proto_get_int(root, "", "height", 1, 1, BD_RESULT_MAX_DIM, &v, errs)) r->height = (int)v;
  if (!dets) {
    bd_proto_errors_add(errs, BD_E_INVALID, "detections: missing (required unless \"error\")");
    goto out;
  }
  if (!json_is_array(dets)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "detections: must be an array");
    goto out;
  }
  size_t n = json_array_size(dets);
  if (n > BD_RESULT_MAX_DETS) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "detections: %zu entries exceed the limit of %d", n,
                        BD_RESULT_MAX_DETS);
    goto out;
  }
  if (n > 0 && reserve(r, n, NULL) != BD_OK) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "detections: out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    char path[48];
    snprintf(path, sizeof path, "detections[%zu]", i);
    json_t *o = json_array_get(dets, i);
    bd_detection *d = &r->dets[r->n_dets++];
    memset(d, 0, sizeof *d);
    if (!json_is_object(o)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an object", path);
      continue;
    }
    strcat(path, ".");
    decode_det(o, path, d, errs);
  }
out:
  json_decref(root);
  if (bd_proto_errors_total(errs) > 0) {
    bd_result_destroy(r);
    return errs->code;
  }
  *out = r;
  return BD_OK;
}

bd_status bd_result_encode(const bd_result *r, char **out, size_t *out_len, bd_err *err) {
  if (!out) return bd_err_set(err, BD_E_INVALID, "result: no output pointer");
  *out = NULL;
  bd_proto_errors *errs = bd_proto_errors_new("result", err);
  if (!errs) return BD_E_NOMEM;
  bd_status st = bd_proto_errors_finish(errs, bd_result_validate(r, errs), err);
  if (st != BD_OK) return st;
  bd_jw w;
  bd_jw_init(&w);
  bd_jw_obj_begin(&w);
  bd_jw_key(&w, "image");
  bd_jw_str(&w, r->image);
  if (r->error[0]) {
    bd_jw_key(&w, "error");
    bd_jw_str(&w, r->error);
  } else {
    bd_jw_key(&w, "width");
    bd_jw_int(&w, r->width);
    bd_jw_key(&w, "height");
    bd_jw_int(&w, r->height);
  }
  if (r->model[0]) {
    bd_jw_key(&w, "model");
    bd_jw_str(&w, r->model);
  }
  if (r->etag[0]) {
    bd_jw_key(&w, "etag");
    bd_jw_str(&w, r->etag);
  }
  if (r->last_modified[0]) {
    bd_jw_key(&w, "last_modified");
    bd_jw_str(&w, r->last_modified);
  }
  if (r->model_hash[0]) {
    bd_jw_key(&w, "model_hash");
    bd_jw_str(&w, r->model_hash);
  }
  if (!r->error[0]) {
    bd_jw_key(&w, "detections");
    bd_jw_arr_begin(&w);
    for (size_t i = 0; i < r->n_dets; i++) {
      const bd_detection *d = &r->dets[i];
      bd_jw_obj_begin(&w);
      bd_jw_key(&w, "class");
      bd_jw_int(&w, d->cls);
      if (d->label[0]) {
        bd_jw_key(&w, "label");
        bd_jw_str(&w, d->label);
      }
      bd_jw_key(&w, "score");
      bd_jw_num(&w, d->score);
      bd_jw_key(&w, "box");
      bd_jw_arr_begin(&w);
      for (int k = 0; k < 4; k++) bd_jw_num(&w, d->box[k]);
      bd_jw_arr_end(&w);
      bd_jw_obj_end(&w);
    }
    bd_jw_arr_end(&w);
  }
  bd_jw_obj_end(&w);
  return bd_jw_finish(&w, out, out_len, err);
}
