/* Tests of storage/decode (bd_decode.h) against the shared photos and independent
 * references: sizes from PROVENANCE.md, dog.png (pixels written by another decoder),
 * person.jpg vs its progressive copy, scream.jpg vs its CMYK copy, rotations done
 * here by composing two elementary ops, PNGs written here with libpng's writer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>
#include <turbojpeg.h>

#include "bd_decode.h"

static char g_data[1024];

static void data_path(char *out, size_t n, const char *rel) {
  int k = snprintf(out, n, "%s/%s", g_data, rel);
  if (k < 0 || (size_t)k >= n) fail_msg("path too long: %s/%s", g_data, rel);
}

static uint8_t *slurp_abs(const char *p, size_t *len) {
  FILE *f = fopen(p, "rb");
  if (!f) fail_msg("cannot open %s", p);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static uint8_t *slurp(const char *rel, size_t *len) {
  char p[1200];
  data_path(p, sizeof p, rel);
  return slurp_abs(p, len);
}

static bd_status decode_rel(const char *rel, const bd_decode_opts *o, bd_image *im,
                            bd_decode_info *info, bd_err *e) {
  char p[1200];
  data_path(p, sizeof p, rel);
  return bd_decode_file(p, o, im, info, e);
}

static void must_decode(const char *rel, const bd_decode_opts *o, bd_image *im,
                        bd_decode_info *info) {
  bd_err e = {0};
  bd_status st = decode_rel(rel, o, im, info, &e);
  if (st != BD_OK) fail_msg("%s: %s", rel, e.msg);
}

static double mean_absdiff(const bd_image *a, const bd_image *b) {
  assert_int_equal(a->w, b->w);
  assert_int_equal(a->h, b->h);
  double s = 0;
  size_t n = (size_t)a->w * a->h * 3;
  for (size_t i = 0; i < n; i++) s += abs((int)a->data[i] - (int)b->data[i]);
  return s / (double)n;
}

/* ---- sizes of every photo (PROVENANCE.md table) ---- */
static void test_photo_sizes(void **state) {
  (void)state;
  static const struct {
    const char *f;
    int w, h, comp;
  } t[] = {
      {"images/dog.jpg", 768, 576, 3},
      {"images/eagle.jpg", 773, 512, 3},
      {"images/giraffe.jpg", 500, 500, 3},
      {"images/horses.jpg", 773, 512, 3},
      {"images/kite.jpg", 1352, 900, 3},
      {"images/person.jpg", 640, 424, 3},
      {"images/scream.jpg", 352, 448, 3},
      {"images/dog.png", 768, 576, 3},
      {"images/horses_gray.jpg", 773, 512, 1},
      {"images/bad/ok_progressive_person.jpg", 640, 424, 3},
      {"images/bad/ok_cmyk_scream.jpg", 352, 448, 4},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    bd_image im;
    bd_decode_info info;
    must_decode(t[i].f, NULL, &im, &info);
    assert_int_equal(im.w, t[i].w);
    assert_int_equal(im.h, t[i].h);
    assert_int_equal(info.orig_w, t[i].w);
    assert_int_equal(info.orig_h, t[i].h);
    assert_int_equal(info.out_w, t[i].w);
    assert_int_equal(info.components, t[i].comp);
    assert_int_equal(info.orientation, 1);
    assert_int_equal(info.scale_denom, 1);
    assert_int_equal(info.format, strstr(t[i].f, ".png") ? BD_IMG_PNG : BD_IMG_JPEG);
    bd_image_free(&im);
  }
}

static void test_dog_equals_png(void **state) {
  (void)state;
  bd_image a, b;
  must_decode("images/dog.jpg", NULL, &a, NULL);
  must_decode("images/dog.png", NULL, &b, NULL);
  assert_int_equal(a.w, b.w);
  assert_int_equal(a.h, b.h);
  assert_memory_equal(a.data, b.data, (size_t)a.w * a.h * 3);
  bd_image_free(&a);
  bd_image_free(&b);
}

static void test_gray(void **state) {
  (void)state;
  bd_image g, c;
  must_decode("images/horses_gray.jpg", NULL, &g, NULL);
  must_decode("images/horses.jpg", NULL, &c, NULL);
  size_t n = (size_t)g.w * g.h;
  double d = 0;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = g.data + 3 * i, *q = c.data + 3 * i;
    assert_true(p[0] == p[1] && p[1] == p[2]);
    /* same luma coefficients as horses.jpg: close to its BT.601 luma */
    d += fabs(p[0] - (0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2]));
  }
  d /= (double)n;
  assert_true(d < 3.0);
  bd_image_free(&g);
  bd_image_free(&c);
}

static void test_progressive(void **state) {
  (void)state;
  bd_image a, b;
  must_decode("images/person.jpg", NULL, &a, NULL);
  must_decode("images/bad/ok_progressive_person.jpg", NULL, &b, NULL);
  assert_int_equal(a.w, b.w);
  assert_int_equal(a.h, b.h);
  assert_memory_equal(a.data, b.data, (size_t)a.w * a.h * 3);
  bd_image_free(&a);
  bd_image_free(&b);
}

static void test_cmyk(void **state) {
  (void)state;
  bd_image a, b;
  must_decode("images/scream.jpg", NULL, &a, NULL);
  must_decode("images/bad/ok_cmyk_scream.jpg", NULL, &b, NULL);
  double d = mean_absdiff(&a, &b);
  print_message("cmyk vs rgb scream: mean |diff| = %.3f\n", d);
  assert_true(d <= 4.0);
  bd_image_free(&a);
  bd_image_free(&b);
}

/* ---- bad/EXPECTED.tsv, line by line ---- */
static void test_bad_expected(void **state) {
  (void)state;
  char p[1200];
  data_path(p, sizeof p, "images/bad/EXPECTED.tsv");
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  char line[1024];
  int lines = 0, errors = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    char *file = strtok(line, "\t"), *expect = strtok(NULL, "\t");
    assert_non_null(file);
    assert_non_null(expect);
    char rel[600];
    snprintf(rel, sizeof rel, "images/bad/%s", file);
    bd_image im = {1, 1, (uint8_t *)1}; /* garbage: must be reset */
    bd_decode_info info;
    bd_err e = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bd_status st = decode_rel(rel, NULL, &im, &info, &e);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    lines++;
    if (strcmp(expect, "error") == 0) {
      errors++;
      if (st == BD_OK) fail_msg("%s decoded but must fail", file);
      assert_null(im.data);
      assert_true(strlen(e.msg) > 0);
      assert_null(strchr(e.msg, '\n'));
      print_message("%-28s -> %s: %s (%.1f ms)\n", file, bd_status_name(st), e.msg, ms);
      if (strstr(file, "bomb")) {
        assert_int_equal(st, BD_E_LIMIT);
        assert_non_null(strstr(e.msg, "60000x60000"));
        assert_non_null(strstr(e.msg, "268.4 MP limit"));
        assert_true(ms < 200.0); /* from the header: no 10.8 GB allocation, no decode */
      }
      if (strstr(file, "not_an_image")) assert_int_equal(st, BD_E_UNSUPPORTED);
    } else {
      assert_string_equal(expect, "decode");
      if (st != BD_OK) fail_msg("%s must decode: %s", file, e.msg);
      bd_image_free(&im);
    }
  }
  fclose(f);
  assert_int_equal(lines, 7);
  assert_int_equal(errors, 5);
}

static void test_misc_errors(void **state) {
  (void)state;
  bd_image im;
  bd_err e = {0};
  const uint8_t txt[] = "hello";
  assert_int_equal(bd_decode_image(NULL, 0, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_int_equal(bd_decode_image(txt, 0, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_int_equal(bd_decode_image(txt, 5, NULL, &im, NULL, &e), BD_E_UNSUPPORTED);
  assert_string_equal(e.msg, "not an image (unknown format)");
  const uint8_t soi[] = {0xFF, 0xD8, 0xFF};
  assert_int_equal(bd_decode_image(soi, 3, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_int_equal(bd_decode_sniff(soi, 3), BD_IMG_JPEG);
  assert_int_equal(bd_decode_file("/nonexistent/x.jpg", NULL, &im, NULL, &e), BD_E_NOT_FOUND);
  /* a pixel limit from the options */
  bd_decode_opts o = {.max_pixels = 100000};
  assert_int_equal(decode_rel("images/dog.jpg", &o, &im, NULL, &e), BD_E_LIMIT);
  assert_non_null(strstr(e.msg, "768x576 (0.4 MP), over the 0.1 MP limit"));
  bd_decode_opts o2 = {.max_side = 700};
  assert_int_equal(decode_rel("images/dog.jpg", &o2, &im, NULL, &e), BD_E_LIMIT);
  assert_non_null(strstr(e.msg, "700 px per-side"));
  /* PNG truncated in the middle of IDAT, and a PNG bomb header */
  size_t n;
  uint8_t *png = slurp("images/dog.png", &n);
  assert_int_equal(bd_decode_image(png, n / 2, NULL, &im, NULL, &e), BD_E_INVALID);
  assert_null(im.data);
  png[16] = 0;
  png[17] = 0;
  png[18] = 0xEA;
  png[19] = 0x60; /* width 60000 */
  png[20] = 0;
  png[21] = 0;
  png[22] = 0xEA;
  png[23] = 0x60;
  assert_int_equal(bd_decode_image(png, n, NULL, &im, NULL, &e), BD_E_LIMIT);
  assert_non_null(strstr(e.msg, "60000x60000 (3600.0 MP), over the 268.4 MP limit"));
  free(png);
}

/* ---- EXIF orientation ---- */

static bd_image img_alloc(int w, int h) {
  bd_image im = {w, h, malloc((size_t)w * h * 3)};
  assert_non_null(im.data);
  return im;
}
static bd_image rot90cw(const bd_image *s) { /* new(x, y) = old(y, H-1-x) */
  bd_image d = img_alloc(s->h, s->w);
  for (int y = 0; y < s->h; y++)
    for (int x = 0; x < s->w; x++)
      memcpy(d.data + ((size_t)x * d.w + (s->h - 1 - y)) * 3, s->data + ((size_t)y * s->w + x) * 3,
             3);
  return d;
}
static bd_image mirror(const bd_image *s) {
  bd_image d = img_alloc(s->w, s->h);
  for (int y = 0; y < s->h; y++)
    for (int x = 0; x < s->w; x++)
      memcpy(d.data + ((size_t)y * s->w + (s->w - 1 - x)) * 3, s->data + ((size_t)y * s->w + x) * 3,
             3);
  return d;
}
/* The displayed image for orientation o: optional mirror then k quarter turns clockwise. */
static bd_image oriented(const bd_image *s, int o) {
  static const int mir[9] = {0, 0, 1, 0, 1, 1, 0, 1, 0}, turns[9] = {0, 0, 0, 2, 2, 3, 1, 1, 3};
  bd_image cur = img_alloc(s->w, s->h);
  memcpy(cur.data, s->data, (size_t)s->w * s->h * 3);
  if (mir[o]) {
    bd_image t = mirror(&cur);
    bd_image_free(&cur);
    cur = t;
  }
  for (int k = 0; k < turns[o]; k++) {
    bd_image t = rot90cw(&cur);
    bd_image_free(&cur);
    cur = t;
  }
  return cur;
}

/* JPEG bytes with an APP1 Exif segment holding orientation o, inserted after SOI. */
static uint8_t *with_exif(const uint8_t *j, size_t n, int o, int big_endian, int type_long,
                          size_t *out_len) {
  uint8_t t[64] = {0};
  size_t k = 0;
  uint8_t be = (uint8_t)big_endian;
#define P16(v)                        \
  do {                                \
    unsigned _v = (v);                \
    t[k++] = be ? _v >> 8 : _v & 255; \
    t[k++] = be ? _v & 255 : _v >> 8; \
  } while (0)
#define P32(v)                 \
  do {                         \
    uint32_t _v = (v);         \
    if (be) {                  \
      t[k++] = _v >> 24;       \
      t[k++] = _v >> 16 & 255; \
      t[k++] = _v >> 8 & 255;  \
      t[k++] = _v & 255;       \
    } else {                   \
      t[k++] = _v & 255;       \
      t[k++] = _v >> 8 & 255;  \
      t[k++] = _v >> 16 & 255; \
      t[k++] = _v >> 24;       \
    }                          \
  } while (0)
  t[k++] = be ? 'M' : 'I';
  t[k++] = be ? 'M' : 'I';
  P16(42);
  P32(8);
  P16(2); /* two entries: an unrelated one first */
  P16(0x010F);
  P16(2);
  P32(4);
  P32(0x00434241); /* Make "ABC" inline */
  P16(0x0112);
  P16(type_long ? 4 : 3);
  P32(1);
  if (type_long)
    P32((uint32_t)o);
  else {
    P16((unsigned)o);
    P16(0);
  }
  P32(0); /* no next IFD */
#undef P16
#undef P32
  size_t seg = 2 + 6 + k;
  uint8_t *b = malloc(n + 2 + seg);
  assert_non_null(b);
  memcpy(b, j, 2);
  b[2] = 0xFF;
  b[3] = 0xE1;
  b[4] = (uint8_t)(seg >> 8);
  b[5] = (uint8_t)seg;
  memcpy(b + 6, "Exif\0\0", 6);
  memcpy(b + 12, t, k);
  memcpy(b + 12 + k, j + 2, n - 2);
  *out_len = n + 2 + seg;
  return b;
}

static void test_exif_orientation(void **state) {
  (void)state;
  /* a non-square crop of the dog, encoded here with TurboJPEG directly */
  bd_image dog;
  must_decode("images/dog.jpg", NULL, &dog, NULL);
  const int w = 96, h = 64;
  bd_image crop = img_alloc(w, h);
  for (int y = 0; y < h; y++)
    memcpy(crop.data + (size_t)y * w * 3, dog.data + ((size_t)(y + 200) * dog.w + 150) * 3,
           (size_t)w * 3);
  tjhandle tj = tjInitCompress();
  unsigned char *jpg = NULL;
  unsigned long jn = 0;
  assert_int_equal(tjCompress2(tj, crop.data, w, 0, h, TJPF_RGB, &jpg, &jn, TJSAMP_444, 95, 0), 0);
  tjDestroy(tj);

  bd_image stored;
  bd_err e = {0};
  assert_int_equal(bd_decode_image(jpg, jn, NULL, &stored, NULL, &e), BD_OK);
  for (int o = 1; o <= 8; o++)
    for (int be = 0; be <= 1; be++) {
      size_t n;
      uint8_t *b = with_exif(jpg, jn, o, be, o == 7, &n);
      assert_int_equal(bd_decode_jpeg_orientation(b, n), o);
      bd_image got, raw;
      bd_decode_info info;
      assert_int_equal(bd_decode_image(b, n, NULL, &got, &info, &e), BD_OK);
      bd_image want = oriented(&stored, o);
      assert_int_equal(info.orientation, o);
      assert_int_equal(info.orig_w, w);
      assert_int_equal(info.orig_h, h);
      assert_int_equal(info.oriented_w, o >= 5 ? h : w);
      assert_int_equal(info.oriented_h, o >= 5 ? w : h);
      assert_int_equal(got.w, want.w);
      assert_int_equal(got.h, want.h);
      assert_memory_equal(got.data, want.data, (size_t)w * h * 3);
      bd_decode_opts no = {.ignore_orientation = 1};
      assert_int_equal(bd_decode_image(b, n, &no, &raw, &info, &e), BD_OK);
      assert_int_equal(info.orientation, 1);
      assert_memory_equal(raw.data, stored.data, (size_t)w * h * 3);
      bd_image_free(&got);
      bd_image_free(&raw);
      bd_image_free(&want);
      /* malformed: IFD offset past the end, absurd entry count, bad magic -> 1 */
      uint8_t *tiff = b + 12;
      size_t tn = n - 12;
      uint8_t save[8];
      memcpy(save, tiff, 8);
      tiff[be ? 7 : 4] = 0xF0;
      assert_int_equal(bd_decode_exif_orientation(tiff, 40), 1);
      memcpy(tiff, save, 8);
      /* an entry count past the end keeps the entries that fit, as OpenCV does */
      const int fit = bd_decode_exif_orientation(tiff, 40);
      tiff[be ? 8 : 9] = 0x7F; /* entry count 0x7Fxx */
      assert_int_equal(bd_decode_exif_orientation(tiff, 40), fit);
      memcpy(tiff, save, 8);
      tiff[2] = 0;
      tiff[3] = 0;
      assert_int_equal(bd_decode_exif_orientation(tiff, tn), 1);
      free(b);
    }
  /* the APP1 length running past the end of the buffer */
  size_t n;
  uint8_t *b = with_exif(jpg, jn, 6, 0, 0, &n);
  assert_int_equal(bd_decode_jpeg_orientation(b, 20), 1);
  free(b);
  bd_image_free(&stored);
  bd_image_free(&crop);
  bd_image_free(&dog);
  tjFree(jpg);
}

/* ---- DCT-domain scaling ---- */
static void test_scaled_kite(void **state) {
  (void)state;
  bd_image full, half;
  bd_decode_info info;
  must_decode("images/kite.jpg", NULL, &full, NULL);
  bd_decode_opts o = {.target_w = 416, .target_h = 416};
  must_decode("images/kite.jpg", &o, &half, &info);
  assert_int_equal(info.scale_num, 1);
  assert_int_equal(info.scale_denom, 2);
  assert_int_equal(info.orig_w, 1352);
  assert_int_equal(info.orig_h, 900);
  assert_int_equal(info.oriented_w, 1352);
  assert_int_equal(info.out_w, 676);
  assert_int_equal(info.out_h, 450);
  assert_int_equal(half.w, 676);
  assert_int_equal(half.h, 450);
  /* independent reference: 2x2 box average of the full decode */
  bd_image box = img_alloc(676, 450);
  for (int y = 0; y < 450; y++)
    for (int x = 0; x < 676; x++)
      for (int c = 0; c < 3; c++) {
        const uint8_t *p = full.data + ((size_t)(2 * y) * full.w + 2 * x) * 3 + c;
        box.data[((size_t)y * 676 + x) * 3 + c] =
            (uint8_t)((p[0] + p[3] + p[full.w * 3] + p[full.w * 3 + 3] + 2) / 4);
      }
  double d = mean_absdiff(&half, &box);
  print_message("kite 1/2 DCT vs 2x2 box: mean |diff| = %.3f\n", d);
  assert_true(d < 3.0);
  bd_image_free(&box);
  bd_image_free(&half);
  /* too small to halve: dog at 416 letterbox needs 416x312 > 384x288 */
  must_decode("images/dog.jpg", &o, &half, &info);
  assert_int_equal(info.scale_denom, 1);
  assert_int_equal(half.w, 768);
  bd_image_free(&half);
  /* small target: 1/8 is the largest reduction offered */
  bd_decode_opts tiny = {.target_w = 64, .target_h = 64};
  must_decode("images/kite.jpg", &tiny, &half, &info);
  assert_int_equal(info.scale_denom, 8);
  assert_int_equal(half.w, 169);
  assert_int_equal(half.h, 113);
  bd_image_free(&half);
  /* stretch needs 416x416 in both: 1352x900 -> 676x450 still fits, 1/4 does not */
  bd_decode_opts st = {.target_w = 416, .target_h = 416, .fit = BD_DECODE_FIT_STRETCH};
  must_decode("images/kite.jpg", &st, &half, &info);
  assert_int_equal(info.scale_denom, 2);
  bd_image_free(&half);
  /* stretch 640x640 needs 640 rows: 450 is not enough */
  bd_decode_opts st2 = {.target_w = 640, .target_h = 640, .fit = BD_DECODE_FIT_STRETCH};
  must_decode("images/kite.jpg", &st2, &half, &info);
  assert_int_equal(info.scale_denom, 1);
  bd_image_free(&half);
  bd_image_free(&full);
}

/* ---- encode round trip ---- */
static void test_encode_roundtrip(void **state) {
  (void)state;
  bd_image dog, back;
  bd_err e = {0};
  must_decode("images/dog.png", NULL, &dog, NULL);
  uint8_t *j = NULL;
  size_t n = 0;
  assert_int_equal(bd_encode_jpeg(&dog, 90, &j, &n, &e), BD_OK);
  assert_true(n > 1000);
  assert_int_equal(bd_decode_image(j, n, NULL, &back, NULL, &e), BD_OK);
  double se = 0;
  size_t cnt = (size_t)dog.w * dog.h * 3;
  for (size_t i = 0; i < cnt; i++) {
    double d = (double)dog.data[i] - back.data[i];
    se += d * d;
  }
  double psnr = 10 * log10(255.0 * 255.0 / (se / (double)cnt));
  print_message("encode q90 -> decode: PSNR %.2f dB, %zu bytes\n", psnr, n);
  assert_true(psnr > 35.0);
  free(j);
  assert_int_equal(bd_encode_jpeg(&dog, 0, &j, &n, &e), BD_E_INVALID);
  assert_null(j);
  bd_image bad = {0, 0, NULL};
  assert_int_equal(bd_encode_jpeg(&bad, 90, &j, &n, &e), BD_E_INVALID);
  bd_image_free(&back);
  bd_image_free(&dog);
}

/* The target applies to the displayed (oriented) image: a kite turned by EXIF 6 is
 * 900x1352 on screen, so a 640x320 stretch needs 640 stored rows and 1/2 (450) is
 * not enough, while the unrotated file would allow it. */
static void test_scaled_oriented(void **state) {
  (void)state;
  size_t n, m;
  uint8_t *kite = slurp("images/kite.jpg", &n);
  uint8_t *rot = with_exif(kite, n, 6, 1, 0, &m);
  bd_image im;
  bd_decode_info info;
  bd_err e = {0};
  bd_decode_opts st = {.target_w = 640, .target_h = 320, .fit = BD_DECODE_FIT_STRETCH};
  assert_int_equal(bd_decode_image(kite, n, &st, &im, &info, &e), BD_OK);
  assert_int_equal(info.scale_denom, 2);
  bd_image_free(&im);
  assert_int_equal(bd_decode_image(rot, m, &st, &im, &info, &e), BD_OK);
  assert_int_equal(info.scale_denom, 1);
  assert_int_equal(im.w, 900);
  assert_int_equal(im.h, 1352);
  bd_image_free(&im);
  /* letterbox 416: needs 277x416 on screen, 416x277 stored: 1/2 gives 450x676 */
  bd_decode_opts lb = {.target_w = 416, .target_h = 416};
  assert_int_equal(bd_decode_image(rot, m, &lb, &im, &info, &e), BD_OK);
  assert_int_equal(info.scale_denom, 2);
  assert_int_equal(info.orientation, 6);
  assert_int_equal(info.orig_w, 1352);
  assert_int_equal(info.oriented_w, 900);
  assert_int_equal(info.oriented_h, 1352);
  assert_int_equal(im.w, 450);
  assert_int_equal(im.h, 676);
  bd_image_free(&im);
  free(rot);
  free(kite);
}

/* A pool thread keeps one decoder: failures of every kind must leave it usable. */
static void test_decoder_reuse(void **state) {
  (void)state;
  bd_err e = {0};
  bd_decoder *d = bd_decoder_new(&e);
  assert_non_null(d);
  static const char *const seq[] = {"images/bad/truncated_dog.jpg",    "images/dog.jpg",
                                    "images/bad/bomb_60000x60000.jpg", "images/dog.jpg",
                                    "images/bad/corrupt_idat_crc.png", "images/dog.jpg",
                                    "images/bad/truncated_dog.jpg",    "images/dog.png"};
  bd_image ref;
  must_decode("images/dog.png", NULL, &ref, NULL);
  for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
    size_t n;
    uint8_t *b = slurp(seq[i], &n);
    bd_image im;
    bd_status st = bd_decoder_decode(d, b, n, NULL, &im, NULL, &e);
    if (strstr(seq[i], "/bad/")) {
      assert_int_not_equal(st, BD_OK);
    } else {
      if (st != BD_OK) fail_msg("%s after a failure: %s", seq[i], e.msg);
      assert_memory_equal(im.data, ref.data, (size_t)ref.w * ref.h * 3);
      bd_image_free(&im);
    }
    free(b);
  }
  bd_image_free(&ref);
  bd_decoder_destroy(d);
  bd_decoder_destroy(NULL);
}

/* ---- JPEG messages: cut before the frame header, sampling TurboJPEG's header call
 * does not know, warnings in the header ---- */

/* A small JPEG made here with TurboJPEG (4:2:0, JFIF APP0). */
static unsigned char *small_jpeg(unsigned long *n) {
  enum { W = 40, H = 24 };
  uint8_t px[W * H * 3];
  for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 7 + i / 5);
  tjhandle tj = tjInitCompress();
  unsigned char *j = NULL;
  *n = 0;
  assert_int_equal(tjCompress2(tj, px, W, 0, H, TJPF_RGB, &j, n, TJSAMP_420, 90, 0), 0);
  tjDestroy(tj);
  return j;
}

static void test_jpeg_truncated_header(void **state) {
  (void)state;
  bd_image im;
  bd_err e = {0};
  bd_decode_info info;
  const uint8_t soi[] = {0xFF, 0xD8, 0xFF};
  assert_int_equal(bd_decode_image(soi, 3, NULL, &im, &info, &e), BD_E_INVALID);
  print_message("SOI + 0xFF: %s\n", e.msg);
  assert_string_equal(e.msg, "corrupt JPEG: truncated before the frame header");
  assert_null(im.data);
  assert_int_equal(info.format, BD_IMG_JPEG);
  unsigned long n;
  unsigned char *j = small_jpeg(&n);
  size_t sof = 0;
  for (size_t i = 2; i + 1 < n; i++)
    if (j[i] == 0xFF && j[i + 1] == 0xC0) {
      sof = i;
      break;
    }
  assert_true(sof > 2);
  /* cut just before SOF0 (after the quantisation tables), and a tables-only stream */
  for (int eoi = 0; eoi <= 1; eoi++) {
    uint8_t *b = malloc(sof + 2);
    assert_non_null(b);
    memcpy(b, j, sof);
    b[sof] = 0xFF;
    b[sof + 1] = 0xD9;
    e.msg[0] = '\0';
    assert_int_equal(bd_decode_image(b, sof + (eoi ? 2 : 0), NULL, &im, NULL, &e), BD_E_INVALID);
    print_message("%s: %s\n", eoi ? "tables only + EOI" : "cut before SOF0", e.msg);
    assert_string_equal(e.msg, "corrupt JPEG: truncated before the frame header");
    assert_null(im.data);
    free(b);
  }
  tjFree(j);
}

/* An Adobe APP14 with an unknown transform (7) in place of the JFIF APP0: libjpeg warns
 * while reading the header. Warnings are errors (as in the decode; the harmless ones
 * test_decode_jpeg_compat.py covers aside), with the same tag, whatever the decoder did
 * before. */
static void test_jpeg_header_warning(void **state) {
  (void)state;
  unsigned long n;
  unsigned char *j = small_jpeg(&n);
  assert_memory_equal(j + 6, "JFIF\0", 5);
  uint8_t *bad = malloc(n);
  assert_non_null(bad);
  memcpy(bad, j, n);
  bad[3] = 0xEE; /* APP14, same length (16) */
  memcpy(bad + 6, "Adobe\0\x64\0\0\0\0\x07", 12);
  bd_image im;
  bd_err e = {0}, e2 = {0};
  assert_int_equal(bd_decode_image(bad, n, NULL, &im, NULL, &e), BD_E_INVALID);
  print_message("Adobe transform 7, fresh decoder: %s\n", e.msg);
  assert_non_null(strstr(e.msg, "corrupt JPEG: header (libjpeg warning treated as error): "));
  assert_non_null(strstr(e.msg, "Adobe color transform"));
  assert_null(im.data);
  /* the same decoder after a good decode, and after a decode-time warning */
  bd_decoder *d = bd_decoder_new(&e2);
  assert_non_null(d);
  assert_int_equal(bd_decoder_decode(d, j, n, NULL, &im, NULL, &e2), BD_OK);
  bd_image_free(&im);
  assert_int_equal(bd_decoder_decode(d, bad, n, NULL, &im, NULL, &e2), BD_E_INVALID);
  assert_string_equal(e2.msg, e.msg);
  assert_int_equal(bd_decoder_decode(d, j, n - 40, NULL, &im, NULL, &e2), BD_E_INVALID);
  assert_non_null(strstr(e2.msg, "decode (libjpeg warning treated as error)"));
  assert_int_equal(bd_decoder_decode(d, bad, n, NULL, &im, NULL, &e2), BD_E_INVALID);
  assert_string_equal(e2.msg, e.msg);
  bd_decoder_destroy(d);
  free(bad);
  tjFree(j);
}

static int run_sh(const char *cmd) {
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static uint8_t *read_ppm(const char *path, int *w, int *h) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  int maxv = 0;
  assert_int_equal(fscanf(f, "P6 %d %d %d", w, h, &maxv), 3);
  assert_int_equal(maxv, 255);
  fgetc(f);
  size_t n = (size_t)*w * *h * 3;
  uint8_t *b = malloc(n);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, n, f), n);
  fclose(f);
  return b;
}

/* Luma sampled 3x1 (cjpeg -sample 3x1): a valid file that tjDecompressHeader3 refuses
 * ("Could not determine subsampling type"). It decodes, to djpeg's pixels. */
static void test_jpeg_odd_subsampling(void **state) {
  (void)state;
  if (run_sh("command -v cjpeg >/dev/null 2>&1 && command -v djpeg >/dev/null 2>&1") != 0) {
    print_message("SKIP: cjpeg/djpeg (libjpeg-turbo-progs) not installed\n");
    skip();
  }
  char dir[] = "/tmp/bd_test_decode_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char src[64], jpg[64], ref[64], half[64], cmd[1024];
  snprintf(src, sizeof src, "%s/src.ppm", dir);
  snprintf(jpg, sizeof jpg, "%s/s31.jpg", dir);
  snprintf(ref, sizeof ref, "%s/ref.ppm", dir);
  snprintf(half, sizeof half, "%s/half.ppm", dir);
  enum { W = 96, H = 40 };
  uint8_t px[W * H * 3];
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      uint8_t *p = px + (y * W + x) * 3;
      p[0] = (uint8_t)(x * 2 + y);
      p[1] = (uint8_t)(255 - x - y * 3);
      p[2] = (uint8_t)((x / 8 + y / 8) % 2 ? 200 : 40);
    }
  FILE *f = fopen(src, "wb");
  assert_non_null(f);
  fprintf(f, "P6\n%d %d\n255\n", W, H);
  assert_int_equal(fwrite(px, 1, sizeof px, f), sizeof px);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "cjpeg -quality 95 -sample 3x1 %s > %s && djpeg -ppm %s > %s && "
           "djpeg -ppm -scale 1/2 %s > %s",
           src, jpg, jpg, ref, jpg, half);
  assert_int_equal(run_sh(cmd), 0);
  size_t n;
  uint8_t *b = slurp_abs(jpg, &n);
  int rw, rh;
  uint8_t *rp = read_ppm(ref, &rw, &rh);
  bd_image im;
  bd_decode_info info;
  bd_err e = {0};
  bd_status st = bd_decode_image(b, n, NULL, &im, &info, &e);
  if (st != BD_OK) fail_msg("3x1 JPEG: %s", e.msg);
  assert_int_equal(im.w, W);
  assert_int_equal(im.h, H);
  assert_int_equal(rw, W);
  assert_int_equal(info.components, 3);
  assert_int_equal(info.orig_w, W);
  assert_memory_equal(im.data, rp, sizeof px);
  double d = 0;
  for (size_t i = 0; i < sizeof px; i++) d += abs((int)im.data[i] - (int)px[i]);
  print_message("3x1 JPEG: equal to djpeg; mean |diff| to the source %.2f\n", d / sizeof px);
  assert_true(d / sizeof px < 16.0); /* garbage would be far over */
  bd_image_free(&im);
  free(rp);
  /* the DCT-scaled path too: 1/2 as djpeg -scale 1/2 */
  bd_decode_opts o = {.target_w = 40, .target_h = 16};
  assert_int_equal(bd_decode_image(b, n, &o, &im, &info, &e), BD_OK);
  assert_int_equal(info.scale_denom, 2);
  rp = read_ppm(half, &rw, &rh);
  assert_int_equal(im.w, rw);
  assert_int_equal(im.h, rh);
  assert_memory_equal(im.data, rp, (size_t)rw * rh * 3);
  bd_image_free(&im);
  free(rp);
  free(b);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  run_sh(cmd);
}

/* The stored size from the header alone (the worker's memory budget reserves it before
 * decoding): equal to what decoding finds, for JPEG (baseline, progressive, CMYK, the
 * 60000 x 60000 bomb's header) and PNG; 0 for what is neither or has no readable header. */
static void test_peek_size(void **state) {
  (void)state;
  const char *files[] = {"images/dog.jpg", "images/dog.png", "images/bad/ok_progressive_person.jpg",
                         "images/bad/ok_cmyk_scream.jpg", "images/horses_gray.jpg"};
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    size_t n = 0;
    uint8_t *b = slurp(files[f], &n);
    int w = 0, h = 0;
    assert_int_equal(bd_decode_peek_size(b, n, &w, &h), 1);
    bd_image im = {0};
    bd_decode_info info;
    bd_err e;
    assert_int_equal(bd_decode_image(b, n, NULL, &im, &info, &e), BD_OK);
    assert_int_equal(w, info.orig_w);
    assert_int_equal(h, info.orig_h);
    bd_image_free(&im);
    free(b);
  }
  size_t n = 0;
  uint8_t *b = slurp("images/bad/bomb_60000x60000.jpg", &n);
  int w = 0, h = 0;
  assert_int_equal(bd_decode_peek_size(b, n, &w, &h), 1);
  assert_int_equal(w, 60000);
  assert_int_equal(h, 60000);
  free(b);
  b = slurp("images/bad/not_an_image.jpg", &n);
  assert_int_equal(bd_decode_peek_size(b, n, &w, &h), 0);
  free(b);
  const uint8_t soi_only[] = {0xFF, 0xD8, 0xFF, 0xD9};
  assert_int_equal(bd_decode_peek_size(soi_only, sizeof soi_only, &w, &h), 0);
  const uint8_t png_short[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H'};
  assert_int_equal(bd_decode_peek_size(png_short, sizeof png_short, &w, &h), 0);
}

int main(void) {
  const char *d = getenv("BD_TEST_DATA");
  snprintf(g_data, sizeof g_data, "%s", d ? d : "../shared/data");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peek_size),           cmocka_unit_test(test_photo_sizes),
      cmocka_unit_test(test_dog_equals_png),      cmocka_unit_test(test_gray),
      cmocka_unit_test(test_progressive),         cmocka_unit_test(test_cmyk),
      cmocka_unit_test(test_bad_expected),        cmocka_unit_test(test_misc_errors),
      cmocka_unit_test(test_exif_orientation),    cmocka_unit_test(test_scaled_kite),
      cmocka_unit_test(test_encode_roundtrip),    cmocka_unit_test(test_decoder_reuse),
      cmocka_unit_test(test_scaled_oriented),     cmocka_unit_test(test_jpeg_truncated_header),
      cmocka_unit_test(test_jpeg_header_warning), cmocka_unit_test(test_jpeg_odd_subsampling),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
