/* Thread model: bd_fetch_submit/poll take f->mu; everything that touches curl handles
 * runs on the fetch thread only. A request is owned by the submit queue, then by the
 * thread (ready, running, waiting for a retry), then handed out as a result. */
#define _GNU_SOURCE /* memmem */
#include "bd_fetch.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "bd_config.h"
#include "bd_fetch_internal.h"
#include "bd_url.h"

#define BD_FETCH_CONC_MAX 4096
#define BD_FETCH_QUEUE_MAX (1 << 20)
#define BD_FETCH_ATTEMPTS_MAX 32
#define BD_FETCH_URL_MAX (16 * 1024)
#define BD_FETCH_IDLE_POLL_MS 1000

typedef struct req {
  struct req *next;
  struct req *aprev, *anext; /* running list (fetch thread) */
  uint64_t id;
  void *user;
  char *url; /* what curl fetches: http(s) or file (s3:// already mapped) */
  int sign, is_s3;
  bd_err pre; /* a URL problem found at submit: completed without a transfer */
  int attempts;
  int64_t submit_ms, due_ms;
  CURL *easy;
  struct curl_slist *hdrs;
  unsigned char *data;
  size_t len, cap, max;
  int over_limit;
  long http_code;
} req;

typedef struct res_node {
  struct res_node *next;
  bd_fetch_result r;
} res_node;

struct bd_fetch {
  bd_fetch_opts o;
  char *allowed; /* ",host1,host2," or NULL */
  bd_s3_cfg s3;
  bd_fetch_done_fn done;
  void *ctx;

  pthread_mutex_t mu;
  pthread_cond_t cv_space, cv_done;
  req *in_head, *in_tail; /* submitted, not yet taken by the thread */
  res_node *res_head, *res_tail;
  int outstanding, stopping;
  bd_fetch_stats st;

  /* fetch thread only */
  CURLM *multi;
  req *ready_head, *ready_tail, *waiting, *active;
  uint64_t rng;
  pthread_t th;
  int th_started;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;
static void curl_init_once(void) {
  g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* common's monotonic clock, in ms */
static int64_t now_ms(void) {
  return (int64_t)(bd_now() * 1000.0);
}

void bd_fetch_opts_default(bd_fetch_opts *o) {
  memset(o, 0, sizeof *o);
  o->concurrency = 64;
  o->queue_max = 0; /* 16 * concurrency */
  o->max_attempts = 4;
  o->connect_timeout_ms = 10000;
  o->timeout_ms = 120000;
  o->low_speed_bytes = 1024;
  o->low_speed_time_s = 30;
  o->max_body = 64u * 1024 * 1024;
  o->backoff_base_ms = 200;
  o->backoff_max_ms = 10000;
  o->retry_after_max_ms = 30000;
  o->follow_redirects = 1;
  o->s3_path_style = -1;
}

void bd_fetch_result_clear(bd_fetch_result *res) {
  if (!res) return;
  free(res->data);
  memset(res, 0, sizeof *res);
}

const bd_s3_cfg *bd_fetch__s3(const bd_fetch *f) {
  return &f->s3;
}

static void req_free(req *r) {
  if (!r) return;
  free(r->url);
  free(r->data);
  curl_slist_free_all(r->hdrs);
  free(r);
}

/* ---- completion ---- */

static void complete(bd_fetch *f, req *r, bd_status st, const bd_err *e) {
  bd_fetch_result res = {0};
  res.id = r->id;
  res.user = r->user;
  res.status = st;
  if (st != BD_OK && e) res.err = *e;
  res.err.code = st;
  if (st == BD_OK) {
    res.data = r->data;
    res.len = r->len;
    r->data = NULL;
  }
  res.http_code = r->http_code;
  res.attempts = r->attempts;
  res.elapsed_s = (double)(now_ms() - r->submit_ms) / 1000.0;
  req_free(r);
  if (f->done) {
    f->done(f->ctx, &res);
    free(res.data);
    pthread_mutex_lock(&f->mu);
  } else {
    res_node *n = calloc(1, sizeof *n);
    pthread_mutex_lock(&f->mu);
    if (n) {
      n->r = res;
      if (f->res_tail)
        f->res_tail->next = n;
      else
        f->res_head = n;
      f->res_tail = n;
    } else {
      /* Out of memory for a queue node: the completion is lost, which a poller sees as
       * a missing id; the outstanding count still drops so that submit cannot block. */
      free(res.data);
    }
    pthread_cond_broadcast(&f->cv_done);
  }
  f->outstanding--;
  f->st.completed++;
  if (st != BD_OK) f->st.failed++;
  pthread_cond_broadcast(&f->cv_space);
  pthread_mutex_unlock(&f->mu);
}

/* ---- transfers ---- */

#define BD_FETCH_ERROR_BODY_MAX 4096

static size_t on_write(char *p, size_t sz, size_t n, void *ud) {
  req *r = ud;
  size_t add = sz * n;
  long code = 0;
  /* Of an error response only the start is kept (enough for an S3 <Code>), so that a
   * large 5xx page stays a retriable 5xx instead of becoming a size-limit error. */
  if (r->easy && curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
      code >= 300) {
    size_t room = r->len < BD_FETCH_ERROR_BODY_MAX ? BD_FETCH_ERROR_BODY_MAX - r->len : 0;
    if (room == 0) return add;
    if (add > room) {
      size_t keep = on_write(p, 1, room, ud);
      return keep == room ? add : 0;
    }
  }
  if (add > r->max || r->len > r->max - add) {
    r->over_limit = 1;
    return 0; /* makes curl abort the transfer and close the connection */
  }
  if (r->len + add > r->cap) {
    size_t nc = r->cap ? r->cap : 64 * 1024;
    while (nc < r->len + add) nc = nc > r->max / 2 ? r->max : nc * 2;
    unsigned char *d = realloc(r->data, nc);
    if (!d) return 0;
    r->data = d;
    r->cap = nc;
  }
  memcpy(r->data + r->len, p, add);
  r->len += add;
  return add;
}

static bd_status start(bd_fetch *f, req *r, bd_err *e) {
  CURL *h = curl_easy_init();
  if (!h) return bd_err_set(e, BD_E_NOMEM, "fetch: cannot create a transfer");
  r->easy = h;
  r->attempts++;
  r->len = 0;
  r->over_limit = 0;
  r->http_code = 0;
  r->max = f->o.max_body;
  curl_slist_free_all(r->hdrs);
  r->hdrs = NULL;
  int follow = f->o.follow_redirects && !f->allowed && !r->sign;
  curl_easy_setopt(h, CURLOPT_URL, r->url);
  curl_easy_setopt(h, CURLOPT_PRIVATE, r);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, f->o.allow_file ? "http,https,file" : "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, (long)follow);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, f->o.connect_timeout_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, f->o.timeout_ms);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, f->o.low_speed_bytes);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, f->o.low_speed_time_s);
  /* Rejects an announced oversized body before reading it. */
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->o.max_body);
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "batchdet/0.1");
  if (r->sign) {
    bd_status st = bd_s3_sign_easy(&f->s3, h, &r->hdrs, e);
    if (st != BD_OK) return st;
  }
  if (r->hdrs) curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs);
  if (curl_multi_add_handle(f->multi, h) != CURLM_OK) {
    curl_easy_cleanup(h);
    r->easy = NULL;
    return bd_err_set(e, BD_E_INTERNAL, "fetch: cannot add a transfer to the multi handle");
  }
  r->aprev = NULL;
  r->anext = f->active;
  if (f->active) f->active->aprev = r;
  f->active = r;
  pthread_mutex_lock(&f->mu);
  f->st.running++;
  if (f->st.running > f->st.max_running) f->st.max_running = f->st.running;
  pthread_mutex_unlock(&f->mu);
  return BD_OK;
}

static void release_easy(bd_fetch *f, req *r) {
  if (!r->easy) return;
  if (r->aprev || f->active == r) {
    if (r->aprev)
      r->aprev->anext = r->anext;
    else
      f->active = r->anext;
    if (r->anext) r->anext->aprev = r->aprev;
    r->aprev = r->anext = NULL;
  } else {
    /* start() failed before the handle joined the multi */
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    return;
  }
  curl_multi_remove_handle(f->multi, r->easy);
  curl_easy_cleanup(r->easy);
  r->easy = NULL;
  pthread_mutex_lock(&f->mu);
  f->st.running--;
  pthread_mutex_unlock(&f->mu);
}

/* S3 error documents name the reason (NoSuchKey, SlowDown, SignatureDoesNotMatch). */
static void s3_code(const req *r, char *out, size_t cap) {
  out[0] = '\0';
  if (!r->data || r->len == 0) return;
  const char *b = memmem(r->data, r->len, "<Code>", 6);
  if (!b) return;
  b += 6;
  const char *end = (const char *)r->data + r->len;
  size_t n = 0;
  while (b + n < end && b[n] != '<' && n + 1 < cap && n < 64) n++;
  for (size_t i = 0; i < n; i++) {
    char c = b[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return;
  }
  memcpy(out, b, n);
  out[n] = '\0';
}

static bd_status classify(bd_fetch *f, req *r, CURLcode rc, long *retry_after_ms, bd_err *e) {
  *retry_after_ms = -1;
  /* An error status with a huge announced body is still that error status. */
  if (rc == CURLE_FILESIZE_EXCEEDED && r->http_code >= 300) rc = CURLE_OK;
  if (rc == CURLE_OK) {
    long code = r->http_code;
    if ((code >= 200 && code < 300) || (code == 0 && bd_url_has_scheme(r->url, "file")))
      return BD_OK;
    char s3c[72] = "";
    if (r->is_s3) s3_code(r, s3c, sizeof s3c);
    char suffix[96] = "";
    if (s3c[0]) snprintf(suffix, sizeof suffix, " (%s)", s3c);
    bd_status st;
    if (code == 429) {
      curl_off_t ra = -1;
      if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
        *retry_after_ms =
            ra > f->o.retry_after_max_ms / 1000 ? f->o.retry_after_max_ms : (long)ra * 1000;
      st = BD_E_UNAVAILABLE;
    } else if (code >= 500) {
      st = BD_E_UNAVAILABLE;
    } else if (code == 408) {
      st = BD_E_TIMEOUT;
    } else if (code == 404 || code == 410) {
      st = BD_E_NOT_FOUND;
    } else if (code >= 300 && code < 400) {
      return bd_err_set(e, BD_E_INVALID, "fetch: HTTP %ld (redirect not followed)", code);
    } else {
      st = BD_E_INVALID;
    }
    return bd_err_set(e, st, "fetch: HTTP %ld%s", code, suffix);
  }
  switch (rc) {
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
      if (r->over_limit || rc == CURLE_FILESIZE_EXCEEDED)
        return bd_err_set(e, BD_E_LIMIT, "fetch: body larger than %zu bytes", f->o.max_body);
      return bd_err_set(e, BD_E_NOMEM, "fetch: out of memory storing the body");
    case CURLE_OPERATION_TIMEDOUT:
      return bd_err_set(e, BD_E_TIMEOUT, "fetch: timed out (%s)", curl_easy_strerror(rc));
    case CURLE_FILE_COULDNT_READ_FILE:
      return bd_err_set(e, BD_E_NOT_FOUND, "fetch: file not readable");
    case CURLE_UNSUPPORTED_PROTOCOL:
      return bd_err_set(e, BD_E_UNSUPPORTED, "fetch: protocol not allowed");
    case CURLE_URL_MALFORMAT:
      return bd_err_set(e, BD_E_INVALID, "fetch: malformed URL");
    case CURLE_TOO_MANY_REDIRECTS:
      return bd_err_set(e, BD_E_INVALID, "fetch: too many redirects");
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      return bd_err_set(e, BD_E_INVALID, "fetch: TLS: %s", curl_easy_strerror(rc));
    case CURLE_OUT_OF_MEMORY:
      return bd_err_set(e, BD_E_NOMEM, "fetch: out of memory");
    default:
      /* connect refused/reset, DNS, truncated bodies (PARTIAL_FILE), HTTP/2 stream errors */
      return bd_err_set(e, BD_E_NETWORK, "fetch: %s", curl_easy_strerror(rc));
  }
}

static uint64_t rng_next(bd_fetch *f) {
  uint64_t x = f->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return f->rng = x;
}

static void finish(bd_fetch *f, req *r, CURLcode rc) {
  bd_err e = {0};
  long ra = -1;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->http_code);
  bd_status st = classify(f, r, rc, &ra, &e);
  release_easy(f, r);
  if (st != BD_OK && bd_status_retriable(st) && r->attempts < f->o.max_attempts) {
    /* Exponential backoff with full jitter; a server's Retry-After wins. */
    long delay;
    if (ra >= 0) {
      delay = ra;
    } else {
      long bound = f->o.backoff_base_ms;
      for (int i = 1; i < r->attempts && bound < f->o.backoff_max_ms; i++) bound *= 2;
      if (bound > f->o.backoff_max_ms) bound = f->o.backoff_max_ms;
      delay = (long)(rng_next(f) % (uint64_t)(bound + 1));
    }
    r->due_ms = now_ms() + delay;
    r->next = f->waiting;
    f->waiting = r;
    pthread_mutex_lock(&f->mu);
    f->st.retries++;
    pthread_mutex_unlock(&f->mu);
    return;
  }
  complete(f, r, st, &e);
}

static void cancel_list(bd_fetch *f, req *r) {
  bd_err e;
  bd_err_set(&e, BD_E_CANCELLED, "fetch: cancelled by shutdown");
  while (r) {
    req *n = r->next;
    release_easy(f, r);
    complete(f, r, BD_E_CANCELLED, &e);
    r = n;
  }
}

static void *run(void *arg) {
  bd_fetch *f = arg;
  for (;;) {
    pthread_mutex_lock(&f->mu);
    int stopping = f->stopping;
    if (f->in_head) {
      if (f->ready_tail)
        f->ready_tail->next = f->in_head;
      else
        f->ready_head = f->in_head;
      f->ready_tail = f->in_tail;
      f->in_head = f->in_tail = NULL;
    }
    int nrun = f->st.running;
    pthread_mutex_unlock(&f->mu);
    if (stopping) break;

    int64_t t = now_ms();
    /* Due retries go first: they have waited longest. */
    for (req **pp = &f->waiting; *pp;) {
      req *r = *pp;
      if (r->due_ms <= t) {
        *pp = r->next;
        r->next = f->ready_head;
        f->ready_head = r;
        if (!f->ready_tail) f->ready_tail = r;
      } else {
        pp = &r->next;
      }
    }
    while (f->ready_head && nrun < f->o.concurrency) {
      req *r = f->ready_head;
      f->ready_head = r->next;
      if (!f->ready_head) f->ready_tail = NULL;
      r->next = NULL;
      bd_err e = {0};
      if (r->pre.code != BD_OK) {
        complete(f, r, r->pre.code, &r->pre);
        continue;
      }
      if (start(f, r, &e) != BD_OK) {
        release_easy(f, r);
        complete(f, r, e.code, &e);
        continue;
      }
      nrun++;
    }
    int still = 0;
    curl_multi_perform(f->multi, &still);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
      if (m->msg != CURLMSG_DONE) continue;
      req *r = NULL;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      CURLcode rc = m->data.result;
      if (r) finish(f, r, rc);
    }
    long wait = BD_FETCH_IDLE_POLL_MS;
    pthread_mutex_lock(&f->mu);
    nrun = f->st.running;
    pthread_mutex_unlock(&f->mu);
    if (f->ready_head && nrun < f->o.concurrency) wait = 0;
    t = now_ms();
    for (req *r = f->waiting; r; r = r->next) {
      long d = r->due_ms > t ? (long)(r->due_ms - t) : 0;
      if (d < wait) wait = d;
    }
    curl_multi_poll(f->multi, NULL, 0, (int)wait, NULL);
  }
  /* Shutdown: every outstanding request gets its CANCELLED completion. */
  while (f->active) {
    req *r = f->active;
    release_easy(f, r);
    r->next = NULL;
    cancel_list(f, r);
  }
  cancel_list(f, f->ready_head);
  f->ready_head = f->ready_tail = NULL;
  cancel_list(f, f->waiting);
  f->waiting = NULL;
  pthread_mutex_lock(&f->mu);
  req *in = f->in_head;
  f->in_head = f->in_tail = NULL;
  pthread_mutex_unlock(&f->mu);
  cancel_list(f, in);
  return NULL;
}

/* ---- public API ---- */

static char *norm_hosts(const char *list) {
  if (!list || !*list) return NULL;
  size_t n = strlen(list);
  char *out = malloc(n + 3);
  if (!out) return NULL;
  size_t o = 0;
  out[o++] = ',';
  for (size_t i = 0; i < n; i++)
    if (list[i] != ' ')
      out[o++] = (char)((list[i] >= 'A' && list[i] <= 'Z') ? list[i] + 32 : list[i]);
  out[o++] = ',';
  out[o] = '\0';
  return out;
}

bd_fetch *bd_fetch_new(const bd_fetch_opts *opts, bd_fetch_done_fn done, void *ctx, bd_err *err) {
  bd_fetch *f = calloc(1, sizeof *f);
  if (!f) {
    bd_err_set(err, BD_E_NOMEM, "fetch: out of memory");
    return NULL;
  }
  if (opts)
    f->o = *opts;
  else
    bd_fetch_opts_default(&f->o);
  bd_fetch_opts *o = &f->o;
  if (o->concurrency < 1 || o->concurrency > BD_FETCH_CONC_MAX) {
    bd_err_set(err, BD_E_INVALID, "fetch: concurrency %d outside 1..%d", o->concurrency,
               BD_FETCH_CONC_MAX);
    goto fail;
  }
  if (o->queue_max <= 0) o->queue_max = 16 * o->concurrency;
  if (o->queue_max > BD_FETCH_QUEUE_MAX) o->queue_max = BD_FETCH_QUEUE_MAX;
  if (o->max_attempts < 1 || o->max_attempts > BD_FETCH_ATTEMPTS_MAX) {
    bd_err_set(err, BD_E_INVALID, "fetch: max_attempts %d outside 1..%d", o->max_attempts,
               BD_FETCH_ATTEMPTS_MAX);
    goto fail;
  }
  if (o->max_body == 0 || o->timeout_ms <= 0 || o->connect_timeout_ms <= 0 ||
      o->backoff_base_ms < 1 || o->backoff_max_ms < o->backoff_base_ms ||
      o->retry_after_max_ms < 0) {
    bd_err_set(err, BD_E_INVALID, "fetch: zero or negative limit in options");
    goto fail;
  }
  o->allowed_hosts = NULL; /* the caller's string may not outlive us; use f->allowed */
  o->s3_endpoint = NULL;
  o->s3_region = NULL;
  if (opts && opts->allowed_hosts && *opts->allowed_hosts &&
      !(f->allowed = norm_hosts(opts->allowed_hosts))) {
    bd_err_set(err, BD_E_NOMEM, "fetch: out of memory");
    goto fail;
  }
  if (bd_s3_cfg_load(&f->s3, opts ? opts->s3_endpoint : NULL, opts ? opts->s3_region : NULL,
                     opts ? opts->s3_path_style : -1, err) != BD_OK)
    goto fail;
  pthread_once(&g_curl_once, curl_init_once);
  if (g_curl_init_rc != CURLE_OK) {
    bd_err_set(err, BD_E_INTERNAL, "fetch: curl_global_init failed");
    goto fail;
  }
  f->multi = curl_multi_init();
  if (!f->multi) {
    bd_err_set(err, BD_E_NOMEM, "fetch: curl_multi_init failed");
    goto fail;
  }
  curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->concurrency);
  curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)o->concurrency);
  f->rng = o->rng_seed ? o->rng_seed : ((uint64_t)now_ms() ^ (uint64_t)(uintptr_t)f) | 1;
  f->done = done;
  f->ctx = ctx;
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv_space, NULL);
  pthread_cond_init(&f->cv_done, NULL);
  if (pthread_create(&f->th, NULL, run, f) != 0) {
    bd_err_set(err, BD_E_INTERNAL, "fetch: cannot start the fetch thread");
    bd_fetch_destroy(f);
    return NULL;
  }
  f->th_started = 1;
  return f;
fail:
  if (f->multi) curl_multi_cleanup(f->multi);
  bd_s3_cfg_wipe(&f->s3);
  free(f->allowed);
  free(f);
  return NULL;
}

void bd_fetch_destroy(bd_fetch *f) {
  if (!f) return;
  if (f->th_started) {
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cv_space);
    pthread_mutex_unlock(&f->mu);
    curl_multi_wakeup(f->multi);
    pthread_join(f->th, NULL);
  }
  for (res_node *n = f->res_head; n;) {
    res_node *nx = n->next;
    free(n->r.data);
    free(n);
    n = nx;
  }
  curl_multi_cleanup(f->multi);
  pthread_cond_destroy(&f->cv_space);
  pthread_cond_destroy(&f->cv_done);
  pthread_mutex_destroy(&f->mu);
  bd_s3_cfg_wipe(&f->s3);
  free(f->allowed);
  free(f);
}

static void deadline_after(struct timespec *ts, long ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* 1 when a file:// URL names a directory (its path %XX-decoded as curl decodes it). */
static int file_is_dir(const char *url) {
  CURLU *u = curl_url();
  char *path = NULL;
  struct stat sb;
  int dir = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK &&
            stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
  curl_free(path);
  curl_url_cleanup(u);
  return dir;
}

/* Fills r->url/sign/is_s3 or r->pre with the reason the URL cannot be fetched. */
static void prepare(bd_fetch *f, req *r, const char *url, int http_sign) {
  char red[256];
  if (http_sign >= 0) {
    r->url = strdup(url);
    r->sign = http_sign;
    r->is_s3 = http_sign;
  } else if (bd_url_has_scheme(url, "s3")) {
    char bucket[64];
    const char *key;
    r->is_s3 = r->sign = 1;
    if (bd_s3_split(url, bucket, sizeof bucket, &key, &r->pre) != BD_OK) goto bad;
    if (!*key) {
      bd_err_set(&r->pre, BD_E_INVALID, "fetch: s3 URL without a key");
      return;
    }
    if (!(r->url = bd_s3_http_url(&f->s3, bucket, key, NULL, &r->pre))) goto bad;
  } else if (bd_url_has_scheme(url, "http") || bd_url_has_scheme(url, "https")) {
    r->url = strdup(url);
  } else if (bd_url_has_scheme(url, "file")) {
    if (!f->o.allow_file) {
      bd_err_set(&r->pre, BD_E_UNSUPPORTED, "fetch: file:// URLs are disabled");
      return;
    }
    if (file_is_dir(url)) {
      /* curl "reads" a directory as 0 bytes, which would surface as a decode error. */
      bd_url_redact(url, red, sizeof red);
      bd_err_set(&r->pre, BD_E_INVALID, "fetch: %s is a directory", red);
      return;
    }
    r->url = strdup(url);
  } else {
    bd_url_redact(url, red, sizeof red);
    bd_err_set(&r->pre, BD_E_UNSUPPORTED, "fetch: unsupported URL scheme in '%s'", red);
    return;
  }
  if (!r->url) {
    bd_err_set(&r->pre, BD_E_NOMEM, "fetch: out of memory");
    return;
  }
  if (f->allowed && !bd_url_has_scheme(r->url, "file")) {
    CURLU *u = curl_url();
    char *host = NULL;
    int ok = 0;
    if (u && curl_url_set(u, CURLUPART_URL, r->url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && strlen(host) < 256) {
      char pat[260];
      snprintf(pat, sizeof pat, ",%s,", host);
      for (char *p = pat; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
      ok = strstr(f->allowed, pat) != NULL;
    }
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok) {
      bd_url_redact(r->url, red, sizeof red);
      bd_err_set(&r->pre, BD_E_UNSUPPORTED, "fetch: host of '%s' is not in the allow-list", red);
    }
  }
  return;
bad:
  bd_err_prefix(&r->pre, "fetch");
}

static bd_status submit(bd_fetch *f, uint64_t id, const char *url, int http_sign, void *user,
                        long wait_ms, bd_err *err) {
  if (!f || !url) return bd_err_set(err, BD_E_INVALID, "fetch: NULL handle or URL");
  if (strnlen(url, BD_FETCH_URL_MAX + 1) > BD_FETCH_URL_MAX)
    return bd_err_set(err, BD_E_LIMIT, "fetch: URL longer than %d bytes", BD_FETCH_URL_MAX);
  req *r = calloc(1, sizeof *r);
  if (!r) return bd_err_set(err, BD_E_NOMEM, "fetch: out of memory");
  r->id = id;
  r->user = user;
  r->submit_ms = now_ms();
  prepare(f, r, url, http_sign);
  struct timespec dl;
  if (wait_ms > 0) deadline_after(&dl, wait_ms);
  pthread_mutex_lock(&f->mu);
  while (!f->stopping && f->outstanding >= f->o.queue_max) {
    if (wait_ms == 0 || (wait_ms > 0 && pthread_cond_timedwait(&f->cv_space, &f->mu, &dl) != 0))
      break;
    if (wait_ms < 0) pthread_cond_wait(&f->cv_space, &f->mu);
  }
  bd_status st = BD_OK;
  if (f->stopping)
    st = bd_err_set(err, BD_E_CANCELLED, "fetch: shutting down");
  else if (f->outstanding >= f->o.queue_max)
    st = bd_err_set(err, BD_E_UNAVAILABLE, "fetch: queue full (%d requests outstanding)",
                    f->outstanding);
  if (st == BD_OK) {
    if (f->in_tail)
      f->in_tail->next = r;
    else
      f->in_head = r;
    f->in_tail = r;
    f->outstanding++;
    f->st.submitted++;
  }
  pthread_mutex_unlock(&f->mu);
  if (st != BD_OK)
    req_free(r);
  else
    curl_multi_wakeup(f->multi);
  return st;
}

bd_status bd_fetch_submit(bd_fetch *f, uint64_t id, const char *url, void *user, long wait_ms,
                          bd_err *err) {
  return submit(f, id, url, -1, user, wait_ms, err);
}

bd_status bd_fetch__submit_http(bd_fetch *f, uint64_t id, const char *http_url, int sign_s3,
                                void *user, long wait_ms, bd_err *err) {
  return submit(f, id, http_url, sign_s3 ? 1 : 0, user, wait_ms, err);
}

bd_status bd_fetch_poll(bd_fetch *f, long wait_ms, bd_fetch_result *out, bd_err *err) {
  memset(out, 0, sizeof *out);
  if (!f) return bd_err_set(err, BD_E_INVALID, "fetch: NULL handle");
  if (f->done) return bd_err_set(err, BD_E_INVALID, "fetch: poll on a fetcher with a callback");
  struct timespec dl;
  if (wait_ms > 0) deadline_after(&dl, wait_ms);
  pthread_mutex_lock(&f->mu);
  while (!f->res_head) {
    if (wait_ms == 0 || (wait_ms > 0 && pthread_cond_timedwait(&f->cv_done, &f->mu, &dl) != 0))
      break;
    if (wait_ms < 0) pthread_cond_wait(&f->cv_done, &f->mu);
  }
  res_node *n = f->res_head;
  if (n) {
    f->res_head = n->next;
    if (!f->res_head) f->res_tail = NULL;
  }
  pthread_mutex_unlock(&f->mu);
  if (!n) return bd_err_set(err, BD_E_TIMEOUT, "fetch: no completion within %ld ms", wait_ms);
  *out = n->r;
  free(n);
  return BD_OK;
}

void bd_fetch_stats_get(bd_fetch *f, bd_fetch_stats *out) {
  memset(out, 0, sizeof *out);
  if (!f) return;
  pthread_mutex_lock(&f->mu);
  *out = f->st;
  out->outstanding = f->outstanding;
  pthread_mutex_unlock(&f->mu);
}

bd_status bd_fetch_one(const char *url, const bd_fetch_opts *opts, unsigned char **buf, size_t *len,
                       bd_fetch_result *info, bd_err *err) {
  bd_fetch_opts o;
  bd_fetch_result res = {0};
  *buf = NULL;
  *len = 0;
  if (info) memset(info, 0, sizeof *info);
  if (opts)
    o = *opts;
  else
    bd_fetch_opts_default(&o);
  o.concurrency = 1;
  o.queue_max = 1;
  bd_fetch *f = bd_fetch_new(&o, NULL, NULL, err);
  if (!f) return err ? err->code : BD_E_INTERNAL;
  bd_status st = bd_fetch_submit(f, 0, url, NULL, -1, err);
  if (st == BD_OK) st = bd_fetch_poll(f, -1, &res, err);
  bd_fetch_destroy(f);
  if (st != BD_OK) return st;
  if (info) {
    *info = res;
    info->data = NULL;
  }
  if (res.status != BD_OK) {
    st = bd_err_set(err, res.status, "%s", res.err.msg);
    bd_fetch_result_clear(&res);
    return st;
  }
  *buf = res.data;
  *len = res.len;
  return BD_OK;
}
