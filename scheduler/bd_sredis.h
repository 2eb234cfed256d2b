/* bd_sredis: the scheduler's small Redis client (hiredis) for the commands the
 * worker-side store (storage/bd_redis.h) does not offer: EXISTS, SCAN/HSCAN walks,
 * UNLINK by pattern, pipelined HSET/MGET batches, HINCRBY.
 *
 * The scheduler's programs are short-lived CLIs or a coordinator that re-reads
 * everything each tick, so there is no reconnect logic: a lost connection is an error
 * (BD_E_UNAVAILABLE) and the caller decides (the coordinator reconnects next tick).
 * Walks (scan, hscan) hold one SCAN page in memory at a time; like SCAN itself they
 * may report an element twice.
 *
 * Thread safety: one handle per thread. Ownership: replies returned by bd_sredis_cmd
 * belong to the caller (freeReplyObject). */
#ifndef BD_SREDIS_H
#define BD_SREDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "bd_status.h"

typedef struct bd_sredis bd_sredis;

/* Connects to redis://[[user]:pass@]host[:port][/db] (AUTH, SELECT). */
bd_sredis *bd_sredis_new(const char *url, bd_err *err);
void bd_sredis_destroy(bd_sredis *r);

/* One command (argv form). An error reply becomes BD_E_INVALID with the server's text,
 * a lost connection BD_E_UNAVAILABLE. *out (may be NULL) gets the reply. */
bd_status bd_sredis_cmdv(bd_sredis *r, int argc, const char **argv, const size_t *lens,
                         redisReply **out, bd_err *err);
/* printf-style (hiredis format: %s, %b, %d ...). */
bd_status bd_sredis_cmd(bd_sredis *r, redisReply **out, bd_err *err, const char *fmt, ...);

/* Pipelining: queue commands with _append, then _flush reads every queued reply and
 * fails on the first error reply (after reading them all). */
bd_status bd_sredis_append(bd_sredis *r, int argc, const char **argv, const size_t *lens,
                           bd_err *err);
bd_status bd_sredis_flush(bd_sredis *r, bd_err *err);
/* Reads the next queued reply into *out (caller frees) without failing on error replies. */
bd_status bd_sredis_next_reply(bd_sredis *r, redisReply **out, bd_err *err);
size_t bd_sredis_pending(const bd_sredis *r);

/* Callbacks return 0 to go on, nonzero to stop the walk. */
typedef int (*bd_sredis_key_fn)(void *ctx, const char *key, size_t len);
typedef int (*bd_sredis_kv_fn)(void *ctx, const char *k, size_t klen, const char *v, size_t vlen);

/* SCAN MATCH pattern COUNT count; calls fn once per key. */
bd_status bd_sredis_scan(bd_sredis *r, const char *pattern, int count, bd_sredis_key_fn fn,
                         void *ctx, bd_err *err);
/* Walks SCAN pages and hands each page of keys (n <= count) to fn at once, so that the
 * caller can MGET / pipeline per page. */
typedef int (*bd_sredis_page_fn)(void *ctx, const char *const *keys, const size_t *lens, size_t n);
bd_status bd_sredis_scan_pages(bd_sredis *r, const char *pattern, int count, bd_sredis_page_fn fn,
                               void *ctx, bd_err *err);
/* HSCAN key COUNT count: (field, value). */
bd_status bd_sredis_hscan(bd_sredis *r, const char *key, int count, bd_sredis_kv_fn fn, void *ctx,
                          bd_err *err);
/* HGETALL key: (field, value). *found = 0 when the key does not exist. */
bd_status bd_sredis_hgetall(bd_sredis *r, const char *key, bd_sredis_kv_fn fn, void *ctx,
                            int *found, bd_err *err);
/* SCAN MATCH pattern + UNLINK page by page; *n_deleted (may be NULL) counts keys removed. */
bd_status bd_sredis_unlink_match(bd_sredis *r, const char *pattern, long long *n_deleted,
                                 bd_err *err);

/* Integer/string helpers over a reply: value of an integer reply or of a numeric
 * string (bulk) reply; def when nil or not a number. */
long long bd_sredis_reply_ll(const redisReply *rep, long long def);
double bd_sredis_reply_double(const redisReply *rep, double def);

#endif
