/* libFuzzer target for the job manifest decoder (outside input: Kafka messages and
 * user files). Every input is decoded; a valid one is re-encoded and decoded again and
 * the two manifests must be equal field by field, else abort(): that catches encoder
 * and decoder disagreeing (escaping, number formatting, optional fields).
 * The same input then goes through the other proto/ decoders (result, report, job
 * status JSON, and job status hash fields split at newlines); for those, a valid input
 * must encode, and encode(decode(encode(decode(x)))) must equal encode(decode(x)).
 * Built with clang -fsanitize=fuzzer by tests/fuzz/run_fuzz.sh, and with
 * replay_main.c in the normal build, where ctest replays the corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_jobstat.h"
#include "bd_manifest.h"
#include "bd_report.h"
#include "bd_result.h"

static int str_eq(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Field-by-field comparison written here, independent of the library. */
static int manifests_equal(const bd_manifest *a, const bd_manifest *b) {
  if (strcmp(a->job, b->job) != 0 || a->shard != b->shard || strcmp(a->model, b->model) != 0)
    return 0;
  if (a->has_score_thr != b->has_score_thr || a->has_iou_thr != b->has_iou_thr ||
      a->has_max_det != b->has_max_det)
    return 0;
  if (a->has_score_thr && a->score_thr != b->score_thr) return 0;
  if (a->has_iou_thr && a->iou_thr != b->iou_thr) return 0;
  if (a->has_max_det && a->max_det != b->max_det) return 0;
  if (a->n_images != b->n_images) return 0;
  for (size_t i = 0; i < a->n_images; i++)
    if (!str_eq(a->images[i].id, b->images[i].id) || !str_eq(a->images[i].url, b->images[i].url))
      return 0;
  return 1;
}

static bd_proto_errors errs; /* large: keep it off the fuzzer's stack */

/* Text fixpoint check for one format: decode -> encode -> decode -> encode. */
#define FIXPOINT(T, data, size)                                                            \
  do {                                                                                     \
    T *a = NULL, *b = NULL;                                                                \
    char *e1 = NULL, *e2 = NULL;                                                           \
    bd_err err_;                                                                           \
    if (T##_decode((const char *)(data), (size), &a, &errs) != BD_OK) {                    \
      if (a || errs.count < 1) abort();                                                    \
      break;                                                                               \
    }                                                                                      \
    if (T##_encode(a, &e1, NULL, &err_) != BD_OK) {                                        \
      fprintf(stderr, #T ": encode of a decoded value failed: %s\n", err_.msg);           \
      abort();                                                                             \
    }                                                                                      \
    if (T##_decode(e1, strlen(e1), &b, &errs) != BD_OK) {                                  \
      fprintf(stderr, #T ": re-decode failed: %s\n%s\n", errs.msg[0], e1);               \
      abort();                                                                             \
    }                                                                                      \
    if (T##_encode(b, &e2, NULL, &err_) != BD_OK || strcmp(e1, e2) != 0) {                 \
      fprintf(stderr, #T ": not a fixpoint:\n%s\n%s\n", e1, e2 ? e2 : "(null)");        \
      abort();                                                                             \
    }                                                                                      \
    free(e1);                                                                              \
    free(e2);                                                                              \
    T##_destroy(a);                                                                        \
    T##_destroy(b);                                                                        \
  } while (0)

static void fuzz_jobstat(const uint8_t *data, size_t size) {
  bd_jobstat js, js2;
  bd_jobstat_kv kv;
  bd_err err;
  char *e1 = NULL;
  if (bd_jobstat_decode((const char *)data, size, &js, &errs) == BD_OK) {
    if (bd_jobstat_encode(&js, &e1, NULL, &err) != BD_OK) abort();
    if (bd_jobstat_decode(e1, strlen(e1), &js2, &errs) != BD_OK) abort();
    if (memcmp(&js, &js2, sizeof js) != 0) abort();
    free(e1);
  }
  /* The hash form: up to 32 strings separated by '\n' (HGETALL's flat list). */
  char *copy = malloc(size + 1);
  if (!copy) return;
  memcpy(copy, data, size);
  copy[size] = '\0';
  const char *strs[32];
  size_t n = 0;
  for (char *p = copy; n < 32;) {
    strs[n++] = p;
    char *nl = strchr(p, '\n');
    if (!nl) break;
    *nl = '\0';
    p = nl + 1;
  }
  if (bd_jobstat_from_kv("job-1", strs, n & ~(size_t)1, &js, &errs) == BD_OK) {
    if (bd_jobstat_to_kv(&js, &kv, &err) != BD_OK) abort();
    const char *flat[2 * BD_JOBSTAT_NFIELDS];
    for (size_t i = 0; i < kv.n; i++) {
      flat[2 * i] = kv.keys[i];
      flat[2 * i + 1] = kv.vals[i];
    }
    if (bd_jobstat_from_kv("job-1", flat, 2 * kv.n, &js2, &errs) != BD_OK) abort();
    if (memcmp(&js, &js2, sizeof js) != 0) abort();
  }
  free(copy);
}

static void fuzz_others(const uint8_t *data, size_t size) {
  FIXPOINT(bd_result, data, size);
  FIXPOINT(bd_report, data, size);
  fuzz_jobstat(data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_others(data, size);
  bd_manifest *m = NULL, *m2 = NULL;
  char *json = NULL;
  size_t len = 0;
  bd_status st = bd_manifest_decode((const char *)data, size, &m, &errs);
  if (st != BD_OK) {
    /* A failure must come with at least one message and no manifest. */
    if (m != NULL || errs.count < 1 || errs.code != st) abort();
    for (int i = 0; i < errs.count; i++)
      if (strnlen(errs.msg[i], BD_PROTO_ERR_MAX) >= BD_PROTO_ERR_MAX) abort();
    return 0;
  }
  if (!m || m->n_images < 1 || m->n_images > BD_MANIFEST_MAX_IMAGES) abort();
  bd_err err;
  if (bd_manifest_encode(m, &json, &len, &err) != BD_OK) {
    fprintf(stderr, "encode of a decoded manifest failed: %s\n", err.msg);
    abort();
  }
  if (strlen(json) != len) abort();
  if (bd_manifest_decode(json, len, &m2, &errs) != BD_OK) {
    fprintf(stderr, "re-decode failed: %s\n%s\n", errs.msg[0], json);
    abort();
  }
  if (!manifests_equal(m, m2)) {
    fprintf(stderr, "round trip changed the manifest:\n%s\n", json);
    abort();
  }
  free(json);
  bd_manifest_destroy(m);
  bd_manifest_destroy(m2);
  return 0;
}
