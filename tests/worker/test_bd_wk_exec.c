/* The worker's pool executor (worker/bd_wk_exec.c) on a hand-built pipeline context:
 * batches of decoded photos pushed to q_exec, the executor thread run to the end, the
 * shards taken from q_write. The reference is a bd_engine of the test's own running
 * bd_engine_detect on the same batches with the same options (threads, max_batch), so
 * the detections in the shards' result JSON must be bit-identical (boxes mapped to the
 * oriented frame). Then: every image finished exactly once through queue_cap
 * back-pressure; dropped shards' images never submitted; an unknown model as per-image
 * errors; a GPU that is not there makes the worker fatal; force_stop with batches queued
 * finishes (or abandons) every image. Per-instance counters must add up.
 * Built with TEST_WK_EMU over the emulated device (tests/gpu/cuda_emu.c), it runs only
 * test_device_fault_is_fatal: a CUDA device that fails under a batch. */
#define _GNU_SOURCE
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

#include "bd_config.h"
#include "bd_decode.h"
#include "bd_engine.h"
#include "bd_labels.h"
#include "bd_result.h"
#include "bd_wk_internal.h"

#ifdef TEST_WK_EMU
#pragma GCC diagnostic ignored "-Wunused-function" /* the other tests are not run there */
#endif

enum { NPHOTO = 4 };
static const char *k_photos[NPHOTO] = {"dog.jpg", "horses.jpg", "kite.jpg", "person.jpg"};
static bd_image photos[NPHOTO];
static char models_dir[1024], model_path[1100];

static int setup(void **st) {
  (void)st;
  const char *d = getenv("BD_TEST_DATA");
  snprintf(models_dir, sizeof models_dir, "%s/models", d ? d : "../shared/data");
  snprintf(model_path, sizeof model_path, "%s/yolox_nano.onnx", models_dir);
  for (int i = 0; i < NPHOTO; i++) {
    char p[1200];
    snprintf(p, sizeof p, "%s/images/%s", d ? d : "../shared/data", k_photos[i]);
    bd_err err = {0};
    if (bd_decode_file(p, NULL, &photos[i], NULL, &err) != BD_OK) {
      print_error("%s: %s\n", p, err.msg);
      return -1;
    }
  }
  return 0;
}

static int teardown(void **st) {
  (void)st;
  for (int i = 0; i < NPHOTO; i++) bd_image_free(&photos[i]);
  return 0;
}

/* ---- a pipeline context with only what the executor touches ---- */

typedef struct harness {
  bd_worker_config cfg;
  wk_ctx *w;
  pthread_t th;
  wk_shard *shards[64];
  int n_shards;
} harness;

static void h_init(harness *h, const char *devices, int batch) {
  memset(h, 0, sizeof *h);
  bd_worker_config_default(&h->cfg);
  h->cfg.devices = devices;
  h->cfg.models_dir = models_dir;
  h->cfg.models_dir_explicit = 1;
  h->cfg.batch = batch;
  h->cfg.cpu_threads = 2;
  h->w = calloc(1, sizeof *h->w);
  assert_non_null(h->w);
  wk_ctx *w = h->w;
  w->cfg = &h->cfg;
  assert_int_equal(bd_worker_parse_devices(devices, 1, &w->spec, NULL), BD_OK);
  w->n_dev = w->spec.n;
  const char *names[BD_WORKER_MAX_DEVICES];
  for (int i = 0; i < w->n_dev; i++) {
    snprintf(w->dev[i].name, sizeof w->dev[i].name, "%s", w->spec.name[i]);
    names[i] = w->dev[i].name;
  }
  w->metrics = bd_wk_metrics_new(w->n_dev, names, NULL);
  assert_non_null(w->metrics);
  assert_int_equal(bd_queue_new(64, &w->q_exec, NULL), BD_OK);
  assert_int_equal(bd_queue_new(256, &w->q_write, NULL), BD_OK);
}

static wk_shard *h_shard(harness *h, const char *model, int n, const char *thr) {
  bd_manifest *m = bd_manifest_new();
  assert_non_null(m);
  snprintf(m->job, sizeof m->job, "job");
  m->shard = h->n_shards;
  snprintf(m->model, sizeof m->model, "%s", model);
  if (thr) { /* "score,iou,max_det" */
    m->has_score_thr = m->has_iou_thr = m->has_max_det = 1;
    assert_int_equal(sscanf(thr, "%lf,%lf,%d", &m->score_thr, &m->iou_thr, &m->max_det), 3);
  }
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "s%d-i%d", h->n_shards, i);
    assert_int_equal(bd_manifest_add_image(m, id, "file:///x.jpg", NULL), BD_OK);
  }
  wk_shard *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->m = m;
  s->json = calloc((size_t)n, sizeof *s->json);
  s->error = calloc((size_t)n, sizeof *s->error);
  atomic_store(&s->remaining, n);
  h->shards[h->n_shards++] = s;
  return s;
}

/* Image idx of s: a copy of photo p (the item owns its pixels, as after decoding). */
static wk_item *h_item(wk_shard *s, int idx, int p, int oriented_scale) {
  wk_item *it = calloc(1, sizeof *it);
  assert_non_null(it);
  it->s = s;
  it->idx = (size_t)idx;
  it->im.w = photos[p].w;
  it->im.h = photos[p].h;
  size_t nb = (size_t)photos[p].w * photos[p].h * 3;
  it->im.data = malloc(nb);
  assert_non_null(it->im.data);
  memcpy(it->im.data, photos[p].data, nb);
  it->oriented_w = it->im.w * oriented_scale;
  it->oriented_h = it->im.h * oriented_scale;
  return it;
}

static void h_push(harness *h, wk_item **items, int n) {
  wk_batch *b = calloc(1, sizeof *b);
  assert_non_null(b);
  for (int i = 0; i < n; i++) b->items[b->n++] = items[i];
  assert_int_equal(bd_queue_push(h->w->q_exec, b, 5), BD_OK);
}

static void h_start(harness *h) {
  assert_int_equal(pthread_create(&h->th, NULL, wk_exec_pool_main, h->w), 0);
}

/* Closes q_exec, joins the executor (bounded), then checks that each shard came to the
 * writer exactly once with nothing left to finish. */
static void h_finish(harness *h) {
  bd_queue_close(h->w->q_exec);
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 240;
  if (pthread_timedjoin_np(h->th, NULL, &dl) != 0) fail_msg("executor did not finish in 240 s");
  int seen[64] = {0};
  void *p = NULL;
  while (bd_queue_pop(h->w->q_write, &p, 0) == BD_OK) {
    int k = -1;
    for (int i = 0; i < h->n_shards; i++)
      if (h->shards[i] == p) k = i;
    assert_true(k >= 0);
    seen[k]++;
  }
  for (int i = 0; i < h->n_shards; i++) {
    if (seen[i] != 1) fail_msg("shard %d reached the writer %d times", i, seen[i]);
    assert_int_equal(atomic_load(&h->shards[i]->remaining), 0);
  }
}

static void h_free(harness *h) {
  for (int i = 0; i < h->n_shards; i++) {
    wk_shard *s = h->shards[i];
    for (size_t j = 0; j < s->m->n_images; j++) {
      free(s->json[j]);
      free(s->error[j]);
    }
    free(s->json);
    free(s->error);
    bd_manifest_destroy(s->m);
    free(s);
  }
  bd_queue_destroy(h->w->q_exec);
  bd_queue_destroy(h->w->q_write);
  bd_wk_metrics_destroy(h->w->metrics);
  free(h->w);
}

static long long dev_images(harness *h, long long *failed) {
  long long n = 0, f = 0;
  for (int i = 0; i < h->w->n_dev; i++) {
    n += atomic_load(&h->w->dev[i].images);
    f += atomic_load(&h->w->dev[i].failed);
  }
  if (failed) *failed = f;
  return n;
}

/* The result JSON of image idx of s against detections ref (boxes times scale). */
static int same_result(const wk_shard *s, int idx, const bd_detections *ref, int scale,
                       const bd_labels *labels, int w, int h) {
  if (s->error[idx] || !s->json[idx]) {
    print_error("image %d: error %s\n", idx, s->error[idx] ? s->error[idx] : "(no result)");
    return 0;
  }
  bd_result *r = NULL;
  if (bd_result_decode(s->json[idx], strlen(s->json[idx]), &r, NULL) != BD_OK) return 0;
  int ok = r->width == w * scale && r->height == h * scale && strcmp(r->model, s->m->model) == 0 &&
           strcmp(r->image, s->m->images[idx].id) == 0 && (int)r->n_dets == ref->n;
  for (int k = 0; ok && k < ref->n; k++) {
    const bd_det *d = &ref->det[k];
    const bd_detection *g = &r->dets[k];
    const char *lab = bd_labels_name(labels, d->cls);
    ok = g->cls == d->cls && strcmp(g->label, lab ? lab : "") == 0 &&
         g->score == (double)d->score && g->box[0] == d->x1 * (double)scale &&
         g->box[1] == d->y1 * (double)scale && g->box[2] == d->x2 * (double)scale &&
         g->box[3] == d->y2 * (double)scale;
    if (!ok)
      print_error("image %d det %d: got c%d %.9g [%.9g %.9g %.9g %.9g] want c%d %.9g [%.9g ...]\n",
                  idx, k, g->cls, g->score, g->box[0], g->box[1], g->box[2], g->box[3], d->cls,
                  (double)d->score, d->x1 * scale);
  }
  bd_result_destroy(r);
  return ok;
}

/* Two instances (cpu:2), two batches mixing two shards with different thresholds: the
 * shards' JSON equals bd_engine_detect of a reference engine on the same batches. */
static void test_results_match_engine(void **st) {
  (void)st;
  harness h;
  h_init(&h, "cpu:2", 4);
  assert_string_equal(h.w->dev[1].name, "cpu#1");
  wk_shard *a = h_shard(&h, "yolox_nano", 5, NULL);
  wk_shard *b = h_shard(&h, "yolox_nano", 3, "0.05,0.6,7");
  /* batch 1: a0..a3 (photos 0..3); batch 2: a4 (photo 0, oriented frame twice as big),
   * b0..b2 (photos 1, 2, 3) */
  wk_item *b1[4], *b2[4];
  for (int i = 0; i < 4; i++) b1[i] = h_item(a, i, i, 1);
  b2[0] = h_item(a, 4, 0, 2);
  for (int i = 0; i < 3; i++) b2[1 + i] = h_item(b, i, 1 + i, 1);

  /* The reference, on the same batches with the same engine options as the pool's. */
  bd_engine *e = NULL;
  bd_err err = {0};
  bd_engine_opts eo = {.device = "cpu", .threads = 2, .max_batch = 4, .family = BD_FAMILY_AUTO};
  assert_int_equal(bd_engine_load(model_path, &eo, &e, &err), BD_OK);
  const bd_image *p1[4], *p2[4];
  bd_detect_params q1[4], q2[4];
  bd_detections r1[4], r2[4];
  bd_status s1[4], s2[4];
  for (int i = 0; i < 4; i++) {
    p1[i] = &photos[i];
    q1[i] = (bd_detect_params){-1.f, -1.f, 0};
    p2[i] = &photos[i == 0 ? 0 : i];
    q2[i] = i == 0 ? q1[0] : (bd_detect_params){0.05f, 0.6f, 7};
  }
  assert_int_equal(bd_engine_detect(e, 4, p1, q1, r1, s1, &err), BD_OK);
  assert_int_equal(bd_engine_detect(e, 4, p2, q2, r2, s2, &err), BD_OK);
  bd_engine_destroy(e);

  h_push(&h, b1, 4);
  h_push(&h, b2, 4);
  h_start(&h);
  h_finish(&h);

  bd_labels *labels = NULL;
  assert_int_equal(bd_labels_coco(&labels, NULL), BD_OK);
  int total = 0;
  for (int i = 0; i < 4; i++) {
    assert_int_equal(s1[i], BD_OK);
    assert_true(same_result(a, i, &r1[i], 1, labels, photos[i].w, photos[i].h));
    total += r1[i].n;
  }
  assert_true(same_result(a, 4, &r2[0], 2, labels, photos[0].w, photos[0].h));
  for (int i = 0; i < 3; i++) {
    assert_true(same_result(b, i, &r2[1 + i], 1, labels, photos[1 + i].w, photos[1 + i].h));
    assert_true(r2[1 + i].n <= 7);
    total += r2[1 + i].n;
  }
  assert_true(total > 0);
  print_message("%d detections identical to bd_engine_detect\n", total);
  for (int i = 0; i < 4; i++) {
    bd_detections_free(&r1[i]);
    bd_detections_free(&r2[i]);
  }
  bd_labels_destroy(labels);
  long long failed = -1;
  assert_int_equal(dev_images(&h, &failed), 8);
  assert_int_equal(failed, 0);
  assert_int_equal(atomic_load(&h.w->fatal), 0);
  /* per instance in the metrics: the two instances' ok counts add up to 8 */
  char *t = bd_wk_metrics_render(h.w->metrics, NULL, NULL);
  assert_non_null(t);
  unsigned long long ok0 = 0, ok1 = 0;
  const char *x0 = strstr(t, "batchdet_images_total{device=\"cpu#0\",status=\"ok\"} ");
  const char *x1 = strstr(t, "batchdet_images_total{device=\"cpu#1\",status=\"ok\"} ");
  assert_non_null(x0);
  assert_non_null(x1);
  ok0 = strtoull(strchr(x0, '}') + 2, NULL, 10);
  ok1 = strtoull(strchr(x1, '}') + 2, NULL, 10);
  assert_int_equal(ok0 + ok1, 8);
  assert_int_equal((long long)ok0, atomic_load(&h.w->dev[0].images));
  /* every result's instance found its device entry */
  assert_non_null(strstr(t, "batchdet_images_total{device=\"none\",status=\"ok\"} 0\n"));
  free(t);
  h_free(&h);
}

/* One instance (queue_cap 4) and 14 one-image batches pushed at once: the executor must
 * wait for room, and every image is finished exactly once. Batches whose shards are
 * dropped are not submitted; a batch mixing a dropped and a live shard runs the live
 * images only. */
static void test_backpressure_and_drops(void **st) {
  (void)st;
  harness h;
  h_init(&h, "cpu", 1);
  wk_shard *a = h_shard(&h, "yolox_nano", 14, NULL);
  wk_shard *dr = h_shard(&h, "yolox_nano", 3, NULL);
  wk_shard *mixed_dead = h_shard(&h, "yolox_nano", 2, NULL);
  wk_shard *mixed_live = h_shard(&h, "yolox_nano", 1, NULL);
  atomic_store(&dr->dropped, 1);
  atomic_store(&mixed_dead->dropped, 1);
  wk_item *it[4];
  for (int i = 0; i < 3; i++) it[i] = h_item(dr, i, i, 1);
  h_push(&h, it, 3);
  it[0] = h_item(mixed_dead, 0, 0, 1);
  it[1] = h_item(mixed_live, 0, 1, 1);
  it[2] = h_item(mixed_dead, 1, 2, 1);
  /* batch of 1 configured, but the executor takes what the batcher gives */
  h_push(&h, it, 3);
  h_start(&h);
  for (int i = 0; i < 14; i++) {
    it[0] = h_item(a, i, i % NPHOTO, 1);
    h_push(&h, it, 1);
  }
  h_finish(&h);
  for (int i = 0; i < 14; i++) {
    assert_non_null(a->json[i]);
    assert_null(a->error[i]);
  }
  assert_non_null(mixed_live->json[0]);
  for (int i = 0; i < 3; i++) assert_null(dr->json[i]);
  for (int i = 0; i < 2; i++) assert_null(mixed_dead->json[i]);
  long long failed = -1;
  assert_int_equal(dev_images(&h, &failed), 15);
  assert_int_equal(failed, 0);
  h_free(&h);
}

/* A model that is not in the models dir: each image gets the error, no device counts it,
 * the worker goes on. */
static void test_unknown_model(void **st) {
  (void)st;
  harness h;
  h_init(&h, "cpu", 4);
  wk_shard *s = h_shard(&h, "nope", 2, NULL);
  wk_item *it[2] = {h_item(s, 0, 0, 1), h_item(s, 1, 1, 1)};
  h_push(&h, it, 2);
  wk_shard *s2 = h_shard(&h, "nope", 1, NULL); /* remembered: not looked up again */
  it[0] = h_item(s2, 0, 2, 1);
  h_push(&h, it, 1);
  h_start(&h);
  h_finish(&h);
  assert_string_equal(s->error[0], "model: unknown model 'nope'");
  assert_string_equal(s->error[1], "model: unknown model 'nope'");
  assert_string_equal(s2->error[0], "model: unknown model 'nope'");
  assert_non_null(strstr(s->json[0], "\"error\":\"model: unknown model 'nope'\""));
  assert_int_equal(atomic_load(&s->dropped), 0);
  assert_int_equal(dev_images(&h, NULL), 0);
  assert_int_equal(atomic_load(&h.w->fatal), 0);
  assert_int_equal(atomic_load(&h.w->pipe_failed), 3);
  h_free(&h);
}

/* A GPU that is not there (none in a build without CUDA): the pool cannot be created,
 * the worker is fatal with the pool's message and nothing of the shard is kept. */
static void test_missing_gpu_is_fatal(void **st) {
  (void)st;
  harness h;
  h_init(&h, "cuda:63", 4);
  assert_string_equal(h.w->dev[0].name, "cuda:63#0");
  wk_shard *s = h_shard(&h, "yolox_nano", 2, NULL);
  wk_item *it[2] = {h_item(s, 0, 0, 1), h_item(s, 1, 1, 1)};
  h_push(&h, it, 2);
  h_start(&h);
  h_finish(&h);
  assert_int_equal(atomic_load(&h.w->fatal), 1);
  print_message("fatal: %s\n", h.w->fatal_msg);
  assert_non_null(strstr(h.w->fatal_msg, "cuda:63: model: "));
#ifdef BD_HAVE_CUDA
  assert_non_null(strstr(h.w->fatal_msg, "not visible"));
#else
  assert_non_null(strstr(h.w->fatal_msg, "CUDA backend"));
#endif
  assert_int_equal(atomic_load(&s->dropped), 1);
  assert_null(s->json[0]);
  assert_null(s->error[0]);
  assert_int_equal(dev_images(&h, NULL), 0);
  h_free(&h);
}

/* force_stop with batches queued in the pool and in q_exec: each image is finished once,
 * either with its result or abandoned (its shard dropped), and the executor ends. */
static void test_force_stop(void **st) {
  (void)st;
  harness h;
  h_init(&h, "cpu", 2);
  wk_shard *s[10];
  for (int k = 0; k < 10; k++) s[k] = h_shard(&h, "yolox_nano", 2, NULL);
  h_start(&h);
  for (int k = 0; k < 10; k++) {
    wk_item *it[2] = {h_item(s[k], 0, k % NPHOTO, 1), h_item(s[k], 1, (k + 1) % NPHOTO, 1)};
    h_push(&h, it, 2);
  }
  /* Stop once the first shard is done: the rest is in the pool's queue or in q_exec. */
  double t0 = bd_now();
  while (atomic_load(&s[0]->remaining) > 0 && bd_now() - t0 < 120) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(atomic_load(&s[0]->remaining), 0);
  atomic_store(&h.w->force_stop, 1);
  h_finish(&h);
  int done = 0, dropped = 0;
  for (int k = 0; k < 10; k++) {
    if (atomic_load(&s[k]->dropped)) {
      dropped++;
    } else {
      done++;
      assert_non_null(s[k]->json[0]);
      assert_non_null(s[k]->json[1]);
    }
  }
  print_message("force_stop: %d shards done, %d abandoned\n", done, dropped);
  assert_true(done >= 1);
  assert_true(dropped >= 1); /* those not started when force_stop came */
  h_free(&h);
}

#ifdef TEST_WK_EMU
/* A cuda instance over the emulated device, $BD_EMU_DEVICE_FAULT=2: the device fails
 * under the second of a shard's two batches (the wait for its results), as after a
 * kernel fault. The worker is fatal with the device's message, and the shard is dropped
 * (not acknowledged: redone by another worker or after a restart). None of its images
 * gets an error: the fault is not theirs, and every later batch of the instance would
 * fail the same way. Model: $BD_WK_MODEL in $BD_WK_MODELS_DIR (the tiny damoyolo). */
static void test_device_fault_is_fatal(void **st) {
  (void)st;
  const char *dir = getenv("BD_WK_MODELS_DIR"), *model = getenv("BD_WK_MODEL");
  if (!dir || !model || !getenv("BD_EMU_DEVICE_FAULT")) skip();
  snprintf(models_dir, sizeof models_dir, "%s", dir);
  harness h;
  h_init(&h, "cuda:0", 2);
  wk_shard *s = h_shard(&h, model, 4, NULL);
  wk_item *a[2] = {h_item(s, 0, 0, 1), h_item(s, 1, 1, 1)};
  wk_item *b[2] = {h_item(s, 2, 2, 1), h_item(s, 3, 3, 1)};
  h_push(&h, a, 2);
  h_push(&h, b, 2);
  h_start(&h);
  h_finish(&h);
  assert_int_equal(atomic_load(&h.w->fatal), 1);
  print_message("fatal: %s\n", h.w->fatal_msg);
  assert_non_null(strstr(h.w->fatal_msg, "cuda:0"));
  assert_non_null(strstr(h.w->fatal_msg, "illegal memory access"));
  assert_int_equal(atomic_load(&s->dropped), 1);
  for (int i = 0; i < 4; i++) assert_null(s->error[i]);
  long long failed = 0;
  print_message("images done on the device: %lld\n", dev_images(&h, &failed));
  assert_int_equal(failed, 0);
  h_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_device_fault_is_fatal)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
#else
int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_results_match_engine), cmocka_unit_test(test_backpressure_and_drops),
      cmocka_unit_test(test_unknown_model),        cmocka_unit_test(test_missing_gpu_is_fatal),
      cmocka_unit_test(test_force_stop),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
#endif
