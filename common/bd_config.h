/* bd_config: the configuration rule of every subcommand: a flag wins, then the
 * BATCHDET_* environment variable, then the default. Also small strict number
 * parsers for flags (no silent atoi). Thread safety: reentrant. */
#ifndef BD_CONFIG_H
#define BD_CONFIG_H

#include <stdint.h>

#include "bd_status.h"

/* flag if not NULL, else getenv(env) if set and non-empty, else def. */
const char *bd_config_str(const char *flag, const char *env, const char *def);

/* Strict parsers: the whole string must be a number inside [lo, hi]. `what` names the
 * option in the error ("--batch: must be an integer in 1..1024"). */
bd_status bd_parse_i64(const char *s, int64_t lo, int64_t hi, const char *what, int64_t *out,
                       bd_err *err);
bd_status bd_parse_int(const char *s, int lo, int hi, const char *what, int *out, bd_err *err);
bd_status bd_parse_double(const char *s, double lo, double hi, const char *what, double *out,
                          bd_err *err);

/* Monotonic clock in seconds. */
double bd_now(void);

#endif
