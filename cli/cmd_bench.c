/* batchdet bench: engine throughput and latency on a model. Random inputs with uint8
 * values (fresh every iteration, so no backend can cache or shortcut zeros); by default
 * only the network runs (raw API); --end-to-end times CPU pre-processing of random
 * images, the network and post-processing (detection API). Builds engine-only. A
 * benchmark, not a test: it prints numbers and asserts nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_cli.h"
#include "bd_engine.h"

#define BENCH_MAX_ITERS 100000

static void bench_usage(FILE *f) {
  fprintf(
      f,
      "usage: batchdet bench --model PATH [--device cpu|cuda|cuda:N] [--threads N] [--batch B]\n"
      "                      [--iters N] [--warmup W] [--end-to-end] [--image-size WxH]\n"
      "                      [--family auto|yolox|damoyolo] [--json]\n"
      "\n"
      "Times N batches of B random inputs (uint8 values, new every iteration) after W\n"
      "warm-up batches. Default: the network alone. --end-to-end adds CPU pre-processing\n"
      "of random WxH images (default 640x480) and post-processing. Prints ms/img, img/s\n"
      "and p50/p99 batch latency; --json prints one JSON object instead.\n"
      "Defaults: --device cpu --threads 0 (all cores) --batch 1 --iters 20 --warmup 3.\n");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(const double *sorted, int n, double p) { /* nearest rank */
  int k = (int)(p / 100.0 * n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return sorted[k - 1];
}

static int parse_int(const char *v, int lo, int hi, int *out) {
  char *end;
  long x = strtol(v, &end, 10);
  if (!*v || *end || x < lo || x > hi) return -1;
  *out = (int)x;
  return 0;
}

int bd_cmd_bench(int argc, char **argv) {
  const char *model = NULL, *device = "cpu";
  int threads = 0, batch = 1, iters = 20, warmup = 3, json = 0, e2e = 0, iw = 640, ih = 480;
  bd_family family = BD_FAMILY_AUTO;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      bench_usage(stdout);
      return BD_EXIT_OK;
    }
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (!strcmp(a, "--end-to-end")) {
      e2e = 1;
      continue;
    }
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int bad = 0;
    if (!v)
      bad = 1;
    else if (!strcmp(a, "--model"))
      model = v;
    else if (!strcmp(a, "--device"))
      device = v;
    else if (!strcmp(a, "--threads"))
      bad = parse_int(v, 0, 1024, &threads);
    else if (!strcmp(a, "--batch"))
      bad = parse_int(v, 1, BD_ENGINE_MAX_BATCH, &batch);
    else if (!strcmp(a, "--iters"))
      bad = parse_int(v, 1, BENCH_MAX_ITERS, &iters);
    else if (!strcmp(a, "--warmup"))
      bad = parse_int(v, 0, BENCH_MAX_ITERS, &warmup);
    else if (!strcmp(a, "--family"))
      bad = bd_family_parse(v, &family);
    else if (!strcmp(a, "--image-size"))
      bad = sscanf(v, "%dx%d", &iw, &ih) != 2 || iw < 1 || ih < 1 || iw > 16384 || ih > 16384;
    else {
      fprintf(stderr, "batchdet bench: unknown argument '%s'\n", a);
      bench_usage(stderr);
      return BD_EXIT_USAGE;
    }
    if (bad) {
      fprintf(stderr, "batchdet bench: bad or missing value for %s\n", a);
      return BD_EXIT_USAGE;
    }
    i++;
  }
  if (!model) model = getenv("BATCHDET_MODEL");
  if (!model || !*model) {
    fprintf(stderr, "batchdet bench: --model is required\n");
    return BD_EXIT_USAGE;
  }
  int is_cuda, idx;
  if (bd_engine_parse_device(device, &is_cuda, &idx)) {
    fprintf(stderr, "batchdet bench: unknown device '%s'\n", device);
    return BD_EXIT_USAGE;
  }

  int rc = BD_EXIT_FAIL;
  bd_engine *e = NULL;
  float *in = NULL;
  float *outs[8] = {0};
  double *lat = NULL;
  bd_image *imgs = NULL;
  const bd_image **ptrs = NULL;
  bd_detections *dets = NULL;
  bd_err err;
  bd_err_clear(&err);
  bd_engine_opts o = {.device = device, .threads = threads, .max_batch = batch, .family = family};
  double t_load = now_ms();
  bd_status lst = bd_engine_load(model, &o, &e, &err);
  /* Network-only timing works for any graph: retry without family recognition. */
  if (lst == BD_E_UNSUPPORTED && !e2e && family == BD_FAMILY_AUTO) {
    o.family = BD_FAMILY_NONE;
    lst = bd_engine_load(model, &o, &e, &err);
  }
  if (lst != BD_OK) {
    fprintf(stderr, "batchdet bench: %s\n", err.msg);
    goto out;
  }
  t_load = now_ms() - t_load;
  size_t row = (size_t)bd_engine_input_row_numel(e);
  int nout = bd_engine_num_outputs(e);
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  lat = calloc((size_t)iters, sizeof *lat);
  if (!lat) goto nomem;
  if (!e2e) {
    if (!(in = malloc((size_t)batch * row * sizeof *in))) goto nomem;
    for (int i = 0; i < nout; i++)
      if (!(outs[i] = malloc((size_t)batch * bd_engine_output_row_numel(e, i) * sizeof(float))))
        goto nomem;
  } else {
    imgs = calloc((size_t)batch, sizeof *imgs);
    ptrs = calloc((size_t)batch, sizeof *ptrs);
    dets = calloc((size_t)batch, sizeof *dets);
    if (!imgs || !ptrs || !dets) goto nomem;
    for (int b = 0; b < batch; b++) {
      imgs[b].w = iw;
      imgs[b].h = ih;
      if (!(imgs[b].data = malloc((size_t)iw * ih * 3))) goto nomem;
      ptrs[b] = &imgs[b];
    }
  }
  for (int it = -warmup; it < iters; it++) {
    /* Fresh uint8-valued data every iteration, generated outside the timed region. */
    if (!e2e) {
      for (size_t k = 0; k < (size_t)batch * row; k++) in[k] = (float)(rng_next(&seed) >> 56);
    } else {
      for (int b = 0; b < batch; b++)
        for (size_t k = 0; k < (size_t)iw * ih * 3; k += 8) {
          uint64_t r = rng_next(&seed);
          size_t n = (size_t)iw * ih * 3 - k < 8 ? (size_t)iw * ih * 3 - k : 8;
          memcpy(imgs[b].data + k, &r, n);
        }
    }
    double t0 = now_ms();
    bd_status st;
    if (!e2e) {
      st = bd_engine_run_raw(e, batch, in, outs, &err);
    } else {
      st = bd_engine_detect(e, batch, ptrs, NULL, dets, NULL, &err);
      for (int b = 0; b < batch; b++) bd_detections_free(&dets[b]);
    }
    double dt = now_ms() - t0;
    if (st != BD_OK) {
      fprintf(stderr, "batchdet bench: %s\n", err.msg);
      goto out;
    }
    if (it >= 0) lat[it] = dt;
  }
  double total = 0;
  for (int i = 0; i < iters; i++) total += lat[i];
  qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
  double ms_img = total / iters / batch, img_s = 1000.0 / ms_img;
  double p50 = pct(lat, iters, 50), p99 = pct(lat, iters, 99);
  const char *fam = bd_family_name(bd_engine_family(e)->family);
  if (json) {
    printf("{\"model\":\"");
    for (const char *p = model; *p; p++) {
      if (*p == '"' || *p == '\\') putchar('\\');
      if ((unsigned char)*p >= 0x20) putchar(*p);
    }
    printf(
        "\",\"device\":\"%s\",\"threads\":%d,\"batch\":%d,\"iters\":%d,\"warmup\":%d,"
        "\"mode\":\"%s\",\"family\":\"%s\",\"ms_per_image\":%.4f,\"img_s\":%.3f,"
        "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"min_ms\":%.4f,\"load_ms\":%.1f}\n",
        bd_engine_device(e), threads, batch, iters, warmup, e2e ? "end-to-end" : "network", fam,
        ms_img, img_s, p50, p99, lat[0], t_load);
  } else {
    printf("model      %s (%s)\n", model, fam);
    printf("device     %s, threads %d, batch %d, %d iters after %d warm-up (%s)\n",
           bd_engine_device(e), threads, batch, iters, warmup,
           e2e ? "end-to-end: pre + network + post" : "network only");
    printf("ms/img     %.3f\n", ms_img);
    printf("img/s      %.2f\n", img_s);
    printf("batch p50  %.3f ms\n", p50);
    printf("batch p99  %.3f ms\n", p99);
    printf("load       %.1f ms\n", t_load);
  }
  rc = BD_EXIT_OK;
  goto out;
nomem:
  fprintf(stderr, "batchdet bench: out of memory\n");
out:
  free(in);
  for (int i = 0; i < 8; i++) free(outs[i]);
  free(lat);
  if (imgs)
    for (int b = 0; b < batch; b++) bd_image_free(&imgs[b]);
  free(imgs);
  free(ptrs);
  free(dets);
  bd_engine_destroy(e);
  return rc;
}
