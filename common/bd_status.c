#include "bd_status.h"

#include <stdio.h>
#include <string.h>

static const char *const names[BD_E__COUNT] = {
    [BD_OK] = "ok",
    [BD_E_INVALID] = "invalid",
    [BD_E_UNSUPPORTED] = "unsupported",
    [BD_E_LIMIT] = "limit",
    [BD_E_NOT_FOUND] = "not-found",
    [BD_E_IO] = "io",
    [BD_E_NOMEM] = "nomem",
    [BD_E_INTERNAL] = "internal",
    [BD_E_DEVICE] = "device",
    [BD_E_NETWORK] = "network",
    [BD_E_TIMEOUT] = "timeout",
    [BD_E_UNAVAILABLE] = "unavailable",
    [BD_E_CANCELLED] = "cancelled",
};

const char *bd_status_name(bd_status s) {
  if ((int)s < 0 || s >= BD_E__COUNT || !names[s]) return "unknown";
  return names[s];
}

int bd_status_retriable(bd_status s) {
  return s == BD_E_NETWORK || s == BD_E_TIMEOUT || s == BD_E_UNAVAILABLE;
}

bd_status bd_err_vset(bd_err *err, bd_status code, const char *fmt, va_list ap) {
  if (err) {
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  }
  return code;
}

bd_status bd_err_set(bd_err *err, bd_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  bd_err_vset(err, code, fmt, ap);
  va_end(ap);
  return code;
}

void bd_err_prefix(bd_err *err, const char *fmt, ...) {
  if (!err) return;
  char pre[BD_ERR_MSG_MAX];
  char old[BD_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  size_t n = strnlen(pre, sizeof pre - 1);
  if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
  memcpy(err->msg, pre, n);
  err->msg[n] = ':';
  err->msg[n + 1] = ' ';
  size_t room = sizeof err->msg - n - 2;
  size_t m = strnlen(old, room - 1);
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = '\0';
}

void bd_err_clear(bd_err *err) {
  if (!err) return;
  err->code = BD_OK;
  err->msg[0] = '\0';
}
