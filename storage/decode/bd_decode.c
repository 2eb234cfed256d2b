/* bd_decode: format sniffing, limits, EXIF orientation and the public entry points.
 * The format back ends live in bd_decode_jpeg.c and bd_decode_png.c. */
#include "bd_decode.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "bd_decode_internal.h"

struct bd_decoder {
  void *tj; /* TurboJPEG decompressor: reused across images, so one per thread */
};

bd_decoder *bd_decoder_new(bd_err *err) {
  bd_decoder *d = calloc(1, sizeof *d);
  if (!d) {
    bd_err_set(err, BD_E_NOMEM, "decoder: out of memory");
    return NULL;
  }
  d->tj = bd_decode_tj_new(err);
  if (!d->tj) {
    free(d);
    return NULL;
  }
  return d;
}

void bd_decoder_destroy(bd_decoder *d) {
  if (!d) return;
  bd_decode_tj_free(d->tj);
  free(d);
}

bd_image_format bd_decode_sniff(const uint8_t *buf, size_t len) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (!buf) return BD_IMG_UNKNOWN;
  if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return BD_IMG_JPEG;
  if (len >= 8 && memcmp(buf, png_sig, 8) == 0) return BD_IMG_PNG;
  return BD_IMG_UNKNOWN;
}

/* The name of an image format that is recognised but not decoded, from its magic bytes
 * (what imread's decoders check), or NULL. Only for the error message: a valid WebP
 * should not be reported as "not an image". */
static const char *sniff_unsupported(const uint8_t *b, size_t n) {
  static const uint8_t jp2[12] = {0, 0, 0, 12, 'j', 'P', ' ', ' ', '\r', '\n', 0x87, '\n'};
  static const uint8_t jxl[12] = {0, 0, 0, 12, 'J', 'X', 'L', ' ', '\r', '\n', 0x87, '\n'};
  static const uint8_t sun[4] = {0x59, 0xA6, 0x6A, 0x95}, exr[4] = {0x76, 0x2F, 0x31, 0x01};
  const int ws3 = n >= 3 && (b[2] == ' ' || b[2] == '\t' || b[2] == '\r' || b[2] == '\n');
  if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return "WebP";
  if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4) || !memcmp(b, "II+\0", 4) ||
                 !memcmp(b, "MM\0+", 4)))
    return "TIFF";
  if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return "GIF";
  if (n >= 18 && b[0] == 'B' && b[1] == 'M') { /* "BM" and a known DIB header size */
    const uint32_t dib = b[14] | (uint32_t)b[15] << 8 | (uint32_t)b[16] << 16 | (uint32_t)b[17] << 24;
    if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 || dib == 124)
      return "BMP";
  }
  if ((n >= 12 && !memcmp(b, jp2, 12)) || (n >= 4 && b[0] == 0xFF && b[1] == 0x4F &&
                                           b[2] == 0xFF && b[3] == 0x51))
    return "JPEG 2000";
  if ((n >= 12 && !memcmp(b, jxl, 12)) || (n >= 2 && b[0] == 0xFF && b[1] == 0x0A))
    return "JPEG XL";
  if (n >= 12 && !memcmp(b + 4, "ftyp", 4)) { /* ISO BMFF: the major brand */
    if (!memcmp(b + 8, "avif", 4) || !memcmp(b + 8, "avis", 4)) return "AVIF";
    if (!memcmp(b + 8, "heic", 4) || !memcmp(b + 8, "heix", 4) || !memcmp(b + 8, "mif1", 4) ||
        !memcmp(b + 8, "msf1", 4) || !memcmp(b + 8, "hevc", 4))
      return "HEIF";
  }
  if (ws3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6') return "PPM/PGM/PBM";
  if (ws3 && b[0] == 'P' && b[1] == '7') return "PAM";
  if (ws3 && b[0] == 'P' && (b[1] == 'F' || b[1] == 'f')) return "PFM";
  if (n >= 4 && !memcmp(b, sun, 4)) return "Sun raster";
  if (n >= 4 && !memcmp(b, exr, 4)) return "OpenEXR";
  if ((n >= 10 && !memcmp(b, "#?RADIANCE", 10)) || (n >= 6 && !memcmp(b, "#?RGBE", 6)))
    return "Radiance HDR";
  return NULL;
}

int bd_decode_peek_size(const uint8_t *buf, size_t len, int *w, int *h) {
  switch (bd_decode_sniff(buf, len)) {
    case BD_IMG_JPEG:
      return bd_decode_jpeg_dims(buf, len, w, h);
    case BD_IMG_PNG: {
      uint32_t pw, ph;
      if (!bd_decode_png_dims(buf, len, &pw, &ph) || pw > INT32_MAX || ph > INT32_MAX) return 0;
      *w = (int)pw, *h = (int)ph;
      return 1;
    }
    default:
      return 0;
  }
}

const char *bd_decode_format_name(bd_image_format f) {
  switch (f) {
    case BD_IMG_JPEG:
      return "jpeg";
    case BD_IMG_PNG:
      return "png";
    default:
      return "unknown";
  }
}

bd_status bd_decode_check_size(long long w, long long h, const bd_decode_lim *lim, bd_err *err) {
  if (w < 1 || h < 1)
    return bd_err_set(err, BD_E_INVALID, "image has an empty size (%lldx%lld)", w, h);
  double mp = (double)w * (double)h / 1e6, lim_mp = (double)lim->max_pixels / 1e6;
  /* the pixel limit first: it is the one that bounds the allocation */
  if ((unsigned long long)w * (unsigned long long)h > lim->max_pixels)
    return bd_err_set(err, BD_E_LIMIT, "image is %lldx%lld (%.1f MP), over the %.*f MP limit", w, h,
                      mp, lim_mp == (double)(long long)lim_mp ? 0 : 1, lim_mp);
  if (w > lim->max_side || h > lim->max_side)
    return bd_err_set(err, BD_E_LIMIT, "image is %lldx%lld, over the %d px per-side limit", w, h,
                      lim->max_side);
  return BD_OK;
}

/* ---- EXIF ---- */

static unsigned rd16(const uint8_t *p, int be) {
  return be ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}
static uint32_t rd32(const uint8_t *p, int be) {
  return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
            : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

int bd_decode_exif_orientation(const uint8_t *t, size_t len) {
  if (!t || len < 8) return 1;
  int be;
  if (t[0] == 'I' && t[1] == 'I')
    be = 0;
  else if (t[0] == 'M' && t[1] == 'M')
    be = 1;
  else
    return 1;
  if (rd16(t + 2, be) != 42) return 1;
  uint32_t ifd = rd32(t + 4, be);
  /* offsets are relative to the TIFF header and come from outside: check each one */
  if (ifd < 8 || ifd > len || len - ifd < 2) return 1;
  unsigned n = rd16(t + ifd, be);
  /* as OpenCV: an entry count that runs past the segment keeps the entries that fit
   * (up to their value), and the orientation's count is not looked at */
  for (unsigned i = 0; i < n; i++) {
    const size_t off = ifd + 2 + 12 * (size_t)i;
    if (off > len || len - off < 10) return 1;
    const uint8_t *e = t + off;
    if (rd16(e, be) != 0x0112) continue;
    unsigned type = rd16(e + 2, be);
    unsigned v;
    if (type == 3)
      v = rd16(e + 8, be); /* SHORT, the spec's type */
    else if (type == 4 && len - off >= 12)
      v = rd32(e + 8, be); /* LONG, seen from sloppy writers */
    else
      return 1;
    return v >= 1 && v <= 8 ? (int)v : 1;
  }
  return 1;
}

int bd_decode_jpeg_orientation(const uint8_t *buf, size_t len) {
  if (bd_decode_sniff(buf, len) != BD_IMG_JPEG) return 1;
  size_t p = 2;
  while (p < len) {
    if (buf[p] != 0xFF) return 1;          /* not a marker where one must be */
    while (p < len && buf[p] == 0xFF) p++; /* fill bytes */
    if (p >= len) return 1;
    uint8_t m = buf[p++];
    if (m == 0xD9 || m == 0xDA) return 1;                /* EOI, SOS: no more header markers */
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* no length field */
    if (len - p < 2) return 1;
    size_t seg = (size_t)buf[p] << 8 | buf[p + 1];
    if (seg < 2 || seg > len - p) return 1;
    /* "Exif\0" and one more byte, not checked (OpenCV skips 6 bytes) */
    if (m == 0xE1 && seg >= 2 + 6 && memcmp(buf + p + 2, "Exif\0", 5) == 0)
      return bd_decode_exif_orientation(buf + p + 8, seg - 8);
    p += seg;
  }
  return 1;
}

bd_status bd_decode_apply_orientation(bd_image *im, int o, bd_err *err) {
  if (!im || !im->data || im->w < 1 || im->h < 1)
    return bd_err_set(err, BD_E_INVALID, "orientation: empty image");
  if (o < 1 || o > 8)
    return bd_err_set(err, BD_E_INVALID, "orientation: %d is not an EXIF orientation (1..8)", o);
  if (o == 1) return BD_OK;
  const int w = im->w, h = im->h, swap = o >= 5;
  const int dw = swap ? h : w, dh = swap ? w : h;
  uint8_t *dst = malloc((size_t)w * h * 3);
  if (!dst) return bd_err_set(err, BD_E_NOMEM, "orientation: out of memory for %dx%d", w, h);
  /* Displayed pixel (x, y) comes from stored (sx, sy) (EXIF 2.3, tag 0x0112); along a
   * displayed row the source moves by a fixed step, so each row is one strided copy.
   *   2 mirror horizontal: (w-1-x, y)      3 rotate 180: (w-1-x, h-1-y)
   *   4 mirror vertical:   (x, h-1-y)      5 transpose:  (y, x)
   *   6 rotate 90 cw:      (y, h-1-x)      7 transverse: (w-1-y, h-1-x)
   *   8 rotate 90 ccw:     (w-1-y, x) */
  const ptrdiff_t px = 3, row = (ptrdiff_t)w * 3;
  ptrdiff_t step;
  switch (o) {
    case 2:
    case 3:
      step = -px;
      break;
    case 4:
      step = px;
      break;
    case 5:
    case 8:
      step = row;
      break;
    default:
      step = -row;
      break; /* 6, 7 */
  }
  for (int y = 0; y < dh; y++) {
    int sx, sy; /* source of (0, y) */
    switch (o) {
      case 2:
        sx = w - 1;
        sy = y;
        break;
      case 3:
        sx = w - 1;
        sy = h - 1 - y;
        break;
      case 4:
        sx = 0;
        sy = h - 1 - y;
        break;
      case 5:
        sx = y;
        sy = 0;
        break;
      case 6:
        sx = y;
        sy = h - 1;
        break;
      case 7:
        sx = w - 1 - y;
        sy = h - 1;
        break;
      default:
        sx = w - 1 - y;
        sy = 0;
        break;
    }
    /* an index, not a pointer: after the last pixel it may point outside the buffer */
    ptrdiff_t off = ((ptrdiff_t)sy * w + sx) * 3;
    uint8_t *d = dst + (size_t)y * dw * 3;
    for (int x = 0; x < dw; x++, d += 3, off += step) {
      d[0] = im->data[off];
      d[1] = im->data[off + 1];
      d[2] = im->data[off + 2];
    }
  }
  free(im->data);
  im->data = dst;
  im->w = dw;
  im->h = dh;
  return BD_OK;
}

/* ---- entry points ---- */

static void fill_lim(const bd_decode_opts *o, bd_decode_lim *l) {
  memset(l, 0, sizeof *l);
  l->max_pixels = o && o->max_pixels ? o->max_pixels : BD_DECODE_DEFAULT_MAX_PIXELS;
  /* the format's own per-side cap is applied by bd_decoder_decode once it is known */
  l->max_side = o && o->max_side > 0 ? o->max_side : INT32_MAX;
  if (o && o->target_w > 0 && o->target_h > 0) {
    l->target_w = o->target_w;
    l->target_h = o->target_h;
  }
  l->fit = o ? o->fit : BD_DECODE_FIT_LETTERBOX;
  l->ignore_orientation = o ? o->ignore_orientation : 0;
}

bd_status bd_decoder_decode(bd_decoder *d, const uint8_t *buf, size_t len,
                            const bd_decode_opts *opts, bd_image *out, bd_decode_info *info,
                            bd_err *err) {
  bd_decode_info tmp;
  bd_decode_lim lim;
  bd_status st;
  if (!out) return bd_err_set(err, BD_E_INVALID, "decode: no output image");
  memset(out, 0, sizeof *out);
  if (!info) info = &tmp;
  memset(info, 0, sizeof *info);
  info->orientation = 1;
  info->scale_num = info->scale_denom = 1;
  if (!d) return bd_err_set(err, BD_E_INVALID, "decode: no decoder");
  if (!buf || len == 0) return bd_err_set(err, BD_E_INVALID, "empty input (0 bytes)");
  fill_lim(opts, &lim);
  info->format = bd_decode_sniff(buf, len);
  switch (info->format) {
    case BD_IMG_JPEG:
      if (lim.max_side > BD_DECODE_DEFAULT_MAX_SIDE) lim.max_side = BD_DECODE_DEFAULT_MAX_SIDE;
      st = bd_decode_jpeg_rgb(d->tj, buf, len, &lim, out, info, err);
      break;
    case BD_IMG_PNG:
      if (lim.max_side > BD_DECODE_PNG_MAX_SIDE) lim.max_side = BD_DECODE_PNG_MAX_SIDE;
      st = bd_decode_png_rgb(buf, len, &lim, out, info, err);
      break;
    default: {
      const char *name = sniff_unsupported(buf, len);
      if (name)
        return bd_err_set(err, BD_E_UNSUPPORTED,
                          "unsupported image format (%s): only JPEG and PNG are decoded", name);
      return bd_err_set(err, BD_E_UNSUPPORTED, "not an image (unknown format)");
    }
  }
  if (st != BD_OK) goto out;
  if (lim.ignore_orientation) info->orientation = 1;
  st = bd_decode_apply_orientation(out, info->orientation, err);
  if (st != BD_OK) goto out;
  info->oriented_w = info->orientation >= 5 ? info->orig_h : info->orig_w;
  info->oriented_h = info->orientation >= 5 ? info->orig_w : info->orig_h;
  info->out_w = out->w;
  info->out_h = out->h;
out:
  if (st != BD_OK) bd_image_free(out);
  return st;
}

bd_status bd_decode_image(const uint8_t *buf, size_t len, const bd_decode_opts *opts, bd_image *out,
                          bd_decode_info *info, bd_err *err) {
  if (out) memset(out, 0, sizeof *out);
  bd_decoder *d = bd_decoder_new(err);
  if (!d) return err ? err->code : BD_E_NOMEM;
  bd_status st = bd_decoder_decode(d, buf, len, opts, out, info, err);
  bd_decoder_destroy(d);
  return st;
}

bd_status bd_decode_file(const char *path, const bd_decode_opts *opts, bd_image *out,
                         bd_decode_info *info, bd_err *err) {
  const size_t max = BD_DECODE_DEFAULT_MAX_FILE_BYTES;
  bd_status st = BD_OK;
  uint8_t head[64]; /* enough for every magic the sniffers look at */
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  int exact = 0; /* cap is the file's size from fstat */
  struct stat sb;
  if (out) memset(out, 0, sizeof *out);
  FILE *f = path ? fopen(path, "rb") : NULL;
  if (!f)
    return bd_err_set(err, errno == ENOENT ? BD_E_NOT_FOUND : BD_E_IO, "%s: %s",
                      path ? path : "(null)", path ? strerror(errno) : "no path");
  if (fstat(fileno(f), &sb) != 0) {
    st = bd_err_set(err, BD_E_IO, "%s: %s", path, strerror(errno));
    goto out;
  }
  if (S_ISDIR(sb.st_mode)) {
    st = bd_err_set(err, BD_E_IO, "%s: %s", path, strerror(EISDIR));
    goto out;
  }
  /* a regular file's size is known: refuse it before reading a byte */
  if (S_ISREG(sb.st_mode) && (unsigned long long)sb.st_size > max) {
    st = bd_err_set(err, BD_E_LIMIT, "%s: file larger than %llu bytes", path,
                    (unsigned long long)max);
    goto out;
  }
  /* the first bytes decide whether the rest is worth reading: an unknown format fails
   * from them (with the message bd_decode_image gives) */
  len = fread(head, 1, sizeof head, f);
  if (ferror(f)) {
    st = bd_err_set(err, BD_E_IO, "%s: read error", path);
    goto out;
  }
  if (bd_decode_sniff(head, len) == BD_IMG_UNKNOWN) {
    st = bd_decode_image(head, len, opts, out, info, err);
    if (st != BD_OK) bd_err_prefix(err, "%s", path);
    goto out;
  }
  /* one buffer of the file's size; pipes and /proc files (size 0) in growing chunks */
  exact = S_ISREG(sb.st_mode) && sb.st_size > 0 && (size_t)sb.st_size >= len;
  cap = exact ? (size_t)sb.st_size : (1u << 16);
  buf = malloc(cap);
  if (!buf) {
    st = bd_err_set(err, BD_E_NOMEM, "%s: out of memory reading the file", path);
    goto out;
  }
  memcpy(buf, head, len);
  for (;;) {
    if (len == cap) {
      if (exact) break; /* bytes appended since fstat are not read */
      if (cap > max) {
        st = bd_err_set(err, BD_E_LIMIT, "%s: file larger than %llu bytes", path,
                        (unsigned long long)max);
        goto out;
      }
      size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2; /* max + 1: detects "larger" */
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        st = bd_err_set(err, BD_E_NOMEM, "%s: out of memory reading the file", path);
        goto out;
      }
      buf = nb;
      cap = ncap;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) break;
  }
  if (ferror(f)) {
    st = bd_err_set(err, BD_E_IO, "%s: read error", path);
    goto out;
  }
  st = bd_decode_image(buf, len, opts, out, info, err);
  if (st != BD_OK) bd_err_prefix(err, "%s", path);
out:
  fclose(f);
  free(buf);
  return st;
}
