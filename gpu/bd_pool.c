/* bd_pool: see bd_pool.h. One mutex guards the queues, the counters and the stats; the
 * instance threads hold it only to take a job and to hand back its result, never while
 * an engine runs. Jobs move between exactly two lists (waiting, done), so each one is
 * delivered once whatever the interleaving of shutdown, workers and pollers. */
#include "bd_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_log.h"

#if defined(BD_HAVE_CUDA) && defined(__has_include)
#if __has_include("cuda/bd_cuda_probe.h")
#include "cuda/bd_cuda_probe.h"
#define BD_POOL_CUDA 1
#endif
#endif

typedef struct pool_job {
  struct pool_job *next;
  int n;
  const bd_image **images;  /* copy of the caller's pointer array */
  bd_detect_params *params; /* copy, or NULL */
  double t_submit, t_start;
  double busy_s; /* this job's share of the instance's busy time */
  int ticket;    /* bd_engine_detect_begin's, while in flight */
  bd_pool_result res;
} pool_job;

typedef struct pool_inst {
  bd_pool *p;
  bd_pool_instance_spec spec;
  pthread_t th;
  int started;
  bd_engine *e;
  int loaded;
  bd_status load_st;
  bd_err load_err;
  bd_pool_stats st;
  double last_end; /* when the instance's previous batch finished */
  bd_engine_weights *w; /* device weights to load with (a reference), NULL: upload */
} pool_inst;

struct bd_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_space, cv_done, cv_ready;
  pool_job *q_head, *q_tail; /* waiting, FIFO */
  pool_job *d_head, *d_tail; /* completed, not yet polled */
  int in_flight, cap;
  int closed; /* submit refused */
  int stop;   /* instances exit once the waiting list is empty */
  int go;     /* every engine loaded: start taking jobs */
  int joined;
  int n_loaded;
  int n_inst;
  pool_inst *inst;
  bd_family_info fi;
  char *model;
  bd_engine_opts eopts;
  void (*on_result)(void *arg); /* called with mu NOT held */
  void *on_result_arg;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct timespec deadline_in(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* ---------------------------------------------------------------- device strings */

static int parse_int(const char *s, const char *end, long lo, long hi, long *out) {
  if (s == end || end - s > 9) return -1;
  long v = 0;
  for (const char *c = s; c < end; c++) {
    if (*c < '0' || *c > '9') return -1;
    v = v * 10 + (*c - '0');
  }
  if (v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int bd_pool_parse_devices(const char *spec, int per, int engine_threads, int n_gpus,
                          bd_pool_instance_spec *out, int cap, bd_err *err) {
  if (!spec) spec = "cpu";
  if (per == 0) per = 1;
  if (per < 1 || per > BD_POOL_MAX_PER_DEVICE) {
    bd_err_set(err, BD_E_INVALID, "pool: instances per device %d outside 1..%d", per,
               BD_POOL_MAX_PER_DEVICE);
    return -1;
  }
  if (strcmp(spec, "cpu") == 0 || strncmp(spec, "cpu:", 4) == 0) {
    long threads = engine_threads;
    if (spec[3] == ':' && parse_int(spec + 4, spec + strlen(spec), 1, 1024, &threads)) {
      bd_err_set(err, BD_E_INVALID, "pool: bad cpu thread count in '%s' (cpu:1..1024)", spec);
      return -1;
    }
    if (per > cap) {
      bd_err_set(err, BD_E_LIMIT, "pool: %d instances (limit %d)", per, cap);
      return -1;
    }
    for (int k = 0; k < per; k++) {
      out[k] = (bd_pool_instance_spec){0, 0, (int)threads, ""};
      if (per == 1)
        snprintf(out[k].name, sizeof out[k].name, "cpu");
      else
        snprintf(out[k].name, sizeof out[k].name, "cpu#%d", k);
    }
    return per;
  }
  int devs[64], nd = 0;
  if (strcmp(spec, "cuda") == 0) {
    for (int d = 0; d < n_gpus && d < 64; d++) devs[nd++] = d;
  } else if (strncmp(spec, "cuda:", 5) == 0) {
    const char *s = spec + 5;
    for (;;) {
      const char *e = strchr(s, ',');
      if (!e) e = s + strlen(s);
      long v;
      if (parse_int(s, e, 0, 63, &v)) {
        bd_err_set(err, BD_E_INVALID, "pool: bad GPU list in '%s' (cuda:0,2 with 0..63)", spec);
        return -1;
      }
      for (int i = 0; i < nd; i++)
        if (devs[i] == v) {
          bd_err_set(err, BD_E_INVALID, "pool: GPU %ld listed twice in '%s'", v, spec);
          return -1;
        }
      if (v >= n_gpus) {
        bd_err_set(err, BD_E_DEVICE, "pool: GPU %ld of '%s' not visible (%d visible)", v, spec,
                   n_gpus);
        return -1;
      }
      devs[nd++] = (int)v;
      if (!*e) break;
      s = e + 1;
    }
  } else {
    bd_err_set(err, BD_E_INVALID, "pool: unknown devices '%s' (cpu, cpu:N, cuda, cuda:0,2)", spec);
    return -1;
  }
  if (nd == 0) {
    bd_err_set(err, BD_E_DEVICE, "pool: '%s' but no CUDA device is visible", spec);
    return -1;
  }
  if (nd * per > cap) {
    bd_err_set(err, BD_E_LIMIT, "pool: %d instances (limit %d)", nd * per, cap);
    return -1;
  }
  int n = 0;
  for (int i = 0; i < nd; i++)
    for (int k = 0; k < per; k++, n++) {
      out[n] = (bd_pool_instance_spec){1, devs[i], engine_threads, ""};
      snprintf(out[n].name, sizeof out[n].name, "cuda:%d#%d", devs[i], k);
    }
  return n;
}

/* ---------------------------------------------------------------- instances */

static void free_job(pool_job *j) {
  if (!j) return;
  free(j->images);
  free(j->params);
  free(j);
}

static void push_done(bd_pool *p, pool_job *j) {
  j->next = NULL;
  if (p->d_tail)
    p->d_tail->next = j;
  else
    p->d_head = j;
  p->d_tail = j;
  pthread_cond_broadcast(&p->cv_done);
}

/* Starts job j on the instance: batches that fit the engine begin asynchronously (on
 * cuda the device runs them while the next one is staged); larger ones run whole here.
 * Returns 1 when j is in flight (finish_job completes it), 0 when j is complete. */
static int start_job(pool_inst *in, pool_job *j, double t_start) {
  bd_pool_result *r = &j->res;
  snprintf(r->instance, sizeof r->instance, "%s", in->spec.name);
  r->queue_s = t_start - j->t_submit;
  j->t_start = t_start;
  r->dets = calloc((size_t)j->n, sizeof *r->dets);
  r->status = calloc((size_t)j->n, sizeof *r->status);
  if (!r->dets || !r->status) {
    r->batch_status = bd_err_set(&r->err, BD_E_NOMEM, "pool: results of %d images", j->n);
  } else if (j->n <= bd_engine_max_batch(in->e)) {
    r->batch_status = bd_engine_detect_begin(in->e, j->n, j->images, j->params, r->dets,
                                             r->status, &j->ticket, &r->err);
    if (r->batch_status == BD_OK) return 1;
  } else {
    r->batch_status =
        bd_engine_detect(in->e, j->n, j->images, j->params, r->dets, r->status, &r->err);
  }
  return 0;
}

/* Completes j (ended first when in flight) and records its times. */
static void finish_job(pool_inst *in, pool_job *j, int in_flight) {
  bd_pool_result *r = &j->res;
  if (in_flight) r->batch_status = bd_engine_detect_end(in->e, j->ticket, &r->err);
  double t_end = now_s();
  r->run_s = t_end - j->t_start;
  /* Busy time counts overlapping batches once. */
  j->busy_s = t_end - (j->t_start > in->last_end ? j->t_start : in->last_end);
  in->last_end = t_end;
  if (r->batch_status != BD_OK) {
    bd_err_prefix(&r->err, "pool: %s", in->spec.name);
    for (int i = 0; r->dets && i < j->n; i++) bd_detections_free(&r->dets[i]);
    free(r->dets);
    free(r->status);
    r->dets = NULL;
    r->status = NULL;
  }
}

/* Hands a completed job to the pollers (p->mu held). */
static void complete_locked(pool_inst *in, pool_job *j) {
  in->st.batches++;
  if (j->res.batch_status == BD_OK)
    in->st.images += j->n;
  else
    in->st.failed++;
  in->st.busy_s += j->busy_s;
  push_done(in->p, j);
}

/* Tells the caller's hook about n results handed over (p->mu NOT held: the hook may
 * take locks of its own, or poll). */
static void announce(bd_pool *p, int n) {
  if (!p->on_result) return;
  for (int i = 0; i < n; i++) p->on_result(p->on_result_arg);
}

/* Takes the oldest waiting job, NULL when none (p->mu held). */
static pool_job *take_locked(bd_pool *p) {
  pool_job *j = p->q_head;
  if (!j) return NULL;
  p->q_head = j->next;
  if (!p->q_head) p->q_tail = NULL;
  return j;
}

static void *inst_main(void *arg) {
  pool_inst *in = arg;
  bd_pool *p = in->p;
  bd_engine_opts o = p->eopts;
  char dev[16];
  if (in->spec.is_cuda)
    snprintf(dev, sizeof dev, "cuda:%d", in->spec.device);
  else
    snprintf(dev, sizeof dev, "cpu");
  o.device = dev;
  o.threads = in->spec.threads;
  o.weights = in->w;
  bd_err err;
  bd_err_clear(&err);
  bd_engine *e = NULL;
  bd_status st = bd_engine_load(p->model, &o, &e, &err);
  bd_engine_weights_release(in->w); /* the engine keeps its own reference */
  in->w = NULL;
  pthread_mutex_lock(&p->mu);
  in->e = e;
  in->load_st = st;
  in->load_err = err;
  in->loaded = 1;
  p->n_loaded++;
  pthread_cond_broadcast(&p->cv_ready);
  while (st == BD_OK && !p->go && !p->stop) pthread_cond_wait(&p->cv_work, &p->mu);
  /* Up to BD_ENGINE_MAX_INFLIGHT jobs in flight: while the oldest runs on the device,
   * the next is staged and launched; the oldest is finished when no more can start. */
  pool_job *fl[BD_ENGINE_MAX_INFLIGHT];
  int nfl = 0;
  while (st == BD_OK && p->go) {
    while (nfl == 0 && !p->q_head && !p->stop) pthread_cond_wait(&p->cv_work, &p->mu);
    pool_job *j = nfl < BD_ENGINE_MAX_INFLIGHT ? take_locked(p) : NULL;
    if (!j && nfl == 0) break; /* stopped and nothing left to drain */
    pthread_mutex_unlock(&p->mu);
    if (j && nfl > 0 && j->n > bd_engine_max_batch(e)) {
      /* A batch that runs whole needs every slot: finish the ones in flight first. */
      for (int k = 0; k < nfl; k++) finish_job(in, fl[k], 1);
      pthread_mutex_lock(&p->mu);
      for (int k = 0; k < nfl; k++) complete_locked(in, fl[k]);
      pthread_mutex_unlock(&p->mu);
      announce(p, nfl);
      nfl = 0;
    }
    pool_job *done = NULL;
    int done_in_flight = 0;
    if (j) {
      if (start_job(in, j, now_s())) {
        fl[nfl++] = j;
      } else {
        done = j;
      }
    }
    if (!done && (!j || nfl == BD_ENGINE_MAX_INFLIGHT)) {
      /* Nothing more to start now: finish the oldest. */
      done = fl[0];
      done_in_flight = 1;
      for (int k = 1; k < nfl; k++) fl[k - 1] = fl[k];
      nfl--;
    }
    if (done) {
      finish_job(in, done, done_in_flight);
      pthread_mutex_lock(&p->mu);
      complete_locked(in, done);
      pthread_mutex_unlock(&p->mu);
      announce(p, 1);
    }
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  /* The engine dies on the thread that used it (its CUDA context is current here). */
  bd_engine_destroy(e);
  return NULL;
}

/* ---------------------------------------------------------------- pool */

static void join_all(bd_pool *p) {
  for (int i = 0; i < p->n_inst; i++)
    if (p->inst[i].started) {
      pthread_join(p->inst[i].th, NULL);
      p->inst[i].started = 0;
    }
}

static void free_pool(bd_pool *p) {
  pool_job *j = p->d_head;
  while (j) {
    pool_job *nx = j->next;
    bd_pool_result_free(&j->res);
    free_job(j);
    j = nx;
  }
  for (int i = 0; p->inst && i < p->n_inst; i++) bd_engine_weights_release(p->inst[i].w);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv_work);
  pthread_cond_destroy(&p->cv_space);
  pthread_cond_destroy(&p->cv_done);
  pthread_cond_destroy(&p->cv_ready);
  free(p->inst);
  free(p->model);
  free(p);
}

/* cuda pools: once the first instance has loaded (uploading the model from the host),
 * the other instances get its device weights - shared on its GPU, broadcast with NCCL to
 * the others - instead of uploading their own. When that fails they upload (slower to
 * load, same results) and a warning says why. */
static void share_weights(bd_pool *p) {
  pool_inst *first = &p->inst[0];
  pthread_mutex_lock(&p->mu);
  while (!first->loaded) pthread_cond_wait(&p->cv_ready, &p->mu);
  pthread_mutex_unlock(&p->mu);
  if (first->load_st != BD_OK) return; /* bd_pool_new reports it */
  bd_engine_weights *w0 = bd_engine_weights_get(first->e);
  if (!w0) return;
  int devs[BD_POOL_MAX_INSTANCES];
  bd_engine_weights *ws[BD_POOL_MAX_INSTANCES];
  int m = 0;
  for (int i = 1; i < p->n_inst; i++) devs[m++] = p->inst[i].spec.device;
  bd_err err;
  bd_err_clear(&err);
  if (bd_engine_weights_broadcast(w0, m, devs, ws, &err) == BD_OK) {
    for (int i = 1; i < p->n_inst; i++) p->inst[i].w = ws[i - 1];
  } else {
    BD_LOGW("pool: sharing the model's device weights failed, each instance uploads its own: %s",
            err.msg);
  }
  bd_engine_weights_release(w0);
}

bd_status bd_pool_new(const char *model_path, const bd_pool_opts *opts, bd_pool **out,
                      bd_err *err) {
  *out = NULL;
  bd_pool_opts o = {0};
  if (opts) o = *opts;
  if (!model_path) return bd_err_set(err, BD_E_INVALID, "pool: no model path");
  const char *devs = o.devices ? o.devices : "cpu";
  int n_gpus = 0;
  if (strncmp(devs, "cuda", 4) == 0) {
#ifdef BD_POOL_CUDA
    n_gpus = bd_cuda_device_count();
#else
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "pool: devices '%s' need the CUDA backend, which this build does not have",
                      devs);
#endif
  }
  bd_pool_instance_spec specs[BD_POOL_MAX_INSTANCES];
  bd_err perr;
  int n = bd_pool_parse_devices(devs, o.instances_per_device, o.engine.threads, n_gpus, specs,
                                BD_POOL_MAX_INSTANCES, &perr);
  if (n < 0) return bd_err_set(err, perr.code, "%s", perr.msg);
  int cap = o.queue_cap ? o.queue_cap : 2 * n + 2;
  if (cap < 1 || cap > BD_POOL_MAX_QUEUE)
    return bd_err_set(err, BD_E_INVALID, "pool: queue_cap %d outside 1..%d", cap,
                      BD_POOL_MAX_QUEUE);
  bd_pool *p = calloc(1, sizeof *p);
  if (!p) return bd_err_set(err, BD_E_NOMEM, "pool");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv_work, &ca);
  pthread_cond_init(&p->cv_space, &ca);
  pthread_cond_init(&p->cv_done, &ca);
  pthread_cond_init(&p->cv_ready, &ca);
  pthread_condattr_destroy(&ca);
  p->cap = cap;
  p->eopts = o.engine;
  p->on_result = o.on_result;
  p->on_result_arg = o.on_result_arg;
  p->model = strdup(model_path);
  p->inst = calloc((size_t)n, sizeof *p->inst);
  bd_status st = BD_OK;
  if (!p->model || !p->inst) {
    free_pool(p);
    return bd_err_set(err, BD_E_NOMEM, "pool: %d instances", n);
  }
  p->n_inst = n;
  int n_started = 0;
  for (int i = 0; i < n; i++) {
    pool_inst *in = &p->inst[i];
    in->p = p;
    in->spec = specs[i];
    snprintf(in->st.name, sizeof in->st.name, "%s", specs[i].name);
    if (i == 1 && specs[0].is_cuda) share_weights(p);
    if (pthread_create(&in->th, NULL, inst_main, in) != 0) {
      st = bd_err_set(err, BD_E_NOMEM, "pool: thread for instance %s", specs[i].name);
      break;
    }
    in->started = 1;
    n_started++;
  }
  pthread_mutex_lock(&p->mu);
  while (p->n_loaded < n_started) pthread_cond_wait(&p->cv_ready, &p->mu);
  for (int i = 0; i < n_started && st == BD_OK; i++)
    if (p->inst[i].load_st != BD_OK) {
      st = bd_err_set(err, p->inst[i].load_st, "pool: instance %s: %s", p->inst[i].spec.name,
                      p->inst[i].load_err.msg);
    }
  if (st == BD_OK) {
    p->fi = *bd_engine_family(p->inst[0].e);
    p->go = 1;
  } else {
    p->closed = p->stop = 1;
  }
  pthread_cond_broadcast(&p->cv_work);
  pthread_mutex_unlock(&p->mu);
  if (st != BD_OK) {
    join_all(p);
    free_pool(p);
    return st;
  }
  *out = p;
  return BD_OK;
}

int bd_pool_num_instances(const bd_pool *p) {
  return p->n_inst;
}
const char *bd_pool_instance_name(const bd_pool *p, int i) {
  return (i >= 0 && i < p->n_inst) ? p->inst[i].spec.name : NULL;
}
const bd_family_info *bd_pool_family(const bd_pool *p) {
  return &p->fi;
}

bd_status bd_pool_submit(bd_pool *p, int n, const bd_image *const *images,
                         const bd_detect_params *params, uint64_t tag, int timeout_ms,
                         bd_err *err) {
  if (n < 1 || !images) return bd_err_set(err, BD_E_INVALID, "pool: batch of %d images", n);
  if (n > BD_POOL_MAX_BATCH)
    return bd_err_set(err, BD_E_LIMIT, "pool: batch of %d images (limit %d)", n, BD_POOL_MAX_BATCH);
  /* Copies made before taking the lock: allocation never happens under it. */
  pool_job *j = calloc(1, sizeof *j);
  if (j) j->images = malloc((size_t)n * sizeof *j->images);
  if (j && params) j->params = malloc((size_t)n * sizeof *j->params);
  if (!j || !j->images || (params && !j->params)) {
    free_job(j);
    return bd_err_set(err, BD_E_NOMEM, "pool: job of %d images", n);
  }
  memcpy(j->images, images, (size_t)n * sizeof *j->images);
  if (params) memcpy(j->params, params, (size_t)n * sizeof *j->params);
  j->n = n;
  j->res.tag = tag;
  j->res.n = n;
  bd_status st = BD_OK;
  struct timespec dl = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&p->mu);
  while (!p->closed && p->in_flight >= p->cap && timeout_ms > 0)
    if (pthread_cond_timedwait(&p->cv_space, &p->mu, &dl) == ETIMEDOUT) break;
  if (p->closed) {
    st = bd_err_set(err, BD_E_CANCELLED, "pool: shut down");
  } else if (p->in_flight >= p->cap) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "pool: %d batches in flight (queue_cap)", p->in_flight);
  } else {
    j->t_submit = now_s();
    if (p->q_tail)
      p->q_tail->next = j;
    else
      p->q_head = j;
    p->q_tail = j;
    p->in_flight++;
    pthread_cond_signal(&p->cv_work);
    j = NULL;
  }
  pthread_mutex_unlock(&p->mu);
  free_job(j);
  return st;
}

void bd_pool_result_free(bd_pool_result *r) {
  if (!r) return;
  for (int i = 0; r->dets && i < r->n; i++) bd_detections_free(&r->dets[i]);
  free(r->dets);
  free(r->status);
  r->dets = NULL;
  r->status = NULL;
}

bd_status bd_pool_poll(bd_pool *p, int timeout_ms, bd_pool_result *out, bd_err *err) {
  struct timespec dl = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
  bd_status st = BD_OK;
  pool_job *j = NULL;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    if (p->d_head) {
      j = p->d_head;
      p->d_head = j->next;
      if (!p->d_head) p->d_tail = NULL;
      p->in_flight--;
      pthread_cond_signal(&p->cv_space);
      break;
    }
    if (p->closed && p->in_flight == 0) {
      st = bd_err_set(err, BD_E_CANCELLED, "pool: shut down, nothing in flight");
      break;
    }
    if (timeout_ms == 0) {
      st = bd_err_set(err, BD_E_TIMEOUT, "pool: no result ready");
      break;
    }
    int rc = timeout_ms < 0 ? pthread_cond_wait(&p->cv_done, &p->mu)
                            : pthread_cond_timedwait(&p->cv_done, &p->mu, &dl);
    if (rc == ETIMEDOUT && !p->d_head) {
      st = bd_err_set(err, BD_E_TIMEOUT, "pool: no result within %d ms", timeout_ms);
      break;
    }
  }
  pthread_mutex_unlock(&p->mu);
  if (j) {
    *out = j->res;
    free_job(j);
  }
  return st;
}

int bd_pool_in_flight(bd_pool *p) {
  pthread_mutex_lock(&p->mu);
  int n = p->in_flight;
  pthread_mutex_unlock(&p->mu);
  return n;
}

int bd_pool_get_stats(bd_pool *p, bd_pool_stats *out, int cap) {
  pthread_mutex_lock(&p->mu);
  int n = p->n_inst < cap ? p->n_inst : cap;
  for (int i = 0; i < n; i++) {
    out[i] = p->inst[i].st;
    out[i].img_per_s = out[i].busy_s > 0 ? (double)out[i].images / out[i].busy_s : 0.0;
  }
  pthread_mutex_unlock(&p->mu);
  return n;
}

void bd_pool_shutdown(bd_pool *p, int cancel_queued) {
  if (!p) return;
  int n_cancelled = 0;
  pthread_mutex_lock(&p->mu);
  p->closed = 1;
  if (cancel_queued) {
    while (p->q_head) {
      pool_job *j = p->q_head;
      p->q_head = j->next;
      j->res.batch_status = bd_err_set(&j->res.err, BD_E_CANCELLED,
                                       "pool: shut down before the "
                                       "batch ran");
      push_done(p, j);
      n_cancelled++;
    }
    p->q_tail = NULL;
  }
  p->stop = 1;
  pthread_cond_broadcast(&p->cv_work);
  pthread_cond_broadcast(&p->cv_space);
  pthread_cond_broadcast(&p->cv_done);
  int join = !p->joined;
  p->joined = 1;
  pthread_mutex_unlock(&p->mu);
  announce(p, n_cancelled);
  /* One caller joins; others return at once (the threads are exiting). */
  if (join) join_all(p);
}

void bd_pool_destroy(bd_pool *p) {
  if (!p) return;
  bd_pool_shutdown(p, 1);
  free_pool(p);
}
