/* bd_decode: image bytes -> bd_image (8-bit RGB, interleaved, packed rows).
 *
 * The format is sniffed from the content (JPEG SOI, PNG signature), never from a
 * file name. JPEG goes through TurboJPEG, PNG through libpng. Both paths check the
 * dimensions read from the header against a pixel limit and a per-side limit BEFORE
 * the pixel buffer is allocated, so a 60000x60000 "bomb" fails fast from its header.
 * Other image formats (WebP, TIFF, BMP, GIF, ...) are recognised by their magic bytes
 * for the message only ("unsupported image format (WebP): ..."), never decoded.
 *
 * PNG decompression bombs: the IDAT chunks' total length is checked against what the
 * image's raw rows can need (see bd_decode_png.c) before anything is inflated, so
 * gigabytes of zeros after the pixels fail fast ("a decompression bomb?").
 *
 * Strictness: libjpeg warnings (e.g. "Premature end of JPEG file", or an unknown
 * JFIF revision while reading the header) are errors, since libjpeg pads a truncated
 * image with gray and calls it decoded; the message says "libjpeg warning treated as
 * error". Valid JPEGs with sampling factors TurboJPEG's header call does not list
 * (3x1, ...) are decoded. PNG chunk CRC and zlib errors are errors; ancillary-chunk
 * warnings are ignored. A PNG chunk whose declared length runs past the end of the
 * input fails before anything is allocated for it, and PNG ancillary chunks other
 * than eXIf (text, ICC, ...) are skipped unread, so nothing is inflated for them.
 *
 * Colour: grayscale expands to R=G=B; CMYK/YCCK JPEGs are converted to RGB (Adobe
 * APP14 files store inverted CMYK, others are taken as plain CMYK); PNG palette and
 * low bit depths expand, 16-bit samples are truncated to 8 (v >> 8, as imread does),
 * the alpha channel is dropped
 * and tRNS ignored, the colour kept as stored (not composited): the pixels OpenCV's
 * imread(IMREAD_COLOR) and PIL's convert('RGB'), which the models are matched
 * against, give. No colour management (ICC profiles and gamma chunks are ignored).
 *
 * Orientation: the EXIF orientation (IFD0 tag 0x0112, JPEG APP1 or PNG eXIf) is
 * applied unless opts->ignore_orientation; info reports the stored and the oriented
 * sizes.
 *
 * DCT-domain downscale (JPEG only): when opts give a target size and the image is at
 * least twice what the resize to that target needs, TurboJPEG decodes at 1/2, 1/4 or
 * 1/8 scale (the largest reduction that keeps both sides >= what is needed). info
 * carries the factor and the original size so that boxes found on the decoded image
 * can be mapped back: x_orig = x_out * info.oriented_w / info.out_w.
 *
 * Thread safety: a bd_decoder is used by one thread at a time (one per pool thread);
 * bd_decode_image and bd_encode_jpeg are reentrant (they make a temporary one). */
#ifndef BD_DECODE_H
#define BD_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "bd_image.h"
#include "bd_status.h"

/* 2^28 pixels (268 MP, 805 MB as RGB): room for 108 MP and 200 MP phone photos
 * (12000x9000, 16320x12240). */
#define BD_DECODE_DEFAULT_MAX_PIXELS (1ull << 28)
#define BD_DECODE_DEFAULT_MAX_SIDE 65535 /* JPEG's own limit (16-bit sizes in SOF) */
/* PNG allows 2^31-1 per side; libpng's default user limit, which imread keeps, is
 * 1000000. Also bounds libpng's row buffers (a 1 x 2^28 RGBA16 row would be 2 GiB). */
#define BD_DECODE_PNG_MAX_SIDE 1000000
#define BD_DECODE_DEFAULT_MAX_FILE_BYTES (256ull << 20) /* bd_decode_file only */

typedef enum { BD_IMG_UNKNOWN = 0, BD_IMG_JPEG, BD_IMG_PNG } bd_image_format;

/* How the consumer will resize to target_w x target_h; decides what "big enough" is. */
typedef enum {
  BD_DECODE_FIT_LETTERBOX = 0, /* keep aspect: needs (w*r, h*r), r = min(tw/w, th/h) */
  BD_DECODE_FIT_STRETCH = 1    /* needs tw x th */
} bd_decode_fit;

/* All-zero (or a NULL pointer) means the defaults: 2^28 pixels (268 MP), the format's
 * own per-side limit (JPEG 65535, PNG BD_DECODE_PNG_MAX_SIDE), EXIF orientation
 * applied, no scaled decoding. */
typedef struct bd_decode_opts {
  uint64_t max_pixels;    /* 0 -> BD_DECODE_DEFAULT_MAX_PIXELS; checked on the stored size */
  int max_side;           /* 0 -> the format's own; longest allowed side (capped to it) */
  int target_w, target_h; /* model input size; 0 -> no DCT scaling */
  bd_decode_fit fit;
  int ignore_orientation; /* 1 -> do not apply EXIF orientation */
} bd_decode_opts;

typedef struct bd_decode_info {
  bd_image_format format;
  int components;     /* in the file: 1 gray, 3 colour, 4 CMYK/YCCK (JPEG) or with alpha (PNG) */
  int orig_w, orig_h; /* as stored in the file, full resolution */
  int orientation;    /* EXIF orientation applied, 1..8 (1 = none) */
  int oriented_w, oriented_h; /* orig_* after orientation: the frame to report boxes in */
  int scale_num, scale_denom; /* DCT scale used (1/1 = none) */
  int out_w, out_h;           /* the returned image (scaled, then oriented) */
} bd_decode_info;

typedef struct bd_decoder bd_decoder;

/* Owned by the caller; free with bd_decoder_destroy. NULL on failure (err set). */
bd_decoder *bd_decoder_new(bd_err *err);
void bd_decoder_destroy(bd_decoder *d); /* NULL is a no-op */

/* Decodes buf[0..len) into *out (which the caller then owns and frees with
 * bd_image_free). opts and info may be NULL. On failure *out is left empty
 * ({0,0,NULL}), the message is one line naming what failed, and the code is
 * BD_E_INVALID (corrupt), BD_E_UNSUPPORTED (unknown format / colour space),
 * BD_E_LIMIT (too large) or BD_E_NOMEM; info then holds what was learnt before the
 * failure (format, stored size from the header). */
bd_status bd_decoder_decode(bd_decoder *d, const uint8_t *buf, size_t len,
                            const bd_decode_opts *opts, bd_image *out, bd_decode_info *info,
                            bd_err *err);

/* Same as above with a temporary decoder (convenient; a pool should keep one decoder
 * per thread instead). */
bd_status bd_decode_image(const uint8_t *buf, size_t len, const bd_decode_opts *opts, bd_image *out,
                          bd_decode_info *info, bd_err *err);

/* The stored size from the header alone, without decoding: 1 with *w, *h when buf is a
 * JPEG or PNG whose frame header (SOF) or IHDR is readable, else 0. For memory budgets:
 * the decoded RGB image takes w * h * 3 bytes (less where DCT scaling applies). */
int bd_decode_peek_size(const uint8_t *buf, size_t len, int *w, int *h);

/* Reads a whole file (at most BD_DECODE_DEFAULT_MAX_FILE_BYTES) and decodes it. A
 * regular file's size is checked before anything is read, and only its first bytes are
 * read when they are not a JPEG or PNG; then the file is read into one buffer of its
 * size. Other files (pipes, /proc) are read in growing chunks up to the limit. */
bd_status bd_decode_file(const char *path, const bd_decode_opts *opts, bd_image *out,
                         bd_decode_info *info, bd_err *err);

/* The format from the first bytes, BD_IMG_UNKNOWN when neither. */
bd_image_format bd_decode_sniff(const uint8_t *buf, size_t len);
const char *bd_decode_format_name(bd_image_format f); /* "jpeg", "png", "unknown" */

/* EXIF orientation 1..8 of a JPEG (APP1) read from its markers before SOS; 1 when
 * absent or malformed. Never reads outside buf. */
int bd_decode_jpeg_orientation(const uint8_t *buf, size_t len);

/* EXIF orientation from a TIFF block (the bytes after "Exif\0\0"); 1 when absent or
 * malformed. Both byte orders; every offset bounds-checked. */
int bd_decode_exif_orientation(const uint8_t *tiff, size_t len);

/* Applies EXIF orientation o (1..8) to im in place (may swap w and h). */
bd_status bd_decode_apply_orientation(bd_image *im, int o, bd_err *err);

/* Encodes im as a baseline JPEG (4:2:0, quality 1..100). *out is malloc'd, the caller
 * frees it with free(). */
bd_status bd_encode_jpeg(const bd_image *im, int quality, uint8_t **out, size_t *len, bd_err *err);

#endif
