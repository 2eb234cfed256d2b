/* PNG decoding (bd_decode.h): every colour type / depth / interlace transform, alpha
 * compositing, eXIf orientation and CRC damage, on PNGs written here with libpng's
 * writer from known pixel values. */
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_decode.h"

typedef struct {
  uint8_t *b;
  size_t n, cap;
} membuf;

static void wr(png_structp p, png_bytep d, png_size_t n) {
  membuf *m = png_get_io_ptr(p);
  if (m->n + n > m->cap) {
    m->cap = (m->n + n) * 2;
    m->b = realloc(m->b, m->cap);
    assert_non_null(m->b);
  }
  memcpy(m->b + m->n, d, n);
  m->n += n;
}
static void fl(png_structp p) {
  (void)p;
}

typedef struct {
  int w, h, ctype, depth, interlace;
  const uint8_t *pix; /* packed rows as libpng expects for (ctype, depth), big-endian 16-bit */
  const png_color *pal;
  int npal;
  const uint8_t *trns;
  int ntrns;
  const uint8_t *exif;
  int nexif;
} spec;

static membuf write_png(const spec *s) {
  membuf m = {0};
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop i = png_create_info_struct(p);
  assert_non_null(i);
  if (setjmp(png_jmpbuf(p))) fail_msg("libpng writer failed");
  png_set_write_fn(p, &m, wr, fl);
  png_set_IHDR(p, i, s->w, s->h, s->depth, s->ctype, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (s->pal) png_set_PLTE(p, i, s->pal, s->npal);
  if (s->trns) png_set_tRNS(p, i, s->trns, s->ntrns, NULL);
  if (s->exif) png_set_eXIf_1(p, i, s->nexif, (png_bytep)s->exif);
  png_write_info(p, i);
  int ch = png_get_channels(p, i);
  size_t rb = ((size_t)s->w * ch * s->depth + 7) / 8;
  png_bytep *rows = malloc(sizeof(png_bytep) * s->h);
  for (int y = 0; y < s->h; y++) rows[y] = (png_bytep)s->pix + rb * y;
  png_write_image(p, rows);
  png_write_end(p, i);
  png_destroy_write_struct(&p, &i);
  free(rows);
  return m;
}

static bd_image dec(const membuf *m, bd_decode_info *info) {
  bd_image im;
  bd_err e = {0};
  bd_status st = bd_decode_image(m->b, m->n, NULL, &im, info, &e);
  if (st != BD_OK) fail_msg("decode: %s", e.msg);
  return im;
}

static void test_gray_and_low_depth(void **state) {
  (void)state;
  uint8_t g8[6] = {0, 50, 100, 150, 200, 255};
  spec s = {.w = 3, .h = 2, .ctype = PNG_COLOR_TYPE_GRAY, .depth = 8, .pix = g8};
  membuf m = write_png(&s);
  bd_decode_info info;
  bd_image im = dec(&m, &info);
  assert_int_equal(info.format, BD_IMG_PNG);
  assert_int_equal(info.components, 1);
  for (int i = 0; i < 6; i++)
    for (int c = 0; c < 3; c++) assert_int_equal(im.data[3 * i + c], g8[i]);
  bd_image_free(&im);
  free(m.b);
  /* 1-bit gray, 10 px wide (packed into 2 bytes per row): 1 -> 255 */
  uint8_t g1[4] = {0xA5, 0x40, 0x00, 0xC0}; /* row0 1010010101, row1 0000000011 */
  spec s1 = {.w = 10, .h = 2, .ctype = PNG_COLOR_TYPE_GRAY, .depth = 1, .pix = g1};
  m = write_png(&s1);
  im = dec(&m, &info);
  const char *want = "10100101010000000011";
  for (int i = 0; i < 20; i++) assert_int_equal(im.data[3 * i + 1], want[i] == '1' ? 255 : 0);
  bd_image_free(&im);
  free(m.b);
}

static void test_palette_trns(void **state) {
  (void)state;
  png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
  uint8_t idx[4] = {0, 1, 2, 1};
  spec s = {.w = 2,
            .h = 2,
            .ctype = PNG_COLOR_TYPE_PALETTE,
            .depth = 8,
            .pix = idx,
            .pal = pal,
            .npal = 3};
  membuf m = write_png(&s);
  bd_image im = dec(&m, NULL);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(im.data[3 * i], pal[idx[i]].red);
    assert_int_equal(im.data[3 * i + 1], pal[idx[i]].green);
    assert_int_equal(im.data[3 * i + 2], pal[idx[i]].blue);
  }
  bd_image_free(&im);
  free(m.b);
  /* entry 1 half transparent, entry 0 fully transparent: composited over black */
  uint8_t trns[2] = {0, 128};
  s.trns = trns;
  s.ntrns = 2;
  m = write_png(&s);
  im = dec(&m, NULL);
  const uint8_t want[12] = {0, 0, 0, 0, 128, 0, 10, 20, 30, 0, 128, 0};
  assert_memory_equal(im.data, want, 12);
  bd_image_free(&im);
  free(m.b);
}

static void test_rgba_and_16bit(void **state) {
  (void)state;
  uint8_t rgba[8] = {200, 100, 50, 255, 200, 100, 50, 51};
  spec s = {.w = 2, .h = 1, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .depth = 8, .pix = rgba};
  membuf m = write_png(&s);
  bd_decode_info info;
  bd_image im = dec(&m, &info);
  assert_int_equal(info.components, 4);
  const uint8_t want[6] = {200, 100, 50, 40, 20, 10}; /* 51/255 = 0.2 */
  assert_memory_equal(im.data, want, 6);
  bd_image_free(&im);
  free(m.b);
  /* 16-bit RGB: v16 -> round(v16 / 257) */
  uint16_t v[6] = {0, 65535, 257 * 100, 257 * 100 + 128, 1000, 40000};
  uint8_t be[12];
  for (int i = 0; i < 6; i++) {
    be[2 * i] = (uint8_t)(v[i] >> 8);
    be[2 * i + 1] = (uint8_t)v[i];
  }
  spec s16 = {.w = 2, .h = 1, .ctype = PNG_COLOR_TYPE_RGB, .depth = 16, .pix = be};
  m = write_png(&s16);
  im = dec(&m, NULL);
  for (int i = 0; i < 6; i++) {
    int ref = (int)((v[i] + 128) / 257);
    assert_true(abs((int)im.data[i] - ref) <= 1);
  }
  bd_image_free(&im);
  free(m.b);
  /* 16-bit gray+alpha */
  uint8_t ga[4] = {0xFF, 0xFF, 0x80, 0x00}; /* white, alpha 0x8000 */
  spec sga = {.w = 1, .h = 1, .ctype = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 16, .pix = ga};
  m = write_png(&sga);
  im = dec(&m, NULL);
  for (int c = 0; c < 3; c++) assert_true(abs((int)im.data[c] - 128) <= 1);
  bd_image_free(&im);
  free(m.b);
}

static void test_interlaced(void **state) {
  (void)state;
  enum { W = 13, H = 11 };
  uint8_t pix[W * H * 3];
  for (int i = 0; i < W * H * 3; i++) pix[i] = (uint8_t)(i * 37 + (i / 3) * 11);
  spec s = {.w = W,
            .h = H,
            .ctype = PNG_COLOR_TYPE_RGB,
            .depth = 8,
            .interlace = PNG_INTERLACE_ADAM7,
            .pix = pix};
  membuf m = write_png(&s);
  bd_image im = dec(&m, NULL);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_memory_equal(im.data, pix, sizeof pix);
  bd_image_free(&im);
  size_t at = 0, len = 0;
  for (size_t i = 12; i + 4 < m.n; i++)
    if (memcmp(m.b + i, "IDAT", 4) == 0) {
      at = i + 4;
      len = (size_t)m.b[i - 4] << 24 | (size_t)m.b[i - 3] << 16 | (size_t)m.b[i - 2] << 8 |
            m.b[i - 1];
      break;
    }
  assert_true(at > 0 && at + len + 4 <= m.n);
  bd_err e = {0};
  /* only the stored CRC is wrong, the zlib data is intact: still an error */
  m.b[at + len + 3] ^= 0x01;
  assert_int_equal(bd_decode_image(m.b, m.n, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_null(im.data);
  assert_non_null(strstr(e.msg, "CRC"));
  print_message("stale IDAT CRC: %s\n", e.msg);
  m.b[at + len + 3] ^= 0x01;
  /* damage one byte of the IDAT payload */
  m.b[at + len / 2] ^= 0x55;
  assert_int_equal(bd_decode_image(m.b, m.n, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_null(im.data);
  print_message("damaged IDAT: %s\n", e.msg);
  /* no IEND: the pixels are all there but the file is cut, an error as for JPEG */
  assert_int_equal(bd_decode_image(m.b, m.n - 12, NULL, &im, NULL, &e), BD_E_INVALID);
  free(m.b);
}

static void test_exif_png(void **state) {
  (void)state;
  uint8_t pix[2 * 3 * 3]; /* 3 wide, 2 high */
  for (int i = 0; i < 18; i++) pix[i] = (uint8_t)(i * 10);
  /* little-endian TIFF: IFD0 with one entry, orientation 6 */
  const uint8_t tiff[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3,
                          0,   1,   0,  0, 0, 6, 0, 0, 0, 0, 0,    0,    0};
  spec s = {.w = 3,
            .h = 2,
            .ctype = PNG_COLOR_TYPE_RGB,
            .depth = 8,
            .pix = pix,
            .exif = tiff,
            .nexif = sizeof tiff};
  membuf m = write_png(&s);
  bd_decode_info info;
  bd_image im = dec(&m, &info);
  assert_int_equal(info.orientation, 6);
  assert_int_equal(im.w, 2);
  assert_int_equal(im.h, 3);
  /* rotated 90 clockwise: displayed (x, y) = stored (y, H-1-x) with H = 2 */
  for (int y = 0; y < 3; y++)
    for (int x = 0; x < 2; x++)
      assert_memory_equal(im.data + (y * 2 + x) * 3, pix + ((1 - x) * 3 + y) * 3, 3);
  bd_image_free(&im);
  free(m.b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gray_and_low_depth), cmocka_unit_test(test_palette_trns),
      cmocka_unit_test(test_rgba_and_16bit),     cmocka_unit_test(test_interlaced),
      cmocka_unit_test(test_exif_png),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
