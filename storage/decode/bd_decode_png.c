/* PNG back end (libpng, read from memory). libpng reports errors by longjmp, so the
 * state that must survive one lives in a struct reached through a pointer, and all
 * cleanup happens after the setjmp returns. */
#include <png.h>
#include <stdio.h>
#include <string.h>

#include "bd_decode.h"
#include "bd_decode_internal.h"

typedef struct png_ctx {
  const uint8_t *buf;
  size_t len, pos;
  uint8_t *pix;    /* w*h*channels, becomes out->data */
  png_bytep *rows; /* row pointers into pix */
  char msg[200];   /* libpng's error text */
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, odd sRGB profiles) do not damage pixels, and
 * libraries never print: drop them. */
static void on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

static void on_read(png_structp png, png_bytep data, png_size_t n) {
  png_ctx *c = png_get_io_ptr(png);
  if (n > c->len - c->pos) png_error(png, "truncated file");
  memcpy(data, c->buf + c->pos, n);
  c->pos += n;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The bytes of filtered rows (a filter byte + the packed samples per row) the zlib
 * stream of an image with this IHDR inflates to, saturating; 0 when IHDR is not valid
 * (libpng then fails on it). Adam7 images: the sum over the seven passes' sub-images. */
static uint64_t raw_size(uint32_t w, uint32_t h, int depth, int ctype, int interlace) {
  static const uint8_t x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
  static const uint8_t dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
  const int ch = ctype == 0 || ctype == 3 ? 1
                 : ctype == 2             ? 3
                 : ctype == 4             ? 2
                 : ctype == 6             ? 4
                                          : 0;
  if (!ch || depth < 1 || depth > 16 || w == 0 || h == 0 || interlace > 1) return 0;
  uint64_t raw = 0;
  for (int p = interlace ? 0 : 6; p < 7; p++) {
    const uint64_t pw = interlace ? (w > x0[p] ? (w - x0[p] + dx[p] - 1) / dx[p] : 0) : w;
    const uint64_t ph = interlace ? (h > y0[p] ? (h - y0[p] + dy[p] - 1) / dy[p] : 0) : h;
    if (!pw || !ph) continue;
    const uint64_t row = (pw * (uint64_t)(ch * depth) + 7) / 8 + 1; /* < 2^35 */
    if (ph > (UINT64_MAX - raw) / row) return UINT64_MAX;
    raw += ph * row;
  }
  return raw;
}

/* Walks the chunk headers in buf (after the signature) up to IEND and fails when a
 * declared length runs past the end of the input. libpng allocates some chunks (eXIf,
 * tEXt, sPLT, ...) at their declared size before reading them, so a 44-byte file that
 * declares 2 GB would otherwise cost 2 GB before "truncated file".
 *
 * It also sums the IDAT lengths: libpng inflates the whole zlib stream (reading the
 * last row swallows whatever follows the pixels), so 8 MB of IDAT can carry 8 GiB of
 * zeros, 11 s of inflating, after a small image. No encoder needs more IDAT than the raw rows plus
 * deflate's worst case: stored blocks add 5 bytes per 65535 (zlib, libpng, miniz, stb
 * fall back to them), an encoder that only codes fixed Huffman spends at most 9 bits
 * per byte (raw / 8 more), and 65536 covers the zlib header and trailer and the block
 * overhead of tiny images. A stream over that is refused before anything is inflated;
 * *idat_end is where the last IDAT chunk ends (0 when there is none). */
static bd_status check_chunk_lengths(const uint8_t *buf, size_t len, size_t *idat_end,
                                     bd_err *err) {
  size_t p = 8;
  uint64_t idat = 0;
  *idat_end = 0;
  while (len - p >= 8) {
    const uint32_t n = be32(buf + p);
    const uint8_t *t = buf + p + 4;
    if (n > PNG_UINT_31_MAX || n > len - p - 8 || len - p - 8 - n < 4) {
      char name[5];
      for (int i = 0; i < 4; i++)
        name[i] = (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z') ? (char)t[i] : '?';
      name[4] = '\0';
      return bd_err_set(err, BD_E_INVALID,
                        "corrupt PNG: truncated file (%s chunk declares %lu bytes, %zu left)", name,
                        (unsigned long)n, len - p - 8);
    }
    if (memcmp(t, "IEND", 4) == 0) break;
    if (memcmp(t, "IDAT", 4) == 0) {
      idat += n;
      *idat_end = p + 12 + (size_t)n;
    }
    p += 12 + (size_t)n;
  }
  if (len >= 29 && memcmp(buf + 12, "IHDR", 4) == 0) {
    const uint64_t raw = raw_size(be32(buf + 16), be32(buf + 20), buf[24], buf[25], buf[28]);
    if (raw && raw < UINT64_MAX / 2 && idat > raw + raw / 8 + 65536)
      return bd_err_set(err, BD_E_LIMIT,
                        "PNG: %.1f MB of IDAT data for a %.1f MB image (a decompression bomb?)",
                        (double)idat / 1e6, (double)raw / 1e6);
  }
  return BD_OK;
}

int bd_decode_png_dims(const uint8_t *buf, size_t len, uint32_t *w, uint32_t *h) {
  if (len < 24 || memcmp(buf + 12, "IHDR", 4) != 0) return 0;
  *w = be32(buf + 16), *h = be32(buf + 20);
  return 1;
}

static int exif_orientation(png_structp png, png_infop pi) {
#ifdef PNG_eXIf_SUPPORTED
  png_bytep ex = NULL;
  png_uint_32 n = 0;
  if (png_get_eXIf_1(png, pi, &n, &ex) && ex) {
    if (n >= 6 && memcmp(ex, "Exif\0\0", 6) == 0) return bd_decode_exif_orientation(ex + 6, n - 6);
    return bd_decode_exif_orientation(ex, n);
  }
#endif
  (void)png;
  (void)pi;
  return 1;
}

bd_status bd_decode_png_rgb(const uint8_t *buf, size_t len, const bd_decode_lim *lim, bd_image *out,
                            bd_decode_info *info, bd_err *err) {
  volatile bd_status st = BD_OK; /* set on both sides of setjmp */
  png_ctx c = {.buf = buf, .len = len};
  png_ctx *volatile cp = &c; /* what the longjmp path reads */
  png_structp png = NULL;
  png_infop pi = NULL;

  /* The size checked before libpng allocates anything for it, with the same message as
   * for JPEG. */
  uint32_t iw = 0, ih = 0;
  if (bd_decode_png_dims(buf, len, &iw, &ih)) {
    info->orig_w = (int)(iw > INT32_MAX ? INT32_MAX : iw);
    info->orig_h = (int)(ih > INT32_MAX ? INT32_MAX : ih);
    st = bd_decode_check_size(iw, ih, lim, err);
    if (st != BD_OK) return st;
  }
  size_t idat_end = 0;
  st = check_chunk_lengths(buf, len, &idat_end, err);
  if (st != BD_OK) return st;
  png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
  if (!png) return bd_err_set(err, BD_E_NOMEM, "libpng: cannot create a read struct");
  pi = png_create_info_struct(png);
  if (!pi) {
    st = bd_err_set(err, BD_E_NOMEM, "libpng: cannot create an info struct");
    goto out;
  }
  if (setjmp(png_jmpbuf(png))) {
    st = bd_err_set(err, BD_E_INVALID, "corrupt PNG: %s", cp->msg);
    goto out;
  }
  png_set_user_limits(png, (png_uint_32)lim->max_side, (png_uint_32)lim->max_side);
  /* What libpng may inflate or keep for one chunk: never more than the input. (libpng
   * 1.6.39 does not check every chunk's length against it, e.g. eXIf's:
   * check_chunk_lengths does that.) */
  png_set_chunk_malloc_max(png, len);
  /* Only the pixels, the palette and eXIf (orientation) are used: every other
   * ancillary chunk (text, ICC, sPLT, ...) is skipped unread, so nothing inflates a
   * zTXt/iTXt/iCCP bomb. */
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, (png_const_bytep) "eXIf", 1);
  png_set_read_fn(png, &c, on_read);
  png_read_info(png, pi);

  png_uint_32 w = 0, h = 0;
  int depth = 0, ctype = 0, interlace = 0;
  png_get_IHDR(png, pi, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  info->orig_w = (int)w;
  info->orig_h = (int)h;
  info->components = png_get_channels(png, pi);
  if (bd_decode_check_size(w, h, lim, err) != BD_OK) {
    st = err ? err->code : BD_E_LIMIT;
    goto out;
  }
  /* Alpha is dropped and tRNS ignored, colour kept as stored: what the pipelines the
   * models are matched against feed them (OpenCV imread(IMREAD_COLOR) strips alpha and
   * ignores tRNS; PIL convert('RGB') drops alpha and takes a palette entry's colour). */
  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  png_set_strip_alpha(png);
  if (depth == 16) png_set_strip_16(png); /* v >> 8, as imread (not scale_16's rounding) */
  if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, pi);

  const int ch = png_get_channels(png, pi);
  if (ch != 3 || png_get_rowbytes(png, pi) != (size_t)w * ch) {
    st =
        bd_err_set(err, BD_E_INTERNAL, "PNG: unexpected layout after transforms (%d channels)", ch);
    goto out;
  }
  c.pix = malloc((size_t)w * h * ch);
  c.rows = malloc(sizeof(png_bytep) * h);
  if (!c.pix || !c.rows) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
    goto out;
  }
  for (png_uint_32 y = 0; y < h; y++) c.rows[y] = c.pix + (size_t)y * w * ch;
  /* Row by row (what png_read_image does) so as to stop before the last row: the last
   * png_read_row inflates whatever the stream still holds after the pixels (libpng's
   * png_read_finish_IDAT). A legitimate stream then has at most the last row's data
   * left, plus what libpng buffered (8192) and the stream's end; the IDAT bound above
   * still lets a big image carry raw / 8 of excess, which zeros make ~1000 times more. */
  const uint64_t last_row =
      ((uint64_t)w * (unsigned)info->components * (unsigned)depth + 7) / 8 + 1;
  for (int p = 0; p < passes; p++) {
    for (png_uint_32 y = 0; y < h; y++) {
      if (p == passes - 1 && y == h - 1 && idat_end > c.pos &&
          idat_end - c.pos > last_row + last_row / 8 + 65536 + 8192) {
        st = bd_err_set(err, BD_E_LIMIT,
                        "PNG: %.1f MB of compressed data after the image's pixels (a "
                        "decompression bomb?)",
                        (double)(idat_end - c.pos) / 1e6);
        goto out;
      }
      png_read_row(png, c.rows[y], NULL);
    }
  }
  /* read to IEND: checks the CRCs and the zlib stream end of what follows the pixels */
  png_read_end(png, pi);
  info->orientation = lim->ignore_orientation ? 1 : exif_orientation(png, pi);

  out->data = c.pix;
  out->w = (int)w;
  out->h = (int)h;
  c.pix = NULL;
out:
  png_destroy_read_struct(&png, pi ? &pi : NULL, NULL);
  free(cp->rows);
  free(cp->pix);
  return st;
}
