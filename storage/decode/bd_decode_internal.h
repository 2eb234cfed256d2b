/* Private to storage/decode: what the format back ends share with the dispatcher. */
#ifndef BD_DECODE_INTERNAL_H
#define BD_DECODE_INTERNAL_H

#include <stdint.h>

#include "bd_decode.h"

/* Options with the defaults filled in. */
typedef struct bd_decode_lim {
  uint64_t max_pixels;
  int max_side;
  int target_w, target_h;
  bd_decode_fit fit;
  int ignore_orientation;
} bd_decode_lim;

/* Fails with BD_E_LIMIT (message names the limit) when w x h may not be allocated. */
bd_status bd_decode_check_size(long long w, long long h, const bd_decode_lim *lim, bd_err *err);

/* Back ends: decode to RGB (unoriented) and fill info->{components, orig_*,
 * scale_*, orientation}; the dispatcher applies the orientation. */
bd_status bd_decode_jpeg_rgb(void *tj, const uint8_t *buf, size_t len, const bd_decode_lim *lim,
                             bd_image *out, bd_decode_info *info, bd_err *err);
bd_status bd_decode_png_rgb(const uint8_t *buf, size_t len, const bd_decode_lim *lim, bd_image *out,
                            bd_decode_info *info, bd_err *err);

/* Per-thread TurboJPEG decompressor owned by a bd_decoder. */
void *bd_decode_tj_new(bd_err *err);
void bd_decode_tj_free(void *tj);

/* The SOF's width and height: 1 when found before SOS, else 0. */
int bd_decode_jpeg_dims(const uint8_t *buf, size_t len, int *w, int *h);

/* IHDR's width and height (IHDR is the first chunk by rule): 1 when there, else 0. */
int bd_decode_png_dims(const uint8_t *buf, size_t len, uint32_t *w, uint32_t *h);

#endif
