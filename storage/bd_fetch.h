/* bd_fetch: concurrent HTTP/HTTPS/S3/file fetcher on libcurl's multi interface.
 *
 * One background thread drives up to `concurrency` transfers over one curl multi
 * handle (shared connection cache and DNS cache, HTTP/2 multiplexing over TLS where
 * the server offers it). Callers submit requests from any thread; every accepted
 * submit produces exactly ONE completion, either through the callback (called on the
 * fetch thread: keep it short, e.g. push to the decode queue) or, when no callback is
 * set, through an internal completion queue read with bd_fetch_poll. A callback must
 * not call bd_fetch_submit with a wait (only the fetch thread frees queue slots).
 *
 * Retries (bounded by max_attempts) with exponential backoff and full jitter for HTTP
 * 429 (Retry-After honoured, capped), 5xx (S3 SlowDown is a 503), timeouts,
 * connection refused/reset and truncated bodies. Other 4xx are permanent ("fetch:
 * HTTP 404"). Bodies larger than max_body fail with BD_E_LIMIT (rejected on
 * Content-Length before the body is read, or aborted while streaming; the connection
 * is closed, never reused).
 *
 * Schemes: http, https, s3://bucket/key (SigV4 via CURLOPT_AWS_SIGV4, credentials from
 * AWS_* variables or the shared credentials file; anonymous when none), and file://
 * only when opts.allow_file is set. Error messages never contain credentials, URL
 * userinfo or query strings.
 *
 * Thread safety: bd_fetch_submit, bd_fetch_poll and bd_fetch_stats may be called from
 * any thread. bd_fetch_destroy must not race with other calls on the same handle. */
#ifndef BD_FETCH_H
#define BD_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "bd_status.h"

typedef struct bd_fetch bd_fetch;

typedef struct bd_fetch_opts {
  int concurrency;           /* transfers in flight at once (default 64, max 4096) */
  int queue_max;             /* accepted but not yet completed requests (default 16*concurrency) */
  int max_attempts;          /* including the first (default 4, max 32) */
  long connect_timeout_ms;   /* default 10000 */
  long timeout_ms;           /* whole transfer, per attempt (default 120000) */
  long low_speed_bytes;      /* abort when slower than this many bytes/s ... (default 1024) */
  long low_speed_time_s;     /* ... for this many seconds (default 30) */
  size_t max_body;           /* default 64 MiB */
  long backoff_base_ms;      /* first retry delay bound (default 200) */
  long backoff_max_ms;       /* cap of the exponential bound (default 10000) */
  long retry_after_max_ms;   /* cap for a server's Retry-After (default 30000) */
  int allow_file;            /* accept file:// URLs (default 0) */
  const char *allowed_hosts; /* comma-separated host names; NULL or "" = any. With a
                                list, redirects are not followed. Copied at _new. */
  int follow_redirects;      /* default 1 (max 5 hops, http/https only) */
  /* S3: NULL/-1 = from the environment (AWS_ENDPOINT_URL, AWS_REGION). */
  const char *s3_endpoint; /* e.g. "http://127.0.0.1:9000" for MinIO/Ceph/s3rver */
  const char *s3_region;   /* default us-east-1 */
  int s3_path_style;       /* -1 auto: on when an endpoint is given; 0 virtual-host; 1 path */
  unsigned rng_seed;       /* jitter seed; 0 = from time and address */
} bd_fetch_opts;

/* Fills o with the defaults above. */
void bd_fetch_opts_default(bd_fetch_opts *o);

/* One completion. data is malloc'd and owned by the result: a callback may take it
 * (set data to NULL), otherwise it is freed after the callback returns. */
typedef struct bd_fetch_result {
  uint64_t id;
  void *user;
  bd_status status; /* BD_OK or the error; err.msg starts with "fetch: " */
  bd_err err;
  unsigned char *data;
  size_t len;
  long http_code;   /* last HTTP status, 0 when none (connection failure, file://) */
  int attempts;     /* transfers made */
  double elapsed_s; /* submit to completion */
} bd_fetch_result;

typedef void (*bd_fetch_done_fn)(void *ctx, bd_fetch_result *res);

/* Creates the fetcher and starts its thread. done may be NULL: results then go to the
 * completion queue (bd_fetch_poll). Reads AWS_* once here. */
bd_fetch *bd_fetch_new(const bd_fetch_opts *opts, bd_fetch_done_fn done, void *ctx, bd_err *err);

/* Cancels everything in flight or queued (each gets a BD_E_CANCELLED completion through
 * the callback; queued results are freed), stops the thread, frees the handle.
 * NULL is a no-op. */
void bd_fetch_destroy(bd_fetch *f);

/* Queues a GET of url. Waits up to wait_ms (<0: forever) while queue_max requests are
 * outstanding; then fails with BD_E_UNAVAILABLE ("queue full"). BD_E_CANCELLED after
 * shutdown started. URL problems (bad scheme, host not allowed, file:// disabled) are
 * reported through the completion, not here, so that each image gets its error. */
bd_status bd_fetch_submit(bd_fetch *f, uint64_t id, const char *url, void *user, long wait_ms,
                          bd_err *err);

/* Queue mode only: waits up to wait_ms (<0 forever) for a completion and moves it into
 * *out (free its data with bd_fetch_result_clear). BD_E_TIMEOUT when none came,
 * BD_E_INVALID when the handle has a callback. */
bd_status bd_fetch_poll(bd_fetch *f, long wait_ms, bd_fetch_result *out, bd_err *err);

/* Frees res->data and zeroes it. */
void bd_fetch_result_clear(bd_fetch_result *res);

typedef struct bd_fetch_stats {
  uint64_t submitted, completed, failed, retries;
  int outstanding; /* accepted, not yet completed */
  int running;     /* in curl right now */
  int max_running; /* high-water mark of running */
} bd_fetch_stats;

void bd_fetch_stats_get(bd_fetch *f, bd_fetch_stats *out);

/* Synchronous GET for the CLI: *buf (malloc'd, caller frees) and *len on success.
 * opts may be NULL (defaults). info (may be NULL) receives status/attempts/http_code
 * (its data is always NULL). */
bd_status bd_fetch_one(const char *url, const bd_fetch_opts *opts, unsigned char **buf, size_t *len,
                       bd_fetch_result *info, bd_err *err);

#endif
