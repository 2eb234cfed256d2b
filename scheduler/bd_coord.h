/* bd_coord: the coordinator. It consumes worker throughput reports (topic
 * batchdet.reports, its own consumer group) and, once per tick, re-reads every job
 * from Redis, which is the truth for counts (job:{job} done/failed/total and the
 * completed-shard set). From successive done+failed counts it keeps a smoothed rate
 * per job (EWMA, time constant tau; the plain average since first sight during the
 * first tau seconds, so a fresh coordinator is not biased towards 0) and an ETA; it
 * marks a job complete (state=complete, finished=now) when every shard is complete
 * (SCARD job:{job}:shards >= shards; when shards is unknown: done+failed >= total),
 * flags a job stalled (field stalled=1) after stall_after seconds without progress,
 * flags a worker silent after silent_after seconds without a report, and writes
 * rate/eta/updated/state/stalled into job:{job} and dev_img_s/silent/coord_seen
 * into worker:{id} (a worker key the coordinator creates gets a TTL of
 * 10*silent_after, so a dead worker's record still disappears).
 *
 * It holds no state that Redis does not: restarted, it rebuilds its view with SCAN
 * job:* (the stored rate seeds the EWMA).
 *
 * Metrics: a Prometheus text endpoint (libmicrohttpd) on metrics_addr:metrics_port,
 * GET /metrics; the text is rebuilt every tick and served from a copy under a lock.
 *
 * Thread safety: bd_coord_run and the tick/report calls from one thread; the HTTP
 * thread only reads the metrics text. */
#ifndef BD_COORD_H
#define BD_COORD_H

#include <signal.h>
#include <stddef.h>

#include "bd_status.h"

typedef struct bd_coord_opts {
  const char *brokers, *redis_url;
  const char *topic;        /* default batchdet.reports */
  const char *group;        /* default batchdet-coordinator */
  const char *metrics_addr; /* default 127.0.0.1 */
  int metrics_port;         /* 0: no endpoint; -1: any free port (tests) */
  double stall_after;       /* seconds, default 300 */
  double silent_after;      /* seconds, default 30 */
  double tick;              /* seconds between Redis passes, default 1 */
  double tau;               /* EWMA time constant, default 20 */
} bd_coord_opts;

typedef struct bd_coord bd_coord;

/* Connects to Redis, subscribes, starts the metrics endpoint. */
bd_coord *bd_coord_new(const bd_coord_opts *o, bd_err *err);
void bd_coord_destroy(bd_coord *c);

/* Runs until *stop becomes nonzero. Redis trouble is logged and retried next tick. */
bd_status bd_coord_run(bd_coord *c, volatile sig_atomic_t *stop, bd_err *err);

/* The port the metrics endpoint listens on (0 when none). */
int bd_coord_metrics_port(const bd_coord *c);

/* Test hooks: one report (JSON) and one Redis pass at wall time now. */
bd_status bd_coord_report(bd_coord *c, const char *json, size_t len, bd_err *err);
bd_status bd_coord_tick(bd_coord *c, double now, bd_err *err);
/* A copy of the current metrics text (caller frees). */
char *bd_coord_metrics(bd_coord *c);

/* The ETA rule (pure, unit-tested): left / rate; -1 (unknown) when either is unknown
 * or when no progress came for idle seconds, longer than 3 times gap (the smoothed time
 * between progress steps) and than 10 s, so that one shard stalling near the end shows
 * no countdown while the decaying rate still says it is close. */
double bd_coord_eta(double left, double rate, double idle, double gap);

/* The smoothing rule (pure, unit-tested): new rate after dt seconds in which inst
 * img/s were measured, given the previous rate and the age of the estimate. */
double bd_coord_smooth(double prev, double inst, double dt, double tau, double age,
                       double avg_since_first);

#endif
