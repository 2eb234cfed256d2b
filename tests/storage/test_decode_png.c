/* PNG decoding (bd_decode.h): every colour type / depth / interlace transform, alpha
 * dropped, eXIf orientation, CRC damage and chunks whose declared length is a lie, on
 * PNGs written here with libpng's writer from known pixel values. */
#include <png.h>
#include <setjmp.h>
#include <zlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_decode.h"

/* The largest single allocation while armed, seen through the sanitizer allocator's
 * hooks (libpng's malloc calls go through it too). Weak: absent without ASan, and
 * the allocation checks then say so and are skipped. */
void __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                               void (*f)(const volatile void *))
    __attribute__((weak));
static volatile int g_armed;
static volatile size_t g_max_alloc;
static void on_malloc(const volatile void *p, size_t n) {
  (void)p;
  if (g_armed && n > g_max_alloc) g_max_alloc = n;
}
static void on_free(const volatile void *p) {
  (void)p;
}
static int hooks_ready(void) {
  static int done;
  if (!done && __sanitizer_install_malloc_and_free_hooks) {
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    done = 1;
  }
  return done;
}

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
  /* entry 1 half transparent, entry 0 fully transparent: tRNS is ignored, each pixel
   * is its palette colour, as cv2.imread(IMREAD_COLOR) gives (test_decode_alpha.py
   * checks palette+tRNS files against cv2) */
  uint8_t trns[2] = {0, 128};
  s.trns = trns;
  s.ntrns = 2;
  m = write_png(&s);
  im = dec(&m, NULL);
  const uint8_t want[12] = {255, 0, 0, 0, 255, 0, 10, 20, 30, 0, 255, 0};
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
  const uint8_t want[6] = {200, 100, 50, 200, 100, 50}; /* alpha dropped, not composited */
  assert_memory_equal(im.data, want, 6);
  bd_image_free(&im);
  free(m.b);
  /* 16-bit RGB: v16 -> v16 >> 8, as imread */
  uint16_t v[6] = {0, 65535, 257 * 100, 257 * 100 + 128, 1000, 40000};
  uint8_t be[12];
  for (int i = 0; i < 6; i++) {
    be[2 * i] = (uint8_t)(v[i] >> 8);
    be[2 * i + 1] = (uint8_t)v[i];
  }
  spec s16 = {.w = 2, .h = 1, .ctype = PNG_COLOR_TYPE_RGB, .depth = 16, .pix = be};
  m = write_png(&s16);
  im = dec(&m, NULL);
  for (int i = 0; i < 6; i++) assert_int_equal(im.data[i], v[i] >> 8);
  bd_image_free(&im);
  free(m.b);
  /* 16-bit gray+alpha: the gray, alpha dropped */
  uint8_t ga[8] = {0xFF, 0xFF, 0x80, 0x00, 0x64, 0x64, 0x00, 0x00}; /* white a=0x8000, 100 a=0 */
  spec sga = {.w = 2, .h = 1, .ctype = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 16, .pix = ga};
  m = write_png(&sga);
  im = dec(&m, NULL);
  for (int c = 0; c < 3; c++) {
    assert_int_equal(im.data[c], 255);
    assert_int_equal(im.data[3 + c], 100);
  }
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

/* ---- chunks whose declared length is a lie, and compressed text bombs ---- */

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* base with a chunk inserted right after IHDR (offset 33): declared length `declared`,
 * `n` bytes of data, then the CRC when `crc`, then the rest of base when `rest`. */
static membuf splice(const membuf *base, const char *type, uint32_t declared, const uint8_t *data,
                     size_t n, int crc, int rest) {
  const size_t at = 33;
  membuf m = {malloc(base->n + 12 + n), 0, 0};
  assert_non_null(m.b);
  assert_memory_equal(base->b + 12, "IHDR", 4);
  memcpy(m.b, base->b, at);
  put32(m.b + at, declared);
  memcpy(m.b + at + 4, type, 4);
  if (n) memcpy(m.b + at + 8, data, n);
  m.n = at + 8 + n;
  if (crc) {
    uLong c = crc32(crc32(0L, Z_NULL, 0), m.b + at + 4, (uInt)(4 + n));
    put32(m.b + m.n, (uint32_t)c);
    m.n += 4;
  }
  if (rest) {
    memcpy(m.b + m.n, base->b + at, base->n - at);
    m.n += base->n - at;
  }
  return m;
}

/* Decodes m with the allocation hooks armed; returns the status, *max_alloc the
 * largest single allocation made meanwhile. */
static bd_status dec_measured(const membuf *m, bd_image *im, bd_err *e, size_t *max_alloc) {
  hooks_ready();
  g_max_alloc = 0;
  g_armed = 1;
  bd_status st = bd_decode_image(m->b, m->n, NULL, im, NULL, e);
  g_armed = 0;
  *max_alloc = g_max_alloc;
  return st;
}

/* A 44-byte file must not make the decoder allocate what a chunk header claims
 * (libpng used to allocate 2 GB for a tEXt chunk declaring 0x7fffffff bytes). */
static void test_lying_chunk_length(void **state) {
  (void)state;
  const uint8_t px[3] = {10, 20, 30};
  spec s = {.w = 1, .h = 1, .ctype = PNG_COLOR_TYPE_RGB, .depth = 8, .pix = px};
  membuf base = write_png(&s);
  if (!hooks_ready())
    print_message("no sanitizer allocator hooks: allocation sizes are not checked\n");
  static const char *const types[] = {"tEXt", "zTXt", "iTXt", "iCCP", "eXIf",
                                      "sPLT", "pCAL", "abCd", "IDAT"};
  static const uint32_t lens[] = {0x7fffffffu, 0x40000000u, 100000u};
  const uint8_t data[] = "abc\0def";
  for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
      for (int rest = 0; rest <= 1; rest++) {
        membuf m = splice(&base, types[t], lens[l], data, sizeof data, 0, rest);
        bd_image im;
        bd_err e = {0};
        size_t peak = 0;
        bd_status st = dec_measured(&m, &im, &e, &peak);
        print_message("%s len %#x%s (%zu bytes): %s (largest allocation %zu)\n", types[t],
                      (unsigned)lens[l], rest ? " + rest of file" : "", m.n,
                      st == BD_OK ? "decoded" : e.msg, peak);
        assert_int_equal(st, BD_E_INVALID);
        assert_null(im.data);
        assert_non_null(strstr(e.msg, "corrupt PNG"));
        if (hooks_ready()) assert_true(peak < (1u << 20));
        free(m.b);
      }
  free(base.b);
}

/* zTXt / iTXt whose text inflates to 7 MB: the text is not needed for the pixels, so
 * the file decodes without inflating it. */
static void test_text_bomb(void **state) {
  (void)state;
  const uint8_t px[3] = {10, 20, 30};
  spec s = {.w = 1, .h = 1, .ctype = PNG_COLOR_TYPE_RGB, .depth = 8, .pix = px};
  membuf base = write_png(&s);
  const size_t big = 7000000;
  uint8_t *zeros = calloc(big, 1);
  uLongf zn = compressBound(big);
  uint8_t *z = malloc(zn);
  assert_non_null(zeros);
  assert_non_null(z);
  assert_int_equal(compress2(z, &zn, zeros, big, 9), Z_OK);
  free(zeros);
  for (int itxt = 0; itxt <= 1; itxt++) {
    /* zTXt: keyword \0 method; iTXt: keyword \0 flag method lang \0 translated \0 */
    static const uint8_t zhead[] = {'C', 'o', 'm', 'm', 'e', 'n', 't', 0, 0};
    static const uint8_t ihead[] = {'C', 'o', 'm', 'm', 'e', 'n', 't', 0, 1, 0, 0, 0};
    const uint8_t *h = itxt ? ihead : zhead;
    const size_t hn = itxt ? sizeof ihead : sizeof zhead;
    uint8_t *d = malloc(hn + zn);
    assert_non_null(d);
    memcpy(d, h, hn);
    memcpy(d + hn, z, zn);
    membuf m = splice(&base, itxt ? "iTXt" : "zTXt", (uint32_t)(hn + zn), d, hn + zn, 1, 1);
    bd_image im;
    bd_err e = {0};
    size_t peak = 0;
    bd_status st = dec_measured(&m, &im, &e, &peak);
    print_message("%s inflating to %zu bytes (%zu byte file): %s (largest allocation %zu)\n",
                  itxt ? "iTXt" : "zTXt", big, m.n, st == BD_OK ? "decoded" : e.msg, peak);
    if (st != BD_OK) fail_msg("decode: %s", e.msg);
    assert_memory_equal(im.data, px, 3);
    if (hooks_ready()) assert_true(peak < (1u << 20));
    bd_image_free(&im);
    free(m.b);
    free(d);
  }
  free(z);
  free(base.b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gray_and_low_depth), cmocka_unit_test(test_palette_trns),
      cmocka_unit_test(test_rgba_and_16bit),     cmocka_unit_test(test_interlaced),
      cmocka_unit_test(test_exif_png),           cmocka_unit_test(test_lying_chunk_length),
      cmocka_unit_test(test_text_bomb),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
