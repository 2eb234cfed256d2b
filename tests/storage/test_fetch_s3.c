/* bd_fetch s3:// and bd_s3_list against s3rver (npm, tests/node) on loopback. The test
 * stores the objects itself with plain libcurl PUTs and checks what comes back against
 * what it stored. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "bd_fetch.h"
#include "bd_s3.h"
#include "test_fetch_spawn.h"

#define NMANY 1203

static pid_t g_pid = -1;
static int g_port;
static char *g_dir;

static int put(CURL *h, const char *enc_key, const char *body, size_t len) {
  char u[512];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/bdtest/%s", g_port, enc_key);
  curl_easy_setopt(h, CURLOPT_URL, u);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
  long code = 0;
  if (curl_easy_perform(h) != CURLE_OK) return -1;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  return code == 200 ? 0 : -1;
}

static size_t sink(char *p, size_t s, size_t n, void *u) {
  return s * n;
}

static int setup(void **state) {
  g_dir = bdt_tmpdir("s3");
  if (!g_dir) return -1;
  char script[1024];
  snprintf(script, sizeof script, "%s", bdt_src("tests/storage/servers/s3_server.js"));
  /* s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider. */
  char *argv[] = {"/usr/bin/node", "--openssl-legacy-provider", script, g_dir, "bdtest", NULL};
  g_pid = bdt_spawn(argv, 1, &g_port);
  if (g_pid <= 0) return -1;
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", g_port);
  setenv("AWS_ENDPOINT_URL", ep, 1);
  setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1); /* s3rver's built-in account */
  setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
  setenv("AWS_REGION", "us-east-1", 1);
  unsetenv("AWS_SESSION_TOKEN");
  unsetenv("AWS_ENDPOINT_URL_S3");
  CURL *h = curl_easy_init();
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
  int bad = put(h, "photos/a%20b%2Bc.jpg", "JPEGDATA\0\1\2", 11);
  char key[64];
  for (int i = 0; i < NMANY && !bad; i++) {
    snprintf(key, sizeof key, "many/k%05d", i);
    bad = put(h, key, key, strlen(key));
  }
  bad |= put(h, "other/x", "x", 1);
  curl_easy_cleanup(h);
  return bad;
}

static int teardown(void **state) {
  bdt_stop(g_pid, SIGTERM);
  bdt_rmrf(g_dir);
  free(g_dir);
  return 0;
}

static void test_signed_get(void **state) {
  unsigned char *buf = NULL;
  size_t len = 0;
  bd_fetch_result info;
  bd_err err = {0};
  assert_int_equal(bd_fetch_one("s3://bdtest/photos/a b+c.jpg", NULL, &buf, &len, &info, &err),
                   BD_OK);
  assert_int_equal(len, 11);
  assert_memory_equal(buf, "JPEGDATA\0\1\2", 11);
  assert_int_equal(info.http_code, 200);
  free(buf);
  assert_int_equal(bd_fetch_one("s3://bdtest/many/k01202", NULL, &buf, &len, &info, &err), BD_OK);
  assert_int_equal(len, 11);
  assert_memory_equal(buf, "many/k01202", 11);
  free(buf);
}

static void test_missing_key(void **state) {
  unsigned char *buf = NULL;
  size_t len = 0;
  bd_fetch_result info;
  bd_err err = {0};
  assert_int_equal(bd_fetch_one("s3://bdtest/photos/nope.jpg", NULL, &buf, &len, &info, &err),
                   BD_E_NOT_FOUND);
  assert_false(bd_status_retriable(err.code));
  assert_string_equal(err.msg, "fetch: HTTP 404 (NoSuchKey)");
  assert_int_equal(info.attempts, 1);
  assert_null(buf);
  assert_int_equal(bd_fetch_one("s3://nobucket/k", NULL, &buf, &len, &info, &err), BD_E_NOT_FOUND);
  assert_int_equal(bd_fetch_one("s3://bdtest/", NULL, &buf, &len, &info, &err), BD_E_INVALID);
  assert_int_equal(bd_fetch_one("s3://B_d/k", NULL, &buf, &len, &info, &err), BD_E_INVALID);
}

typedef struct seen {
  unsigned char hit[NMANY];
  int n, bad;
} seen;

static int on_obj(void *ctx, const bd_s3_object *o) {
  seen *s = ctx;
  int i;
  char tail;
  s->n++;
  if (sscanf(o->key, "many/k%5d%c", &i, &tail) != 1 || i < 0 || i >= NMANY) {
    s->bad++;
    return 0;
  }
  s->hit[i]++;
  /* the body of each object is its key, so the size is the key's length */
  if (o->size != strlen(o->key) || strlen(o->etag) != 32 || strlen(o->last_modified) < 20) s->bad++;
  return 0;
}

static void test_list_paginated(void **state) {
  int sizes[] = {1000, 500};
  for (int t = 0; t < 2; t++) {
    seen *s = calloc(1, sizeof *s);
    bd_err err = {0};
    assert_int_equal(bd_s3_list("s3://bdtest/many/", sizes[t], 0, NULL, on_obj, s, &err), BD_OK);
    assert_int_equal(s->n, NMANY); /* > one page of 1000: the continuation token worked */
    assert_int_equal(s->bad, 0);
    for (int i = 0; i < NMANY; i++) assert_int_equal(s->hit[i], 1);
    free(s);
  }
  seen *s = calloc(1, sizeof *s);
  bd_err err = {0};
  assert_int_equal(bd_s3_list("s3://bdtest/many/", 1000, 100, NULL, on_obj, s, &err), BD_E_LIMIT);
  assert_int_equal(s->n, 100);
  free(s);
  s = calloc(1, sizeof *s);
  assert_int_equal(bd_s3_list("s3://bdtest/photos/", 1000, 0, NULL, on_obj, s, &err), BD_OK);
  assert_int_equal(s->n, 1);
  assert_int_equal(s->bad, 1); /* not a many/ key: counted as foreign, proves the prefix filter */
  free(s);
}

static void test_url_mapping(void **state) {
  bd_s3_cfg c;
  bd_err err = {0};
  assert_int_equal(bd_s3_cfg_load(&c, "http://minio:9000/", "eu-west-1", -1, &err), BD_OK);
  char *u = bd_s3_http_url(&c, "bkt", "a b/c.jpg", NULL, &err);
  assert_string_equal(u, "http://minio:9000/bkt/a%20b/c.jpg");
  free(u);
  assert_int_equal(bd_s3_cfg_load(&c, "https://ceph.local", "eu-west-1", 0, &err), BD_OK);
  u = bd_s3_http_url(&c, "bkt", "k", NULL, &err);
  assert_string_equal(u, "https://bkt.ceph.local/k");
  free(u);
  unsetenv("AWS_ENDPOINT_URL");
  assert_int_equal(bd_s3_cfg_load(&c, NULL, "eu-west-1", -1, &err), BD_OK);
  u = bd_s3_http_url(&c, "bkt", "k", NULL, &err);
  assert_string_equal(u, "https://bkt.s3.eu-west-1.amazonaws.com/k");
  free(u);
  assert_int_equal(bd_s3_cfg_load(&c, NULL, "EU WEST", -1, &err), BD_E_INVALID);
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", g_port);
  setenv("AWS_ENDPOINT_URL", ep, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signed_get),
      cmocka_unit_test(test_missing_key),
      cmocka_unit_test(test_list_paginated),
      cmocka_unit_test(test_url_mapping),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
