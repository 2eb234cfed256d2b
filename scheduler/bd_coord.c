/* bd_coord: see bd_coord.h. */
#define _GNU_SOURCE
#include "bd_coord.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_kafka.h"
#include "bd_log.h"
#include "bd_report.h"
#include "bd_sredis.h"
#include "bd_strmap.h"
#include "bd_view.h"

/* Job records tracked at most (finished ones too: they are never deleted by us). */
#define MAX_JOBS 1000000
/* A job final at its last read is read again this often (plus a spread per id), to see a
 * resubmit reopen it or a delete remove it, instead of on every tick. */
#define FINAL_RECHECK_S 15.0
#define BD_HTTP_MAX_CONNECTIONS 4096
#define BD_HTTP_MAX_PER_IP 256
#define MAX_WORKERS 10000

typedef struct {
  bd_view_job v;     /* last read from Redis */
  double t0, count0; /* first sight */
  double last_t, last_count, last_progress;
  double gap; /* smoothed seconds between progress steps; 0: none seen yet */
  double next_read; /* final jobs: wall time of the next read */
  int bad;          /* its record could not be read (e.g. not a hash): warned once */
  double rate, eta;
  int seen;  /* seen in the current pass */
  int final; /* in a final state at the last pass */
} cjob;

typedef struct {
  char id[BD_REPORT_MAX_NAME + 1], host[BD_REPORT_MAX_NAME + 1];
  double ts; /* last report's own timestamp */
  size_t n_dev;
  char dev[BD_REPORT_MAX_DEVICES][BD_REPORT_MAX_DEVNAME + 1];
  double dev_rate[BD_REPORT_MAX_DEVICES];
  long long dev_images[BD_REPORT_MAX_DEVICES];
  int silent;
} cworker;

struct bd_coord {
  bd_coord_opts o;
  bd_sredis *rd;
  bd_kafka_consumer *kc;
  struct MHD_Daemon *mhd;
  int port;
  cjob *jobs;
  size_t n_jobs, cap_jobs;
  int warned_cap; /* past MAX_JOBS, said once */
  cworker *workers;
  size_t n_workers, cap_workers;
  pthread_mutex_t mu;
  char *metrics; /* guarded by mu */
};

double bd_coord_eta(double left, double rate, double idle, double gap) {
  if (rate <= 0 || left < 0) return -1;
  double quiet = 3 * gap > 10 ? 3 * gap : 10;
  if (idle > quiet) return -1;
  return left / rate;
}

double bd_coord_smooth(double prev, double inst, double dt, double tau, double age,
                       double avg_since_first) {
  if (age < tau) return avg_since_first;
  if (dt <= 0) return prev;
  double a = 1 - exp(-dt / tau);
  return prev + a * (inst - prev);
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- metrics endpoint ---- */

static enum MHD_Result on_http(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_len, void **con_cls) {
  bd_coord *c = cls;
  (void)version, (void)upload, (void)upload_len, (void)con_cls;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char no[] = "method not allowed: GET /metrics\n";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof no - 1, (void *)no, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return ret;
  }
  int ok = strcmp(url, "/metrics") == 0 || strcmp(url, "/") == 0;
  pthread_mutex_lock(&c->mu);
  char *body = strdup(ok ? (c->metrics ? c->metrics : "") : "not found: try /metrics\n");
  pthread_mutex_unlock(&c->mu);
  if (!body) return MHD_NO;
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4");
  enum MHD_Result ret = MHD_queue_response(conn, ok ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, r);
  MHD_destroy_response(r);
  return ret;
}

static int start_http(bd_coord *c, bd_err *err) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)(c->o.metrics_port > 0 ? c->o.metrics_port : 0));
  if (inet_pton(AF_INET, c->o.metrics_addr, &sa.sin_addr) != 1) {
    bd_err_set(err, BD_E_INVALID, "metrics: bad IPv4 address %s", c->o.metrics_addr);
    return -1;
  }
  /* epoll (no FD_SETSIZE bound), many connections, fewer per client address: a few
   * idle or trickling clients cannot lock out Prometheus or a liveness probe. */
  c->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, on_http,
                            c, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)BD_HTTP_MAX_CONNECTIONS,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)BD_HTTP_MAX_PER_IP,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (!c->mhd) {
    bd_err_set(err, BD_E_UNAVAILABLE, "metrics: cannot listen on %s:%d", c->o.metrics_addr,
               c->o.metrics_port);
    return -1;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(c->mhd, MHD_DAEMON_INFO_BIND_PORT);
  c->port = di ? (int)di->port : c->o.metrics_port;
  return 0;
}

/* Prometheus label value escaping: backslash, quote, newline. */
static void label(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      fputc('\\', f), fputc(*s, f);
    else if (*s == '\n')
      fputs("\\n", f);
    else
      fputc(*s, f);
  }
}

/* Per-job series: jobs not final, and final ones for 10 minutes after they ended (the
 * records of finished jobs stay in Redis forever; their series should not). */
static int exported(const cjob *j, double now) {
  double end = j->v.finished > j->v.updated ? j->v.finished : j->v.updated;
  return !j->bad && (!j->final || now - end < 600);
}

static void build_metrics(bd_coord *c, double now) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return;
  fputs(
      "# HELP batchdet_job_images Images of a job by outcome (from Redis).\n"
      "# TYPE batchdet_job_images gauge\n",
      f);
  for (size_t i = 0; i < c->n_jobs; i++) {
    const cjob *j = &c->jobs[i];
    if (!exported(j, now)) continue;
    fputs("batchdet_job_images{job=\"", f), label(f, j->v.job);
    fprintf(f, "\",outcome=\"done\"} %lld\n", j->v.done);
    fputs("batchdet_job_images{job=\"", f), label(f, j->v.job);
    fprintf(f, "\",outcome=\"failed\"} %lld\n", j->v.failed);
  }
  static const char *jm[][2] = {
      {"batchdet_job_total_images", "Images submitted to a job."},
      {"batchdet_job_progress_ratio", "(done + failed) / total."},
      {"batchdet_job_rate_img_s", "Smoothed images per second."},
      {"batchdet_job_eta_seconds", "Estimated seconds to completion (-1 unknown)."},
      {"batchdet_job_complete", "1 when the job is complete."},
      {"batchdet_job_stalled", "1 when the job made no progress for --stall-after."}};
  for (int m = 0; m < 6; m++) {
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", jm[m][0], jm[m][1], jm[m][0]);
    for (size_t i = 0; i < c->n_jobs; i++) {
      const cjob *j = &c->jobs[i];
      if (!exported(j, now)) continue;
      double val = 0;
      switch (m) {
        case 0:
          val = j->v.total >= 0 ? (double)j->v.total : NAN;
          break;
        case 1:
          val = j->v.total > 0 ? (double)(j->v.done + j->v.failed) / (double)j->v.total : 0;
          break;
        case 2:
          val = j->rate;
          break;
        case 3:
          val = j->eta;
          break;
        case 4:
          val = strcmp(j->v.state, "complete") == 0;
          break;
        default:
          val = j->v.stalled;
          break;
      }
      fprintf(f, "%s{job=\"", jm[m][0]), label(f, j->v.job);
      if (isnan(val))
        fprintf(f, "\"} NaN\n");
      else
        fprintf(f, "\"} %.6g\n", val);
    }
  }
  fputs(
      "# HELP batchdet_worker_img_s Images per second of a worker's device (last report).\n"
      "# TYPE batchdet_worker_img_s gauge\n",
      f);
  for (size_t i = 0; i < c->n_workers; i++)
    for (size_t d = 0; d < c->workers[i].n_dev; d++) {
      fputs("batchdet_worker_img_s{worker=\"", f), label(f, c->workers[i].id);
      fputs("\",device=\"", f), label(f, c->workers[i].dev[d]);
      fprintf(f, "\"} %.6g\n", c->workers[i].dev_rate[d]);
    }
  fputs(
      "# HELP batchdet_worker_silent 1 when no report came for --silent-after seconds.\n"
      "# TYPE batchdet_worker_silent gauge\n",
      f);
  for (size_t i = 0; i < c->n_workers; i++) {
    fputs("batchdet_worker_silent{worker=\"", f), label(f, c->workers[i].id);
    fprintf(f, "\"} %d\n", c->workers[i].silent);
  }
  fputs(
      "# HELP batchdet_worker_last_report_age_seconds Seconds since the last report.\n"
      "# TYPE batchdet_worker_last_report_age_seconds gauge\n",
      f);
  for (size_t i = 0; i < c->n_workers; i++) {
    fputs("batchdet_worker_last_report_age_seconds{worker=\"", f), label(f, c->workers[i].id);
    fprintf(f, "\"} %.3f\n", now - c->workers[i].ts);
  }
  fclose(f);
  pthread_mutex_lock(&c->mu);
  free(c->metrics);
  c->metrics = buf;
  pthread_mutex_unlock(&c->mu);
}

char *bd_coord_metrics(bd_coord *c) {
  pthread_mutex_lock(&c->mu);
  char *s = strdup(c->metrics ? c->metrics : "");
  pthread_mutex_unlock(&c->mu);
  return s;
}

int bd_coord_metrics_port(const bd_coord *c) {
  return c->port;
}

/* ---- reports ---- */

static cworker *find_worker(bd_coord *c, const char *id, int create) {
  for (size_t i = 0; i < c->n_workers; i++)
    if (!strcmp(c->workers[i].id, id)) return &c->workers[i];
  if (!create || c->n_workers >= MAX_WORKERS) return NULL;
  if (c->n_workers == c->cap_workers) {
    size_t nc = c->cap_workers ? c->cap_workers * 2 : 16;
    cworker *nw = realloc(c->workers, nc * sizeof *nw);
    if (!nw) return NULL;
    c->workers = nw;
    c->cap_workers = nc;
  }
  cworker *w = &c->workers[c->n_workers++];
  memset(w, 0, sizeof *w);
  snprintf(w->id, sizeof w->id, "%s", id);
  return w;
}

bd_status bd_coord_report(bd_coord *c, const char *json, size_t len, bd_err *err) {
  bd_report *r = NULL;
  bd_proto_errors pe;
  bd_status st = bd_report_decode(json, len, &r, &pe);
  if (st != BD_OK) {
    bd_proto_errors_to_err(&pe, err);
    bd_err_prefix(err, "report");
    return st;
  }
  cworker *w = find_worker(c, r->worker, 1);
  if (!w) {
    bd_report_destroy(r);
    return bd_err_set(err, BD_E_LIMIT, "report: more than %d workers", MAX_WORKERS);
  }
  if (r->ts >= w->ts) { /* an older report (redelivered) never overrides a newer one */
    w->ts = r->ts;
    snprintf(w->host, sizeof w->host, "%s", r->host);
    w->n_dev = r->n_devices;
    for (size_t d = 0; d < r->n_devices; d++) {
      snprintf(w->dev[d], sizeof w->dev[d], "%s", r->devices[d].name);
      w->dev_rate[d] = r->devices[d].img_s;
      w->dev_images[d] = r->devices[d].images;
    }
  }
  bd_report_destroy(r);
  return BD_OK;
}

/* ---- Redis pass ---- */

/* Appends a job (first sight); NULL when out of memory or at MAX_JOBS. */
static cjob *add_job(bd_coord *c, const char *id) {
  if (c->n_jobs >= MAX_JOBS) return NULL;
  if (c->n_jobs == c->cap_jobs) {
    size_t nc = c->cap_jobs ? c->cap_jobs * 2 : 16;
    cjob *nj = realloc(c->jobs, nc * sizeof *nj);
    if (!nj) return NULL;
    c->jobs = nj;
    c->cap_jobs = nc;
  }
  cjob *j = &c->jobs[c->n_jobs++];
  memset(j, 0, sizeof *j);
  snprintf(j->v.job, sizeof j->v.job, "%s", id);
  j->t0 = -1;
  return j;
}

typedef struct {
  char **ids;
  size_t n, cap;
} idvec;

static int collect_job(void *ctx, const char *key, size_t len) {
  idvec *v = ctx;
  const char *p = memchr(key, ':', len);
  if (!p || memchr(p + 1, ':', len - (size_t)(p + 1 - key)) || len - (size_t)(p + 1 - key) > 128)
    return 0;
  if (v->n == v->cap) {
    size_t nc = v->cap ? v->cap * 2 : 64;
    char **ni = realloc(v->ids, nc * sizeof *ni);
    if (!ni) return 1;
    v->ids = ni;
    v->cap = nc;
  }
  v->ids[v->n] = strndup(p + 1, len - (size_t)(p + 1 - key));
  if (v->ids[v->n]) v->n++;
  return v->n >= 2 * (size_t)MAX_JOBS; /* SCAN may repeat keys */
}

static bd_status update_job(bd_coord *c, cjob *j, double now, bd_err *err) {
  int found;
  double prev_created = j->v.created;
  char id[BD_ID_MAX + 1];
  snprintf(id, sizeof id, "%s", j->v.job); /* load_job clears j->v first */
  bd_status st = bd_view_load_job(c->rd, id, &j->v, &found, err);
  if (st != BD_OK || !found) return st;
  j->seen = 1;
  double count = (double)(j->v.done + j->v.failed);
  int was_final = j->final;
  j->final = bd_view_job_final(&j->v);
  /* First sight, re-submitted (--force), or reopened (resubmit --failed): new baseline. */
  if (j->t0 < 0 && j->v.shards <= 0 && j->v.total < 0)
    BD_LOGW(
        "job %s has no total or shards in Redis (its manifests were not made by batchdet "
        "submit): its counts are tracked, but it never shows complete",
        j->v.job);
  if (j->t0 < 0 || j->v.created != prev_created || (was_final && !j->final)) {
    int first = j->t0 < 0;
    j->t0 = j->last_t = j->last_progress = now;
    /* A restarted coordinator takes the stored time of the last progress, so that a stall
     * stays flagged (and its clock running) across the restart. */
    if (first && j->v.progressed > 0 && j->v.progressed <= now) j->last_progress = j->v.progressed;
    j->gap = 0;
    j->count0 = j->last_count = count;
    j->rate = j->v.rate > 0 && !bd_view_job_final(&j->v) ? j->v.rate : 0;
    j->eta = -1;
  }
  if (bd_view_job_final(&j->v)) {
    j->rate = 0, j->eta = 0;
    return BD_OK;
  }
  if (j->rate == 0 && count == j->count0) j->t0 = now; /* not started: idle time is no rate */
  double dt = now - j->last_t;
  if (dt > 0) {
    double inst = (count - j->last_count) / dt;
    double age = now - j->t0;
    double avg = age > 0 ? (count - j->count0) / age : 0;
    /* A restarted coordinator with a stored rate keeps it until it has its own data. */
    if (age < c->o.tau && j->rate > 0 && count == j->count0) avg = j->rate;
    j->rate = bd_coord_smooth(j->rate, inst, dt, c->o.tau, age, avg);
    if (j->rate < 0) j->rate = 0;
  }
  int progressed = count != j->last_count;
  if (progressed) {
    double g = now - j->last_progress;
    j->gap = j->gap > 0 ? j->gap + 0.3 * (g - j->gap) : g;
    j->last_progress = now;
  }
  j->last_t = now;
  j->last_count = count;
  double left = j->v.total >= 0 ? (double)j->v.total - count : -1;
  j->eta = bd_coord_eta(left, j->rate, now - j->last_progress, j->gap);
  int complete = j->v.shards > 0 ? j->v.shards_done >= j->v.shards
                                 : (j->v.total >= 0 && count >= (double)j->v.total);
  /* No total and no shards (manifests that submit did not make): it cannot complete, and
   * having no more work is no stall. */
  int untracked = j->v.shards <= 0 && j->v.total < 0;
  int stalled = !complete && !untracked && now - j->last_progress > c->o.stall_after;
  const char *state = complete                            ? "complete"
                      : count > 0 || j->v.shards_done > 0 ? "running"
                                                          : j->v.state;
  char rate[32], eta[32], upd[32], prog[32];
  snprintf(rate, sizeof rate, "%.3f", j->rate);
  snprintf(eta, sizeof eta, "%.1f", complete ? 0 : j->eta);
  snprintf(upd, sizeof upd, "%.3f", now);
  char key[BD_ID_MAX + 16];
  snprintf(key, sizeof key, "job:%s", j->v.job);
  const char *argv[16] = {"HSET",    key, "rate",  rate,  "eta",     eta,
                          "updated", upd, "state", state, "stalled", stalled ? "1" : "0"};
  int argc = 12;
  snprintf(prog, sizeof prog, "%.3f", j->last_progress);
  if (progressed || j->v.progressed <= 0) argv[argc++] = "progressed", argv[argc++] = prog;
  if (complete) argv[argc++] = "finished", argv[argc++] = upd;
  if (complete)
    BD_LOGI("job %s complete: %lld done, %lld failed", j->v.job, j->v.done, j->v.failed);
  if (stalled && !j->v.stalled)
    BD_LOGW("job %s stalled: no progress for %.0f s", j->v.job, now - j->last_progress);
  st = bd_sredis_cmdv(c->rd, argc, argv, NULL, NULL, err);
  snprintf(j->v.state, sizeof j->v.state, "%s", state);
  j->v.stalled = stalled;
  return st;
}

static bd_status update_workers(bd_coord *c, double now, bd_err *err) {
  bd_status st = BD_OK;
  size_t keep = 0;
  for (size_t i = 0; i < c->n_workers; i++) {
    cworker *w = &c->workers[i];
    double age = now - w->ts;
    if (age > 10 * c->o.silent_after) continue; /* forgotten: its key expires on its own */
    int silent = age > c->o.silent_after;
    if (silent && !w->silent) BD_LOGW("worker %s silent: no report for %.0f s", w->id, age);
    w->silent = silent;
    char key[300], devs[1024] = "", seen[32];
    size_t dl = 0;
    for (size_t d = 0; d < w->n_dev; d++) {
      int k = snprintf(devs + dl, sizeof devs - dl, "%s%s=%.1f", d ? "," : "", w->dev[d],
                       w->dev_rate[d]);
      if (k < 0 || dl + (size_t)k >= sizeof devs) break;
      dl += (size_t)k;
    }
    snprintf(key, sizeof key, "worker:%s", w->id);
    snprintf(seen, sizeof seen, "%.3f", w->ts);
    redisReply *rep;
    if (st == BD_OK) st = bd_sredis_cmd(c->rd, &rep, err, "EXISTS %s", key);
    if (st == BD_OK) {
      int existed = bd_sredis_reply_ll(rep, 0) > 0;
      freeReplyObject(rep);
      st = bd_sredis_cmd(c->rd, NULL, err, "HSET %s dev_img_s %s silent %s coord_seen %s", key,
                         devs, silent ? "1" : "0", seen);
      if (st == BD_OK && !existed) {
        /* Recreated by us (the worker's own TTL ran out): keep the record a while. */
        st = bd_sredis_cmd(c->rd, NULL, err, "HSET %s host %s last_report %s", key, w->host, seen);
        if (st == BD_OK)
          st = bd_sredis_cmd(c->rd, NULL, err, "EXPIRE %s %d", key,
                             (int)(10 * c->o.silent_after) + 1);
      }
    }
    c->workers[keep++] = *w;
  }
  c->n_workers = keep;
  return st;
}

/* Reads one job unless it was final at its last read and its recheck is not due. A
 * record that cannot be read as a job (a key of another kind under job:*) is skipped
 * with one warning; only a lost connection ends the pass. */
static bd_status visit_job(bd_coord *c, cjob *j, double now, bd_err *err) {
  if (j->final && now < j->next_read) {
    j->seen = 1;
    return BD_OK;
  }
  bd_err je = {0};
  bd_status st = update_job(c, j, now, &je);
  if (st != BD_OK && !strstr(je.msg, "WRONGTYPE")) { /* Redis trouble: the pass ends */
    if (err) *err = je;
    return st;
  }
  if (st != BD_OK) {
    j->seen = 1; /* still there: keep it, and its warning unrepeated */
    if (!j->bad) BD_LOGW("job %s: record unreadable, skipped: %s", j->v.job, je.msg);
    j->bad = 1;
    j->final = 1, j->next_read = now + FINAL_RECHECK_S;
    return BD_OK;
  }
  j->bad = 0;
  /* spread the rechecks of many finished jobs over time */
  if (j->final) j->next_read = now + FINAL_RECHECK_S * (1 + (bd_str_hash(j->v.job) % 100) / 100.0);
  return BD_OK;
}

bd_status bd_coord_tick(bd_coord *c, double now, bd_err *err) {
  idvec v = {0};
  bd_strmap *idx = NULL;
  bd_status st = bd_sredis_scan(c->rd, "job:*", 1000, collect_job, &v, err);
  for (size_t i = 0; i < c->n_jobs; i++) c->jobs[i].seen = 0;
  if (st == BD_OK && !(idx = bd_strmap_new(c->n_jobs + v.n)))
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
  /* Known jobs by id (keys borrowed from c->jobs: nothing is added until the index is
   * no longer needed), then the new ids, added after the known ones are visited. */
  for (size_t i = 0; i < c->n_jobs && st == BD_OK; i++)
    (void)bd_strmap_put(idx, c->jobs[i].v.job, (long)i, NULL);
  size_t n_new = 0, *fresh_at = st == BD_OK ? malloc((v.n + 1) * sizeof *fresh_at) : NULL;
  if (st == BD_OK && !fresh_at) st = bd_err_set(err, BD_E_NOMEM, "out of memory");
  for (size_t i = 0; i < v.n && st == BD_OK; i++) {
    int fresh = 0;
    long *at = bd_strmap_put(idx, v.ids[i], -1, &fresh);
    if (!at || (!fresh && *at == -1)) continue; /* SCAN repeat of a new id */
    if (fresh) {
      fresh_at[n_new++] = i;
      continue;
    }
    cjob *j = &c->jobs[*at];
    if (!j->seen) st = visit_job(c, j, now, err);
  }
  bd_strmap_destroy(idx);
  for (size_t i = 0; i < n_new && st == BD_OK; i++) {
    cjob *j = add_job(c, v.ids[fresh_at[i]]);
    if (!j) {
      if (!c->warned_cap)
        BD_LOGW("coordinator: more than %d job records; the rest are not tracked", MAX_JOBS);
      c->warned_cap = 1;
      break;
    }
    st = visit_job(c, j, now, err);
  }
  if (st == BD_OK) { /* jobs deleted from Redis leave the view */
    size_t keep = 0;
    for (size_t i = 0; i < c->n_jobs; i++)
      if (c->jobs[i].seen) c->jobs[keep++] = c->jobs[i];
    c->n_jobs = keep;
  }
  free(fresh_at);
  for (size_t i = 0; i < v.n; i++) free(v.ids[i]);
  free(v.ids);
  if (st == BD_OK) st = update_workers(c, now, err);
  build_metrics(c, now);
  return st;
}

/* ---- lifecycle ---- */

bd_coord *bd_coord_new(const bd_coord_opts *o, bd_err *err) {
  bd_coord *c = calloc(1, sizeof *c);
  if (!c) {
    bd_err_set(err, BD_E_NOMEM, "out of memory");
    return NULL;
  }
  c->o = *o;
  if (!c->o.topic) c->o.topic = "batchdet.reports";
  if (!c->o.group) c->o.group = "batchdet-coordinator";
  if (!c->o.metrics_addr) c->o.metrics_addr = "127.0.0.1";
  if (c->o.stall_after <= 0) c->o.stall_after = 300;
  if (c->o.silent_after <= 0) c->o.silent_after = 30;
  if (c->o.tick <= 0) c->o.tick = 1;
  if (c->o.tau <= 0) c->o.tau = 20;
  pthread_mutex_init(&c->mu, NULL);
  c->rd = bd_sredis_new(o->redis_url, err);
  if (!c->rd) goto fail;
  if (o->brokers) {
    /* Reports only feed the view: no at-least-once processing, so offsets are stored
     * as messages are delivered. */
    bd_kafka_consumer_opts ko = {
        .brokers = o->brokers, .group = c->o.group, .topic = c->o.topic, .auto_store = 1};
    if (bd_kafka_consumer_new(&ko, &c->kc, err) != BD_OK) goto fail;
  }
  if (o->metrics_port != 0 && start_http(c, err)) goto fail;
  return c;
fail:
  bd_coord_destroy(c);
  return NULL;
}

void bd_coord_destroy(bd_coord *c) {
  if (!c) return;
  if (c->mhd) MHD_stop_daemon(c->mhd);
  bd_kafka_consumer_destroy(c->kc); /* librdkafka commits and leaves the group */
  bd_sredis_destroy(c->rd);
  free(c->jobs);
  free(c->workers);
  free(c->metrics);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

bd_status bd_coord_run(bd_coord *c, volatile sig_atomic_t *stop, bd_err *err) {
  double next = 0;
  while (!*stop) {
    double now = wall_now();
    if (now >= next) {
      bd_err e = {0};
      if (!c->rd) c->rd = bd_sredis_new(c->o.redis_url, &e);
      if (c->rd && bd_coord_tick(c, now, &e) != BD_OK && bd_status_retriable(e.code)) {
        bd_sredis_destroy(c->rd); /* reconnect next tick */
        c->rd = NULL;
      }
      if (e.code != BD_OK) BD_LOGW("coordinator: %s", e.msg);
      next = now + c->o.tick;
    }
    int wait_ms = (int)((next - wall_now()) * 1000);
    if (wait_ms < 1) wait_ms = 1;
    if (!c->kc) {
      struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    bd_kafka_msg msg;
    bd_err e = {0};
    bd_status st = bd_kafka_consumer_poll(c->kc, wait_ms > 200 ? 200 : wait_ms, &msg, &e);
    if (st == BD_OK) {
      if (bd_coord_report(c, msg.payload, msg.len, &e) != BD_OK) BD_LOGW("coordinator: %s", e.msg);
    } else if (st != BD_E_TIMEOUT) {
      BD_LOGD("coordinator: %s", e.msg);
    }
    bd_kafka_msg_clear(&msg);
  }
  (void)err;
  return BD_OK;
}
