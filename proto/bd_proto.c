/* Shared pieces of the wire formats: error list, JSON parse with limits, field
 * readers that name the field in every error, a string hash set, a JSON writer. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_proto_internal.h"
#include "bd_text.h"

/* ---- error list ---- */

void bd_proto_errors_clear(bd_proto_errors *errs) {
  if (!errs) return;
  errs->code = BD_OK;
  errs->count = 0;
  errs->dropped = 0;
}

void bd_proto_errors_add(bd_proto_errors *errs, bd_status code, const char *fmt, ...) {
  if (!errs) return;
  if (errs->code == BD_OK) errs->code = code;
  if (errs->count >= BD_PROTO_MAX_ERRORS) {
    errs->dropped++;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errs->msg[errs->count], BD_PROTO_ERR_MAX, fmt, ap);
  va_end(ap);
  errs->count++;
}

int bd_proto_errors_total(const bd_proto_errors *errs) {
  return errs ? errs->count + errs->dropped : 0;
}

void bd_proto_errors_to_err(const bd_proto_errors *errs, bd_err *err) {
  if (!err) return;
  if (!errs || errs->count == 0) {
    bd_err_clear(err);
    return;
  }
  int more = bd_proto_errors_total(errs) - 1;
  if (more > 0)
    bd_err_set(err, errs->code, "%s (and %d more error%s)", errs->msg[0], more, more == 1 ? "" : "s");
  else
    bd_err_set(err, errs->code, "%s", errs->msg[0]);
}

/* ---- value checks ---- */

bd_proto_errors *bd_proto_errors_new(const char *what, bd_err *err) {
  bd_proto_errors *errs = malloc(sizeof *errs);
  if (!errs) bd_err_set(err, BD_E_NOMEM, "%s: out of memory", what);
  return errs;
}

bd_status bd_proto_errors_finish(bd_proto_errors *errs, bd_status st, bd_err *err) {
  if (st != BD_OK) bd_proto_errors_to_err(errs, err);
  free(errs);
  return st;
}

int bd_proto_id_valid(const char *s) {
  if (!s) return 0;
  size_t n = 0;
  for (; s[n]; n++) {
    unsigned char c = (unsigned char)s[n];
    if (n >= BD_ID_MAX) return 0;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    if (!ok) return 0;
  }
  return n > 0;
}

int bd_proto_text_valid(const char *s, size_t max) {
  if (!s) return 0;
  size_t n = 0;
  for (; s[n]; n++) {
    unsigned char c = (unsigned char)s[n];
    if (n >= max || c < 0x20 || c == 0x7f) return 0;
  }
  return n > 0;
}

int bd_proto_check_id(const char *s, const char *path, const char *key, bd_proto_errors *errs) {
  if (bd_proto_id_valid(s)) return 1;
  bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be 1..%d chars of [A-Za-z0-9._-]", path, key,
                      BD_ID_MAX);
  return 0;
}

int bd_proto_check_text(const char *s, size_t max, const char *path, const char *key,
                        bd_proto_errors *errs) {
  if (bd_proto_text_valid(s, max)) return 1;
  bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be 1..%zu bytes without control characters",
                      path, key, max);
  return 0;
}

/* ---- parsing ---- */

json_t *bd_proto_parse(const char *buf, size_t len, size_t max_doc, bd_proto_errors *errs) {
  if (max_doc == 0 || max_doc > BD_PROTO_MAX_DOC) max_doc = BD_PROTO_MAX_DOC;
  if (!buf) {
    bd_proto_errors_add(errs, BD_E_INVALID, "json: no input");
    return NULL;
  }
  if (len > max_doc) {
    bd_proto_errors_add(errs, BD_E_LIMIT, "json: document of %zu bytes exceeds the limit of %zu",
                        len, max_doc);
    return NULL;
  }
  json_error_t je;
  /* Duplicate keys are rejected: with two "job" members, which one a reader takes is
   * an accident of the parser, and two readers could disagree. */
  json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    bd_proto_errors_add(errs, BD_E_INVALID, "json: line %d column %d: %s", je.line, je.column,
                        je.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "json: top level must be an object");
    json_decref(root);
    return NULL;
  }
  return root;
}

int bd_proto_check_version(const json_t *obj, int required, bd_proto_errors *errs) {
  json_t *v = json_object_get(obj, "v");
  if (!v) {
    if (!required) return 1;
    bd_proto_errors_add(errs, BD_E_INVALID, "v: missing (this build reads %d)", BD_PROTO_VERSION);
    return 0;
  }
  if (!json_is_integer(v)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "v: must be an integer (this build reads %d)",
                        BD_PROTO_VERSION);
    return 0;
  }
  if (json_integer_value(v) != BD_PROTO_VERSION) {
    bd_proto_errors_add(errs, BD_E_UNSUPPORTED, "v: unsupported version %lld (this build reads %d)",
                        (long long)json_integer_value(v), BD_PROTO_VERSION);
    return 0;
  }
  return 1;
}

static const json_t *get_member(const json_t *obj, const char *path, const char *key, int required,
                                bd_proto_errors *errs) {
  json_t *v = json_object_get(obj, key);
  if (!v && required) bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: missing (required)", path, key);
  return v;
}

int bd_proto_get_id(const json_t *obj, const char *path, const char *key, int required,
                    char out[BD_ID_MAX + 1], bd_proto_errors *errs) {
  const json_t *v = get_member(obj, path, key, required, errs);
  if (!v) return 0;
  const char *s = json_string_value(v);
  if (!s || !bd_proto_id_valid(s)) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be 1..%d chars of [A-Za-z0-9._-]", path,
                        key, BD_ID_MAX);
    return 0;
  }
  size_t n = strlen(s); /* <= BD_ID_MAX: checked above */
  memcpy(out, s, n + 1);
  return 1;
}

int bd_proto_get_text(const json_t *obj, const char *path, const char *key, int required,
                      size_t max, char *out, bd_proto_errors *errs) {
  const json_t *v = get_member(obj, path, key, required, errs);
  if (!v) return 0;
  const char *s = json_string_value(v);
  if (!s) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be a string", path, key);
    return 0;
  }
  if (!bd_proto_check_text(s, max, path, key, errs)) return 0;
  memcpy(out, s, strlen(s) + 1);
  return 1;
}

int bd_proto_get_int(const json_t *obj, const char *path, const char *key, int required,
                     int64_t lo, int64_t hi, int64_t *out, bd_proto_errors *errs) {
  const json_t *v = get_member(obj, path, key, required, errs);
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be an integer in %lld..%lld", path, key,
                        (long long)lo, (long long)hi);
    return 0;
  }
  *out = (int64_t)json_integer_value(v);
  return 1;
}

int bd_proto_get_num(const json_t *obj, const char *path, const char *key, int required,
                     double lo, double hi, double *out, bd_proto_errors *errs) {
  const json_t *v = get_member(obj, path, key, required, errs);
  if (!v) return 0;
  double d = json_is_number(v) ? json_number_value(v) : NAN;
  if (!(d >= lo && d <= hi)) { /* also catches NaN and huge integers cast to double */
    bd_proto_errors_add(errs, BD_E_INVALID, "%s%s: must be a number in %g..%g", path, key, lo, hi);
    return 0;
  }
  /* -0 reads back as 0 from our own "-0" (jansson makes it an integer): one zero only. */
  *out = d == 0 ? 0 : d;
  return 1;
}

/* ---- JSON writer ---- */

void bd_jw_init(bd_jw *w) {
  memset(w, 0, sizeof *w);
  w->first[0] = 1;
}

static void jw_put(bd_jw *w, const char *s, size_t n) {
  if (w->oom) return;
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n + 1) cap *= 2;
    char *nb = realloc(w->buf, cap);
    if (!nb) {
      w->oom = 1;
      return;
    }
    w->buf = nb;
    w->cap = cap;
  }
  memcpy(w->buf + w->len, s, n);
  w->len += n;
  w->buf[w->len] = '\0';
}

/* Writes the separator owed before a new element of the current container. */
static void jw_sep(bd_jw *w) {
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  if (!w->first[w->depth]) jw_put(w, ",", 1);
  w->first[w->depth] = 0;
}

static void jw_open(bd_jw *w, const char *c) {
  jw_sep(w);
  jw_put(w, c, 1);
  if (w->depth + 1 >= (int)sizeof w->first) {
    w->oom = 1; /* our formats nest 4 deep at most; deeper is a bug */
    return;
  }
  w->first[++w->depth] = 1;
}

static void jw_close(bd_jw *w, const char *c) {
  jw_put(w, c, 1);
  if (w->depth > 0) w->depth--;
}

void bd_jw_obj_begin(bd_jw *w) { jw_open(w, "{"); }
void bd_jw_obj_end(bd_jw *w) { jw_close(w, "}"); }
void bd_jw_arr_begin(bd_jw *w) { jw_open(w, "["); }
void bd_jw_arr_end(bd_jw *w) { jw_close(w, "]"); }

/* A JSON string of s; a byte that does not begin well-formed UTF-8 (a server's error
 * text, a file name) is written as U+FFFD, so that the document stays JSON. */
static void jw_quoted(bd_jw *w, const char *s) {
  jw_put(w, "\"", 1);
  const char *run = s, *end = s + strlen(s);
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c >= 0x80) {
      const size_t l = bd_utf8_seq(p, (size_t)(end - p));
      if (l) {
        p += l - 1;
        continue;
      }
      jw_put(w, run, (size_t)(p - run));
      jw_put(w, "\xEF\xBF\xBD", 3);
      run = p + 1;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) continue;
    jw_put(w, run, (size_t)(p - run));
    char esc[8];
    if (c == '"') memcpy(esc, "\\\"", 3);
    else if (c == '\\') memcpy(esc, "\\\\", 3);
    else if (c == '\n') memcpy(esc, "\\n", 3);
    else if (c == '\t') memcpy(esc, "\\t", 3);
    else snprintf(esc, sizeof esc, "\\u%04x", c);
    jw_put(w, esc, strlen(esc));
    run = p + 1;
  }
  jw_put(w, run, strlen(run));
  jw_put(w, "\"", 1);
}

void bd_jw_key(bd_jw *w, const char *k) {
  jw_sep(w);
  jw_quoted(w, k);
  jw_put(w, ":", 1);
  w->after_key = 1;
}

void bd_jw_str(bd_jw *w, const char *s) {
  jw_sep(w);
  jw_quoted(w, s ? s : "");
}

void bd_jw_int(bd_jw *w, int64_t v) {
  char b[32];
  int n = snprintf(b, sizeof b, "%lld", (long long)v);
  jw_sep(w);
  jw_put(w, b, (size_t)n);
}

void bd_proto_fmt_double(char *buf, size_t n, double v) {
  if (!isfinite(v)) { /* never valid JSON; encoders validate before writing */
    snprintf(buf, n, "0");
    return;
  }
  /* Whole numbers as plain integers: "%g" would write 400 as "4e+02" at precision 1. */
  if (v == floor(v) && fabs(v) < 9007199254740992.0) {
    /* v + 0.0 turns -0 into 0: "-0" would read back as the integer 0 anyway. */
    snprintf(buf, n, "%.0f", v + 0.0);
    return;
  }
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, n, "%.*g", p, v);
    if (strtod(buf, NULL) == v) return;
  }
}

void bd_jw_num(bd_jw *w, double v) {
  char b[40];
  bd_proto_fmt_double(b, sizeof b, v);
  jw_sep(w);
  jw_put(w, b, strlen(b));
}

bd_status bd_jw_finish(bd_jw *w, char **out, size_t *out_len, bd_err *err) {
  if (w->oom || !w->buf) {
    free(w->buf);
    w->buf = NULL;
    return bd_err_set(err, BD_E_NOMEM, "json: out of memory while encoding");
  }
  *out = w->buf;
  if (out_len) *out_len = w->len;
  w->buf = NULL;
  return BD_OK;
}
