/* bd_labels: built-in COCO names against shared/data/coco.names (an independent,
 * hand-written list), the 80 -> 91 category mapping at known points, and file loading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bd_labels.h"

static void test_builtin_matches_file(void **s) {
  (void)s;
  const char *data = getenv("BD_TEST_DATA");
  if (!data) skip();
  char path[1024];
  snprintf(path, sizeof path, "%s/coco.names", data);
  bd_labels *f = NULL, *b = NULL;
  bd_err e;
  assert_int_equal(bd_labels_load(path, &f, &e), BD_OK);
  assert_int_equal(bd_labels_coco(&b, &e), BD_OK);
  assert_int_equal(bd_labels_count(f), 80);
  for (int i = 0; i < 80; i++) assert_string_equal(bd_labels_name(f, i), bd_labels_name(b, i));
  assert_string_equal(bd_labels_name(b, 16), "dog");
  assert_null(bd_labels_name(b, 80));
  assert_null(bd_labels_name(b, -1));
  bd_labels_destroy(f);
  bd_labels_destroy(b);
  bd_labels_destroy(NULL);
}

static void test_coco91(void **s) {
  (void)s;
  /* COCO ids: person 1, dog 18, toothbrush 90, "dining table" 67, "tv" 72. */
  assert_int_equal(bd_coco80_category_id(0), 1);
  assert_int_equal(bd_coco80_category_id(16), 18);
  assert_int_equal(bd_coco80_category_id(60), 67);
  assert_int_equal(bd_coco80_category_id(62), 72);
  assert_int_equal(bd_coco80_category_id(79), 90);
  assert_int_equal(bd_coco80_category_id(80), -1);
}

static void test_file_errors(void **s) {
  (void)s;
  char path[] = "/tmp/bd_labels_testXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("cat\r\n\ndog\n", f);
  fclose(f);
  bd_labels *l = NULL;
  bd_err e;
  assert_int_equal(bd_labels_load(path, &l, &e), BD_E_INVALID); /* blank line inside */
  f = fopen(path, "w");
  fputs("cat\r\ndog  \n\n", f);
  fclose(f);
  assert_int_equal(bd_labels_load(path, &l, &e), BD_OK);
  assert_int_equal(bd_labels_count(l), 2);
  assert_string_equal(bd_labels_name(l, 0), "cat");
  assert_string_equal(bd_labels_name(l, 1), "dog");
  bd_labels_destroy(l);
  /* names go into JSON: a line that is not UTF-8 is refused with its number */
  f = fopen(path, "w");
  fputs("cat\nd\xffog\n", f);
  fclose(f);
  assert_int_equal(bd_labels_load(path, &l, &e), BD_E_INVALID);
  assert_non_null(strstr(e.msg, "line 2 is not UTF-8"));
  f = fopen(path, "w");
  fputs("caf\xc3\xa9\n\xe7\x8a\xac\n", f); /* well-formed: kept */
  fclose(f);
  assert_int_equal(bd_labels_load(path, &l, &e), BD_OK);
  assert_string_equal(bd_labels_name(l, 1), "\xe7\x8a\xac");
  bd_labels_destroy(l);
  remove(path);
  assert_int_equal(bd_labels_load("/nonexistent/labels", &l, &e), BD_E_NOT_FOUND);
  assert_int_equal(bd_labels_load("/tmp", &l, &e), BD_E_INVALID);
  assert_non_null(strstr(e.msg, "a directory"));
}

/* A model's own names: MODEL.names beside MODEL.onnx, else COCO's for 80 classes, else
 * none; a names file that does not load is an error, not a fallback. */
static void test_for_model(void **s) {
  (void)s;
  char dir[] = "/tmp/bd_labels_modelXXXXXX";
  assert_non_null(mkdtemp(dir));
  char model[256], names[256], got[4096];
  snprintf(model, sizeof model, "%s/custom.onnx", dir);
  snprintf(names, sizeof names, "%s/custom.names", dir);
  bd_labels *l = (bd_labels *)1;
  bd_err e;
  /* no file: COCO for 80 classes, none otherwise; the path looked for is reported */
  assert_int_equal(bd_labels_for_model(model, 80, &l, got, sizeof got, &e), BD_OK);
  assert_int_equal(bd_labels_count(l), 80);
  assert_string_equal(bd_labels_name(l, 16), "dog");
  bd_labels_destroy(l);
  assert_string_equal(got, names);
  assert_int_equal(bd_labels_for_model(model, 3, &l, got, sizeof got, &e), BD_OK);
  assert_null(l);
  /* the file wins, whatever the class count */
  FILE *f = fopen(names, "w");
  fputs("helmet\nvest\nboot\n", f);
  fclose(f);
  for (int classes = 3; classes <= 80; classes += 77) {
    assert_int_equal(bd_labels_for_model(model, classes, &l, NULL, 0, &e), BD_OK);
    assert_int_equal(bd_labels_count(l), 3);
    assert_string_equal(bd_labels_name(l, 2), "boot");
    bd_labels_destroy(l);
  }
  /* a path without .onnx gets .names appended */
  char bare[256];
  snprintf(bare, sizeof bare, "%s/custom", dir);
  assert_int_equal(bd_labels_for_model(bare, 3, &l, got, sizeof got, &e), BD_OK);
  assert_string_equal(got, names);
  assert_int_equal(bd_labels_count(l), 3);
  bd_labels_destroy(l);
  /* a broken file is the error, never COCO's names in its place */
  f = fopen(names, "w");
  fputs("helmet\n\nboot\n", f);
  fclose(f);
  assert_int_equal(bd_labels_for_model(model, 80, &l, NULL, 0, &e), BD_E_INVALID);
  assert_null(l);
  assert_non_null(strstr(e.msg, "custom.names"));
  remove(names);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_builtin_matches_file),
      cmocka_unit_test(test_coco91),
      cmocka_unit_test(test_file_errors),
      cmocka_unit_test(test_for_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
