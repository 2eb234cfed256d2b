/* bd_redis: the Redis store of batchdet results and job state (hiredis).
 *
 * Layout (see DESIGN.md): det:JOB:IMAGE = result JSON; job:JOB = hash with done/failed
 * counters (and fields others set: state, model, total, ...); job:JOB:shards = set of
 * completed shard numbers; job:JOB:errors = hash image -> error; worker:ID = hash with TTL.
 *
 * Exactly-once effects: a shard's results and counters are written by ONE Lua script
 * call (EVALSHA, loaded with SCRIPT LOAD at connect and again on NOSCRIPT) that runs
 * only when SADD job:JOB:shards SHARD added the shard. Each image's previous state is
 * derived inside the script: no det key = new; in job:JOB:errors = failed; else done.
 * new+ok: done+1; new+error: failed+1; failed+ok: failed-1, done+1, error dropped;
 * failed+error: message updated; done+anything: counters unchanged (an error never
 * replaces a stored result). So a redelivered shard changes nothing, and failed
 * images resubmitted later under a NEW shard number of the same job move failed->done
 * when they succeed. An image is never counted twice, even across shards.
 *
 * Connection errors: the handle reconnects with exponential backoff (bounded attempts)
 * and re-sends the commands whose replies it had not read; all writes are idempotent,
 * so re-sending is safe. A call returns BD_OK only after Redis replied to everything.
 *
 * Thread safety: one handle = one connection, used by one thread at a time (a writer
 * thread owns its handle). Different handles are independent. */
#ifndef BD_REDIS_H
#define BD_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

typedef struct bd_redis bd_redis;

typedef struct bd_redis_url {
  char host[256];
  int port;       /* default 6379 */
  char user[128]; /* "" = default user */
  char pass[512]; /* "" = no AUTH */
  int db;         /* 0..15 by default Redis config; accepted 0..1023 */
} bd_redis_url;

/* Parses redis://[[user]:pass@]host[:port][/db]. rediss:// -> BD_E_UNSUPPORTED ("TLS
 * not supported"). Percent-escapes in user and password are decoded. */
bd_status bd_redis_parse_url(const char *url, bd_redis_url *out, bd_err *err);

typedef struct bd_redis_opts {
  int connect_timeout_ms; /* default 2000 */
  int io_timeout_ms;      /* per reply, default 10000 */
  int max_attempts;       /* per call, on connection errors and LOADING/BUSY (default 8) */
  int backoff_base_ms;    /* default 100 */
  int backoff_max_ms;     /* default 2000 */
} bd_redis_opts;

void bd_redis_opts_default(bd_redis_opts *o);

/* Connects (one attempt), AUTH, SELECT, checks persistence, loads the script.
 * opts may be NULL. Connection failures are retriable (BD_E_UNAVAILABLE), a refused
 * password is not (BD_E_INVALID). */
bd_redis *bd_redis_new(const char *url, const bd_redis_opts *opts, bd_err *err);
void bd_redis_destroy(bd_redis *r);

/* 1 when the server has appendonly yes, 0 when no, -1 when unknown (CONFIG disabled). */
int bd_redis_persistence(const bd_redis *r);

/* Number of reconnects done so far (for logs and tests). */
unsigned bd_redis_reconnects(const bd_redis *r);

typedef struct bd_redis_image {
  const char *image; /* id: 1..128 chars of [A-Za-z0-9._-] */
  const char *json;  /* the det:JOB:IMAGE value (result or {"image":..,"error":..}) */
  const char *error; /* NULL when the image has a result; else its error message */
} bd_redis_image;

typedef struct bd_redis_shard {
  const char *job;
  int64_t shard;   /* >= 0 */
  const char *gen; /* the manifest's submission id; NULL or "": not checked */
  const bd_redis_image *images;
  size_t n; /* 0..100000 */
  /* out */
  int applied;        /* 1: this call completed the shard; 0: it was already complete; -1: its gen
                         is not the job record's (a superseded submission): nothing written;
                         -2: its number is not below the record's shards: nothing written */
  int64_t job_shards; /* with applied == -2: the record's shards; else -1 */
  long done_delta; /* counter changes made by this call */
  long failed_delta;
} bd_redis_shard;

/* Completes shards, pipelined (all scripts sent, then the replies read). On BD_OK every
 * shard is stored; a re-sent shard after a reconnect may report applied=0 although
 * the first send applied it (the counters are right either way). */
bd_status bd_redis_complete_shards(bd_redis *r, bd_redis_shard *shards, size_t n, bd_err *err);

/* HSET job:JOB field value ... (n pairs, at most 64), e.g. state/model/total/created. */
bd_status bd_redis_job_set(bd_redis *r, const char *job, const char *const *fields,
                           const char *const *values, size_t n, bd_err *err);

typedef struct bd_redis_counts {
  long long total, done, failed; /* -1 when the field is absent */
  long long shards;              /* SCARD job:JOB:shards */
} bd_redis_counts;

bd_status bd_redis_job_counts(bd_redis *r, const char *job, bd_redis_counts *out, bd_err *err);

/* Callbacks return 0 to go on, nonzero to stop. Strings are valid during the call. */
typedef int (*bd_redis_kv_fn)(void *ctx, const char *k, size_t klen, const char *v, size_t vlen);

/* HGETALL job:JOB (field, value). */
bd_status bd_redis_job_get(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx, bd_err *err);

/* SCAN MATCH det:JOB:* COUNT 512 with MGET per batch: (image id, JSON). Memory is one
 * batch; as with SCAN itself an image may rarely be reported twice. */
bd_status bd_redis_scan_results(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx,
                                bd_err *err);

/* HSCAN job:JOB:errors: (image id, error). */
bd_status bd_redis_scan_errors(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx,
                               bd_err *err);

/* HSET worker:ID fields... + EXPIRE ttl_s, in one MULTI/EXEC. */
bd_status bd_redis_worker_beat(bd_redis *r, const char *worker_id, const char *const *fields,
                               const char *const *values, size_t n, int ttl_s, bd_err *err);

/* 1 when id is a valid job/image/worker id (1..128 of [A-Za-z0-9._-]; worker ids may
 * also hold ':' for host:pid). */
int bd_redis_valid_id(const char *id, int allow_colon);

#endif
