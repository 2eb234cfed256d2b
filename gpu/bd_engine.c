/* bd_engine: see bd_engine.h. */
#include "bd_engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_onnx.h"

_Static_assert(BD_ENGINE_MAX_THREADS == BD_CPU_MAX_THREADS, "the cpu backend's thread limit");

/* The CUDA engineer's backend plugs in through this header (same vtable as cpu). */
#if defined(BD_HAVE_CUDA) && defined(__has_include)
#if __has_include("cuda/bd_cuda_backend.h")
#include "cuda/bd_cuda_backend.h"
#define BD_ENGINE_CUDA 1
#endif
#endif

#define MAX_BUCKETS 8
#define MAX_OUTPUTS 8
#define DD_TOPK 1024     /* candidates per device NMS round (its sort size) */
#define DD_OUT_CAP 1024  /* device detections per image */
#define DD_FULL_MAX 4    /* images up to 4x the network input are staged as decoded */

/* One batch in flight (bd_engine_detect_begin .. _end). */
typedef struct eng_slot {
  int busy;
  int dd;   /* launched on the device (else its results are already in out) */
  int bi, m; /* bucket and rows used */
  int n;    /* the caller's images */
  const bd_image *const *images;
  const bd_detect_params *params;
  bd_detections *out;
  bd_status *status;    /* the caller's, or NULL */
  bd_status st;         /* host path: the batch's result */
  bd_err err;
  int *row_of;          /* image index of each row (max_batch) */
  bd_status *row_st;    /* per row (max_batch) */
  bd_dd_image *rows;    /* device descriptors (max_batch) */
  int *resize;          /* per row: staged resized by the host */
} eng_slot;

struct bd_engine {
  bd_graph *g;
  bd_backend *be;
  bd_family_info fi;
  char device[16];
  int max_batch;
  int n_buckets;
  int buckets[MAX_BUCKETS];
  bd_plan *plans[MAX_BUCKETS];
  int pp_threads; /* CPU threads for pre/post-processing in bd_engine_detect */
  int c, h, w;
  size_t in_row; /* floats per input row */
  int n_out;
  int64_t out_row[MAX_OUTPUTS];
  /* Staging for padded partial batches and for detect; sized for stage_rows rows. */
  int stage_rows;
  float *stage_in;
  float *stage_out[MAX_OUTPUTS];
  /* bd_engine_detect bookkeeping, max_batch entries each (kept off the caller's stack). */
  bd_prep_info *pi;
  int *row_of;
  bd_status *row_status;
  /* Device pre/post-processing (cuda with a family), and the batches in flight. */
  int dd;        /* detection runs on the device (dd_setup is called at the first batch) */
  int dd_set_up; /* the backend's dd_setup done */
  bd_dd_config ddc;
  int dd_prepared[MAX_BUCKETS];
  eng_slot slot[BD_ENGINE_MAX_INFLIGHT];
};

int bd_engine_parse_device(const char *s, int *is_cuda, int *index) {
  if (!s || strcmp(s, "cpu") == 0) {
    *is_cuda = 0;
    *index = 0;
    return 0;
  }
  if (strcmp(s, "cuda") == 0) {
    *is_cuda = 1;
    *index = 0;
    return 0;
  }
  if (strncmp(s, "cuda:", 5) == 0 && s[5]) {
    char *end;
    long v = strtol(s + 5, &end, 10);
    if (*end || v < 0 || v > 63) return -1;
    *is_cuda = 1;
    *index = (int)v;
    return 0;
  }
  return -1;
}

void bd_engine_destroy(bd_engine *e) {
  if (!e) return;
  for (int k = 0; k < BD_ENGINE_MAX_INFLIGHT; k++) {
    eng_slot *sl = &e->slot[k];
    if (sl->busy && sl->dd) { /* begun and never ended: let the device finish first */
      const float *d;
      const int *c;
      (void)e->be->vt->dd_wait(e->be, k, &d, &c, NULL);
    }
    free(sl->row_of);
    free(sl->row_st);
    free(sl->rows);
    free(sl->resize);
  }
  bd_backend_destroy(e->be);
  for (int i = 0; i < e->n_buckets; i++) bd_plan_destroy(e->plans[i]);
  free(e->stage_in);
  for (int i = 0; i < MAX_OUTPUTS; i++) free(e->stage_out[i]);
  free(e->pi);
  free(e->row_of);
  free(e->row_status);
  bd_graph_destroy(e->g);
  free(e);
}

static bd_status ensure_plan(bd_engine *e, int bi, bd_err *err) {
  if (e->plans[bi]) return BD_OK;
  bd_plan *p = NULL;
  bd_status st = BD_OK;
  /* Where plans share memory sized by the first one, the largest batch comes first (and
   * a shortage of device memory shows at the first batch, not at the first full one). */
  int last = e->n_buckets - 1;
  if (bi != last && e->be->vt->shared_plan_memory && (st = ensure_plan(e, last, err)) != BD_OK)
    return st;
  st = bd_plan_new(e->g, e->buckets[bi], &p, err);
  if (st != BD_OK) {
    bd_err_prefix(err, "engine: plan for batch %d", e->buckets[bi]);
    return st;
  }
  /* The plan's output shapes must agree with what the engine promises its callers. */
  for (int i = 0; i < e->n_out; i++) {
    int v = e->g->outputs[i];
    int64_t numel = 1;
    for (int k = 0; k < p->rank[v]; k++) numel *= p->dims[v][k];
    if (p->rank[v] < 1 || p->dims[v][0] != e->buckets[bi] ||
        numel != e->out_row[i] * e->buckets[bi]) {
      bd_plan_destroy(p);
      return bd_err_set(
          err, BD_E_INTERNAL, "engine: output %d at batch %d has %lld elements, expected %lld", i,
          e->buckets[bi], (long long)numel, (long long)(e->out_row[i] * e->buckets[bi]));
    }
  }
  st = bd_backend_prepare(e->be, p, err);
  if (st != BD_OK) {
    bd_plan_destroy(p);
    bd_err_prefix(err, "engine: %s prepare for batch %d", e->be->vt->name, e->buckets[bi]);
    return st;
  }
  e->plans[bi] = p;
  return BD_OK;
}

static bd_status ensure_stage(bd_engine *e, int rows, bd_err *err) {
  if (rows <= e->stage_rows) return BD_OK;
  float *in = realloc(e->stage_in, (size_t)rows * e->in_row * sizeof(float));
  if (!in) return bd_err_set(err, BD_E_NOMEM, "engine: staging input for %d rows", rows);
  e->stage_in = in;
  for (int i = 0; i < e->n_out; i++) {
    float *o = realloc(e->stage_out[i], (size_t)rows * (size_t)e->out_row[i] * sizeof(float));
    if (!o) return bd_err_set(err, BD_E_NOMEM, "engine: staging output %d for %d rows", i, rows);
    e->stage_out[i] = o;
  }
  e->stage_rows = rows;
  return BD_OK;
}

static bd_status make_backend(bd_engine *e, const bd_engine_opts *o, bd_err *err) {
  int is_cuda = 0, idx = 0;
  if (bd_engine_parse_device(o->device, &is_cuda, &idx))
    return bd_err_set(err, BD_E_INVALID, "engine: unknown device '%s' (cpu, cuda, cuda:N)",
                      o->device);
  if (!is_cuda) {
    snprintf(e->device, sizeof e->device, "cpu");
    return bd_cpu_backend_new(e->g, o->threads, &e->be, err);
  }
  snprintf(e->device, sizeof e->device, "cuda:%d", idx);
#ifdef BD_ENGINE_CUDA
  return bd_cuda_backend_new_shared(e->g, idx, (bd_cuda_weights *)o->weights, &e->be, err);
#else
  return bd_err_set(err, BD_E_UNSUPPORTED,
                    "engine: device '%s' needs the CUDA backend, which this build does not have",
                    o->device);
#endif
}

/* Device pre/post-processing where the backend has it and the model has a family. */
static bd_status setup_device_prepost(bd_engine *e, const bd_engine_opts *o, bd_err *err) {
  const bd_backend_vtbl *vt = e->be->vt;
  if (o->host_prepost || !vt->dd_setup ||
      (e->fi.family != BD_FAMILY_YOLOX && e->fi.family != BD_FAMILY_DAMOYOLO))
    return BD_OK;
  bd_dd_config *c = &e->ddc;
  memset(c, 0, sizeof *c);
  c->yolox = e->fi.family == BD_FAMILY_YOLOX;
  c->in_w = e->fi.in_w;
  c->in_h = e->fi.in_h;
  c->num_classes = e->fi.num_classes;
  c->num_anchors = e->fi.num_anchors;
  c->out_main = e->fi.out_main;
  c->yolox_decoded = e->fi.boxes_decoded;
  c->out_scores = e->fi.out_scores;
  c->out_boxes = e->fi.out_boxes;
  c->topk = DD_TOPK;
  c->out_cap = DD_OUT_CAP;
  /* Room for every row at twice the network input: images up to DD_FULL_MAX times
   * that go as decoded while the rest fits, the others resized by the host. */
  c->stage_bytes = (size_t)e->max_batch * (size_t)c->in_w * (size_t)c->in_h * 3 * 2;
  for (int k = 0; k < BD_ENGINE_MAX_INFLIGHT; k++) {
    eng_slot *sl = &e->slot[k];
    sl->rows = calloc((size_t)e->max_batch, sizeof *sl->rows);
    sl->resize = calloc((size_t)e->max_batch, sizeof *sl->resize);
    if (!sl->rows || !sl->resize)
      return bd_err_set(err, BD_E_NOMEM, "engine: device detection bookkeeping");
  }
  /* The backend's buffers (staging: stage_bytes pinned per slot, once on the device)
   * come with the first detection batch (dd_ensure): engines that only run raw tensors
   * (bench's network timing, infer) never hold them. */
  e->dd = 1;
  return BD_OK;
}

static bd_status dd_ensure(bd_engine *e, bd_err *err) {
  if (e->dd_set_up) return BD_OK;
  bd_status st = e->be->vt->dd_setup(e->be, &e->ddc, e->max_batch, err);
  if (st == BD_OK) e->dd_set_up = 1;
  return st;
}

/* "1,3,0,32": v's dims for a message. */
static void fmt_dims(const bd_value *v, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = 0;
  for (int k = 0; k < v->rank && len + 24 < cap; k++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%lld", k ? "," : "", (long long)v->dims[k]);
}

bd_status bd_engine_load(const char *path, const bd_engine_opts *opts, bd_engine **out,
                         bd_err *err) {
  bd_engine_opts o = {0};
  if (opts) o = *opts;
  if (o.max_batch == 0) o.max_batch = 64;
  if (o.max_batch < 1 || o.max_batch > BD_ENGINE_MAX_BATCH)
    return bd_err_set(err, BD_E_INVALID, "engine: max_batch %d outside 1..%d", o.max_batch,
                      BD_ENGINE_MAX_BATCH);
  if (o.threads < 0 || o.threads > 1024)
    return bd_err_set(err, BD_E_INVALID, "engine: threads %d outside 0..1024", o.threads);
  bd_status st;
  bd_engine *e = calloc(1, sizeof *e);
  if (!e) return bd_err_set(err, BD_E_NOMEM, "engine");
  e->max_batch = o.max_batch;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  e->pp_threads = o.threads > 0 ? o.threads : (ncpu > 0 ? (int)ncpu : 1);
  if (e->pp_threads > 16) e->pp_threads = 16;
  if ((st = bd_onnx_load_file(path, &e->g, err)) != BD_OK) goto fail;
  if ((st = bd_compile(e->g, NULL, NULL, err)) != BD_OK) {
    bd_err_prefix(err, "compile %s", path);
    goto fail;
  }
  if (e->g->n_inputs != 1) {
    st = bd_err_set(err, BD_E_UNSUPPORTED, "engine: %s has %d inputs (1 supported)", path,
                    e->g->n_inputs);
    goto fail;
  }
  if (o.family == BD_FAMILY_NONE) {
    memset(&e->fi, 0, sizeof e->fi);
    e->fi.family = BD_FAMILY_NONE;
  } else if ((st = bd_family_recognize(e->g, o.family, &e->fi, err)) != BD_OK) {
    bd_err_prefix(err, "%s", path);
    goto fail;
  }
  if (e->g->n_outputs > MAX_OUTPUTS) {
    st = bd_err_set(err, BD_E_UNSUPPORTED, "engine: %d outputs (max %d)", e->g->n_outputs,
                    MAX_OUTPUTS);
    goto fail;
  }
  const bd_value *in = &e->g->values[e->g->inputs[0]];
  int64_t in_n = bd_value_numel(in);
  if (in->dtype != BD_DT_F32 || in_n <= 0 || in->rank < 1 || in->dims[0] != e->g->batch0 ||
      e->g->batch0 < 1) {
    st = bd_err_set(err, BD_E_UNSUPPORTED,
                    "engine: input '%s' must be float32 with known dims and the batch on axis 0",
                    in->name);
    goto fail;
  }
  if (in->rank == 4) {
    e->c = (int)in->dims[1];
    e->h = (int)in->dims[2];
    e->w = (int)in->dims[3];
  }
  e->in_row = (size_t)(in_n / e->g->batch0);
  e->n_out = e->g->n_outputs;
  /* Outputs are the caller's buffers and the engine's staging (max_batch rows): each, and
   * all together, must fit what a backend may hold (the cpu arena's limit). */
  uint64_t rows_bytes = 0;
  for (int i = 0; i < e->n_out; i++) {
    const bd_value *v = &e->g->values[e->g->outputs[i]];
    int64_t n = bd_value_numel(v);
    char shape[160];
    if (n == 0 && v->rank >= 1) {
      fmt_dims(v, shape, sizeof shape);
      st = bd_err_set(err, BD_E_UNSUPPORTED, "engine: output '%s' is empty (shape [%s])", v->name,
                      shape);
      goto fail;
    }
    if (n <= 0 || v->rank < 1 || v->dims[0] != e->g->batch0 || e->g->batch0 < 1) {
      /* a dynamic export traced at batch > 1 keeps that batch in its Reshape targets */
      fmt_dims(v, shape, sizeof shape);
      st = bd_err_set(err, BD_E_UNSUPPORTED,
                      "engine: output '%s' does not carry the batch on axis 0 (shape [%s] at "
                      "batch %lld)%s",
                      v->name, shape, (long long)e->g->batch0,
                      e->g->batch_named ? "; the model's batch is symbolic, so it is compiled at "
                                          "batch 1: export it traced at batch 1, or with a "
                                          "fixed batch"
                                        : "");
      goto fail;
    }
    e->out_row[i] = n / e->g->batch0;
    /* n <= 2^40 (shape inference), so these products fit in 64 bits */
    uint64_t bytes = (uint64_t)e->out_row[i] * sizeof(float) * (uint64_t)e->max_batch;
    rows_bytes += bytes;
    if (bytes > BD_ENGINE_MAX_OUTPUT_BYTES) {
      st = bd_err_set(err, BD_E_LIMIT,
                      "engine: output '%s' takes %llu bytes per row, %llu for %d rows "
                      "(max_batch); the limit is %llu",
                      v->name, (unsigned long long)(e->out_row[i] * (int64_t)sizeof(float)),
                      (unsigned long long)bytes, e->max_batch,
                      (unsigned long long)BD_ENGINE_MAX_OUTPUT_BYTES);
      goto fail;
    }
  }
  if (rows_bytes > BD_ENGINE_MAX_OUTPUT_BYTES) {
    st = bd_err_set(err, BD_E_LIMIT,
                    "engine: the %d outputs take %llu bytes for %d rows (max_batch); the limit "
                    "is %llu",
                    e->n_out, (unsigned long long)rows_bytes, e->max_batch,
                    (unsigned long long)BD_ENGINE_MAX_OUTPUT_BYTES);
    goto fail;
  }
  static const int std_buckets[] = {1, 8, 16, 32, 64};
  for (size_t i = 0; i < sizeof std_buckets / sizeof *std_buckets; i++)
    if (std_buckets[i] < e->max_batch) e->buckets[e->n_buckets++] = std_buckets[i];
  e->buckets[e->n_buckets++] = e->max_batch;
  e->pi = calloc((size_t)e->max_batch, sizeof *e->pi);
  e->row_of = calloc((size_t)e->max_batch, sizeof *e->row_of);
  e->row_status = calloc((size_t)e->max_batch, sizeof *e->row_status);
  int slots_ok = 1;
  for (int k = 0; k < BD_ENGINE_MAX_INFLIGHT; k++) {
    e->slot[k].row_of = calloc((size_t)e->max_batch, sizeof *e->slot[k].row_of);
    e->slot[k].row_st = calloc((size_t)e->max_batch, sizeof *e->slot[k].row_st);
    slots_ok = slots_ok && e->slot[k].row_of && e->slot[k].row_st;
  }
  if (!e->pi || !e->row_of || !e->row_status || !slots_ok) {
    st = bd_err_set(err, BD_E_NOMEM, "engine: detect bookkeeping for %d rows", e->max_batch);
    goto fail;
  }
  if ((st = make_backend(e, &o, err)) != BD_OK) goto fail;
  if ((st = setup_device_prepost(e, &o, err)) != BD_OK) goto fail;
  if (o.prepare_all)
    for (int i = e->n_buckets - 1; i >= 0; i--)
      if ((st = ensure_plan(e, i, err)) != BD_OK) goto fail;
  *out = e;
  return BD_OK;
fail:
  bd_engine_destroy(e);
  return st;
}

const bd_family_info *bd_engine_family(const bd_engine *e) {
  return &e->fi;
}
const char *bd_engine_device(const bd_engine *e) {
  return e->device;
}
int bd_engine_max_batch(const bd_engine *e) {
  return e->max_batch;
}
void bd_engine_input_chw(const bd_engine *e, int *c, int *h, int *w) {
  *c = e->c;
  *h = e->h;
  *w = e->w;
}
int64_t bd_engine_input_row_numel(const bd_engine *e) {
  return (int64_t)e->in_row;
}
int bd_engine_num_outputs(const bd_engine *e) {
  return e->n_out;
}
const char *bd_engine_output_name(const bd_engine *e, int i) {
  return (i >= 0 && i < e->n_out) ? e->g->values[e->g->outputs[i]].name : NULL;
}
int bd_engine_output_dims(const bd_engine *e, int i, int batch, int64_t dims[8]) {
  if (i < 0 || i >= e->n_out) return 0;
  const bd_value *v = &e->g->values[e->g->outputs[i]];
  for (int k = 0; k < v->rank; k++) dims[k] = v->dims[k];
  dims[0] = batch;
  return v->rank;
}
int64_t bd_engine_output_row_numel(const bd_engine *e, int i) {
  return (i >= 0 && i < e->n_out) ? e->out_row[i] : 0;
}

static int bucket_for(const bd_engine *e, int m) {
  for (int i = 0; i < e->n_buckets; i++)
    if (e->buckets[i] >= m) return i;
  return e->n_buckets - 1;
}

/* Runs m <= max_batch rows whose input is already in stage_in (rows m.. are zeroed
 * here); outputs land in stage_out. */
static bd_status run_staged(bd_engine *e, int m, bd_err *err) {
  int bi = bucket_for(e, m);
  int b = e->buckets[bi];
  bd_status st = ensure_plan(e, bi, err);
  if (st != BD_OK) return st;
  if (b > m) memset(e->stage_in + (size_t)m * e->in_row, 0, (size_t)(b - m) * e->in_row * 4);
  const float *ins[1] = {e->stage_in};
  return bd_backend_run(e->be, e->plans[bi], ins, e->stage_out, err);
}

bd_status bd_engine_run_raw(bd_engine *e, int n, const float *input, float *const *outputs,
                            bd_err *err) {
  if (n < 1 || n > (1 << 20)) return bd_err_set(err, BD_E_INVALID, "engine: batch %d", n);
  bd_status st;
  for (int r0 = 0; r0 < n; r0 += e->max_batch) {
    int m = n - r0 < e->max_batch ? n - r0 : e->max_batch;
    int bi = bucket_for(e, m);
    if (e->buckets[bi] == m) { /* exact bucket: no copies */
      if ((st = ensure_plan(e, bi, err)) != BD_OK) return st;
      const float *ins[1] = {input + (size_t)r0 * e->in_row};
      float *outs[MAX_OUTPUTS];
      for (int i = 0; i < e->n_out; i++) outs[i] = outputs[i] + (size_t)r0 * e->out_row[i];
      if ((st = bd_backend_run(e->be, e->plans[bi], ins, outs, err)) != BD_OK) return st;
      continue;
    }
    if ((st = ensure_stage(e, e->buckets[bi], err)) != BD_OK) return st;
    memcpy(e->stage_in, input + (size_t)r0 * e->in_row, (size_t)m * e->in_row * sizeof(float));
    if ((st = run_staged(e, m, err)) != BD_OK) return st;
    for (int i = 0; i < e->n_out; i++)
      memcpy(outputs[i] + (size_t)r0 * e->out_row[i], e->stage_out[i],
             (size_t)m * e->out_row[i] * sizeof(float));
  }
  return BD_OK;
}

bd_status bd_engine_preprocess(const bd_engine *e, const bd_image *im, float *dst, bd_prep_info *pi,
                               bd_err *err) {
  if (e->fi.family != BD_FAMILY_YOLOX && e->fi.family != BD_FAMILY_DAMOYOLO)
    return bd_err_set(err, BD_E_INVALID, "engine: pre-processing needs a model family");
  return bd_family_preprocess(&e->fi, im, dst, pi, err);
}

/* A small fork-join over rows for the CPU pre/post-processing of one batch: images are
 * independent, and per-image work (resize, NMS) is milliseconds, so threads pay off
 * from a handful of images. Falls back to the calling thread when a thread cannot start. */
typedef struct {
  void (*fn)(void *ctx, int i);
  void *ctx;
  int n, stride, first;
} pfor_job;

static void *pfor_main(void *arg) {
  pfor_job *j = arg;
  for (int i = j->first; i < j->n; i += j->stride) j->fn(j->ctx, i);
  return NULL;
}

static void parallel_for(int n, int threads, void (*fn)(void *, int), void *ctx) {
  if (threads > n) threads = n;
  if (threads <= 1) {
    for (int i = 0; i < n; i++) fn(ctx, i);
    return;
  }
  pthread_t th[16];
  pfor_job jobs[16];
  int started[16] = {0};
  for (int t = 0; t < threads; t++) {
    jobs[t] = (pfor_job){fn, ctx, n, threads, t};
    if (t > 0) started[t] = pthread_create(&th[t], NULL, pfor_main, &jobs[t]) == 0;
  }
  pfor_main(&jobs[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      pfor_main(&jobs[t]);
  }
}

typedef struct {
  bd_engine *e;
  const bd_image *const *images;
  const bd_detect_params *params;
  bd_detections *out;
  bd_status *row_status; /* per staged row */
  bd_prep_info *pi;
  const int *row_of;
} detect_ctx;

static void pre_row(void *arg, int r) {
  detect_ctx *c = arg;
  float *dst = c->e->stage_in + (size_t)r * c->e->in_row;
  c->row_status[r] = bd_family_preprocess(&c->e->fi, c->images[c->row_of[r]], dst, &c->pi[r], NULL);
  if (c->row_status[r] != BD_OK) memset(dst, 0, c->e->in_row * sizeof(float));
}

static void post_row(void *arg, int r) {
  detect_ctx *c = arg;
  if (c->row_status[r] != BD_OK) return;
  const float *rows[MAX_OUTPUTS];
  for (int i = 0; i < c->e->n_out; i++) rows[i] = c->e->stage_out[i] + (size_t)r * c->e->out_row[i];
  bd_detect_params p = {-1.f, -1.f, 0};
  if (c->params) p = c->params[c->row_of[r]];
  c->row_status[r] =
      bd_family_postprocess(&c->e->fi, rows, &c->pi[r], &p, &c->out[c->row_of[r]], NULL);
}

/* The CPU path of one batch of any size: pre-processing, the network, post-processing. */
static bd_status detect_host(bd_engine *e, int n, const bd_image *const *images,
                             const bd_detect_params *params, bd_detections *out,
                             bd_status *status, bd_err *err) {
  int *row_of = e->row_of; /* image index of each staged row */
  detect_ctx ctx = {e, images, params, out, e->row_status, e->pi, row_of};
  bd_status st;
  int next = 0;
  while (next < n) {
    int m = 0;
    if ((st = ensure_stage(e, e->max_batch, err)) != BD_OK) return st;
    for (; next < n && m < e->max_batch; next++)
      if (images[next]) row_of[m++] = next;
    if (m == 0) break;
    parallel_for(m, e->pp_threads, pre_row, &ctx);
    if ((st = run_staged(e, m, err)) != BD_OK) return st;
    parallel_for(m, e->pp_threads, post_row, &ctx);
    if (status)
      for (int r = 0; r < m; r++) status[row_of[r]] = e->row_status[r];
  }
  return BD_OK;
}

/* Empty detections for every image; status BD_OK, or BD_E_INVALID for a missing one. */
static void clear_results(int n, const bd_image *const *images, bd_detections *out,
                          bd_status *status) {
  for (int i = 0; i < n; i++) {
    out[i].n = 0;
    out[i].det = NULL;
    if (status) status[i] = images[i] ? BD_OK : BD_E_INVALID;
  }
}

static bd_status check_detect(const bd_engine *e, int n, bd_err *err) {
  if (n < 0 || n > (1 << 20)) return bd_err_set(err, BD_E_INVALID, "engine: %d images", n);
  if (e->fi.family != BD_FAMILY_YOLOX && e->fi.family != BD_FAMILY_DAMOYOLO)
    return bd_err_set(err, BD_E_INVALID, "engine: detection needs a model family (loaded as %s)",
                      bd_family_name(e->fi.family));
  return BD_OK;
}

bd_engine_weights *bd_engine_weights_get(bd_engine *e) {
#ifdef BD_ENGINE_CUDA
  if (strncmp(e->device, "cuda", 4) == 0)
    return (bd_engine_weights *)bd_cuda_weights_ref(bd_cuda_backend_weights(e->be));
#endif
  (void)e;
  return NULL;
}

void bd_engine_weights_release(bd_engine_weights *w) {
#ifdef BD_ENGINE_CUDA
  bd_cuda_weights_release((bd_cuda_weights *)w);
#else
  (void)w;
#endif
}

bd_status bd_engine_weights_broadcast(bd_engine_weights *w, int n, const int *devices,
                                      bd_engine_weights **out, bd_err *err) {
#ifdef BD_ENGINE_CUDA
  if (!w || n < 1 || n > 4096)
    return bd_err_set(err, BD_E_INVALID, "engine: broadcast of %s weights to %d instances",
                      w ? "the" : "no", n);
  bd_cuda_weights **tmp = calloc((size_t)n, sizeof *tmp);
  if (!tmp) return bd_err_set(err, BD_E_NOMEM, "engine: broadcast");
  bd_status st = bd_cuda_weights_broadcast((bd_cuda_weights *)w, n, devices, tmp, err);
  for (int i = 0; i < n; i++) out[i] = st == BD_OK ? (bd_engine_weights *)tmp[i] : NULL;
  free(tmp);
  return st;
#else
  (void)w, (void)n, (void)devices, (void)out;
  return bd_err_set(err, BD_E_UNSUPPORTED, "engine: weight broadcast needs the CUDA backend");
#endif
}

int bd_engine_device_prepost(const bd_engine *e) {
  return e->dd;
}

/* ---- device pre/post-processing: staging of one slot ---- */

typedef struct {
  bd_engine *e;
  eng_slot *sl;
  uint8_t *stage;
} stage_ctx;

static void stage_row(void *arg, int r) {
  stage_ctx *c = arg;
  eng_slot *sl = c->sl;
  const bd_image *im = sl->images[sl->row_of[r]];
  const bd_dd_image *d = &sl->rows[r];
  uint8_t *dst = c->stage + d->offset;
  if (!sl->resize[r]) {
    memcpy(dst, im->data, (size_t)im->w * im->h * 3);
    return;
  }
  /* The same OpenCV-exact resize the device does: the kernel then copies it. */
  sl->row_st[r] = bd_family_resize_u8(im->data, im->w, im->h, 3, dst, d->rw, d->rh, NULL);
}

/* Lays out, stages and launches the valid rows of sl (row_of/row_st set, m >= 1). */
static bd_status launch_device(bd_engine *e, int k, bd_err *err) {
  eng_slot *sl = &e->slot[k];
  const bd_backend_vtbl *vt = e->be->vt;
  bd_status st = ensure_plan(e, sl->bi, err);
  if (st == BD_OK) st = dd_ensure(e, err);
  if (st != BD_OK) return st;
  const bd_plan *plan = e->plans[sl->bi];
  if (!e->dd_prepared[sl->bi]) {
    if ((st = vt->dd_prepare(e->be, plan, err)) != BD_OK) return st;
    e->dd_prepared[sl->bi] = 1;
  }
  uint8_t *stage = vt->dd_stage(e->be, k);
  if (!stage) return bd_err_set(err, BD_E_INTERNAL, "engine: no staging for slot %d", k);
  const size_t net = (size_t)e->ddc.in_w * e->ddc.in_h * 3, cap = e->ddc.stage_bytes;
  size_t used = 0;
  for (int r = 0; r < sl->m; r++) {
    const bd_image *im = sl->images[sl->row_of[r]];
    bd_dd_image *d = &sl->rows[r];
    bd_prep_info pi;
    bd_detect_params p = {-1.f, -1.f, 0};
    if (sl->params) p = sl->params[sl->row_of[r]];
    bd_family_defaults(e->fi.family, &p);
    /* Validated by the caller: the geometry cannot fail here. */
    (void)bd_family_prep_geometry(&e->fi, im->w, im->h, &pi, NULL);
    /* Decoded size while it is small and leaves room for the rest as resized. */
    size_t full = (size_t)im->w * im->h * 3, reserve = (size_t)(sl->m - 1 - r) * net;
    sl->resize[r] = !(full <= DD_FULL_MAX * net && used + full + reserve <= cap);
    memset(d, 0, sizeof *d);
    d->offset = (int64_t)used;
    d->rw = pi.resized_w;
    d->rh = pi.resized_h;
    d->sw = sl->resize[r] ? d->rw : im->w;
    d->sh = sl->resize[r] ? d->rh : im->h;
    d->scale_x = 1.0 / ((double)d->rw / d->sw); /* as bd_family_resize_u8 computes it */
    d->scale_y = 1.0 / ((double)d->rh / d->sh);
    d->score_thr = p.score_thr;
    d->iou_thr = p.iou_thr;
    d->max_det = p.max_det < e->ddc.out_cap ? p.max_det : e->ddc.out_cap;
    d->orig_w = im->w;
    d->orig_h = im->h;
    d->ratio = (float)pi.ratio; /* numpy divides by a float32-cast ratio, as the CPU does */
    d->box_sx = pi.scale_x;
    d->box_sy = pi.scale_y;
    used += (size_t)d->sw * d->sh * 3;
  }
  stage_ctx c = {e, sl, stage};
  parallel_for(sl->m, e->pp_threads, stage_row, &c);
  return vt->dd_launch(e->be, plan, k, sl->m, sl->rows, err);
}

/* Turns slot k's device results into the caller's detections. */
static bd_status finish_device(bd_engine *e, int k, bd_err *err) {
  eng_slot *sl = &e->slot[k];
  const float *dets;
  const int *counts;
  bd_status st = e->be->vt->dd_wait(e->be, k, &dets, &counts, err);
  if (st != BD_OK) return st;
  for (int r = 0; r < sl->m; r++) {
    if (sl->row_st[r] != BD_OK) continue;
    bd_detections *o = &sl->out[sl->row_of[r]];
    int c = counts[r];
    if (c == 0) continue;
    o->det = malloc((size_t)c * sizeof *o->det);
    if (!o->det) {
      sl->row_st[r] = BD_E_NOMEM;
      continue;
    }
    const float *q = dets + (size_t)r * e->ddc.out_cap * 6;
    for (int j = 0; j < c; j++, q += 6)
      o->det[j] = (bd_det){q[0], q[1], q[2], q[3], q[4], (int)q[5]};
    o->n = c;
  }
  return BD_OK;
}

bd_status bd_engine_detect_begin(bd_engine *e, int n, const bd_image *const *images,
                                 const bd_detect_params *params, bd_detections *out,
                                 bd_status *status, int *ticket, bd_err *err) {
  bd_status st = check_detect(e, n, err);
  if (st != BD_OK) return st;
  if (n < 1 || n > e->max_batch)
    return bd_err_set(err, BD_E_INVALID, "engine: async batch of %d images (1..%d)", n,
                      e->max_batch);
  int k = 0;
  while (k < BD_ENGINE_MAX_INFLIGHT && e->slot[k].busy) k++;
  if (k == BD_ENGINE_MAX_INFLIGHT)
    return bd_err_set(err, BD_E_UNAVAILABLE, "engine: %d batches already in flight",
                      BD_ENGINE_MAX_INFLIGHT);
  eng_slot *sl = &e->slot[k];
  sl->n = n;
  sl->images = images;
  sl->params = params;
  sl->out = out;
  sl->status = status;
  sl->dd = 0;
  sl->m = 0;
  sl->st = BD_OK;
  bd_err_clear(&sl->err);
  clear_results(n, images, out, status);
  if (!e->dd) { /* the host path runs now; end hands the result over */
    sl->st = detect_host(e, n, images, params, out, status, &sl->err);
    sl->busy = 1;
    *ticket = k;
    return BD_OK;
  }
  for (int i = 0; i < n; i++) {
    bd_prep_info pi;
    if (!images[i]) continue;
    bd_status gs = images[i]->data ? bd_family_prep_geometry(&e->fi, images[i]->w, images[i]->h,
                                                             &pi, NULL)
                                   : BD_E_INVALID;
    if (gs != BD_OK) {
      if (status) status[i] = gs;
      continue;
    }
    sl->row_of[sl->m] = i;
    sl->row_st[sl->m++] = BD_OK;
  }
  if (sl->m > 0) {
    sl->bi = bucket_for(e, sl->m);
    if ((st = launch_device(e, k, err)) != BD_OK) return st;
    sl->dd = 1;
  }
  sl->busy = 1;
  *ticket = k;
  return BD_OK;
}

bd_status bd_engine_detect_end(bd_engine *e, int ticket, bd_err *err) {
  if (ticket < 0 || ticket >= BD_ENGINE_MAX_INFLIGHT || !e->slot[ticket].busy)
    return bd_err_set(err, BD_E_INVALID, "engine: ticket %d is not in flight", ticket);
  eng_slot *sl = &e->slot[ticket];
  bd_status st = BD_OK;
  sl->busy = 0;
  if (!sl->dd) {
    if (sl->st != BD_OK && err) *err = sl->err;
    return sl->st;
  }
  if ((st = finish_device(e, ticket, err)) != BD_OK) {
    for (int i = 0; i < sl->n; i++) bd_detections_free(&sl->out[i]);
    return st;
  }
  if (sl->status)
    for (int r = 0; r < sl->m; r++) sl->status[sl->row_of[r]] = sl->row_st[r];
  return BD_OK;
}

bd_status bd_engine_check_image_size(int w, int h, bd_err *err) {
  if (w >= 1 && h >= 1 && w <= BD_IMAGE_MAX_SIDE && h <= BD_IMAGE_MAX_SIDE) return BD_OK;
  return bd_err_set(err, BD_E_LIMIT, "%dx%d is over the %d px per side that pre-processing takes",
                    w, h, BD_IMAGE_MAX_SIDE);
}

bd_status bd_engine_detect(bd_engine *e, int n, const bd_image *const *images,
                           const bd_detect_params *params, bd_detections *out, bd_status *status,
                           bd_err *err) {
  bd_status st = check_detect(e, n, err);
  if (st != BD_OK) return st;
  clear_results(n, images, out, status);
  if (!e->dd) return detect_host(e, n, images, params, out, status, err);
  /* Chunks of max_batch, two in flight: chunk k+1 is staged while k runs. */
  int pending[BD_ENGINE_MAX_INFLIGHT], np = 0, next = 0;
  while (next < n || np > 0) {
    while (st == BD_OK && np < BD_ENGINE_MAX_INFLIGHT && next < n) {
      int m = n - next < e->max_batch ? n - next : e->max_batch, t;
      st = bd_engine_detect_begin(e, m, images + next, params ? params + next : NULL, out + next,
                                  status ? status + next : NULL, &t, err);
      if (st != BD_OK) break;
      pending[np++] = t;
      next += m;
    }
    if (np == 0) break;
    bd_err e2;
    bd_status s2 = bd_engine_detect_end(e, pending[0], st == BD_OK ? err : &e2);
    if (st == BD_OK) st = s2;
    for (int i = 1; i < np; i++) pending[i - 1] = pending[i];
    np--;
  }
  if (st != BD_OK)
    for (int i = 0; i < n; i++) bd_detections_free(&out[i]);
  return st;
}

/* The bucket whose prepared plan has exactly n rows, on a cuda engine (the benchmark
 * hooks); `what` names the hook in the error. */
static bd_status exact_cuda_bucket(const bd_engine *e, int n, const char *what, int *bi,
                                   bd_err *err) {
  *bi = -1;
  for (int i = 0; i < e->n_buckets; i++)
    if (e->buckets[i] == n) *bi = i;
  if (*bi < 0 || !e->plans[*bi])
    return bd_err_set(err, BD_E_INVALID, "engine: no prepared plan for exactly %d rows", n);
  if (strcmp(e->be->vt->name, "cuda") != 0)
    return bd_err_set(err, BD_E_UNSUPPORTED, "engine: %s needs a cuda engine", what);
  return BD_OK;
}

bd_status bd_engine_time_device(bd_engine *e, int n, int reps, double *ms, bd_err *err) {
  int bi;
  bd_status st = exact_cuda_bucket(e, n, "device timing", &bi, err);
  if (st != BD_OK) return st;
#ifdef BD_ENGINE_CUDA
  return bd_cuda_backend_time_device(e->be, e->plans[bi], reps, ms, err);
#else
  (void)reps;
  (void)ms;
  return bd_err_set(err, BD_E_UNSUPPORTED, "engine: built without CUDA");
#endif
}

bd_status bd_engine_profile_device(bd_engine *e, int n, int reps, bd_prof_row **rows, int *n_rows,
                                   bd_err *err) {
  int bi;
  *rows = NULL;
  *n_rows = 0;
  bd_status st = exact_cuda_bucket(e, n, "a device profile", &bi, err);
  if (st != BD_OK) return st;
#ifdef BD_ENGINE_CUDA
  return bd_cuda_backend_profile(e->be, e->plans[bi], reps, rows, n_rows, err);
#else
  (void)reps;
  return bd_err_set(err, BD_E_UNSUPPORTED, "engine: built without CUDA");
#endif
}

bd_status bd_engine_device_mem_used(const char *device, size_t *used, bd_err *err) {
  int is_cuda = 0, idx = 0;
  if (bd_engine_parse_device(device, &is_cuda, &idx))
    return bd_err_set(err, BD_E_INVALID, "engine: unknown device '%s'", device ? device : "");
  if (!is_cuda) return bd_err_set(err, BD_E_UNSUPPORTED, "engine: %s has no device memory", device);
#ifdef BD_ENGINE_CUDA
  return bd_cuda_device_mem_used(idx, used, NULL, err);
#else
  (void)used;
  return bd_err_set(err, BD_E_UNSUPPORTED, "engine: built without CUDA");
#endif
}

bd_status bd_engine_cuda_plan_memory(const bd_graph *g, const bd_plan *p, bd_engine_plan_mem *m,
                                     bd_err *err) {
  memset(m, 0, sizeof *m);
#ifdef BD_ENGINE_CUDA
  bd_cuda_plan_mem c;
  bd_status st = bd_cuda_plan_memory(g, p, &c, err);
  if (st != BD_OK) return st;
  m->weights = c.weights;
  m->arena = c.arena;
  m->concat_inputs = c.concat_inputs;
  m->concat_in_place = c.in_place;
  return BD_OK;
#else
  (void)g;
  (void)p;
  return bd_err_set(err, BD_E_UNSUPPORTED, "engine: built without CUDA");
#endif
}

const char *bd_engine_graph_shape(bd_engine *e, int n) {
  int bi;
  if (exact_cuda_bucket(e, n, "graph shape", &bi, NULL) != BD_OK) return NULL;
#ifdef BD_ENGINE_CUDA
  return bd_cuda_backend_graph_shape(e->be, e->plans[bi]);
#else
  return NULL;
#endif
}

const char *bd_engine_graph_status(bd_engine *e, int n, int dd) {
  int bi;
  if (exact_cuda_bucket(e, n, "graph status", &bi, NULL) != BD_OK)
    return strcmp(e->be->vt->name, "cuda") ? "not a cuda engine" : "no prepared plan";
#ifdef BD_ENGINE_CUDA
  return dd ? bd_cuda_backend_dd_graph_error(e->be, e->plans[bi])
            : bd_cuda_backend_graph_error(e->be, e->plans[bi]);
#else
  (void)dd;
  return "built without CUDA";
#endif
}
