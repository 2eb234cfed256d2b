/* bd_redis against real redis-server processes (redis_server.sh) on loopback. The
 * state is checked with plain hiredis commands written here, and the expected
 * counters are computed by the test from the images it wrote. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <pthread.h>

#include "bd_redis.h"
#include "test_fetch_spawn.h"

static pid_t g_pid = -1;
static int g_port;
static char *g_dir;
static char g_url[128];

static pid_t start_redis(const char *dir, int port, const char *pass) {
  char script[1024], ports[16];
  snprintf(script, sizeof script, "%s", bdt_src("tests/storage/redis_server.sh"));
  snprintf(ports, sizeof ports, "%d", port);
  char *argv[] = {"/bin/sh", script, (char *)dir, ports, (char *)(pass ? pass : ""), NULL};
  pid_t pid = bdt_spawn(argv, 0, NULL);
  if (pid <= 0) return -1;
  char reply[64];
  for (int i = 0; i < 200; i++) { /* up to 10 s, AOF loading included */
    if (bdt_tcp_roundtrip(port, "PING\r\n", reply, sizeof reply, 500) == 0 &&
        (!strncmp(reply, "+PONG", 5) || !strncmp(reply, "-NOAUTH", 7)))
      return pid;
    usleep(50000);
  }
  bdt_stop(pid, SIGKILL);
  return -1;
}

static int setup(void **state) {
  g_dir = bdt_tmpdir("redis");
  g_port = bdt_free_port();
  g_pid = start_redis(g_dir, g_port, NULL);
  snprintf(g_url, sizeof g_url, "redis://127.0.0.1:%d/0", g_port);
  return g_pid > 0 ? 0 : -1;
}

static int teardown(void **state) {
  bdt_stop(g_pid, SIGTERM);
  bdt_rmrf(g_dir);
  free(g_dir);
  return 0;
}

/* ---- independent reads through plain hiredis ---- */

static redisContext *raw(void) {
  struct timeval tv = {2, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", g_port, tv);
  assert_non_null(c);
  assert_int_equal(c->err, 0);
  return c;
}

static long long raw_int(const char *fmt, ...) {
  redisContext *c = raw();
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  assert_non_null(r);
  long long v = -1;
  if (r->type == REDIS_REPLY_INTEGER)
    v = r->integer;
  else if (r->type == REDIS_REPLY_STRING)
    v = atoll(r->str);
  freeReplyObject(r);
  redisFree(c);
  return v;
}

static char *raw_str(const char *fmt, ...) {
  redisContext *c = raw();
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  assert_non_null(r);
  char *s = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
  freeReplyObject(r);
  redisFree(c);
  return s;
}

static void assert_raw_str(const char *want, const char *fmt, const char *a, const char *b) {
  char *s = raw_str(fmt, a, b);
  if (!want)
    assert_null(s);
  else
    assert_string_equal(s, want);
  free(s);
}

static bd_redis *open_store(void) {
  bd_err err = {0};
  bd_redis *r = bd_redis_new(g_url, NULL, &err);
  if (!r) fail_msg("%s", err.msg);
  return r;
}

static void complete1(bd_redis *r, const char *job, int64_t shard, const bd_redis_image *im,
                      size_t n, int applied, long dd, long df) {
  bd_redis_shard s = {.job = job, .shard = shard, .images = im, .n = n};
  bd_err err = {0};
  if (bd_redis_complete_shards(r, &s, 1, &err) != BD_OK) fail_msg("%s", err.msg);
  assert_int_equal(s.applied, applied);
  assert_int_equal(s.done_delta, dd);
  assert_int_equal(s.failed_delta, df);
}

/* ---- tests ---- */

static void test_url(void **state) {
  bd_redis_url u;
  bd_err err = {0};
  assert_int_equal(bd_redis_parse_url("redis://alice:p%40ss:w@db.example:6380/3", &u, &err), BD_OK);
  assert_string_equal(u.user, "alice");
  assert_string_equal(u.pass, "p@ss:w");
  assert_string_equal(u.host, "db.example");
  assert_int_equal(u.port, 6380);
  assert_int_equal(u.db, 3);
  assert_int_equal(bd_redis_parse_url("redis://:secret@[::1]", &u, &err), BD_OK);
  assert_string_equal(u.user, "");
  assert_string_equal(u.pass, "secret");
  assert_string_equal(u.host, "::1");
  assert_int_equal(u.port, 6379);
  assert_int_equal(u.db, 0);
  assert_int_equal(bd_redis_parse_url("redis://h", &u, &err), BD_OK);
  assert_string_equal(u.host, "h");
  assert_int_equal(bd_redis_parse_url("rediss://h:6379", &u, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "TLS"));
  assert_non_null(strstr(err.msg, "not supported"));
  assert_int_equal(bd_redis_parse_url("http://h", &u, &err), BD_E_INVALID);
  assert_int_equal(bd_redis_parse_url("redis://h:99999", &u, &err), BD_E_INVALID);
  assert_int_equal(bd_redis_parse_url("redis://h:1/x", &u, &err), BD_E_INVALID);
  assert_int_equal(bd_redis_parse_url("redis://h:1/2000", &u, &err), BD_E_INVALID);
}

static void test_write_read(void **state) {
  bd_redis *r = open_store();
  assert_int_equal(bd_redis_persistence(r), 1);
  bd_redis_image im[] = {
      {"img-a", "{\"image\":\"img-a\",\"detections\":[]}", NULL},
      {"img-b", "{\"image\":\"img-b\",\"detections\":[{\"class\":1}]}", NULL},
      {"img-c", "{\"image\":\"img-c\",\"error\":\"fetch: HTTP 503\"}", "fetch: HTTP 503"},
  };
  complete1(r, "j1", 0, im, 3, 1, 2, 1);
  assert_raw_str(im[0].json, "GET det:%s:%s", "j1", "img-a");
  assert_raw_str(im[2].json, "GET det:%s:%s", "j1", "img-c");
  assert_raw_str("fetch: HTTP 503", "HGET job:%s:errors %s", "j1", "img-c");
  assert_int_equal(raw_int("HGET job:j1 done"), 2);
  assert_int_equal(raw_int("HGET job:j1 failed"), 1);
  assert_int_equal(raw_int("SISMEMBER job:j1:shards 0"), 1);
  const char *f[] = {"total", "model"}, *v[] = {"3", "yolox_nano"};
  bd_err err = {0};
  assert_int_equal(bd_redis_job_set(r, "j1", f, v, 2, &err), BD_OK);
  bd_redis_counts c;
  assert_int_equal(bd_redis_job_counts(r, "j1", &c, &err), BD_OK);
  assert_int_equal(c.total, 3);
  assert_int_equal(c.done, 2);
  assert_int_equal(c.failed, 1);
  assert_int_equal(c.shards, 1);
  assert_int_equal(bd_redis_job_counts(r, "nojob", &c, &err), BD_OK);
  assert_int_equal(c.total, -1);
  assert_int_equal(c.shards, 0);
  /* invalid ids never reach Redis */
  bd_redis_image bad[] = {{"a*b", "{}", NULL}};
  bd_redis_shard s = {.job = "j1", .shard = 9, .images = bad, .n = 1};
  assert_int_equal(bd_redis_complete_shards(r, &s, 1, &err), BD_E_INVALID);
  s.job = "j:1";
  s.images = im;
  assert_int_equal(bd_redis_complete_shards(r, &s, 1, &err), BD_E_INVALID);
  assert_int_equal(raw_int("SISMEMBER job:j1:shards 9"), 0);
  /* the server forgets the script (SCRIPT FLUSH, as after a restart): reloaded on NOSCRIPT */
  char *ok = raw_str("SCRIPT FLUSH");
  free(ok);
  bd_redis_image more[] = {{"img-d", "{\"image\":\"img-d\"}", NULL}};
  complete1(r, "j1", 1, more, 1, 1, 1, 0);
  assert_int_equal(raw_int("HGET job:j1 done"), 3);
  bd_redis_destroy(r);
  /* persistence is reported as the server has it */
  free(raw_str("CONFIG SET appendonly no"));
  r = open_store();
  assert_int_equal(bd_redis_persistence(r), 0);
  bd_redis_destroy(r);
  free(raw_str("CONFIG SET appendonly yes"));
  r = open_store();
  assert_int_equal(bd_redis_persistence(r), 1);
  bd_redis_destroy(r);
}

static void test_redelivery_idempotent(void **state) {
  bd_redis *r = open_store();
  bd_redis_image im[] = {
      {"i1", "{\"image\":\"i1\",\"detections\":[]}", NULL},
      {"i2", "{\"image\":\"i2\",\"error\":\"decode: truncated\"}", "decode: truncated"},
  };
  complete1(r, "j2", 5, im, 2, 1, 1, 1);
  /* the same shard delivered again, even with different outcomes: nothing changes */
  complete1(r, "j2", 5, im, 2, 0, 0, 0);
  bd_redis_image other[] = {
      {"i1", "{\"image\":\"i1\",\"error\":\"x\"}", "x"},
      {"i2", "{\"image\":\"i2\",\"detections\":[]}", NULL},
  };
  complete1(r, "j2", 5, other, 2, 0, 0, 0);
  assert_int_equal(raw_int("HGET job:j2 done"), 1);
  assert_int_equal(raw_int("HGET job:j2 failed"), 1);
  assert_raw_str(im[0].json, "GET det:%s:%s", "j2", "i1");
  assert_raw_str(im[1].json, "GET det:%s:%s", "j2", "i2");
  /* two shards pipelined in one call, one already complete */
  bd_redis_shard s[2] = {{.job = "j2", .shard = 5, .images = im, .n = 2},
                         {.job = "j2",
                          .shard = 6,
                          .images = (bd_redis_image[]){{"i3", "{\"image\":\"i3\"}", NULL}},
                          .n = 1}};
  bd_err err = {0};
  assert_int_equal(bd_redis_complete_shards(r, s, 2, &err), BD_OK);
  assert_int_equal(s[0].applied, 0);
  assert_int_equal(s[1].applied, 1);
  assert_int_equal(raw_int("HGET job:j2 done"), 2);
  assert_int_equal(raw_int("HGET job:j2 failed"), 1);
  bd_redis_destroy(r);
}

/* submit --force while a shard of the earlier submission is in flight: that shard (its
 * gen is not the job record's any more) writes nothing and does not mark its shard
 * number complete, so the new submission's shard of the same number still counts; a
 * shard without gen (hand-made manifests) is not checked. */
static void test_superseded_gen(void **state) {
  (void)state;
  bd_redis *r = open_store();
  free(raw_str("HSET job:jg gen new-2 total 2 shards 1 done 0 failed 0"));
  bd_redis_image old[] = {{"old0", "{\"image\":\"old0\",\"detections\":[]}", NULL}};
  bd_redis_shard s = {.job = "jg", .shard = 0, .gen = "old-1", .images = old, .n = 1};
  bd_err err = {0};
  assert_int_equal(bd_redis_complete_shards(r, &s, 1, &err), BD_OK);
  assert_int_equal(s.applied, -1);
  assert_raw_str(NULL, "GET det:%s:%s", "jg", "old0");
  assert_int_equal(raw_int("SCARD job:jg:shards"), 0);
  assert_int_equal(raw_int("HGET job:jg done"), 0);
  bd_redis_image nw[] = {{"new0", "{\"image\":\"new0\",\"detections\":[]}", NULL},
                         {"new1", "{\"image\":\"new1\",\"error\":\"x\"}", "x"}};
  bd_redis_shard t = {.job = "jg", .shard = 0, .gen = "new-2", .images = nw, .n = 2};
  assert_int_equal(bd_redis_complete_shards(r, &t, 1, &err), BD_OK);
  assert_int_equal(t.applied, 1);
  assert_int_equal(raw_int("HGET job:jg done"), 1);
  assert_int_equal(raw_int("HGET job:jg failed"), 1);
  assert_raw_str(nw[0].json, "GET det:%s:%s", "jg", "new0");
  /* a job record with no gen (deleted, or never submitted): a gen'd shard is stale */
  bd_redis_shard u = {.job = "jg-gone", .shard = 0, .gen = "old-1", .images = old, .n = 1};
  assert_int_equal(bd_redis_complete_shards(r, &u, 1, &err), BD_OK);
  assert_int_equal(u.applied, -1);
  assert_raw_str(NULL, "GET det:%s:%s", "jg-gone", "old0");
  /* no gen: written as before */
  complete1(r, "jg-nogen", 0, old, 1, 1, 1, 0);
  /* a gen that is no id is refused before Redis sees it */
  bd_redis_shard v = {.job = "jg", .shard = 1, .gen = "a b", .images = old, .n = 1};
  assert_int_equal(bd_redis_complete_shards(r, &v, 1, &err), BD_E_INVALID);
  bd_redis_destroy(r);
}

/* A shard number not below the job record's shards (a hand-made manifest) is refused:
 * nothing written, not marked complete, the record's shards reported; a record without
 * shards (manifests that submit did not make) is not checked. */
static void test_shard_beyond_record(void **state) {
  (void)state;
  bd_redis *r = open_store();
  free(raw_str("HSET job:jb total 2 shards 2 done 0 failed 0"));
  bd_redis_image im[] = {{"b0", "{\"image\":\"b0\",\"detections\":[]}", NULL}};
  bd_redis_shard s = {.job = "jb", .shard = 2, .images = im, .n = 1};
  bd_err err = {0};
  assert_int_equal(bd_redis_complete_shards(r, &s, 1, &err), BD_OK);
  assert_int_equal(s.applied, -2);
  assert_int_equal(s.job_shards, 2);
  assert_int_equal(s.done_delta, 0);
  assert_raw_str(NULL, "GET det:%s:%s", "jb", "b0");
  assert_int_equal(raw_int("SCARD job:jb:shards"), 0);
  assert_int_equal(raw_int("HGET job:jb done"), 0);
  complete1(r, "jb", 1, im, 1, 1, 1, 0);
  assert_int_equal(raw_int("SCARD job:jb:shards"), 1);
  complete1(r, "jb-norecord", 7, im, 1, 1, 1, 0);
  bd_redis_destroy(r);
}

static void test_error_to_ok_and_resubmit(void **state) {
  bd_redis *r = open_store();
  bd_redis_image first[] = {
      {"p1", "{\"image\":\"p1\",\"detections\":[]}", NULL},
      {"p2", "{\"image\":\"p2\",\"error\":\"fetch: HTTP 503\"}", "fetch: HTTP 503"},
      {"p3", "{\"image\":\"p3\",\"error\":\"fetch: timed out\"}", "fetch: timed out"},
  };
  complete1(r, "j3", 0, first, 3, 1, 1, 2);
  /* failed images resubmitted as a NEW shard of the same job: p2 now succeeds, p3 fails again */
  bd_redis_image retry[] = {
      {"p2", "{\"image\":\"p2\",\"detections\":[{\"class\":0}]}", NULL},
      {"p3", "{\"image\":\"p3\",\"error\":\"fetch: HTTP 404\"}", "fetch: HTTP 404"},
  };
  complete1(r, "j3", 1, retry, 2, 1, 1, -1);
  assert_int_equal(raw_int("HGET job:j3 done"), 2);
  assert_int_equal(raw_int("HGET job:j3 failed"), 1);
  assert_int_equal(raw_int("HEXISTS job:j3:errors p2"), 0);
  assert_raw_str("fetch: HTTP 404", "HGET job:%s:errors %s", "j3", "p3");
  assert_raw_str(retry[0].json, "GET det:%s:%s", "j3", "p2");
  /* a stale redelivery of shard 0 must not bring p2's error back */
  complete1(r, "j3", 0, first, 3, 0, 0, 0);
  assert_raw_str(retry[0].json, "GET det:%s:%s", "j3", "p2");
  /* a later shard with an error for an image that has a result keeps the result */
  bd_redis_image late[] = {{"p1", "{\"image\":\"p1\",\"error\":\"boom\"}", "boom"},
                           {"p3", "{\"image\":\"p3\"}", NULL}};
  complete1(r, "j3", 2, late, 2, 1, 1, -1);
  assert_raw_str(first[0].json, "GET det:%s:%s", "j3", "p1");
  assert_int_equal(raw_int("HGET job:j3 done"), 3);
  assert_int_equal(raw_int("HGET job:j3 failed"), 0);
  assert_int_equal(raw_int("HLEN job:j3:errors"), 0);
  bd_redis_destroy(r);
}

typedef struct scan_state {
  unsigned char seen[1500];
  int n, bad;
} scan_state;

static int on_det(void *ctx, const char *k, size_t kl, const char *v, size_t vl) {
  scan_state *s = ctx;
  char id[32], want[64];
  int i;
  snprintf(id, sizeof id, "%.*s", (int)kl, k);
  s->n++;
  if (sscanf(id, "s%d", &i) != 1 || i < 0 || i >= 1500) return s->bad++, 0;
  snprintf(want, sizeof want, "{\"image\":\"%s\"}", id);
  if (vl != strlen(want) || memcmp(v, want, vl)) s->bad++;
  s->seen[i]++;
  return 0;
}

static int on_err(void *ctx, const char *k, size_t kl, const char *v, size_t vl) {
  scan_state *s = ctx;
  s->n++;
  if (vl != 4 || memcmp(v, "bad!", 4)) s->bad++;
  return 0;
}

static int on_kv(void *ctx, const char *k, size_t kl, const char *v, size_t vl) {
  int *n = ctx;
  if (kl == 4 && !memcmp(k, "done", 4) && vl == 4 && !memcmp(v, "1500", 4)) (*n)++;
  return 0;
}

static void test_scan(void **state) {
  bd_redis *r = open_store();
  static bd_redis_image im[1500];
  static char ids[1500][16], js[1500][48];
  for (int i = 0; i < 1500; i++) {
    snprintf(ids[i], sizeof ids[i], "s%d", i);
    snprintf(js[i], sizeof js[i], "{\"image\":\"%s\"}", ids[i]);
    im[i] = (bd_redis_image){ids[i], js[i], NULL};
  }
  bd_redis_shard sh[15];
  for (int i = 0; i < 15; i++)
    sh[i] = (bd_redis_shard){.job = "j4", .shard = i, .images = im + 100 * i, .n = 100};
  bd_err err = {0};
  assert_int_equal(bd_redis_complete_shards(r, sh, 15, &err), BD_OK);
  /* another job's keys must not show up */
  complete1(r, "j40", 0, im, 1, 1, 1, 0);
  scan_state *s = calloc(1, sizeof *s);
  assert_int_equal(bd_redis_scan_results(r, "j4", on_det, s, &err), BD_OK);
  assert_int_equal(s->bad, 0);
  for (int i = 0; i < 1500; i++) assert_true(s->seen[i] >= 1); /* SCAN may repeat, never miss */
  int n = 0;
  assert_int_equal(bd_redis_job_get(r, "j4", on_kv, &n, &err), BD_OK);
  assert_int_equal(n, 1);
  /* errors: 300 failed images in a second job */
  for (int i = 0; i < 300; i++) im[i].error = "bad!";
  bd_redis_shard e1 = {.job = "j5", .shard = 0, .images = im, .n = 300};
  assert_int_equal(bd_redis_complete_shards(r, &e1, 1, &err), BD_OK);
  memset(s, 0, sizeof *s);
  assert_int_equal(bd_redis_scan_errors(r, "j5", on_err, s, &err), BD_OK);
  assert_int_equal(s->bad, 0);
  assert_true(s->n >= 300);
  assert_int_equal(raw_int("HLEN job:j5:errors"), 300);
  free(s);
  const char *f[] = {"host", "img_s"}, *v[] = {"gpu-node-7", "2310.5"};
  assert_int_equal(bd_redis_worker_beat(r, "gpu-node-7:1234", f, v, 2, 30, &err), BD_OK);
  long long ttl = raw_int("TTL worker:gpu-node-7:1234");
  assert_true(ttl > 0 && ttl <= 30);
  assert_raw_str("2310.5", "HGET worker:%s %s", "gpu-node-7:1234", "img_s");
  bd_redis_destroy(r);
}

static void test_auth(void **state) {
  char *dir = bdt_tmpdir("redisauth");
  int port = bdt_free_port();
  pid_t pid = start_redis(dir, port, "s3cret-pass");
  assert_true(pid > 0);
  char url[160];
  bd_err err = {0};
  snprintf(url, sizeof url, "redis://:s3cret-pass@127.0.0.1:%d/2", port);
  bd_redis *r = bd_redis_new(url, NULL, &err);
  if (!r) fail_msg("%s", err.msg);
  bd_redis_image im[] = {{"a1", "{\"image\":\"a1\"}", NULL}};
  complete1(r, "ja", 0, im, 1, 1, 1, 0);
  bd_redis_destroy(r);
  snprintf(url, sizeof url, "redis://default:s3cret-pass@127.0.0.1:%d", port);
  r = bd_redis_new(url, NULL, &err);
  if (!r) fail_msg("%s", err.msg);
  bd_redis_destroy(r);
  snprintf(url, sizeof url, "redis://:WRONGPW@127.0.0.1:%d", port);
  assert_null(bd_redis_new(url, NULL, &err));
  assert_int_equal(err.code, BD_E_INVALID);
  assert_non_null(strstr(err.msg, "authentication failed"));
  assert_null(strstr(err.msg, "WRONGPW"));
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
  assert_null(bd_redis_new(url, NULL, &err));
  assert_int_equal(err.code, BD_E_INVALID);
  assert_non_null(strstr(err.msg, "NOAUTH"));
  bdt_stop(pid, SIGTERM);
  /* nobody listening: retriable */
  assert_null(bd_redis_new(url, NULL, &err));
  assert_int_equal(err.code, BD_E_UNAVAILABLE);
  bdt_rmrf(dir);
  free(dir);
}

/* ---- crash in the middle of pipelined batches ---- */

#define K_SHARDS 300
#define K_PER 20
#define K_BATCH 10

typedef struct writer {
  pthread_mutex_t mu;
  int batches_acked;
  bd_status st;
  bd_err err;
  unsigned reconnects;
} writer;

static int k_is_error(int shard, int j) {
  return (shard * K_PER + j) % 7 == 0;
}

static void *writer_main(void *arg) {
  writer *w = arg;
  bd_redis_opts o;
  bd_redis_opts_default(&o);
  o.max_attempts = 12;
  o.backoff_base_ms = 50;
  o.backoff_max_ms = 1000;
  o.io_timeout_ms = 3000;
  bd_redis *r = bd_redis_new(g_url, &o, &w->err);
  if (!r) {
    w->st = w->err.code;
    return NULL;
  }
  static char ids[K_SHARDS * K_PER][24], js[K_SHARDS * K_PER][96];
  static bd_redis_image im[K_SHARDS * K_PER];
  for (int s = 0; s < K_SHARDS; s++)
    for (int j = 0; j < K_PER; j++) {
      int i = s * K_PER + j;
      snprintf(ids[i], sizeof ids[i], "k%05d", i);
      int e = k_is_error(s, j);
      snprintf(js[i], sizeof js[i],
               e ? "{\"image\":\"%s\",\"error\":\"decode: bad\"}"
                 : "{\"image\":\"%s\",\"detections\":[]}",
               ids[i]);
      im[i] = (bd_redis_image){ids[i], js[i], e ? "decode: bad" : NULL};
    }
  for (int b = 0; b < K_SHARDS / K_BATCH; b++) {
    bd_redis_shard sh[K_BATCH];
    for (int k = 0; k < K_BATCH; k++) {
      int s = b * K_BATCH + k;
      sh[k] = (bd_redis_shard){.job = "jk", .shard = s, .images = im + s * K_PER, .n = K_PER};
    }
    bd_status st = bd_redis_complete_shards(r, sh, K_BATCH, &w->err);
    if (st != BD_OK) {
      w->st = st;
      break;
    }
    pthread_mutex_lock(&w->mu);
    w->batches_acked++;
    pthread_mutex_unlock(&w->mu);
  }
  w->reconnects = bd_redis_reconnects(r);
  bd_redis_destroy(r);
  return NULL;
}

static void test_kill_restart_mid_batch(void **state) {
  writer w = {.mu = PTHREAD_MUTEX_INITIALIZER};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
  int acked = 0;
  for (int i = 0; i < 400 && acked < 3; i++) { /* <= 20 s */
    usleep(5000);
    pthread_mutex_lock(&w.mu);
    acked = w.batches_acked;
    pthread_mutex_unlock(&w.mu);
  }
  assert_true(acked >= 3);
  bdt_stop(g_pid, SIGKILL); /* AOF with appendfsync always: acknowledged writes survive */
  usleep(300000);
  g_pid = start_redis(g_dir, g_port, NULL);
  assert_true(g_pid > 0);
  pthread_join(th, NULL);
  if (w.st != BD_OK) fail_msg("writer: %s", w.err.msg);
  assert_true(w.reconnects >= 1);
  int failed = 0;
  for (int s = 0; s < K_SHARDS; s++)
    for (int j = 0; j < K_PER; j++) failed += k_is_error(s, j);
  long long done = raw_int("HGET job:jk done"), nf = raw_int("HGET job:jk failed");
  assert_int_equal(done + nf, K_SHARDS * K_PER);
  assert_int_equal(nf, failed);
  assert_int_equal(raw_int("SCARD job:jk:shards"), K_SHARDS);
  assert_int_equal(raw_int("HLEN job:jk:errors"), failed);
  assert_true(!k_is_error(K_SHARDS - 1, K_PER - 2)); /* 5998 % 7 != 0 */
  assert_raw_str("{\"image\":\"k05998\",\"detections\":[]}", "GET det:%s:%s", "jk", "k05998");
  assert_raw_str("{\"image\":\"k00000\",\"error\":\"decode: bad\"}", "GET det:%s:%s", "jk",
                 "k00000");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url),
      cmocka_unit_test(test_write_read),
      cmocka_unit_test(test_redelivery_idempotent),
      cmocka_unit_test(test_superseded_gen),
      cmocka_unit_test(test_shard_beyond_record),
      cmocka_unit_test(test_error_to_ok_and_resubmit),
      cmocka_unit_test(test_scan),
      cmocka_unit_test(test_auth),
      cmocka_unit_test(test_kill_restart_mid_batch),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
