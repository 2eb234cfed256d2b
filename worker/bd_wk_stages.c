/* The worker's pipeline stages after the poll thread: fetch completion, decode pool,
 * batcher, device executors and the Redis writer. Each runs in its own thread(s) and
 * talks to the next through a bounded bd_queue; see bd_worker.h for the whole picture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bd_config.h"
#include "bd_engine.h"
#include "bd_labels.h"
#include "bd_log.h"
#include "bd_redis.h"
#include "bd_result.h"
#include "bd_wk_internal.h"

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

int wk_model_path(const wk_ctx *w, const char *name, char *buf, size_t cap) {
  int k = snprintf(buf, cap, "%s/%s.onnx", w->cfg->models_dir ? w->cfg->models_dir : ".", name);
  if (k < 0 || (size_t)k >= cap) return 0;
  struct stat st;
  return stat(buf, &st) == 0 && S_ISREG(st.st_mode);
}

void wk_shard_set_error(wk_shard *s, size_t idx, const char *msg) {
  bd_result *r = bd_result_new();
  char *js = NULL;
  if (r) {
    snprintf(r->image, sizeof r->image, "%s", s->m->images[idx].id);
    /* An empty or overlong message, or one with control characters (they can come from a
     * server), would fail validation: keep it non-empty, cut and printable. */
    snprintf(r->error, sizeof r->error, "%s", msg && *msg ? msg : "error");
    for (char *c = r->error; *c; c++)
      if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    if (bd_result_encode(r, &js, NULL, NULL) != BD_OK) js = NULL;
  }
  free(s->error[idx]);
  s->error[idx] = strdup(r ? r->error : "error");
  bd_result_destroy(r);
  free(s->json[idx]);
  s->json[idx] = js;
}

static void account(wk_ctx *w, long long delta) {
  atomic_fetch_add(&w->inflight_bytes, delta);
}

void wk_item_finish(wk_ctx *w, wk_item *it) {
  wk_shard *s = it->s;
  if (it->err[0] && !atomic_load(&s->dropped)) {
    wk_shard_set_error(s, it->idx, it->err);
    atomic_fetch_add(&w->pipe_failed, 1);
  }
  if (it->data) account(w, -(long long)it->len);
  if (it->im.data) account(w, -(long long)it->im.w * it->im.h * 3);
  free(it->data);
  bd_image_free(&it->im);
  free(it);
  if (atomic_fetch_sub(&s->remaining, 1) == 1) {
    /* The writer queue holds every in-flight shard, so this never waits for long; once it
     * is closed (teardown) the poll thread frees the shard from its registry. */
    (void)bd_queue_push(w->q_write, s, -1);
  }
}

void wk_fetch_done(void *ctx, bd_fetch_result *res) {
  wk_ctx *w = ctx;
  wk_item *it = res->user;
  bd_wk_metrics_observe(w->metrics, BD_WK_FETCH, res->elapsed_s);
  if (res->status != BD_OK) {
    snprintf(it->err, sizeof it->err, "%s", res->err.msg[0] ? res->err.msg : "fetch: failed");
  } else {
    it->data = res->data;
    it->len = res->len;
    res->data = NULL;
    account(w, (long long)it->len);
  }
  if (bd_queue_push(w->q_decode, it, -1) != BD_OK) {
    atomic_store(&it->s->dropped, 1);
    wk_item_finish(w, it);
  }
}

void *wk_decode_main(void *arg) {
  wk_ctx *w = arg;
  bd_err err = {0};
  bd_decoder *d = bd_decoder_new(&err);
  for (;;) {
    void *p = NULL;
    if (bd_queue_pop(w->q_decode, &p, -1) != BD_OK) break;
    wk_item *it = p;
    if (it->err[0] || atomic_load(&it->s->dropped)) {
      wk_item_finish(w, it);
      continue;
    }
    double t0 = bd_now();
    bd_decode_info info;
    memset(&info, 0, sizeof info);
    bd_status st =
        d ? bd_decoder_decode(d, it->data, it->len, NULL, &it->im, &info, &err) : BD_E_NOMEM;
    bd_wk_metrics_observe(w->metrics, BD_WK_DECODE, bd_now() - t0);
    account(w, -(long long)it->len);
    free(it->data);
    it->data = NULL;
    if (st != BD_OK) {
      snprintf(it->err, sizeof it->err, "decode: %s", d ? err.msg : "out of memory");
      wk_item_finish(w, it);
      continue;
    }
    account(w, (long long)it->im.w * it->im.h * 3);
    it->oriented_w = info.oriented_w > 0 ? info.oriented_w : it->im.w;
    it->oriented_h = info.oriented_h > 0 ? info.oriented_h : it->im.h;
    if (bd_queue_push(w->q_batch, it, -1) != BD_OK) {
      atomic_store(&it->s->dropped, 1);
      wk_item_finish(w, it);
    }
  }
  bd_decoder_destroy(d);
  return NULL;
}

/* ---- batcher: one open batch per model, flushed when full or at its deadline ---- */

#define WK_OPEN 8
typedef struct open_batch {
  wk_batch *b;
  double deadline;
} open_batch;

static void flush_batch(wk_ctx *w, open_batch *ob) {
  if (!ob->b) return;
  wk_batch *b = ob->b;
  ob->b = NULL;
  bd_wk_metrics_batch(w->metrics, b->n, w->cfg->batch);
  if (bd_queue_push(w->q_exec, b, -1) != BD_OK) {
    for (int i = 0; i < b->n; i++) {
      atomic_store(&b->items[i]->s->dropped, 1);
      wk_item_finish(w, b->items[i]);
    }
    free(b);
  }
}

void *wk_batcher_main(void *arg) {
  wk_ctx *w = arg;
  open_batch ob[WK_OPEN];
  memset(ob, 0, sizeof ob);
  int cap = w->cfg->batch < WK_MAX_BATCH ? w->cfg->batch : WK_MAX_BATCH;
  for (;;) {
    double now = bd_now(), wait = 0.2;
    for (int i = 0; i < WK_OPEN; i++)
      if (ob[i].b && ob[i].deadline - now < wait) wait = ob[i].deadline - now;
    if (wait < 0) wait = 0;
    void *p = NULL;
    bd_status st = bd_queue_pop(w->q_batch, &p, wait);
    if (st == BD_E_CANCELLED) break;
    if (st == BD_OK) {
      wk_item *it = p;
      if (atomic_load(&it->s->dropped)) {
        wk_item_finish(w, it);
      } else {
        /* Batches group images of one model; thresholds travel per image, since the
         * engine's detect call takes them per image. */
        int slot = -1, free_slot = -1, oldest = 0;
        for (int i = 0; i < WK_OPEN; i++) {
          if (!ob[i].b) {
            if (free_slot < 0) free_slot = i;
            continue;
          }
          if (strcmp(ob[i].b->items[0]->s->m->model, it->s->m->model) == 0) slot = i;
          if (!ob[oldest].b || ob[i].deadline < ob[oldest].deadline) oldest = i;
        }
        if (slot < 0) {
          if (free_slot < 0) {
            flush_batch(w, &ob[oldest]);
            free_slot = oldest;
          }
          slot = free_slot;
          ob[slot].b = calloc(1, sizeof(wk_batch));
          ob[slot].deadline = bd_now() + w->cfg->batch_timeout_ms / 1000.0;
        }
        if (!ob[slot].b) {
          snprintf(it->err, sizeof it->err, "batch: out of memory");
          wk_item_finish(w, it);
        } else {
          ob[slot].b->items[ob[slot].b->n++] = it;
          if (ob[slot].b->n >= cap) flush_batch(w, &ob[slot]);
        }
      }
    }
    now = bd_now();
    for (int i = 0; i < WK_OPEN; i++)
      if (ob[i].b && ob[i].deadline <= now) flush_batch(w, &ob[i]);
  }
  for (int i = 0; i < WK_OPEN; i++) flush_batch(w, &ob[i]);
  return NULL;
}

/* ---- executors ---- */

#define WK_MODELS 8
typedef struct exec_model {
  char name[BD_ID_MAX + 1];
  bd_engine *e;
  char error[BD_ERR_MSG_MAX + 32]; /* load failure, remembered so it is not retried per batch */
  bd_status status;                /* of the load */
} exec_model;

static exec_model *get_model(wk_ctx *w, wk_device *d, exec_model *cache, const char *name) {
  for (int i = 0; i < WK_MODELS; i++)
    if (cache[i].name[0] && strcmp(cache[i].name, name) == 0) return &cache[i];
  int slot = -1;
  for (int i = 0; i < WK_MODELS && slot < 0; i++)
    if (!cache[i].name[0]) slot = i;
  if (slot < 0) { /* full: evict the first (rare: more than 8 models on one worker) */
    slot = 0;
    bd_engine_destroy(cache[0].e);
    memset(&cache[0], 0, sizeof cache[0]);
  }
  exec_model *m = &cache[slot];
  snprintf(m->name, sizeof m->name, "%s", name);
  char path[4096];
  if (!wk_model_path(w, name, path, sizeof path)) {
    snprintf(m->error, sizeof m->error, "model: unknown model '%s'", name);
    return m;
  }
  if (d->kind == BD_WDEV_SIM) return m;
  bd_engine_opts o;
  memset(&o, 0, sizeof o);
  o.device = d->engine_dev;
  o.threads = w->cfg->cpu_threads;
  o.max_batch = w->cfg->batch;
  o.family = BD_FAMILY_AUTO;
  bd_err err = {0};
  double t0 = bd_now();
  if ((m->status = bd_engine_load(path, &o, &m->e, &err)) != BD_OK) {
    snprintf(m->error, sizeof m->error, "model: %s", err.msg);
    BD_LOGE("%s: loading model %s: %s", d->name, name, err.msg);
  } else {
    BD_LOGI("%s: model %s loaded in %.2f s", d->name, name, bd_now() - t0);
  }
  return m;
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

void *wk_exec_main(void *arg) {
  wk_exec_arg *ea = arg;
  wk_ctx *w = ea->w;
  wk_device *d = &w->dev[ea->dev];
  int di = ea->dev;
  free(ea);
  exec_model cache[WK_MODELS];
  memset(cache, 0, sizeof cache);
  bd_labels *labels = NULL;
  (void)bd_labels_coco(&labels, NULL);
  const bd_image *ptrs[WK_MAX_BATCH];
  bd_detect_params params[WK_MAX_BATCH];
  bd_detections dets[WK_MAX_BATCH];
  bd_status stat[WK_MAX_BATCH];
  for (;;) {
    void *p = NULL;
    if (bd_queue_pop(w->q_exec, &p, -1) != BD_OK) break;
    wk_batch *b = p;
    int n = 0; /* compact away dropped images */
    for (int i = 0; i < b->n; i++) {
      if (atomic_load(&b->items[i]->s->dropped))
        wk_item_finish(w, b->items[i]);
      else
        b->items[n++] = b->items[i];
    }
    b->n = n;
    if (n == 0) {
      free(b);
      continue;
    }
    const char *model = b->items[0]->s->m->model;
    exec_model *em = NULL;
    if (d->kind != BD_WDEV_SIM || w->cfg->models_dir_explicit) em = get_model(w, d, cache, model);
    double t0 = bd_now();
    /* A device that cannot run (driver failure, or a CUDA device in a build without
     * the CUDA backend) is the worker's fault, not the images'. */
    int dev_broken =
        em && em->error[0] &&
        (em->status == BD_E_DEVICE || (d->kind == BD_WDEV_CUDA && em->status == BD_E_UNSUPPORTED));
    if (dev_broken) {
      /* A broken device is not the images' fault: nothing is acknowledged, the worker
       * drains and exits so that the others (or a restart) redo these shards. */
      if (!atomic_exchange(&w->fatal, 1))
        snprintf(w->fatal_msg, sizeof w->fatal_msg, "%s: %s", d->name, em->error);
      for (int i = 0; i < n; i++) {
        atomic_store(&b->items[i]->s->dropped, 1);
        wk_item_finish(w, b->items[i]);
      }
      free(b);
      continue;
    }
    if (em && em->error[0]) {
      for (int i = 0; i < n; i++)
        snprintf(b->items[i]->err, sizeof b->items[i]->err, "%s", em->error);
    } else if (d->kind == BD_WDEV_SIM) {
      /* In slices, so that the end of a grace period does not wait for a long sim batch
       * (its shards are dropped then anyway). */
      double until = bd_now() + w->spec.sim_ms / 1000.0;
      while (!atomic_load(&w->force_stop) && bd_now() < until) {
        double left = until - bd_now();
        sleep_s(left < 0.05 ? left : 0.05);
      }
      for (int i = 0; i < n; i++) set_result(b->items[i], NULL, NULL);
    } else {
      for (int i = 0; i < n; i++) {
        const bd_manifest *m = b->items[i]->s->m;
        ptrs[i] = &b->items[i]->im;
        params[i].score_thr = m->has_score_thr ? (float)m->score_thr : -1.0f;
        params[i].iou_thr = m->has_iou_thr ? (float)m->iou_thr : -1.0f;
        params[i].max_det = m->has_max_det ? m->max_det : 0;
        memset(&dets[i], 0, sizeof dets[i]);
        stat[i] = BD_OK;
      }
      bd_err err = {0};
      if (bd_engine_detect(em->e, n, ptrs, params, dets, stat, &err) != BD_OK) {
        BD_LOGW("%s: batch of %d failed: %s", d->name, n, err.msg);
        for (int i = 0; i < n; i++)
          snprintf(b->items[i]->err, sizeof b->items[i]->err, "infer: %s", err.msg);
      } else {
        for (int i = 0; i < n; i++) {
          if (stat[i] != BD_OK)
            snprintf(b->items[i]->err, sizeof b->items[i]->err, "infer: %s",
                     bd_status_name(stat[i]));
          else
            set_result(b->items[i], &dets[i], labels);
        }
      }
      for (int i = 0; i < n; i++) bd_detections_free(&dets[i]);
    }
    bd_wk_metrics_observe(w->metrics, BD_WK_INFER, bd_now() - t0);
    long ok = 0, bad = 0;
    for (int i = 0; i < n; i++) {
      if (b->items[i]->err[0])
        bad++;
      else
        ok++;
      wk_item_finish(w, b->items[i]);
    }
    /* Images lost to a model that is not there are the job's errors, not the device's. */
    if (!(em && em->error[0])) {
      atomic_fetch_add(&d->images, ok + bad);
      atomic_fetch_add(&d->failed, bad);
      bd_wk_metrics_image(w->metrics, di, 1, ok);
      bd_wk_metrics_image(w->metrics, di, 0, bad);
    } else {
      bd_wk_metrics_image(w->metrics, -1, 0, bad);
    }
    free(b);
  }
  for (int i = 0; i < WK_MODELS; i++) bd_engine_destroy(cache[i].e);
  bd_labels_destroy(labels);
  return NULL;
}

/* ---- Redis writer ---- */

#define WK_WRITE_MAX 32

static void heartbeat(wk_ctx *w, bd_redis *r) {
  pthread_mutex_lock(&w->beat_mu);
  if (!w->beat_pending) {
    pthread_mutex_unlock(&w->beat_mu);
    return;
  }
  w->beat_pending = 0;
  char devs[sizeof w->beat_devices], rate[64], imgs[64], ts[64];
  memcpy(devs, w->beat_devices, sizeof devs);
  memcpy(rate, w->beat_img_s, sizeof rate);
  memcpy(imgs, w->beat_images, sizeof imgs);
  memcpy(ts, w->beat_ts, sizeof ts);
  pthread_mutex_unlock(&w->beat_mu);
  const char *f[] = {"host", "devices", "last_report", "img_s", "images"};
  const char *v[] = {w->host, devs, ts, rate, imgs};
  int ttl = (int)(3 * w->cfg->report_interval_s + 0.999);
  bd_err err = {0};
  if (bd_redis_worker_beat(r, w->worker_id, f, v, 5, ttl < 1 ? 1 : ttl, &err) != BD_OK)
    BD_LOGD("worker heartbeat: %s", err.msg);
}

static bd_status write_shards(wk_ctx *w, bd_redis *r, wk_shard **sh, int n, bd_err *err) {
  bd_status st = BD_OK;
  bd_redis_shard rs[WK_WRITE_MAX];
  bd_redis_image *imgs[WK_WRITE_MAX];
  int k = 0;
  memset(imgs, 0, sizeof imgs);
  for (int i = 0; i < n; i++) {
    wk_shard *s = sh[i];
    imgs[k] = calloc(s->m->n_images ? s->m->n_images : 1, sizeof(bd_redis_image));
    if (!imgs[k]) {
      st = bd_err_set(err, BD_E_NOMEM, "writer: out of memory");
      goto out;
    }
    s->failed = 0;
    for (size_t j = 0; j < s->m->n_images; j++) {
      if (!s->json[j]) wk_shard_set_error(s, j, "internal: no result");
      if (!s->json[j]) {
        st = bd_err_set(err, BD_E_NOMEM, "writer: out of memory");
        goto out;
      }
      imgs[k][j].image = s->m->images[j].id;
      imgs[k][j].json = s->json[j];
      imgs[k][j].error = s->error[j];
      if (s->error[j]) s->failed++;
    }
    memset(&rs[k], 0, sizeof rs[k]);
    rs[k].job = s->m->job;
    rs[k].shard = s->m->shard;
    rs[k].images = imgs[k];
    rs[k].n = s->m->n_images;
    k++;
  }
  double t0 = bd_now();
  st = bd_redis_complete_shards(r, rs, (size_t)k, err);
  bd_wk_metrics_observe(w->metrics, BD_WK_WRITE, bd_now() - t0);
out:
  for (int i = 0; i < WK_WRITE_MAX; i++) free(imgs[i]);
  return st;
}

void *wk_writer_main(void *arg) {
  wk_ctx *w = arg;
  bd_redis *r = NULL;
  double backoff = 0.1, next_connect = 0;
  int warned = 0, closed = 0;
  while (!closed) {
    wk_shard *sh[WK_WRITE_MAX];
    int n = 0;
    void *p = NULL;
    bd_status qs = bd_queue_pop(w->q_write, &p, 0.2);
    if (qs == BD_OK) {
      sh[n++] = p;
      while (n < WK_WRITE_MAX && bd_queue_pop(w->q_write, &p, 0) == BD_OK) sh[n++] = p;
    } else if (qs == BD_E_CANCELLED) {
      closed = 1;
    }
    /* Dropped shards go straight back: nothing is written for them. */
    int m = 0;
    for (int i = 0; i < n; i++) {
      if (atomic_load(&sh[i]->dropped))
        (void)bd_queue_push(w->q_done, sh[i], -1);
      else
        sh[m++] = sh[i];
    }
    n = m;
    for (;;) {
      if (!r && bd_now() >= next_connect) {
        bd_err err = {0};
        r = bd_redis_new(w->cfg->redis_url, NULL, &err);
        if (!r) {
          BD_LOGW("redis: %s (retrying in %.1f s)", err.msg, backoff);
          next_connect = bd_now() + backoff;
          backoff = backoff * 2 > 5 ? 5 : backoff * 2;
        } else {
          backoff = 0.1;
          if (!warned && bd_redis_persistence(r) == 0) {
            BD_LOGW(
                "redis: the server has no AOF persistence (appendonly no); a restart "
                "loses results");
            warned = 1;
          }
        }
      }
      if (r) heartbeat(w, r);
      if (n == 0) break;
      if (r) {
        bd_err err = {0};
        if (write_shards(w, r, sh, n, &err) == BD_OK) {
          for (int i = 0; i < n; i++) (void)bd_queue_push(w->q_done, sh[i], -1);
          break;
        }
        BD_LOGW("redis: writing %d shards: %s (retrying)", n, err.msg);
        bd_redis_destroy(r);
        r = NULL;
        next_connect = bd_now() + backoff;
        backoff = backoff * 2 > 5 ? 5 : backoff * 2;
      }
      if (atomic_load(&w->force_stop)) {
        /* Not stored: never acknowledged, so another worker redoes them. */
        for (int i = 0; i < n; i++) {
          atomic_store(&sh[i]->dropped, 1);
          (void)bd_queue_push(w->q_done, sh[i], -1);
        }
        break;
      }
      sleep_s(0.05);
    }
  }
  bd_redis_destroy(r);
  return NULL;
}
