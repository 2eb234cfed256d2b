/* The worker's poll thread: consumer, manifests, dead letters, offsets, backpressure,
 * reports, and the startup and drain of the other stages (bd_wk_stages.c). */
#include "bd_worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bd_config.h"
#include "bd_log.h"
#include "bd_offsets.h"
#include "bd_pool.h"
#include "bd_redis.h"
#include "bd_report.h"
#include "bd_wk_internal.h"

/* The CUDA backend's probe, only to count GPUs (as bd_pool does) for the device list. */
#if defined(BD_HAVE_CUDA) && defined(__has_include)
#if __has_include("cuda/bd_cuda_probe.h")
#include "cuda/bd_cuda_probe.h"
#define BD_WORKER_CUDA 1
#endif
#endif

static atomic_int g_stop;

int bd_worker_stop(void) {
  return atomic_fetch_add(&g_stop, 1) >= 1;
}

void bd_worker_config_default(bd_worker_config *c) {
  memset(c, 0, sizeof *c);
  c->brokers = "127.0.0.1:9092";
  c->redis_url = "redis://127.0.0.1:6379";
  c->models_dir = "models";
  c->devices = "cpu";
  c->instances_per_gpu = 1;
  c->group = "batchdet-workers";
  c->topic = "batchdet.jobs";
  c->reports_topic = "batchdet.reports";
  c->dlq_topic = "batchdet.jobs.dlq";
  c->batch = 8;
  c->batch_timeout_ms = 50;
  c->fetch_concurrency = 64;
  c->decode_threads = 2;
  c->max_inflight_mb = 1024;
  c->max_inflight_shards = 8;
  c->report_interval_s = 5;
  c->grace_s = 30;
}

/* Instance names exactly as bd_pool will give them, so that a result's instance finds
 * its device entry. n_gpus: the visible GPUs a cuda spec is checked against (64: any
 * listed GPU passes, for the syntax check). */
static bd_status name_instances(bd_wdev_spec *o, int n_gpus, bd_err *err) {
  bd_pool_instance_spec specs[BD_WORKER_MAX_DEVICES];
  bd_err perr = {0};
  int n = bd_pool_parse_devices(o->pool_devices, o->per_device, 0, n_gpus, specs,
                                BD_WORKER_MAX_DEVICES, &perr);
  if (n < 0)
    return bd_err_set(err, perr.code, "--devices %s: %s", o->pool_devices,
                      strncmp(perr.msg, "pool: ", 6) == 0 ? perr.msg + 6 : perr.msg);
  o->n = n;
  for (int i = 0; i < n; i++) snprintf(o->name[i], sizeof o->name[i], "%s", specs[i].name);
  return BD_OK;
}

bd_status bd_worker_parse_devices(const char *s, int per_gpu, bd_wdev_spec *o, bd_err *err) {
  memset(o, 0, sizeof *o);
  char *end = NULL;
  if (!s || !*s) return bd_err_set(err, BD_E_INVALID, "--devices: empty");
  if (strncmp(s, "sim:", 4) == 0) {
    errno = 0;
    long n = strtol(s + 4, &end, 10);
    if (errno || end == s + 4 || *end != ':' || n < 1 || n > BD_WORKER_MAX_DEVICES)
      return bd_err_set(err, BD_E_INVALID, "--devices %s: want sim:N:MS with N in 1..%d", s,
                        BD_WORKER_MAX_DEVICES);
    const char *p = end + 1;
    long ms = strtol(p, &end, 10);
    if (errno || end == p || *end || ms < 0 || ms > 60000)
      return bd_err_set(err, BD_E_INVALID, "--devices %s: MS must be 0..60000", s);
    o->kind = BD_WDEV_SIM;
    o->n = (int)n;
    o->sim_ms = (int)ms;
    for (int i = 0; i < o->n; i++) snprintf(o->name[i], sizeof o->name[i], "sim:%d", i);
    return BD_OK;
  }
  if (strcmp(s, "cpu") == 0 || strncmp(s, "cpu:", 4) == 0) {
    long n = 1;
    if (s[3] == ':') {
      errno = 0;
      n = strtol(s + 4, &end, 10);
      if (errno || end == s + 4 || *end || s[4] < '0' || s[4] > '9' || n < 1 ||
          n > BD_POOL_MAX_PER_DEVICE)
        return bd_err_set(err, BD_E_INVALID, "--devices %s: want cpu:N with N in 1..%d", s,
                          BD_POOL_MAX_PER_DEVICE);
    }
    /* "cpu:N" is N instances of the cpu in one pool ("cpu:N" in bd_pool's own grammar
     * would be one instance with N threads: threads come from --cpu-threads instead). */
    o->kind = BD_WDEV_CPU;
    o->per_device = (int)n;
    snprintf(o->pool_devices, sizeof o->pool_devices, "cpu");
    return name_instances(o, 0, err);
  }
  if (strcmp(s, "cuda") != 0 && strncmp(s, "cuda:", 5) != 0)
    return bd_err_set(err, BD_E_INVALID,
                      "--devices %s: want cpu, cpu:N, cuda, cuda:I,J or sim:N:MS", s);
  if (per_gpu < 1 || per_gpu > BD_POOL_MAX_PER_DEVICE)
    return bd_err_set(err, BD_E_INVALID, "--instances-per-gpu %d: want 1..%d", per_gpu,
                      BD_POOL_MAX_PER_DEVICE);
  o->kind = BD_WDEV_CUDA;
  o->per_device = per_gpu;
  if (strcmp(s, "cuda") == 0) {
    o->all_gpus = 1; /* named by bd_worker_resolve_devices, once the GPUs are counted */
    snprintf(o->pool_devices, sizeof o->pool_devices, "cuda");
    return BD_OK;
  }
  /* The pool gets the list written back canonically (strtol would also take " 1" or
   * "+1", which bd_pool does not). */
  size_t len = (size_t)snprintf(o->pool_devices, sizeof o->pool_devices, "cuda:");
  int seen[64] = {0}, n = 0;
  const char *p = s + 5;
  do {
    errno = 0;
    long id = (*p >= '0' && *p <= '9') ? strtol(p, &end, 10) : -1;
    if (id < 0 || errno || (*end && (*end != ',' || !end[1])) || id > 63)
      return bd_err_set(err, BD_E_INVALID, "--devices %s: want cuda:I[,J...] with I in 0..63", s);
    if (seen[id])
      return bd_err_set(err, BD_E_INVALID,
                        "--devices %s: GPU %ld listed twice (--instances-per-gpu runs several "
                        "engines on one GPU)",
                        s, id);
    seen[id] = 1;
    len += (size_t)snprintf(o->pool_devices + len, sizeof o->pool_devices - len, "%s%ld",
                            n++ ? "," : "", id);
    p = *end ? end + 1 : end;
  } while (*p);
  /* Named as if every listed GPU were visible; resolve checks that they are. */
  return name_instances(o, 64, err);
}

bd_status bd_worker_resolve_devices(bd_wdev_spec *o, int n_gpus, bd_err *err) {
  if (o->kind != BD_WDEV_CUDA) return BD_OK;
  if (n_gpus < 0)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "--devices %s: this build has no CUDA backend (use cpu, cpu:N or sim:N:MS)",
                      o->pool_devices);
  if (n_gpus == 0)
    return bd_err_set(err, BD_E_DEVICE, "--devices %s: no CUDA device is visible", o->pool_devices);
  bd_wdev_spec t = *o;
  bd_status st = name_instances(&t, n_gpus, err);
  if (st == BD_OK) *o = t;
  return st;
}

int bd_worker_visible_gpus(void) {
#ifdef BD_WORKER_CUDA
  return bd_cuda_device_count();
#else
  return -1;
#endif
}

/* ---- the poll thread's state ---- */

typedef struct dlq_entry {
  struct dlq_entry *next;
  char topic[256];
  int32_t partition;
  int64_t offset;
  char *key, *payload;
  size_t len;
  char reason[BD_ERR_MSG_MAX];
  double next_try;
} dlq_entry;

typedef struct poller {
  wk_ctx *w;
  bd_kafka_consumer *cons;
  bd_kafka_producer *prod;
  bd_offsets *offs;
  wk_shard *shards; /* registry of in-flight shards */
  dlq_entry *dlq;
  bd_report *pending; /* shards finished since the last report */
  int paused;
  double last_pause;
} poller;

static void shard_free(wk_shard *s) {
  if (!s) return;
  for (size_t i = 0; s->m && i < s->m->n_images; i++) {
    if (s->json) free(s->json[i]);
    if (s->error) free(s->error[i]);
  }
  free(s->json);
  free(s->error);
  bd_manifest_destroy(s->m);
  free(s);
}

static void on_revoke(void *ctx, const char *topic, int32_t partition) {
  poller *p = ctx;
  int n = 0;
  for (wk_shard *s = p->shards; s; s = s->next)
    if (s->partition == partition && strcmp(s->topic, topic) == 0 && !atomic_load(&s->dropped)) {
      atomic_store(&s->dropped, 1);
      n++;
    }
  bd_offsets_revoke(p->offs, topic, partition);
  /* Always INFO, like assignments: rebalances are rare, and a partition's owners over
   * time are what one needs to explain a shard that waits in Kafka. */
  bd_log(BD_LOG_INFO, "partition %s[%d] revoked: %d in-flight shards dropped", topic,
         (int)partition, n);
}

/* Logged so that a partition's owners over time can be followed across the workers' logs. */
static void on_assign(void *ctx, const char *topic, int32_t partition) {
  (void)ctx;
  bd_log(BD_LOG_INFO, "partition %s[%d] assigned", topic, (int)partition);
}

static void store_cb(void *ctx, const char *topic, int32_t partition, int64_t offset) {
  poller *p = ctx;
  bd_err err = {0};
  if (bd_kafka_consumer_store(p->cons, topic, partition, offset, &err) != BD_OK)
    BD_LOGW("%s", err.msg);
  else
    BD_LOGD("stored offset %s[%d]@%lld", topic, (int)partition, (long long)offset);
}

static void send_report(poller *p, int periodic) {
  wk_ctx *w = p->w;
  bd_report *r = p->pending ? p->pending : bd_report_new();
  p->pending = NULL;
  if (!r) return;
  double now = bd_now();
  snprintf(r->worker, sizeof r->worker, "%s", w->worker_id);
  snprintf(r->host, sizeof r->host, "%s", w->host);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  r->ts = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  double total_rate = 0;
  long long total = 0;
  char devs[1024] = "";
  size_t dl = 0;
  for (int i = 0; i < w->n_dev; i++) {
    wk_device *d = &w->dev[i];
    long long img = atomic_load(&d->images);
    if (periodic && now > d->prev_t) {
      atomic_store(&d->img_s, (double)(img - d->prev_images) / (now - d->prev_t));
      d->prev_images = img;
      d->prev_t = now;
    }
    total_rate += atomic_load(&d->img_s);
    total += img;
    (void)bd_report_add_device(r, d->name, img, atomic_load(&d->failed), atomic_load(&d->img_s),
                               NULL);
    int k = snprintf(devs + dl, sizeof devs - dl, "%s%s", i ? "," : "", d->name);
    if (k > 0 && dl + (size_t)k < sizeof devs) dl += (size_t)k;
  }
  bd_fetch_stats fs;
  memset(&fs, 0, sizeof fs);
  if (w->fetch) bd_fetch_stats_get(w->fetch, &fs);
  (void)bd_report_add_queue(r, "fetch", fs.outstanding, NULL);
  (void)bd_report_add_queue(r, "decode", (int64_t)bd_queue_len(w->q_decode), NULL);
  (void)bd_report_add_queue(r, "batch", (int64_t)bd_queue_len(w->q_batch), NULL);
  (void)bd_report_add_queue(r, "exec", (int64_t)bd_queue_len(w->q_exec), NULL);
  (void)bd_report_add_queue(r, "write", (int64_t)bd_queue_len(w->q_write), NULL);
  char *js = NULL;
  size_t len = 0;
  bd_err err = {0};
  if (bd_report_encode(r, &js, &len, &err) != BD_OK)
    BD_LOGW("report: %s", err.msg);
  else if (bd_kafka_produce(p->prod, w->cfg->reports_topic, w->worker_id, js, len, NULL, NULL,
                            &err) != BD_OK)
    BD_LOGW("report: %s", err.msg);
  free(js);
  bd_report_destroy(r);
  if (periodic) {
    pthread_mutex_lock(&w->beat_mu);
    snprintf(w->beat_devices, sizeof w->beat_devices, "%s", devs);
    snprintf(w->beat_img_s, sizeof w->beat_img_s, "%.1f", total_rate);
    snprintf(w->beat_images, sizeof w->beat_images, "%lld", total);
    snprintf(w->beat_ts, sizeof w->beat_ts, "%.3f", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    w->beat_pending = 1;
    pthread_mutex_unlock(&w->beat_mu);
  }
}

static int dlq_send(poller *p, dlq_entry *e) {
  bd_err err = {0};
  if (bd_kafka_produce(p->prod, p->w->cfg->dlq_topic, e->key, e->payload, e->len, "error",
                       e->reason, &err) != BD_OK ||
      bd_kafka_flush(p->prod, 10000, NULL, &err) != BD_OK) {
    BD_LOGW("dead-letter %s[%d]@%lld: %s (retrying)", e->topic, (int)e->partition,
            (long long)e->offset, err.msg);
    return -1;
  }
  return 0;
}

static void dlq_entry_free(dlq_entry *e) {
  if (!e) return;
  free(e->key);
  free(e->payload);
  free(e);
}

static void dlq_retry(poller *p) {
  double now = bd_now();
  int stored = 0;
  for (dlq_entry **pp = &p->dlq; *pp;) {
    dlq_entry *e = *pp;
    if (e->next_try > now) {
      pp = &e->next;
      continue;
    }
    if (dlq_send(p, e) != 0) {
      e->next_try = now + 2;
      pp = &e->next;
      continue;
    }
    (void)bd_offsets_done(p->offs, e->topic, e->partition, e->offset);
    *pp = e->next;
    dlq_entry_free(e);
    stored = 1;
  }
  if (stored) bd_offsets_foreach_committable(p->offs, store_cb, p);
}

/* Redis refused a shard as not part of its job: the manifest goes to the dead-letter
 * topic (re-encoded; the message's bytes are long freed) and its offset completes when
 * that is stored. Returns 0, or -1 when out of memory (the offset is then redone). */
static int refused_to_dlq(poller *p, wk_shard *s) {
  dlq_entry *e = calloc(1, sizeof *e);
  bd_err err = {0};
  if (!e || !(e->key = strdup(s->m->job)) ||
      bd_manifest_encode(s->m, &e->payload, &e->len, &err) != BD_OK) {
    BD_LOGE("shard %s/%lld: cannot dead-letter it: %s", s->m->job, (long long)s->m->shard,
            err.msg[0] ? err.msg : "out of memory");
    dlq_entry_free(e);
    return -1;
  }
  snprintf(e->topic, sizeof e->topic, "%s", s->topic);
  e->partition = s->partition;
  e->offset = s->offset;
  snprintf(e->reason, sizeof e->reason, "%s", s->refused);
  BD_LOGW("shard %s[%d]@%lld to %s: %s", e->topic, (int)e->partition, (long long)e->offset,
          p->w->cfg->dlq_topic, e->reason);
  atomic_fetch_add(&p->w->dlq_count, 1);
  e->next = p->dlq;
  p->dlq = e;
  return 0;
}

/* A shard came back from the writer: its results are in Redis (or it was dropped, or
 * refused). */
static void shard_returned(poller *p, wk_shard *s) {
  wk_ctx *w = p->w;
  if (!atomic_load(&s->dropped) && s->refused[0]) {
    if (refused_to_dlq(p, s) != 0) bd_offsets_revoke(p->offs, s->topic, s->partition);
  } else if (!atomic_load(&s->dropped)) {
    /* Revocation marks shards dropped on this same thread, so a shard that is not
     * dropped still owns its tracked offset (not a re-tracked one of a new assignment). */
    if (bd_offsets_done(p->offs, s->topic, s->partition, s->offset) != BD_OK)
      BD_LOGW("shard %s/%lld: offset %lld not tracked", s->m->job, (long long)s->m->shard,
              (long long)s->offset);
    atomic_fetch_add(&w->shards_done, 1);
    if (!p->pending) p->pending = bd_report_new();
    if (p->pending)
      (void)bd_report_add_shard(p->pending, s->m->job, s->m->shard, (int64_t)s->m->n_images,
                                s->failed, NULL);
    BD_LOGD("shard %s/%lld done: %zu images, %d failed, %.2f s", s->m->job, (long long)s->m->shard,
            s->m->n_images, s->failed, bd_now() - s->t0);
  } else {
    atomic_fetch_add(&w->shards_dropped, 1);
  }
  for (wk_shard **pp = &p->shards; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  shard_free(s);
  atomic_fetch_sub(&w->inflight_shards, 1);
}

static void drain_done(poller *p) {
  void *x = NULL;
  int n = 0;
  while (bd_queue_pop(p->w->q_done, &x, 0) == BD_OK) {
    shard_returned(p, x);
    n++;
  }
  if (n) {
    if (p->dlq) dlq_retry(p);
    bd_offsets_foreach_committable(p->offs, store_cb, p);
  }
}

/* Hands images of registered shards to the fetcher, as many as it accepts now. */
static void submit_pending(poller *p) {
  wk_ctx *w = p->w;
  for (wk_shard *s = p->shards; s; s = s->next) {
    size_t n = s->m->n_images;
    if ((size_t)s->submitted >= n) continue;
    if (atomic_load(&s->dropped)) {
      int left = (int)n - s->submitted;
      s->submitted = (int)n;
      if (atomic_fetch_sub(&s->remaining, left) == left) (void)bd_queue_push(w->q_write, s, -1);
      continue;
    }
    while ((size_t)s->submitted < n) {
      wk_item *it = calloc(1, sizeof *it);
      if (!it) return;
      it->s = s;
      it->idx = (size_t)s->submitted;
      bd_err err = {0};
      bd_status st =
          bd_fetch_submit(w->fetch, (uint64_t)it->idx, s->m->images[it->idx].url, it, 0, &err);
      if (st == BD_E_UNAVAILABLE) { /* queue full: the fetcher pushes back */
        free(it);
        return;
      }
      s->submitted++;
      if (st != BD_OK) {
        snprintf(it->err, sizeof it->err, "fetch: %s", err.msg);
        wk_item_finish(w, it);
      }
    }
  }
}

static void handle_message(poller *p, bd_kafka_msg *msg) {
  wk_ctx *w = p->w;
  bd_err err = {0};
  if (bd_offsets_track(p->offs, msg->topic, msg->partition, msg->offset, &err) != BD_OK) {
    BD_LOGE("offsets: %s", err.msg);
    return; /* not tracked: never stored, so it is redelivered */
  }
  bd_manifest *m = NULL;
  bd_proto_errors *pe = calloc(1, sizeof *pe);
  bd_status st = pe ? bd_manifest_decode(msg->payload, msg->len, &m, pe) : BD_E_NOMEM;
  if (st != BD_OK) {
    dlq_entry *e = calloc(1, sizeof *e);
    if (pe)
      bd_proto_errors_to_err(pe, &err);
    else
      bd_err_set(&err, BD_E_NOMEM, "out of memory");
    free(pe);
    if (!e) return;
    snprintf(e->topic, sizeof e->topic, "%s", msg->topic);
    e->partition = msg->partition;
    e->offset = msg->offset;
    e->key = msg->key;
    e->payload = msg->payload;
    e->len = msg->len;
    msg->key = msg->payload = NULL;
    snprintf(e->reason, sizeof e->reason, "%s", err.msg[0] ? err.msg : bd_status_name(st));
    BD_LOGW("malformed manifest %s[%d]@%lld to %s: %s", e->topic, (int)e->partition,
            (long long)e->offset, w->cfg->dlq_topic, e->reason);
    atomic_fetch_add(&w->dlq_count, 1);
    e->next = p->dlq;
    p->dlq = e;
    dlq_retry(p);
    return;
  }
  free(pe);
  wk_shard *s = calloc(1, sizeof *s);
  size_t n = m->n_images;
  if (s) {
    s->json = calloc(n ? n : 1, sizeof *s->json);
    s->error = calloc(n ? n : 1, sizeof *s->error);
  }
  if (!s || !s->json || !s->error) {
    if (s) {
      free(s->json);
      free(s->error);
      free(s);
    }
    bd_manifest_destroy(m);
    bd_offsets_revoke(p->offs, msg->topic, msg->partition); /* redo from the last store */
    BD_LOGE("out of memory for shard %s[%d]@%lld", msg->topic, (int)msg->partition,
            (long long)msg->offset);
    return;
  }
  s->m = m;
  snprintf(s->topic, sizeof s->topic, "%s", msg->topic);
  s->partition = msg->partition;
  s->offset = msg->offset;
  s->t0 = bd_now();
  atomic_store(&s->remaining, (int)n);
  s->next = p->shards;
  p->shards = s;
  atomic_fetch_add(&w->inflight_shards, 1);
  BD_LOGD("shard %s/%lld from %s[%d]@%lld: %zu images", m->job, (long long)m->shard, s->topic,
          (int)s->partition, (long long)s->offset, n);
  char path[4096];
  int check = w->spec.kind != BD_WDEV_SIM || w->cfg->models_dir_explicit;
  if (n == 0) {
    (void)bd_queue_push(w->q_write, s, -1);
  } else if (check && !wk_model_path(w, m->model, path, sizeof path)) {
    /* Fetching images for a model this worker does not have would be wasted work. */
    char msgbuf[BD_ID_MAX + 64];
    snprintf(msgbuf, sizeof msgbuf, "model: unknown model '%s'", m->model);
    for (size_t i = 0; i < n; i++) wk_shard_set_error(s, i, msgbuf);
    atomic_fetch_add(&w->pipe_failed, (long long)n);
    bd_wk_metrics_image(w->metrics, -1, 0, (long)n);
    s->submitted = (int)n;
    atomic_store(&s->remaining, 0);
    (void)bd_queue_push(w->q_write, s, -1);
  }
}

static void backpressure(poller *p) {
  wk_ctx *w = p->w;
  long long max_bytes = (long long)w->cfg->max_inflight_mb << 20;
  int shards = atomic_load(&w->inflight_shards);
  long long bytes = atomic_load(&w->inflight_bytes);
  bd_err err = {0};
  double now = bd_now();
  if (shards >= w->cfg->max_inflight_shards || bytes > max_bytes) {
    /* bd_kafka pauses partitions assigned while paused; re-pausing now and then is a
     * cheap safety net on top of that. */
    if (!p->paused || now - p->last_pause > 1.0) {
      if (bd_kafka_consumer_pause(p->cons, 1, &err) != BD_OK) BD_LOGD("%s", err.msg);
      if (!p->paused) BD_LOGD("paused: %d shards, %lld bytes in flight", shards, bytes);
      p->paused = 1;
      p->last_pause = now;
    }
  } else if (p->paused && shards <= w->cfg->max_inflight_shards / 2 && bytes <= max_bytes / 2) {
    if (bd_kafka_consumer_pause(p->cons, 0, &err) != BD_OK) BD_LOGD("%s", err.msg);
    p->paused = 0;
    BD_LOGD("resumed");
  }
}

static void gauges(void *ctx, bd_wk_text *t) {
  wk_ctx *w = ctx;
  bd_wk_text_printf(t, "# TYPE batchdet_device_img_s gauge\n");
  for (int i = 0; i < w->n_dev; i++)
    bd_wk_text_printf(t, "batchdet_device_img_s{device=\"%s\"} %.3f\n", w->dev[i].name,
                      atomic_load(&w->dev[i].img_s));
  bd_fetch_stats fs;
  memset(&fs, 0, sizeof fs);
  if (w->fetch) bd_fetch_stats_get(w->fetch, &fs);
  bd_wk_text_printf(t,
                    "# TYPE batchdet_queue_depth gauge\n"
                    "batchdet_queue_depth{queue=\"fetch\"} %d\n"
                    "batchdet_queue_depth{queue=\"decode\"} %zu\n"
                    "batchdet_queue_depth{queue=\"batch\"} %zu\n"
                    "batchdet_queue_depth{queue=\"exec\"} %zu\n"
                    "batchdet_queue_depth{queue=\"write\"} %zu\n",
                    fs.outstanding, bd_queue_len(w->q_decode), bd_queue_len(w->q_batch),
                    bd_queue_len(w->q_exec), bd_queue_len(w->q_write));
  bd_wk_text_printf(t,
                    "# TYPE batchdet_inflight_shards gauge\nbatchdet_inflight_shards %d\n"
                    "# TYPE batchdet_inflight_bytes gauge\nbatchdet_inflight_bytes %lld\n"
                    "# TYPE batchdet_decoded_bytes gauge\nbatchdet_decoded_bytes %lld\n"
                    "# TYPE batchdet_decoded_bytes_peak gauge\nbatchdet_decoded_bytes_peak %lld\n"
                    "# TYPE batchdet_kafka_lag gauge\nbatchdet_kafka_lag %lld\n"
                    "# TYPE batchdet_shards_total counter\n"
                    "batchdet_shards_total{status=\"done\"} %lld\n"
                    "batchdet_shards_total{status=\"dropped\"} %lld\n"
                    "batchdet_shards_total{status=\"dead_letter\"} %lld\n",
                    atomic_load(&w->inflight_shards), atomic_load(&w->inflight_bytes),
                    atomic_load(&w->decoded_bytes), atomic_load(&w->decoded_peak),
                    atomic_load(&w->lag), atomic_load(&w->shards_done),
                    atomic_load(&w->shards_dropped), atomic_load(&w->dlq_count));
}

static int health(void *ctx) {
  wk_ctx *w = ctx;
  return atomic_load(&w->consumer_ok);
}

static bd_status start_stages(wk_ctx *w, bd_err *err) {
  const bd_worker_config *c = w->cfg;
  bd_status st;
  if ((st = bd_queue_new(256, &w->q_decode, err)) || (st = bd_queue_new(256, &w->q_batch, err)) ||
      (st = bd_queue_new((size_t)(2 * w->n_dev + 2), &w->q_exec, err)) ||
      (st = bd_queue_new((size_t)c->max_inflight_shards * 4 + 4096, &w->q_write, err)) ||
      (st = bd_queue_new((size_t)c->max_inflight_shards * 4 + 4096, &w->q_done, err)))
    return st;
  bd_fetch_opts fo;
  bd_fetch_opts_default(&fo);
  fo.concurrency = c->fetch_concurrency;
  fo.queue_max = c->fetch_concurrency * 4;
  fo.allow_file = c->allow_file;
  w->fetch = bd_fetch_new(&fo, wk_fetch_done, w, err);
  if (!w->fetch) return err ? err->code : BD_E_INTERNAL;
  w->decoders = calloc((size_t)c->decode_threads, sizeof *w->decoders);
  if (!w->decoders) return bd_err_set(err, BD_E_NOMEM, "worker: out of memory");
  for (int i = 0; i < c->decode_threads; i++) {
    if (pthread_create(&w->decoders[i], NULL, wk_decode_main, w) != 0)
      return bd_err_set(err, BD_E_INTERNAL, "worker: cannot start decode thread");
    w->n_decoders++;
  }
  if (pthread_create(&w->batcher, NULL, wk_batcher_main, w) != 0)
    return bd_err_set(err, BD_E_INTERNAL, "worker: cannot start batcher");
  w->batcher_started = 1;
  if (w->spec.kind == BD_WDEV_SIM) {
    for (int i = 0; i < w->n_dev; i++) {
      wk_exec_arg *ea = malloc(sizeof *ea);
      if (!ea) return bd_err_set(err, BD_E_NOMEM, "worker: out of memory");
      ea->w = w;
      ea->dev = i;
      if (pthread_create(&w->dev[i].thread, NULL, wk_exec_sim_main, ea) != 0) {
        free(ea);
        return bd_err_set(err, BD_E_INTERNAL, "worker: cannot start executor %s", w->dev[i].name);
      }
      w->dev[i].started = 1;
    }
  } else {
    if (pthread_create(&w->executor, NULL, wk_exec_pool_main, w) != 0)
      return bd_err_set(err, BD_E_INTERNAL, "worker: cannot start the executor");
    w->executor_started = 1;
  }
  if (pthread_create(&w->writer, NULL, wk_writer_main, w) != 0)
    return bd_err_set(err, BD_E_INTERNAL, "worker: cannot start writer");
  w->writer_started = 1;
  return BD_OK;
}

/* Joins the stages in pipeline order so each drains into the next. */
static void stop_stages(wk_ctx *w) {
  bd_wk_metrics_stop(w->metrics); /* its scrape callback reads the stages */
  bd_fetch_destroy(w->fetch);
  w->fetch = NULL;
  if (w->q_decode) bd_queue_close(w->q_decode);
  for (int i = 0; i < w->n_decoders; i++) pthread_join(w->decoders[i], NULL);
  w->n_decoders = 0;
  if (w->q_batch) bd_queue_close(w->q_batch);
  if (w->batcher_started) pthread_join(w->batcher, NULL);
  w->batcher_started = 0;
  if (w->q_exec) bd_queue_close(w->q_exec);
  for (int i = 0; i < w->n_dev; i++)
    if (w->dev[i].started) pthread_join(w->dev[i].thread, NULL);
  for (int i = 0; i < w->n_dev; i++) w->dev[i].started = 0;
  if (w->executor_started) pthread_join(w->executor, NULL); /* after its pools drained */
  w->executor_started = 0;
  if (w->q_write) bd_queue_close(w->q_write);
  if (w->writer_started) pthread_join(w->writer, NULL);
  w->writer_started = 0;
}

bd_status bd_worker_run(const bd_worker_config *c, bd_err *err) {
  bd_status st = BD_OK;
  wk_ctx *w = calloc(1, sizeof *w);
  poller P;
  memset(&P, 0, sizeof P);
  if (!w) return bd_err_set(err, BD_E_NOMEM, "worker: out of memory");
  pthread_mutex_init(&w->beat_mu, NULL);
  w->cfg = c;
  P.w = w;
  if (c->batch < 1 || c->batch > WK_MAX_BATCH || c->decode_threads < 1 ||
      c->instances_per_gpu < 1 || c->instances_per_gpu > BD_POOL_MAX_PER_DEVICE ||
      c->fetch_concurrency < 1 || c->max_inflight_shards < 1 || c->max_inflight_mb < 1 ||
      c->report_interval_s <= 0) {
    st = bd_err_set(err, BD_E_INVALID, "worker: a numeric option is out of range");
    goto out;
  }
  if ((st = bd_worker_parse_devices(c->devices, c->instances_per_gpu, &w->spec, err))) goto out;
  if (w->spec.kind == BD_WDEV_CUDA) {
    bd_err rerr = {0};
    if (bd_worker_resolve_devices(&w->spec, bd_worker_visible_gpus(), &rerr) != BD_OK) {
      /* Not fatal yet: like a device that fails to load a model, the worker fails at its
       * first batch, when the model's pool cannot be created (BD_E_DEVICE, or
       * BD_E_UNSUPPORTED without the CUDA backend). Until then "cuda" is listed as GPU 0. */
      BD_LOGW("%s: its batches will fail", rerr.msg);
      if (w->spec.all_gpus) (void)bd_worker_resolve_devices(&w->spec, 1, NULL);
    }
  }
  w->n_dev = w->spec.n;
  const char *names[BD_WORKER_MAX_DEVICES];
  for (int i = 0; i < w->n_dev; i++) {
    snprintf(w->dev[i].name, sizeof w->dev[i].name, "%s", w->spec.name[i]);
    w->dev[i].prev_t = bd_now();
    names[i] = w->dev[i].name;
  }
  if (gethostname(w->host, sizeof w->host - 1) != 0) snprintf(w->host, sizeof w->host, "unknown");
  if (c->instance_id && *c->instance_id)
    snprintf(w->worker_id, sizeof w->worker_id, "%s", c->instance_id);
  else
    snprintf(w->worker_id, sizeof w->worker_id, "%.200s:%d", w->host, (int)getpid());
  if (!bd_redis_valid_id(w->worker_id, 1)) {
    st = bd_err_set(err, BD_E_INVALID, "worker id '%s': want 1..128 of [A-Za-z0-9._:-]",
                    w->worker_id);
    goto out;
  }
  if (!(w->metrics = bd_wk_metrics_new(w->n_dev, names, err))) {
    st = BD_E_NOMEM;
    goto out;
  }
  if ((st = bd_offsets_new(&P.offs, err))) goto out;
  if ((st = start_stages(w, err))) goto out;
  bd_kafka_producer_opts po = {.brokers = c->brokers};
  if ((st = bd_kafka_producer_new(&po, &P.prod, err))) goto out;
  bd_kafka_consumer_opts co = {.brokers = c->brokers,
                               .group = c->group,
                               .instance_id = c->instance_id,
                               .topic = c->topic,
                               .on_revoke = on_revoke,
                               .on_assign = on_assign,
                               .ctx = &P,
                               .session_timeout_ms = c->session_timeout_ms > 0
                                                         ? c->session_timeout_ms
                                                         : (c->instance_id ? 10000 : 0)};
  if ((st = bd_kafka_consumer_new(&co, &P.cons, err))) goto out;
  atomic_store(&w->consumer_ok, 1);
  if (c->metrics_port > 0 && (st = bd_wk_metrics_serve(w->metrics, c->metrics_addr, c->metrics_port,
                                                       gauges, health, w, err)))
    goto out;
  BD_LOGI("worker %s: devices %s, group %s, topic %s, batch %d", w->worker_id, c->devices, c->group,
          c->topic, c->batch);

  double next_report = bd_now() + c->report_interval_s, next_lag = 0, last_poll_err = 0;
  send_report(&P, 1); /* announce the worker (and its heartbeat) at once */
  while (atomic_load(&g_stop) == 0 && !atomic_load(&w->fatal)) {
    drain_done(&P);
    submit_pending(&P);
    if (P.dlq) dlq_retry(&P);
    backpressure(&P);
    bd_kafka_msg msg;
    bd_err perr = {0};
    bd_status ps = bd_kafka_consumer_poll(P.cons, 20, &msg, &perr);
    if (ps == BD_OK) {
      handle_message(&P, &msg);
      bd_kafka_msg_clear(&msg);
    } else if (ps != BD_E_TIMEOUT && bd_now() - last_poll_err > 5) {
      BD_LOGW("%s", perr.msg);
      last_poll_err = bd_now();
    }
    double now = bd_now();
    if (now >= next_lag) {
      atomic_store(&w->lag, bd_kafka_consumer_lag(P.cons));
      next_lag = now + 1;
    }
    if (now >= next_report) {
      send_report(&P, 1);
      next_report = now + c->report_interval_s;
    } else if (P.pending) {
      send_report(&P, 0);
    }
  }

  /* Drain: no new shards; finish what is in flight within the grace period. */
  BD_LOGI("stopping: %d shards in flight, grace %.0f s", atomic_load(&w->inflight_shards),
          c->grace_s);
  {
    bd_err e2 = {0};
    (void)bd_kafka_consumer_pause(P.cons, 1, &e2);
  }
  double deadline = bd_now() + c->grace_s;
  while (atomic_load(&w->inflight_shards) > 0 && bd_now() < deadline) {
    drain_done(&P);
    submit_pending(&P);
    if (P.dlq) dlq_retry(&P);
    bd_kafka_msg msg;
    /* Keep serving rebalances; anything delivered now is not tracked, so it is redone. */
    if (bd_kafka_consumer_poll(P.cons, 20, &msg, NULL) == BD_OK) bd_kafka_msg_clear(&msg);
    if (P.pending) send_report(&P, 0);
  }
  int left = 0;
  for (wk_shard *s = P.shards; s; s = s->next)
    if (!atomic_load(&s->dropped)) {
      BD_LOGW("shard %s/%lld: %d of %zu images unfinished at the end of the grace period",
              s->m->job, (long long)s->m->shard, atomic_load(&s->remaining), s->m->n_images);
      atomic_store(&s->dropped, 1);
      left++;
    }
  if (left) {
    bd_fetch_stats fs;
    bd_fetch_stats_get(w->fetch, &fs);
    BD_LOGW(
        "grace period over: %d shards not finished (not acknowledged); fetch: %d "
        "outstanding, %d running; queues decode %zu batch %zu exec %zu write %zu",
        left, fs.outstanding, fs.running, bd_queue_len(w->q_decode), bd_queue_len(w->q_batch),
        bd_queue_len(w->q_exec), bd_queue_len(w->q_write));
  }
  atomic_store(&w->force_stop, 1);
  stop_stages(w);
  drain_done(&P);
  send_report(&P, 1);
  atomic_store(&w->consumer_ok, 0);
  {
    /* Leaving the group and the last report get what is left of the grace period (at
     * least 2 s): a broker outage must not keep the process past it (the orchestrator's
     * kill follows). */
    double left = deadline - bd_now();
    int ms = (int)(1000 * (left > 2 ? left : 2));
    bd_err e2 = {0};
    if (bd_kafka_consumer_close(P.cons, ms, &e2) != BD_OK) BD_LOGW("%s", e2.msg);
    left = deadline - bd_now();
    if (bd_kafka_flush(P.prod, (int)(1000 * (left > 1 ? left : 1)), NULL, &e2) != BD_OK) {
      BD_LOGW("kafka: the last report was not delivered: %s", e2.msg);
      bd_kafka_producer_purge(P.prod);
    }
  }
  BD_LOGI("worker %s stopped: %lld shards done", w->worker_id, atomic_load(&w->shards_done));
  if (atomic_load(&w->fatal)) st = bd_err_set(err, BD_E_DEVICE, "%s", w->fatal_msg);

out:
  if (st != BD_OK) atomic_store(&w->force_stop, 1);
  stop_stages(w);
  if (w->q_done) {
    void *x;
    while (bd_queue_pop(w->q_done, &x, 0) == BD_OK) {
    }
  }
  bd_kafka_consumer_destroy(P.cons);
  while (P.shards) {
    wk_shard *s = P.shards;
    P.shards = s->next;
    shard_free(s);
  }
  while (P.dlq) {
    dlq_entry *e = P.dlq;
    P.dlq = e->next;
    dlq_entry_free(e);
  }
  bd_report_destroy(P.pending);
  bd_kafka_producer_destroy(P.prod);
  bd_offsets_destroy(P.offs);
  bd_wk_metrics_destroy(w->metrics);
  bd_queue_destroy(w->q_decode);
  bd_queue_destroy(w->q_batch);
  bd_queue_destroy(w->q_exec);
  bd_queue_destroy(w->q_write);
  bd_queue_destroy(w->q_done);
  free(w->decoders);
  pthread_mutex_destroy(&w->beat_mu);
  free(w);
  return st;
}
