/* The worker's pipeline stages after the poll thread: fetch completion, decode pool,
 * batcher and the Redis writer (the executors are in bd_wk_exec.c). Each runs in its own
 * thread(s) and talks to the next through a bounded bd_queue; see bd_worker.h for the
 * whole picture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bd_config.h"
#include "bd_engine.h"
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
  if (it->pixel_bytes) atomic_fetch_sub(&w->decoded_bytes, it->pixel_bytes);
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

/* Waits until `need` more bytes of decoded pixels fit under --max-inflight-mb, then
 * counts them (decoded_bytes), so that a shard of large images cannot take the worker's
 * memory: images already decoded leave it as batches go through the network. One image
 * always goes when nothing else is decoded, however large; a stopping worker does not
 * wait. The budget bounds the pixels; the fetched bytes are bounded per shard. */
static void reserve_pixels(wk_ctx *w, long long need) {
  const long long cap = (long long)w->cfg->max_inflight_mb << 20;
  for (;;) {
    long long cur = atomic_load(&w->decoded_bytes);
    if (cur > 0 && cur + need > cap && !atomic_load(&w->force_stop)) {
      sleep_s(0.002);
      continue;
    }
    if (atomic_compare_exchange_weak(&w->decoded_bytes, &cur, cur + need)) {
      long long peak = atomic_load(&w->decoded_peak);
      while (cur + need > peak &&
             !atomic_compare_exchange_weak(&w->decoded_peak, &peak, cur + need))
        ;
      return;
    }
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
    int pw = 0, ph = 0;
    const long long need =
        bd_decode_peek_size(it->data, it->len, &pw, &ph) ? (long long)pw * ph * 3 : 0;
    reserve_pixels(w, need);
    it->pixel_bytes = need;
    double t0 = bd_now();
    bd_decode_info info;
    memset(&info, 0, sizeof info);
    bd_status st =
        d ? bd_decoder_decode(d, it->data, it->len, NULL, &it->im, &info, &err) : BD_E_NOMEM;
    /* PNGs may be wider than pre-processing takes: say so, not "invalid" later */
    if (st == BD_OK && (st = bd_engine_check_image_size(it->im.w, it->im.h, &err)) != BD_OK)
      bd_image_free(&it->im);
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
    /* the reservation becomes the decoded size (smaller when DCT scaling applied) */
    atomic_fetch_add(&w->decoded_bytes, (long long)it->im.w * it->im.h * 3 - it->pixel_bytes);
    it->pixel_bytes = (long long)it->im.w * it->im.h * 3;
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
    rs[k].gen = s->m->gen;
    rs[k].images = imgs[k];
    rs[k].n = s->m->n_images;
    k++;
  }
  double t0 = bd_now();
  st = bd_redis_complete_shards(r, rs, (size_t)k, err);
  bd_wk_metrics_observe(w->metrics, BD_WK_WRITE, bd_now() - t0);
  for (int i = 0; i < k && st == BD_OK; i++)
    if (rs[i].applied == -2)
      snprintf(sh[i]->refused, sizeof sh[i]->refused,
               "shard %lld is not part of job %s, which has shards 0..%lld (results not "
               "stored)",
               (long long)rs[i].shard, rs[i].job, (long long)rs[i].job_shards - 1);
    else if (rs[i].applied < 0)
      BD_LOGW(
          "shard %s/%lld: the job was submitted again (--force) or deleted since this "
          "shard was queued; its results were not stored",
          rs[i].job, (long long)rs[i].shard);
out:
  for (int i = 0; i < WK_WRITE_MAX; i++) free(imgs[i]);
  return st;
}

/* One warning when Redis becomes unavailable, a reminder every 30 s while it stays so,
 * and a line when it is back: an outage is visible at once, and not a line per retry. */
typedef struct outage {
  double t0, last_warn; /* t0 == 0: none */
} outage;

static void outage_fail(outage *o, const char *what, const char *msg, double retry_s) {
  double now = bd_now();
  if (o->t0 == 0) {
    o->t0 = o->last_warn = now;
    BD_LOGW(
        "redis: %s: %s (unavailable; shards wait and nothing is acknowledged; retrying "
        "in %.1f s)",
        what, msg, retry_s);
  } else if (now - o->last_warn >= 30) {
    o->last_warn = now;
    BD_LOGW("redis: still unavailable after %.0f s: %s: %s", now - o->t0, what, msg);
  } else {
    BD_LOGD("redis: %s: %s (retrying in %.1f s)", what, msg, retry_s);
  }
}

static void outage_ok(outage *o) {
  if (o->t0 == 0) return;
  BD_LOGW("redis: available again after %.1f s", bd_now() - o->t0);
  o->t0 = 0;
}

void *wk_writer_main(void *arg) {
  wk_ctx *w = arg;
  bd_redis *r = NULL;
  double backoff = 0.1, next_connect = 0;
  int warned = 0, closed = 0;
  outage down = {0, 0};
  /* One quick retry inside bd_redis, then this loop's backoff and its outage lines. */
  bd_redis_opts ro;
  bd_redis_opts_default(&ro);
  ro.max_attempts = 2;
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
        r = bd_redis_new(w->cfg->redis_url, &ro, &err);
        if (!r) {
          outage_fail(&down, "connecting", err.msg, backoff);
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
          outage_ok(&down);
          for (int i = 0; i < n; i++) (void)bd_queue_push(w->q_done, sh[i], -1);
          break;
        }
        char what[64];
        snprintf(what, sizeof what, "writing %d shards", n);
        outage_fail(&down, what, err.msg, backoff);
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
