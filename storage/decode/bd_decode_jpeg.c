/* JPEG back end (TurboJPEG API) and the JPEG encoder used for annotated previews.
 * Header first, limits checked, then one allocation of the exact output. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <turbojpeg.h>

#include "bd_decode.h"
#include "bd_decode_internal.h"

void *bd_decode_tj_new(bd_err *err) {
  tjhandle tj = tjInitDecompress();
  if (!tj)
    bd_err_set(err, BD_E_NOMEM, "TurboJPEG: cannot create a decompressor: %s",
               tjGetErrorStr2(NULL));
  return tj;
}

void bd_decode_tj_free(void *tj) {
  if (tj) tjDestroy(tj);
}

/* The first marker segment before SOS for which match() is true: its payload (after
 * the length field) and that payload's size; NULL when none. Every length is checked
 * against the buffer. */
static const uint8_t *jpeg_segment(const uint8_t *buf, size_t len,
                                   int (*match)(uint8_t marker, const uint8_t *p, size_t n),
                                   size_t *n_out) {
  size_t p = 2;
  while (p < len) {
    if (buf[p] != 0xFF) return NULL;
    while (p < len && buf[p] == 0xFF) p++;
    if (p >= len) return NULL;
    uint8_t m = buf[p++];
    if (m == 0xD9 || m == 0xDA) return NULL;
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (len - p < 2) return NULL;
    size_t seg = (size_t)buf[p] << 8 | buf[p + 1];
    if (seg < 2 || seg > len - p) return NULL;
    if (match(m, buf + p + 2, seg - 2)) {
      *n_out = seg - 2;
      return buf + p + 2;
    }
    p += seg;
  }
  return NULL;
}

static int is_adobe(uint8_t m, const uint8_t *p, size_t n) {
  return m == 0xEE && n >= 5 && memcmp(p, "Adobe", 5) == 0;
}

/* SOF0..SOF15 less DHT (C4), JPG (C8) and DAC (CC), long enough for its components */
static int is_sof(uint8_t m, const uint8_t *p, size_t n) {
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && n >= 6 &&
         n >= 6 + 3 * (size_t)p[5];
}

int bd_decode_jpeg_dims(const uint8_t *buf, size_t len, int *w, int *h) {
  size_t n = 0;
  const uint8_t *f = jpeg_segment(buf, len, is_sof, &n);
  if (!f) return 0;
  *h = f[1] << 8 | f[2];
  *w = f[3] << 8 | f[4];
  return 1;
}

/* Adobe APP14 marker seen before SOS? Adobe writers store CMYK inverted. */
static int jpeg_has_adobe(const uint8_t *buf, size_t len) {
  size_t n;
  return jpeg_segment(buf, len, is_adobe, &n) != NULL;
}

/* The scaling factor: the largest reduction among 1/2, 1/4, 1/8 that keeps the
 * decoded size at least what the consumer's resize needs; 1/1 when none does. */
static tjscalingfactor pick_scale(int w, int h, int orientation, const bd_decode_lim *lim) {
  tjscalingfactor best = {1, 1};
  if (lim->target_w <= 0 || lim->target_h <= 0) return best;
  int swap = !lim->ignore_orientation && orientation >= 5;
  double ow = swap ? h : w, oh = swap ? w : h; /* the target applies to the displayed image */
  double need_w = lim->target_w, need_h = lim->target_h;
  if (lim->fit == BD_DECODE_FIT_LETTERBOX) {
    double r = need_w / ow < need_h / oh ? need_w / ow : need_h / oh;
    need_w = ow * r;
    need_h = oh * r;
  }
  if (swap) {
    double t = need_w;
    need_w = need_h;
    need_h = t;
  }
  int n = 0;
  tjscalingfactor *sf = tjGetScalingFactors(&n);
  for (int i = 0; sf && i < n; i++) {
    if (sf[i].num != 1 || (sf[i].denom != 2 && sf[i].denom != 4 && sf[i].denom != 8)) continue;
    if (TJSCALED(w, sf[i]) >= need_w - 1e-9 && TJSCALED(h, sf[i]) >= need_h - 1e-9 &&
        sf[i].denom > best.denom)
      best = sf[i];
  }
  return best;
}

static bd_status tj_fail(tjhandle tj, bd_err *err, const char *what) {
  /* TurboJPEG 2.1 stops the header call at the first libjpeg warning too (a fresh
   * handle as well as one that ran a STOPONWARNING decode: test_jpeg_header_warning),
   * so in either call a warning code means that warning is what stopped it */
  int warn = tjGetErrorCode(tj) == TJERR_WARNING;
  return bd_err_set(err, BD_E_INVALID, "corrupt JPEG: %s%s: %s", what,
                    warn ? " (libjpeg warning treated as error)" : "", tjGetErrorStr2(tj));
}

/* The libjpeg warnings (jerror.h texts) that a complete file can raise and that
 * cv2.imread decodes through pixel-identically. */
static int warn_is_eof(tjhandle tj) {
  return tjGetErrorCode(tj) == TJERR_WARNING &&
         strstr(tjGetErrorStr2(tj), "Premature end of JPEG file") != NULL;
}

/* JWRN_EXTRANEOUS_DATA before EOI: the last scan was complete (libjpeg only looks for
 * the next marker once every MCU is decoded), the junk lies between it and EOI. */
static int warn_is_junk_before_eoi(tjhandle tj) {
  const char *s = tjGetErrorStr2(tj);
  const char *x = strstr(s, "extraneous bytes before marker 0x");
  return tjGetErrorCode(tj) == TJERR_WARNING && strstr(s, "Corrupt JPEG data: ") == s && x &&
         strcmp(x + strlen("extraneous bytes before marker 0x"), "d9") == 0;
}

/* A copy of the header part (SOI up to the first SOS) in which what libjpeg would
 * only warn about and skip is already fixed, so that those warnings do not stop the
 * STOPONWARNING decode while every other one still does: bytes that are no marker
 * between two segments (JWRN_EXTRANEOUS_DATA; libjpeg skips them, as does imread) are
 * dropped, and a JFIF major version other than 1 (JWRN_JFIF_MAJOR; it changes
 * nothing in the decode) is written as 1. *out is NULL when nothing needed fixing or
 * the header could not be walked (libjpeg then reports on the original). */
static bd_status jpeg_sanitize(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len,
                               bd_err *err) {
  *out = NULL;
  *out_len = 0;
  int fix = 0;
  /* pass 0 only looks; pass 1 writes the copy */
  for (int pass = 0; pass < 2; pass++) {
    uint8_t *dst = NULL;
    size_t q = 2, p = 2;
    if (pass == 1) {
      if (!fix) return BD_OK;
      dst = malloc(len);
      if (!dst) return bd_err_set(err, BD_E_NOMEM, "out of memory for a %zu-byte JPEG", len);
      memcpy(dst, buf, 2);
    }
    while (p < len) {
      /* skip what next_marker() would: non-FF bytes and FF 00 pairs */
      size_t g = p;
      for (;;) {
        while (p < len && buf[p] != 0xFF) p++;
        size_t r = p;
        while (r < len && buf[r] == 0xFF) r++;
        if (r >= len) break;
        if (buf[r] != 0) break;
        p = r + 1;
      }
      if (p >= len) break;
      if (p > g) fix = 1;
      size_t start = p;
      while (p < len && buf[p] == 0xFF) p++;
      if (p >= len) break;
      const uint8_t m = buf[p++];
      size_t seg = 0;
      if (m == 0xD9 || m == 0xDA) {
        p = start; /* SOS or EOI: the rest is copied as it is */
        break;
      }
      if (!(m == 0x01 || (m >= 0xD0 && m <= 0xD7))) {
        if (len - p < 2) break;
        seg = (size_t)buf[p] << 8 | buf[p + 1];
        if (seg < 2 || seg > len - p) break;
      }
      /* JFIF APP0: length, "JFIF\0", major version */
      const int jfif =
          m == 0xE0 && seg >= 2 + 6 && memcmp(buf + p + 2, "JFIF\0", 5) == 0 && buf[p + 7] != 1;
      if (jfif) fix = 1;
      if (dst) {
        memcpy(dst + q, buf + start, p + seg - start);
        if (jfif) dst[q + (p + 7 - start)] = 1;
      }
      q += p + seg - start;
      p += seg;
    }
    if (pass == 1) {
      if (p < len) memcpy(dst + q, buf + p, len - p);
      *out = dst;
      *out_len = q + (len - p);
    }
  }
  return BD_OK;
}

/* tjDecompress2 with STOPONWARNING, and the retries that tell a complete file with a
 * harmless defect from a damaged one:
 * - "Premature end of JPEG file" (no EOI): decode again with FF D9 appended; the scan
 *   data was complete when that decodes with no warning (a cut scan now warns of the
 *   marker it hit), else the first error stands. Sequential frames only;
 * - extraneous bytes before EOI: decode again without STOPONWARNING; the warning comes
 *   after the last MCU, so no later one can be hidden behind it. */
static bd_status jpeg_decode(tjhandle tj, const uint8_t *buf, size_t len, uint8_t *dst, int w,
                             int h, int pf, bd_err *err) {
  const int strict = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  bd_status st = BD_OK;
  uint8_t *eoi = NULL;
  if (tjDecompress2(tj, buf, (unsigned long)len, dst, w, 0, h, pf, strict) == 0) return BD_OK;
  st = tj_fail(tj, err, "decode"); /* the error reported when no retry clears it */
  /* not for a progressive frame: one cut between two scans decodes with no warning
   * once EOI follows, at the quality of the scans it kept */
  size_t n = 0;
  const uint8_t *f = jpeg_segment(buf, len, is_sof, &n);
  const int progressive = f && (f[-3] & 3) == 2; /* SOF2, 6, 10, 14 */
  if (warn_is_eof(tj) && f && !progressive) {
    eoi = malloc(len + 2);
    if (!eoi) {
      st = bd_err_set(err, BD_E_NOMEM, "out of memory for a %zu-byte JPEG", len + 2);
      goto out;
    }
    memcpy(eoi, buf, len);
    eoi[len] = 0xFF;
    eoi[len + 1] = 0xD9;
    buf = eoi;
    len += 2;
    if (tjDecompress2(tj, buf, (unsigned long)len, dst, w, 0, h, pf, strict) == 0) {
      st = BD_OK;
      goto out;
    }
  }
  if (warn_is_junk_before_eoi(tj)) {
    int rc = tjDecompress2(tj, buf, (unsigned long)len, dst, w, 0, h, pf, TJFLAG_LIMITSCANS);
    if (rc == 0 || warn_is_junk_before_eoi(tj)) st = BD_OK;
  }
out:
  free(eoi);
  return st;
}

/* A frame libjpeg (8-bit build) cannot decode but that is valid JPEG: lossless
 * (SOF3, 7, 11, 15) or a precision other than 8. */
static bd_status jpeg_unsupported(const uint8_t *buf, size_t len, bd_err *err) {
  size_t n = 0;
  const uint8_t *f = jpeg_segment(buf, len, is_sof, &n);
  if (!f) return BD_OK;
  const uint8_t m = f[-3]; /* FF m Lhi Llo payload */
  if ((m & 3) == 3)
    return bd_err_set(err, BD_E_UNSUPPORTED, "unsupported JPEG: lossless (SOF%d)", m - 0xC0);
  if (f[0] != 8) return bd_err_set(err, BD_E_UNSUPPORTED, "unsupported JPEG: %d-bit samples", f[0]);
  return BD_OK;
}

/* tjDecompressHeader3 (TurboJPEG 2.x) refuses sampling factors outside its TJSAMP_*
 * list (3x1, 1x3, 4x2, ...) although libjpeg, and so tjDecompress2, decodes them: take
 * the size and component count from the frame header instead. */
static bd_status header_from_sof(const uint8_t *buf, size_t len, int *w, int *h, int *cs,
                                 bd_err *err) {
  size_t n = 0;
  const uint8_t *f = jpeg_segment(buf, len, is_sof, &n);
  if (!f)
    return bd_err_set(err, BD_E_INVALID,
                      "corrupt JPEG: header: sampling factors TurboJPEG "
                      "does not know, and no readable frame header");
  *h = f[1] << 8 | f[2];
  *w = f[3] << 8 | f[4];
  const int nc = f[5];
  char samp[40] = "";
  for (int i = 0, k = 0; i < nc && i < 4 && k < (int)sizeof samp - 8; i++)
    k += snprintf(samp + k, sizeof samp - (size_t)k, "%s%dx%d", i ? "," : "", f[6 + 3 * i + 1] >> 4,
                  f[6 + 3 * i + 1] & 15);
  if (nc != 1 && nc != 3 && nc != 4)
    return bd_err_set(err, BD_E_UNSUPPORTED, "unsupported JPEG: %d components (sampling %s)", nc,
                      samp);
  /* 3 components: YCbCr or RGB, both come out as RGB; 4: libjpeg tells CMYK from
   * YCCK itself and TJPF_CMYK output is the same for both */
  *cs = nc == 1 ? TJCS_GRAY : nc == 3 ? TJCS_YCbCr : TJCS_CMYK;
  return BD_OK;
}

bd_status bd_decode_jpeg_rgb(void *tjv, const uint8_t *buf, size_t len, const bd_decode_lim *lim,
                             bd_image *out, bd_decode_info *info, bd_err *err) {
  tjhandle tj = tjv;
  bd_status st = BD_OK;
  uint8_t *cmyk = NULL, *fixed = NULL;
  size_t fixed_len = 0;
  int w = 0, h = 0, subsamp = 0, cs = 0;
  out->data = NULL;
  if (len > ULONG_MAX - 2) return bd_err_set(err, BD_E_LIMIT, "JPEG too large (%zu bytes)", len);
  st = jpeg_sanitize(buf, len, &fixed, &fixed_len, err);
  if (st != BD_OK) return st;
  if (fixed) {
    buf = fixed;
    len = fixed_len;
  }
  if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cs) != 0) {
    if (tjGetErrorCode(tj) == TJERR_WARNING || !strstr(tjGetErrorStr2(tj), "subsampling")) {
      st = tjGetErrorCode(tj) == TJERR_WARNING ? BD_OK : jpeg_unsupported(buf, len, err);
      if (st == BD_OK) st = tj_fail(tj, err, "header");
      goto out;
    }
    st = header_from_sof(buf, len, &w, &h, &cs, err);
    if (st != BD_OK) goto out;
  } else if (w == 0 && h == 0) {
    /* TurboJPEG reports success with no size when the data ends (or EOI comes)
     * before a frame header: a tables-only or cut stream */
    st = bd_err_set(err, BD_E_INVALID, "corrupt JPEG: truncated before the frame header");
    goto out;
  }
  info->orig_w = w;
  info->orig_h = h;
  st = bd_decode_check_size(w, h, lim, err);
  if (st != BD_OK) goto out;
  const int is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
  info->components = cs == TJCS_GRAY ? 1 : is_cmyk ? 4 : 3;
  info->orientation = lim->ignore_orientation ? 1 : bd_decode_jpeg_orientation(buf, len);
  tjscalingfactor sf = pick_scale(w, h, info->orientation, lim);
  const int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  info->scale_num = sf.num;
  info->scale_denom = sf.denom;
  /* jpeg_decode: STOPONWARNING (a truncated or damaged scan is an error, not a
   * gray-padded image) less the warnings a complete file can raise; LIMITSCANS: a
   * progressive file with thousands of scans is a CPU bomb. */
  out->data = malloc((size_t)sw * sh * 3);
  if (!out->data) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory for a %dx%d image", sw, sh);
    goto out;
  }
  out->w = sw;
  out->h = sh;
  if (!is_cmyk) {
    /* gray -> RGB is done by libjpeg's colour converter (R=G=B) */
    st = jpeg_decode(tj, buf, len, out->data, sw, sh, TJPF_RGB, err);
    goto out;
  }
  cmyk = malloc((size_t)sw * sh * 4);
  if (!cmyk) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory for a %dx%d CMYK image", sw, sh);
    goto out;
  }
  st = jpeg_decode(tj, buf, len, cmyk, sw, sh, TJPF_CMYK, err);
  if (st != BD_OK) goto out;
  /* Adobe files (and libjpeg's YCCK->CMYK output for them) hold inverted CMYK:
   * c' = 255 - C, and R = 255*(1-C)(1-K) = c'*k'/255, computed as OpenCV's imread
   * does (k' - ((255 - c') * k' >> 8)) so that the pixels are the same bit for bit.
   * Without the marker the data is plain CMYK (imread takes it as inverted too, and
   * gets a negative): (255-C)(255-K)/255, rounded. */
  const int inverted = jpeg_has_adobe(buf, len);
  const size_t n = (size_t)sw * sh;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *s = cmyk + 4 * i;
    unsigned c = s[0], m = s[1], y = s[2], k = s[3];
    if (inverted) {
      out->data[3 * i + 0] = (uint8_t)(k - ((255 - c) * k >> 8));
      out->data[3 * i + 1] = (uint8_t)(k - ((255 - m) * k >> 8));
      out->data[3 * i + 2] = (uint8_t)(k - ((255 - y) * k >> 8));
      continue;
    }
    c = 255 - c;
    m = 255 - m;
    y = 255 - y;
    k = 255 - k;
    out->data[3 * i + 0] = (uint8_t)((c * k + 127) / 255);
    out->data[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
    out->data[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
  }
out:
  free(cmyk);
  free(fixed);
  if (st != BD_OK) bd_image_free(out);
  return st;
}

bd_status bd_encode_jpeg(const bd_image *im, int quality, uint8_t **out, size_t *len, bd_err *err) {
  bd_status st = BD_OK;
  tjhandle tj = NULL;
  unsigned char *jbuf = NULL;
  if (!out || !len) return bd_err_set(err, BD_E_INVALID, "encode: no output");
  *out = NULL;
  *len = 0;
  if (!im || !im->data || im->w < 1 || im->h < 1 || im->w > BD_DECODE_DEFAULT_MAX_SIDE ||
      im->h > BD_DECODE_DEFAULT_MAX_SIDE)
    return bd_err_set(err, BD_E_INVALID, "encode: invalid image %dx%d", im ? im->w : 0,
                      im ? im->h : 0);
  if (quality < 1 || quality > 100)
    return bd_err_set(err, BD_E_INVALID, "encode: quality %d is outside 1..100", quality);
  tj = tjInitCompress();
  if (!tj)
    return bd_err_set(err, BD_E_NOMEM, "TurboJPEG: cannot create a compressor: %s",
                      tjGetErrorStr2(NULL));
  /* a malloc'd buffer of the worst-case size, so that the caller frees with free() */
  unsigned long cap = tjBufSize(im->w, im->h, TJSAMP_420);
  if (cap == (unsigned long)-1) {
    st = bd_err_set(err, BD_E_LIMIT, "encode: %dx%d is too large", im->w, im->h);
    goto out;
  }
  jbuf = malloc(cap);
  if (!jbuf) {
    st = bd_err_set(err, BD_E_NOMEM, "encode: out of memory (%lu bytes)", cap);
    goto out;
  }
  unsigned long n = cap;
  if (tjCompress2(tj, im->data, im->w, 0, im->h, TJPF_RGB, &jbuf, &n, TJSAMP_420, quality,
                  TJFLAG_NOREALLOC) != 0) {
    st = bd_err_set(err, BD_E_INTERNAL, "encode: %s", tjGetErrorStr2(tj));
    goto out;
  }
  unsigned char *shrunk = realloc(jbuf, n);
  *out = shrunk ? shrunk : jbuf;
  *len = n;
  jbuf = NULL;
out:
  free(jbuf);
  if (tj) tjDestroy(tj);
  return st;
}
