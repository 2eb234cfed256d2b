/* bd_view: what `batchdet status` shows, read from Redis, and its renderings: an
 * 80-column table (jobs with a progress bar, workers with per-device img/s), a
 * one-job detail with an error summary, and one JSON document.
 *
 * Reads: SCAN job:* (keys job:{id} only) + HGETALL + SCARD job:{id}:shards;
 * SCAN worker:* + HGETALL; HSCAN job:{id}:errors for the error summary. Fields written
 * by the coordinator (rate, eta, stalled, dev_img_s, silent) are shown when present;
 * without a coordinator, rate and ETA are left blank.
 *
 * Ownership: a bd_view is the caller's; bd_view_free releases what load allocated.
 * Thread safety: none needed (one thread). */
#ifndef BD_VIEW_H
#define BD_VIEW_H

#include <stdio.h>

#include "bd_sredis.h"
#include "bd_status.h"

#define BD_VIEW_MAX_JOBS 10000
#define BD_VIEW_MAX_WORKERS 10000
#define BD_VIEW_TOP_ERRORS 10
#define BD_VIEW_MAX_ERRMSG 200 /* messages are grouped on their first 200 bytes */

typedef struct bd_view_job {
  char job[129], model[129], state[16];
  long long total, done, failed, shards, shards_done;
  double created, updated, finished, rate, eta; /* eta < 0: unknown */
  int has_eta; /* the coordinator wrote eta (its -1 then means unknown, not "compute it") */
  double progressed; /* wall time of the last progress the coordinator saw; 0: none */
  int stalled;
} bd_view_job;

typedef struct bd_view_worker {
  char id[257], host[257], devices[256], dev_img_s[512];
  double img_s, last_report;
  long long images;
  int silent;
} bd_view_worker;

typedef struct bd_view_error {
  char msg[BD_VIEW_MAX_ERRMSG + 1];
  long long count;
} bd_view_error;

typedef struct bd_view {
  double now; /* wall clock, seconds since 1970 */
  bd_view_job *jobs;
  size_t n_jobs;
  bd_view_worker *workers;
  size_t n_workers;
  size_t jobs_not_shown;  /* past BD_VIEW_MAX_JOBS (ids in sorted order), about: SCAN repeats */
  size_t jobs_unreadable; /* job:* keys that are no job record (another kind of key) */
  /* error summary (load with a job only) */
  bd_view_error top[BD_VIEW_TOP_ERRORS];
  size_t n_top;
  long long err_images, err_messages;
} bd_view;

/* Loads every job (job NULL; the first BD_VIEW_MAX_JOBS ids in sorted order, the rest
 * counted in jobs_not_shown; keys under job:* that cannot be read as a job record are
 * skipped and counted) or one job with its error summary (BD_E_NOT_FOUND when it does
 * not exist), and every worker. */
bd_status bd_view_load(bd_sredis *r, const char *job, bd_view *v, bd_err *err);
void bd_view_free(bd_view *v);

/* Loads one job record (HGETALL + SCARD); *found 0 when the key is absent. */
bd_status bd_view_load_job(bd_sredis *r, const char *job, bd_view_job *out, int *found,
                           bd_err *err);

/* 1 when a job is in a final state. */
int bd_view_job_final(const bd_view_job *j);

/* The table (job NULL) or the one-job detail; every line at most 80 columns. */
void bd_view_render(const bd_view *v, const char *job, FILE *f);
/* One JSON document (caller frees). */
char *bd_view_json(const bd_view *v, const char *job);

/* Pure formatting helpers (unit-tested): compact count ("12345", "123.4k", "12.3M"),
 * duration ("45s", "12m05s", "3h07m", "2d04h", "-" when < 0), progress bar of width w
 * (w + 2 chars with brackets). */
void bd_view_fmt_count(long long n, char *buf, size_t cap);
void bd_view_fmt_duration(double s, char *buf, size_t cap);
void bd_view_fmt_bar(double frac, int w, char *buf, size_t cap);

#endif
