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

  /* IHDR is the first chunk by rule: check the size before libpng allocates anything
   * for it, with the same message as for JPEG. */
  if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0) {
    uint32_t w = be32(buf + 16), h = be32(buf + 20);
    info->orig_w = (int)(w > INT32_MAX ? INT32_MAX : w);
    info->orig_h = (int)(h > INT32_MAX ? INT32_MAX : h);
    st = bd_decode_check_size(w, h, lim, err);
    if (st != BD_OK) return st;
  }
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
  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, pi, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_scale_16(png); /* rounds, where strip_16 truncates */
  if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, pi);

  const int ch = png_get_channels(png, pi);
  if ((ch != 3 && ch != 4) || png_get_rowbytes(png, pi) != (size_t)w * ch) {
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
  png_read_image(png, c.rows);
  /* read to IEND: checks the CRCs and the zlib stream end of what follows the pixels */
  png_read_end(png, pi);
  info->orientation = lim->ignore_orientation ? 1 : exif_orientation(png, pi);

  if (ch == 4) {
    /* composite over black = premultiply; in place, since dst index <= src index */
    const size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
      const uint8_t *s = c.pix + 4 * i;
      unsigned a = s[3];
      uint8_t r = (uint8_t)((s[0] * a + 127) / 255), g = (uint8_t)((s[1] * a + 127) / 255),
              b = (uint8_t)((s[2] * a + 127) / 255);
      c.pix[3 * i] = r;
      c.pix[3 * i + 1] = g;
      c.pix[3 * i + 2] = b;
    }
    uint8_t *shrunk = realloc(c.pix, n * 3);
    if (shrunk) c.pix = shrunk;
  }
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
