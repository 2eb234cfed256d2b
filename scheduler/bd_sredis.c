/* bd_sredis: see bd_sredis.h. */
#include "bd_sredis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bd_redis.h"

struct bd_sredis {
  redisContext *c;
  size_t pending; /* replies queued by _append and not read yet */
};

static bd_status conn_err(bd_sredis *r, bd_err *err, const char *what) {
  return bd_err_set(err, BD_E_UNAVAILABLE, "redis: %s: %s", what,
                    r->c && r->c->errstr[0] ? r->c->errstr : "connection lost");
}

bd_sredis *bd_sredis_new(const char *url, bd_err *err) {
  bd_redis_url u;
  bd_sredis *r = NULL;
  redisReply *rep = NULL;
  if (bd_redis_parse_url(url, &u, err) != BD_OK) return NULL;
  r = calloc(1, sizeof *r);
  if (!r) {
    bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
    return NULL;
  }
  struct timeval tv = {2, 0};
  r->c = redisConnectWithTimeout(u.host, u.port, tv);
  if (!r->c || r->c->err) {
    bd_err_set(err, BD_E_UNAVAILABLE, "redis: connect to %s:%d: %s", u.host, u.port,
               r->c ? r->c->errstr : "out of memory");
    goto fail;
  }
  struct timeval io = {30, 0};
  redisSetTimeout(r->c, io);
  if (u.pass[0]) {
    rep = u.user[0] ? redisCommand(r->c, "AUTH %s %s", u.user, u.pass)
                    : redisCommand(r->c, "AUTH %s", u.pass);
    if (!rep) {
      conn_err(r, err, "AUTH");
      goto fail;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
      bd_err_set(err, BD_E_INVALID, "redis: authentication failed: %s", rep->str);
      goto fail;
    }
    freeReplyObject(rep);
    rep = NULL;
  }
  if (u.db) {
    rep = redisCommand(r->c, "SELECT %d", u.db);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
      if (rep)
        bd_err_set(err, BD_E_INVALID, "redis: SELECT %d: %s", u.db, rep->str);
      else
        conn_err(r, err, "SELECT");
      goto fail;
    }
    freeReplyObject(rep);
    rep = NULL;
  }
  return r;
fail:
  if (rep) freeReplyObject(rep);
  bd_sredis_destroy(r);
  return NULL;
}

void bd_sredis_destroy(bd_sredis *r) {
  if (!r) return;
  if (r->c) redisFree(r->c);
  free(r);
}

static bd_status check_reply(redisReply *rep, redisReply **out, bd_err *err) {
  if (rep->type == REDIS_REPLY_ERROR) {
    bd_status st = bd_err_set(err, BD_E_INVALID, "redis: %s", rep->str);
    freeReplyObject(rep);
    return st;
  }
  if (out)
    *out = rep;
  else
    freeReplyObject(rep);
  return BD_OK;
}

bd_status bd_sredis_cmdv(bd_sredis *r, int argc, const char **argv, const size_t *lens,
                         redisReply **out, bd_err *err) {
  if (out) *out = NULL;
  if (r->pending) return bd_err_set(err, BD_E_INTERNAL, "redis: command while pipelining");
  redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
  if (!rep) return conn_err(r, err, argv[0]);
  return check_reply(rep, out, err);
}

bd_status bd_sredis_cmd(bd_sredis *r, redisReply **out, bd_err *err, const char *fmt, ...) {
  if (out) *out = NULL;
  if (r->pending) return bd_err_set(err, BD_E_INTERNAL, "redis: command while pipelining");
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r->c, fmt, ap);
  va_end(ap);
  if (!rep) return conn_err(r, err, "command");
  return check_reply(rep, out, err);
}

bd_status bd_sredis_append(bd_sredis *r, int argc, const char **argv, const size_t *lens,
                           bd_err *err) {
  if (redisAppendCommandArgv(r->c, argc, argv, lens) != REDIS_OK) return conn_err(r, err, "append");
  r->pending++;
  return BD_OK;
}

bd_status bd_sredis_next_reply(bd_sredis *r, redisReply **out, bd_err *err) {
  *out = NULL;
  if (!r->pending) return bd_err_set(err, BD_E_INTERNAL, "redis: no reply pending");
  void *rep = NULL;
  r->pending--;
  if (redisGetReply(r->c, &rep) != REDIS_OK || !rep) return conn_err(r, err, "reply");
  *out = rep;
  return BD_OK;
}

size_t bd_sredis_pending(const bd_sredis *r) {
  return r->pending;
}

bd_status bd_sredis_flush(bd_sredis *r, bd_err *err) {
  bd_status st = BD_OK;
  while (r->pending) {
    redisReply *rep;
    bd_status s = bd_sredis_next_reply(r, &rep, err);
    if (s != BD_OK) return s; /* connection gone: the rest cannot be read */
    if (rep->type == REDIS_REPLY_ERROR && st == BD_OK)
      st = bd_err_set(err, BD_E_INVALID, "redis: %s", rep->str);
    freeReplyObject(rep);
  }
  return st;
}

/* One SCAN-family page: reply [cursor, [items...]]. */
static bd_status scan_page(bd_sredis *r, redisReply *rep, char *cursor, size_t cap, bd_err *err) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY ||
      (size_t)rep->element[0]->len >= cap)
    return bd_err_set(err, BD_E_INVALID, "redis: unexpected SCAN reply");
  memcpy(cursor, rep->element[0]->str, (size_t)rep->element[0]->len + 1);
  return BD_OK;
}

bd_status bd_sredis_scan_pages(bd_sredis *r, const char *pattern, int count, bd_sredis_page_fn fn,
                               void *ctx, bd_err *err) {
  char cursor[32] = "0", cnt[16];
  snprintf(cnt, sizeof cnt, "%d", count > 0 ? count : 512);
  const char **keys = NULL;
  size_t *lens = NULL, cap = 0;
  bd_status st = BD_OK;
  do {
    redisReply *rep;
    const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", cnt};
    st = bd_sredis_cmdv(r, 6, argv, NULL, &rep, err);
    if (st != BD_OK) break;
    st = scan_page(r, rep, cursor, sizeof cursor, err);
    redisReply *items = st == BD_OK ? rep->element[1] : NULL;
    if (items && items->elements > cap) {
      size_t nc = items->elements;
      const char **nk = realloc(keys, nc * sizeof *nk);
      if (nk) keys = nk;
      size_t *nl = nk ? realloc(lens, nc * sizeof *nl) : NULL;
      if (nl) lens = nl;
      if (!nk || !nl)
        st = bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
      else
        cap = nc;
    }
    int stop = 0;
    if (st == BD_OK && items->elements) {
      for (size_t i = 0; i < items->elements; i++) {
        keys[i] = items->element[i]->str;
        lens[i] = (size_t)items->element[i]->len;
      }
      stop = fn(ctx, keys, lens, items->elements);
    }
    freeReplyObject(rep);
    if (st != BD_OK || stop) break;
  } while (strcmp(cursor, "0") != 0);
  free(keys);
  free(lens);
  return st;
}

typedef struct {
  bd_sredis_key_fn fn;
  void *ctx;
} key_adapter;

static int key_page(void *ctx, const char *const *keys, const size_t *lens, size_t n) {
  key_adapter *a = ctx;
  for (size_t i = 0; i < n; i++)
    if (a->fn(a->ctx, keys[i], lens[i])) return 1;
  return 0;
}

bd_status bd_sredis_scan(bd_sredis *r, const char *pattern, int count, bd_sredis_key_fn fn,
                         void *ctx, bd_err *err) {
  key_adapter a = {fn, ctx};
  return bd_sredis_scan_pages(r, pattern, count, key_page, &a, err);
}

bd_status bd_sredis_hscan(bd_sredis *r, const char *key, int count, bd_sredis_kv_fn fn, void *ctx,
                          bd_err *err) {
  char cursor[32] = "0", cnt[16];
  snprintf(cnt, sizeof cnt, "%d", count > 0 ? count : 512);
  bd_status st = BD_OK;
  do {
    redisReply *rep;
    const char *argv[] = {"HSCAN", key, cursor, "COUNT", cnt};
    st = bd_sredis_cmdv(r, 5, argv, NULL, &rep, err);
    if (st != BD_OK) break;
    st = scan_page(r, rep, cursor, sizeof cursor, err);
    int stop = 0;
    if (st == BD_OK) {
      redisReply *items = rep->element[1];
      for (size_t i = 0; i + 1 < items->elements && !stop; i += 2)
        stop = fn(ctx, items->element[i]->str, (size_t)items->element[i]->len,
                  items->element[i + 1]->str, (size_t)items->element[i + 1]->len);
    }
    freeReplyObject(rep);
    if (st != BD_OK || stop) break;
  } while (strcmp(cursor, "0") != 0);
  return st;
}

bd_status bd_sredis_hgetall(bd_sredis *r, const char *key, bd_sredis_kv_fn fn, void *ctx,
                            int *found, bd_err *err) {
  redisReply *rep;
  const char *argv[] = {"HGETALL", key};
  *found = 0;
  bd_status st = bd_sredis_cmdv(r, 2, argv, NULL, &rep, err);
  if (st != BD_OK) return st;
  if (rep->type == REDIS_REPLY_ARRAY) {
    *found = rep->elements > 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2)
      if (fn(ctx, rep->element[i]->str, (size_t)rep->element[i]->len, rep->element[i + 1]->str,
             (size_t)rep->element[i + 1]->len))
        break;
  }
  freeReplyObject(rep);
  return BD_OK;
}

typedef struct {
  bd_sredis *r;
  long long deleted;
  bd_err *err;
  bd_status st;
} unlink_ctx;

static int unlink_page(void *vctx, const char *const *keys, const size_t *lens, size_t n) {
  unlink_ctx *u = vctx;
  /* The SCAN reply owning keys is still alive; a separate connection is not needed
   * because this command completes before the next SCAN call is sent. */
  const char **argv = malloc((n + 1) * sizeof *argv);
  size_t *al = malloc((n + 1) * sizeof *al);
  if (!argv || !al) {
    free(argv);
    free(al);
    u->st = bd_err_set(u->err, BD_E_NOMEM, "redis: out of memory");
    return 1;
  }
  argv[0] = "UNLINK";
  al[0] = 6;
  for (size_t i = 0; i < n; i++) argv[i + 1] = keys[i], al[i + 1] = lens[i];
  redisReply *rep;
  u->st = bd_sredis_cmdv(u->r, (int)(n + 1), argv, al, &rep, u->err);
  free(argv);
  free(al);
  if (u->st != BD_OK) return 1;
  u->deleted += bd_sredis_reply_ll(rep, 0);
  freeReplyObject(rep);
  return 0;
}

bd_status bd_sredis_unlink_match(bd_sredis *r, const char *pattern, long long *n_deleted,
                                 bd_err *err) {
  unlink_ctx u = {r, 0, err, BD_OK};
  bd_status st = bd_sredis_scan_pages(r, pattern, 1000, unlink_page, &u, err);
  if (n_deleted) *n_deleted = u.deleted;
  return st != BD_OK ? st : u.st;
}

long long bd_sredis_reply_ll(const redisReply *rep, long long def) {
  if (!rep) return def;
  if (rep->type == REDIS_REPLY_INTEGER) return rep->integer;
  if (rep->type == REDIS_REPLY_STRING && rep->len > 0 && rep->len < 32) {
    char *end;
    errno = 0;
    long long v = strtoll(rep->str, &end, 10);
    if (!errno && *end == '\0') return v;
  }
  return def;
}

double bd_sredis_reply_double(const redisReply *rep, double def) {
  if (!rep) return def;
  if (rep->type == REDIS_REPLY_INTEGER) return (double)rep->integer;
  if (rep->type == REDIS_REPLY_STRING && rep->len > 0 && rep->len < 64) {
    char *end;
    double v = strtod(rep->str, &end);
    if (*end == '\0') return v;
  }
  return def;
}
