#include "bd_redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "bd_url.h"

#define BD_REDIS_ID_MAX 128
#define BD_REDIS_SHARD_IMAGES_MAX 100000
#define BD_REDIS_JSON_MAX (16u * 1024 * 1024)
#define BD_REDIS_SCAN_COUNT "512"
#define BD_REDIS_SCAN_ITER_MAX 100000000u

/* KEYS: 1 shards set, 2 job hash, 3 errors hash, 4.. det keys (one per image).
 * ARGV: 1 shard, 2 now, 3 gen ("" = none), then per image: id, json, error ("" = ok).
 * A shard whose gen is not the job record's (a submission replaced by submit --force
 * while it was in flight, or a job since deleted) writes nothing: {-1, 0, 0}. Nor does
 * one whose number is not below the record's shards (a hand-made manifest that would push
 * the counters past the job's total): {-2, 0, shards}. */
static const char k_script[] =
    "if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'gen') ~= ARGV[3] then\n"
    "  return {-1, 0, 0}\n"
    "end\n"
    "local nsh = tonumber(redis.call('HGET', KEYS[2], 'shards') or '')\n"
    "if nsh and tonumber(ARGV[1]) >= nsh then return {-2, 0, nsh} end\n"
    "if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return {0, 0, 0} end\n"
    "local done, failed = 0, 0\n"
    "local n = (#ARGV - 3) / 3\n"
    "for i = 1, n do\n"
    "  local img, json, e = ARGV[3*i+1], ARGV[3*i+2], ARGV[3*i+3]\n"
    "  local det = KEYS[3+i]\n"
    "  local wasfail = redis.call('HEXISTS', KEYS[3], img) == 1\n"
    "  local wasdone = (not wasfail) and redis.call('EXISTS', det) == 1\n"
    "  if e == '' then\n"
    "    redis.call('SET', det, json)\n"
    "    if wasfail then\n"
    "      redis.call('HDEL', KEYS[3], img); failed = failed - 1; done = done + 1\n"
    "    elseif not wasdone then done = done + 1 end\n"
    "  elseif not wasdone then\n"
    "    redis.call('SET', det, json); redis.call('HSET', KEYS[3], img, e)\n"
    "    if not wasfail then failed = failed + 1 end\n"
    "  end\n"
    "end\n"
    "if done ~= 0 then redis.call('HINCRBY', KEYS[2], 'done', done) end\n"
    "if failed ~= 0 then redis.call('HINCRBY', KEYS[2], 'failed', failed) end\n"
    "redis.call('HSET', KEYS[2], 'updated', ARGV[2])\n"
    "return {1, done, failed}\n";

struct bd_redis {
  bd_redis_url u;
  bd_redis_opts o;
  redisContext *c;
  int persist;
  char sha[48];
  unsigned reconnects;
  uint64_t rng;
};

void bd_redis_opts_default(bd_redis_opts *o) {
  o->connect_timeout_ms = 2000;
  o->io_timeout_ms = 10000;
  o->max_attempts = 8;
  o->backoff_base_ms = 100;
  o->backoff_max_ms = 2000;
}

int bd_redis_valid_id(const char *id, int allow_colon) {
  if (!id) return 0;
  size_t n = 0;
  for (; id[n]; n++) {
    char c = id[n];
    if (n >= BD_REDIS_ID_MAX) return 0;
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-' || (allow_colon && c == ':')))
      return 0;
  }
  return n > 0;
}

/* ---- URL ---- */

bd_status bd_redis_parse_url(const char *url, bd_redis_url *out, bd_err *err) {
  memset(out, 0, sizeof *out);
  out->port = 6379;
  if (!url) return bd_err_set(err, BD_E_INVALID, "redis: no URL");
  if (strncasecmp(url, "rediss://", 9) == 0)
    return bd_err_set(
        err, BD_E_UNSUPPORTED,
        "redis: rediss:// (TLS) not supported; use redis:// (e.g. through a local TLS tunnel)");
  if (strncasecmp(url, "redis://", 8) != 0)
    return bd_err_set(err, BD_E_INVALID, "redis: URL must start with redis://");
  const char *p = url + 8;
  const char *end = p + strcspn(p, "/?#");
  const char *at = NULL;
  for (const char *q = p; q < end; q++)
    if (*q == '@') at = q;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
      if (bd_url_decode(p, colon, out->user, sizeof out->user, NULL) ||
          bd_url_decode(colon + 1, at, out->pass, sizeof out->pass, NULL))
        return bd_err_set(err, BD_E_INVALID, "redis: bad or too long user/password in URL");
    } else if (bd_url_decode(p, at, out->pass, sizeof out->pass, NULL)) {
      /* "redis://secret@host": a lone userinfo is the password, as redis-cli reads it */
      return bd_err_set(err, BD_E_INVALID, "redis: bad or too long password in URL");
    }
    p = at + 1;
  }
  const char *hb = p, *he;
  if (*p == '[') {
    he = memchr(p, ']', (size_t)(end - p));
    if (!he) return bd_err_set(err, BD_E_INVALID, "redis: unterminated [IPv6] host");
    hb = p + 1;
    p = he + 1;
  } else {
    he = p;
    while (he < end && *he != ':') he++;
    p = he;
  }
  size_t hl = (size_t)(he - hb);
  if (hl == 0) hb = "127.0.0.1", hl = 9;
  if (hl >= sizeof out->host) return bd_err_set(err, BD_E_LIMIT, "redis: host name too long");
  memcpy(out->host, hb, hl);
  out->host[hl] = '\0';
  if (p < end && *p == ':') {
    char *e2;
    long port = strtol(p + 1, &e2, 10);
    if (e2 != end || port < 1 || port > 65535)
      return bd_err_set(err, BD_E_INVALID, "redis: bad port in URL");
    out->port = (int)port;
  } else if (p != end) {
    return bd_err_set(err, BD_E_INVALID, "redis: bad host:port in URL");
  }
  if (*end == '/' && end[1] && end[1] != '?') {
    char *e2;
    long db = strtol(end + 1, &e2, 10);
    if ((*e2 && *e2 != '?') || db < 0 || db > 1023)
      return bd_err_set(err, BD_E_INVALID, "redis: bad database number in URL");
    out->db = (int)db;
  }
  return BD_OK;
}

/* ---- connection ---- */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static long backoff(bd_redis *r, int attempt) {
  long bound = r->o.backoff_base_ms;
  for (int i = 1; i < attempt && bound < r->o.backoff_max_ms; i++) bound *= 2;
  if (bound > r->o.backoff_max_ms) bound = r->o.backoff_max_ms;
  uint64_t x = r->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  r->rng = x;
  /* full jitter, but never 0 so that a reconnect loop cannot spin */
  return 1 + (long)(x % (uint64_t)bound);
}

static void drop(bd_redis *r) {
  if (r->c) redisFree(r->c);
  r->c = NULL;
}

static int reply_is(const redisReply *rep, const char *prefix) {
  return rep && rep->type == REDIS_REPLY_ERROR && rep->str &&
         strncmp(rep->str, prefix, strlen(prefix)) == 0;
}

/* Replies that mean "the server is there but not ready": retried like a lost connection. */
static int transient_reply(const redisReply *rep) {
  return reply_is(rep, "LOADING") || reply_is(rep, "BUSY") || reply_is(rep, "TRYAGAIN") ||
         reply_is(rep, "MASTERDOWN") || reply_is(rep, "READONLY") || reply_is(rep, "CLUSTERDOWN");
}

static bd_status connect_once(bd_redis *r, bd_err *err) {
  bd_status st = BD_OK;
  redisReply *rep = NULL;
  struct timeval tv = {r->o.connect_timeout_ms / 1000, (r->o.connect_timeout_ms % 1000) * 1000};
  drop(r);
  r->c = redisConnectWithTimeout(r->u.host, r->u.port, tv);
  if (!r->c) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  if (r->c->err) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: connect to %s:%d: %s", r->u.host, r->u.port,
                    r->c->errstr);
    goto out;
  }
  struct timeval io = {r->o.io_timeout_ms / 1000, (r->o.io_timeout_ms % 1000) * 1000};
  redisSetTimeout(r->c, io);
  redisEnableKeepAlive(r->c);
  if (r->u.pass[0]) {
    rep = r->u.user[0] ? redisCommand(r->c, "AUTH %s %s", r->u.user, r->u.pass)
                       : redisCommand(r->c, "AUTH %s", r->u.pass);
    if (!rep) {
      st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: AUTH: %s", r->c->errstr);
      goto out;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
      /* The server's text (WRONGPASS ..., ERR invalid password) never echoes the secret. */
      st = bd_err_set(err, BD_E_INVALID, "redis: authentication failed: %s", rep->str);
      goto out;
    }
    freeReplyObject(rep);
    rep = NULL;
  }
  rep = redisCommand(r->c, "SELECT %d", r->u.db);
  if (!rep) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: SELECT: %s", r->c->errstr);
    goto out;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    if (reply_is(rep, "NOAUTH"))
      st = bd_err_set(err, BD_E_INVALID,
                      "redis: the server requires a password (NOAUTH); put it in the URL");
    else if (transient_reply(rep))
      st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: SELECT: %s", rep->str);
    else
      st = bd_err_set(err, BD_E_INVALID, "redis: SELECT %d: %s", r->u.db, rep->str);
    goto out;
  }
  freeReplyObject(rep);
  rep = redisCommand(r->c, "SCRIPT LOAD %s", k_script);
  if (!rep || rep->type != REDIS_REPLY_STRING || rep->len >= (int)sizeof r->sha) {
    st = bd_err_set(
        err, rep ? (transient_reply(rep) ? BD_E_UNAVAILABLE : BD_E_UNSUPPORTED) : BD_E_UNAVAILABLE,
        "redis: SCRIPT LOAD: %s", rep ? (rep->str ? rep->str : "unexpected reply") : r->c->errstr);
    goto out;
  }
  memcpy(r->sha, rep->str, (size_t)rep->len + 1);
  freeReplyObject(rep);
  /* Persistence check; CONFIG may be renamed/disabled on managed servers: unknown. */
  rep = redisCommand(r->c, "CONFIG GET appendonly");
  if (!rep) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: CONFIG GET: %s", r->c->errstr);
    goto out;
  }
  r->persist = -1;
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[1]->type == REDIS_REPLY_STRING)
    r->persist = strcasecmp(rep->element[1]->str, "yes") == 0;
out:
  if (rep) freeReplyObject(rep);
  if (st != BD_OK) drop(r);
  return st;
}

bd_redis *bd_redis_new(const char *url, const bd_redis_opts *opts, bd_err *err) {
  bd_redis *r = calloc(1, sizeof *r);
  if (!r) {
    bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
    return NULL;
  }
  if (opts)
    r->o = *opts;
  else
    bd_redis_opts_default(&r->o);
  if (r->o.connect_timeout_ms <= 0 || r->o.io_timeout_ms <= 0 || r->o.max_attempts < 1 ||
      r->o.max_attempts > 64 || r->o.backoff_base_ms < 1 ||
      r->o.backoff_max_ms < r->o.backoff_base_ms) {
    bd_err_set(err, BD_E_INVALID, "redis: invalid options");
    goto fail;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  r->rng = ((uint64_t)ts.tv_nsec << 20 ^ (uint64_t)(uintptr_t)r) | 1;
  if (bd_redis_parse_url(url, &r->u, err) != BD_OK) goto fail;
  if (connect_once(r, err) != BD_OK) goto fail;
  return r;
fail:
  bd_redis_destroy(r);
  return NULL;
}

void bd_redis_destroy(bd_redis *r) {
  if (!r) return;
  drop(r);
  volatile char *p = r->u.pass;
  for (size_t i = 0; i < sizeof r->u.pass; i++) p[i] = 0;
  free(r);
}

int bd_redis_persistence(const bd_redis *r) {
  return r ? r->persist : -1;
}
unsigned bd_redis_reconnects(const bd_redis *r) {
  return r ? r->reconnects : 0;
}

/* ---- pipelined commands with reconnect ---- */

typedef struct cmd {
  int argc;
  const char **argv;
  size_t *lens;
  redisReply *reply; /* set once answered (may be an error reply) */
} cmd;

/* Sends every command without a reply, reads the replies; on a lost connection or a
 * transient error reply, reconnects with backoff and re-sends the unanswered ones. */
static bd_status run_cmds(bd_redis *r, cmd *cmds, size_t n, bd_err *err) {
  bd_status st = BD_OK;
  bd_err last = {0};
  for (int attempt = 1;; attempt++) {
    int again = 0;
    if (!r->c) {
      st = connect_once(r, &last);
      if (st == BD_OK)
        r->reconnects++;
      else if (!bd_status_retriable(st))
        return bd_err_set(err, st, "%s", last.msg);
      else
        again = 1;
    }
    if (!again) {
      size_t sent = 0;
      for (size_t i = 0; i < n; i++) {
        if (cmds[i].reply) continue;
        if (redisAppendCommandArgv(r->c, cmds[i].argc, cmds[i].argv, cmds[i].lens) != REDIS_OK) {
          st = bd_err_set(&last, BD_E_NOMEM, "redis: cannot queue a command");
          drop(r);
          return bd_err_set(err, st, "%s", last.msg);
        }
        sent++;
      }
      int noscript = 0;
      for (size_t i = 0; i < n && sent; i++) {
        if (cmds[i].reply) continue;
        void *rep = NULL;
        if (redisGetReply(r->c, &rep) != REDIS_OK || !rep) {
          bd_err_set(&last, BD_E_UNAVAILABLE, "redis: connection lost: %s",
                     r->c->errstr[0] ? r->c->errstr : "EOF");
          drop(r);
          again = 1;
          break;
        }
        sent--;
        redisReply *rr = rep;
        if (reply_is(rr, "NOSCRIPT") || transient_reply(rr)) {
          if (reply_is(rr, "NOSCRIPT")) noscript = 1;
          bd_err_set(&last, BD_E_UNAVAILABLE, "redis: %s", rr->str);
          freeReplyObject(rr);
          again = 1;
          continue;
        }
        cmds[i].reply = rr;
      }
      if (noscript && r->c) {
        /* The server lost its script cache (restart, SCRIPT FLUSH): load it again. */
        redisReply *rep = redisCommand(r->c, "SCRIPT LOAD %s", k_script);
        if (!rep)
          drop(r);
        else
          freeReplyObject(rep);
      }
      if (!again) return BD_OK;
    }
    if (attempt >= r->o.max_attempts)
      return bd_err_set(err, BD_E_UNAVAILABLE, "%s (after %d attempts)", last.msg, attempt);
    sleep_ms(backoff(r, attempt));
  }
}

static void free_cmds(cmd *cmds, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (cmds[i].reply) freeReplyObject(cmds[i].reply);
}

/* One command, argv NUL-terminated strings; *out (caller frees) is a non-error reply. */
static bd_status run1(bd_redis *r, int argc, const char **argv, redisReply **out, const char *what,
                      bd_err *err) {
  size_t lens[16];
  if (argc > 16) return bd_err_set(err, BD_E_INTERNAL, "redis: too many arguments");
  for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
  cmd c = {argc, argv, lens, NULL};
  bd_status st = run_cmds(r, &c, 1, err);
  if (st != BD_OK) return st;
  if (c.reply->type == REDIS_REPLY_ERROR) {
    st = bd_err_set(err, BD_E_INVALID, "redis: %s: %s", what, c.reply->str);
    freeReplyObject(c.reply);
    return st;
  }
  *out = c.reply;
  return BD_OK;
}

/* ---- writes ---- */

typedef struct shard_args {
  const char **argv;
  size_t *lens;
  char **owned; /* keys we built */
  size_t nowned;
  char shard[24], now[24];
} shard_args;

static void shard_args_free(shard_args *a) {
  if (!a) return;
  for (size_t i = 0; i < a->nowned; i++) free(a->owned[i]);
  free(a->owned);
  free(a->argv);
  free(a->lens);
}

static char *keyf(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + (c ? strlen(c) : 0) + 4;
  char *k = malloc(n);
  if (k) snprintf(k, n, "%s:%s%s%s", a, b, c ? ":" : "", c ? c : "");
  return k;
}

static bd_status build_shard(const bd_redis *r, const bd_redis_shard *s, shard_args *a, int *argc,
                             bd_err *err) {
  if (!bd_redis_valid_id(s->job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  if (s->shard < 0) return bd_err_set(err, BD_E_INVALID, "redis: negative shard number");
  if (s->n > BD_REDIS_SHARD_IMAGES_MAX || (s->n && !s->images))
    return bd_err_set(err, BD_E_LIMIT, "redis: shard with %zu images (max %d)", s->n,
                      BD_REDIS_SHARD_IMAGES_MAX);
  if (s->gen && s->gen[0] && !bd_redis_valid_id(s->gen, 0))
    return bd_err_set(err, BD_E_INVALID, "redis: invalid submission id (gen)");
  /* EVALSHA sha numkeys, 3 keys, det keys, shard now gen, triplets */
  size_t nargs = 3 + 3 + s->n + 3 + 3 * s->n;
  a->argv = calloc(nargs, sizeof *a->argv);
  a->lens = calloc(nargs, sizeof *a->lens);
  a->owned = calloc(4 + s->n, sizeof *a->owned); /* numkeys, 3 job keys, n det keys */
  if (!a->argv || !a->lens || !a->owned) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  size_t k = 0;
  char *nk = malloc(24);
  if (!nk) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  snprintf(nk, 24, "%zu", 3 + s->n);
  a->owned[a->nowned++] = nk;
  a->argv[k++] = "EVALSHA";
  a->argv[k++] = r->sha;
  a->argv[k++] = nk;
  char *ks = keyf("job", s->job, "shards"), *kj = keyf("job", s->job, NULL),
       *ke = keyf("job", s->job, "errors");
  if (ks) a->owned[a->nowned++] = ks;
  if (kj) a->owned[a->nowned++] = kj;
  if (ke) a->owned[a->nowned++] = ke;
  if (!ks || !kj || !ke) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  a->argv[k++] = ks;
  a->argv[k++] = kj;
  a->argv[k++] = ke;
  for (size_t i = 0; i < s->n; i++) {
    const bd_redis_image *im = &s->images[i];
    if (!bd_redis_valid_id(im->image, 0))
      return bd_err_set(err, BD_E_INVALID, "redis: job %s shard %lld: invalid image id", s->job,
                        (long long)s->shard);
    if (!im->json || strnlen(im->json, BD_REDIS_JSON_MAX + 1) > BD_REDIS_JSON_MAX || !im->json[0])
      return bd_err_set(err, BD_E_LIMIT, "redis: image %s: JSON missing or over %u bytes",
                        im->image, BD_REDIS_JSON_MAX);
    char *kd = keyf("det", s->job, im->image);
    if (!kd) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
    a->owned[a->nowned++] = kd;
    a->argv[k++] = kd;
  }
  snprintf(a->shard, sizeof a->shard, "%lld", (long long)s->shard);
  snprintf(a->now, sizeof a->now, "%lld", (long long)time(NULL));
  a->argv[k++] = a->shard;
  a->argv[k++] = a->now;
  a->argv[k++] = s->gen ? s->gen : "";
  for (size_t i = 0; i < s->n; i++) {
    const bd_redis_image *im = &s->images[i];
    a->argv[k++] = im->image;
    a->argv[k++] = im->json;
    /* "" means ok to the script, so an empty error message becomes a visible one. */
    a->argv[k++] = im->error ? (im->error[0] ? im->error : "unknown error") : "";
  }
  for (size_t i = 0; i < k; i++) a->lens[i] = strlen(a->argv[i]);
  *argc = (int)k;
  return BD_OK;
}

bd_status bd_redis_complete_shards(bd_redis *r, bd_redis_shard *shards, size_t n, bd_err *err) {
  bd_status st = BD_OK;
  shard_args *args = calloc(n ? n : 1, sizeof *args);
  cmd *cmds = calloc(n ? n : 1, sizeof *cmds);
  if (!r) return bd_err_set(err, BD_E_INVALID, "redis: NULL handle");
  if (!args || !cmds) {
    st = bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    shards[i].applied = 0;
    shards[i].done_delta = shards[i].failed_delta = 0;
    shards[i].job_shards = -1;
    if ((st = build_shard(r, &shards[i], &args[i], &cmds[i].argc, err)) != BD_OK) goto out;
    cmds[i].argv = args[i].argv;
    cmds[i].lens = args[i].lens;
  }
  if ((st = run_cmds(r, cmds, n, err)) != BD_OK) goto out;
  for (size_t i = 0; i < n; i++) {
    redisReply *rep = cmds[i].reply;
    if (rep->type == REDIS_REPLY_ERROR) {
      /* maxmemory reached: the caller should pause and retry, not drop the shard */
      st = bd_err_set(err, reply_is(rep, "OOM") ? BD_E_UNAVAILABLE : BD_E_INVALID,
                      "redis: completing job %s shard %lld: %s", shards[i].job,
                      (long long)shards[i].shard, rep->str);
      goto out;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
      st = bd_err_set(err, BD_E_INTERNAL, "redis: unexpected reply from the completion script");
      goto out;
    }
    shards[i].applied = (int)rep->element[0]->integer;
    if (shards[i].applied == -2) {
      shards[i].job_shards = (int64_t)rep->element[2]->integer;
      continue;
    }
    shards[i].done_delta = (long)rep->element[1]->integer;
    shards[i].failed_delta = (long)rep->element[2]->integer;
  }
out:
  if (cmds) free_cmds(cmds, n);
  if (args)
    for (size_t i = 0; i < n; i++) shard_args_free(&args[i]);
  free(args);
  free(cmds);
  return st;
}

bd_status bd_redis_job_set(bd_redis *r, const char *job, const char *const *fields,
                           const char *const *values, size_t n, bd_err *err) {
  if (!bd_redis_valid_id(job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  if (n == 0 || n > 64)
    return bd_err_set(err, BD_E_LIMIT, "redis: job_set with %zu fields (1..64)", n);
  const char *argv[2 + 128];
  size_t lens[2 + 128];
  char *kj = keyf("job", job, NULL);
  if (!kj) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  argv[0] = "HSET";
  argv[1] = kj;
  for (size_t i = 0; i < n; i++) {
    argv[2 + 2 * i] = fields[i];
    argv[3 + 2 * i] = values[i];
  }
  for (size_t i = 0; i < 2 + 2 * n; i++) lens[i] = strlen(argv[i]);
  cmd c = {(int)(2 + 2 * n), argv, lens, NULL};
  bd_status st = run_cmds(r, &c, 1, err);
  if (st == BD_OK && c.reply->type == REDIS_REPLY_ERROR)
    st = bd_err_set(err, BD_E_INVALID, "redis: HSET %s: %s", kj, c.reply->str);
  free_cmds(&c, 1);
  free(kj);
  return st;
}

bd_status bd_redis_worker_beat(bd_redis *r, const char *worker_id, const char *const *fields,
                               const char *const *values, size_t n, int ttl_s, bd_err *err) {
  if (!bd_redis_valid_id(worker_id, 1))
    return bd_err_set(err, BD_E_INVALID, "redis: invalid worker id");
  if (n == 0 || n > 64 || ttl_s < 1)
    return bd_err_set(err, BD_E_LIMIT, "redis: worker_beat needs 1..64 fields and ttl >= 1");
  const char *hset[2 + 128];
  size_t hl[2 + 128], ml[1] = {5}, el[3], xl[1] = {4};
  char *kw = keyf("worker", worker_id, NULL);
  char ttl[16];
  if (!kw) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  snprintf(ttl, sizeof ttl, "%d", ttl_s);
  hset[0] = "HSET";
  hset[1] = kw;
  for (size_t i = 0; i < n; i++) {
    hset[2 + 2 * i] = fields[i];
    hset[3 + 2 * i] = values[i];
  }
  for (size_t i = 0; i < 2 + 2 * n; i++) hl[i] = strlen(hset[i]);
  const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *expire[] = {"EXPIRE", kw, ttl};
  el[0] = 6, el[1] = strlen(kw), el[2] = strlen(ttl);
  cmd c[4] = {{1, multi, ml, NULL},
              {(int)(2 + 2 * n), hset, hl, NULL},
              {3, expire, el, NULL},
              {1, exec, xl, NULL}};
  bd_status st = BD_OK;
  /* A reconnect between MULTI and EXEC drops the transaction: re-send all four. */
  for (int i = 0; i < 3; i++) {
    st = run_cmds(r, c, 4, err);
    if (st != BD_OK) break;
    if (c[3].reply->type == REDIS_REPLY_ARRAY) break;
    if (c[3].reply->type == REDIS_REPLY_ERROR && !reply_is(c[3].reply, "EXECABORT")) {
      st = bd_err_set(err, BD_E_INVALID, "redis: worker beat: %s", c[3].reply->str);
      break;
    }
    free_cmds(c, 4);
    for (int j = 0; j < 4; j++) c[j].reply = NULL;
    st = bd_err_set(err, BD_E_UNAVAILABLE, "redis: worker beat transaction aborted");
  }
  free_cmds(c, 4);
  free(kw);
  return st;
}

/* ---- reads ---- */

static long long int_field(const redisReply *e) {
  if (!e || e->type != REDIS_REPLY_STRING) return -1;
  char *end;
  long long v = strtoll(e->str, &end, 10);
  return *end ? -1 : v;
}

bd_status bd_redis_job_counts(bd_redis *r, const char *job, bd_redis_counts *out, bd_err *err) {
  memset(out, 0, sizeof *out);
  if (!bd_redis_valid_id(job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  char *kj = keyf("job", job, NULL), *ks = keyf("job", job, "shards");
  bd_status st = BD_OK;
  if (!kj || !ks) {
    st = bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
    goto out;
  }
  const char *a1[] = {"HMGET", kj, "total", "done", "failed"}, *a2[] = {"SCARD", ks};
  size_t l1[5], l2[2];
  for (int i = 0; i < 5; i++) l1[i] = strlen(a1[i]);
  l2[0] = 5, l2[1] = strlen(ks);
  cmd c[2] = {{5, a1, l1, NULL}, {2, a2, l2, NULL}};
  if ((st = run_cmds(r, c, 2, err)) != BD_OK) goto out;
  if (c[0].reply->type != REDIS_REPLY_ARRAY || c[0].reply->elements != 3 ||
      c[1].reply->type != REDIS_REPLY_INTEGER) {
    st = bd_err_set(err, BD_E_INVALID, "redis: unexpected reply reading job %s", job);
  } else {
    out->total = int_field(c[0].reply->element[0]);
    out->done = int_field(c[0].reply->element[1]);
    out->failed = int_field(c[0].reply->element[2]);
    out->shards = c[1].reply->integer;
  }
  free_cmds(c, 2);
out:
  free(kj);
  free(ks);
  return st;
}

bd_status bd_redis_job_get(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx,
                           bd_err *err) {
  if (!bd_redis_valid_id(job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  char *kj = keyf("job", job, NULL);
  if (!kj) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  const char *argv[] = {"HGETALL", kj};
  redisReply *rep = NULL;
  bd_status st = run1(r, 2, argv, &rep, "HGETALL", err);
  free(kj);
  if (st != BD_OK) return st;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2) {
    st = bd_err_set(err, BD_E_INVALID, "redis: unexpected HGETALL reply");
  } else {
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
      redisReply *k = rep->element[i], *v = rep->element[i + 1];
      if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
      if (fn(ctx, k->str, (size_t)k->len, v->str, (size_t)v->len)) break;
    }
  }
  freeReplyObject(rep);
  return st;
}

static int parse_cursor(const redisReply *rep, char *cursor, size_t cap) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY ||
      (size_t)rep->element[0]->len >= cap)
    return -1;
  memcpy(cursor, rep->element[0]->str, (size_t)rep->element[0]->len + 1);
  return 0;
}

bd_status bd_redis_scan_results(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx,
                                bd_err *err) {
  if (!bd_redis_valid_id(job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  char match[160], prefix[160], cursor[32] = "0";
  /* Ids hold no glob characters (checked above), so the pattern matches literally. */
  snprintf(prefix, sizeof prefix, "det:%s:", job);
  snprintf(match, sizeof match, "det:%s:*", job);
  size_t plen = strlen(prefix);
  bd_status st = BD_OK;
  for (unsigned it = 0; it < BD_REDIS_SCAN_ITER_MAX; it++) {
    const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", BD_REDIS_SCAN_COUNT};
    redisReply *rep = NULL, *vals = NULL;
    if ((st = run1(r, 6, argv, &rep, "SCAN", err)) != BD_OK) return st;
    if (parse_cursor(rep, cursor, sizeof cursor)) {
      freeReplyObject(rep);
      return bd_err_set(err, BD_E_INVALID, "redis: unexpected SCAN reply");
    }
    redisReply *keys = rep->element[1];
    int stop = 0;
    if (keys->elements > 0) {
      size_t nk = keys->elements;
      const char **mv = calloc(nk + 1, sizeof *mv);
      size_t *ml = calloc(nk + 1, sizeof *ml);
      if (!mv || !ml) {
        free(mv);
        free(ml);
        freeReplyObject(rep);
        return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
      }
      mv[0] = "MGET";
      ml[0] = 4;
      for (size_t i = 0; i < nk; i++) {
        mv[i + 1] = keys->element[i]->str;
        ml[i + 1] = (size_t)keys->element[i]->len;
      }
      cmd c = {(int)nk + 1, mv, ml, NULL};
      st = run_cmds(r, &c, 1, err);
      vals = c.reply;
      if (st == BD_OK && (vals->type != REDIS_REPLY_ARRAY || vals->elements != nk))
        st = bd_err_set(err, BD_E_INVALID, "redis: unexpected MGET reply");
      for (size_t i = 0; st == BD_OK && i < nk && !stop; i++) {
        redisReply *k = keys->element[i], *v = vals->element[i];
        if (v->type != REDIS_REPLY_STRING || (size_t)k->len <= plen)
          continue; /* deleted meanwhile */
        stop = fn(ctx, k->str + plen, (size_t)k->len - plen, v->str, (size_t)v->len);
      }
      if (vals) freeReplyObject(vals);
      free(mv);
      free(ml);
    }
    freeReplyObject(rep);
    if (st != BD_OK) return st;
    if (stop || strcmp(cursor, "0") == 0) return BD_OK;
  }
  return bd_err_set(err, BD_E_LIMIT, "redis: SCAN of job %s did not finish", job);
}

bd_status bd_redis_scan_errors(bd_redis *r, const char *job, bd_redis_kv_fn fn, void *ctx,
                               bd_err *err) {
  if (!bd_redis_valid_id(job, 0)) return bd_err_set(err, BD_E_INVALID, "redis: invalid job id");
  char *ke = keyf("job", job, "errors");
  char cursor[32] = "0";
  bd_status st = BD_OK;
  if (!ke) return bd_err_set(err, BD_E_NOMEM, "redis: out of memory");
  for (unsigned it = 0; it < BD_REDIS_SCAN_ITER_MAX; it++) {
    const char *argv[] = {"HSCAN", ke, cursor, "COUNT", BD_REDIS_SCAN_COUNT};
    redisReply *rep = NULL;
    if ((st = run1(r, 5, argv, &rep, "HSCAN", err)) != BD_OK) break;
    if (parse_cursor(rep, cursor, sizeof cursor) || rep->element[1]->elements % 2) {
      freeReplyObject(rep);
      st = bd_err_set(err, BD_E_INVALID, "redis: unexpected HSCAN reply");
      break;
    }
    redisReply *kv = rep->element[1];
    int stop = 0;
    for (size_t i = 0; i + 1 < kv->elements && !stop; i += 2)
      stop = fn(ctx, kv->element[i]->str, (size_t)kv->element[i]->len, kv->element[i + 1]->str,
                (size_t)kv->element[i + 1]->len);
    freeReplyObject(rep);
    if (stop || strcmp(cursor, "0") == 0) break;
  }
  free(ke);
  return st;
}
