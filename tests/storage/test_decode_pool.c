/* Tests of storage/bd_decode_pool.h: every photo and every bad image of the shared data
 * through the pool with 1 and 4 threads (queue and callback mode). Each job must
 * complete exactly once; the outcome must follow bad/EXPECTED.tsv (written by hand,
 * independent of our code); the pixels must equal a single-threaded bd_decode_image
 * of the same bytes (the pool must not change what is decoded). Plus backpressure,
 * close/drain, and destroy with jobs still queued (each completes once, cancelled). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bd_decode.h"
#include "bd_decode_pool.h"

#define MAX_FILES 32
#define ROUNDS 3

typedef struct ref_file {
  char rel[256];
  uint8_t *bytes;
  size_t len;
  int expect_ok; /* from EXPECTED.tsv for bad/, 1 for the photos */
  /* references, per opts variant: 0 = defaults, 1 = target 208x208 letterbox */
  bd_status st[2];
  bd_image im[2];
  bd_decode_info info[2];
} ref_file;

static char g_data[1024];
static ref_file g_files[MAX_FILES];
static int g_nfiles;

static const bd_decode_opts g_variants[2] = {
    {0}, {.target_w = 208, .target_h = 208, .fit = BD_DECODE_FIT_LETTERBOX}};

static uint8_t *slurp(const char *rel, size_t *len) {
  char p[1400];
  snprintf(p, sizeof p, "%s/%s", g_data, rel);
  FILE *f = fopen(p, "rb");
  if (!f) fail_msg("cannot open %s", p);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void add_file(const char *rel, int expect_ok) {
  assert_true(g_nfiles < MAX_FILES);
  ref_file *r = &g_files[g_nfiles++];
  snprintf(r->rel, sizeof r->rel, "%s", rel);
  r->bytes = slurp(rel, &r->len);
  r->expect_ok = expect_ok;
  for (int v = 0; v < 2; v++) {
    bd_err e = {0};
    r->st[v] = bd_decode_image(r->bytes, r->len, &g_variants[v], &r->im[v], &r->info[v], &e);
  }
}

static int setup_files(void **state) {
  (void)state;
  static const char *const photos[] = {"dog.jpg",    "eagle.jpg", "giraffe.jpg",
                                       "horses.jpg", "kite.jpg",  "person.jpg",
                                       "scream.jpg", "dog.png",   "horses_gray.jpg"};
  for (size_t i = 0; i < sizeof photos / sizeof *photos; i++) {
    char rel[256];
    snprintf(rel, sizeof rel, "images/%s", photos[i]);
    add_file(rel, 1);
  }
  char p[1400];
  snprintf(p, sizeof p, "%s/images/bad/EXPECTED.tsv", g_data);
  FILE *f = fopen(p, "r");
  if (!f) fail_msg("cannot open %s", p);
  char line[1024];
  int bad = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    char *file = strtok(line, "\t"), *expect = strtok(NULL, "\t");
    if (!file || !expect) fail_msg("bad EXPECTED.tsv line");
    char rel[256];
    snprintf(rel, sizeof rel, "images/bad/%s", file);
    add_file(rel, strcmp(expect, "decode") == 0);
    bad++;
  }
  fclose(f);
  assert_true(bad >= 5);
  /* The reference itself must agree with EXPECTED.tsv, else the comparison is moot. */
  for (int i = 0; i < g_nfiles; i++)
    for (int v = 0; v < 2; v++)
      if ((g_files[i].st[v] == BD_OK) != g_files[i].expect_ok)
        fail_msg("reference decode of %s disagrees with EXPECTED.tsv", g_files[i].rel);
  return 0;
}

static int teardown_files(void **state) {
  (void)state;
  for (int i = 0; i < g_nfiles; i++) {
    free(g_files[i].bytes);
    bd_image_free(&g_files[i].im[0]);
    bd_image_free(&g_files[i].im[1]);
  }
  g_nfiles = 0;
  return 0;
}

static uint8_t *copy_bytes(const ref_file *r) {
  uint8_t *b = malloc(r->len ? r->len : 1);
  assert_non_null(b);
  if (r->len) memcpy(b, r->bytes, r->len);
  return b;
}

/* id = (round * MAX_FILES + file) * 2 + variant */
static int njobs(void) {
  return ROUNDS * MAX_FILES * 2;
}

static void check_result(const bd_decode_result *res, int *seen) {
  uint64_t id = res->id;
  assert_true(id < (uint64_t)njobs());
  int v = (int)(id % 2), fi = (int)((id / 2) % MAX_FILES);
  assert_true(fi < g_nfiles);
  if (seen[id]++) fail_msg("job %llu completed twice", (unsigned long long)id);
  const ref_file *r = &g_files[fi];
  assert_ptr_equal(res->user, (void *)r);
  assert_int_equal(res->in_bytes, r->len);
  if (r->expect_ok) {
    if (res->status != BD_OK) fail_msg("%s: %s", r->rel, res->err.msg);
    assert_int_equal(res->image.w, r->im[v].w);
    assert_int_equal(res->image.h, r->im[v].h);
    assert_memory_equal(res->image.data, r->im[v].data, (size_t)r->im[v].w * r->im[v].h * 3);
    assert_int_equal(res->info.out_w, r->info[v].out_w);
    assert_int_equal(res->info.scale_denom, r->info[v].scale_denom);
    assert_int_equal(res->info.oriented_w, r->info[v].oriented_w);
  } else {
    if (res->status == BD_OK) fail_msg("%s decoded through the pool but must fail", r->rel);
    assert_int_equal(res->status, r->st[v]);
    assert_null(res->image.data);
    assert_true(strncmp(res->err.msg, "decode", 6) == 0);
    assert_null(strchr(res->err.msg, '\n'));
  }
}

static void submit_all(bd_decode_pool *p, int (*pump)(bd_decode_pool *, int *), int *seen) {
  for (int round = 0; round < ROUNDS; round++)
    for (int fi = 0; fi < g_nfiles; fi++)
      for (int v = 0; v < 2; v++) {
        uint64_t id = (uint64_t)((round * MAX_FILES + fi) * 2 + v);
        uint8_t *b = copy_bytes(&g_files[fi]);
        bd_err e = {0};
        bd_status st;
        /* Finite waits: in queue mode this thread also polls (see the header). */
        while ((st = bd_decode_pool_submit(p, id, b, g_files[fi].len, &g_variants[v], &g_files[fi],
                                           0.05, &e)) == BD_E_UNAVAILABLE) {
          if (pump) pump(p, seen);
        }
        if (st != BD_OK) fail_msg("submit: %s", e.msg);
      }
}

static int pump_poll(bd_decode_pool *p, int *seen) {
  bd_decode_result r;
  bd_err e = {0};
  int n = 0;
  while (bd_decode_pool_poll(p, 0, &r, &e) == BD_OK) {
    check_result(&r, seen);
    bd_decode_result_clear(&r);
    n++;
  }
  return n;
}

static void expect_all_once(const int *seen) {
  int total = 0;
  for (int round = 0; round < ROUNDS; round++)
    for (int fi = 0; fi < g_nfiles; fi++)
      for (int v = 0; v < 2; v++) {
        int id = (round * MAX_FILES + fi) * 2 + v;
        if (seen[id] != 1)
          fail_msg("job %d (%s) completed %d times", id, g_files[fi].rel, seen[id]);
        total++;
      }
  for (int id = 0; id < njobs(); id++) total -= seen[id];
  assert_int_equal(total, 0); /* nothing completed that was not submitted */
}

static void expect_stats(bd_decode_pool *p, int threads) {
  int ok = 0, bad = 0;
  uint64_t pix = 0;
  for (int fi = 0; fi < g_nfiles; fi++)
    for (int v = 0; v < 2; v++) {
      if (g_files[fi].expect_ok) {
        ok++;
        pix += (uint64_t)g_files[fi].im[v].w * g_files[fi].im[v].h;
      } else {
        bad++;
      }
    }
  bd_decode_pool_stats s;
  bd_decode_pool_stats_get(p, &s);
  assert_int_equal(s.threads, threads);
  assert_int_equal(s.submitted, (uint64_t)ROUNDS * g_nfiles * 2);
  assert_int_equal(s.decoded, (uint64_t)ROUNDS * ok);
  assert_int_equal(s.failed, (uint64_t)ROUNDS * bad);
  assert_int_equal(s.cancelled, 0);
  assert_int_equal(s.out_pixels, ROUNDS * pix);
  assert_int_equal(s.outstanding, 0);
  assert_true(s.busy_s > 0);
  assert_true(s.wall_s > 0);
}

static void run_queue_mode(int threads) {
  bd_decode_pool_opts o = {.threads = threads, .queue_max = 5};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, NULL, NULL, &e);
  if (!p) fail_msg("pool: %s", e.msg);
  int *seen = calloc((size_t)njobs(), sizeof *seen);
  assert_non_null(seen);
  submit_all(p, pump_poll, seen);
  bd_decode_pool_close(p);
  bd_decode_result r;
  bd_status st;
  while ((st = bd_decode_pool_poll(p, 10.0, &r, &e)) == BD_OK) {
    check_result(&r, seen);
    bd_decode_result_clear(&r);
  }
  assert_int_equal(st, BD_E_CANCELLED); /* end of stream, not a timeout */
  expect_all_once(seen);
  expect_stats(p, threads);
  assert_int_equal(bd_decode_pool_submit(p, 1, NULL, 0, NULL, NULL, 0, &e), BD_E_CANCELLED);
  free(seen);
  bd_decode_pool_destroy(p);
}

static void test_queue_mode_1(void **state) {
  (void)state;
  run_queue_mode(1);
}
static void test_queue_mode_4(void **state) {
  (void)state;
  run_queue_mode(4);
}

/* ---- callback mode ---- */
typedef struct cb_state {
  pthread_mutex_t mu;
  int *seen;
  int taken; /* images the callback kept */
  bd_image kept;
} cb_state;

static void cb_check(void *ctx, bd_decode_result *res) {
  cb_state *s = ctx;
  pthread_mutex_lock(&s->mu);
  check_result(res, s->seen);
  /* Take one image: the pool must then not free it (ASan catches a double free). */
  if (res->status == BD_OK && !s->kept.data) {
    s->kept = res->image;
    res->image.data = NULL;
    s->taken++;
  }
  pthread_mutex_unlock(&s->mu);
}

static void run_callback_mode(int threads) {
  cb_state s = {.seen = calloc((size_t)njobs(), sizeof(int))};
  assert_non_null(s.seen);
  pthread_mutex_init(&s.mu, NULL);
  bd_decode_pool_opts o = {.threads = threads, .queue_max = 3};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, cb_check, &s, &e);
  if (!p) fail_msg("pool: %s", e.msg);
  submit_all(p, NULL, s.seen);
  assert_int_equal(bd_decode_pool_drain(p, 60.0), BD_OK);
  expect_all_once(s.seen);
  expect_stats(p, threads);
  bd_decode_result r;
  assert_int_equal(bd_decode_pool_poll(p, 0, &r, &e), BD_E_INVALID);
  bd_decode_pool_destroy(p);
  assert_int_equal(s.taken, 1);
  assert_non_null(s.kept.data);
  bd_image_free(&s.kept);
  pthread_mutex_destroy(&s.mu);
  free(s.seen);
}

static void test_callback_mode_1(void **state) {
  (void)state;
  run_callback_mode(1);
}
static void test_callback_mode_4(void **state) {
  (void)state;
  run_callback_mode(4);
}

/* ---- backpressure: exactly queue_max accepted while nobody polls ---- */
static void test_backpressure(void **state) {
  (void)state;
  bd_decode_pool_opts o = {.threads = 2, .queue_max = 3};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, NULL, NULL, &e);
  assert_non_null(p);
  const ref_file *r = &g_files[0];
  for (int i = 0; i < 3; i++) {
    uint8_t *b = copy_bytes(r);
    assert_int_equal(bd_decode_pool_submit(p, (uint64_t)i, b, r->len, NULL, NULL, 0, &e), BD_OK);
  }
  uint8_t *b = copy_bytes(r);
  /* The decodes finish, but their results are not collected: still outstanding. */
  assert_int_equal(bd_decode_pool_drain(p, 30.0), BD_OK);
  assert_int_equal(bd_decode_pool_submit(p, 3, b, r->len, NULL, NULL, 0, &e), BD_E_UNAVAILABLE);
  assert_non_null(strstr(e.msg, "queue full"));
  assert_int_equal(bd_decode_pool_submit(p, 3, b, r->len, NULL, NULL, 0.05, &e), BD_E_UNAVAILABLE);
  bd_decode_pool_stats s;
  bd_decode_pool_stats_get(p, &s);
  assert_int_equal(s.outstanding, 3);
  bd_decode_result res;
  assert_int_equal(bd_decode_pool_poll(p, 5.0, &res, &e), BD_OK);
  bd_decode_result_clear(&res);
  assert_int_equal(bd_decode_pool_submit(p, 3, b, r->len, NULL, NULL, 0, &e), BD_OK);
  /* Results left on the completion queue are freed by destroy (ASan: no leak). */
  bd_decode_pool_destroy(p);
}

/* ---- destroy with jobs queued: each completes once, the queued ones cancelled ---- */
typedef struct block_state {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int release, entered;
  int ok, cancelled, other, calls;
} block_state;

static void cb_block(void *ctx, bd_decode_result *res) {
  block_state *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->calls++;
  if (res->status == BD_OK)
    s->ok++;
  else if (res->status == BD_E_CANCELLED)
    s->cancelled++;
  else
    s->other++;
  if (res->id == 0) { /* hold the only thread until the test has started destroying */
    s->entered = 1;
    pthread_cond_broadcast(&s->cv);
    while (!s->release) pthread_cond_wait(&s->cv, &s->mu);
  }
  pthread_mutex_unlock(&s->mu);
}

typedef struct releaser_arg {
  block_state *s;
  bd_decode_pool *p;
} releaser_arg;

/* Releases job 0's callback once destroy has begun, which a submit shows by failing with
 * "closed" (destroy sets its cancel flag before it closes). Racing destroy is outside
 * the API contract, but safe here: destroy cannot free the pool before this release,
 * since it joins the thread held in the callback. A fixed sleep instead would be flaky
 * on a loaded machine. */
static void *releaser(void *arg) {
  releaser_arg *a = arg;
  bd_err e = {0};
  for (int i = 0; i < 20000; i++) { /* at most ~20 s */
    /* The pool is full (queue_max = 11 jobs outstanding): before destroy this is
     * refused as "queue full" and the byte stays ours; were it accepted, the job
     * count below would catch it. */
    uint8_t *byte = calloc(1, 1);
    bd_status st = bd_decode_pool_submit(a->p, 1000, byte, 1, NULL, NULL, 0, &e);
    if (st != BD_OK) free(byte);
    if (st == BD_E_CANCELLED) break;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  pthread_mutex_lock(&a->s->mu);
  a->s->release = 1;
  pthread_cond_broadcast(&a->s->cv);
  pthread_mutex_unlock(&a->s->mu);
  return NULL;
}

static void test_destroy_with_queued(void **state) {
  (void)state;
  block_state s = {0};
  pthread_mutex_init(&s.mu, NULL);
  pthread_cond_init(&s.cv, NULL);
  bd_decode_pool_opts o = {.threads = 1, .queue_max = 11};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, cb_block, &s, &e);
  assert_non_null(p);
  const ref_file *r = &g_files[0];
  for (int i = 0; i < 11; i++) {
    uint8_t *b = copy_bytes(r);
    assert_int_equal(bd_decode_pool_submit(p, (uint64_t)i, b, r->len, NULL, NULL, 1.0, &e), BD_OK);
    if (i == 0) { /* the thread is inside job 0's callback: the rest stay queued */
      pthread_mutex_lock(&s.mu);
      while (!s.entered) pthread_cond_wait(&s.cv, &s.mu);
      pthread_mutex_unlock(&s.mu);
    }
  }
  bd_decode_pool_stats st;
  bd_decode_pool_stats_get(p, &st);
  assert_int_equal(st.queued, 10);
  pthread_t t;
  releaser_arg ra = {&s, p};
  assert_int_equal(pthread_create(&t, NULL, releaser, &ra), 0);
  bd_decode_pool_destroy(p);
  pthread_join(t, NULL);
  assert_int_equal(s.calls, 11);
  assert_int_equal(s.ok, 1);
  assert_int_equal(s.cancelled, 10);
  assert_int_equal(s.other, 0);
  pthread_cond_destroy(&s.cv);
  pthread_mutex_destroy(&s.mu);
}

/* Queue mode: destroy with jobs queued and results never polled; ASan checks leaks. */
static void test_destroy_queue_mode_unpolled(void **state) {
  (void)state;
  bd_decode_pool_opts o = {.threads = 4, .queue_max = 64};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, NULL, NULL, &e);
  assert_non_null(p);
  for (int i = 0; i < 40; i++) {
    const ref_file *r = &g_files[i % g_nfiles];
    uint8_t *b = copy_bytes(r);
    assert_int_equal(bd_decode_pool_submit(p, (uint64_t)i, b, r->len, NULL, NULL, 0, &e), BD_OK);
  }
  bd_decode_pool_destroy(p);
}

/* close: queued jobs are still decoded (not cancelled), later submits refused. */
static void test_close_drains(void **state) {
  (void)state;
  bd_decode_pool_opts o = {.threads = 1, .queue_max = 32};
  bd_err e = {0};
  bd_decode_pool *p = bd_decode_pool_new(&o, NULL, NULL, &e);
  assert_non_null(p);
  const ref_file *r = &g_files[0];
  for (int i = 0; i < 20; i++)
    assert_int_equal(
        bd_decode_pool_submit(p, (uint64_t)i, copy_bytes(r), r->len, NULL, NULL, 0, &e), BD_OK);
  bd_decode_pool_close(p);
  uint8_t *b = copy_bytes(r);
  assert_int_equal(bd_decode_pool_submit(p, 99, b, r->len, NULL, NULL, 0, &e), BD_E_CANCELLED);
  free(b); /* refused: still ours */
  int n = 0;
  bd_decode_result res;
  while (bd_decode_pool_poll(p, 10.0, &res, &e) == BD_OK) {
    assert_int_equal(res.status, BD_OK);
    assert_int_equal(res.id, (uint64_t)n); /* one thread: FIFO */
    bd_decode_result_clear(&res);
    n++;
  }
  assert_int_equal(n, 20);
  bd_decode_pool_destroy(p);
}

static void test_args(void **state) {
  (void)state;
  bd_err e = {0};
  bd_decode_pool_opts o = {.threads = -1};
  assert_null(bd_decode_pool_new(&o, NULL, NULL, &e));
  assert_int_equal(e.code, BD_E_LIMIT);
  o = (bd_decode_pool_opts){.threads = BD_DECODE_POOL_MAX_THREADS + 1};
  assert_null(bd_decode_pool_new(&o, NULL, NULL, &e));
  o = (bd_decode_pool_opts){.queue_max = BD_DECODE_POOL_MAX_QUEUE + 1};
  assert_null(bd_decode_pool_new(&o, NULL, NULL, &e));
  bd_decode_pool *p = bd_decode_pool_new(NULL, NULL, NULL, &e); /* defaults: one per core */
  assert_non_null(p);
  bd_decode_pool_stats s;
  bd_decode_pool_stats_get(p, &s);
  assert_true(s.threads >= 1);
  assert_int_equal(bd_decode_pool_submit(p, 0, NULL, 5, NULL, NULL, 0, &e), BD_E_INVALID);
  uint8_t one = 0;
  assert_int_equal(bd_decode_pool_submit(p, 0, &one, (size_t)BD_DECODE_POOL_MAX_JOB_BYTES + 1, NULL,
                                         NULL, 0, &e),
                   BD_E_LIMIT);
  bd_decode_result res;
  assert_int_equal(bd_decode_pool_poll(p, 0, &res, &e), BD_E_TIMEOUT);
  bd_decode_pool_destroy(p);
  bd_decode_pool_destroy(NULL);
  bd_decode_result_clear(NULL);
}

int main(void) {
  const char *d = getenv("BD_TEST_DATA");
  snprintf(g_data, sizeof g_data, "%s", d ? d : "../shared/data");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_args),
      cmocka_unit_test(test_queue_mode_1),
      cmocka_unit_test(test_queue_mode_4),
      cmocka_unit_test(test_callback_mode_1),
      cmocka_unit_test(test_callback_mode_4),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_close_drains),
      cmocka_unit_test(test_destroy_with_queued),
      cmocka_unit_test(test_destroy_queue_mode_unpolled),
  };
  return cmocka_run_group_tests(tests, setup_files, teardown_files);
}
