/* bd_submit: see bd_submit.h. */
#define _GNU_SOURCE
#include "bd_submit.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bd_kafka.h"
#include "bd_manifest.h"
#include "bd_sredis.h"
#include "bd_ssrc.h"

#define URL_BATCH 256 /* id/url pairs per HSET */
#define INC_BATCH 512 /* keys per MGET */

const char *bd_inc_reason_name(bd_inc_reason r) {
  static const char *n[] = {"unchanged", "new", "previous error", "model changed",
                            "source changed"};
  return r < BD_INC__COUNT ? n[r] : "?";
}

/* ETags compare without quotes and weak prefix: listings strip the quotes that HTTP
 * headers keep, and a worker may store either form. */
static int etag_eq(const char *a, const char *b) {
  if (!strncmp(a, "W/", 2)) a += 2;
  if (!strncmp(b, "W/", 2)) b += 2;
  size_t la = strlen(a), lb = strlen(b);
  if (la >= 2 && a[0] == '"' && a[la - 1] == '"') a++, la -= 2;
  if (lb >= 2 && b[0] == '"' && b[lb - 1] == '"') b++, lb -= 2;
  return la == lb && memcmp(a, b, la) == 0;
}

/* Last-Modified as seconds since 1970 from the ISO 8601 form of S3 listings or the
 * RFC 7231 form of HTTP headers; -1 when neither. */
static long long lm_epoch(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!e) {
    memset(&tm, 0, sizeof tm);
    e = strptime(s, "%a, %d %b %Y %H:%M:%S", &tm);
  }
  return e ? (long long)timegm(&tm) : -1;
}

static int lm_eq(const char *a, const char *b) {
  long long x = lm_epoch(a), y = lm_epoch(b);
  return x >= 0 && y >= 0 ? x == y : strcmp(a, b) == 0;
}

static const char *jstr(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

bd_inc_reason bd_inc_decide(const char *prev_json, size_t len, const char *model,
                            const char *prev_job_model, const char *model_hash, const char *etag,
                            const char *last_modified) {
  if (!prev_json) return BD_INC_NEW;
  json_t *o = json_loadb(prev_json, len, 0, NULL);
  bd_inc_reason r = BD_INC_UNCHANGED;
  if (!json_is_object(o)) {
    r = BD_INC_PREV_ERROR; /* unreadable: redo it */
    goto out;
  }
  if (jstr(o, "error") || !json_object_get(o, "detections")) {
    r = BD_INC_PREV_ERROR;
    goto out;
  }
  const char *pm = jstr(o, "model");
  if (!pm) pm = prev_job_model;
  if (pm && model && strcmp(pm, model) != 0) {
    r = BD_INC_MODEL_CHANGED;
    goto out;
  }
  const char *ph = jstr(o, "model_hash");
  if (ph && model_hash && strcmp(ph, model_hash) != 0) {
    r = BD_INC_MODEL_CHANGED;
    goto out;
  }
  const char *pe = jstr(o, "etag"), *pl = jstr(o, "last_modified");
  if ((pe && etag && !etag_eq(pe, etag)) || (pl && last_modified && !lm_eq(pl, last_modified)))
    r = BD_INC_SOURCE_CHANGED;
out:
  json_decref(o);
  return r;
}

/* Marks skip[i] for the images whose previous result is still valid. */
static bd_status incremental(bd_sredis *rd, const bd_submit_opts *o, bd_ssrc *src,
                             unsigned char *skip, bd_submit_summary *sum, bd_err *err) {
  char key[64 + BD_ID_MAX * 2];
  char prev_model[BD_ID_MAX + 1] = "";
  redisReply *rep = NULL;
  snprintf(key, sizeof key, "job:%s", o->since_job);
  bd_status st = bd_sredis_cmd(rd, &rep, err, "HGET %s model", key);
  if (st != BD_OK) return st;
  if (rep->type == REDIS_REPLY_STRING && rep->len <= BD_ID_MAX)
    memcpy(prev_model, rep->str, (size_t)rep->len + 1);
  freeReplyObject(rep);
  if (!prev_model[0])
    return bd_err_set(err, BD_E_NOT_FOUND, "--since-job %s: no such job", o->since_job);
  const char **argv = malloc((INC_BATCH + 1) * sizeof *argv);
  char **keys = calloc(INC_BATCH, sizeof *keys);
  if (!argv || !keys) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  argv[0] = "MGET";
  for (size_t b = 0; b < src->n && st == BD_OK; b += INC_BATCH) {
    size_t n = src->n - b < INC_BATCH ? src->n - b : INC_BATCH;
    for (size_t i = 0; i < n; i++) {
      free(keys[i]);
      if (asprintf(&keys[i], "det:%s:%s", o->since_job, src->items[b + i].id) < 0) {
        keys[i] = NULL;
        st = bd_err_set(err, BD_E_NOMEM, "out of memory");
        goto out;
      }
      argv[i + 1] = keys[i];
    }
    st = bd_sredis_cmdv(rd, (int)n + 1, argv, NULL, &rep, err);
    if (st != BD_OK) break;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) {
      freeReplyObject(rep);
      st = bd_err_set(err, BD_E_INVALID, "redis: unexpected MGET reply");
      break;
    }
    for (size_t i = 0; i < n; i++) {
      redisReply *e = rep->element[i];
      const bd_ssrc_item *it = &src->items[b + i];
      bd_inc_reason r = bd_inc_decide(e->type == REDIS_REPLY_STRING ? e->str : NULL,
                                      e->type == REDIS_REPLY_STRING ? (size_t)e->len : 0, o->model,
                                      prev_model, o->model_hash, it->etag, it->last_modified);
      sum->inc[r]++;
      skip[b + i] = r == BD_INC_UNCHANGED;
    }
    freeReplyObject(rep);
  }
out:
  if (keys)
    for (size_t i = 0; i < INC_BATCH; i++) free(keys[i]);
  free(keys);
  free(argv);
  return st;
}

/* Removes every key of the job (for --force). */
static bd_status reset_job(bd_sredis *rd, const char *job, long long *removed, bd_err *err) {
  char pat[BD_ID_MAX + 16];
  long long n = 0, m = 0;
  redisReply *rep;
  bd_status st = bd_sredis_cmd(rd, &rep, err,
                               "UNLINK job:%s job:%s:shards job:%s:errors job:%s:urls job:%s:retry",
                               job, job, job, job, job);
  if (st != BD_OK) return st;
  n = bd_sredis_reply_ll(rep, 0);
  freeReplyObject(rep);
  snprintf(pat, sizeof pat, "det:%s:*", job);
  st = bd_sredis_unlink_match(rd, pat, &m, err);
  *removed = n + m;
  return st;
}

static void listed(void *ctx, size_t n) {
  const bd_submit_opts *o = ctx;
  o->progress(o->progress_ctx, "listed", n, 0);
}

/* HSET job:{job}:urls id url ..., pipelined in batches. */
static bd_status store_urls(bd_sredis *rd, const char *job, const char *const *ids,
                            const char *const *urls, size_t n, const bd_submit_opts *o,
                            bd_err *err) {
  char key[BD_ID_MAX + 16];
  snprintf(key, sizeof key, "job:%s:urls", job);
  const char *argv[2 + 2 * URL_BATCH];
  argv[0] = "HSET";
  argv[1] = key;
  bd_status st = BD_OK;
  for (size_t b = 0; b < n && st == BD_OK; b += URL_BATCH) {
    size_t k = n - b < URL_BATCH ? n - b : URL_BATCH;
    for (size_t i = 0; i < k; i++) {
      argv[2 + 2 * i] = ids[b + i];
      argv[3 + 2 * i] = urls[b + i];
    }
    st = bd_sredis_append(rd, (int)(2 + 2 * k), argv, NULL, err);
    if (st == BD_OK && bd_sredis_pending(rd) >= 32) {
      st = bd_sredis_flush(rd, err);
      if (o && o->progress) o->progress(o->progress_ctx, "stored", b + k, n);
    }
  }
  if (st == BD_OK) st = bd_sredis_flush(rd, err);
  if (st == BD_OK && o && o->progress) o->progress(o->progress_ctx, "stored", n, n);
  return st;
}

typedef struct {
  const char *job, *model;
  int has_score_thr, has_iou_thr, has_max_det;
  double score_thr, iou_thr;
  int max_det;
  const char *gen; /* the submission id ("" for a job submitted before gens) */
} job_params;

/* A submission id for the job record and its manifests ("gen"): the time and 64 random
 * bits, so that a shard of an earlier submission of the same job id (replaced by --force
 * while in flight) never matches it. */
static void new_gen(char out[40]) {
  uint64_t r = 0;
  FILE *f = fopen("/dev/urandom", "rb");
  if (!f || fread(&r, sizeof r, 1, f) != 1) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&r;
  }
  if (f) fclose(f);
  snprintf(out, 40, "%lld-%016llx", (long long)time(NULL), (unsigned long long)r);
}

/* Submit produces a burst of manifests: a full local queue is worth waiting a minute for. */
static bd_status new_producer(const char *brokers, bd_kafka_producer **p, bd_err *err) {
  bd_kafka_producer_opts po = {.brokers = brokers, .queue_full_wait_ms = 60000};
  return bd_kafka_producer_new(&po, p, err);
}

/* A manifest stays under this many bytes, whatever --shard-size says: Kafka's default
 * message.max.bytes is about 1 MB (a bigger message is refused by the broker or, as seen
 * on the mock cluster, left unconsumed and blocking its partition). Long URLs therefore
 * make shards of fewer images. */
#define SUBMIT_MANIFEST_BYTES (900u * 1024)

/* The images of the shard that starts at b: at most shard_size, and as many as keep the
 * manifest under SUBMIT_MANIFEST_BYTES (each id and URL counted at twice its length, for
 * JSON escapes, plus 32 bytes; the header 1 KB). At least one. */
static size_t shard_len(const char *const *ids, const char *const *urls, size_t b, size_t n,
                        int shard_size) {
  size_t k = 0, bytes = 1024;
  while (b + k < n && k < (size_t)shard_size) {
    const size_t one = 2 * (strlen(ids[b + k]) + strlen(urls[b + k])) + 32;
    if (k > 0 && bytes + one > SUBMIT_MANIFEST_BYTES) break;
    bytes += one;
    k++;
  }
  return k;
}

static size_t count_shards(const char *const *ids, const char *const *urls, size_t n,
                           int shard_size) {
  size_t c = 0;
  for (size_t b = 0; b < n; b += shard_len(ids, urls, b, n, shard_size)) c++;
  return c;
}

/* One manifest per shard (shard_len images), numbered from first_shard. */
static bd_status produce_shards(bd_kafka_producer *p, const char *topic, const job_params *jp,
                                const char *const *ids, const char *const *urls, size_t n,
                                int shard_size, long long first_shard, size_t *n_shards,
                                const bd_submit_opts *o, size_t total_shards, bd_err *err) {
  bd_status st = BD_OK;
  *n_shards = 0;
  for (size_t b = 0, k = 0; b < n && st == BD_OK; b += k) {
    k = shard_len(ids, urls, b, n, shard_size);
    bd_manifest *m = bd_manifest_new();
    char *js = NULL;
    size_t len = 0;
    if (!m) return bd_err_set(err, BD_E_NOMEM, "out of memory");
    snprintf(m->job, sizeof m->job, "%s", jp->job);
    snprintf(m->model, sizeof m->model, "%s", jp->model);
    m->shard = first_shard + (long long)*n_shards;
    snprintf(m->gen, sizeof m->gen, "%s", jp->gen ? jp->gen : "");
    m->has_score_thr = jp->has_score_thr, m->score_thr = jp->score_thr;
    m->has_iou_thr = jp->has_iou_thr, m->iou_thr = jp->iou_thr;
    m->has_max_det = jp->has_max_det, m->max_det = jp->max_det;
    for (size_t i = 0; i < k && st == BD_OK; i++)
      st = bd_manifest_add_image(m, ids[b + i], urls[b + i], err);
    if (st == BD_OK) st = bd_manifest_encode(m, &js, &len, err); /* validates */
    if (st != BD_OK) {
      bd_err_prefix(err, "shard %lld", (long long)m->shard);
    } else {
      char key[BD_ID_MAX + 32];
      snprintf(key, sizeof key, "%s:%lld", jp->job, (long long)m->shard);
      st = bd_kafka_produce(p, topic, key, js, len, NULL, NULL, err);
    }
    free(js);
    bd_manifest_destroy(m);
    if (st == BD_OK) (*n_shards)++;
    if (st == BD_OK && o && o->progress && (*n_shards % 16 == 0 || b + k == n))
      o->progress(o->progress_ctx, "queued", *n_shards, total_shards);
  }
  return st;
}

static void fmt_double(char *buf, size_t cap, double v) {
  /* Shortest form that reads back to the same double. */
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

bd_status bd_submit_run(const bd_submit_opts *o, bd_submit_summary *sum, bd_err *err) {
  memset(sum, 0, sizeof *sum);
  bd_status st = BD_OK;
  bd_sredis *rd = NULL;
  bd_ssrc *src = NULL;
  bd_kafka_producer *p = NULL;
  unsigned char *skip = NULL;
  const char **ids = NULL, **urls = NULL;
  redisReply *rep = NULL;
  char key[BD_ID_MAX + 16];
  int n_src = !!o->list + !!o->dir + !!o->s3_prefix;
  if (n_src != 1)
    return bd_err_set(err, BD_E_INVALID, "give exactly one of --list, --dir, --s3-prefix");
  if (!bd_proto_id_valid(o->job) || !bd_proto_id_valid(o->model))
    return bd_err_set(err, BD_E_INVALID, "--job and --model must be 1..128 of [A-Za-z0-9._-]");
  if (o->since_job && !bd_proto_id_valid(o->since_job))
    return bd_err_set(err, BD_E_INVALID, "--since-job must be 1..128 of [A-Za-z0-9._-]");
  if (o->since_job && !strcmp(o->since_job, o->job))
    /* --force would delete the very results the skipped images rely on */
    return bd_err_set(err, BD_E_INVALID, "--since-job must name an earlier job, not --job itself");
  if (o->shard_size < 1 || o->shard_size > BD_SUBMIT_MAX_SHARD_SIZE)
    return bd_err_set(err, BD_E_INVALID, "--shard-size must be in 1..%d", BD_SUBMIT_MAX_SHARD_SIZE);

  rd = bd_sredis_new(o->redis_url, err);
  if (!rd) return err ? err->code : BD_E_UNAVAILABLE;
  snprintf(key, sizeof key, "job:%s", o->job);
  st = bd_sredis_cmd(rd, &rep, err, "EXISTS %s", key);
  if (st != BD_OK) goto out;
  sum->job_existed = bd_sredis_reply_ll(rep, 0) > 0;
  freeReplyObject(rep);
  rep = NULL;
  if (sum->job_existed && !o->force) {
    st = bd_err_set(err, BD_E_INVALID,
                    "job %s already exists; use --force to delete its results and submit it afresh",
                    o->job);
    goto out;
  }

  src = bd_ssrc_new();
  if (!src) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  const char *exts = o->exts ? o->exts : "jpg,jpeg,png";
  if (o->progress) {
    src->on_added = listed;
    src->on_added_ctx = (void *)o;
  }
  if (o->list)
    st = bd_ssrc_from_list(src, o->list, err);
  else if (o->dir)
    st = bd_ssrc_from_dir(src, o->dir, exts, err);
  else
    st = bd_ssrc_from_s3(src, o->s3_prefix, exts, err);
  if (st == BD_OK) st = bd_ssrc_finish(src, err);
  if (st != BD_OK) goto out;
  sum->listed = src->n;
  sum->skipped_ext = src->skipped_ext;
  sum->skipped_badkey = src->skipped_badkey;
  sum->skipped_hidden = src->skipped_hidden;
  sum->skipped_unreadable = src->skipped_unreadable;

  skip = calloc(src->n + 1, 1);
  ids = malloc((src->n + 1) * sizeof *ids);
  urls = malloc((src->n + 1) * sizeof *urls);
  if (!skip || !ids || !urls) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  if (o->since_job && (st = incremental(rd, o, src, skip, sum, err)) != BD_OK) goto out;
  size_t n = 0;
  for (size_t i = 0; i < src->n; i++)
    if (!skip[i]) ids[n] = src->items[i].id, urls[n] = src->items[i].url, n++;
  sum->images = n;
  size_t n_shards = count_shards(ids, urls, n, o->shard_size);

  if ((st = new_producer(o->brokers, &p, err)) != BD_OK) goto out;
  /* Topic check before touching Redis: a typo in --topic must not leave a queued job. */
  if ((st = bd_kafka_partitions(p, o->topic, &sum->topic_partitions, err)) != BD_OK) goto out;

  if (sum->job_existed && (st = reset_job(rd, o->job, &sum->removed_keys, err)) != BD_OK) goto out;

  /* The job record first: a worker that finishes a shard before we are done producing
   * must find total and shards, and the coordinator must know the job exists. */
  char now[32], total[32], shards[32], thr[3][32], gen[40];
  snprintf(now, sizeof now, "%.3f", (double)time(NULL));
  new_gen(gen);
  snprintf(total, sizeof total, "%zu", n);
  snprintf(shards, sizeof shards, "%zu", n_shards);
  const char *argv[40] = {"HSET",    key,      "state",   n ? "queued" : "complete",
                          "model",   o->model, "total",   total,
                          "shards",  shards,   "done",    "0",
                          "failed",  "0",      "created", now,
                          "updated", now,      "rate",    "0",
                          "gen",     gen};
  int argc = 22;
  if (!n) argv[argc++] = "finished", argv[argc++] = now;
  if (o->has_score_thr)
    fmt_double(thr[0], sizeof thr[0], o->score_thr), argv[argc++] = "score_thr",
                                                     argv[argc++] = thr[0];
  if (o->has_iou_thr)
    fmt_double(thr[1], sizeof thr[1], o->iou_thr), argv[argc++] = "iou_thr", argv[argc++] = thr[1];
  if (o->has_max_det)
    snprintf(thr[2], sizeof thr[2], "%d", o->max_det), argv[argc++] = "max_det",
                                                       argv[argc++] = thr[2];
  argv[argc++] = "source";
  argv[argc++] = o->list ? o->list : o->dir ? o->dir : o->s3_prefix;
  if (o->since_job) argv[argc++] = "since_job", argv[argc++] = o->since_job;
  if ((st = bd_sredis_cmdv(rd, argc, argv, NULL, NULL, err)) != BD_OK) goto out;
  if ((st = store_urls(rd, o->job, ids, urls, n, o, err)) != BD_OK) goto out;

  job_params jp = {o->job,         o->model,       o->has_score_thr,
                   o->has_iou_thr, o->has_max_det, o->score_thr,
                   o->iou_thr,     o->max_det,     gen};
  st = produce_shards(p, o->topic, &jp, ids, urls, n, o->shard_size, 0, &sum->shards, o, n_shards,
                      err);
  if (st == BD_OK) st = bd_kafka_flush(p, 120000, &sum->partitions_used, err);
  if (st != BD_OK) {
    /* Leave a visible trace: the job cannot complete with shards missing. */
    bd_sredis_cmd(rd, NULL, NULL, "HSET %s state failed error %s", key, err ? err->msg : "produce");
  }
out:
  if (rep) freeReplyObject(rep);
  free(skip);
  free(ids);
  free(urls);
  bd_kafka_producer_destroy(p);
  bd_ssrc_destroy(src);
  bd_sredis_destroy(rd);
  return st;
}

/* ---- resubmit ---- */

typedef struct {
  char **ids;
  size_t n, cap;
  bd_status st;
  bd_err *err;
} idlist;

static int collect_failed(void *ctx, const char *k, size_t klen, const char *v, size_t vlen) {
  idlist *l = ctx;
  if (klen > BD_ID_MAX) return 0;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 256;
    char **ni = nc <= BD_SSRC_MAX_ITEMS ? realloc(l->ids, nc * sizeof *ni) : NULL;
    if (!ni) {
      l->st = bd_err_set(l->err, BD_E_NOMEM, "out of memory (or too many failed images)");
      return 1;
    }
    l->ids = ni;
    l->cap = nc;
  }
  l->ids[l->n] = strndup(k, klen);
  if (!l->ids[l->n]) {
    l->st = bd_err_set(l->err, BD_E_NOMEM, "out of memory");
    return 1;
  }
  l->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* job:{job}:retry maps each image a resubmit requeued to the shard that carries it, or to
 * "-T" (claimed at unix time T) while that resubmit is still producing. An image whose
 * retry shard is not yet in job:{job}:shards (the completed ones), or whose claim is
 * younger than BD_RESUBMIT_CLAIM_STALE_S, is pending: a second resubmit leaves it alone
 * instead of queueing it twice, unless include_pending. An older claim is a resubmit that
 * died between its claim and its record (killed, Redis gone): the next one takes it.
 * The claim is one script per batch of ids, so resubmits at once take disjoint images.
 * KEYS: 1 retry hash, 2 completed shards set. ARGV: 1 include_pending, 2 now (unix s),
 * 3 stale after (s), then ids. Returns 1 (claimed, now "-<now>") or 0 per id, in order. */
static const char k_claim_script[] =
    "local now, stale, out = tonumber(ARGV[2]), tonumber(ARGV[3]), {}\n"
    "for i = 4, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local s = redis.call('HGET', KEYS[1], id)\n"
    "  local free = ARGV[1] == '1' or not s\n"
    "  if not free and string.sub(s, 1, 1) == '-' then\n"
    "    free = now - (tonumber(string.sub(s, 2)) or 0) >= stale\n"
    "  elseif not free then\n"
    "    free = redis.call('SISMEMBER', KEYS[2], s) == 1\n"
    "  end\n"
    "  if free then\n"
    "    redis.call('HSET', KEYS[1], id, '-' .. ARGV[2])\n"
    "    out[i - 3] = 1\n"
    "  else\n"
    "    out[i - 3] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Claims ids[0..n) for this resubmit (see k_claim_script); keep[i] = 1 for those claimed
 * (also those claimed before a batch failed: the caller releases them). */
static bd_status claim_retries(bd_sredis *rd, const char *job, const char **ids, size_t n,
                               int include_pending, unsigned char *keep, bd_err *err) {
  char rk[BD_ID_MAX + 16], sk[BD_ID_MAX + 16], now[24], stale[24];
  snprintf(rk, sizeof rk, "job:%s:retry", job);
  snprintf(sk, sizeof sk, "job:%s:shards", job);
  snprintf(now, sizeof now, "%lld", (long long)time(NULL));
  snprintf(stale, sizeof stale, "%d", BD_RESUBMIT_CLAIM_STALE_S);
  const char **argv = malloc((8 + INC_BATCH) * sizeof *argv);
  if (!argv) return bd_err_set(err, BD_E_NOMEM, "out of memory");
  bd_status st = BD_OK;
  for (size_t b = 0; b < n && st == BD_OK; b += INC_BATCH) {
    size_t k = n - b < INC_BATCH ? n - b : INC_BATCH;
    argv[0] = "EVAL", argv[1] = k_claim_script, argv[2] = "2", argv[3] = rk, argv[4] = sk;
    argv[5] = include_pending ? "1" : "0", argv[6] = now, argv[7] = stale;
    for (size_t i = 0; i < k; i++) argv[8 + i] = ids[b + i];
    redisReply *rep = NULL;
    st = bd_sredis_cmdv(rd, (int)(8 + k), argv, NULL, &rep, err);
    if (st != BD_OK) break;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != k)
      st = bd_err_set(err, BD_E_INTERNAL, "job %s: unexpected reply to the retry claim", job);
    else
      for (size_t i = 0; i < k; i++) keep[b + i] = bd_sredis_reply_ll(rep->element[i], 0) == 1;
    freeReplyObject(rep);
  }
  free(argv);
  return st;
}

/* Records the shard each requeued image went to, one HSET per shard; with release, drops
 * the claims instead (a resubmit that failed after claiming: the next one takes them). */
static void record_retries(bd_sredis *rd, const char *job, const char *const *ids,
                           const char *const *urls, size_t n, int shard_size, long long first_shard,
                           int release) {
  char rk[BD_ID_MAX + 16];
  snprintf(rk, sizeof rk, "job:%s:retry", job);
  const char **argv = malloc((2 + 2 * (size_t)shard_size) * sizeof *argv);
  if (!argv) return; /* the claims stay: pending until they are stale */
  long long sh = first_shard;
  for (size_t b = 0, k = 0; b < n; b += k, sh++) {
    k = shard_len(ids, urls, b, n, shard_size);
    char num[32];
    snprintf(num, sizeof num, "%lld", sh);
    int argc = 2;
    argv[0] = release ? "HDEL" : "HSET", argv[1] = rk;
    for (size_t i = 0; i < k; i++) {
      argv[argc++] = ids[b + i];
      if (!release) argv[argc++] = num;
    }
    bd_sredis_cmdv(rd, argc, argv, NULL, NULL, NULL);
  }
  free(argv);
}

bd_status bd_resubmit_failed(const char *job, int shard_size, const char *brokers,
                             const char *redis_url, const char *topic, int include_pending,
                             bd_resubmit_summary *sum, bd_err *err) {
  memset(sum, 0, sizeof *sum);
  bd_status st = BD_OK;
  bd_sredis *rd = NULL;
  bd_kafka_producer *p = NULL;
  redisReply *rep = NULL;
  idlist l = {NULL, 0, 0, BD_OK, err};
  const char **ids = NULL, **urls = NULL;
  size_t claimed = 0; /* ids[0..claimed) are claimed ("-<time>") in job:{job}:retry */
  int recorded = 0;
  char key[BD_ID_MAX + 16];
  if (!bd_proto_id_valid(job)) return bd_err_set(err, BD_E_INVALID, "--job: bad id");
  if (shard_size < 1 || shard_size > BD_SUBMIT_MAX_SHARD_SIZE)
    return bd_err_set(err, BD_E_INVALID, "--shard-size must be in 1..%d", BD_SUBMIT_MAX_SHARD_SIZE);
  rd = bd_sredis_new(redis_url, err);
  if (!rd) return err ? err->code : BD_E_UNAVAILABLE;
  snprintf(key, sizeof key, "job:%s", job);
  st = bd_sredis_cmd(rd, &rep, err, "HMGET %s model shards score_thr iou_thr max_det gen", key);
  if (st != BD_OK) goto out;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 6 ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len > BD_ID_MAX) {
    st = bd_err_set(err, BD_E_NOT_FOUND, "job %s: no such job", job);
    goto out;
  }
  char model[BD_ID_MAX + 1];
  memcpy(model, rep->element[0]->str, (size_t)rep->element[0]->len + 1);
  long long shards = bd_sredis_reply_ll(rep->element[1], -1);
  double sthr = bd_sredis_reply_double(rep->element[2], -1),
         ithr = bd_sredis_reply_double(rep->element[3], -1);
  long long mdet = bd_sredis_reply_ll(rep->element[4], -1);
  /* the job's submission id, carried by the new shards so that they count for it */
  char gen[BD_ID_MAX + 1] = "";
  if (rep->element[5]->type == REDIS_REPLY_STRING && rep->element[5]->len <= BD_ID_MAX)
    memcpy(gen, rep->element[5]->str, (size_t)rep->element[5]->len + 1);
  freeReplyObject(rep);
  rep = NULL;
  if (shards < 0 || shards > 2147483647LL - 1) {
    st = bd_err_set(err, BD_E_INVALID,
                    "job %s: its record has no valid shards field (was it made by batchdet "
                    "submit?)",
                    job);
    goto out;
  }
  snprintf(key, sizeof key, "job:%s:errors", job);
  st = bd_sredis_hscan(rd, key, 1000, collect_failed, &l, err);
  if (st == BD_OK) st = l.st;
  if (st != BD_OK) goto out;
  if (l.n) qsort(l.ids, l.n, sizeof *l.ids, cmp_str); /* HSCAN may repeat an entry */
  size_t u = 0;
  for (size_t i = 0; i < l.n; i++) {
    if (u && strcmp(l.ids[u - 1], l.ids[i]) == 0) {
      free(l.ids[i]);
      continue;
    }
    l.ids[u++] = l.ids[i];
  }
  l.n = u;
  ids = malloc((l.n + 1) * sizeof *ids);
  urls = calloc(l.n + 1, sizeof *urls);
  if (!ids || !urls) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  snprintf(key, sizeof key, "job:%s:urls", job);
  size_t n = 0;
  for (size_t b = 0; b < l.n; b += INC_BATCH) {
    size_t k = l.n - b < INC_BATCH ? l.n - b : INC_BATCH;
    const char *argv[2 + INC_BATCH] = {"HMGET", key};
    for (size_t i = 0; i < k; i++) argv[2 + i] = l.ids[b + i];
    st = bd_sredis_cmdv(rd, (int)(2 + k), argv, NULL, &rep, err);
    if (st != BD_OK) goto out;
    for (size_t i = 0; i < k && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
      redisReply *e = rep->element[i];
      if (e->type != REDIS_REPLY_STRING) {
        sum->missing_url++;
        continue;
      }
      urls[n] = strdup(e->str);
      if (!urls[n]) {
        st = bd_err_set(err, BD_E_NOMEM, "out of memory");
        goto out;
      }
      ids[n++] = l.ids[b + i];
    }
    freeReplyObject(rep);
    rep = NULL;
  }
  /* only images whose URL is known are claimed: the others could never be requeued */
  if (n) {
    unsigned char *keep = calloc(n, 1);
    if (!keep) {
      st = bd_err_set(err, BD_E_NOMEM, "out of memory");
      goto out;
    }
    st = claim_retries(rd, job, ids, n, include_pending, keep, err);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      if (keep[i]) {
        ids[m] = ids[i];
        const char *uu = urls[i];
        urls[i] = urls[m];
        urls[m++] = uu;
      } else {
        sum->pending++;
      }
    }
    free(keep);
    claimed = n = m;
    if (st != BD_OK) { /* a batch failed: released at out, what the earlier ones claimed */
      sum->pending = 0;
      goto out;
    }
  }
  sum->images = n;
  sum->first_shard = shards;
  if (!n) goto out;
  if ((st = new_producer(brokers, &p, err)) != BD_OK) goto out;
  int parts;
  if ((st = bd_kafka_partitions(p, topic, &parts, err)) != BD_OK) goto out;
  size_t new_shards =
      count_shards((const char *const *)ids, (const char *const *)urls, n, shard_size);
  /* shards grows before producing, so that the coordinator does not see the job as
   * complete (completed shards == shards) while the new ones are in flight. The new
   * shards are numbered from what HINCRBY returns, not from the value read above: two
   * resubmits at once then take disjoint numbers instead of the same ones. */
  snprintf(key, sizeof key, "job:%s", job);
  char now[32];
  snprintf(now, sizeof now, "%.3f", (double)time(NULL));
  st = bd_sredis_cmd(rd, &rep, err, "HINCRBY %s shards %lld", key, (long long)new_shards);
  if (st == BD_OK) {
    long long grown = bd_sredis_reply_ll(rep, -1);
    freeReplyObject(rep);
    rep = NULL;
    if (grown < (long long)new_shards || grown > 2147483647LL) {
      st = bd_err_set(err, BD_E_INTERNAL, "job %s: shards field is %lld after HINCRBY", job, grown);
      goto out;
    }
    shards = grown - (long long)new_shards;
    sum->first_shard = shards;
  }
  if (st == BD_OK) st = bd_sredis_cmd(rd, NULL, err, "HSET %s state queued updated %s", key, now);
  if (st == BD_OK) st = bd_sredis_cmd(rd, NULL, err, "HDEL %s finished stalled", key);
  if (st != BD_OK) goto out;
  int has_md = mdet > 0 && mdet <= 10000;
  job_params jp = {job, model, sthr >= 0, ithr >= 0, has_md, sthr, ithr, has_md ? (int)mdet : 0,
                   gen};
  st = produce_shards(p, topic, &jp, ids, urls, n, shard_size, shards, &sum->shards, NULL, 0, err);
  if (st == BD_OK) st = bd_kafka_flush(p, 120000, NULL, err);
  if (st != BD_OK) /* as submit does: the job cannot complete with shards missing */
    bd_sredis_cmd(rd, NULL, NULL, "HSET %s state failed error %s", key, err ? err->msg : "produce");
  if (st == BD_OK) {
    record_retries(rd, job, ids, urls, n, shard_size, shards, 0);
    recorded = 1;
  }
out:
  if (claimed && !recorded) /* failed after claiming: let the next resubmit take them */
    record_retries(rd, job, ids, urls, claimed, shard_size, 0, 1);
  if (rep) freeReplyObject(rep);
  for (size_t i = 0; i < l.n; i++) free(l.ids[i]);
  free(l.ids);
  if (urls)
    for (size_t i = 0; i < l.n; i++) free((char *)urls[i]);
  free(urls);
  free(ids);
  bd_kafka_producer_destroy(p);
  bd_sredis_destroy(rd);
  return st;
}
