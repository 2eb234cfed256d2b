/* Job manifest: decode (strict, every error named by its field), validate, encode. */
#include "bd_manifest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bd_proto_internal.h"
#include "bd_strmap.h"

bd_manifest *bd_manifest_new(void) { return calloc(1, sizeof(bd_manifest)); }

void bd_manifest_destroy(bd_manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->n_images; i++) {
    free(m->images[i].id);
    free(m->images[i].url);
  }
  free(m->images);
  free(m);
}

bd_status bd_manifest_add_image(bd_manifest *m, const char *id, const char *url, bd_err *err) {
  if (!m || !id || !url) return bd_err_set(err, BD_E_INVALID, "manifest: add_image needs id and url");
  if (m->n_images >= BD_MANIFEST_MAX_IMAGES)
    return bd_err_set(err, BD_E_LIMIT, "images: more than %d entries", BD_MANIFEST_MAX_IMAGES);
  if (m->n_images == m->cap_images) {
    size_t cap = m->cap_images ? m->cap_images * 2 : 16;
    if (cap > BD_MANIFEST_MAX_IMAGES) cap = BD_MANIFEST_MAX_IMAGES;
    bd_manifest_image *ni = realloc(m->images, cap * sizeof *ni);
    if (!ni) return bd_err_set(err, BD_E_NOMEM, "manifest: out of memory");
    m->images = ni;
    m->cap_images = cap;
  }
  char *i = strdup(id), *u = strdup(url);
  if (!i || !u) {
    free(i);
    free(u);
    return bd_err_set(err, BD_E_NOMEM, "manifest: out of memory");
  }
  m->images[m->n_images].id = i;
  m->images[m->n_images].url = u;
  m->n_images++;
  return BD_OK;
}

/* ---- URL rules ---- */

int bd_manifest_url_check(const char *url, const char *path, const char *key,
                          bd_proto_errors *errs) {
  size_t n = strlen(url);
  if (n == 0) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must not be empty", path, key);
    return 0;
  }
  if (n > BD_MANIFEST_MAX_URL) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "%s%s: %zu bytes exceed the limit of %d", path, key, n,
                        BD_MANIFEST_MAX_URL);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c == 0x7f) {
      bd_proto_errors_add(errs, BD_E_INVALID,
                          "%s%s: must not contain whitespace or control characters (at offset %zu)",
                          path, key, i);
      return 0;
    }
  }
  const char *sep = strstr(url, "://");
  size_t slen = sep ? (size_t)(sep - url) : 0;
  int scheme_ok = slen > 0 && ((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z'));
  for (size_t i = 0; scheme_ok && i < slen; i++) {
    char c = url[i];
    scheme_ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '+' || c == '-' || c == '.';
  }
  if (!scheme_ok) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: not a URL (expected SCHEME://...)", path, key);
    return 0;
  }
  const char *rest = sep + 3;
  /* Schemes are matched as written (lowercase): the fetcher dispatches on them. */
  if (slen == 4 && memcmp(url, "http", 4) == 0) {
  } else if (slen == 5 && memcmp(url, "https", 5) == 0) {
  } else if (slen == 2 && memcmp(url, "s3", 2) == 0) {
    const char *slash = strchr(rest, '/');
    if (!slash || slash == rest) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: s3 URL needs a bucket (s3://BUCKET/KEY)", path,
                          key);
      return 0;
    }
    if (slash[1] == '\0') {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: s3 URL needs a key (s3://BUCKET/KEY)", path,
                          key);
      return 0;
    }
    return 1;
  } else if (slen == 4 && memcmp(url, "file", 4) == 0) {
    if (rest[0] != '/' || rest[1] == '\0') {
      bd_proto_errors_add(errs, BD_E_INVALID,
                          "%s%s: file URL needs an absolute path (file:///PATH)", path, key);
      return 0;
    }
    return 1;
  } else {
    bd_proto_errors_add(errs, BD_E_UNSUPPORTED,
                        "%s%s: unsupported scheme \"%.*s\" (http, https, s3, file)", path, key,
                        (int)(slen > 32 ? 32 : slen), url);
    return 0;
  }
  /* http and https need a host before the path, query or fragment. */
  size_t host = strcspn(rest, "/?#");
  if (host == 0) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: missing host", path, key);
    return 0;
  }
  return 1;
}

/* ---- checks shared by decode and validate ---- */

static void check_thresholds(const bd_manifest *m, bd_proto_errors *errs) {
  if (m->has_score_thr && !(m->score_thr >= 0 && m->score_thr <= 1))
    bd_proto_errors_add(errs, BD_E_INVALID, "score_thr: must be a number in 0..1");
  if (m->has_iou_thr && !(m->iou_thr >= 0 && m->iou_thr <= 1))
    bd_proto_errors_add(errs, BD_E_INVALID, "iou_thr: must be a number in 0..1");
  if (m->has_max_det && (m->max_det < 1 || m->max_det > BD_MANIFEST_MAX_DET))
    bd_proto_errors_add(errs, BD_E_INVALID, "max_det: must be an integer in 1..%d",
                        BD_MANIFEST_MAX_DET);
}

static int check_count(size_t n, bd_proto_errors *errs) {
  if (n == 0) {
    bd_proto_errors_add(errs, BD_E_INVALID, "images: must not be empty");
    return 0;
  }
  if (n > BD_MANIFEST_MAX_IMAGES) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "images: %zu entries exceed the limit of %d", n,
                        BD_MANIFEST_MAX_IMAGES);
    return 0;
  }
  return 1;
}

/* ids[i] NULL means "already reported"; valid ids go into a hash set, so that a
 * 10000-image manifest costs 10000 probes rather than 50 million comparisons. */
static void check_duplicates(const char *const *ids, size_t n, bd_proto_errors *errs) {
  bd_strmap *set = bd_strmap_new(n);
  if (!set) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "images: out of memory checking duplicate ids");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    if (!ids[i] || !bd_proto_id_valid(ids[i])) continue;
    int fresh = 0;
    const long *first = bd_strmap_put(set, ids[i], (long)i, &fresh);
    if (first && !fresh)
      bd_proto_errors_add(errs, BD_E_INVALID,
                          "images[%zu].id: duplicate id \"%s\" (first at images[%ld])", i, ids[i],
                          *first);
  }
  bd_strmap_destroy(set);
}

bd_status bd_manifest_validate(const bd_manifest *m, bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!m) {
    bd_proto_errors_add(errs, BD_E_INVALID, "manifest: NULL");
    return errs->code;
  }
  bd_proto_check_id(m->job, "", "job", errs);
  if (m->gen[0]) bd_proto_check_id(m->gen, "", "gen", errs);
  if (m->shard < 0 || m->shard > BD_MANIFEST_MAX_SHARD)
    bd_proto_errors_add(errs, BD_E_INVALID, "shard: must be an integer in 0..%lld",
                        BD_MANIFEST_MAX_SHARD);
  bd_proto_check_id(m->model, "", "model", errs);
  check_thresholds(m, errs);
  if (check_count(m->n_images, errs)) {
    const char **ids = malloc(m->n_images * sizeof *ids);
    if (!ids) {
      bd_proto_errors_add(errs, BD_E_NOMEM, "images: out of memory");
      return errs->code;
    }
    for (size_t i = 0; i < m->n_images; i++) {
      char path[48];
      snprintf(path, sizeof path, "images[%zu].", i);
      ids[i] = m->images[i].id;
      if (!m->images[i].id) bd_proto_errors_add(errs, BD_E_INVALID, "%sid: missing (required)", path);
      else bd_proto_check_id(m->images[i].id, path, "id", errs);
      if (!m->images[i].url) bd_proto_errors_add(errs, BD_E_INVALID, "%surl: missing (required)", path);
      else bd_manifest_url_check(m->images[i].url, path, "url", errs);
    }
    check_duplicates(ids, m->n_images, errs);
    free(ids);
  }
  return errs->code;
}

/* ---- decode ---- */

bd_status bd_manifest_decode(const char *json, size_t len, bd_manifest **out,
                             bd_proto_errors *errs) {
  bd_proto_errors local;
  if (!errs) errs = &local;
  bd_proto_errors_clear(errs);
  if (!out) {
    bd_proto_errors_add(errs, BD_E_INVALID, "manifest: no output pointer");
    return errs->code;
  }
  *out = NULL;
  bd_manifest *m = NULL;
  const char **ids = NULL, **urls = NULL;
  json_t *root = bd_proto_parse(json, len, 0, errs);
  if (!root) goto out;
  m = bd_manifest_new();
  if (!m) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "manifest: out of memory");
    goto out;
  }
  bd_proto_check_version(root, 1, errs);
  bd_proto_get_id(root, "", "job", 1, m->job, errs);
  bd_proto_get_int(root, "", "shard", 1, 0, BD_MANIFEST_MAX_SHARD, &m->shard, errs);
  bd_proto_get_id(root, "", "gen", 0, m->gen, errs);
  bd_proto_get_id(root, "", "model", 1, m->model, errs);
  m->has_score_thr = bd_proto_get_num(root, "", "score_thr", 0, 0, 1, &m->score_thr, errs);
  m->has_iou_thr = bd_proto_get_num(root, "", "iou_thr", 0, 0, 1, &m->iou_thr, errs);
  int64_t md = 0;
  m->has_max_det = bd_proto_get_int(root, "", "max_det", 0, 1, BD_MANIFEST_MAX_DET, &md, errs);
  m->max_det = (int)md;

  json_t *imgs = json_object_get(root, "images");
  if (!imgs) {
    bd_proto_errors_add(errs, BD_E_INVALID, "images: missing (required)");
    goto out;
  }
  if (!json_is_array(imgs)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "images: must be an array of {\"id\",\"url\"} objects");
    goto out;
  }
  size_t n = json_array_size(imgs);
  /* The count is checked before anything is allocated per entry. */
  if (!check_count(n, errs)) goto out;
  ids = calloc(n, sizeof *ids);
  urls = calloc(n, sizeof *urls);
  if (!ids || !urls) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "images: out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    char path[48];
    snprintf(path, sizeof path, "images[%zu]", i);
    json_t *im = json_array_get(imgs, i);
    if (!json_is_object(im)) {
      bd_proto_errors_add(errs, BD_E_INVALID, "%s: must be an object {\"id\",\"url\"}", path);
      continue;
    }
    strcat(path, ".");
    json_t *id = json_object_get(im, "id");
    json_t *url = json_object_get(im, "url");
    if (!id) bd_proto_errors_add(errs, BD_E_INVALID, "%sid: missing (required)", path);
    else if (bd_proto_check_id(json_string_value(id), path, "id", errs)) ids[i] = json_string_value(id);
    if (!url) bd_proto_errors_add(errs, BD_E_INVALID, "%surl: missing (required)", path);
    else if (!json_is_string(url)) bd_proto_errors_add(errs, BD_E_INVALID, "%surl: must be a string", path);
    else if (bd_manifest_url_check(json_string_value(url), path, "url", errs)) urls[i] = json_string_value(url);
  }
  check_duplicates(ids, n, errs);
  if (bd_proto_errors_total(errs) > 0) goto out;
  m->images = calloc(n, sizeof *m->images);
  if (!m->images) {
    bd_proto_errors_add(errs, BD_E_NOMEM, "images: out of memory");
    goto out;
  }
  m->cap_images = n;
  for (size_t i = 0; i < n; i++) {
    m->images[i].id = strdup(ids[i]);
    m->images[i].url = strdup(urls[i]);
    m->n_images++;
    if (!m->images[i].id || !m->images[i].url) {
      bd_proto_errors_add(errs, BD_E_NOMEM, "images: out of memory");
      goto out;
    }
  }
out:
  free(ids);
  free(urls);
  json_decref(root);
  if (bd_proto_errors_total(errs) > 0) {
    bd_manifest_destroy(m);
    return errs->code;
  }
  *out = m;
  return BD_OK;
}

/* ---- encode ---- */

bd_status bd_manifest_encode(const bd_manifest *m, char **out, size_t *out_len, bd_err *err) {
  if (!out) return bd_err_set(err, BD_E_INVALID, "manifest: no output pointer");
  *out = NULL;
  bd_proto_errors *errs = bd_proto_errors_new("manifest", err);
  if (!errs) return BD_E_NOMEM;
  bd_status st = bd_proto_errors_finish(errs, bd_manifest_validate(m, errs), err);
  if (st != BD_OK) return st;
  bd_jw w;
  bd_jw_init(&w);
  bd_jw_obj_begin(&w);
  bd_jw_key(&w, "v");
  bd_jw_int(&w, BD_PROTO_VERSION);
  bd_jw_key(&w, "job");
  bd_jw_str(&w, m->job);
  bd_jw_key(&w, "shard");
  bd_jw_int(&w, m->shard);
  if (m->gen[0]) {
    bd_jw_key(&w, "gen");
    bd_jw_str(&w, m->gen);
  }
  bd_jw_key(&w, "model");
  bd_jw_str(&w, m->model);
  if (m->has_score_thr) {
    bd_jw_key(&w, "score_thr");
    bd_jw_num(&w, m->score_thr);
  }
  if (m->has_iou_thr) {
    bd_jw_key(&w, "iou_thr");
    bd_jw_num(&w, m->iou_thr);
  }
  if (m->has_max_det) {
    bd_jw_key(&w, "max_det");
    bd_jw_int(&w, m->max_det);
  }
  bd_jw_key(&w, "images");
  bd_jw_arr_begin(&w);
  for (size_t i = 0; i < m->n_images; i++) {
    bd_jw_obj_begin(&w);
    bd_jw_key(&w, "id");
    bd_jw_str(&w, m->images[i].id);
    bd_jw_key(&w, "url");
    bd_jw_str(&w, m->images[i].url);
    bd_jw_obj_end(&w);
  }
  bd_jw_arr_end(&w);
  bd_jw_obj_end(&w);
  return bd_jw_finish(&w, out, out_len, err);
}
