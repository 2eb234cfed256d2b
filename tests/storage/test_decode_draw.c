/* bd_draw: font table sanity, clipped rectangles, text and label placement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_decode.h"
#include "bd_draw.h"

static bd_image blank(int w, int h) {
  bd_image im = {w, h, calloc((size_t)w * h * 3, 1)};
  assert_non_null(im.data);
  return im;
}
static const uint8_t *px(const bd_image *im, int x, int y) {
  return im->data + ((size_t)y * im->w + x) * 3;
}
static int is(const bd_image *im, int x, int y, bd_rgb c) {
  const uint8_t *p = px(im, x, y);
  return p[0] == c.r && p[1] == c.g && p[2] == c.b;
}

static void test_font_table(void **state) {
  (void)state;
  assert_null(bd_font_glyph(31));
  assert_null(bd_font_glyph(127));
  for (int c = 32; c <= 126; c++) {
    const char *const *g = bd_font_glyph(c);
    assert_non_null(g);
    int ink = 0;
    for (int r = 0; r < BD_FONT_H; r++) {
      assert_non_null(g[r]);
      assert_int_equal(strlen(g[r]), BD_FONT_W);
      for (int k = 0; k < BD_FONT_W; k++) {
        assert_true(g[r][k] == '#' || g[r][k] == '.');
        ink += g[r][k] == '#';
      }
    }
    assert_true(c == ' ' ? ink == 0 : ink > 0);
    /* every glyph differs from every other one */
    for (int d = 32; d < c; d++) {
      const char *const *h = bd_font_glyph(d);
      int same = 1;
      for (int r = 0; r < BD_FONT_H; r++) same &= strcmp(g[r], h[r]) == 0;
      if (same) fail_msg("glyphs '%c' and '%c' are identical", c, d);
    }
  }
}

static void test_rect(void **state) {
  (void)state;
  bd_image im = blank(20, 10);
  bd_rgb red = {255, 0, 0}, black = {0, 0, 0};
  bd_draw_rect(&im, 2, 1, 12, 8, 2, red);
  for (int y = 0; y < 10; y++)
    for (int x = 0; x < 20; x++) {
      int in_box = x >= 2 && x < 12 && y >= 1 && y < 8;
      int inner = x >= 4 && x < 10 && y >= 3 && y < 6;
      assert_true(is(&im, x, y, in_box && !inner ? red : black));
    }
  /* anything outside the image is clipped, never written */
  bd_draw_rect(&im, -50, -50, 1000, 1000, 3, red); /* all four sides outside */
  assert_true(is(&im, 0, 0, black));
  bd_draw_rect(&im, -1, -1, 1000, 1000, 3, red); /* top and left sides 2 px inside */
  bd_draw_fill(&im, 100, 100, 200, 200, red);
  bd_draw_rect(&im, 5, 5, 5, 9, 1, red); /* empty box: nothing */
  assert_true(is(&im, 0, 0, red));
  assert_true(is(&im, 1, 9, red));
  assert_true(is(&im, 19, 1, red));
  assert_true(is(&im, 2, 9, black)); /* left side covers x 0..1 only, the bottom side is outside */
  assert_true(is(&im, 5, 5, black));
  bd_draw_rect(NULL, 0, 0, 1, 1, 1, red);
  bd_image_free(&im);
}

static void test_text(void **state) {
  (void)state;
  bd_image im = blank(40, 20);
  bd_rgb w = {255, 255, 255}, k = {0, 0, 0};
  assert_int_equal(bd_draw_text_width("AB", 1), 11);
  assert_int_equal(bd_draw_text_width("AB", 2), 22);
  assert_int_equal(bd_draw_text_height(3), 21);
  bd_draw_text(&im, 3, 4, "L", 1, w);
  /* 'L': left column and bottom row inked */
  for (int y = 0; y < 20; y++)
    for (int x = 0; x < 40; x++) {
      int ink = (x == 3 && y >= 4 && y < 11) || (y == 10 && x >= 3 && x < 8);
      assert_true(is(&im, x, y, ink ? w : k));
    }
  /* scale 2 doubles each ink dot; non-ASCII draws as '?' */
  bd_image im2 = blank(40, 20);
  bd_draw_text(&im2, 0, 0, "\x80", 2, w);
  const char *const *q = bd_font_glyph('?');
  for (int r = 0; r < 7; r++)
    for (int c = 0; c < 5; c++)
      for (int d = 0; d < 4; d++)
        assert_int_equal(is(&im2, 2 * c + (d & 1), 2 * r + (d >> 1), w), q[r][c] == '#');
  bd_draw_text(&im2, 35, 15, "clipped text", 3, w); /* runs off both edges */
  bd_image_free(&im);
  bd_image_free(&im2);
}

static void test_label(void **state) {
  (void)state;
  bd_image im = blank(100, 60);
  bd_rgb fg = {0, 0, 0}, bg = {0, 200, 0}, k = {0, 0, 0};
  /* room above (y = 30): the box spans rows 30-9 .. 30 */
  bd_draw_label(&im, 10, 30, "dog 0.93", 1, fg, bg);
  assert_true(is(&im, 10, 21, bg));
  assert_true(is(&im, 10, 29, bg));
  assert_true(is(&im, 10, 30, k));
  assert_true(is(&im, 10, 20, k));
  int lw = bd_draw_text_width("dog 0.93", 1) + 2;
  assert_true(is(&im, 10 + lw - 1, 25, bg) || is(&im, 10 + lw - 1, 25, fg));
  assert_true(is(&im, 10 + lw, 25, k));
  /* no room above: drawn inside, starting at y */
  bd_image im2 = blank(100, 60);
  bd_draw_label(&im2, 95, 2, "person", 1, fg, bg);
  assert_true(is(&im2, 99, 2, bg)); /* shifted left to stay inside */
  assert_true(is(&im2, 99, 10, bg));
  assert_true(is(&im2, 99, 11, k));
  /* an annotated image still encodes */
  uint8_t *j = NULL;
  size_t n = 0;
  bd_err e = {0};
  bd_draw_rect(&im2, 5, 5, 50, 40, 2, bd_draw_palette(3));
  assert_int_equal(bd_encode_jpeg(&im2, 85, &j, &n, &e), BD_OK);
  assert_true(n > 100);
  free(j);
  assert_true(bd_draw_palette(0).r != bd_draw_palette(1).r ||
              bd_draw_palette(0).g != bd_draw_palette(1).g);
  assert_memory_equal(&(bd_rgb[]){bd_draw_palette(-1)}, &(bd_rgb[]){bd_draw_palette(15)},
                      sizeof(bd_rgb));
  bd_image_free(&im);
  bd_image_free(&im2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_font_table),
      cmocka_unit_test(test_rect),
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_label),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
