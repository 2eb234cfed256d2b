/* bd_proto: what the four wire formats of batchdet share.
 *
 * The formats themselves live in bd_manifest.h (job manifest), bd_result.h (per-image
 * detection result), bd_report.h (throughput report) and bd_jobstat.h (job status).
 * All are JSON (jansson to parse, a small writer of our own to emit, so that numbers
 * come out in their shortest exact form: 0.3, not 0.29999999999999999).
 *
 * Validation is strict and collects ALL problems (up to BD_PROTO_MAX_ERRORS) in a
 * bd_proto_errors, each message starting with the path of the field it is about,
 * e.g. `images[3].url: unsupported scheme "ftp"`, so that a user fixes a manifest in
 * one pass. Unknown fields are ignored (forward compatibility).
 *
 * Ownership: a bd_proto_errors belongs to the caller (stack or heap); nothing in it
 * needs freeing. Thread safety: every function here is reentrant; no global state. */
#ifndef BD_PROTO_H
#define BD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

/* The wire version this build reads and writes ("v"). */
#define BD_PROTO_VERSION 1

/* A JSON document larger than this is rejected before parsing. */
#define BD_PROTO_MAX_DOC ((size_t)64 << 20)

/* Ids (job, image, model): 1..BD_ID_MAX chars of [A-Za-z0-9._-]; they become Redis
 * key parts, so nothing else is allowed. */
#define BD_ID_MAX 128

/* Validation stops recording after this many errors (it counts the rest). */
#define BD_PROTO_MAX_ERRORS 50
/* Longest single error message (longer ones are cut). */
#define BD_PROTO_ERR_MAX 256

typedef struct bd_proto_errors {
  bd_status code; /* code of the first error; BD_OK when count == 0 */
  int count;      /* messages recorded in msg[] (<= BD_PROTO_MAX_ERRORS) */
  int dropped;    /* further errors found but not recorded */
  char msg[BD_PROTO_MAX_ERRORS][BD_PROTO_ERR_MAX];
} bd_proto_errors;

/* Empties errs (NULL is accepted). */
void bd_proto_errors_clear(bd_proto_errors *errs);

/* Records one error (printf-style). NULL errs is accepted and ignored. */
void bd_proto_errors_add(bd_proto_errors *errs, bd_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Total number of errors found (recorded + dropped). */
int bd_proto_errors_total(const bd_proto_errors *errs);

/* Summarises errs into one bd_err: the first message, plus " (and N more errors)".
 * For callers (the worker's dead-letter reason) that need a single line. */
void bd_proto_errors_to_err(const bd_proto_errors *errs, bd_err *err);

/* 1 when s is a valid id: 1..BD_ID_MAX chars of [A-Za-z0-9._-]. */
int bd_proto_id_valid(const char *s);

#endif
