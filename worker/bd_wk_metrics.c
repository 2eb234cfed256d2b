#include "bd_wk_metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in seconds; the last bucket is +Inf. Spans a 1 ms decode to a 60 s fetch. */
static const double k_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                  0.5,   1,      2.5,   5,    10,    30,   60};
#define N_BOUNDS (sizeof k_bounds / sizeof k_bounds[0])
static const char *const k_stage[] = {"fetch", "decode", "infer", "write"};

typedef struct hist {
  unsigned long long bucket[N_BOUNDS + 1];
  unsigned long long count;
  double sum;
} hist;

struct bd_wk_metrics {
  pthread_mutex_t mu;
  int n;
  char (*names)[64];
  unsigned long long *ok, *fail; /* n + 1 entries: the last is device "none" */
  hist h[BD_WK__STAGES];
  unsigned long long batches, batch_filled, batch_cap;
  struct MHD_Daemon *httpd;
  bd_wk_gauges_fn gauges;
  bd_wk_health_fn health;
  void *ctx;
};

void bd_wk_text_printf(bd_wk_text *t, const char *fmt, ...) {
  if (t->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (t->buf && t->len + (size_t)k < t->cap) {
      t->len += (size_t)k;
      return;
    }
    size_t nc = (t->cap ? t->cap * 2 : 4096) + (size_t)k;
    char *nb = realloc(t->buf, nc);
    if (!nb) {
      t->oom = 1;
      return;
    }
    t->buf = nb;
    t->cap = nc;
  }
}

bd_wk_metrics *bd_wk_metrics_new(int n, const char *const *devices, bd_err *err) {
  bd_wk_metrics *m = calloc(1, sizeof *m);
  if (!m) goto oom;
  pthread_mutex_init(&m->mu, NULL);
  m->n = n;
  m->names = calloc((size_t)n + 1, sizeof *m->names);
  m->ok = calloc((size_t)n + 1, sizeof *m->ok);
  m->fail = calloc((size_t)n + 1, sizeof *m->fail);
  if (!m->names || !m->ok || !m->fail) goto oom;
  for (int i = 0; i < n; i++) snprintf(m->names[i], sizeof m->names[i], "%s", devices[i]);
  snprintf(m->names[n], sizeof m->names[n], "none");
  return m;
oom:
  bd_wk_metrics_destroy(m);
  bd_err_set(err, BD_E_NOMEM, "metrics: out of memory");
  return NULL;
}

void bd_wk_metrics_destroy(bd_wk_metrics *m) {
  if (!m) return;
  if (m->httpd) MHD_stop_daemon(m->httpd);
  free(m->names);
  free(m->ok);
  free(m->fail);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

void bd_wk_metrics_image(bd_wk_metrics *m, int dev, int ok, long n) {
  if (!m || n <= 0) return;
  int i = dev >= 0 && dev < m->n ? dev : m->n;
  pthread_mutex_lock(&m->mu);
  if (ok)
    m->ok[i] += (unsigned long long)n;
  else
    m->fail[i] += (unsigned long long)n;
  pthread_mutex_unlock(&m->mu);
}

void bd_wk_metrics_observe(bd_wk_metrics *m, bd_wk_stage st, double s) {
  if (!m || st < 0 || st >= BD_WK__STAGES) return;
  size_t b = 0;
  while (b < N_BOUNDS && s > k_bounds[b]) b++;
  pthread_mutex_lock(&m->mu);
  m->h[st].bucket[b]++;
  m->h[st].count++;
  m->h[st].sum += s;
  pthread_mutex_unlock(&m->mu);
}

void bd_wk_metrics_batch(bd_wk_metrics *m, int filled, int capacity) {
  if (!m || capacity <= 0) return;
  pthread_mutex_lock(&m->mu);
  m->batches++;
  m->batch_filled += (unsigned long long)filled;
  m->batch_cap += (unsigned long long)capacity;
  pthread_mutex_unlock(&m->mu);
}

char *bd_wk_metrics_render(bd_wk_metrics *m, bd_wk_gauges_fn gauges, void *ctx) {
  bd_wk_text t = {0};
  pthread_mutex_lock(&m->mu);
  bd_wk_text_printf(&t,
                    "# HELP batchdet_images_total Images finished, by device and status.\n"
                    "# TYPE batchdet_images_total counter\n");
  for (int i = 0; i <= m->n; i++) {
    bd_wk_text_printf(&t, "batchdet_images_total{device=\"%s\",status=\"ok\"} %llu\n", m->names[i],
                      m->ok[i]);
    bd_wk_text_printf(&t, "batchdet_images_total{device=\"%s\",status=\"error\"} %llu\n",
                      m->names[i], m->fail[i]);
  }
  bd_wk_text_printf(&t,
                    "# HELP batchdet_stage_seconds Latency of a pipeline stage.\n"
                    "# TYPE batchdet_stage_seconds histogram\n");
  for (int s = 0; s < BD_WK__STAGES; s++) {
    unsigned long long cum = 0;
    for (size_t b = 0; b < N_BOUNDS; b++) {
      cum += m->h[s].bucket[b];
      bd_wk_text_printf(&t, "batchdet_stage_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n",
                        k_stage[s], k_bounds[b], cum);
    }
    bd_wk_text_printf(&t, "batchdet_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n",
                      k_stage[s], m->h[s].count);
    bd_wk_text_printf(&t, "batchdet_stage_seconds_sum{stage=\"%s\"} %.6f\n", k_stage[s],
                      m->h[s].sum);
    bd_wk_text_printf(&t, "batchdet_stage_seconds_count{stage=\"%s\"} %llu\n", k_stage[s],
                      m->h[s].count);
  }
  bd_wk_text_printf(&t,
                    "# HELP batchdet_batch_fill_ratio Images per batch over batch capacity.\n"
                    "# TYPE batchdet_batch_fill_ratio gauge\n"
                    "batchdet_batch_fill_ratio %.4f\n"
                    "# TYPE batchdet_batches_total counter\nbatchdet_batches_total %llu\n",
                    m->batch_cap ? (double)m->batch_filled / (double)m->batch_cap : 0.0,
                    m->batches);
  pthread_mutex_unlock(&m->mu);
  if (gauges) gauges(ctx, &t);
  if (t.oom) {
    free(t.buf);
    return NULL;
  }
  return t.buf;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, char *body, int owned,
                             const char *ctype) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", ctype);
  enum MHD_Result ret = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
  bd_wk_metrics *m = cls;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(c, 405, "method not allowed\n", 0, "text/plain");
  if (strcmp(url, "/healthz") == 0) {
    int ok = m->health ? m->health(m->ctx) : 1;
    return reply(c, ok ? 200 : 503, ok ? "ok\n" : "consumer not running\n", 0, "text/plain");
  }
  if (strcmp(url, "/metrics") == 0) {
    char *body = bd_wk_metrics_render(m, m->gauges, m->ctx);
    if (!body) return reply(c, 500, "out of memory\n", 0, "text/plain");
    return reply(c, 200, body, 1, "text/plain; version=0.0.4");
  }
  return reply(c, 404, "not found\n", 0, "text/plain");
}

bd_status bd_wk_metrics_serve(bd_wk_metrics *m, const char *addr, int port, bd_wk_gauges_fn gauges,
                              bd_wk_health_fn health, void *ctx, bd_err *err) {
  if (port <= 0 || port > 65535)
    return bd_err_set(err, BD_E_INVALID, "metrics: port %d out of range", port);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, addr ? addr : "0.0.0.0", &sa.sin_addr) != 1)
    return bd_err_set(err, BD_E_INVALID, "metrics: bad IPv4 address %s", addr);
  m->gauges = gauges;
  m->health = health;
  m->ctx = ctx;
  /* A few idle or trickling clients must not lock out the liveness probe: no FD_SETSIZE
   * bound (epoll), many connections, fewer per client address. */
  m->httpd = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, handler, m,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 4096u,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, 256u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (!m->httpd)
    return bd_err_set(err, BD_E_UNAVAILABLE, "metrics: cannot listen on %s:%d",
                      addr ? addr : "0.0.0.0", port);
  return BD_OK;
}

void bd_wk_metrics_stop(bd_wk_metrics *m) {
  if (!m || !m->httpd) return;
  MHD_stop_daemon(m->httpd);
  m->httpd = NULL;
}
