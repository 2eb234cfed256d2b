/* bd_jobstat: the job status record, kept in the Redis hash job:{job} by the
 * coordinator and shown by `batchdet status` (--json prints bd_jobstat_encode's JSON).
 *
 * Hash fields (all strings in Redis): state (queued|running|complete|failed|cancelled),
 * model, total, done, failed, shards, created, updated, rate. Integers are decimal;
 * created/updated are seconds since 1970 and rate is images/second, written in their
 * shortest exact decimal form. The job id is the key's suffix, not a field.
 * JSON: {"v":1,"job":..,"state":..,"model":..,"total":..,"done":..,"failed":..,
 *        "shards":..,"created":..,"updated":..,"rate":..}.
 * Required: job, state, model, total (JSON "v" optional, must be 1 when present).
 * done, failed, shards, created, updated, rate default to 0 when absent, because
 * HINCRBY creates counters lazily. Invariant: done + failed <= total.
 *
 * Ownership: plain values; the caller owns every struct. Thread safety: reentrant. */
#ifndef BD_JOBSTAT_H
#define BD_JOBSTAT_H

#include <stddef.h>
#include <stdint.h>

#include "bd_proto.h"

typedef enum {
  BD_JOB_QUEUED = 0,
  BD_JOB_RUNNING,
  BD_JOB_COMPLETE,
  BD_JOB_FAILED,
  BD_JOB_CANCELLED,
  BD_JOB__COUNT
} bd_job_state;

#define BD_JOBSTAT_MAX_COUNT (((int64_t)1 << 53) - 1) /* total, done, failed */
#define BD_JOBSTAT_MAX_SHARDS 2147483647LL
#define BD_JOBSTAT_MAX_TS 1e11
#define BD_JOBSTAT_MAX_RATE 1e9

typedef struct bd_jobstat {
  char job[BD_ID_MAX + 1];
  bd_job_state state;
  char model[BD_ID_MAX + 1];
  int64_t total, done, failed, shards;
  double created, updated, rate;
} bd_jobstat;

/* "queued", ...; "unknown" for an out-of-range value. */
const char *bd_jobstat_state_name(bd_job_state s);
/* The state named s, or -1. */
int bd_jobstat_state_parse(const char *s);

/* Checks ids, ranges and done + failed <= total. */
bd_status bd_jobstat_validate(const bd_jobstat *js, bd_proto_errors *errs);

/* JSON, same contracts as bd_manifest_decode/_encode (the record is the caller's). */
bd_status bd_jobstat_decode(const char *json, size_t len, bd_jobstat *out, bd_proto_errors *errs);
bd_status bd_jobstat_encode(const bd_jobstat *js, char **out, size_t *out_len, bd_err *err);

/* The hash as field/value strings, e.g. for HSET job:{job} k1 v1 k2 v2 ...:
 *   for (i = 0; i < kv.n; i++) argv[2+2i] = kv.keys[i], argv[3+2i] = kv.vals[i]; */
#define BD_JOBSTAT_NFIELDS 9
#define BD_JOBSTAT_VAL_MAX BD_ID_MAX /* longest value: the model id */
typedef struct bd_jobstat_kv {
  size_t n;                                              /* pairs filled */
  const char *keys[BD_JOBSTAT_NFIELDS];                  /* static strings */
  char vals[BD_JOBSTAT_NFIELDS][BD_JOBSTAT_VAL_MAX + 1]; /* NUL-terminated */
} bd_jobstat_kv;

/* Validates js, then fills kv (the caller's). */
bd_status bd_jobstat_to_kv(const bd_jobstat *js, bd_jobstat_kv *kv, bd_err *err);

/* Reads the flat list HGETALL returns: kv[0] field, kv[1] value, ... (n_strings
 * strings, so even). Unknown fields are ignored; job is the id from the key. */
bd_status bd_jobstat_from_kv(const char *job, const char *const *kv, size_t n_strings,
                             bd_jobstat *out, bd_proto_errors *errs);

#endif
