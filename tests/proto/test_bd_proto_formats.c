/* Detection result, throughput report and job status: round trips against
 * hand-written JSON and Redis field lists, and their main rejection rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_jobstat.h"
#include "bd_report.h"
#include "bd_result.h"

static bd_proto_errors errs;

static int has_error(const char *want) {
  for (int i = 0; i < errs.count; i++)
    if (strstr(errs.msg[i], want)) return 1;
  for (int i = 0; i < errs.count; i++) print_message("  error: %s\n", errs.msg[i]);
  return 0;
}

/* ---- result ---- */

static void test_result_round_trip(void **state) {
  (void)state;
  const char *in = "{\"image\":\"img-000123\",\"width\":640,\"height\":480,\"model\":\"yolox_nano\","
                   "\"etag\":\"\\\"abc\\\"\",\"last_modified\":\"Wed, 21 Oct 2015 07:28:00 GMT\","
                   "\"model_hash\":\"5f1e\",\"detections\":[{\"class\":16,\"label\":\"dog\","
                   "\"score\":0.93,\"box\":[1.5,2,300.25,400]},{\"class\":0,\"score\":1,"
                   "\"box\":[0,0,0,0]}],\"future\":1}";
  bd_result *r = NULL;
  assert_int_equal(bd_result_decode(in, strlen(in), &r, &errs), BD_OK);
  assert_string_equal(r->image, "img-000123");
  assert_int_equal(r->width, 640);
  assert_int_equal(r->height, 480);
  assert_string_equal(r->model, "yolox_nano");
  assert_string_equal(r->etag, "\"abc\"");
  assert_string_equal(r->last_modified, "Wed, 21 Oct 2015 07:28:00 GMT");
  assert_string_equal(r->model_hash, "5f1e");
  assert_int_equal(r->n_dets, 2);
  assert_int_equal(r->dets[0].cls, 16);
  assert_string_equal(r->dets[0].label, "dog");
  assert_true(r->dets[0].score == 0.93);
  assert_true(r->dets[0].box[0] == 1.5 && r->dets[0].box[1] == 2 && r->dets[0].box[2] == 300.25 &&
              r->dets[0].box[3] == 400);
  assert_string_equal(r->dets[1].label, "");
  char *out = NULL;
  bd_err err;
  assert_int_equal(bd_result_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out, "{\"image\":\"img-000123\",\"width\":640,\"height\":480,\"model\":\"yolox_nano\","
                           "\"etag\":\"\\\"abc\\\"\",\"last_modified\":\"Wed, 21 Oct 2015 07:28:00 GMT\","
                           "\"model_hash\":\"5f1e\",\"detections\":[{\"class\":16,\"label\":\"dog\","
                           "\"score\":0.93,\"box\":[1.5,2,300.25,400]},{\"class\":0,\"score\":1,"
                           "\"box\":[0,0,0,0]}]}");
  free(out);
  bd_result_destroy(r);

  /* the error form, built in memory */
  r = bd_result_new();
  strcpy(r->image, "photos/dog 1.jpg");
  strcpy(r->error, "fetch: HTTP 404");
  assert_int_equal(bd_result_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out, "{\"image\":\"photos/dog 1.jpg\",\"error\":\"fetch: HTTP 404\"}");
  bd_result *r2 = NULL;
  assert_int_equal(bd_result_decode(out, strlen(out), &r2, &errs), BD_OK);
  assert_string_equal(r2->error, "fetch: HTTP 404");
  assert_int_equal(r2->n_dets, 0);
  free(out);
  bd_result_destroy(r);
  bd_result_destroy(r2);

  /* text from outside that is not UTF-8 (a server's error body): U+FFFD per bad byte, the
   * document still JSON (it reads back), well-formed sequences kept */
  r = bd_result_new();
  strcpy(r->image, "caf\xc3\xa9.jpg");
  strcpy(r->error, "fetch: HTTP 500: \xff\xfe\xc3 body");
  assert_int_equal(bd_result_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out,
                      "{\"image\":\"caf\xc3\xa9.jpg\",\"error\":\"fetch: HTTP 500: "
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd body\"}");
  assert_int_equal(bd_result_decode(out, strlen(out), &r2, &errs), BD_OK);
  assert_string_equal(r2->image, "caf\xc3\xa9.jpg");
  free(out);
  bd_result_destroy(r);
  bd_result_destroy(r2);

  /* the builder */
  r = bd_result_new();
  strcpy(r->image, "a.jpg");
  r->width = 10;
  r->height = 20;
  const double box[4] = {1, 2, 3, 4};
  assert_int_equal(bd_result_add(r, 2, "car", 0.5, box, &err), BD_OK);
  assert_int_equal(bd_result_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out, "{\"image\":\"a.jpg\",\"width\":10,\"height\":20,\"detections\":"
                           "[{\"class\":2,\"label\":\"car\",\"score\":0.5,\"box\":[1,2,3,4]}]}");
  free(out);
  bd_result_destroy(r);
  bd_result_destroy(NULL);
}

static void test_result_rejects(void **state) {
  (void)state;
  struct {
    const char *json, *want;
  } cases[] = {
      {"{\"width\":1,\"height\":1,\"detections\":[]}", "image: missing"},
      {"{\"image\":\"a\",\"width\":0,\"height\":1,\"detections\":[]}", "width: must be an integer in 1..65535"},
      {"{\"image\":\"a\",\"width\":1,\"height\":1}", "detections: missing"},
      {"{\"image\":\"a\",\"width\":1,\"height\":1,\"detections\":[{\"class\":1,\"score\":2,\"box\":[0,0,1,1]}]}",
       "detections[0].score: must be a number in 0..1"},
      {"{\"image\":\"a\",\"width\":1,\"height\":1,\"detections\":[{\"class\":1,\"score\":0.5,\"box\":[0,0,1]}]}",
       "detections[0].box: must be an array of 4 numbers"},
      {"{\"image\":\"a\",\"width\":1,\"height\":1,\"detections\":[{\"class\":1,\"score\":0.5,\"box\":[5,0,1,1]}]}",
       "detections[0].box: must be [x1,y1,x2,y2] with x1 <= x2"},
      {"{\"image\":\"a\",\"width\":1,\"height\":1,\"detections\":[{\"class\":-1,\"score\":0.5,\"box\":[0,0,1,1]}]}",
       "detections[0].class: must be an integer"},
      {"{\"image\":\"a\",\"error\":\"x\",\"detections\":[]}", "detections: must not appear with \"error\""},
      {"{\"image\":\"a\",\"error\":\"\"}", "error: must be 1.."},
      {"{\"v\":2,\"image\":\"a\",\"error\":\"x\"}", "v: unsupported version 2 (this build reads 1)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bd_result *r = NULL;
    if (bd_result_decode(cases[i].json, strlen(cases[i].json), &r, &errs) == BD_OK)
      fail_msg("accepted: %s", cases[i].json);
    assert_null(r);
    if (!has_error(cases[i].want)) fail_msg("case %zu: no error contains \"%s\"", i, cases[i].want);
  }
}

/* ---- report ---- */

static void test_report_round_trip(void **state) {
  (void)state;
  const char *in = "{\"v\":1,\"worker\":\"gpu-node-7:1234\",\"host\":\"gpu-node-7\",\"ts\":1764124800.5,"
                   "\"devices\":[{\"name\":\"cuda:0\",\"images\":51234,\"failed\":3,\"img_s\":2310.5},"
                   "{\"name\":\"cuda:1\",\"images\":0,\"failed\":0,\"img_s\":0}],"
                   "\"shards_done\":[{\"job\":\"archive-2026-11\",\"shard\":17,\"images\":256,\"failed\":1}],"
                   "\"queues\":{\"fetch\":12,\"decode\":3}}";
  bd_report *r = NULL;
  assert_int_equal(bd_report_decode(in, strlen(in), &r, &errs), BD_OK);
  assert_string_equal(r->worker, "gpu-node-7:1234");
  assert_string_equal(r->host, "gpu-node-7");
  assert_true(r->ts == 1764124800.5);
  assert_int_equal(r->n_devices, 2);
  assert_string_equal(r->devices[0].name, "cuda:0");
  assert_int_equal(r->devices[0].images, 51234);
  assert_int_equal(r->devices[0].failed, 3);
  assert_true(r->devices[0].img_s == 2310.5);
  assert_int_equal(r->n_shards, 1);
  assert_string_equal(r->shards[0].job, "archive-2026-11");
  assert_int_equal(r->shards[0].shard, 17);
  assert_int_equal(r->shards[0].images, 256);
  assert_int_equal(r->shards[0].failed, 1);
  assert_int_equal(r->n_queues, 2);
  assert_string_equal(r->queues[0].name, "fetch");
  assert_int_equal(r->queues[0].depth, 12);
  assert_string_equal(r->queues[1].name, "decode");
  char *out = NULL;
  bd_err err;
  assert_int_equal(bd_report_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out, in);
  free(out);
  bd_report_destroy(r);

  /* builder, minimal form: no host, no shards, no queues */
  r = bd_report_new();
  strcpy(r->worker, "w1");
  r->ts = 10;
  assert_int_equal(bd_report_add_device(r, "cpu", 5, 1, 0.25, &err), BD_OK);
  assert_int_equal(bd_report_encode(r, &out, NULL, &err), BD_OK);
  assert_string_equal(out, "{\"v\":1,\"worker\":\"w1\",\"ts\":10,\"devices\":[{\"name\":\"cpu\","
                           "\"images\":5,\"failed\":1,\"img_s\":0.25}],\"shards_done\":[]}");
  free(out);
  assert_int_equal(bd_report_add_queue(r, "q", 1, &err), BD_OK);
  assert_int_equal(bd_report_add_queue(r, "q", 2, &err), BD_OK);
  assert_int_equal(bd_report_encode(r, &out, NULL, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "duplicate queue \"q\""));
  bd_report_destroy(r);
  bd_report_destroy(NULL);
}

static void test_report_rejects(void **state) {
  (void)state;
  struct {
    const char *json, *want;
  } cases[] = {
      {"{\"v\":2,\"worker\":\"w\",\"ts\":1,\"devices\":[]}", "v: unsupported version 2"},
      {"{\"v\":1,\"ts\":1,\"devices\":[]}", "worker: missing"},
      {"{\"v\":1,\"worker\":\"w\",\"ts\":-1,\"devices\":[]}", "ts: must be a number"},
      {"{\"v\":1,\"worker\":\"w\",\"ts\":1}", "devices: missing"},
      {"{\"v\":1,\"worker\":\"w\",\"ts\":1,\"devices\":[{\"name\":\"c\",\"images\":-5,\"failed\":0,\"img_s\":1}]}",
       "devices[0].images: must be an integer"},
      {"{\"v\":1,\"worker\":\"w\",\"ts\":1,\"devices\":[],\"shards_done\":[{\"job\":\"j\",\"shard\":1,\"images\":2,\"failed\":3}]}",
       "shards_done[0].failed: must be an integer in 0..images (2)"},
      {"{\"v\":1,\"worker\":\"w\",\"ts\":1,\"devices\":[],\"queues\":{\"q\":\"x\"}}", "queues.q: must be an integer"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    bd_report *r = NULL;
    if (bd_report_decode(cases[i].json, strlen(cases[i].json), &r, &errs) == BD_OK)
      fail_msg("accepted: %s", cases[i].json);
    assert_null(r);
    if (!has_error(cases[i].want)) fail_msg("case %zu: no error contains \"%s\"", i, cases[i].want);
  }
}

/* ---- job status ---- */

static void test_jobstat_json_and_kv(void **state) {
  (void)state;
  const char *in = "{\"v\":1,\"job\":\"archive-2026-11\",\"state\":\"running\",\"model\":\"yolox_nano\","
                   "\"total\":1000,\"done\":250,\"failed\":3,\"shards\":4,\"created\":1764124800,"
                   "\"updated\":1764124860.25,\"rate\":412.5}";
  bd_jobstat js;
  assert_int_equal(bd_jobstat_decode(in, strlen(in), &js, &errs), BD_OK);
  assert_string_equal(js.job, "archive-2026-11");
  assert_int_equal(js.state, BD_JOB_RUNNING);
  assert_string_equal(js.model, "yolox_nano");
  assert_int_equal(js.total, 1000);
  assert_int_equal(js.done, 250);
  assert_int_equal(js.failed, 3);
  assert_int_equal(js.shards, 4);
  assert_true(js.created == 1764124800.0 && js.updated == 1764124860.25 && js.rate == 412.5);
  char *out = NULL;
  bd_err err;
  assert_int_equal(bd_jobstat_encode(&js, &out, NULL, &err), BD_OK);
  assert_string_equal(out, in);
  free(out);

  bd_jobstat_kv kv;
  assert_int_equal(bd_jobstat_to_kv(&js, &kv, &err), BD_OK);
  static const char *const want[][2] = {{"state", "running"}, {"model", "yolox_nano"},
                                        {"total", "1000"},    {"done", "250"},
                                        {"failed", "3"},      {"shards", "4"},
                                        {"created", "1764124800"}, {"updated", "1764124860.25"},
                                        {"rate", "412.5"}};
  assert_int_equal(kv.n, 9);
  const char *flat[18];
  for (size_t i = 0; i < kv.n; i++) {
    assert_string_equal(kv.keys[i], want[i][0]);
    assert_string_equal(kv.vals[i], want[i][1]);
    flat[2 * i] = kv.keys[i];
    flat[2 * i + 1] = kv.vals[i];
  }
  bd_jobstat back;
  assert_int_equal(bd_jobstat_from_kv("archive-2026-11", flat, 18, &back, &errs), BD_OK);
  assert_memory_equal(&back, &js, sizeof js);

  /* HGETALL order is arbitrary, counters may be absent, unknown fields ignored */
  const char *partial[] = {"total", "10", "zzz", "?", "model", "m", "state", "complete", "done", "10"};
  assert_int_equal(bd_jobstat_from_kv("j", partial, 10, &back, &errs), BD_OK);
  assert_int_equal(back.state, BD_JOB_COMPLETE);
  assert_int_equal(back.total, 10);
  assert_int_equal(back.done, 10);
  assert_int_equal(back.failed, 0);
  assert_true(back.rate == 0);
}

static void test_jobstat_rejects(void **state) {
  (void)state;
  bd_jobstat js;
  const char *bad_state[] = {"state", "paused", "model", "m", "total", "1"};
  assert_int_equal(bd_jobstat_from_kv("j", bad_state, 6, &js, &errs), BD_E_INVALID);
  assert_true(has_error("state: must be one of queued, running, complete, failed, cancelled"));
  const char *bad_num[] = {"state", "queued", "model", "m", "total", "1x", "rate", "nan"};
  assert_int_equal(bd_jobstat_from_kv("j", bad_num, 8, &js, &errs), BD_E_INVALID);
  assert_true(has_error("total: must be an integer in 0..9007199254740991 (got \"1x\")"));
  assert_true(has_error("rate: must be a number in 0..1e+09 (got \"nan\")"));
  const char *missing[] = {"state", "queued"};
  assert_int_equal(bd_jobstat_from_kv("j", missing, 2, &js, &errs), BD_E_INVALID);
  assert_true(has_error("model: missing (required)"));
  assert_true(has_error("total: missing (required)"));
  const char *over[] = {"state", "running", "model", "m", "total", "5", "done", "4", "failed", "2"};
  assert_int_equal(bd_jobstat_from_kv("j", over, 10, &js, &errs), BD_E_INVALID);
  assert_true(has_error("done: done + failed (6) exceeds total (5)"));
  assert_int_equal(bd_jobstat_from_kv("bad id", over, 3, &js, &errs), BD_E_INVALID);
  assert_true(has_error("hash: odd number of strings (3)"));
  const char *t = "{\"job\":\"j\",\"state\":\"done\",\"model\":\"m\",\"total\":1}";
  assert_int_equal(bd_jobstat_decode(t, strlen(t), &js, &errs), BD_E_INVALID);
  assert_true(has_error("state: must be one of"));
  t = "{\"job\":\"j\",\"state\":\"queued\",\"model\":\"m\",\"total\":1,\"done\":2}";
  assert_int_equal(bd_jobstat_decode(t, strlen(t), &js, &errs), BD_E_INVALID);
  assert_true(has_error("done: done + failed (2) exceeds total (1)"));
  memset(&js, 0, sizeof js);
  strcpy(js.job, "j");
  strcpy(js.model, "m");
  js.state = (bd_job_state)7;
  bd_jobstat_kv kv;
  bd_err err;
  assert_int_equal(bd_jobstat_to_kv(&js, &kv, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "state:"));
  assert_string_equal(bd_jobstat_state_name(BD_JOB_CANCELLED), "cancelled");
  assert_int_equal(bd_jobstat_state_parse("failed"), BD_JOB_FAILED);
  assert_int_equal(bd_jobstat_state_parse(NULL), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_result_round_trip),  cmocka_unit_test(test_result_rejects),
      cmocka_unit_test(test_report_round_trip),  cmocka_unit_test(test_report_rejects),
      cmocka_unit_test(test_jobstat_json_and_kv), cmocka_unit_test(test_jobstat_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
