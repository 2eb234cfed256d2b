#include "bd_config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

const char *bd_config_str(const char *flag, const char *env, const char *def) {
  if (flag) return flag;
  if (env) {
    const char *v = getenv(env);
    if (v && *v) return v;
  }
  return def;
}

bd_status bd_parse_i64(const char *s, int64_t lo, int64_t hi, const char *what, int64_t *out,
                       bd_err *err) {
  if (!s || !*s) return bd_err_set(err, BD_E_INVALID, "%s: missing value", what);
  errno = 0;
  char *end = NULL;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < lo || v > hi)
    return bd_err_set(err, BD_E_INVALID, "%s: must be an integer in %lld..%lld, got \"%s\"", what,
                      (long long)lo, (long long)hi, s);
  *out = v;
  return BD_OK;
}

bd_status bd_parse_int(const char *s, int lo, int hi, const char *what, int *out, bd_err *err) {
  int64_t v;
  bd_status st = bd_parse_i64(s, lo, hi, what, &v, err);
  if (st == BD_OK) *out = (int)v;
  return st;
}

bd_status bd_parse_double(const char *s, double lo, double hi, const char *what, double *out,
                          bd_err *err) {
  if (!s || !*s) return bd_err_set(err, BD_E_INVALID, "%s: missing value", what);
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v < lo || v > hi)
    return bd_err_set(err, BD_E_INVALID, "%s: must be a number in %g..%g, got \"%s\"", what, lo, hi,
                      s);
  *out = v;
  return BD_OK;
}

double bd_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
