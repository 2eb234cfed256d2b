/* Helpers shared by the proto/ modules; not part of the public API.
 * Thread safety: reentrant; a bd_jw belongs to one thread. */
#ifndef BD_PROTO_INTERNAL_H
#define BD_PROTO_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "bd_proto.h"

/* ---- parsing ---- */

/* Parses buf[0..len) (a size check against max_doc first). On failure records
 * "json: ..." with jansson's line/column in errs and returns NULL. max_doc 0 means
 * BD_PROTO_MAX_DOC. The caller owns the returned reference (json_decref). */
json_t *bd_proto_parse(const char *buf, size_t len, size_t max_doc, bd_proto_errors *errs);

/* Checks "v": required (or optional when required == 0 and absent). Returns 1 ok. */
int bd_proto_check_version(const json_t *obj, int required, bd_proto_errors *errs);

/* Field readers. `path` is the field's printed path prefix ("" at top level, else
 * e.g. "images[3]."), `key` the member name. Each returns 1 when a valid value was
 * stored, 0 when the field is absent (and records "missing" if required) or invalid
 * (error recorded). */
int bd_proto_get_id(const json_t *obj, const char *path, const char *key, int required,
                    char out[BD_ID_MAX + 1], bd_proto_errors *errs);
/* A string of 1..max bytes without control characters, copied into out[max + 1]. */
int bd_proto_get_text(const json_t *obj, const char *path, const char *key, int required,
                      size_t max, char *out, bd_proto_errors *errs);
/* An integer in lo..hi. */
int bd_proto_get_int(const json_t *obj, const char *path, const char *key, int required,
                     int64_t lo, int64_t hi, int64_t *out, bd_proto_errors *errs);
/* A number (integer or real) in lo..hi. */
int bd_proto_get_num(const json_t *obj, const char *path, const char *key, int required,
                     double lo, double hi, double *out, bd_proto_errors *errs);

/* Value checks shared by decoders and encoders; they record errors named path+key. */
int bd_proto_check_id(const char *s, const char *path, const char *key, bd_proto_errors *errs);
int bd_proto_check_text(const char *s, size_t max, const char *path, const char *key,
                        bd_proto_errors *errs);

/* 1 when s is 1..max bytes with no byte below 0x20 and no 0x7f. */
int bd_proto_text_valid(const char *s, size_t max);

/* ---- writing: a JSON writer with shortest exact doubles ---- */
typedef struct bd_jw {
  char *buf;
  size_t len, cap;
  int oom;            /* an allocation failed: the result is unusable */
  int depth;
  unsigned char first[64]; /* per nesting level: no element written yet */
  int after_key;
} bd_jw;

void bd_jw_init(bd_jw *w);
void bd_jw_obj_begin(bd_jw *w);
void bd_jw_obj_end(bd_jw *w);
void bd_jw_arr_begin(bd_jw *w);
void bd_jw_arr_end(bd_jw *w);
void bd_jw_key(bd_jw *w, const char *k);
void bd_jw_str(bd_jw *w, const char *s);
void bd_jw_int(bd_jw *w, int64_t v);
void bd_jw_num(bd_jw *w, double v); /* finite only: callers validate first */
/* Hands the NUL-terminated text to *out (caller frees with free()); BD_E_NOMEM when
 * an allocation failed along the way (and then frees the buffer). */
bd_status bd_jw_finish(bd_jw *w, char **out, size_t *out_len, bd_err *err);

/* Validation before encoding. The error list is large, so it lives on the heap:
 * bd_proto_errors_new allocates it (NULL with BD_E_NOMEM in err, naming `what`);
 * bd_proto_errors_finish folds its messages into err when st failed, frees it and
 * returns st. Use: st = bd_proto_errors_finish(errs, bd_x_validate(x, errs), err). */
bd_proto_errors *bd_proto_errors_new(const char *what, bd_err *err);
bd_status bd_proto_errors_finish(bd_proto_errors *errs, bd_status st, bd_err *err);

/* Formats v in the shortest "%.*g" that reads back as exactly v. buf >= 32 bytes. */
void bd_proto_fmt_double(char *buf, size_t n, double v);

#endif
