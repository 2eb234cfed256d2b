/* bench_fetch_decode: throughput of the input side of a worker, printed as markdown
 * tables (tests/bench/fetch_decode.sh starts the HTTP server and runs tjbench).
 *
 *   1. fetch alone: N GETs from a local HTTP server through bd_fetch (concurrency C)
 *   2. decode alone, one thread: each photo decoded repeatedly for S seconds with one
 *      bd_decoder, next to tjbench's decompression Mpixels/s for the same file and to
 *      raw TurboJPEG (tjbench's inner loop) run in this process
 *   3. decode pool from memory (all cores), and fetch + decode pool together
 *
 * Usage: bench_fetch_decode --images DIR [--url http://127.0.0.1:PORT/] [--requests N]
 *        [--concurrency C] [--decode-seconds S] [--threads T] [--tjbench PATH]
 *        [--rounds R] [--target WxH]
 * With --tjbench, tjbench and our decoder run alternately on each JPEG, R rounds, and
 * the best of each is kept: on a loaded machine the two then see similar conditions.
 * A benchmark, not a test: it asserts nothing about speed; it fails only when a fetch
 * or decode fails. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "bd_decode.h"
#include "bd_decode_pool.h"
#include "bd_fetch.h"

#define MAX_PHOTOS 64

typedef struct photo {
  char name[256];
  uint8_t *bytes;
  size_t len;
  int w, h; /* full-size decode */
} photo;

static photo g_ph[MAX_PHOTOS];
static int g_nph;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const photo *)a)->name, ((const photo *)b)->name);
}

static int load_photos(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "cannot open %s\n", dir);
    return -1;
  }
  struct dirent *e;
  while ((e = readdir(d)) && g_nph < MAX_PHOTOS) {
    size_t n = strlen(e->d_name);
    if (n < 5 || n >= sizeof g_ph[0].name) continue;
    if (strcmp(e->d_name + n - 4, ".jpg") && strcmp(e->d_name + n - 4, ".png")) continue;
    photo *p = &g_ph[g_nph];
    snprintf(p->name, sizeof p->name, "%s", e->d_name);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len <= 0 || len > (64L << 20) || !(p->bytes = malloc((size_t)len)) ||
        fread(p->bytes, 1, (size_t)len, f) != (size_t)len) {
      fclose(f);
      free(p->bytes);
      p->bytes = NULL;
      continue;
    }
    fclose(f);
    p->len = (size_t)len;
    bd_image im;
    bd_decode_info info;
    bd_err err = {0};
    if (bd_decode_image(p->bytes, p->len, NULL, &im, &info, &err) != BD_OK) {
      fprintf(stderr, "%s: %s (skipped)\n", p->name, err.msg);
      free(p->bytes);
      p->bytes = NULL;
      continue;
    }
    p->w = info.orig_w;
    p->h = info.orig_h;
    bd_image_free(&im);
    g_nph++;
  }
  closedir(d);
  qsort(g_ph, (size_t)g_nph, sizeof *g_ph, cmp_name);
  return g_nph > 0 ? 0 : -1;
}

/* Runs tjbench (single-threaded, decompression to packed RGB like our decoder, no
 * output files) on one photo; returns the Mpixels/s of the "Throughput" line that
 * follows "Decompress", or 0 when it could not be read. */
static double run_tjbench(const char *bin, const char *dir, const char *name, double secs) {
  char cmd[8192];
  double warm = secs * 0.25 < 0.5 ? secs * 0.25 : 0.5;
  int k = snprintf(cmd, sizeof cmd, "'%s' '%s/%s' -rgb -benchtime %.3f -warmup %.3f -nowrite 2>&1",
                   bin, dir, name, secs, warm);
  if (k < 0 || (size_t)k >= sizeof cmd) return 0;
  FILE *f = popen(cmd, "r");
  if (!f) return 0;
  char line[512];
  int after = 0;
  double v = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "Decompress", 10) == 0) after = 1;
    const char *t = strstr(line, "Throughput:");
    if (after && t && v == 0) v = atof(t + 11);
  }
  pclose(f);
  return v;
}

/* ---- completion counting shared by the fetch and pool callbacks ---- */
typedef struct counter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long done, failed;
  uint64_t bytes, pixels;
  bd_decode_pool *pool; /* fetch + decode: where fetched bodies go */
  bd_decode_opts *dopts;
  char first_err[BD_ERR_MSG_MAX];
} counter;

static void count_one(counter *c, int ok, uint64_t bytes, uint64_t pixels, const char *msg) {
  pthread_mutex_lock(&c->mu);
  c->done++;
  if (!ok) {
    if (!c->failed++) snprintf(c->first_err, sizeof c->first_err, "%s", msg);
  }
  c->bytes += bytes;
  c->pixels += pixels;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void wait_count(counter *c, long n) {
  pthread_mutex_lock(&c->mu);
  while (c->done < n) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

static void on_fetch(void *ctx, bd_fetch_result *r) {
  counter *c = ctx;
  count_one(c, r->status == BD_OK, r->len, 0, r->err.msg);
}

static void on_decoded(void *ctx, bd_decode_result *r) {
  counter *c = ctx;
  count_one(c, r->status == BD_OK, r->in_bytes, (uint64_t)r->image.w * (uint64_t)r->image.h,
            r->err.msg);
}

/* Fetch + decode: hand the body to the pool (the fetch thread waits while the pool is
 * full, which is the backpressure we want); a failed fetch counts as a completion. */
static void on_fetch_to_pool(void *ctx, bd_fetch_result *r) {
  counter *c = ctx;
  if (r->status != BD_OK) {
    count_one(c, 0, 0, 0, r->err.msg);
    return;
  }
  bd_err e = {0};
  if (bd_decode_pool_submit(c->pool, r->id, r->data, r->len, c->dopts, NULL, -1, &e) == BD_OK)
    r->data = NULL; /* the pool owns it now */
  else
    count_one(c, 0, 0, 0, e.msg);
}

static void counter_init(counter *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
}

static void counter_fini(counter *c) {
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
}

static int run_fetch(const char *url, int n, int conc, bd_decode_pool *pool, bd_decode_opts *dopts,
                     double *wall, counter *c) {
  bd_fetch_opts fo;
  bd_fetch_opts_default(&fo);
  fo.concurrency = conc;
  fo.max_attempts = 2;
  bd_err e = {0};
  c->pool = pool;
  c->dopts = dopts;
  /* With a pool, completions are counted by the pool callback (same counter). */
  bd_fetch *f = bd_fetch_new(&fo, pool ? on_fetch_to_pool : on_fetch, c, &e);
  if (!f) {
    fprintf(stderr, "fetch: %s\n", e.msg);
    return -1;
  }
  double t0 = now_s();
  for (int i = 0; i < n; i++) {
    char u[4096];
    snprintf(u, sizeof u, "%s%s", url, g_ph[i % g_nph].name);
    if (bd_fetch_submit(f, (uint64_t)i, u, NULL, -1, &e) != BD_OK) {
      fprintf(stderr, "submit: %s\n", e.msg);
      bd_fetch_destroy(f);
      return -1;
    }
  }
  wait_count(c, n);
  *wall = now_s() - t0;
  bd_fetch_destroy(f);
  return 0;
}

/* Raw TurboJPEG, the way tjbench's inner loop runs: one tjhandle, decompression to
 * packed RGB into a buffer allocated once, default flags. Our decoder's overhead
 * (header parse, EXIF scan, allocation, checks) is measured against this in the
 * same process, which process-to-process noise (VMs, turbo) cannot blur. */
typedef struct raw_tj {
  tjhandle tj;
  uint8_t *dst;
} raw_tj;

static int raw_tj_open(const photo *p, raw_tj *r) {
  r->tj = tjInitDecompress();
  r->dst = malloc((size_t)p->w * (size_t)p->h * 3);
  return r->tj && r->dst ? 0 : -1;
}

static void raw_tj_close(raw_tj *r) {
  if (r->tj) tjDestroy(r->tj);
  free(r->dst);
}

/* One thread, photo p repeatedly for secs after a short warm-up; raw != NULL runs raw
 * TurboJPEG instead of a bd_decoder. */
static int decode_loop(const photo *p, const bd_decode_opts *o, raw_tj *raw, double secs,
                       double *img_s, double *mpx_s, int *out_w, int *out_h) {
  bd_err e = {0};
  bd_decoder *d = raw ? NULL : bd_decoder_new(&e);
  if (!raw && !d) return -1;
  long iters = 0;
  double t0 = 0, t = 0, warm = secs * 0.25 < 0.5 ? secs * 0.25 : 0.5;
  double start = now_s();
  int counting = 0, rc = 0;
  for (;;) {
    if (raw) {
      if (tjDecompress2(raw->tj, p->bytes, (unsigned long)p->len, raw->dst, p->w, 0, p->h, TJPF_RGB,
                        0) != 0) {
        fprintf(stderr, "%s: tjDecompress2: %s\n", p->name, tjGetErrorStr2(raw->tj));
        rc = -1;
        break;
      }
      *out_w = p->w;
      *out_h = p->h;
    } else {
      bd_image im;
      bd_decode_info info;
      if (bd_decoder_decode(d, p->bytes, p->len, o, &im, &info, &e) != BD_OK) {
        fprintf(stderr, "%s: %s\n", p->name, e.msg);
        rc = -1;
        break;
      }
      *out_w = im.w;
      *out_h = im.h;
      bd_image_free(&im);
    }
    t = now_s();
    if (!counting) {
      if (t - start >= warm) {
        counting = 1;
        t0 = t;
      }
      continue;
    }
    iters++;
    if (t - t0 >= secs && iters >= 3) break;
  }
  bd_decoder_destroy(d);
  if (rc) return rc;
  /* Mpixels of the full-size image per second, the unit tjbench reports. */
  *img_s = (double)iters / (t - t0);
  *mpx_s = *img_s * (double)p->w * (double)p->h / 1e6;
  return 0;
}

static const char *arg(int argc, char **argv, const char *name, const char *def) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

int main(int argc, char **argv) {
  const char *dir = arg(argc, argv, "--images", NULL);
  const char *url = arg(argc, argv, "--url", NULL);
  int nreq = atoi(arg(argc, argv, "--requests", "500"));
  int conc = atoi(arg(argc, argv, "--concurrency", "64"));
  double secs = atof(arg(argc, argv, "--decode-seconds", "2"));
  int threads = atoi(arg(argc, argv, "--threads", "0"));
  const char *tj = arg(argc, argv, "--tjbench", NULL);
  int rounds = atoi(arg(argc, argv, "--rounds", "2"));
  const char *target = arg(argc, argv, "--target", NULL);
  if (!dir || nreq < 1 || nreq > 1000000 || conc < 1 || conc > 4096 || secs <= 0 || secs > 600 ||
      threads < 0 || threads > BD_DECODE_POOL_MAX_THREADS || rounds < 1 || rounds > 100) {
    fprintf(stderr,
            "usage: %s --images DIR [--url http://127.0.0.1:PORT/] [--requests N]\n"
            "       [--concurrency C] [--decode-seconds S] [--threads T] [--tjbench PATH]\n"
            "       [--rounds R] [--target WxH]\n",
            argv[0]);
    return 2;
  }
  bd_decode_opts scaled = {0};
  if (target &&
      (sscanf(target, "%dx%d", &scaled.target_w, &scaled.target_h) != 2 || scaled.target_w < 1 ||
       scaled.target_h < 1 || scaled.target_w > 16384 || scaled.target_h > 16384)) {
    fprintf(stderr, "--target: expected WxH, got %s\n", target);
    return 2;
  }
  if (load_photos(dir) != 0) {
    fprintf(stderr, "no decodable photos in %s\n", dir);
    return 1;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (threads == 0) threads = cores > 0 ? (int)cores : 1;
  uint64_t all_bytes = 0;
  for (int i = 0; i < g_nph; i++) all_bytes += g_ph[i].len;
  int rc = 0;

  /* 1. fetch alone */
  if (url) {
    counter c;
    counter_init(&c);
    double wall = 0;
    if (run_fetch(url, nreq, conc, NULL, NULL, &wall, &c) != 0) rc = 1;
    printf("\n### Fetch alone (bd_fetch, %d requests, concurrency %d, %s)\n\n", nreq, conc, url);
    printf("| requests | failed | wall s | img/s | MB/s |\n| --- | --- | --- | --- | --- |\n");
    printf("| %d | %ld | %.3f | %.1f | %.1f |\n", nreq, c.failed, wall, nreq / wall,
           (double)c.bytes / 1e6 / wall);
    if (c.failed) {
      fprintf(stderr, "fetch failures, first: %s\n", c.first_err);
      rc = 1;
    }
    counter_fini(&c);
  }

  /* 2. decode alone, one thread: tjbench (own process), raw TurboJPEG (this process)
   * and bd_decoder, interleaved per round; best of the rounds for each. */
  printf("\n### Decode alone, one thread (%.2g s per photo and engine, full size, best of %d)\n\n",
         secs, rounds);
  printf(
      "| photo | size | KB | img/s | MB/s | Mpix/s | tjbench Mpix/s | ratio | raw tj Mpix/s "
      "| ratio |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  double sum_tj = 0, min_tj = 1e9, sum_raw = 0, min_raw = 1e9;
  int n_tj = 0, n_raw = 0;
  for (int i = 0; i < g_nph; i++) {
    const photo *p = &g_ph[i];
    double img_s = 0, mpx = 0, tj_mpx = 0, raw_mpx = 0;
    int ow, oh, is_jpeg = bd_decode_sniff(p->bytes, p->len) == BD_IMG_JPEG;
    raw_tj raw = {0};
    if (is_jpeg && raw_tj_open(p, &raw) != 0) {
      fprintf(stderr, "%s: cannot set up raw TurboJPEG\n", p->name);
      rc = 1;
    }
    for (int r = 0; r < rounds; r++) {
      double a, b;
      if (tj && is_jpeg) {
        double t = run_tjbench(tj, dir, p->name, secs);
        if (t > tj_mpx) tj_mpx = t;
      }
      if (is_jpeg && raw.dst && decode_loop(p, NULL, &raw, secs, &a, &b, &ow, &oh) == 0 &&
          b > raw_mpx)
        raw_mpx = b;
      if (decode_loop(p, NULL, NULL, secs, &a, &b, &ow, &oh) != 0) {
        rc = 1;
        break;
      }
      if (a > img_s) {
        img_s = a;
        mpx = b;
      }
    }
    raw_tj_close(&raw);
    if (img_s == 0) continue;
    printf("| %s | %dx%d | %.0f | %.1f | %.1f | %.1f |", p->name, p->w, p->h, p->len / 1e3, img_s,
           img_s * (double)p->len / 1e6, mpx);
    if (tj_mpx > 0) {
      double r = mpx / tj_mpx;
      printf(" %.1f | %.2f |", tj_mpx, r);
      sum_tj += r;
      if (r < min_tj) min_tj = r;
      n_tj++;
    } else {
      printf(" - | - |");
    }
    if (raw_mpx > 0) {
      double r = mpx / raw_mpx;
      printf(" %.1f | %.2f |\n", raw_mpx, r);
      sum_raw += r;
      if (r < min_raw) min_raw = r;
      n_raw++;
    } else {
      printf(" - | - |\n");
    }
  }
  printf("\n");
  if (n_tj)
    printf("ratio bd_decoder / tjbench per core: mean %.2f, min %.2f (target >= 0.90)\n",
           sum_tj / n_tj, min_tj);
  if (n_raw)
    printf("ratio bd_decoder / raw TurboJPEG in this process: mean %.2f, min %.2f\n",
           sum_raw / n_raw, min_raw);

  if (target) {
    printf(
        "\n### Decode alone, one thread, DCT-scaled for a %dx%d letterbox (photos that "
        "scale)\n\n",
        scaled.target_w, scaled.target_h);
    printf(
        "| photo | decoded as | img/s | MB/s | speed-up vs full |\n| --- | --- | --- | --- | --- "
        "|\n");
    for (int i = 0; i < g_nph; i++) {
      const photo *p = &g_ph[i];
      double img_s, mpx, full_s, fmpx;
      int ow, oh, fw, fh;
      if (decode_loop(p, &scaled, NULL, secs / 2, &img_s, &mpx, &ow, &oh) != 0 ||
          decode_loop(p, NULL, NULL, secs / 2, &full_s, &fmpx, &fw, &fh) != 0) {
        rc = 1;
        continue;
      }
      if (ow == fw && oh == fh) continue; /* not scaled: the same decode twice, only noise */
      printf("| %s | %dx%d | %.1f | %.1f | %.2fx |\n", p->name, ow, oh, img_s,
             img_s * (double)p->len / 1e6, img_s / full_s);
    }
  }

  /* 3. decode pool from memory, then fetch + decode pool */
  printf("\n### Decode pool (%d threads, %ld cores)%s\n\n", threads, cores,
         url ? " and fetch + decode pool" : "");
  printf("| stage | images | failed | wall s | img/s | MB/s | Mpix/s | pool busy |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  {
    counter c;
    counter_init(&c);
    bd_decode_pool_opts po = {.threads = threads};
    bd_err e = {0};
    bd_decode_pool *pool = bd_decode_pool_new(&po, on_decoded, &c, &e);
    if (!pool) {
      fprintf(stderr, "pool: %s\n", e.msg);
      return 1;
    }
    double t0 = now_s();
    for (int i = 0; i < nreq; i++) {
      const photo *p = &g_ph[i % g_nph];
      uint8_t *b = malloc(p->len);
      if (!b) return 1;
      memcpy(b, p->bytes, p->len);
      if (bd_decode_pool_submit(pool, (uint64_t)i, b, p->len, NULL, NULL, -1, &e) != BD_OK) {
        fprintf(stderr, "pool submit: %s\n", e.msg);
        free(b);
        return 1;
      }
    }
    wait_count(&c, nreq);
    double wall = now_s() - t0;
    bd_decode_pool_stats s;
    bd_decode_pool_stats_get(pool, &s);
    printf("| decode pool, from memory | %d | %ld | %.3f | %.1f | %.1f | %.1f | %.0f%% |\n", nreq,
           c.failed, wall, nreq / wall, (double)c.bytes / 1e6 / wall, (double)c.pixels / 1e6 / wall,
           100.0 * s.busy_s / (wall * threads));
    if (c.failed) rc = 1;
    bd_decode_pool_destroy(pool);
    counter_fini(&c);
  }
  if (url) {
    counter c;
    counter_init(&c);
    bd_decode_pool_opts po = {.threads = threads};
    bd_err e = {0};
    bd_decode_pool *pool = bd_decode_pool_new(&po, on_decoded, &c, &e);
    if (!pool) {
      fprintf(stderr, "pool: %s\n", e.msg);
      return 1;
    }
    double wall = 0;
    if (run_fetch(url, nreq, conc, pool, NULL, &wall, &c) != 0) rc = 1;
    bd_decode_pool_stats s;
    bd_decode_pool_stats_get(pool, &s);
    printf("| fetch + decode pool | %d | %ld | %.3f | %.1f | %.1f | %.1f | %.0f%% |\n", nreq,
           c.failed, wall, nreq / wall, (double)c.bytes / 1e6 / wall, (double)c.pixels / 1e6 / wall,
           100.0 * s.busy_s / (wall * threads));
    if (c.failed) {
      fprintf(stderr, "fetch+decode failures, first: %s\n", c.first_err);
      rc = 1;
    }
    bd_decode_pool_destroy(pool);
    counter_fini(&c);
  }
  printf("\n(%d photos, %.1f KB on average; MB = 1e6 bytes of encoded input)\n", g_nph,
         (double)all_bytes / g_nph / 1e3);
  for (int i = 0; i < g_nph; i++) free(g_ph[i].bytes);
  return rc;
}
