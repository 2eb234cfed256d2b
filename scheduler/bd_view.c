/* bd_view: see bd_view.h. */
#define _GNU_SOURCE
#include "bd_view.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_proto.h"
#include "bd_text.h"

/* Redis text may not be UTF-8; jansson refuses such strings. */
/* Text from Redis in JSON: bytes that are not UTF-8 become U+FFFD (jansson refuses them). */
static json_t *js(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  char *t = bd_utf8_sanitize(s);
  j = t ? json_string(t) : NULL;
  free(t);
  return j ? j : json_string("");
}

/* A number from a Redis field: what is not a finite number is dflt ("nan" showed as
 * "nank" and dropped the key from --json). */
static double num(const char *s, double dflt) {
  char *end = NULL;
  double d = strtod(s, &end);
  return end != s && isfinite(d) ? d : dflt;
}

#define ERRSET_MAX 10000 /* distinct messages counted; the rest go to "(other messages)" */

void bd_view_fmt_count(long long n, char *buf, size_t cap) {
  if (n < 0)
    snprintf(buf, cap, "-");
  else if (n < 100000)
    snprintf(buf, cap, "%lld", n);
  else if (n < 10000000)
    snprintf(buf, cap, "%.1fk", (double)n / 1e3);
  else if (n < 10000000000LL)
    snprintf(buf, cap, "%.1fM", (double)n / 1e6);
  else
    snprintf(buf, cap, "%.1fG", (double)n / 1e9);
  /* 9999.9k would be 7 chars: keep every form <= 6 */
  if (strlen(buf) > 6 && n < 10000000000LL) snprintf(buf, cap, "%.2fM", (double)n / 1e6);
}

void bd_view_fmt_duration(double s, char *buf, size_t cap) {
  if (s < 0 || s != s || s > 99 * 86400.0) {
    snprintf(buf, cap, "-");
    return;
  }
  long t = (long)(s + 0.5);
  if (t < 60)
    snprintf(buf, cap, "%lds", t);
  else if (t < 3600)
    snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
  else if (t < 86400)
    snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else
    snprintf(buf, cap, "%ldd%02ldh", t / 86400, (t % 86400) / 3600);
}

void bd_view_fmt_bar(double frac, int w, char *buf, size_t cap) {
  if (cap < (size_t)w + 3) {
    if (cap) buf[0] = '\0';
    return;
  }
  if (!(frac >= 0)) frac = 0;
  if (frac > 1) frac = 1;
  int fill = (int)(frac * w + 1e-9);
  buf[0] = '[';
  for (int i = 0; i < w; i++) buf[1 + i] = i < fill ? '#' : '.';
  buf[w + 1] = ']';
  buf[w + 2] = '\0';
}

static void fmt_rate(double r, char *buf, size_t cap) {
  if (r <= 0)
    snprintf(buf, cap, "-");
  else if (r < 1000)
    snprintf(buf, cap, "%.1f", r);
  else if (r < 100000)
    snprintf(buf, cap, "%.0f", r);
  else
    snprintf(buf, cap, "%.0fk", r / 1e3);
}

static void copy_field(char *dst, size_t cap, const char *v, size_t vlen) {
  size_t n = vlen < cap - 1 ? vlen : cap - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

static int job_kv(void *ctx, const char *k, size_t klen, const char *v, size_t vlen) {
  bd_view_job *j = ctx;
  char val[64];
  copy_field(val, sizeof val, v, vlen);
  (void)klen;
  if (!strcmp(k, "state"))
    copy_field(j->state, sizeof j->state, v, vlen);
  else if (!strcmp(k, "model"))
    copy_field(j->model, sizeof j->model, v, vlen);
  else if (!strcmp(k, "total"))
    j->total = atoll(val);
  else if (!strcmp(k, "done"))
    j->done = atoll(val);
  else if (!strcmp(k, "failed"))
    j->failed = atoll(val);
  else if (!strcmp(k, "shards"))
    j->shards = atoll(val);
  else if (!strcmp(k, "created"))
    j->created = num(val, 0);
  else if (!strcmp(k, "updated"))
    j->updated = num(val, 0);
  else if (!strcmp(k, "finished"))
    j->finished = num(val, 0);
  else if (!strcmp(k, "rate"))
    j->rate = num(val, 0);
  else if (!strcmp(k, "eta"))
    j->eta = num(val, -1), j->has_eta = 1;
  else if (!strcmp(k, "progressed"))
    j->progressed = num(val, 0);
  else if (!strcmp(k, "stalled"))
    j->stalled = atoi(val);
  return 0;
}

bd_status bd_view_load_job(bd_sredis *r, const char *job, bd_view_job *out, int *found,
                           bd_err *err) {
  memset(out, 0, sizeof *out);
  snprintf(out->job, sizeof out->job, "%s", job);
  snprintf(out->state, sizeof out->state, "queued");
  out->eta = -1;
  out->total = -1; /* absent: a job whose manifests did not come from submit */
  char key[BD_ID_MAX + 16];
  snprintf(key, sizeof key, "job:%s", job);
  bd_status st = bd_sredis_hgetall(r, key, job_kv, out, found, err);
  if (st != BD_OK || !*found) return st;
  redisReply *rep;
  st = bd_sredis_cmd(r, &rep, err, "SCARD job:%s:shards", job);
  if (st != BD_OK) return st;
  out->shards_done = bd_sredis_reply_ll(rep, 0);
  freeReplyObject(rep);
  return BD_OK;
}

int bd_view_job_final(const bd_view_job *j) {
  return !strcmp(j->state, "complete") || !strcmp(j->state, "failed") ||
         !strcmp(j->state, "cancelled");
}

typedef struct {
  bd_view *v;
  bd_err *err;
  bd_status st;
  char **ids;
  size_t n, cap;
  size_t over; /* ids past the cap, counted only */
} scan_ctx;

static int add_id(void *ctx, const char *key, size_t len) {
  scan_ctx *c = ctx;
  const char *p = memchr(key, ':', len);
  if (!p) return 0;
  p++;
  size_t il = len - (size_t)(p - key);
  if (il == 0 || il > 256) return 0;
  if (c->n >= BD_VIEW_MAX_JOBS) { /* same cap for workers */
    c->over++;
    return 0;
  }
  if (c->n == c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 64;
    char **ni = realloc(c->ids, nc * sizeof *ni);
    if (!ni) {
      c->st = bd_err_set(c->err, BD_E_NOMEM, "out of memory");
      return 1;
    }
    c->ids = ni;
    c->cap = nc;
  }
  c->ids[c->n] = strndup(p, il);
  if (!c->ids[c->n]) {
    c->st = bd_err_set(c->err, BD_E_NOMEM, "out of memory");
    return 1;
  }
  c->n++;
  return 0;
}

static int add_job_id(void *ctx, const char *key, size_t len) {
  /* job:{id} only: ids hold no ':', so job:{id}:shards etc. have a second one */
  const char *p = memchr(key, ':', len);
  if (!p || memchr(p + 1, ':', len - (size_t)(p + 1 - key))) return 0;
  return add_id(ctx, key, len);
}

static int cmp_ids(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int worker_kv(void *ctx, const char *k, size_t klen, const char *v, size_t vlen) {
  bd_view_worker *w = ctx;
  char val[64];
  copy_field(val, sizeof val, v, vlen);
  (void)klen;
  if (!strcmp(k, "host"))
    copy_field(w->host, sizeof w->host, v, vlen);
  else if (!strcmp(k, "devices"))
    copy_field(w->devices, sizeof w->devices, v, vlen);
  else if (!strcmp(k, "dev_img_s"))
    copy_field(w->dev_img_s, sizeof w->dev_img_s, v, vlen);
  else if (!strcmp(k, "img_s"))
    w->img_s = num(val, 0);
  else if (!strcmp(k, "last_report"))
    w->last_report = num(val, 0);
  else if (!strcmp(k, "images"))
    w->images = atoll(val);
  else if (!strcmp(k, "silent"))
    w->silent = atoi(val);
  return 0;
}

/* Without the worker's own total (img_s), the sum of the coordinator's per-device rates. */
static void worker_total(bd_view_worker *w) {
  if (w->img_s > 0 || !w->dev_img_s[0]) return;
  for (const char *p = w->dev_img_s; (p = strchr(p, '=')) != NULL; p++) w->img_s += num(p + 1, 0);
}

typedef struct {
  bd_view_error *e;
  size_t n, cap;
  long long other, images;
} errsum;

static int err_kv(void *ctx, const char *k, size_t klen, const char *v, size_t vlen) {
  errsum *s = ctx;
  (void)k, (void)klen;
  s->images++;
  char msg[BD_VIEW_MAX_ERRMSG + 1];
  copy_field(msg, sizeof msg, v, vlen);
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->e[i].msg, msg)) {
      s->e[i].count++;
      return 0;
    }
  /* Linear search: error kinds are few in practice; the cap bounds the worst case. */
  if (s->n >= ERRSET_MAX) {
    s->other++;
    return 0;
  }
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 16;
    bd_view_error *ne = realloc(s->e, nc * sizeof *ne);
    if (!ne) {
      s->other++;
      return 0;
    }
    s->e = ne;
    s->cap = nc;
  }
  memcpy(s->e[s->n].msg, msg, sizeof msg);
  s->e[s->n++].count = 1;
  return 0;
}

static int cmp_err(const void *a, const void *b) {
  const bd_view_error *x = a, *y = b;
  if (x->count != y->count) return x->count < y->count ? 1 : -1;
  return strcmp(x->msg, y->msg);
}

bd_status bd_view_load(bd_sredis *r, const char *job, bd_view *v, bd_err *err) {
  memset(v, 0, sizeof *v);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  v->now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
  scan_ctx jc = {v, err, BD_OK, NULL, 0, 0, 0}, wc = {v, err, BD_OK, NULL, 0, 0, 0};
  bd_status st = BD_OK;
  if (job) {
    jc.ids = malloc(sizeof *jc.ids);
    if (!jc.ids || !(jc.ids[0] = strdup(job))) {
      st = bd_err_set(err, BD_E_NOMEM, "out of memory");
      goto out;
    }
    jc.n = jc.cap = 1;
  } else {
    st = bd_sredis_scan(r, "job:*", 1000, add_job_id, &jc, err);
    if (st == BD_OK) st = jc.st;
    if (st != BD_OK) goto out;
    if (jc.n) qsort(jc.ids, jc.n, sizeof *jc.ids, cmp_ids);
    v->jobs_not_shown = jc.over;
  }
  v->jobs = calloc(jc.n + 1, sizeof *v->jobs);
  if (!v->jobs) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < jc.n; i++) {
    if (i && !strcmp(jc.ids[i], jc.ids[i - 1])) continue; /* SCAN repeat */
    int found;
    bd_err je = {0};
    st = bd_view_load_job(r, jc.ids[i], &v->jobs[v->n_jobs], &found, &je);
    if (st != BD_OK && !job && strstr(je.msg, "WRONGTYPE")) { /* another kind of key */
      v->jobs_unreadable++;
      st = BD_OK;
      continue;
    }
    if (st != BD_OK) {
      if (err) *err = je;
      goto out;
    }
    if (found) v->n_jobs++;
  }
  if (job && !v->n_jobs) {
    st = bd_err_set(err, BD_E_NOT_FOUND, "job %s: no such job", job);
    goto out;
  }
  st = bd_sredis_scan(r, "worker:*", 1000, add_id, &wc, err);
  if (st == BD_OK) st = wc.st;
  if (st != BD_OK) goto out;
  if (wc.n) qsort(wc.ids, wc.n, sizeof *wc.ids, cmp_ids);
  v->workers = calloc(wc.n + 1, sizeof *v->workers);
  if (!v->workers) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < wc.n; i++) {
    if (i && !strcmp(wc.ids[i], wc.ids[i - 1])) continue;
    bd_view_worker *w = &v->workers[v->n_workers];
    char key[300];
    int found;
    snprintf(key, sizeof key, "worker:%s", wc.ids[i]);
    snprintf(w->id, sizeof w->id, "%s", wc.ids[i]);
    st = bd_sredis_hgetall(r, key, worker_kv, w, &found, err);
    if (st != BD_OK) goto out;
    if (found) worker_total(w), v->n_workers++;
  }
  if (job) {
    errsum es = {0};
    char key[BD_ID_MAX + 16];
    snprintf(key, sizeof key, "job:%s:errors", job);
    st = bd_sredis_hscan(r, key, 1000, err_kv, &es, err);
    if (st == BD_OK) {
      if (es.n) qsort(es.e, es.n, sizeof *es.e, cmp_err);
      for (size_t i = 0; i < es.n && i < BD_VIEW_TOP_ERRORS; i++) v->top[v->n_top++] = es.e[i];
      v->err_images = es.images;
      v->err_messages = (long long)es.n + (es.other ? 1 : 0);
    }
    free(es.e);
  }
out:
  for (size_t i = 0; i < jc.n; i++) free(jc.ids[i]);
  for (size_t i = 0; i < wc.n; i++) free(wc.ids[i]);
  free(jc.ids);
  free(wc.ids);
  return st;
}

void bd_view_free(bd_view *v) {
  if (!v) return;
  free(v->jobs);
  free(v->workers);
  memset(v, 0, sizeof *v);
}

static const char *shown_state(const bd_view_job *j) {
  return j->stalled && !bd_view_job_final(j) ? "stalled" : j->state;
}

static double job_eta(const bd_view_job *j) {
  if (bd_view_job_final(j)) return -1;
  if (j->has_eta) return j->eta >= 0 && j->rate > 0 ? j->eta : -1;
  long long left = j->total - j->done - j->failed;
  return j->rate > 0 && left >= 0 ? (double)left / j->rate : -1;
}

static double job_frac(const bd_view_job *j) {
  if (j->total <= 0) return bd_view_job_final(j) ? 1 : 0;
  return (double)(j->done + j->failed) / (double)j->total;
}

/* "cuda:0=123.4,cuda:1=..." -> name/rate pairs, else the devices list with no rates. */
static int next_dev(const char **p, char *name, size_t ncap, double *rate) {
  while (**p == ',') (*p)++;
  if (!**p) return 0;
  size_t n = strcspn(*p, ",");
  const char *eq = memchr(*p, '=', n);
  size_t nl = eq ? (size_t)(eq - *p) : n;
  copy_field(name, ncap, *p, nl);
  *rate = eq ? num(eq + 1, -1) : -1;
  *p += n;
  return 1;
}

static void render(const bd_view *v, const char *job, FILE *f) {
  char a[32], b[32], c[32], d[32], e[32], bar[64];
  if (job && v->n_jobs) {
    const bd_view_job *j = &v->jobs[0];
    fprintf(f, "job %.40s  model %.24s  state %s\n", j->job, j->model, shown_state(j));
    bd_view_fmt_bar(job_frac(j), 60, bar, sizeof bar);
    fprintf(f, "%s %5.1f%%\n", bar, 100 * job_frac(j));
    if (j->total >= 0)
      fprintf(f, "images  %lld done, %lld failed, %lld total; shards %lld/%lld\n", j->done,
              j->failed, j->total, j->shards_done, j->shards);
    else
      fprintf(f,
              "images  %lld done, %lld failed, total unknown (no submit record); shards "
              "%lld done\n",
              j->done, j->failed, j->shards_done);
    fmt_rate(j->rate, a, sizeof a);
    bd_view_fmt_duration(job_eta(j), b, sizeof b);
    struct tm tm;
    time_t ct = j->created > 0 && j->created < 253402300800.0 ? (time_t)j->created : 0;
    if (!ct || !gmtime_r(&ct, &tm) || !strftime(c, sizeof c, "%Y-%m-%d %H:%M:%S", &tm))
      snprintf(c, sizeof c, "?");
    fprintf(f, "rate    %s img/s  ETA %s  created %s UTC\n", a, b, c);
    if (v->err_images) {
      fprintf(f, "errors  %lld images, %lld distinct messages; top %zu:\n", v->err_images,
              v->err_messages, v->n_top);
      for (size_t i = 0; i < v->n_top; i++)
        fprintf(f, "%8lld  %.68s\n", v->top[i].count, v->top[i].msg);
    } else {
      fprintf(f, "errors  none\n");
    }
    return;
  }
  fprintf(f, "%-11s %-9s %-16s %6s %5s %6s %6s %5s %s\n", "JOB", "MODEL", "PROGRESS", "DONE",
          "FAIL", "TOTAL", "IMG/S", "ETA", "STATE");
  if (!v->n_jobs) fprintf(f, "(no jobs)\n");
  for (size_t i = 0; i < v->n_jobs; i++) {
    const bd_view_job *j = &v->jobs[i];
    char id[16], model[16];
    snprintf(id, sizeof id, "%.11s", j->job);
    if (strlen(j->job) > 11) snprintf(id, sizeof id, "%.10s~", j->job);
    snprintf(model, sizeof model, "%.9s", j->model);
    if (strlen(j->model) > 9) snprintf(model, sizeof model, "%.8s~", j->model);
    bd_view_fmt_bar(job_frac(j), 10, bar, sizeof bar);
    bd_view_fmt_count(j->done, a, sizeof a);
    bd_view_fmt_count(j->failed, b, sizeof b);
    bd_view_fmt_count(j->total, c, sizeof c);
    fmt_rate(bd_view_job_final(j) ? 0 : j->rate, d, sizeof d);
    bd_view_fmt_duration(job_eta(j), e, sizeof e);
    fprintf(f, "%-11s %-9s %s%3d%% %6s %5.5s %6s %6s %5s %.8s\n", id, model, bar,
            (int)(100 * job_frac(j)), a, b, c, d, e, shown_state(j));
  }
  if (v->jobs_not_shown)
    fprintf(f, "(%zu more jobs not shown; 'status --job ID' shows any one)\n", v->jobs_not_shown);
  if (v->jobs_unreadable)
    fprintf(f, "(%zu keys under job:* are no job record; skipped)\n", v->jobs_unreadable);
  fprintf(f, "\n%-24s %-16s %-10s %8s %9s %s\n", "WORKER", "HOST", "DEVICE", "IMG/S", "SEEN",
          "HEALTH");
  if (!v->n_workers) fprintf(f, "(no workers)\n");
  for (size_t i = 0; i < v->n_workers; i++) {
    const bd_view_worker *w = &v->workers[i];
    bd_view_fmt_duration(w->last_report > 0 ? v->now - w->last_report : -1, a, sizeof a);
    snprintf(b, sizeof b, "%.16s ago", a);
    fmt_rate(w->img_s, c, sizeof c);
    fprintf(f, "%-24.24s %-16.16s %-10s %8s %9s %s\n", w->id, w->host, "all", c,
            w->last_report > 0 ? b : "-", w->silent ? "SILENT" : "ok");
    const char *p = w->dev_img_s[0] ? w->dev_img_s : w->devices;
    char name[64];
    double r;
    while (next_dev(&p, name, sizeof name, &r)) {
      fmt_rate(r, d, sizeof d);
      fprintf(f, "%-24s %-16s %-10.10s %8s\n", "", "", name, d);
    }
  }
}

/* Rendered into memory, then written with each control byte (ids, hosts, messages from
 * Redis may hold any) shown as '?': a terminal gets no escape sequences, columns keep
 * their widths. */
void bd_view_render(const bd_view *v, const char *job, FILE *f) {
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  if (!m) return;
  render(v, job, m);
  if (fclose(m) != 0 || !buf) {
    free(buf);
    return;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)buf[i];
    if ((ch < 0x20 && ch != '\n') || ch == 0x7f) buf[i] = '?';
  }
  fwrite(buf, 1, len, f);
  free(buf);
}

char *bd_view_json(const bd_view *v, const char *job) {
  json_t *root = json_object(), *jobs = json_array(), *workers = json_array();
  json_object_set_new(root, "v", json_integer(1));
  json_object_set_new(root, "now", json_real(v->now));
  json_object_set_new(root, "jobs_not_shown", json_integer((json_int_t)v->jobs_not_shown));
  json_object_set_new(root, "jobs_unreadable", json_integer((json_int_t)v->jobs_unreadable));
  for (size_t i = 0; i < v->n_jobs; i++) {
    const bd_view_job *j = &v->jobs[i];
    json_t *o = json_object();
    json_object_set_new(o, "job", js(j->job));
    json_object_set_new(o, "state", js(j->state));
    json_object_set_new(o, "model", js(j->model));
    json_object_set_new(o, "total", j->total >= 0 ? json_integer(j->total) : json_null());
    json_object_set_new(o, "done", json_integer(j->done));
    json_object_set_new(o, "failed", json_integer(j->failed));
    json_object_set_new(o, "shards", json_integer(j->shards));
    json_object_set_new(o, "shards_done", json_integer(j->shards_done));
    json_object_set_new(o, "progress", json_real(job_frac(j)));
    json_object_set_new(o, "created", json_real(j->created));
    json_object_set_new(o, "updated", json_real(j->updated));
    json_object_set_new(o, "rate", json_real(j->rate));
    double eta = job_eta(j);
    json_object_set_new(o, "eta", eta >= 0 ? json_real(eta) : json_null());
    json_object_set_new(o, "stalled", json_boolean(j->stalled));
    if (j->finished > 0) json_object_set_new(o, "finished", json_real(j->finished));
    json_array_append_new(jobs, o);
  }
  for (size_t i = 0; i < v->n_workers; i++) {
    const bd_view_worker *w = &v->workers[i];
    json_t *o = json_object(), *devs = json_array();
    json_object_set_new(o, "worker", js(w->id));
    json_object_set_new(o, "host", js(w->host));
    json_object_set_new(o, "img_s", json_real(w->img_s));
    json_object_set_new(o, "images", json_integer(w->images));
    json_object_set_new(o, "last_report", json_real(w->last_report));
    json_object_set_new(o, "silent", json_boolean(w->silent));
    const char *p = w->dev_img_s[0] ? w->dev_img_s : w->devices;
    char name[64];
    double r;
    while (next_dev(&p, name, sizeof name, &r)) {
      json_t *d = json_object();
      json_object_set_new(d, "name", js(name));
      json_object_set_new(d, "img_s", r >= 0 ? json_real(r) : json_null());
      json_array_append_new(devs, d);
    }
    json_object_set_new(o, "devices", devs);
    json_array_append_new(workers, o);
  }
  json_object_set_new(root, "jobs", jobs);
  json_object_set_new(root, "workers", workers);
  if (job) {
    json_t *errs = json_array();
    for (size_t i = 0; i < v->n_top; i++) {
      json_t *o = json_object();
      json_object_set_new(o, "message", js(v->top[i].msg));
      json_object_set_new(o, "count", json_integer(v->top[i].count));
      json_array_append_new(errs, o);
    }
    json_object_set_new(root, "errors", errs);
    json_object_set_new(root, "error_images", json_integer(v->err_images));
  }
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}
