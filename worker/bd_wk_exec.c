/* The worker's executors, the stage between the batcher and the Redis writer: batches of
 * one model come from q_exec; each image gets a result (set_result) or an error and is
 * finished (wk_item_finish).
 *
 * cpu, cuda: one thread (wk_exec_pool_main) drives a bd_pool per model, created at the
 * model's first batch (at most WK_MODELS kept; a load failure is remembered, not retried
 * per batch). It submits each batch with the batch pointer as its tag, at most the pool's
 * queue_cap in flight (when a pool is full, the batch stays in the thread's hands until
 * that pool's next result is taken), and takes every pool's results to finish the images.
 * It sleeps on one bd_notify, signalled by q_exec on each push and on its close and by
 * each pool for each result (bd_pool_opts.on_result). It reads the notifier's sequence
 * before looking at q_exec and the pools without blocking, so nothing that arrives while
 * it looks is missed, and a result is taken as soon as the pool hands it over. The sleep
 * is still capped (WK_WAIT_S), which also bounds how late force_stop is seen when nothing
 * else wakes the thread (stop_stages closes q_exec soon after setting it). The pool
 * borrows the items' pixels, so an item is finished only after its batch's result was
 * polled: each image is finished exactly once, by this thread, whatever happens to its
 * shard meanwhile (a dropped shard's images are left out of batches not yet submitted).
 * At the end (q_exec closed and empty) the thread waits for every batch in flight; after
 * the grace period (force_stop) the pools cancel the batches not started, and those
 * images are abandoned (their shards dropped: not acknowledged, redone elsewhere).
 *
 * sim: one thread per simulated device (wk_exec_sim_main) sleeps sim_ms per batch. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_config.h"
#include "bd_labels.h"
#include "bd_log.h"
#include "bd_notify.h"
#include "bd_pool.h"
#include "bd_result.h"
#include "bd_wk_internal.h"

#define WK_MODELS 8
/* Longest sleep between two looks at q_exec, the pools and force_stop: the wake-ups make
 * it rare, it only bounds what a missed one (a bug) could cost. */
#define WK_WAIT_S 0.2

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static void set_result(wk_item *it, const bd_detections *dt, const bd_labels *labels) {
  wk_shard *s = it->s;
  bd_result *r = bd_result_new();
  char *js = NULL;
  bd_err err = {0};
  if (!r) goto fail;
  snprintf(r->image, sizeof r->image, "%s", s->m->images[it->idx].id);
  snprintf(r->model, sizeof r->model, "%s", s->m->model);
  r->width = it->oriented_w;
  r->height = it->oriented_h;
  /* Boxes come in the decoded frame; map them to the oriented full-size frame. */
  double sx = (double)it->oriented_w / it->im.w, sy = (double)it->oriented_h / it->im.h;
  for (int k = 0; dt && k < dt->n; k++) {
    const bd_det *d = &dt->det[k];
    double box[4] = {d->x1 * sx, d->y1 * sy, d->x2 * sx, d->y2 * sy};
    if (bd_result_add(r, d->cls, labels ? bd_labels_name(labels, d->cls) : NULL, d->score, box,
                      &err) != BD_OK)
      goto fail;
  }
  if (bd_result_encode(r, &js, NULL, &err) != BD_OK) goto fail;
  free(s->json[it->idx]);
  s->json[it->idx] = js;
  bd_result_destroy(r);
  return;
fail:
  bd_result_destroy(r);
  snprintf(it->err, sizeof it->err, "result: %s", err.msg[0] ? err.msg : "out of memory");
}

/* Finishes the images of dropped shards; returns how many images are left in b. */
static int compact(wk_ctx *w, wk_batch *b) {
  int n = 0;
  for (int i = 0; i < b->n; i++) {
    if (atomic_load(&b->items[i]->s->dropped))
      wk_item_finish(w, b->items[i]);
    else
      b->items[n++] = b->items[i];
  }
  b->n = n;
  return n;
}

/* Finishes every image of b (each with its result or error) on device di (-1: none, for
 * images lost before reaching a device), and frees b. */
static void finish_batch(wk_ctx *w, wk_batch *b, int di) {
  long ok = 0, bad = 0;
  for (int i = 0; i < b->n; i++) {
    if (b->items[i]->err[0])
      bad++;
    else
      ok++;
    wk_item_finish(w, b->items[i]);
  }
  if (di >= 0) {
    atomic_fetch_add(&w->dev[di].images, ok + bad);
    atomic_fetch_add(&w->dev[di].failed, bad);
  }
  bd_wk_metrics_image(w->metrics, di, 1, ok);
  bd_wk_metrics_image(w->metrics, di, 0, bad);
  free(b);
}

/* No result for b: its shards are dropped, so nothing of them is acknowledged and the
 * next owner of the partition (or a restart) redoes them. */
static void abandon_batch(wk_ctx *w, wk_batch *b) {
  for (int i = 0; i < b->n; i++) {
    atomic_store(&b->items[i]->s->dropped, 1);
    wk_item_finish(w, b->items[i]);
  }
  free(b);
}

static void set_errors(wk_batch *b, const char *prefix, const char *msg) {
  for (int i = 0; i < b->n; i++)
    snprintf(b->items[i]->err, sizeof b->items[i]->err, "%s%s", prefix, msg);
}

/* ---- sim ---- */

void *wk_exec_sim_main(void *arg) {
  wk_exec_arg *ea = arg;
  wk_ctx *w = ea->w;
  int di = ea->dev;
  free(ea);
  for (;;) {
    void *p = NULL;
    if (bd_queue_pop(w->q_exec, &p, -1) != BD_OK) break;
    wk_batch *b = p;
    if (compact(w, b) == 0) {
      free(b);
      continue;
    }
    const char *model = b->items[0]->s->m->model;
    char path[4096];
    if (w->cfg->models_dir_explicit && !wk_model_path(w, model, path, sizeof path)) {
      /* Images lost to a model that is not there are the job's errors, not the device's. */
      char msg[BD_ID_MAX + 64];
      snprintf(msg, sizeof msg, "model: unknown model '%s'", model);
      set_errors(b, "", msg);
      finish_batch(w, b, -1);
      continue;
    }
    /* In slices, so that the end of a grace period does not wait for a long sim batch
     * (its shards are dropped then anyway). */
    double t0 = bd_now(), until = t0 + w->spec.sim_ms / 1000.0;
    while (!atomic_load(&w->force_stop) && bd_now() < until) {
      double left = until - bd_now();
      sleep_s(left < 0.05 ? left : 0.05);
    }
    for (int i = 0; i < b->n; i++) set_result(b->items[i], NULL, NULL);
    bd_wk_metrics_observe(w->metrics, BD_WK_INFER, bd_now() - t0);
    finish_batch(w, b, di);
  }
  return NULL;
}

/* ---- cpu and cuda through bd_pool ---- */

typedef struct wk_model {
  char name[BD_ID_MAX + 1]; /* "" = free slot */
  bd_pool *pool;            /* NULL when error[0] */
  bd_status status;         /* of the load (BD_OK for an unknown model) */
  bd_labels *labels;        /* NAME.names, COCO's for 80 classes, or NULL (class only) */
  char error[BD_ERR_MSG_MAX + 32];
  int in_flight; /* batches submitted and not yet polled */
  uint64_t used; /* last use, for eviction */
} wk_model;

typedef struct wk_exec {
  wk_ctx *w;
  wk_model m[WK_MODELS];
  uint64_t tick;
  int cancelled;   /* the pools were shut down (force_stop) */
  bd_notify *wake; /* q_exec pushes and closes, every pool's results */
  const bd_image *ptrs[WK_MAX_BATCH];
  bd_detect_params params[WK_MAX_BATCH];
} wk_exec;

static int device_index(const wk_ctx *w, const char *instance) {
  for (int i = 0; i < w->n_dev; i++)
    if (strcmp(w->dev[i].name, instance) == 0) return i;
  return -1;
}

static int total_in_flight(const wk_exec *x) {
  int n = 0;
  for (int i = 0; i < WK_MODELS; i++) n += x->m[i].in_flight;
  return n;
}

static void finish_result(wk_exec *x, wk_model *wm, bd_pool_result *r) {
  wk_ctx *w = x->w;
  wk_batch *b = (wk_batch *)(uintptr_t)r->tag;
  wm->in_flight--;
  if (r->batch_status == BD_E_CANCELLED) {
    abandon_batch(w, b);
  } else if (r->batch_status == BD_E_DEVICE) {
    /* The device failed under the batch (a CUDA error is sticky: every later batch of
     * the instance would fail too). Not the images' fault: as when a device cannot load
     * the model, nothing is acknowledged and the worker drains and exits, so that the
     * others (or a restart, with a fresh CUDA context) redo these shards, instead of
     * marking every image that reaches this instance as failed. */
    BD_LOGE("%s: device failed under a batch of %d: %s", r->instance, b->n, r->err.msg);
    if (!atomic_exchange(&w->fatal, 1))
      snprintf(w->fatal_msg, sizeof w->fatal_msg, "%.64s: %s", r->instance, r->err.msg);
    abandon_batch(w, b);
  } else if (r->batch_status != BD_OK || r->n != b->n) {
    BD_LOGW("%s: batch of %d failed: %s", r->instance, b->n, r->err.msg);
    set_errors(b, "infer: ", r->batch_status != BD_OK ? r->err.msg : "internal: result size");
    finish_batch(w, b, device_index(w, r->instance));
  } else {
    for (int i = 0; i < b->n; i++) {
      if (r->status[i] != BD_OK)
        snprintf(b->items[i]->err, sizeof b->items[i]->err, "infer: %s",
                 bd_status_name(r->status[i]));
      else
        set_result(b->items[i], &r->dets[i], wm->labels);
    }
    bd_wk_metrics_observe(w->metrics, BD_WK_INFER, r->run_s);
    finish_batch(w, b, device_index(w, r->instance));
  }
  bd_pool_result_free(r);
}

/* Takes one result of wm, waiting up to ms; returns 1 when it finished one. */
static int wait_one(wk_exec *x, wk_model *wm, int ms) {
  if (!wm->pool || wm->in_flight <= 0) return 0;
  bd_pool_result r;
  bd_err err = {0};
  bd_status st = bd_pool_poll(wm->pool, ms, &r, &err);
  if (st == BD_OK) {
    finish_result(x, wm, &r);
    return 1;
  }
  if (st == BD_E_CANCELLED) {
    /* The pool says nothing is in flight: never so while our count is not 0 (each
     * submitted batch yields one result). Resetting keeps the end from hanging. */
    BD_LOGE("model %s: %d batches not returned by the pool: %s", wm->name, wm->in_flight, err.msg);
    wm->in_flight = 0;
  }
  return 0;
}

/* Finishes every result ready now; returns how many. */
static int reap(wk_exec *x) {
  int n = 0;
  for (int i = 0; i < WK_MODELS; i++)
    while (wait_one(x, &x->m[i], 0)) n++;
  return n;
}

static void drop_model(wk_exec *x, wk_model *wm) {
  while (wm->in_flight > 0) (void)wait_one(x, wm, 100);
  bd_pool_destroy(wm->pool);
  bd_labels_destroy(wm->labels);
  memset(wm, 0, sizeof *wm);
}

/* bd_pool_opts.on_result: a result of some pool can be polled. */
static void on_result(void *arg) {
  bd_notify_signal(arg);
}

static wk_model *get_model(wk_exec *x, const char *name) {
  wk_ctx *w = x->w;
  x->tick++;
  wk_model *wm = NULL;
  for (int i = 0; i < WK_MODELS && !wm; i++)
    if (x->m[i].name[0] && strcmp(x->m[i].name, name) == 0) wm = &x->m[i];
  if (wm) {
    wm->used = x->tick;
    return wm;
  }
  for (int i = 0; i < WK_MODELS && !wm; i++)
    if (!x->m[i].name[0]) wm = &x->m[i];
  if (!wm) { /* full (more than 8 models on one worker): the least recently used goes */
    wm = &x->m[0];
    for (int i = 1; i < WK_MODELS; i++)
      if (x->m[i].used < wm->used) wm = &x->m[i];
    BD_LOGI("model %s unloaded to make room for %s", wm->name, name);
    drop_model(x, wm);
  }
  snprintf(wm->name, sizeof wm->name, "%s", name);
  wm->used = x->tick;
  char path[4096];
  if (!wk_model_path(w, name, path, sizeof path)) {
    snprintf(wm->error, sizeof wm->error, "model: unknown model '%s'", name);
    return wm;
  }
  bd_pool_opts po;
  memset(&po, 0, sizeof po);
  po.devices = w->spec.pool_devices;
  po.instances_per_device = w->spec.per_device;
  po.engine.threads = w->cfg->cpu_threads;
  po.engine.max_batch = w->cfg->batch;
  po.engine.family = BD_FAMILY_AUTO;
  po.on_result = on_result;
  po.on_result_arg = x->wake;
  bd_err err = {0};
  double t0 = bd_now();
  if ((wm->status = bd_pool_new(path, &po, &wm->pool, &err)) != BD_OK) {
    wm->pool = NULL;
    snprintf(wm->error, sizeof wm->error, "model: %s", err.msg);
    BD_LOGE("%s: loading model %s: %s", w->spec.pool_devices, name, err.msg);
    return wm;
  }
  /* Names: NAME.names beside the model, else COCO's for an 80-class model, else none. A
   * names file that does not load is the model's error: its results would be mislabelled. */
  int classes = bd_pool_family(wm->pool)->num_classes;
  char names[4096];
  if ((wm->status = bd_labels_for_model(path, classes, &wm->labels, names, sizeof names, &err)) !=
      BD_OK) {
    bd_pool_destroy(wm->pool);
    wm->pool = NULL;
    snprintf(wm->error, sizeof wm->error, "model: %s", err.msg);
    BD_LOGE("model %s: %s", name, err.msg);
    return wm;
  }
  if (!wm->labels)
    BD_LOGW(
        "model %s has %d classes, not COCO's 80, and there is no %s: its detections carry "
        "class indices only",
        name, classes, names);
  else if (bd_labels_count(wm->labels) < classes)
    BD_LOGW("model %s: %s names %d of its %d classes; the others carry class indices only", name,
            names, bd_labels_count(wm->labels), classes);
  int n = bd_pool_num_instances(wm->pool);
  BD_LOGI("%s: model %s loaded on %d instances in %.2f s", w->spec.pool_devices, name, n,
          bd_now() - t0);
  for (int i = 0; i < n; i++)
    if (device_index(w, bd_pool_instance_name(wm->pool, i)) < 0)
      BD_LOGW("model %s: instance %s is not in the device list; its images count as device none",
              name, bd_pool_instance_name(wm->pool, i));
  return wm;
}

/* Hands b to its model's pool. Returns NULL when b was taken (submitted, or finished with
 * errors), or b when the pool is full: b is to be offered again once that pool's next
 * result was taken (its on_result wakes the thread). */
static wk_batch *dispatch(wk_exec *x, wk_batch *b) {
  wk_ctx *w = x->w;
  if (compact(w, b) == 0) {
    free(b);
    return NULL;
  }
  if (atomic_load(&w->force_stop) || x->cancelled) {
    abandon_batch(w, b); /* past the grace period nothing new starts */
    return NULL;
  }
  wk_model *wm = get_model(x, b->items[0]->s->m->model);
  if (wm->error[0]) {
    /* A device that cannot run (driver failure, or a CUDA device in a build without
     * the CUDA backend) is the worker's fault, not the images': nothing is acknowledged,
     * the worker drains and exits so that the others (or a restart) redo these shards. */
    if (wm->status == BD_E_DEVICE ||
        (w->spec.kind == BD_WDEV_CUDA && wm->status == BD_E_UNSUPPORTED)) {
      if (!atomic_exchange(&w->fatal, 1))
        snprintf(w->fatal_msg, sizeof w->fatal_msg, "%.64s: %s", w->spec.pool_devices, wm->error);
      abandon_batch(w, b);
      return NULL;
    }
    set_errors(b, "", wm->error);
    finish_batch(w, b, -1);
    return NULL;
  }
  for (int i = 0; i < b->n; i++) {
    const bd_manifest *m = b->items[i]->s->m;
    x->ptrs[i] = &b->items[i]->im;
    x->params[i].score_thr = m->has_score_thr ? (float)m->score_thr : -1.0f;
    x->params[i].iou_thr = m->has_iou_thr ? (float)m->iou_thr : -1.0f;
    x->params[i].max_det = m->has_max_det ? m->max_det : 0;
  }
  bd_err err = {0};
  bd_status st =
      bd_pool_submit(wm->pool, b->n, x->ptrs, x->params, (uint64_t)(uintptr_t)b, 0, &err);
  if (st == BD_OK) {
    wm->in_flight++;
    return NULL;
  }
  if (st == BD_E_UNAVAILABLE && wm->in_flight > 0)
    return b; /* queue_cap batches of this model in flight: room comes with its next result */
  if (st == BD_E_CANCELLED) {
    abandon_batch(w, b);
    return NULL;
  }
  BD_LOGW("%s: batch of %d not submitted: %s", w->spec.pool_devices, b->n, err.msg);
  set_errors(b, "infer: ", err.msg);
  finish_batch(w, b, -1);
  return NULL;
}

/* After the grace period: batches not started come back cancelled (waits for the
 * running ones, as the per-device executors did). */
static void cancel_pools(wk_exec *x) {
  x->cancelled = 1;
  for (int i = 0; i < WK_MODELS; i++)
    if (x->m[i].pool) bd_pool_shutdown(x->m[i].pool, 1);
}

void *wk_exec_pool_main(void *arg) {
  wk_ctx *w = arg;
  wk_exec *x = calloc(1, sizeof *x);
  if (!x || bd_notify_new(&x->wake, NULL) != BD_OK) {
    free(x);
    if (!atomic_exchange(&w->fatal, 1))
      snprintf(w->fatal_msg, sizeof w->fatal_msg, "executor: out of memory");
    void *p = NULL;
    while (bd_queue_pop(w->q_exec, &p, -1) == BD_OK) abandon_batch(w, p);
    return NULL;
  }
  x->w = w;
  bd_queue_set_notify(w->q_exec, x->wake);
  wk_batch *pending = NULL;
  int closed = 0;
  for (;;) {
    /* Read before looking: a push, close or result from now on moves it. */
    uint64_t seq = bd_notify_seq(x->wake);
    if (atomic_load(&w->force_stop) && !x->cancelled) cancel_pools(x);
    int progress = reap(x);
    if (!pending && !closed) {
      void *p = NULL;
      bd_status st = bd_queue_pop(w->q_exec, &p, 0);
      if (st == BD_OK) {
        pending = p;
        progress = 1;
      } else if (st == BD_E_CANCELLED) {
        closed = 1;
        progress = 1;
      }
    }
    if (pending) {
      pending = dispatch(x, pending);
      if (!pending) progress = 1;
    } else if (closed && total_in_flight(x) == 0) {
      break;
    }
    if (!progress) (void)bd_notify_wait(x->wake, seq, WK_WAIT_S);
  }
  bd_queue_set_notify(w->q_exec, NULL);
  /* The pools' threads are joined here: no on_result can come after. */
  for (int i = 0; i < WK_MODELS; i++) {
    bd_pool_destroy(x->m[i].pool);
    bd_labels_destroy(x->m[i].labels);
  }
  bd_notify_destroy(x->wake);
  free(x);
  return NULL;
}
