/* bd_fetch against a local fault-injection HTTP server (servers/fault_http.py). Expected
 * values come from the server's own counters (/stats) and from the byte pattern it
 * documents, never from the fetcher. */
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
#include <pthread.h>

#include "bd_fetch.h"
#include "bd_s3.h"
#include "bd_url.h"
#include "test_fetch_spawn.h"

static pid_t g_pid = -1;
static int g_port;

static int setup(void **state) {
  char script[1024];
  snprintf(script, sizeof script, "%s", bdt_src("tests/storage/servers/fault_http.py"));
  char *argv[] = {"/usr/bin/python3", script, "--lifetime", "90", NULL};
  g_pid = bdt_spawn(argv, 1, &g_port);
  return g_pid > 0 ? 0 : -1;
}

static int teardown(void **state) {
  bdt_stop(g_pid, SIGTERM);
  return 0;
}

static void url(char *buf, size_t cap, const char *path) {
  snprintf(buf, cap, "http://127.0.0.1:%d%s", g_port, path);
}

static long hits(const char *key) {
  char body[65536];
  assert_int_equal(bdt_http_get(g_port, "/stats", body, sizeof body), 200);
  return bdt_json_int(body, key);
}

static long stat_field(const char *field) {
  return hits(field);
}

static void fast_opts(bd_fetch_opts *o) {
  bd_fetch_opts_default(o);
  o->backoff_base_ms = 20;
  o->backoff_max_ms = 100;
  o->timeout_ms = 10000;
  o->connect_timeout_ms = 2000;
}

static bd_fetch_result get1(const bd_fetch_opts *o, const char *path) {
  char u[512];
  url(u, sizeof u, path);
  unsigned char *buf = NULL;
  size_t len = 0;
  bd_fetch_result info;
  bd_err err = {0};
  bd_status st = bd_fetch_one(u, o, &buf, &len, &info, &err);
  assert_int_equal(st, info.status);
  info.data = buf;
  info.len = len;
  if (st != BD_OK) assert_string_equal(err.msg, info.err.msg);
  return info;
}

static void test_retry_500_then_ok(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  bd_fetch_result r = get1(&o, "/flaky?key=flaky1&fail=2");
  assert_int_equal(r.status, BD_OK);
  assert_int_equal(r.attempts, 3);
  assert_int_equal(r.len, 2);
  assert_memory_equal(r.data, "ok", 2);
  assert_int_equal(hits("flaky1"), 3);
  bd_fetch_result_clear(&r);
}

static void test_retry_exhausted(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.max_attempts = 2;
  bd_fetch_result r = get1(&o, "/flaky?key=flaky2&fail=5");
  assert_int_equal(r.status, BD_E_UNAVAILABLE);
  assert_true(bd_status_retriable(r.status));
  assert_string_equal(r.err.msg, "fetch: HTTP 500");
  assert_int_equal(r.attempts, 2);
  assert_int_equal(hits("flaky2"), 2);
  /* a 5xx with a body over the limit stays a retriable 5xx (streamed and announced) */
  o.max_body = 1000;
  r = get1(&o, "/status?key=big5xx&code=503&pad=3000");
  assert_int_equal(r.status, BD_E_UNAVAILABLE);
  assert_int_equal(r.attempts, 2);
  assert_int_equal(hits("big5xx"), 2);
}

static void test_429_retry_after(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  double t0 = bdt_now();
  bd_fetch_result r = get1(&o, "/ratelimit?key=rl1&n=1");
  double dt = bdt_now() - t0;
  assert_int_equal(r.status, BD_OK);
  assert_int_equal(r.attempts, 2);
  assert_true(dt >= 0.9); /* Retry-After: 1 honoured, not the 20 ms backoff */
  assert_true(dt < 5.0);
  assert_int_equal(hits("rl1"), 2);
  bd_fetch_result_clear(&r);
}

static void test_404_permanent(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  bd_fetch_result r = get1(&o, "/status?key=nf1&code=404");
  assert_int_equal(r.status, BD_E_NOT_FOUND);
  assert_false(bd_status_retriable(r.status));
  assert_string_equal(r.err.msg, "fetch: HTTP 404");
  assert_int_equal(r.attempts, 1);
  assert_int_equal(r.http_code, 404);
  assert_int_equal(hits("nf1"), 1);
  r = get1(&o, "/status?key=forb1&code=403");
  assert_int_equal(r.status, BD_E_INVALID);
  assert_int_equal(r.attempts, 1);
  assert_int_equal(hits("forb1"), 1);
}

static void test_stall_timeout(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.timeout_ms = 1000;
  o.max_attempts = 1;
  double t0 = bdt_now();
  bd_fetch_result r = get1(&o, "/stall?secs=10");
  double dt = bdt_now() - t0;
  assert_int_equal(r.status, BD_E_TIMEOUT);
  assert_true(bd_status_retriable(r.status));
  assert_true(dt >= 0.9 && dt < 3.0);
  /* The low-speed limit also catches a stall. */
  o.timeout_ms = 60000;
  o.low_speed_bytes = 100;
  o.low_speed_time_s = 1;
  t0 = bdt_now();
  r = get1(&o, "/stall?secs=10");
  dt = bdt_now() - t0;
  assert_int_equal(r.status, BD_E_TIMEOUT);
  assert_true(dt < 4.0);
}

static void fetch_q(bd_fetch *f, const char *path, bd_fetch_result *r) {
  char u[512];
  url(u, sizeof u, path);
  bd_err err = {0};
  assert_int_equal(bd_fetch_submit(f, 1, u, NULL, 5000, &err), BD_OK);
  assert_int_equal(bd_fetch_poll(f, 30000, r, &err), BD_OK);
}

static void test_body_limit_drops_connection(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.max_body = 1u << 20;
  o.concurrency = 1;
  bd_err err = {0};
  bd_fetch *f = bd_fetch_new(&o, NULL, NULL, &err);
  assert_non_null(f);
  const char *paths[] = {"/big?size=5242880&chunked=0", "/big?size=5242880&chunked=1"};
  for (int i = 0; i < 2; i++) {
    bd_fetch_result r;
    long c0 = stat_field("connections"); /* this /stats call is one connection */
    fetch_q(f, "/ok?size=100000", &r);
    assert_int_equal(r.status, BD_OK);
    assert_int_equal(r.len, 100000);
    for (size_t k = 0; k < r.len; k++)
      if (r.data[k] != (unsigned char)((k * 31 + 7) & 255)) fail_msg("byte %zu differs", k);
    bd_fetch_result_clear(&r);
    fetch_q(f, "/ok?size=10", &r);
    assert_int_equal(r.status, BD_OK);
    bd_fetch_result_clear(&r);
    /* both /ok on one reused connection (new in round 0, kept from round 0 in round 1),
     * +1 for the next /stats */
    long c1 = c0 + (i == 0 ? 2 : 1);
    assert_int_equal(stat_field("connections"), c1);
    fetch_q(f, paths[i], &r);
    assert_int_equal(r.status, BD_E_LIMIT);
    assert_false(bd_status_retriable(r.status));
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.err.msg, "larger than 1048576"));
    fetch_q(f, "/ok?size=10", &r);
    assert_int_equal(r.status, BD_OK);
    bd_fetch_result_clear(&r);
    /* the oversized transfer's connection was closed: /ok needed a new one */
    assert_int_equal(stat_field("connections"), c1 + 1 + 1);
  }
  bd_fetch_destroy(f);
}

static void test_truncated_retriable(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.max_attempts = 2;
  bd_fetch_result r = get1(&o, "/truncated?key=tr1");
  assert_int_equal(r.status, BD_E_NETWORK);
  assert_true(bd_status_retriable(r.status));
  assert_int_equal(r.attempts, 2);
  assert_int_equal(hits("tr1"), 2);
}

static void test_refused_retriable(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.max_attempts = 3;
  char u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/x", bdt_free_port());
  unsigned char *buf;
  size_t len;
  bd_fetch_result info;
  bd_err err = {0};
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_E_NETWORK);
  assert_int_equal(info.attempts, 3);
  assert_null(buf);
}

typedef struct cb_state {
  pthread_mutex_t mu;
  int n, ok, cancelled;
  unsigned char seen[256];
} cb_state;

static void on_done(void *ctx, bd_fetch_result *r) {
  cb_state *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->n++;
  if (r->status == BD_OK && r->len == 2 && !memcmp(r->data, "ok", 2)) s->ok++;
  if (r->status == BD_E_CANCELLED) s->cancelled++;
  if (r->id < 256) s->seen[r->id]++;
  pthread_mutex_unlock(&s->mu);
}

static void test_200_concurrent_bounded(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.concurrency = 8;
  cb_state s = {.mu = PTHREAD_MUTEX_INITIALIZER};
  bd_err err = {0};
  bd_fetch *f = bd_fetch_new(&o, on_done, &s, &err);
  assert_non_null(f);
  char u[256];
  for (int i = 0; i < 200; i++) {
    snprintf(u, sizeof u, "http://127.0.0.1:%d/slow?ms=30&key=c%d", g_port, i);
    assert_int_equal(bd_fetch_submit(f, (uint64_t)i, u, NULL, 10000, &err), BD_OK);
  }
  for (int i = 0; i < 600; i++) { /* at most 30 s */
    pthread_mutex_lock(&s.mu);
    int n = s.n;
    pthread_mutex_unlock(&s.mu);
    if (n == 200) break;
    usleep(50000);
  }
  bd_fetch_stats st;
  bd_fetch_stats_get(f, &st);
  bd_fetch_destroy(f);
  assert_int_equal(s.n, 200);
  assert_int_equal(s.ok, 200);
  for (int i = 0; i < 200; i++) assert_int_equal(s.seen[i], 1);
  assert_true(st.max_running <= 8);
  long mc = stat_field("slow_max");
  assert_true(mc <= 8);
  assert_true(mc >= 2); /* really concurrent */
  for (int i = 0; i < 200; i += 37) {
    char k[16];
    snprintf(k, sizeof k, "c%d", i);
    assert_int_equal(hits(k), 1);
  }
}

static void test_shutdown_cancels(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.concurrency = 2;
  cb_state s = {.mu = PTHREAD_MUTEX_INITIALIZER};
  bd_err err = {0};
  bd_fetch *f = bd_fetch_new(&o, on_done, &s, &err);
  char u[256];
  url(u, sizeof u, "/stall?secs=10");
  for (int i = 0; i < 5; i++)
    assert_int_equal(bd_fetch_submit(f, (uint64_t)i, u, NULL, 1000, &err), BD_OK);
  usleep(300000);
  double t0 = bdt_now();
  bd_fetch_destroy(f);
  assert_true(bdt_now() - t0 < 2.0);
  assert_int_equal(s.n, 5);
  assert_int_equal(s.cancelled, 5);
}

static void test_queue_full(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.concurrency = 1;
  o.queue_max = 2;
  bd_err err = {0};
  bd_fetch *f = bd_fetch_new(&o, NULL, NULL, &err);
  char u[256];
  url(u, sizeof u, "/stall?secs=5");
  assert_int_equal(bd_fetch_submit(f, 1, u, NULL, 0, &err), BD_OK);
  assert_int_equal(bd_fetch_submit(f, 2, u, NULL, 0, &err), BD_OK);
  double t0 = bdt_now();
  assert_int_equal(bd_fetch_submit(f, 3, u, NULL, 200, &err), BD_E_UNAVAILABLE);
  assert_true(bdt_now() - t0 >= 0.15);
  bd_fetch_destroy(f); /* the queued results are freed (ASan checks) */
}

static void test_file_scheme(void **state) {
  char path[] = "/tmp/bdtest-fileXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "hello file", 10), 10);
  close(fd);
  char u[256];
  snprintf(u, sizeof u, "file://%s", path);
  bd_fetch_opts o;
  fast_opts(&o);
  unsigned char *buf;
  size_t len;
  bd_fetch_result info;
  bd_err err = {0};
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_E_UNSUPPORTED);
  assert_int_equal(info.attempts, 0);
  assert_string_equal(err.msg, "fetch: file:// URLs are disabled");
  o.allow_file = 1;
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_OK);
  assert_int_equal(len, 10);
  assert_memory_equal(buf, "hello file", 10);
  free(buf);
  unlink(path);
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_E_NOT_FOUND);
}

/* Names that mean something in a URL (' ', '#', '?', '%', a newline, non-ASCII) reach
 * the file when the path is percent-encoded as submit --dir writes it; a directory is
 * a fetch error, not an empty body. */
static void test_file_scheme_encoded_names(void **state) {
  char dir[] = "/tmp/bdtest-namesXXXXXX";
  assert_non_null(mkdtemp(dir));
  static const char *names[] = {"#hash.jpg", "%41.jpg",  "q?x.jpg",
                                "a b.jpg",   "nl\n.jpg", "\xc3\xa9t\xc3\xa9.jpg",
                                "A.jpg",     "plain.jpg"};
  const size_t nn = sizeof names / sizeof *names;
  char path[512], u[1024];
  for (size_t i = 0; i < nn; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "body of %zu", i); /* "%41.jpg" must not read "A.jpg" */
    fclose(fp);
  }
  bd_fetch_opts o;
  fast_opts(&o);
  o.allow_file = 1;
  unsigned char *buf;
  size_t len;
  bd_fetch_result info;
  bd_err err = {0};
  for (size_t i = 0; i < nn; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    char *enc = bd_url_encode(path, 1);
    assert_non_null(enc);
    snprintf(u, sizeof u, "file://%s", enc);
    /* bd_url_decode is its inverse */
    char dec[600];
    size_t dl = 0;
    assert_int_equal(bd_url_decode(enc, enc + strlen(enc), dec, sizeof dec, &dl), 0);
    assert_string_equal(dec, path);
    assert_int_equal(dl, strlen(path));
    free(enc);
    char want[32];
    snprintf(want, sizeof want, "body of %zu", i);
    bd_status st = bd_fetch_one(u, &o, &buf, &len, &info, &err);
    if (st != BD_OK) fprintf(stderr, "%s: %s\n", u, err.msg);
    assert_int_equal(st, BD_OK);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
  }
  snprintf(u, sizeof u, "file://%s", dir);
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_E_INVALID);
  assert_int_equal(info.attempts, 0);
  char want[600];
  snprintf(want, sizeof want, "fetch: file://%s is a directory", dir);
  assert_string_equal(err.msg, want);
  /* '#' unencoded is a fragment: the URL names the directory */
  snprintf(u, sizeof u, "file://%s/#hash.jpg", dir);
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, &info, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, "is a directory"));
  for (size_t i = 0; i < nn; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

static void test_allow_list_and_redaction(void **state) {
  bd_fetch_opts o;
  fast_opts(&o);
  o.allowed_hosts = "images.example.org, LOCALHOST";
  unsigned char *buf;
  size_t len;
  bd_err err = {0};
  char u[256];
  snprintf(u, sizeof u, "http://user:hunter2@127.0.0.1:%d/ok?token=SECRETTOKEN", g_port);
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, NULL, &err), BD_E_UNSUPPORTED);
  assert_null(strstr(err.msg, "hunter2"));
  assert_null(strstr(err.msg, "SECRETTOKEN"));
  assert_non_null(strstr(err.msg, "allow-list"));
  snprintf(u, sizeof u, "http://localhost:%d/ok?size=3", g_port);
  assert_int_equal(bd_fetch_one(u, &o, &buf, &len, NULL, &err), BD_OK);
  assert_int_equal(len, 3);
  free(buf);
  assert_int_equal(bd_fetch_one("gopher://u:pw@h/x?sig=abc#frag", NULL, &buf, &len, NULL, &err),
                   BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "'gopher://h/x'"));
  char red[128];
  /* bd_url_decode: malformed escapes and a full buffer refused, %00 seen in the length */
  {
    char d[8];
    size_t n = 0;
    const char *bad[] = {"a%", "a%4", "a%4g", "%zz"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
      assert_int_equal(bd_url_decode(bad[k], bad[k] + strlen(bad[k]), d, sizeof d, NULL), -1);
    assert_int_equal(bd_url_decode("abcdefgh", "abcdefgh" + 8, d, sizeof d, NULL), -1);
    assert_int_equal(bd_url_decode("a%00b", "a%00b" + 5, d, sizeof d, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(strlen(d), 1);
  }
  bd_url_redact("https://AKID:sec@ret@bucket.s3.amazonaws.com/a/b?X-Amz-Signature=zz", red,
                sizeof red);
  assert_string_equal(red, "https://bucket.s3.amazonaws.com/a/b");
  bd_url_redact("no-scheme/path?q", red, 8);
  assert_string_equal(red, "no-sche");
}

static void test_s3_ini_and_xml(void **state) {
  char path[] = "/tmp/bdtest-iniXXXXXX";
  int fd = mkstemp(path);
  const char *ini =
      "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=SKDEF\n\n"
      "[profile other]\r\naws_access_key_id=AKOTHER\r\n aws_secret_access_key = SK/OTHER+x \r\n"
      "aws_session_token=TOK\n";
  assert_int_equal(write(fd, ini, strlen(ini)), (ssize_t)strlen(ini));
  close(fd);
  bd_s3_creds c;
  bd_err err = {0};
  assert_int_equal(bd_s3_creds_from_file(path, NULL, &c, &err), BD_OK);
  assert_string_equal(c.access_key, "AKDEF");
  assert_string_equal(c.secret_key, "SKDEF");
  assert_string_equal(c.session_token, "");
  assert_int_equal(bd_s3_creds_from_file(path, "other", &c, &err), BD_OK);
  assert_string_equal(c.secret_key, "SK/OTHER+x");
  assert_string_equal(c.session_token, "TOK");
  assert_int_equal(bd_s3_creds_from_file(path, "nope", &c, &err), BD_E_NOT_FOUND);
  assert_int_equal(c.have, 0);
  unlink(path);

  const char *xml =
      "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><IsTruncated>true</IsTruncated>"
      "<Contents><Key>a&amp;b/&#x263A;&lt;1&gt;.jpg</Key><LastModified>2026-01-02T03:04:05.000Z</"
      "LastModified>"
      "<ETag>&quot;abc123&quot;</ETag><Size>12345</Size></Contents>"
      "<Contents><Key>z</Key><Size>0</Size></Contents>"
      "<NextContinuationToken>tok+/=</NextContinuationToken></ListBucketResult>";
  int trunc, stopped;
  char tok[64];
  assert_int_equal(
      bd_s3_parse_list(xml, strlen(xml), NULL, NULL, &trunc, tok, sizeof tok, &stopped, &err),
      BD_OK);
  assert_int_equal(trunc, 1);
  assert_string_equal(tok, "tok+/=");
  const char *bad = "<Error><Code>AccessDenied</Code></Error>";
  assert_int_equal(
      bd_s3_parse_list(bad, strlen(bad), NULL, NULL, &trunc, tok, sizeof tok, &stopped, &err),
      BD_E_INVALID);
  assert_non_null(strstr(err.msg, "AccessDenied"));
  const char *badsize =
      "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>";
  assert_int_equal(bd_s3_parse_list(badsize, strlen(badsize), NULL, NULL, &trunc, tok, sizeof tok,
                                    &stopped, &err),
                   BD_E_INVALID);
  char *e = bd_url_encode("a b/c~é", 1);
  assert_string_equal(e, "a%20b/c~%C3%A9");
  free(e);
}

typedef struct xml_seen {
  char key[64], etag[32], lm[32];
  unsigned long long size;
  int n;
} xml_seen;

static int xml_first(void *ctx, const bd_s3_object *o) {
  xml_seen *s = ctx;
  if (s->n++ == 0) {
    snprintf(s->key, sizeof s->key, "%s", o->key);
    snprintf(s->etag, sizeof s->etag, "%s", o->etag);
    snprintf(s->lm, sizeof s->lm, "%s", o->last_modified);
    s->size = o->size;
  }
  return 0;
}

static void test_s3_xml_fields(void **state) {
  const char *xml =
      "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a&amp;b/&#x263A;.jpg</Key>"
      "<LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;abc&quot;</ETag>"
      "<Size>12345</Size></Contents><Contents><Key>z</Key></Contents></ListBucketResult>";
  xml_seen s = {0};
  int trunc, stopped;
  char tok[16];
  bd_err err = {0};
  assert_int_equal(
      bd_s3_parse_list(xml, strlen(xml), xml_first, &s, &trunc, tok, sizeof tok, &stopped, &err),
      BD_OK);
  assert_int_equal(s.n, 2);
  assert_int_equal(trunc, 0);
  assert_string_equal(s.key, "a&b/\xE2\x98\xBA.jpg");
  assert_string_equal(s.etag, "abc");
  assert_string_equal(s.lm, "2026-01-02T03:04:05.000Z");
  assert_int_equal(s.size, 12345);
}

static void test_sigv4_verified(void **state) {
  /* The fault server recomputes SigV4 itself (servers/fault_http.py: sigv4_check). */
  char ep[64], body[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", g_port);
  setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "test/secret+KEY", 1);
  setenv("AWS_SESSION_TOKEN", "sess-token-123", 1);
  bd_fetch_opts o;
  fast_opts(&o);
  o.s3_endpoint = ep;
  o.s3_region = "eu-central-1";
  unsigned char *buf = NULL;
  size_t len = 0;
  bd_fetch_result info;
  bd_err err = {0};
  assert_int_equal(bd_fetch_one("s3://sigbkt/dir/a b+c.jpg", &o, &buf, &len, &info, &err), BD_OK);
  snprintf(body, sizeof body, "%.*s", (int)len, (const char *)buf);
  assert_string_equal(body, "sig-ok sess-token-123");
  free(buf);
  assert_int_equal(hits("sig-ok"), 1);
  setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret", 1);
  unsetenv("AWS_SESSION_TOKEN");
  assert_int_equal(bd_fetch_one("s3://sigbkt/k.jpg", &o, &buf, &len, &info, &err), BD_E_INVALID);
  assert_string_equal(err.msg, "fetch: HTTP 403 (SignatureDoesNotMatch)");
  assert_null(strstr(err.msg, "wrong-secret"));
  assert_int_equal(info.attempts, 1);
  assert_int_equal(hits("sig-bad"), 1);
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retry_500_then_ok),
      cmocka_unit_test(test_retry_exhausted),
      cmocka_unit_test(test_429_retry_after),
      cmocka_unit_test(test_404_permanent),
      cmocka_unit_test(test_stall_timeout),
      cmocka_unit_test(test_body_limit_drops_connection),
      cmocka_unit_test(test_truncated_retriable),
      cmocka_unit_test(test_refused_retriable),
      cmocka_unit_test(test_200_concurrent_bounded),
      cmocka_unit_test(test_shutdown_cancels),
      cmocka_unit_test(test_queue_full),
      cmocka_unit_test(test_file_scheme),
      cmocka_unit_test(test_file_scheme_encoded_names),
      cmocka_unit_test(test_allow_list_and_redaction),
      cmocka_unit_test(test_s3_ini_and_xml),
      cmocka_unit_test(test_s3_xml_fields),
      cmocka_unit_test(test_sigv4_verified),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
