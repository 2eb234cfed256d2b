/* Job status record: JSON and Redis-hash forms. */
#include "bd_jobstat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_proto_internal.h"

static const char *const state_names[BD_JOB__COUNT] = {"queued", "running", "complete", "failed",
                                                       "cancelled"};

const char *bd_jobstat_state_name(bd_job_state s) {
  if ((int)s < 0 || s >= BD_JOB__COUNT) return "unknown";
  return state_names[s];
}

int bd_jobstat_state_parse(const char *s) {
  for (int i = 0; s && i < BD_JOB__COUNT; i++)
    if (strcmp(s, state_names[i]) == 0) return i;
  return -1;
}

static void state_err(bd_proto_errors *errs) {
  bd_proto_errors_add(errs, BD_E_INVALID,
                      "state: must be one of queued, running, complete, failed, cancelled");
}

bd_status bd_jobstat_validate(const bd_jobstat *js, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!js) {
    bd_proto_errors_add(errs, BD_E_INVALID, "jobstat: NULL");
    return errs->code;
  }
  bd_proto_check_id(js->job, "", "job", errs);
  if ((int)js->state < 0 || js->state >= BD_JOB__COUNT) state_err(errs);
  bd_proto_check_id(js->model, "", "model", errs);
  const struct {
    const char *k;
    int64_t v, hi;
  } ints[] = {{"total", js->total, BD_JOBSTAT_MAX_COUNT},
              {"done", js->done, BD_JOBSTAT_MAX_COUNT},
              {"failed", js->failed, BD_JOBSTAT_MAX_COUNT},
              {"shards", js->shards, BD_JOBSTAT_MAX_SHARDS}};
  int counts_ok = 1;
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (ints[i].v < 0 || ints[i].v > ints[i].hi) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an integer in 0..%lld", ints[i].k,
                          (long long)ints[i].hi);
      counts_ok = 0;
    }
  if (counts_ok && js->done + js->failed > js->total)
    bd_proto_errors_add(errs, BD_E_INVALID, "done: done + failed (%lld) exceeds total (%lld)",
                        (long long)(js->done + js->failed), (long long)js->total);
  const struct {
    const char *k;
    double v, hi;
  } nums[] = {{"created", js->created, BD_JOBSTAT_MAX_TS},
              {"updated", js->updated, BD_JOBSTAT_MAX_TS},
              {"rate", js->rate, BD_JOBSTAT_MAX_RATE}};
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
    if (!(nums[i].v >= 0 && nums[i].v <= nums[i].hi))
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be a number in 0..%g", nums[i].k, nums[i].hi);
  return errs->code;
}

/* ---- JSON ---- */

bd_status bd_jobstat_decode(const char *json, size_t len, bd_jobstat *out, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!out) {
    bd_proto_errors_add(errs, BD_E_INVALID, "jobstat: no output record");
    return errs->code;
  }
  memset(out, 0, sizeof *out);
  json_t *root = bd_proto_parse(json, len, 0, errs);
  if (!root) return errs->code;
  bd_proto_check_version(root, 0, errs);
  bd_proto_get_id(root, "", "job", 1, out->job, errs);
  json_t *st = json_object_get(root, "state");
  int s = bd_jobstat_state_parse(json_string_value(st));
  if (!st) bd_proto_errors_add(errs, BD_E_INVALID, "state: missing (required)");
  else if (s < 0) state_err(errs);
  else out->state = (bd_job_state)s;
  bd_proto_get_id(root, "", "model", 1, out->model, errs);
  int ok = bd_proto_get_int(root, "", "total", 1, 0, BD_JOBSTAT_MAX_COUNT, &out->total, errs);
  ok &= !json_object_get(root, "done") ||
        bd_proto_get_int(root, "", "done", 0, 0, BD_JOBSTAT_MAX_COUNT, &out->done, errs);
  ok &= !json_object_get(root, "failed") ||
        bd_proto_get_int(root, "", "failed", 0, 0, BD_JOBSTAT_MAX_COUNT, &out->failed, errs);
  bd_proto_get_int(root, "", "shards", 0, 0, BD_JOBSTAT_MAX_SHARDS, &out->shards, errs);
  bd_proto_get_num(root, "", "created", 0, 0, BD_JOBSTAT_MAX_TS, &out->created, errs);
  bd_proto_get_num(root, "", "updated", 0, 0, BD_JOBSTAT_MAX_TS, &out->updated, errs);
  bd_proto_get_num(root, "", "rate", 0, 0, BD_JOBSTAT_MAX_RATE, &out->rate, errs);
  if (ok && out->done + out->failed > out->total)
    bd_proto_errors_add(errs, BD_E_INVALID, "done: done + failed (%lld) exceeds total (%lld)",
                        (long long)(out->done + out->failed), (long long)out->total);
  json_decref(root);
  if (bd_proto_errors_total(errs) > 0) memset(out, 0, sizeof *out);
  return errs->code;
}

bd_status bd_jobstat_encode(const bd_jobstat *js, char **out, size_t *out_len, bd_err *err) {
  if (!out) return bd_err_set(err, BD_E_INVALID, "jobstat: no output pointer");
  *out = NULL;
  bd_proto_errors *errs = bd_proto_errors_new("jobstat", err);
  if (!errs) return BD_E_NOMEM;
  bd_status st = bd_proto_errors_finish(errs, bd_jobstat_validate(js, errs), err);
  if (st != BD_OK) return st;
  bd_jw w;
  bd_jw_init(&w);
  bd_jw_obj_begin(&w);
  bd_jw_key(&w, "v");
  bd_jw_int(&w, BD_PROTO_VERSION);
  bd_jw_key(&w, "job");
  bd_jw_str(&w, js->job);
  bd_jw_key(&w, "state");
  bd_jw_str(&w, bd_jobstat_state_name(js->state));
  bd_jw_key(&w, "model");
  bd_jw_str(&w, js->model);
  bd_jw_key(&w, "total");
  bd_jw_int(&w, js->total);
  bd_jw_key(&w, "done");
  bd_jw_int(&w, js->done);
  bd_jw_key(&w, "failed");
  bd_jw_int(&w, js->failed);
  bd_jw_key(&w, "shards");
  bd_jw_int(&w, js->shards);
  bd_jw_key(&w, "created");
  bd_jw_num(&w, js->created);
  bd_jw_key(&w, "updated");
  bd_jw_num(&w, js->updated);
  bd_jw_key(&w, "rate");
  bd_jw_num(&w, js->rate);
  bd_jw_obj_end(&w);
  return bd_jw_finish(&w, out, out_len, err);
}

/* ---- Redis hash ---- */

bd_status bd_jobstat_to_kv(const bd_jobstat *js, bd_jobstat_kv *kv, bd_err *err) {
  if (!kv) return bd_err_set(err, BD_E_INVALID, "jobstat: no output kv");
  memset(kv, 0, sizeof *kv);
  bd_proto_errors *errs = bd_proto_errors_new("jobstat", err);
  if (!errs) return BD_E_NOMEM;
  bd_status st = bd_proto_errors_finish(errs, bd_jobstat_validate(js, errs), err);
  if (st != BD_OK) return st;
  size_t n = 0;
#define KV_STR(k, v) (kv->keys[n] = (k), snprintf(kv->vals[n], sizeof kv->vals[n], "%s", (v)), n++)
#define KV_INT(k, v) (kv->keys[n] = (k), snprintf(kv->vals[n], sizeof kv->vals[n], "%lld", (long long)(v)), n++)
#define KV_NUM(k, v) (kv->keys[n] = (k), bd_proto_fmt_double(kv->vals[n], sizeof kv->vals[n], (v)), n++)
  KV_STR("state", bd_jobstat_state_name(js->state));
  KV_STR("model", js->model);
  KV_INT("total", js->total);
  KV_INT("done", js->done);
  KV_INT("failed", js->failed);
  KV_INT("shards", js->shards);
  KV_NUM("created", js->created);
  KV_NUM("updated", js->updated);
  KV_NUM("rate", js->rate);
#undef KV_STR
#undef KV_INT
#undef KV_NUM
  kv->n = n;
  return BD_OK;
}

/* Strict decimal integer: what HSET/HINCRBY store; no spaces, no '+', no hex. */
static int parse_int(const char *s, int64_t *out) {
  const char *p = s[0] == '-' ? s + 1 : s;
  if (!*p || strspn(p, "0123456789") != strlen(p)) return 0;
  errno = 0;
  long long v = strtoll(s, NULL, 10);
  if (errno) return 0;
  *out = v;
  return 1;
}

/* Decimal number as HINCRBYFLOAT and our writer produce; no hex, inf or nan. */
static int parse_num(const char *s, double *out) {
  if (!*s || strspn(s, "0123456789.eE+-") != strlen(s)) return 0;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v)) return 0;
  *out = v == 0 ? 0 : v; /* one zero: -0 would not survive a trip through JSON */
  return 1;
}

bd_status bd_jobstat_from_kv(const char *job, const char *const *kv, size_t n_strings,
                             bd_jobstat *out, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!out || (!kv && n_strings)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "jobstat: no input or output");
    return errs->code;
  }
  memset(out, 0, sizeof *out);
  if (n_strings % 2) {
    bd_proto_errors_add(errs, BD_E_INVALID, "hash: odd number of strings (%zu)", n_strings);
    return errs->code;
  }
  if (bd_proto_check_id(job, "", "job", errs)) memcpy(out->job, job, strlen(job) + 1);
  unsigned seen = 0;
  static const char *const fields[BD_JOBSTAT_NFIELDS] = {
      "state", "model", "total", "done", "failed", "shards", "created", "updated", "rate"};
  for (size_t i = 0; i + 1 < n_strings; i += 2) {
    const char *k = kv[i], *v = kv[i + 1];
    if (!k || !v) {
      bd_proto_errors_add(errs, BD_E_INVALID, "hash: NULL string at %zu", i);
      continue;
    }
    int f = -1;
    for (int j = 0; j < BD_JOBSTAT_NFIELDS; j++)
      if (strcmp(k, fields[j]) == 0) f = j;
    if (f < 0) continue; /* a field of a later version */
    if (seen & (1u << f)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: appears twice", k);
      continue;
    }
    seen |= 1u << f;
    int64_t iv = 0;
    double dv = 0;
    switch (f) {
    case 0: {
      int s = bd_jobstat_state_parse(v);
      if (s < 0) state_err(errs);
      else out->state = (bd_job_state)s;
      break;
    }
    case 1:
      if (bd_proto_check_id(v, "", "model", errs)) memcpy(out->model, v, strlen(v) + 1);
      break;
    case 2: case 3: case 4: case 5: {
      int64_t hi = f == 5 ? BD_JOBSTAT_MAX_SHARDS : BD_JOBSTAT_MAX_COUNT;
      if (!parse_int(v, &iv) || iv < 0 || iv > hi) {
        bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an integer in 0..%lld (got \"%.40s\")",
                            k, (long long)hi, v);
        break;
      }
      int64_t *dst[] = {&out->total, &out->done, &out->failed, &out->shards};
      *dst[f - 2] = iv;
      break;
    }
    default: {
      double hi = f == 8 ? BD_JOBSTAT_MAX_RATE : BD_JOBSTAT_MAX_TS;
      if (!parse_num(v, &dv) || dv < 0 || dv > hi) {
        bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be a number in 0..%g (got \"%.40s\")", k,
                            hi, v);
        break;
      }
      double *dst[] = {&out->created, &out->updated, &out->rate};
      *dst[f - 6] = dv;
      break;
    }
    }
  }
  for (int j = 0; j < 3; j++)
    if (!(seen & (1u << j))) bd_proto_errors_add(errs, BD_E_INVALID, "%s: missing (required)", fields[j]);
  if (bd_proto_errors_total(errs) == 0 && out->done + out->failed > out->total)
    bd_proto_errors_add(errs, BD_E_INVALID, "done: done + failed (%lld) exceeds total (%lld)",
                        (long long)(out->done + out->failed), (long long)out->total);
  if (bd_proto_errors_total(errs) > 0) memset(out, 0, sizeof *out);
  return errs->code;
}
