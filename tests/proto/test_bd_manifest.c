/* Job manifest: round trip against hand-written JSON, and one test per rejection rule
 * (each checks the status and that a message names the field). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_manifest.h"

static bd_proto_errors errs;

/* Decodes text, expects failure with code, and a message containing want. */
static void expect_reject(const char *text, bd_status code, const char *want) {
  bd_manifest *m = (bd_manifest *)0x1;
  bd_status st = bd_manifest_decode(text, strlen(text), &m, &errs);
  if (st == BD_OK) fail_msg("accepted: %s", text);
  assert_null(m);
  assert_int_equal(st, code);
  assert_int_equal(errs.code, code);
  for (int i = 0; i < errs.count; i++)
    if (strstr(errs.msg[i], want)) return;
  for (int i = 0; i < errs.count; i++) print_message("  error: %s\n", errs.msg[i]);
  fail_msg("no error contains \"%s\"", want);
}

/* A valid manifest with one top-level member replaced: "%s" is spliced in place. */
#define BASE_HEAD "{\"v\":1,"
#define IMGS "\"images\":[{\"id\":\"a\",\"url\":\"http://h/a\"}]"

static void test_round_trip(void **state) {
  (void)state;
  const char *in =
      "{\"v\":1,\"job\":\"archive-2026-11\",\"shard\":17,\"model\":\"yolox_nano\","
      "\"score_thr\":0.3,\"iou_thr\":0.45,\"max_det\":100,\"unknown\":{\"x\":[1]},"
      "\"images\":[{\"id\":\"img-000123\",\"url\":\"s3://photos/2019/000123.jpg\",\"extra\":1},"
      "{\"id\":\"img-000124\",\"url\":\"https://cdn.example.org/a%20b\\\"q.jpg\"}]}";
  bd_manifest *m = NULL;
  assert_int_equal(bd_manifest_decode(in, strlen(in), &m, &errs), BD_OK);
  assert_int_equal(errs.count, 0);
  assert_string_equal(m->job, "archive-2026-11");
  assert_int_equal(m->shard, 17);
  assert_string_equal(m->model, "yolox_nano");
  assert_true(m->has_score_thr && m->has_iou_thr && m->has_max_det);
  assert_true(m->score_thr == 0.3);
  assert_true(m->iou_thr == 0.45);
  assert_int_equal(m->max_det, 100);
  assert_int_equal(m->n_images, 2);
  assert_string_equal(m->images[0].id, "img-000123");
  assert_string_equal(m->images[0].url, "s3://photos/2019/000123.jpg");
  assert_string_equal(m->images[1].url, "https://cdn.example.org/a%20b\"q.jpg");
  char *out = NULL;
  size_t len = 0;
  bd_err err;
  assert_int_equal(bd_manifest_encode(m, &out, &len, &err), BD_OK);
  /* Expected text written by hand: field order, shortest numbers, escaping. */
  assert_string_equal(out,
                      "{\"v\":1,\"job\":\"archive-2026-11\",\"shard\":17,\"model\":\"yolox_nano\","
                      "\"score_thr\":0.3,\"iou_thr\":0.45,\"max_det\":100,\"images\":["
                      "{\"id\":\"img-000123\",\"url\":\"s3://photos/2019/000123.jpg\"},"
                      "{\"id\":\"img-000124\",\"url\":\"https://cdn.example.org/a%20b\\\"q.jpg\"}]}");
  assert_int_equal(len, strlen(out));
  bd_manifest *m2 = NULL;
  assert_int_equal(bd_manifest_decode(out, len, &m2, &errs), BD_OK);
  assert_string_equal(m2->images[1].url, m->images[1].url);
  free(out);
  bd_manifest_destroy(m);
  bd_manifest_destroy(m2);
}

static void test_optional_thresholds_and_builder(void **state) {
  (void)state;
  bd_manifest *m = bd_manifest_new();
  assert_non_null(m);
  strcpy(m->job, "j");
  strcpy(m->model, "m");
  m->shard = 2147483647;
  bd_err err;
  assert_int_equal(bd_manifest_add_image(m, "x", "file:///data/x.png", &err), BD_OK);
  char *out = NULL;
  assert_int_equal(bd_manifest_encode(m, &out, NULL, &err), BD_OK);
  assert_string_equal(out, "{\"v\":1,\"job\":\"j\",\"shard\":2147483647,\"model\":\"m\",\"images\":"
                           "[{\"id\":\"x\",\"url\":\"file:///data/x.png\"}]}");
  bd_manifest *m2 = NULL;
  assert_int_equal(bd_manifest_decode(out, strlen(out), &m2, NULL), BD_OK);
  assert_false(m2->has_score_thr || m2->has_iou_thr || m2->has_max_det);
  assert_string_equal(m2->gen, "");
  free(out);
  bd_manifest_destroy(m2);
  /* the submission id, when set, round-trips after the shard */
  strcpy(m->gen, "g1764124800-5f1e");
  assert_int_equal(bd_manifest_encode(m, &out, NULL, &err), BD_OK);
  assert_string_equal(out,
                      "{\"v\":1,\"job\":\"j\",\"shard\":2147483647,\"gen\":\"g1764124800-"
                      "5f1e\",\"model\":\"m\",\"images\":[{\"id\":\"x\",\"url\":\"file:///"
                      "data/x.png\"}]}");
  assert_int_equal(bd_manifest_decode(out, strlen(out), &m2, NULL), BD_OK);
  assert_string_equal(m2->gen, "g1764124800-5f1e");
  free(out);
  /* encode refuses what decode would refuse */
  assert_int_equal(bd_manifest_add_image(m, "x", "ftp://h/x", &err), BD_OK);
  assert_int_not_equal(bd_manifest_encode(m, &out, NULL, &err), BD_OK);
  assert_non_null(strstr(err.msg, "images[1]."));
  bd_manifest_destroy(m);
  bd_manifest_destroy(m2);
  bd_manifest_destroy(NULL);
}

static void test_wrong_version(void **state) {
  (void)state;
  expect_reject("{\"v\":2,\"job\":\"j\",\"shard\":0,\"model\":\"m\"," IMGS "}", BD_E_UNSUPPORTED,
                "v: unsupported version 2 (this build reads 1)");
  expect_reject("{\"job\":\"j\",\"shard\":0,\"model\":\"m\"," IMGS "}", BD_E_INVALID, "v: missing");
}

static void test_missing_job(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"shard\":0,\"model\":\"m\"," IMGS "}", BD_E_INVALID,
                "job: missing (required)");
}

static void test_bad_id_chars(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"a b\",\"shard\":0,\"model\":\"m\"," IMGS "}", BD_E_INVALID,
                "job: must be 1..128 chars of [A-Za-z0-9._-]");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m/x\"," IMGS "}", BD_E_INVALID,
                "model: must be 1..128 chars");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":[{\"id\":\"a:b\","
                          "\"url\":\"http://h/a\"}]}",
                BD_E_INVALID, "images[0].id: must be 1..128 chars");
  expect_reject(BASE_HEAD "\"job\":\"\",\"shard\":0,\"model\":\"m\"," IMGS "}", BD_E_INVALID,
                "job: must be 1..128");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"gen\":\"a b\",\"model\":\"m\"," IMGS "}",
                BD_E_INVALID, "gen: must be 1..128 chars");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"gen\":7,\"model\":\"m\"," IMGS "}",
                BD_E_INVALID, "gen: must be 1..128 chars");
}

static void test_id_too_long(void **state) {
  (void)state;
  char id[130], text[512];
  memset(id, 'a', 129);
  id[129] = '\0';
  snprintf(text, sizeof text, BASE_HEAD "\"job\":\"%s\",\"shard\":0,\"model\":\"m\"," IMGS "}", id);
  expect_reject(text, BD_E_INVALID, "job: must be 1..128 chars");
  id[128] = '\0'; /* exactly 128 is fine */
  snprintf(text, sizeof text, BASE_HEAD "\"job\":\"%s\",\"shard\":0,\"model\":\"m\"," IMGS "}", id);
  bd_manifest *m = NULL;
  assert_int_equal(bd_manifest_decode(text, strlen(text), &m, &errs), BD_OK);
  assert_int_equal(strlen(m->job), 128);
  bd_manifest_destroy(m);
}

static void test_empty_images(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":[]}", BD_E_INVALID,
                "images: must not be empty");
}

static void test_duplicate_id(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"http://h/0\"},{\"id\":\"b\",\"url\":\"http://h/1\"},"
                          "{\"id\":\"img-1\",\"url\":\"http://h/2\"},{\"id\":\"c\",\"url\":\"http://h/3\"},"
                          "{\"id\":\"d\",\"url\":\"http://h/4\"},{\"id\":\"img-1\",\"url\":\"http://h/5\"}]}",
                BD_E_INVALID, "images[5].id: duplicate id \"img-1\" (first at images[2])");
}

static void test_unsupported_scheme(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"ftp://h/a\"}]}",
                BD_E_UNSUPPORTED, "images[0].url: unsupported scheme \"ftp\"");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"/local/path.jpg\"}]}",
                BD_E_INVALID, "images[0].url: not a URL");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"http:///nohost\"}]}",
                BD_E_INVALID, "images[0].url: missing host");
}

static void test_non_numeric_threshold(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"score_thr\":\"0.3\"," IMGS "}",
                BD_E_INVALID, "score_thr: must be a number in 0..1");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"iou_thr\":null," IMGS "}",
                BD_E_INVALID, "iou_thr: must be a number in 0..1");
}

static void test_threshold_out_of_range(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"score_thr\":1.5," IMGS "}",
                BD_E_INVALID, "score_thr: must be a number in 0..1");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"iou_thr\":-0.01," IMGS "}",
                BD_E_INVALID, "iou_thr: must be a number in 0..1");
}

static void test_oversize_images(void **state) {
  (void)state;
  size_t n = 20001, cap = n * 48 + 256, len = 0;
  char *t = malloc(cap);
  assert_non_null(t);
  len += (size_t)snprintf(t, cap, BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":[");
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(t + len, cap - len, "%s{\"id\":\"i%zu\",\"url\":\"http://h/%zu\"}",
                            i ? "," : "", i, i);
  snprintf(t + len, cap - len, "]}");
  expect_reject(t, BD_E_LIMIT, "images: 20001 entries exceed the limit of 10000");
  free(t);
}

static void test_invalid_json(void **state) {
  (void)state;
  expect_reject("{\"v\":1,\"job\":\"j\" \"shard\":0}", BD_E_INVALID, "json: line 1 column");
  expect_reject("{\"v\":1,\n\"job\":tru}", BD_E_INVALID, "json: line 2");
  expect_reject("[1]", BD_E_INVALID, "json: top level must be an object");
  expect_reject("{\"v\":1,\"v\":1}", BD_E_INVALID, "duplicate");
}

static void test_truncated_json(void **state) {
  (void)state;
  const char *full = BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\"," IMGS "}";
  /* every proper prefix must be rejected as JSON (no prefix is an object) */
  for (size_t n = 0; n < strlen(full); n++) {
    bd_manifest *m = NULL;
    char *copy = malloc(n + 1); /* exact size: ASan sees a read past the end */
    memcpy(copy, full, n);
    assert_int_equal(bd_manifest_decode(copy, n, &m, &errs), BD_E_INVALID);
    assert_null(m);
    assert_non_null(strstr(errs.msg[0], "json: line 1 column"));
    free(copy);
  }
}

static void test_bad_max_det(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"max_det\":0," IMGS "}",
                BD_E_INVALID, "max_det: must be an integer in 1..10000");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"max_det\":10001," IMGS "}",
                BD_E_INVALID, "max_det: must be an integer in 1..10000");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"max_det\":2.5," IMGS "}",
                BD_E_INVALID, "max_det: must be an integer");
}

static void test_bad_shard(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":2147483648,\"model\":\"m\"," IMGS "}", BD_E_INVALID,
                "shard: must be an integer in 0..2147483647");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":-1,\"model\":\"m\"," IMGS "}", BD_E_INVALID,
                "shard: must be an integer");
}

static void test_missing_url(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"http://h/a\"},{\"id\":\"b\"}]}",
                BD_E_INVALID, "images[1].url: missing (required)");
}

static void test_s3_without_key(void **state) {
  (void)state;
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"s3://bucket/\"}]}",
                BD_E_INVALID, "images[0].url: s3 URL needs a key");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"s3://bucket\"}]}",
                BD_E_INVALID, "images[0].url: s3 URL needs a bucket");
  expect_reject(BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                          "{\"id\":\"a\",\"url\":\"s3:///key\"}]}",
                BD_E_INVALID, "images[0].url: s3 URL needs a bucket");
}

static void test_url_too_long(void **state) {
  (void)state;
  char *t = malloc(8192);
  int n = snprintf(t, 8192, BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":["
                                      "{\"id\":\"a\",\"url\":\"http://h/");
  memset(t + n, 'x', 4090);
  strcpy(t + n + 4090, "\"}]}");
  expect_reject(t, BD_E_LIMIT, "images[0].url: 4099 bytes exceed the limit of 4096");
  free(t);
}

static void test_collects_all_errors(void **state) {
  (void)state;
  const char *t = "{\"v\":1,\"job\":\"bad job\",\"shard\":\"x\",\"model\":\"m\",\"score_thr\":2,"
                  "\"images\":[{\"id\":\"a\",\"url\":\"ftp://x/y\"},{\"url\":\"http://h/\"}]}";
  expect_reject(t, BD_E_INVALID, "job:");
  assert_int_equal(errs.count, 5);
  assert_string_equal(errs.msg[1], "shard: must be an integer in 0..2147483647");
  assert_string_equal(errs.msg[2], "score_thr: must be a number in 0..1");
  assert_string_equal(errs.msg[3], "images[0].url: unsupported scheme \"ftp\" (http, https, s3, file)");
  assert_string_equal(errs.msg[4], "images[1].id: missing (required)");
  /* the cap: 60 bad images give 50 messages and 10 counted beyond */
  char *big = malloc(8192);
  size_t len = (size_t)snprintf(big, 8192, BASE_HEAD "\"job\":\"j\",\"shard\":0,\"model\":\"m\",\"images\":[");
  for (int i = 0; i < 60; i++) len += (size_t)snprintf(big + len, 8192 - len, "%s{\"id\":\"%d\"}", i ? "," : "", i);
  snprintf(big + len, 8192 - len, "]}");
  expect_reject(big, BD_E_INVALID, "images[0].url: missing");
  assert_int_equal(errs.count, BD_PROTO_MAX_ERRORS);
  assert_int_equal(errs.dropped, 10);
  bd_err e;
  bd_proto_errors_to_err(&errs, &e);
  assert_string_equal(e.msg, "images[0].url: missing (required) (and 59 more errors)");
  free(big);
}

static void test_document_limit(void **state) {
  (void)state;
  /* the size check comes before parsing: the bytes need not even be valid */
  bd_manifest *m = NULL;
  char *junk = malloc(BD_PROTO_MAX_DOC + 1);
  assert_non_null(junk);
  memset(junk, 'x', BD_PROTO_MAX_DOC + 1);
  assert_int_equal(bd_manifest_decode(junk, BD_PROTO_MAX_DOC + 1, &m, &errs), BD_E_LIMIT);
  assert_null(m);
  assert_non_null(strstr(errs.msg[0], "exceeds the limit of 67108864"));
  free(junk);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_optional_thresholds_and_builder),
      cmocka_unit_test(test_wrong_version),
      cmocka_unit_test(test_missing_job),
      cmocka_unit_test(test_bad_id_chars),
      cmocka_unit_test(test_id_too_long),
      cmocka_unit_test(test_empty_images),
      cmocka_unit_test(test_duplicate_id),
      cmocka_unit_test(test_unsupported_scheme),
      cmocka_unit_test(test_non_numeric_threshold),
      cmocka_unit_test(test_threshold_out_of_range),
      cmocka_unit_test(test_oversize_images),
      cmocka_unit_test(test_invalid_json),
      cmocka_unit_test(test_truncated_json),
      cmocka_unit_test(test_bad_max_det),
      cmocka_unit_test(test_bad_shard),
      cmocka_unit_test(test_missing_url),
      cmocka_unit_test(test_s3_without_key),
      cmocka_unit_test(test_url_too_long),
      cmocka_unit_test(test_collects_all_errors),
      cmocka_unit_test(test_document_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
