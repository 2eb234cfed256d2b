/* libFuzzer target for the image decoders (outside input: every fetched image).
 * Exercises the JPEG marker / EXIF scan, the TIFF parser, and full JPEG and PNG
 * decodes under a small pixel limit (4 MP, 4096 px per side) so that each input stays
 * fast; a decoded image must be consistent with its info, survive orientation,
 * drawing, and a JPEG encode -> decode round trip, else abort().
 * The decoder is kept across inputs, as in the worker's pool, so a failed decode must
 * leave it usable. Seeds in corpus/decode/ were cut from the shared photos with
 * jpegtran/cjpeg (baseline, progressive, gray, arithmetic, restart, 4:4:4, Adobe
 * CMYK, EXIF orientation 6) and written with Python's zlib (PNG colour types, Adam7,
 * eXIf, bad CRC, a 60000x60000 IHDR), plus a few invalid inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_decode.h"
#include "bd_draw.h"

#define FUZZ_MAX_PIXELS (4u * 1000 * 1000)

static bd_decoder *g_dec;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_decode: invariant failed: %s\n", what);
    abort();
  }
}

static void consistent(const bd_image *im, const bd_decode_info *info) {
  check(im->data != NULL && im->w >= 1 && im->h >= 1, "non-empty image");
  check(im->w == info->out_w && im->h == info->out_h, "info out size");
  check((uint64_t)info->orig_w * info->orig_h <= FUZZ_MAX_PIXELS, "pixel limit");
  check(info->orientation >= 1 && info->orientation <= 8, "orientation range");
  check(info->scale_num == 1 && info->scale_denom >= 1, "scale factor");
  int sw = (info->orig_w + info->scale_denom - 1) / info->scale_denom;
  int sh = (info->orig_h + info->scale_denom - 1) / info->scale_denom;
  int swap = info->orientation >= 5;
  check(im->w == (swap ? sh : sw) && im->h == (swap ? sw : sh), "scaled, oriented size");
  check(info->oriented_w == (swap ? info->orig_h : info->orig_w), "oriented size");
  /* touch every byte so ASan sees an undersized buffer */
  unsigned sum = 0;
  for (size_t i = 0; i < (size_t)im->w * im->h * 3; i++) sum += im->data[i];
  (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bd_err err = {0};
  if (!g_dec) {
    g_dec = bd_decoder_new(&err);
    check(g_dec != NULL, "decoder_new");
  }
  int o = bd_decode_jpeg_orientation(data, size);
  check(o >= 1 && o <= 8, "jpeg orientation range");
  o = bd_decode_exif_orientation(data, size);
  check(o >= 1 && o <= 8, "exif orientation range");

  bd_decode_opts opts = {.max_pixels = FUZZ_MAX_PIXELS, .max_side = 4096};
  bd_image im;
  bd_decode_info info;
  bd_status st = bd_decoder_decode(g_dec, data, size, &opts, &im, &info, &err);
  if (st != BD_OK) {
    check(im.data == NULL, "no image on failure");
    check(err.msg[0] != '\0' && strchr(err.msg, '\n') == NULL, "one-line message");
    return 0;
  }
  consistent(&im, &info);
  size_t small = (size_t)im.w * im.h <= 256u * 256u;
  if (small) {
    bd_draw_rect(&im, 1, 1, im.w - 1, im.h - 1, 2, bd_draw_palette(size));
    bd_draw_label(&im, 2, 2, "fuzz 0.99 ~{|}", 1, (bd_rgb){0, 0, 0}, (bd_rgb){255, 255, 0});
    uint8_t *j = NULL;
    size_t jn = 0;
    check(bd_encode_jpeg(&im, 75, &j, &jn, &err) == BD_OK, "encode");
    bd_image back;
    bd_decode_info bi;
    check(bd_decode_image(j, jn, NULL, &back, &bi, &err) == BD_OK, "re-decode of our own JPEG");
    check(back.w == im.w && back.h == im.h, "round-trip size");
    bd_image_free(&back);
    free(j);
  }
  bd_image_free(&im);

  /* the DCT-scaled path, with the target derived from the size so it varies */
  if (info.format == BD_IMG_JPEG && info.orig_w >= 16 && info.orig_h >= 16) {
    opts.target_w = 1 + (int)(size % 97);
    opts.target_h = 1 + (int)(size % 89);
    opts.fit = (bd_decode_fit)(size & 1);
    st = bd_decoder_decode(g_dec, data, size, &opts, &im, &info, &err);
    if (st == BD_OK) {
      consistent(&im, &info);
      bd_image_free(&im);
    }
  }
  return 0;
}
