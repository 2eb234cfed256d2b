/* Unit tests of the scheduler's pure helpers: id derivation, extension filter, list
 * files and directory walks, incremental decisions, the COCO category mapping, status
 * formatting, smoothing. */
#define _GNU_SOURCE /* mkdtemp, asprintf */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bd_coord.h"
#include "bd_export.h"
#include "bd_proto.h"
#include "bd_ssrc.h"
#include "bd_submit.h"
#include "bd_view.h"

static void test_sanitize(void **s) {
  (void)s;
  char out[BD_ID_MAX + 1];
  bd_ssrc_sanitize("photos/2019/a b+c.jpg", out, sizeof out);
  assert_string_equal(out, "photos_2019_a_b_c.jpg");
  bd_ssrc_sanitize("/abs/x.png", out, sizeof out);
  assert_string_equal(out, "abs_x.png");
  bd_ssrc_sanitize("", out, sizeof out);
  assert_string_equal(out, "img");
  char longname[400];
  memset(longname, 'a', 300);
  strcpy(longname + 300, "/tail.jpg");
  bd_ssrc_sanitize(longname, out, sizeof out);
  assert_int_equal(strlen(out), BD_ID_MAX);
  assert_true(bd_proto_id_valid(out));
  assert_string_equal(out + strlen(out) - 9, "_tail.jpg");
  /* two long names with the same tail differ through the hash */
  char other[BD_ID_MAX + 1];
  longname[0] = 'b';
  bd_ssrc_sanitize(longname, other, sizeof other);
  assert_string_not_equal(out, other);
}

static void test_url_base_and_ext(void **s) {
  (void)s;
  char b[256];
  assert_string_equal(bd_ssrc_url_base("https://cdn.example.org/x/y.jpg?sig=1#f", b, sizeof b),
                      "x/y.jpg");
  assert_string_equal(bd_ssrc_url_base("s3://bucket/k/z.png", b, sizeof b), "k/z.png");
  assert_string_equal(bd_ssrc_url_base("file:///data/img/1.jpg", b, sizeof b), "/data/img/1.jpg");
  assert_true(bd_ssrc_ext_match("a/b/C.JPG", "jpg,jpeg,png"));
  assert_true(bd_ssrc_ext_match("x.jpeg", "jpg,jpeg,png"));
  assert_false(bd_ssrc_ext_match("x.jpgx", "jpg,jpeg,png"));
  assert_false(bd_ssrc_ext_match("dir.jpg/readme", "jpg"));
  assert_false(bd_ssrc_ext_match("noext", "jpg"));
}

static void test_unique_ids(void **s) {
  (void)s;
  bd_ssrc *src = bd_ssrc_new();
  bd_err err = {0};
  assert_int_equal(bd_ssrc_add(src, NULL, "https://h/a/x.jpg", NULL, NULL, NULL, &err), BD_OK);
  assert_int_equal(bd_ssrc_add(src, NULL, "https://h2/a/x.jpg", NULL, NULL, NULL, &err), BD_OK);
  assert_int_equal(bd_ssrc_add(src, "a_x.jpg-2", "https://h3/q.jpg", NULL, NULL, NULL, &err),
                   BD_OK);
  assert_int_equal(bd_ssrc_add(src, NULL, "https://h4/a x.jpg", NULL, NULL, NULL, &err), BD_OK);
  assert_int_equal(bd_ssrc_finish(src, &err), BD_OK);
  assert_string_equal(src->items[0].id, "a_x.jpg");
  /* "-2" is taken by the explicit id, so the second derived one gets "-3" */
  assert_string_equal(src->items[1].id, "a_x.jpg-3");
  assert_string_equal(src->items[2].id, "a_x.jpg-2");
  assert_string_equal(src->items[3].id, "a_x.jpg-4");
  bd_ssrc_destroy(src);
  src = bd_ssrc_new();
  bd_ssrc_add(src, "same", "https://h/1.jpg", NULL, NULL, NULL, &err);
  bd_ssrc_add(src, "same", "https://h/2.jpg", NULL, NULL, NULL, &err);
  assert_int_equal(bd_ssrc_finish(src, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "twice"));
  bd_ssrc_destroy(src);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* A list file that starts with a UTF-8 BOM (Windows editors write one) reads like one
 * without; a list without images is an error, not a job of nothing. */
static void test_list_bom_and_empty(void **s) {
  (void)s;
  char dir[] = "/tmp/bdtest-listXXXXXX", path[256];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/l.txt", dir);
  bd_err err = {0};
  write_file(path, "\xef\xbb\xbfid1,http://h/a.jpg\nid2,http://h/b.jpg\n");
  bd_ssrc *src = bd_ssrc_new();
  assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_OK);
  assert_int_equal(src->n, 2);
  assert_string_equal(src->items[0].id, "id1");
  bd_ssrc_destroy(src);
  /* a BOM before a bare URL, and before the header line */
  write_file(path, "\xef\xbb\xbfhttp://h/p/a.jpg\n");
  src = bd_ssrc_new();
  assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_OK);
  assert_int_equal(bd_ssrc_finish(src, &err), BD_OK);
  assert_string_equal(src->items[0].url, "http://h/p/a.jpg");
  assert_string_equal(src->items[0].id, "p_a.jpg");
  bd_ssrc_destroy(src);
  write_file(path, "\xef\xbb\xbfid,url\nx,http://h/x.jpg\n");
  src = bd_ssrc_new();
  assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_OK);
  assert_int_equal(src->n, 1);
  bd_ssrc_destroy(src);
  /* only the first line's BOM is one */
  write_file(path, "id1,http://h/a.jpg\n\xef\xbb\xbfid2,http://h/b.jpg\n");
  src = bd_ssrc_new();
  assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_E_INVALID);
  bd_ssrc_destroy(src);
  static const char *empty[] = {"", "\xef\xbb\xbf", "# only a comment\n\n", "id,url\n"};
  for (size_t i = 0; i < sizeof empty / sizeof *empty; i++) {
    write_file(path, empty[i]);
    src = bd_ssrc_new();
    assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_E_INVALID);
    char want[300];
    snprintf(want, sizeof want, "no images in %s", path);
    assert_string_equal(err.msg, want);
    bd_ssrc_destroy(src);
  }
  unlink(path);
  rmdir(dir);
}

/* --dir: every name becomes a file:// URL with all but unreserved bytes and '/'
 * percent-encoded; hidden names and dangling links are counted, not silently lost. */
static void test_dir_names(void **s) {
  (void)s;
  char dir[] = "/tmp/bdtest-dirXXXXXX", path[512];
  assert_non_null(mkdtemp(dir));
  static const char *files[] = {"#hash.jpg",   "%41.jpg",     "q?x.jpg",      "a b.jpg",
                                "sub/a b.jpg", "nl\n.jpg",    "\xc3\xa9.jpg", "A~z-_.jpg",
                                ".hid.jpg",    ".hdir/x.jpg", "c.txt"};
  const size_t nf = sizeof files / sizeof *files;
  snprintf(path, sizeof path, "%s/sub", dir);
  assert_int_equal(mkdir(path, 0777), 0);
  snprintf(path, sizeof path, "%s/.hdir", dir);
  assert_int_equal(mkdir(path, 0777), 0);
  for (size_t i = 0; i < nf; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    write_file(path, "x");
  }
  snprintf(path, sizeof path, "%s/dangling.jpg", dir);
  assert_int_equal(symlink("/nonexistent/bdtest.jpg", path), 0);
  bd_ssrc *src = bd_ssrc_new();
  bd_err err = {0};
  assert_int_equal(bd_ssrc_from_dir(src, dir, "jpg,png", &err), BD_OK);
  assert_int_equal(bd_ssrc_finish(src, &err), BD_OK);
  /* scandir + alphasort in the C locale: byte order */
  static const char *want[][2] = {{"%23hash.jpg", "_hash.jpg"},     {"%2541.jpg", "_41.jpg"},
                                  {"A~z-_.jpg", "A_z-_.jpg"},       {"a%20b.jpg", "a_b.jpg"},
                                  {"nl%0A.jpg", "nl_.jpg"},         {"q%3Fx.jpg", "q_x.jpg"},
                                  {"sub/a%20b.jpg", "sub_a_b.jpg"}, {"%C3%A9.jpg", "__.jpg"}};
  const size_t nw = sizeof want / sizeof *want;
  assert_int_equal(src->n, nw);
  for (size_t i = 0; i < nw && i < src->n; i++) {
    char u[600];
    snprintf(u, sizeof u, "file://%s/%s", dir, want[i][0]);
    assert_string_equal(src->items[i].url, u);
    assert_string_equal(src->items[i].id, want[i][1]);
    assert_true(bd_proto_id_valid(src->items[i].id));
  }
  assert_int_equal(src->skipped_ext, 1);        /* c.txt */
  assert_int_equal(src->skipped_hidden, 2);     /* .hid.jpg, .hdir */
  assert_int_equal(src->skipped_unreadable, 1); /* dangling.jpg */
  assert_int_equal(src->skipped_badkey, 0);     /* S3 only: no double count */
  bd_ssrc_destroy(src);
  /* an absolute path in a list is a path too */
  snprintf(path, sizeof path, "%s/l.txt", dir);
  char *line = NULL;
  assert_true(asprintf(&line, "%s/q?x.jpg\n%s/sub/a b.jpg\n", dir, dir) > 0);
  write_file(path, line);
  free(line);
  src = bd_ssrc_new();
  assert_int_equal(bd_ssrc_from_list(src, path, &err), BD_OK);
  assert_int_equal(bd_ssrc_finish(src, &err), BD_OK);
  assert_int_equal(src->n, 2);
  char u[600];
  snprintf(u, sizeof u, "file://%s/q%%3Fx.jpg", dir);
  assert_string_equal(src->items[0].url, u);
  snprintf(u, sizeof u, "file://%s/sub/a%%20b.jpg", dir);
  assert_string_equal(src->items[1].url, u);
  assert_string_equal(src->items[1].id + strlen(src->items[1].id) - 11, "sub_a_b.jpg");
  bd_ssrc_destroy(src);
  unlink(path);
  snprintf(path, sizeof path, "%s/dangling.jpg", dir);
  unlink(path);
  for (size_t i = nf; i-- > 0;) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  snprintf(path, sizeof path, "%s/sub", dir);
  rmdir(path);
  snprintf(path, sizeof path, "%s/.hdir", dir);
  rmdir(path);
  rmdir(dir);
}

static void test_inc_decide(void **s) {
  (void)s;
  const char *ok =
      "{\"image\":\"a\",\"width\":4,\"height\":4,\"model\":\"m1\",\"etag\":\"E1\","
      "\"last_modified\":\"L1\",\"model_hash\":\"H1\",\"detections\":[]}";
  const char *bare = "{\"image\":\"a\",\"width\":4,\"height\":4,\"detections\":[]}";
  const char *bad = "{\"image\":\"a\",\"error\":\"fetch: HTTP 404\"}";
  assert_int_equal(bd_inc_decide(NULL, 0, "m1", "m1", NULL, "E1", NULL), BD_INC_NEW);
  assert_int_equal(bd_inc_decide(bad, strlen(bad), "m1", "m1", NULL, NULL, NULL),
                   BD_INC_PREV_ERROR);
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m1", "m1", "H1", "E1", "L1"), BD_INC_UNCHANGED);
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m2", "m1", NULL, "E1", "L1"),
                   BD_INC_MODEL_CHANGED);
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m1", "m1", "H2", "E1", "L1"),
                   BD_INC_MODEL_CHANGED);
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m1", "m1", NULL, "E2", "L1"),
                   BD_INC_SOURCE_CHANGED);
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m1", "m1", NULL, "E1", "L2"),
                   BD_INC_SOURCE_CHANGED);
  /* quoting of ETags and the two Last-Modified forms do not matter */
  const char *q =
      "{\"image\":\"a\",\"width\":4,\"height\":4,\"etag\":\"\\\"E1\\\"\","
      "\"last_modified\":\"Thu, 26 Nov 2026 03:50:07 GMT\",\"detections\":[]}";
  assert_int_equal(bd_inc_decide(q, strlen(q), "m1", "m1", NULL, "E1", "2026-11-26T03:50:07.000Z"),
                   BD_INC_UNCHANGED);
  assert_int_equal(bd_inc_decide(q, strlen(q), "m1", "m1", NULL, "E1", "2026-11-26T03:50:08.000Z"),
                   BD_INC_SOURCE_CHANGED);
  /* only what both sides know is compared */
  assert_int_equal(bd_inc_decide(ok, strlen(ok), "m1", "m1", NULL, NULL, NULL), BD_INC_UNCHANGED);
  assert_int_equal(bd_inc_decide(bare, strlen(bare), "m1", "m1", "H9", "E9", "L9"),
                   BD_INC_UNCHANGED);
  /* without a model in the result the previous job's model decides */
  assert_int_equal(bd_inc_decide(bare, strlen(bare), "m2", "m1", NULL, NULL, NULL),
                   BD_INC_MODEL_CHANGED);
}

static void test_coco_mapping(void **s) {
  (void)s;
  /* Reference: the COCO 2017 category ids, 80 used of 1..90. */
  static const int ref[80] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 13, 14, 15, 16, 17,
                              18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36,
                              37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
                              54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73,
                              74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90};
  for (int i = 0; i < 80; i++) assert_int_equal(bd_export_coco_category(i), ref[i]);
  assert_string_equal(bd_export_coco_name(0), "person");
  assert_string_equal(bd_export_coco_name(16), "dog");
  assert_string_equal(bd_export_coco_name(79), "toothbrush");
  assert_int_equal(bd_export_coco_category(80), 1080);
  assert_int_equal(bd_export_format_parse("yolo"), BD_EXPORT_YOLO);
  assert_int_equal(bd_export_format_parse("xml"), -1);
}

static void test_formatting(void **s) {
  (void)s;
  char b[64];
  bd_view_fmt_count(99999, b, sizeof b);
  assert_string_equal(b, "99999");
  bd_view_fmt_count(123456, b, sizeof b);
  assert_string_equal(b, "123.5k");
  bd_view_fmt_count(9999999, b, sizeof b);
  assert_true(strlen(b) <= 6);
  bd_view_fmt_count(12345678, b, sizeof b);
  assert_string_equal(b, "12.3M");
  bd_view_fmt_duration(45, b, sizeof b);
  assert_string_equal(b, "45s");
  bd_view_fmt_duration(725, b, sizeof b);
  assert_string_equal(b, "12m05s");
  bd_view_fmt_duration(3 * 3600 + 7 * 60, b, sizeof b);
  assert_string_equal(b, "3h07m");
  bd_view_fmt_duration(-1, b, sizeof b);
  assert_string_equal(b, "-");
  bd_view_fmt_bar(0.5, 10, b, sizeof b);
  assert_string_equal(b, "[#####.....]");
  bd_view_fmt_bar(1.5, 4, b, sizeof b);
  assert_string_equal(b, "[####]");
}

static void test_smooth(void **s) {
  (void)s;
  /* during the first tau seconds the average since first sight is used */
  assert_true(bd_coord_smooth(0, 500, 1, 20, 5, 100) == 100);
  /* afterwards an EWMA: a constant input is a fixed point, a step converges */
  double r = 100;
  for (int i = 0; i < 5; i++) r = bd_coord_smooth(r, 100, 1, 20, 30 + i, 0);
  assert_true(r > 99.999 && r < 100.001);
  for (int i = 0; i < 200; i++) r = bd_coord_smooth(r, 200, 1, 20, 40 + i, 0);
  assert_true(r > 199 && r <= 200);
  /* one step of dt = tau moves 1 - 1/e of the way */
  r = bd_coord_smooth(0, 100, 20, 20, 100, 0);
  assert_true(r > 63.1 && r < 63.3);
}

static void test_eta(void **s) {
  (void)s;
  assert_true(bd_coord_eta(100, 10, 0, 0) == 10);
  assert_true(bd_coord_eta(100, 10, 9, 0) == 10);   /* quiet for less than 10 s */
  assert_true(bd_coord_eta(100, 10, 11, 0) == -1);  /* then unknown */
  assert_true(bd_coord_eta(100, 10, 50, 20) == 10); /* slow steps: 3 gaps of quiet allowed */
  assert_true(bd_coord_eta(100, 10, 61, 20) == -1);
  assert_true(bd_coord_eta(100, 0, 0, 1) == -1);
  assert_true(bd_coord_eta(-1, 10, 0, 1) == -1); /* no total */
  /* A job in steps of 200 images every 2 s (100 img/s), ticks of 1 s, then its last shard
   * stalls with 1000 images left: the rate decays slowly, so left / rate would still say
   * about 20 s after 15 s of nothing; the rule says unknown once the quiet passes 10 s. */
  double rate = 0, last_count = 0, last_prog = 0, gap = 0, eta = 0;
  for (int t = 1; t <= 60; t++) {
    double count = t <= 45 ? 200.0 * (t / 2) : 200.0 * 22;
    rate = bd_coord_smooth(rate, count - last_count, 1, 20, t, count / t);
    if (count != last_count) {
      gap = gap > 0 ? gap + 0.3 * ((t - last_prog) - gap) : t - last_prog;
      last_prog = t;
    }
    last_count = count;
    eta = bd_coord_eta(5400 - count, rate, t - last_prog, gap);
    if (t == 40) assert_true(eta > 0 && eta < 20); /* running: 1400 left at ~100 img/s */
    if (t == 52) assert_true(eta > 0);             /* 8 s quiet: still counting */
    if (t == 60) {
      assert_true(eta == -1);
      assert_true((5400 - count) / rate < 40); /* what the bare rate would have claimed */
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sanitize),
      cmocka_unit_test(test_url_base_and_ext),
      cmocka_unit_test(test_unique_ids),
      cmocka_unit_test(test_inc_decide),
      cmocka_unit_test(test_coco_mapping),
      cmocka_unit_test(test_formatting),
      cmocka_unit_test(test_smooth),
      cmocka_unit_test(test_eta),
      cmocka_unit_test(test_list_bom_and_empty),
      cmocka_unit_test(test_dir_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
