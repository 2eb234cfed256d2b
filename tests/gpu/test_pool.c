/* bd_pool with cpu instances on the shipped yolox_nano.onnx ($BD_POOL_MODEL: another;
 * built as test_pool_emu with TEST_POOL_EMU, the cuda-instance test over the emulated
 * device of cuda_emu.c: two engines sharing one weights blob, two batches in flight). The reference is a bd_engine
 * of its own running bd_engine_detect on the same images (the photo from BD_TEST_PPM,
 * decoded by djpeg at configure time, plus synthetic pictures): a pool of one instance,
 * and a batch split over two instances, must give the same detections. Then the queue's
 * contract: every batch completes exactly once under concurrent submit/poll, the
 * back-pressure of queue_cap, shutdown with batches queued (cancel and drain), destroy
 * with results never polled (ASan checks the leaks), device string parsing. The on_result
 * hook: called once per result, only once that result can be polled (a hook that polls
 * one result itself must always find one, and finds them all), on the shutdown path too;
 * a caller sleeping on a bd_notify signalled by it never misses a result. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bd_config.h"
#include "bd_notify.h"
#include "bd_pool.h"
#include "test_images.h"

enum { NIMG = 6 };

static char model[1024];
static bd_image imgs[NIMG];
static const bd_image *ptrs[NIMG];
static bd_detect_params params[NIMG];
static bd_detections ref[NIMG];
static bd_status ref_st[NIMG];

static int setup(void **s) {
  (void)s;
  if (!tim_read_ppm(getenv("BD_TEST_PPM"), &imgs[0])) tim_synth(&imgs[0], 640, 480, 0);
  tim_synth(&imgs[1], 320, 240, 1);
  tim_synth(&imgs[2], 100, 300, 2);
  imgs[3] = imgs[0]; /* shares pixels: same photo, other thresholds */
  tim_synth(&imgs[5], 500, 375, 3);
  for (int i = 0; i < NIMG; i++) {
    ptrs[i] = i == 4 ? NULL : &imgs[i]; /* a missing image: status BD_E_INVALID */
    params[i] = (bd_detect_params){-1.f, -1.f, 0};
  }
  params[3] = (bd_detect_params){0.05f, 0.6f, 7};
  params[5] = (bd_detect_params){0.01f, 0.45f, 50};
  /* The reference: one engine, bd_engine_detect on the whole batch. */
  bd_engine *e = NULL;
  bd_err err;
  bd_engine_opts o = {.device = "cpu", .threads = 2, .max_batch = 4};
  if (bd_engine_load(model, &o, &e, &err) != BD_OK) return -1;
  bd_status st = bd_engine_detect(e, NIMG, ptrs, params, ref, ref_st, &err);
  bd_engine_destroy(e);
  int total = 0;
  for (int i = 0; i < NIMG; i++) total += ref[i].n;
  printf("reference: %d detections over %d images (photo: %s)\n", total, NIMG,
         getenv("BD_TEST_PPM") ? getenv("BD_TEST_PPM") : "synthetic");
  return st == BD_OK && total > 0 ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  for (int i = 0; i < NIMG; i++) {
    bd_detections_free(&ref[i]);
    if (i != 3) bd_image_free(&imgs[i]);
  }
  return 0;
}

/* Image i of a result against the reference image k. exact: bit-identical, when the
 * pool ran the image in the same batch bucket as the reference engine (same thread
 * count and max_batch everywhere here); else within 1e-5 on scores and 1e-3 px on
 * boxes: the cpu backend's sums depend on the bucket (GEMM blocking), ~1e-7 relative. */
static void same_dets_tol(const bd_pool_result *r, int i, int k, int exact) {
  const float st = exact ? 0.f : 1e-5f, bt = exact ? 0.f : 1e-3f;
  assert_int_equal(r->status[i], ref_st[k]);
  assert_int_equal(r->dets[i].n, ref[k].n);
  for (int j = 0; j < ref[k].n; j++) {
    const bd_det *a = &r->dets[i].det[j], *b = &ref[k].det[j];
    int ok = a->cls == b->cls && fabsf(a->score - b->score) <= st && fabsf(a->x1 - b->x1) <= bt &&
             fabsf(a->y1 - b->y1) <= bt && fabsf(a->x2 - b->x2) <= bt && fabsf(a->y2 - b->y2) <= bt;
    if (!ok)
      printf(
          "image %d det %d: got c%d %.9g (%.9g %.9g %.9g %.9g) want c%d %.9g (%.9g %.9g %.9g "
          "%.9g)\n",
          k, j, a->cls, a->score, a->x1, a->y1, a->x2, a->y2, b->cls, b->score, b->x1, b->y1, b->x2,
          b->y2);
    assert_true(ok);
  }
}

static void same_dets(const bd_pool_result *r, int i, int k) {
  same_dets_tol(r, i, k, 1);
}

static bd_pool *new_pool(const char *devs, int per, int cap) {
  bd_pool_opts o = {.devices = devs, .instances_per_device = per, .queue_cap = cap};
  o.engine.max_batch = 4;
  o.engine.threads = 2;
  bd_pool *p = NULL;
  bd_err err;
  bd_status st = bd_pool_new(model, &o, &p, &err);
  if (st != BD_OK) print_error("bd_pool_new: %s\n", err.msg);
  assert_int_equal(st, BD_OK);
  return p;
}

static void test_one_instance(void **s) {
  (void)s;
  bd_pool *p = new_pool("cpu:2", 1, 0);
  assert_int_equal(bd_pool_num_instances(p), 1);
  assert_string_equal(bd_pool_instance_name(p, 0), "cpu");
  assert_int_equal(bd_pool_family(p)->family, BD_FAMILY_YOLOX);
  bd_err err;
  assert_int_equal(bd_pool_submit(p, NIMG, ptrs, params, 42, 0, &err), BD_OK);
  bd_pool_result r;
  assert_int_equal(bd_pool_poll(p, 120000, &r, &err), BD_OK);
  assert_int_equal(r.tag, 42);
  assert_int_equal(r.n, NIMG);
  assert_int_equal(r.batch_status, BD_OK);
  assert_string_equal(r.instance, "cpu");
  assert_true(r.run_s > 0 && r.queue_s >= 0);
  for (int i = 0; i < NIMG; i++) same_dets(&r, i, i);
  assert_int_equal(r.status[4], BD_E_INVALID);
  bd_pool_result_free(&r);
  bd_pool_stats st[2];
  assert_int_equal(bd_pool_get_stats(p, st, 2), 1);
  assert_int_equal(st[0].batches, 1);
  assert_int_equal(st[0].images, NIMG);
  assert_true(st[0].busy_s > 0 && st[0].img_per_s > 0);
  printf("cpu:2: %.2f img/s\n", st[0].img_per_s);
  assert_int_equal(bd_pool_in_flight(p), 0);
  assert_int_equal(bd_pool_poll(p, 0, &r, &err), BD_E_TIMEOUT);
  bd_pool_destroy(p);
}

static void test_split_two_instances(void **s) {
  (void)s;
  bd_pool *p = new_pool("cpu:2", 2, 0);
  assert_int_equal(bd_pool_num_instances(p), 2);
  assert_string_equal(bd_pool_instance_name(p, 1), "cpu#1");
  bd_err err;
  const int half = NIMG / 2;
  assert_int_equal(bd_pool_submit(p, half, ptrs, params, 0, 0, &err), BD_OK);
  assert_int_equal(bd_pool_submit(p, NIMG - half, ptrs + half, params + half, 1, 0, &err), BD_OK);
  int seen[2] = {0, 0};
  for (int k = 0; k < 2; k++) {
    bd_pool_result r;
    assert_int_equal(bd_pool_poll(p, 120000, &r, &err), BD_OK);
    assert_true(r.tag < 2);
    seen[r.tag]++;
    assert_int_equal(r.batch_status, BD_OK);
    printf("tag %d ran on %s (%.3f s)\n", (int)r.tag, r.instance, r.run_s);
    /* The halves run in other buckets than the reference's 4 + 1 rows. */
    for (int i = 0; i < r.n; i++) same_dets_tol(&r, i, (int)r.tag * half + i, 0);
    bd_pool_result_free(&r);
  }
  assert_true(seen[0] == 1 && seen[1] == 1);
  bd_pool_stats st[2];
  assert_int_equal(bd_pool_get_stats(p, st, 2), 2);
  assert_int_equal(st[0].images + st[1].images, NIMG);
  assert_int_equal(st[0].batches + st[1].batches, 2);
  bd_pool_destroy(p);
}

enum { NB = 12 };

static void *submitter(void *arg) {
  bd_pool *p = arg;
  for (int b = 0; b < NB; b++) {
    bd_err err;
    int n = 1 + b % 2;
    /* Waits for room: queue_cap is smaller than NB. */
    if (bd_pool_submit(p, n, ptrs + (b % 2 ? 1 : 2), NULL, (uint64_t)b, 60000, &err) != BD_OK)
      return (void *)1;
  }
  return NULL;
}

static void test_every_batch_once(void **s) {
  (void)s;
  bd_pool *p = new_pool("cpu:2", 2, 3);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, submitter, p), 0);
  int seen[NB] = {0}, got = 0, max_inflight = 0;
  while (got < NB) {
    bd_pool_result r;
    bd_err err;
    int inf = bd_pool_in_flight(p);
    if (inf > max_inflight) max_inflight = inf;
    bd_status st = bd_pool_poll(p, 60000, &r, &err);
    assert_int_equal(st, BD_OK);
    assert_true(r.tag < NB);
    seen[r.tag]++;
    got++;
    assert_int_equal(r.batch_status, BD_OK);
    assert_int_equal(r.n, 1 + (int)r.tag % 2);
    bd_pool_result_free(&r);
  }
  void *rv;
  pthread_join(th, &rv);
  assert_null(rv);
  for (int b = 0; b < NB; b++) assert_int_equal(seen[b], 1);
  assert_true(max_inflight <= 3);
  assert_int_equal(bd_pool_in_flight(p), 0);
  bd_pool_stats st[2];
  bd_pool_get_stats(p, st, 2);
  assert_int_equal(st[0].batches + st[1].batches, NB);
  assert_int_equal(st[0].images + st[1].images, NB / 2 * 3);
  printf("%s %lld batches, %s %lld batches\n", st[0].name, (long long)st[0].batches, st[1].name,
         (long long)st[1].batches);
  bd_pool_destroy(p);
}

static void test_backpressure(void **s) {
  (void)s;
  bd_pool *p = new_pool("cpu:2", 1, 1);
  bd_err err;
  assert_int_equal(bd_pool_submit(p, 1, ptrs + 1, NULL, 1, 0, &err), BD_OK);
  assert_int_equal(bd_pool_submit(p, 1, ptrs + 1, NULL, 2, 0, &err), BD_E_UNAVAILABLE);
  assert_true(bd_status_retriable(err.code));
  assert_int_equal(bd_pool_submit(p, 1, ptrs + 1, NULL, 2, 20, &err), BD_E_UNAVAILABLE);
  bd_pool_result r;
  assert_int_equal(bd_pool_poll(p, 60000, &r, &err), BD_OK);
  bd_pool_result_free(&r);
  assert_int_equal(bd_pool_submit(p, 1, ptrs + 1, NULL, 3, 0, &err), BD_OK);
  assert_int_equal(bd_pool_submit(p, 0, ptrs, NULL, 3, 0, &err), BD_E_INVALID);
  assert_int_equal(bd_pool_submit(p, BD_POOL_MAX_BATCH + 1, ptrs, NULL, 3, 0, &err), BD_E_LIMIT);
  bd_pool_destroy(p); /* one result never polled: freed by destroy */
}

static void shutdown_queued(int cancel) {
  bd_pool *p = new_pool("cpu:2", 1, 8);
  bd_err err;
  for (int b = 0; b < 6; b++)
    assert_int_equal(bd_pool_submit(p, 2, ptrs, NULL, (uint64_t)b, 0, &err), BD_OK);
  bd_pool_shutdown(p, cancel);
  assert_int_equal(bd_pool_submit(p, 1, ptrs, NULL, 9, 0, &err), BD_E_CANCELLED);
  int seen[6] = {0}, ok = 0, cancelled = 0;
  bd_pool_result r;
  bd_status st;
  while ((st = bd_pool_poll(p, 1000, &r, &err)) == BD_OK) {
    assert_true(r.tag < 6);
    seen[r.tag]++;
    if (r.batch_status == BD_OK) {
      ok++;
      for (int i = 0; i < 2; i++) same_dets(&r, i, i);
    } else {
      assert_int_equal(r.batch_status, BD_E_CANCELLED);
      assert_null(r.dets);
      cancelled++;
    }
    bd_pool_result_free(&r);
  }
  assert_int_equal(st, BD_E_CANCELLED); /* nothing in flight any more */
  for (int b = 0; b < 6; b++) assert_int_equal(seen[b], 1);
  printf("shutdown(cancel=%d): %d done, %d cancelled\n", cancel, ok, cancelled);
  if (cancel)
    assert_true(cancelled >= 4); /* one instance can have started one batch at most... */
  else
    assert_int_equal(ok, 6);
  bd_pool_shutdown(p, cancel); /* idempotent */
  bd_pool_destroy(p);
}

static void test_shutdown_cancel(void **s) {
  (void)s;
  shutdown_queued(1);
}

static void test_shutdown_drain(void **s) {
  (void)s;
  shutdown_queued(0);
}

static void test_destroy_busy(void **s) {
  (void)s;
  bd_pool *p = new_pool("cpu:2", 2, 8);
  bd_err err;
  for (int b = 0; b < 5; b++)
    assert_int_equal(bd_pool_submit(p, 1, ptrs + 1, NULL, (uint64_t)b, 0, &err), BD_OK);
  bd_pool_destroy(p);
  bd_pool_destroy(NULL);
}

/* on_result hooks. hook_poll polls one result itself each time it is called: it finds
 * one only if the result was pollable before the hook ran, and every result is taken
 * only if the hook ran once per result. */
typedef struct hook_ctx {
  _Atomic(bd_pool *) p;
  bd_notify *n;
  atomic_int calls, polled, missed;
  atomic_int seen[NB];
} hook_ctx;

static void hook_count(void *arg) {
  hook_ctx *h = arg;
  atomic_fetch_add(&h->calls, 1);
  bd_notify_signal(h->n);
}

static void hook_poll(void *arg) {
  hook_ctx *h = arg;
  atomic_fetch_add(&h->calls, 1);
  bd_pool_result r;
  bd_err err;
  if (bd_pool_poll(atomic_load(&h->p), 0, &r, &err) != BD_OK) {
    atomic_fetch_add(&h->missed, 1);
    return;
  }
  if (r.tag < NB) atomic_fetch_add(&h->seen[r.tag], 1);
  atomic_fetch_add(&h->polled, 1);
  bd_pool_result_free(&r);
}

static bd_pool *new_hooked_pool(int per, int cap, void (*fn)(void *), hook_ctx *h) {
  bd_pool_opts o = {.devices = "cpu:2", .instances_per_device = per, .queue_cap = cap};
  o.engine.max_batch = 4;
  o.engine.threads = 2;
  o.on_result = fn;
  o.on_result_arg = h;
  bd_pool *p = NULL;
  bd_err err;
  bd_status st = bd_pool_new(model, &o, &p, &err);
  if (st != BD_OK) print_error("bd_pool_new: %s\n", err.msg);
  assert_int_equal(st, BD_OK);
  atomic_store(&h->p, p);
  return p;
}

/* The executor's pattern: read the sequence, poll without waiting, sleep on the notifier
 * when nothing was there. A hook call missing (or coming before the result is pollable)
 * leaves the sleeper waiting into its 60 s limit. */
static void test_on_result_wakes_poller(void **s) {
  (void)s;
  hook_ctx h;
  memset(&h, 0, sizeof h);
  assert_int_equal(bd_notify_new(&h.n, NULL), BD_OK);
  bd_pool *p = new_hooked_pool(2, 3, hook_count, &h);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, submitter, p), 0);
  int seen[NB] = {0}, got = 0, waits = 0, timeouts = 0;
  while (got < NB && timeouts == 0) {
    uint64_t seq = bd_notify_seq(h.n);
    bd_pool_result r;
    bd_err err;
    if (bd_pool_poll(p, 0, &r, &err) == BD_OK) {
      assert_true(r.tag < NB);
      seen[r.tag]++;
      got++;
      bd_pool_result_free(&r);
      continue;
    }
    waits++;
    if (bd_notify_wait(h.n, seq, 60.0) != BD_OK) timeouts++;
  }
  void *rv;
  pthread_join(th, &rv);
  assert_null(rv);
  bd_pool_destroy(p); /* joins the instances: every hook call is in */
  printf("on_result: %d results, %d sleeps, %d calls\n", got, waits, atomic_load(&h.calls));
  assert_int_equal(timeouts, 0);
  assert_int_equal(got, NB);
  for (int b = 0; b < NB; b++) assert_int_equal(seen[b], 1);
  assert_int_equal(atomic_load(&h.calls), NB);
  assert_int_equal(bd_notify_seq(h.n), NB);
  bd_notify_destroy(h.n);
}

/* Results taken by the hook alone, two instances racing; then batches cancelled by
 * shutdown, whose hook calls come from the thread in bd_pool_shutdown. */
static void test_on_result_once(void **s) {
  (void)s;
  hook_ctx h;
  memset(&h, 0, sizeof h);
  bd_pool *p = new_hooked_pool(2, 3, hook_poll, &h);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, submitter, p), 0);
  void *rv;
  pthread_join(th, &rv); /* returns once the hook made room for the last batch */
  assert_null(rv);
  double t0 = bd_now();
  while (atomic_load(&h.calls) < NB && bd_now() - t0 < 120) {
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  bd_pool_destroy(p);
  assert_int_equal(atomic_load(&h.calls), NB);
  assert_int_equal(atomic_load(&h.missed), 0);
  assert_int_equal(atomic_load(&h.polled), NB);
  for (int b = 0; b < NB; b++) assert_int_equal(atomic_load(&h.seen[b]), 1);

  memset(&h, 0, sizeof h);
  assert_int_equal(bd_notify_new(&h.n, NULL), BD_OK);
  p = new_hooked_pool(1, 8, hook_count, &h);
  bd_err err;
  for (int b = 0; b < 6; b++)
    assert_int_equal(bd_pool_submit(p, 2, ptrs, NULL, (uint64_t)b, 0, &err), BD_OK);
  bd_pool_shutdown(p, 1); /* every instance thread has exited when it returns */
  int results = 0, cancelled = 0;
  bd_pool_result r;
  while (bd_pool_poll(p, 1000, &r, &err) == BD_OK) {
    results++;
    cancelled += r.batch_status == BD_E_CANCELLED;
    bd_pool_result_free(&r);
  }
  printf("on_result after shutdown: %d results (%d cancelled), %d calls\n", results, cancelled,
         atomic_load(&h.calls));
  assert_int_equal(results, 6);
  assert_true(cancelled >= 4);
  assert_int_equal(atomic_load(&h.calls), 6);
  bd_pool_destroy(p);
  assert_int_equal(atomic_load(&h.calls), 6);
  bd_notify_destroy(h.n);
}

/* cuda instances (only where a GPU is visible): every GPU with two instances each, the
 * batch split in three; each image against a cuda engine of its own within the
 * tolerance of two runs of the same network (same detections, scores 1e-3, boxes 0.5 px:
 * other buckets, other kernels' summation order). Also proves that each instance's
 * engine ran on its own thread's device. */
static void test_cuda_instances(void **s) {
  (void)s;
  bd_pool_opts o = {.devices = "cuda", .instances_per_device = 2};
  o.engine.max_batch = 4;
  bd_pool *p = NULL;
  bd_err err;
  bd_status st = bd_pool_new(model, &o, &p, &err);
  if (st == BD_E_DEVICE || st == BD_E_UNSUPPORTED) {
    printf("cuda instances not checked: %s\n", err.msg);
    return;
  }
  assert_int_equal(st, BD_OK);
  bd_engine *e = NULL;
  bd_engine_opts eo = {.device = "cuda:0", .max_batch = 4};
  assert_int_equal(bd_engine_load(model, &eo, &e, &err), BD_OK);
  bd_detections want[NIMG];
  bd_status wst[NIMG];
  assert_int_equal(bd_engine_detect(e, NIMG, ptrs, params, want, wst, &err), BD_OK);
  const int cut[4] = {0, 2, 4, NIMG};
  for (int k = 0; k < 3; k++)
    assert_int_equal(bd_pool_submit(p, cut[k + 1] - cut[k], ptrs + cut[k], params + cut[k],
                                    (uint64_t)k, 0, &err),
                     BD_OK);
  for (int k = 0; k < 3; k++) {
    bd_pool_result r;
    assert_int_equal(bd_pool_poll(p, 120000, &r, &err), BD_OK);
    assert_int_equal(r.batch_status, BD_OK);
    assert_non_null(strstr(r.instance, "cuda:"));
    printf("tag %d on %s: %.4f s\n", (int)r.tag, r.instance, r.run_s);
    for (int i = 0; i < r.n; i++) {
      const bd_detections *w = &want[cut[r.tag] + i];
      assert_int_equal(r.status[i], wst[cut[r.tag] + i]);
      assert_int_equal(r.dets[i].n, w->n);
      for (int j = 0; j < w->n; j++) {
        const bd_det *a = &r.dets[i].det[j], *b = &w->det[j];
        assert_int_equal(a->cls, b->cls);
        assert_true(fabsf(a->score - b->score) <= 1e-3f && fabsf(a->x1 - b->x1) <= 0.5f &&
                    fabsf(a->y2 - b->y2) <= 0.5f);
      }
    }
    bd_pool_result_free(&r);
  }
  for (int i = 0; i < NIMG; i++) bd_detections_free(&want[i]);
  bd_engine_destroy(e);
  bd_pool_stats stt[BD_POOL_MAX_INSTANCES];
  int n = bd_pool_get_stats(p, stt, BD_POOL_MAX_INSTANCES);
  for (int i = 0; i < n; i++)
    printf("%-10s %lld batches %lld images %.1f img/s\n", stt[i].name, (long long)stt[i].batches,
           (long long)stt[i].images, stt[i].img_per_s);
  bd_pool_destroy(p);
}

static void test_parse_devices(void **s) {
  (void)s;
  bd_pool_instance_spec v[64];
  bd_err err;
  assert_int_equal(bd_pool_parse_devices(NULL, 0, 3, 0, v, 64, &err), 1);
  assert_true(!v[0].is_cuda && v[0].threads == 3 && strcmp(v[0].name, "cpu") == 0);
  assert_int_equal(bd_pool_parse_devices("cpu:5", 2, 3, 0, v, 64, &err), 2);
  assert_true(v[1].threads == 5 && strcmp(v[1].name, "cpu#1") == 0);
  assert_int_equal(bd_pool_parse_devices("cuda", 2, 0, 3, v, 64, &err), 6);
  assert_true(v[5].is_cuda && v[5].device == 2 && strcmp(v[5].name, "cuda:2#1") == 0);
  assert_int_equal(bd_pool_parse_devices("cuda:0,2", 1, 0, 4, v, 64, &err), 2);
  assert_true(v[1].device == 2 && strcmp(v[1].name, "cuda:2#0") == 0);
  assert_int_equal(bd_pool_parse_devices("cuda:3", 1, 0, 4, v, 64, &err), 1);
  const char *bad[] = {"cuda:0,0", "cuda:", "cuda:1,,2", "cuda:1,", "cuda:x",  "cuda:64",
                       "cpu:0",    "cpu:",  "cpu:2x",    "tpu",     "cuda:-1", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    err.code = BD_OK;
    assert_int_equal(bd_pool_parse_devices(bad[i], 1, 0, 4, v, 64, &err), -1);
    assert_int_equal(err.code, BD_E_INVALID);
  }
  assert_int_equal(bd_pool_parse_devices("cuda:4", 1, 0, 4, v, 64, &err), -1);
  assert_int_equal(err.code, BD_E_DEVICE);
  assert_int_equal(bd_pool_parse_devices("cuda", 1, 0, 0, v, 64, &err), -1);
  assert_int_equal(err.code, BD_E_DEVICE);
  assert_int_equal(bd_pool_parse_devices("cpu", 17, 0, 0, v, 64, &err), -1);
  assert_int_equal(bd_pool_parse_devices("cuda", 16, 0, 8, v, 64, &err), -1);
  assert_int_equal(err.code, BD_E_LIMIT);
}

static void test_new_errors(void **s) {
  (void)s;
  bd_pool *p = (bd_pool *)1;
  bd_err err;
  bd_pool_opts o = {.devices = "cpu:1"};
  assert_int_not_equal(bd_pool_new("/nonexistent.onnx", &o, &p, &err), BD_OK);
  assert_null(p);
  assert_non_null(strstr(err.msg, "cpu"));
  o.instances_per_device = 2;
  assert_int_not_equal(bd_pool_new("/nonexistent.onnx", &o, &p, &err), BD_OK);
  o.devices = "cuda:0";
  /* Without a visible GPU (or without the CUDA build) a cuda pool cannot start. */
  bd_status st = bd_pool_new(model, &o, &p, &err);
  if (st == BD_OK)
    bd_pool_destroy(p);
  else
    assert_true(st == BD_E_DEVICE || st == BD_E_UNSUPPORTED);
  o.devices = "cpu";
  o.queue_cap = -1;
  assert_int_equal(bd_pool_new(model, &o, &p, &err), BD_E_INVALID);
}

int main(void) {
  if (tim_model_path("BD_POOL_MODEL", model, sizeof model)) return 77;
#ifdef TEST_POOL_EMU
  /* Over the emulated device only the cuda pool is new; the rest is test_pool's. */
  cmocka_set_test_filter("test_cuda_instances");
#endif
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_devices),    cmocka_unit_test(test_new_errors),
      cmocka_unit_test(test_one_instance),     cmocka_unit_test(test_split_two_instances),
      cmocka_unit_test(test_every_batch_once), cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_shutdown_cancel),  cmocka_unit_test(test_shutdown_drain),
      cmocka_unit_test(test_destroy_busy),     cmocka_unit_test(test_cuda_instances),
      cmocka_unit_test(test_on_result_wakes_poller), cmocka_unit_test(test_on_result_once),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
