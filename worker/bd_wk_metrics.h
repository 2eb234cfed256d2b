/* bd_wk_metrics: the worker's Prometheus metrics and its HTTP endpoint (libmicrohttpd).
 *
 * Serves GET /metrics (text exposition format 0.0.4) and GET /healthz (200 "ok" while the
 * health callback says the consumer runs, 503 otherwise). Counters and histograms live
 * here; gauges that belong to other parts (queue depths, lag, device img/s) are written
 * by a callback at scrape time. Thread safety: every function may be called from any
 * thread; the HTTP server runs its own thread. */
#ifndef BD_WK_METRICS_H
#define BD_WK_METRICS_H

#include <stddef.h>

#include "bd_status.h"

typedef enum { BD_WK_FETCH = 0, BD_WK_DECODE, BD_WK_INFER, BD_WK_WRITE, BD_WK__STAGES } bd_wk_stage;

typedef struct bd_wk_metrics bd_wk_metrics;

/* A growable text buffer for the scrape callback. */
typedef struct bd_wk_text {
  char *buf;
  size_t len, cap;
  int oom;
} bd_wk_text;
void bd_wk_text_printf(bd_wk_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef void (*bd_wk_gauges_fn)(void *ctx, bd_wk_text *out);
typedef int (*bd_wk_health_fn)(void *ctx);

/* devices: names of the n device instances (copied). */
bd_wk_metrics *bd_wk_metrics_new(int n, const char *const *devices, bd_err *err);
void bd_wk_metrics_destroy(bd_wk_metrics *m);

/* dev: index into devices, or -1 for images that never reached a device. */
void bd_wk_metrics_image(bd_wk_metrics *m, int dev, int ok, long n);
void bd_wk_metrics_observe(bd_wk_metrics *m, bd_wk_stage st, double seconds);
void bd_wk_metrics_batch(bd_wk_metrics *m, int filled, int capacity);

/* The whole exposition text (malloc'd, caller frees). */
char *bd_wk_metrics_render(bd_wk_metrics *m, bd_wk_gauges_fn gauges, void *ctx);

/* Starts the HTTP server on addr:port (addr: an IPv4 address; NULL or "0.0.0.0" = all
 * interfaces). epoll, 4096 connections, 256 per client address, 10 s idle timeout. */
bd_status bd_wk_metrics_serve(bd_wk_metrics *m, const char *addr, int port, bd_wk_gauges_fn gauges,
                              bd_wk_health_fn health, void *ctx, bd_err *err);

/* Stops the HTTP server (if any); counters stay usable. */
void bd_wk_metrics_stop(bd_wk_metrics *m);

#endif
