/* bd_nms against a brute-force reference written here: full sort by (score desc, index
 * asc), then the textbook O(n^2) greedy suppression per class, then truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_nms.h"

static uint32_t rs = 12345;
static float frand(void) {
  rs = rs * 1664525u + 1013904223u;
  return (float)(rs >> 8) / (float)(1u << 24);
}

static double ref_iou(const bd_det *a, const bd_det *b) {
  double ix1 = a->x1 > b->x1 ? a->x1 : b->x1, iy1 = a->y1 > b->y1 ? a->y1 : b->y1;
  double ix2 = a->x2 < b->x2 ? a->x2 : b->x2, iy2 = a->y2 < b->y2 ? a->y2 : b->y2;
  double iw = ix2 - ix1, ih = iy2 - iy1;
  if (iw <= 0 || ih <= 0) return 0;
  double in = iw * ih;
  double u =
      (double)(a->x2 - a->x1) * (a->y2 - a->y1) + (double)(b->x2 - b->x1) * (b->y2 - b->y1) - in;
  return u > 0 ? in / u : 0;
}

static int ref_nms(const bd_det *c, int n, float thr, int max_det, int agnostic, bd_det *out) {
  int *ord = malloc(sizeof(int) * (size_t)n);
  char *sup = calloc((size_t)n, 1);
  for (int i = 0; i < n; i++) ord[i] = i;
  for (int i = 1; i < n; i++) { /* insertion sort, stable on index */
    int v = ord[i], j = i - 1;
    while (j >= 0 && c[ord[j]].score < c[v].score) {
      ord[j + 1] = ord[j];
      j--;
    }
    ord[j + 1] = v;
  }
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (sup[ord[i]]) continue;
    if (k < max_det) out[k++] = c[ord[i]];
    for (int j = i + 1; j < n; j++)
      if ((agnostic || c[ord[j]].cls == c[ord[i]].cls) && ref_iou(&c[ord[i]], &c[ord[j]]) > thr)
        sup[ord[j]] = 1;
  }
  free(ord);
  free(sup);
  return k;
}

static void random_case(int n, int ncls, float thr, int max_det, int agnostic) {
  bd_det *c = malloc(sizeof(bd_det) * (size_t)n), *c2 = malloc(sizeof(bd_det) * (size_t)n);
  bd_det *o1 = malloc(sizeof(bd_det) * (size_t)(max_det + 1)),
         *o2 = malloc(sizeof(bd_det) * (size_t)n);
  for (int i = 0; i < n; i++) {
    /* Boxes clustered in a small field so they overlap a lot; coarse scores for ties. */
    float x = frand() * 100, y = frand() * 100, w = 5 + frand() * 40, h = 5 + frand() * 40;
    c[i] = (bd_det){x, y, x + w, y + h, (float)(int)(frand() * 20) / 20.f, (int)(frand() * ncls)};
  }
  memcpy(c2, c, sizeof(bd_det) * (size_t)n);
  int n1 = -1;
  assert_int_equal(bd_nms(c2, n, thr, max_det, agnostic, o1, &n1, NULL), BD_OK);
  int n2 = ref_nms(c, n, thr, max_det, agnostic, o2);
  assert_int_equal(n1, n2);
  for (int i = 0; i < n1; i++) assert_memory_equal(&o1[i], &o2[i], sizeof(bd_det));
  free(c);
  free(c2);
  free(o1);
  free(o2);
}

static void test_random_vs_bruteforce(void **s) {
  (void)s;
  for (int t = 0; t < 60; t++) {
    int n = 1 + (int)(frand() * 400);
    random_case(n, 1 + t % 5, 0.3f + 0.4f * frand(), 1 + (int)(frand() * 120), t % 7 == 0);
  }
  /* thresholds of 1 and more (nothing suppressed; bd_nms skips the checks), class ids
   * past bd_nms's per-class chains (one chain, classes compared), a class-agnostic run
   * with them, and many classes of few boxes */
  for (int t = 0; t < 12; t++) {
    int n = 1 + (int)(frand() * 400);
    random_case(n, 1 + t % 5, t % 2 ? 1.0f : 1.25f, 1 + (int)(frand() * 400), t % 3 == 0);
    random_case(n, 200000, 0.3f + 0.4f * frand(), 1 + (int)(frand() * 120), 0);
    random_case(n, 200000, 0.5f, n, 1);
    random_case(n, 80, 0.5f, n, 0);
  }
}

static void test_hand(void **s) {
  (void)s;
  /* a and b overlap with IoU 81/119 = 0.68; c is another class on top of a. */
  bd_det c[4] = {{0, 0, 10, 10, 0.9f, 1},
                 {1, 1, 11, 11, 0.8f, 1},
                 {0, 0, 10, 10, 0.7f, 2},
                 {50, 50, 60, 60, 0.8f, 1}};
  bd_det out[4];
  int n;
  assert_int_equal(bd_nms(c, 4, 0.5f, 10, 0, out, &n, NULL), BD_OK);
  assert_int_equal(n, 3);
  assert_true(out[0].score == 0.9f && out[0].cls == 1);
  assert_true(out[1].x1 == 50.f); /* tie 0.8: index 3 survives, index 1 was suppressed */
  assert_true(out[2].cls == 2);
  bd_det c2[4] = {{0, 0, 10, 10, 0.9f, 1},
                  {1, 1, 11, 11, 0.8f, 1},
                  {0, 0, 10, 10, 0.7f, 2},
                  {50, 50, 60, 60, 0.8f, 1}};
  assert_int_equal(bd_nms(c2, 4, 0.7f, 10, 0, out, &n, NULL), BD_OK);
  assert_int_equal(n, 4);                             /* 0.68 is not > 0.7 */
  assert_true(out[1].x1 == 1.f && out[2].x1 == 50.f); /* equal scores: lower index first */
  bd_det c3[2] = {{0, 0, 10, 10, 0.9f, 1}, {0, 0, 10, 10, 0.7f, 2}};
  assert_int_equal(bd_nms(c3, 2, 0.5f, 10, 1, out, &n, NULL), BD_OK);
  assert_int_equal(n, 1);
  assert_int_equal(bd_nms(c3, 2, 0.5f, 0, 0, out, &n, NULL), BD_OK);
  assert_int_equal(n, 0);
  assert_int_equal(bd_nms(c3, -1, 0.5f, 1, 0, out, &n, NULL), BD_E_LIMIT);
  bd_det neg[2] = {{0, 0, 10, 10, 0.9f, 1}, {0, 0, 10, 10, 0.7f, -1}};
  assert_int_equal(bd_nms(neg, 2, 0.5f, 10, 0, out, &n, NULL), BD_E_INVALID);
  assert_int_equal(bd_nms(neg, 2, 0.5f, 10, 1, out, &n, NULL), BD_OK); /* agnostic: any class */
  assert_int_equal(n, 1);
  bd_det z = {5, 5, 5, 5, 1, 0};
  assert_true(bd_box_iou(&z, &z) == 0.f); /* empty union */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hand),
      cmocka_unit_test(test_random_vs_bruteforce),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
