/* bd_status: the one error vocabulary of batchdet.
 *
 * Every fallible library function returns a bd_status and, when it fails, writes a
 * human-readable message into the caller's bd_err (which may be NULL). Codes are
 * split into retriable (the same call may succeed later: network, server down,
 * timeouts) and permanent (bad input, unsupported, limits), because the worker acts
 * differently on each. Thread safety: all functions are reentrant; a bd_err belongs
 * to the caller. */
#ifndef BD_STATUS_H
#define BD_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
  BD_OK = 0,
  /* permanent */
  BD_E_INVALID,     /* malformed input: JSON, image, model file, arguments */
  BD_E_UNSUPPORTED, /* valid but not supported: op, attribute, colour space, scheme */
  BD_E_LIMIT,       /* a size/count limit from outside was exceeded */
  BD_E_NOT_FOUND,   /* missing file, key, HTTP 404 */
  BD_E_IO,          /* local file system error */
  BD_E_NOMEM,       /* allocation failed */
  BD_E_INTERNAL,    /* a bug: an invariant did not hold */
  BD_E_DEVICE,      /* CUDA / cuDNN / NCCL failure */
  /* retriable */
  BD_E_NETWORK,     /* connection refused/reset, DNS */
  BD_E_TIMEOUT,     /* a deadline passed */
  BD_E_UNAVAILABLE, /* server busy or down: HTTP 429/5xx, broker or Redis down */
  BD_E_CANCELLED,   /* the operation was stopped by the caller (shutdown) */
  BD_E__COUNT
} bd_status;

#define BD_ERR_MSG_MAX 512

/* An error report: the code and a message naming what failed. */
typedef struct bd_err {
  bd_status code;
  char msg[BD_ERR_MSG_MAX];
} bd_err;

/* Short stable name of a code, e.g. "invalid". Never NULL. */
const char *bd_status_name(bd_status s);

/* 1 when retrying the same operation later may succeed. */
int bd_status_retriable(bd_status s);

/* Records code and a printf-style message in err (if err is not NULL); returns code,
 * so that `return bd_err_set(err, BD_E_INVALID, "...")` reads naturally. */
bd_status bd_err_set(bd_err *err, bd_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bd_status bd_err_vset(bd_err *err, bd_status code, const char *fmt, va_list ap);

/* Prepends "prefix: " to an existing message (to add context on the way up). */
void bd_err_prefix(bd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets err to BD_OK with an empty message. */
void bd_err_clear(bd_err *err);

#endif
