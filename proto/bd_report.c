/* Throughput report: decode, validate, encode. */
#include "bd_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_manifest.h" /* shard range */
#include "bd_proto_internal.h"

bd_report *bd_report_new(void) { return calloc(1, sizeof(bd_report)); }

void bd_report_destroy(bd_report *r) {
  if (!r) return;
  free(r->shards);
  free(r);
}

static bd_status copy_name(char *dst, size_t cap, const char *src, const char *what, bd_err *err) {
  if (!src || strlen(src) >= cap)
    return bd_err_set(err, BD_E_INVALID, "%s: missing or longer than %zu bytes", what, cap - 1);
  memcpy(dst, src, strlen(src) + 1);
  return BD_OK;
}

bd_status bd_report_add_device(bd_report *r, const char *name, int64_t images, int64_t failed,
                               double img_s, bd_err *err) {
  if (!r) return bd_err_set(err, BD_E_INVALID, "report: NULL");
  if (r->n_devices >= BD_REPORT_MAX_DEVICES)
    return bd_err_set(err, BD_E_LIMIT, "devices: more than %d entries", BD_REPORT_MAX_DEVICES);
  bd_report_device *d = &r->devices[r->n_devices];
  bd_status st = copy_name(d->name, sizeof d->name, name, "devices[].name", err);
  if (st != BD_OK) return st;
  d->images = images;
  d->failed = failed;
  d->img_s = img_s;
  r->n_devices++;
  return BD_OK;
}

bd_status bd_report_add_shard(bd_report *r, const char *job, int64_t shard, int64_t images,
                              int64_t failed, bd_err *err) {
  if (!r) return bd_err_set(err, BD_E_INVALID, "report: NULL");
  if (r->n_shards >= BD_REPORT_MAX_SHARDS)
    return bd_err_set(err, BD_E_LIMIT, "shards_done: more than %d entries", BD_REPORT_MAX_SHARDS);
  if (r->n_shards == r->cap_shards) {
    size_t cap = r->cap_shards ? r->cap_shards * 2 : 8;
    if (cap > BD_REPORT_MAX_SHARDS) cap = BD_REPORT_MAX_SHARDS;
    bd_report_shard *ns = realloc(r->shards, cap * sizeof *ns);
    if (!ns) return bd_err_set(err, BD_E_NOMEM, "report: out of memory");
    r->shards = ns;
    r->cap_shards = cap;
  }
  bd_report_shard *s = &r->shards[r->n_shards];
  bd_status st = copy_name(s->job, sizeof s->job, job, "shards_done[].job", err);
  if (st != BD_OK) return st;
  s->shard = shard;
  s->images = images;
  s->failed = failed;
  r->n_shards++;
  return BD_OK;
}

bd_status bd_report_add_queue(bd_report *r, const char *name, int64_t depth, bd_err *err) {
  if (!r) return bd_err_set(err, BD_E_INVALID, "report: NULL");
  if (r->n_queues >= BD_REPORT_MAX_QUEUES)
    return bd_err_set(err, BD_E_LIMIT, "queues: more than %d entries", BD_REPORT_MAX_QUEUES);
  bd_report_queue *q = &r->queues[r->n_queues];
  bd_status st = copy_name(q->name, sizeof q->name, name, "queues name", err);
  if (st != BD_OK) return st;
  q->depth = depth;
  r->n_queues++;
  return BD_OK;
}

static int count_ok(int64_t v) { return v >= 0 && v < BD_REPORT_MAX_COUNT; }

static void count_err(const char *path, const char *key, bd_proto_errors *errs) {
  bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be an integer in 0..%lld", path, key,
                      (long long)BD_REPORT_MAX_COUNT - 1);
}

bd_status bd_report_validate(const bd_report *r, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!r) {
    bd_proto_errors_add(errs, BD_E_INVALID, "report: NULL");
    return errs->code;
  }
  bd_proto_check_text(r->worker, BD_REPORT_MAX_NAME, "", "worker", errs);
  if (r->host[0]) bd_proto_check_text(r->host, BD_REPORT_MAX_NAME, "", "host", errs);
  if (!(r->ts >= 0 && r->ts <= BD_REPORT_MAX_TS))
    bd_proto_errors_add(errs, BD_E_INVALID, "ts: must be a number in 0..%g", BD_REPORT_MAX_TS);
  if (r->n_devices > BD_REPORT_MAX_DEVICES || r->n_queues > BD_REPORT_MAX_QUEUES ||
      r->n_shards > BD_REPORT_MAX_SHARDS) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "report: more entries than the limits allow");
    return errs->code;
  }
  for (size_t i = 0; i < r->n_devices; i++) {
    const bd_report_device *d = &r->devices[i];
    char path[48];
    snprintf(path, sizeof path, "devices[%zu].", i);
    bd_proto_check_text(d->name, BD_REPORT_MAX_DEVNAME, path, "name", errs);
    if (!count_ok(d->images)) count_err(path, "images", errs);
    if (!count_ok(d->failed)) count_err(path, "failed", errs);
    if (!(d->img_s >= 0 && d->img_s <= BD_REPORT_MAX_RATE))
      bd_proto_errors_add(errs, BD_E_INVALID, "%simg_s: must be a number in 0..%g", path,
                          BD_REPORT_MAX_RATE);
  }
  for (size_t i = 0; i < r->n_shards; i++) {
    const bd_report_shard *s = &r->shards[i];
    char path[48];
    snprintf(path, sizeof path, "shards_done[%zu].", i);
    bd_proto_check_id(s->job, path, "job", errs);
    if (s->shard < 0 || s->shard > BD_MANIFEST_MAX_SHARD)
      bd_proto_errors_add(errs, BD_E_INVALID, "%sshard: must be an integer in 0..%lld", path,
                          BD_MANIFEST_MAX_SHARD);
    if (s->images < 0 || s->images > BD_MANIFEST_MAX_IMAGES)
      bd_proto_errors_add(errs, BD_E_INVALID, "%simages: must be an integer in 0..%d", path,
                          BD_MANIFEST_MAX_IMAGES);
    else if (s->failed < 0 || s->failed > s->images)
      bd_proto_errors_add(errs, BD_E_INVALID, "%sfailed: must be an integer in 0..images (%lld)",
                          path, (long long)s->images);
  }
  for (size_t i = 0; i < r->n_queues; i++) {
    char path[48];
    snprintf(path, sizeof path, "queues[%zu].", i);
    bd_proto_check_id(r->queues[i].name, path, "name", errs);
    if (!count_ok(r->queues[i].depth)) count_err("queues.", r->queues[i].name, errs);
    /* at most BD_REPORT_MAX_QUEUES names: a quadratic scan is cheaper than a set */
    for (size_t j = 0; j < i; j++)
      if (strcmp(r->queues[i].name, r->queues[j].name) == 0)
        bd_proto_errors_add(errs, BD_E_INVALID, "%sname: duplicate queue \"%s\" (first at queues[%zu])",
                            path, r->queues[i].name, j);
  }
  return errs->code;
}

static void decode_devices(const json_t *arr, bd_report *r, bd_proto_errors *errs) {
  size_t n = json_array_size(arr);
  if (n > BD_REPORT_MAX_DEVICES) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "devices: %zu entries exceed the limit of %d", n,
                        BD_REPORT_MAX_DEVICES);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    char path[48];
    snprintf(path, sizeof path, "devices[%zu]", i);
    json_t *o = json_array_get(arr, i);
    bd_report_device *d = &r->devices[r->n_devices++];
    if (!json_is_object(o)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an object", path);
      continue;
    }
    strcat(path, ".");
    bd_proto_get_text(o, path, "name", 1, BD_REPORT_MAX_DEVNAME, d->name, errs);
    bd_proto_get_int(o, path, "images", 1, 0, BD_REPORT_MAX_COUNT - 1, &d->images, errs);
    bd_proto_get_int(o, path, "failed", 1, 0, BD_REPORT_MAX_COUNT - 1, &d->failed, errs);
    bd_proto_get_num(o, path, "img_s", 1, 0, BD_REPORT_MAX_RATE, &d->img_s, errs);
  }
}

static void decode_shards(const json_t *arr, bd_report *r, bd_proto_errors *errs) {
  size_t n = json_array_size(arr);
  if (n > BD_REPORT_MAX_SHARDS) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "shards_done: %zu entries exceed the limit of %d", n,
                        BD_REPORT_MAX_SHARDS);
    return;
  }
  if (n == 0) return;
  r->shards = calloc(n, sizeof *r->shards);
  if (!r->shards) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "shards_done: out of memory");
    return;
  }
  r->cap_shards = n;
  for (size_t i = 0; i < n; i++) {
    char path[48];
    snprintf(path, sizeof path, "shards_done[%zu]", i);
    json_t *o = json_array_get(arr, i);
    bd_report_shard *s = &r->shards[r->n_shards++];
    if (!json_is_object(o)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an object", path);
      continue;
    }
    strcat(path, ".");
    bd_proto_get_id(o, path, "job", 1, s->job, errs);
    bd_proto_get_int(o, path, "shard", 1, 0, BD_MANIFEST_MAX_SHARD, &s->shard, errs);
    int ok = bd_proto_get_int(o, path, "images", 1, 0, BD_MANIFEST_MAX_IMAGES, &s->images, errs);
    if (bd_proto_get_int(o, path, "failed", 1, 0, BD_MANIFEST_MAX_IMAGES, &s->failed, errs) && ok &&
        s->failed > s->images)
      bd_proto_errors_add(errs, BD_E_INVALID, "%sfailed: must be an integer in 0..images (%lld)",
                          path, (long long)s->images);
  }
}

static void decode_queues(const json_t *obj, bd_report *r, bd_proto_errors *errs) {
  size_t n = json_object_size(obj);
  if (n > BD_REPORT_MAX_QUEUES) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "queues: %zu entries exceed the limit of %d", n,
                        BD_REPORT_MAX_QUEUES);
    return;
  }
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)obj, key, val) {
    if (!bd_proto_id_valid(key)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "queues: names must be 1..%d chars of [A-Za-z0-9._-]",
                          BD_ID_MAX);
      continue;
    }
    if (!json_is_integer(val) || !count_ok(json_integer_value(val))) {
      count_err("queues.", key, errs);
      continue;
    }
    bd_report_queue *q = &r->queues[r->n_queues++];
    memcpy(q->name, key, strlen(key) + 1);
    q->depth = json_integer_value(val);
  }
}

bd_status bd_report_decode(const char *json, size_t len, bd_report **out, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!out) {
    bd_proto_errors_add(errs, BD_E_INVALID, "report: no output pointer");
    return errs->code;
  }
  *out = NULL;
  bd_report *r = NULL;
  json_t *root = bd_proto_parse(json, len, 0, errs);
  if (!root) goto out;
  r = bd_report_new();
  if (!r) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "report: out of memory");
    goto out;
  }
  bd_proto_check_version(root, 1, errs);
  bd_proto_get_text(root, "", "worker", 1, BD_REPORT_MAX_NAME, r->worker, errs);
  bd_proto_get_text(root, "", "host", 0, BD_REPORT_MAX_NAME, r->host, errs);
  bd_proto_get_num(root, "", "ts", 1, 0, BD_REPORT_MAX_TS, &r->ts, errs);
  json_t *devs = json_object_get(root, "devices");
  if (!devs) bd_proto_errors_add(errs, BD_E_INVALID, "devices: missing (required)");
  else if (!json_is_array(devs)) bd_proto_errors_add(errs, BD_E_INVALID, "devices: must be an array");
  else decode_devices(devs, r, errs);
  json_t *sh = json_object_get(root, "shards_done");
  if (sh && !json_is_array(sh)) bd_proto_errors_add(errs, BD_E_INVALID, "shards_done: must be an array");
  else if (sh) decode_shards(sh, r, errs);
  json_t *qs = json_object_get(root, "queues");
  if (qs && !json_is_object(qs))
    bd_proto_errors_add(errs, BD_E_INVALID, "queues: must be an object of name: depth");
  else if (qs) decode_queues(qs, r, errs);
out:
  json_decref(root);
  if (bd_proto_errors_total(errs) > 0) {
    bd_report_destroy(r);
    return errs->code;
  }
  *out = r;
  return BD_OK;
}

bd_status bd_report_encode(const bd_report *r, char **out, size_t *out_len, bd_err *err) {
  if (!out) return bd_err_set(err, BD_E_INVALID, "report: no output pointer");
  *out = NULL;
  bd_proto_errors *errs = bd_proto_errors_new("report", err);
  if (!errs) return BD_E_NOMEM;
  bd_status st = bd_proto_errors_finish(errs, bd_report_validate(r, errs), err);
  if (st != BD_OK) return st;
  bd_jw w;
  bd_jw_init(&w);
  bd_jw_obj_begin(&w);
  bd_jw_key(&w, "v");
  bd_jw_int(&w, BD_PROTO_VERSION);
  bd_jw_key(&w, "worker");
  bd_jw_str(&w, r->worker);
  if (r->host[0]) {
    bd_jw_key(&w, "host");
    bd_jw_str(&w, r->host);
  }
  bd_jw_key(&w, "ts");
  bd_jw_num(&w, r->ts);
  bd_jw_key(&w, "devices");
  bd_jw_arr_begin(&w);
  for (size_t i = 0; i < r->n_devices; i++) {
    const bd_report_device *d = &r->devices[i];
    bd_jw_obj_begin(&w);
    bd_jw_key(&w, "name");
    bd_jw_str(&w, d->name);
    bd_jw_key(&w, "images");
    bd_jw_int(&w, d->images);
    bd_jw_key(&w, "failed");
    bd_jw_int(&w, d->failed);
    bd_jw_key(&w, "img_s");
    bd_jw_num(&w, d->img_s);
    bd_jw_obj_end(&w);
  }
  bd_jw_arr_end(&w);
  bd_jw_key(&w, "shards_done");
  bd_jw_arr_begin(&w);
  for (size_t i = 0; i < r->n_shards; i++) {
    const bd_report_shard *s = &r->shards[i];
    bd_jw_obj_begin(&w);
    bd_jw_key(&w, "job");
    bd_jw_str(&w, s->job);
    bd_jw_key(&w, "shard");
    bd_jw_int(&w, s->shard);
    bd_jw_key(&w, "images");
    bd_jw_int(&w, s->images);
    bd_jw_key(&w, "failed");
    bd_jw_int(&w, s->failed);
    bd_jw_obj_end(&w);
  }
  bd_jw_arr_end(&w);
  if (r->n_queues > 0) {
    bd_jw_key(&w, "queues");
    bd_jw_obj_begin(&w);
    for (size_t i = 0; i < r->n_queues; i++) {
      bd_jw_key(&w, r->queues[i].name);
      bd_jw_int(&w, r->queues[i].depth);
    }
    bd_jw_obj_end(&w);
  }
  bd_jw_obj_end(&w);
  return bd_jw_finish(&w, out, out_len, err);
}
