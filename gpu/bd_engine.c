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

/* The CUDA engineer's backend plugs in through this header (same vtable as cpu). */
#if defined(BD_HAVE_CUDA) && defined(__has_include)
#if __has_include("cuda/bd_cuda_backend.h")
#include "cuda/bd_cuda_backend.h"
#define BD_ENGINE_CUDA 1
#endif
#endif

#define MAX_BUCKETS 8
#define MAX_OUTPUTS 8

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
  bd_status st = bd_plan_new(e->g, e->buckets[bi], &p, err);
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
  return bd_cuda_backend_new(e->g, idx, &e->be, err);
#else
  return bd_err_set(err, BD_E_UNSUPPORTED,
                    "engine: device '%s' needs the CUDA backend, which this build does not have",
                    o->device);
#endif
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
  for (int i = 0; i < e->n_out; i++) {
    const bd_value *v = &e->g->values[e->g->outputs[i]];
    int64_t n = bd_value_numel(v);
    if (n <= 0 || v->rank < 1 || v->dims[0] != e->g->batch0 || e->g->batch0 < 1) {
      st = bd_err_set(err, BD_E_UNSUPPORTED,
                      "engine: output '%s' does not carry the batch on axis 0", v->name);
      goto fail;
    }
    e->out_row[i] = n / e->g->batch0;
  }
  static const int std_buckets[] = {1, 8, 16, 32, 64};
  for (size_t i = 0; i < sizeof std_buckets / sizeof *std_buckets; i++)
    if (std_buckets[i] < e->max_batch) e->buckets[e->n_buckets++] = std_buckets[i];
  e->buckets[e->n_buckets++] = e->max_batch;
  e->pi = calloc((size_t)e->max_batch, sizeof *e->pi);
  e->row_of = calloc((size_t)e->max_batch, sizeof *e->row_of);
  e->row_status = calloc((size_t)e->max_batch, sizeof *e->row_status);
  if (!e->pi || !e->row_of || !e->row_status) {
    st = bd_err_set(err, BD_E_NOMEM, "engine: detect bookkeeping for %d rows", e->max_batch);
    goto fail;
  }
  if ((st = make_backend(e, &o, err)) != BD_OK) goto fail;
  if (o.prepare_all)
    for (int i = 0; i < e->n_buckets; i++)
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

bd_status bd_engine_detect(bd_engine *e, int n, const bd_image *const *images,
                           const bd_detect_params *params, bd_detections *out, bd_status *status,
                           bd_err *err) {
  if (n < 0 || n > (1 << 20)) return bd_err_set(err, BD_E_INVALID, "engine: %d images", n);
  if (e->fi.family != BD_FAMILY_YOLOX && e->fi.family != BD_FAMILY_DAMOYOLO)
    return bd_err_set(err, BD_E_INVALID, "engine: detection needs a model family (loaded as %s)",
                      bd_family_name(e->fi.family));
  for (int i = 0; i < n; i++) {
    out[i].n = 0;
    out[i].det = NULL;
    if (status) status[i] = images[i] ? BD_OK : BD_E_INVALID;
  }
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

bd_status bd_engine_time_device(bd_engine *e, int n, int reps, double *ms, bd_err *err) {
  int bi = -1;
  for (int i = 0; i < e->n_buckets; i++)
    if (e->buckets[i] == n) bi = i;
  if (bi < 0 || !e->plans[bi])
    return bd_err_set(err, BD_E_INVALID, "engine: no prepared plan for exactly %d rows", n);
  if (strcmp(e->be->vt->name, "cuda") != 0)
    return bd_err_set(err, BD_E_UNSUPPORTED, "engine: device timing needs a cuda engine");
#ifdef BD_ENGINE_CUDA
  return bd_cuda_backend_time_device(e->be, e->plans[bi], reps, ms, err);
#else
  (void)reps;
  (void)ms;
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
