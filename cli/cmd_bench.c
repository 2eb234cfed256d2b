/* batchdet bench: engine throughput and latency on a model. Random inputs with uint8
 * values (fresh every iteration, so no backend can cache or shortcut zeros); by default
 * only the network runs (raw API); --end-to-end times CPU pre-processing of random
 * images, the network and post-processing (detection API). On cuda (network only) it
 * also times the network alone on the device (CUDA events, no host copies: comparable
 * with peers timed on GPU-resident inputs) and the engine's device memory; --profile
 * adds the device time of every action of the network (cmd_bench_prof.c). --count
 * prints the model's MACs, weights and memory-traffic floor instead of running it.
 * Builds engine-only. A benchmark, not a test: it prints numbers and asserts nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_backend.h"
#include "bd_cli.h"
#include "bd_compile.h"
#include "bd_cost.h"
#include "bd_engine.h"
#include "bd_onnx.h"

#define BENCH_MAX_ITERS 100000

static void bench_usage(FILE *f) {
  fprintf(
      f,
      "usage: batchdet bench --model PATH [--device cpu|cuda|cuda:N] [--threads N] [--batch B]\n"
      "                      [--iters N] [--warmup W] [--end-to-end] [--image-size WxH]\n"
      "                      [--family auto|yolox|damoyolo] [--json]\n"
      "                      [--profile [--profile-top K]]   (cuda)\n"
      "       batchdet bench --model PATH --pool [--device cpu|cpu:N|cuda|cuda:0,2]\n"
      "                      [--instances-per-gpu N] [--batch B] [--iters N] [--warmup W] ...\n"
      "       batchdet bench --model PATH --count [--batch B] [--bw TB/s --tflops T] [--json]\n"
      "\n"
      "Times N batches of B random inputs (uint8 values, new every iteration) after W\n"
      "warm-up batches. Default: the network alone. --end-to-end adds the pre-processing\n"
      "of random WxH images (default 640x480) and post-processing (on the device for\n"
      "cuda, on the CPU for cpu); on cuda it then runs the same number of batches with\n"
      "two in flight (the host stages the next batch while the device runs one, as the\n"
      "worker does) and prints their throughput ('pipelined'). Prints ms/img, img/s\n"
      "and p50/p99 batch latency (host clock, host<->device copies included); on cuda\n"
      "also 'gpu' lines: the median device time of the network alone (CUDA events, one\n"
      "run per iteration on that iteration's input, no copies) and the device memory the\n"
      "engine added (peak of cudaMemGetInfo's used memory after each batch, minus the\n"
      "level before loading; includes cuDNN's handle and loaded kernels). --json prints\n"
      "one JSON object instead. On cpu a 'cpu convs' line (JSON cpu_convs) names what\n"
      "runs the convs: AVX-512 or AVX2 fused tiles, or im2col + OpenBLAS with the kernels\n"
      "OpenBLAS picked ('Prescott' on a modern CPU: it did not recognise it, SSE3 code).\n"
      "--profile (cuda, network only): then runs the network's actions (node steps,\n"
      "representation conversions, output copies) one at a time, each between CUDA\n"
      "events, --iters times after a warm-up, and prints the top K (--profile-top, default\n"
      "25, 0 = all) by median device time: node, op, output shape, how it runs (cudnn algo\n"
      "N [fused] [padded], mma, direct), us, %% of the sum, estimated bytes moved and conv\n"
      "GFLOP with the achieved GB/s and TFLOP/s; a summary by kind (convs by how they run,\n"
      "conversions, element-wise, concat, resize, maxpool, head/FP32 ops, output copies);\n"
      "and the sum of the medians against the whole network replayed as one CUDA graph.\n"
      "With --json every row and the summary go in the object's \"profile\" member.\n"
      "--pool: end to end through the device pool, as the worker runs, with the worker's\n"
      "device strings: cpu:N = N cpu instances of --threads threads, cuda = every GPU,\n"
      "cuda:0,2 the listed ones, --instances-per-gpu engines per GPU (implies --pool); two\n"
      "batches in flight per instance, the queue kept full; prints overall img/s and\n"
      "per-instance batches, images and img/s.\n"
      "--count: no run; per image MACs (Conv, MatMul), weights, minimum bytes, and the\n"
      "floor time of a batch of B on an H100 SXM (3.35 TB/s), an H200 (4.8 TB/s), both\n"
      "989 dense BF16 TFLOP/s, and at --bw/--tflops when given.\n"
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

void bd_bench_random_bytes(uint8_t *dst, size_t n, uint64_t *seed) {
  for (size_t k = 0; k < n; k += 8) { /* 8 bytes per generator step */
    uint64_t r = rng_next(seed);
    memcpy(dst + k, &r, n - k < 8 ? n - k : 8);
  }
}

void bd_bench_json_chars(const char *s) {
  for (const char *p = s; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    if ((unsigned char)*p >= 0x20) putchar(*p);
  }
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

/* "WxH", each 1..16384, and nothing after (10x10x10 is no size); nonzero when not. */
static int parse_size(const char *v, int *w, int *h) {
  int used = -1;
  return sscanf(v, "%dx%d%n", w, h, &used) != 2 || used != (int)strlen(v) || *w < 1 || *h < 1 ||
         *w > 16384 || *h > 16384;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
  char *end;
  long x = strtol(v, &end, 10);
  if (!*v || *end || x < lo || x > hi) return -1;
  *out = (int)x;
  return 0;
}

static int parse_pos(const char *v, double hi, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !(x > 0) || x > hi) return -1;
  *out = x;
  return 0;
}

/* --count: the model's arithmetic and memory-traffic floor (bd_cost), no run. */
static int bench_count(const char *model, int batch, double bw, double tflops, int json) {
  static const struct {
    const char *name;
    double tb_s, tflops;
  } hw[] = {{"H100 SXM", 3.35, 989.0}, {"H200", 4.8, 989.0}};
  int rc = BD_EXIT_FAIL;
  bd_graph *g = NULL;
  bd_plan *p1 = NULL, *pb = NULL;
  bd_cost c1, cb;
  bd_err err;
  bd_err_clear(&err);
  /* the model's own arithmetic: its upsampled Concat pieces not split (bd_compile_opts) */
  const bd_compile_opts co = {.keep_upsampled = 1};
  if (bd_onnx_load_file(model, &g, &err) != BD_OK || bd_compile(g, &co, NULL, &err) != BD_OK ||
      bd_plan_new(g, 1, &p1, &err) != BD_OK || bd_plan_new(g, batch, &pb, &err) != BD_OK ||
      bd_cost_of(g, p1, &c1, &err) != BD_OK || bd_cost_of(g, pb, &cb, &err) != BD_OK) {
    fprintf(stderr, "batchdet bench --count: %s\n", err.msg);
    goto out;
  }
  const double G = 1e9, MB = 1e6;
  if (json) {
    printf(
        "{\"batch\":%d,\"conv_macs\":%.0f,\"conv_grouped_macs\":%.0f,\"matmul_macs\":%.0f,"
        "\"n_conv\":%d,\"n_conv_grouped\":%d,\"n_matmul\":%d,\"weight_values\":%.0f,"
        "\"weight_bytes\":%.0f,\"other_const_bytes\":%.0f,\"in_bytes\":%.0f,"
        "\"out_bytes\":%.0f,\"act_min_bytes\":%.0f,\"act_graph_bytes\":%.0f,"
        "\"min_bytes_batch\":%.0f,",
        batch, c1.conv_macs, c1.conv_grouped_macs, c1.matmul_macs, c1.n_conv, c1.n_conv_grouped,
        c1.n_matmul, c1.weight_values, c1.weight_bytes, c1.other_const_bytes, c1.in_bytes,
        c1.out_bytes, c1.act_min_bytes, c1.act_graph_bytes, bd_cost_min_bytes(&cb));
  } else {
    printf("model       %s (per image unless a batch is named)\n", model);
    printf(
        "MACs        %.4f G conv (%d convs; %.4f G in %d grouped/depthwise) + %.4f G matmul "
        "(%d) = %.4f GFLOPs (2 x MACs)\n",
        c1.conv_macs / G, c1.n_conv, c1.conv_grouped_macs / G, c1.n_conv_grouped,
        c1.matmul_macs / G, c1.n_matmul, 2 * (c1.conv_macs + c1.matmul_macs) / G);
    printf("weights     %.0f values = %.3f MB at 16 bit (+ %.3f MB other fp32 constants)\n",
           c1.weight_values, c1.weight_bytes / MB, c1.other_const_bytes / MB);
    printf(
        "min bytes   %.3f MB = input u8 %.3f + conv outputs 16-bit write+read %.3f + "
        "outputs fp32 %.3f (weights once per batch on top)\n",
        (c1.in_bytes + c1.act_min_bytes + c1.out_bytes) / MB, c1.in_bytes / MB,
        c1.act_min_bytes / MB, c1.out_bytes / MB);
    printf(
        "layer-wise  %.3f MB: every compiled node output written once, read once per "
        "consumer, 16-bit\n",
        c1.act_graph_bytes / MB);
  }
  /* What a cuda instance holds at this batch (host-side plan, no GPU), and for reference
   * bd_plan's FP32-sized arena (one per plan before the cuda backend sized its own). */
  bd_engine_plan_mem pm;
  /* Device detection staging: one for both slots, pixels up to 2x the input, u8. */
  double stage = 2.0 * cb.in_bytes;
  bd_err merr;
  bd_err_clear(&merr);
  int have_mem = bd_engine_cuda_plan_memory(g, pb, &pm, &merr) == BD_OK;
  size_t wb = pm.weights, ab = pm.arena;
  if (json)
    printf("\"cuda_mem\":{\"batch\":%d,\"weights\":%zu,\"arena\":%zu,"
           "\"staging\":%.0f,\"plan_fp32_arena\":%zu,\"concat_inputs\":%d,"
           "\"concat_in_place\":%d},\"floor\":[",
           batch, wb, ab, stage, pb->arena_bytes, pm.concat_inputs, pm.concat_in_place);
  else if (have_mem)
    printf("cuda mem    b%d per instance: weights %.1f MB + arena %.1f MB (fp32 input and "
           "outputs included) = %.1f MB (+ detection staging %.1f MB, + cuDNN workspace); "
           "bd_plan's fp32 arena %.1f MB; %d of %d Concat inputs written in place\n",
           batch, wb / MB, ab / MB, (wb + ab) / MB, stage / MB, pb->arena_bytes / MB,
           pm.concat_in_place, pm.concat_inputs);
  else
    printf("cuda mem    not computed: %s\n", merr.msg);
  int n_hw = (int)(sizeof hw / sizeof *hw);
  for (int i = 0; i < n_hw + (bw > 0 || tflops > 0); i++) {
    const char *name = i < n_hw ? hw[i].name : "given";
    double b = i < n_hw ? hw[i].tb_s : bw, f = i < n_hw ? hw[i].tflops : tflops;
    double mem, math, fl = bd_cost_floor_ms(&cb, b, f, &mem, &math);
    if (json)
      printf(
          "%s{\"hw\":\"%s\",\"tb_s\":%g,\"tflops\":%g,\"mem_ms\":%.5f,\"math_ms\":%.5f,"
          "\"floor_ms\":%.5f,\"img_s\":%.1f}",
          i ? "," : "", name, b, f, mem, math, fl, fl > 0 ? batch * 1e3 / fl : 0.0);
    else
      printf(
          "floor b%-3d  %-8s (%g TB/s, %g TFLOP/s): bytes %.3f ms, math %.3f ms -> %.3f ms "
          "per batch, %.0f img/s\n",
          batch, name, b, f, mem, math, fl, fl > 0 ? batch * 1e3 / fl : 0.0);
  }
  if (json) printf("]}\n");
  rc = BD_EXIT_OK;
out:
  bd_plan_destroy(pb);
  bd_plan_destroy(p1);
  bd_graph_destroy(g);
  return rc;
}
/* One batch of iw x ih images (pixels not set), their pointers and detections; 0, or -1
 * when out of memory (what was allocated is left for image_set_free). */
static int image_set(int batch, int iw, int ih, bd_image **imgs, const bd_image ***ptrs,
                     bd_detections **dets) {
  *imgs = calloc((size_t)batch, sizeof **imgs);
  *ptrs = calloc((size_t)batch, sizeof **ptrs);
  *dets = calloc((size_t)batch, sizeof **dets);
  if (!*imgs || !*ptrs || !*dets) return -1;
  for (int b = 0; b < batch; b++) {
    (*imgs)[b].w = iw;
    (*imgs)[b].h = ih;
    if (!((*imgs)[b].data = malloc((size_t)iw * ih * 3))) return -1;
    (*ptrs)[b] = &(*imgs)[b];
  }
  return 0;
}

static void image_set_free(int batch, bd_image *imgs, const bd_image **ptrs,
                           bd_detections *dets) {
  if (imgs)
    for (int b = 0; b < batch; b++) bd_image_free(&imgs[b]);
  free(imgs);
  free(ptrs);
  free(dets);
}

/* --end-to-end on cuda, second pass: `iters` batches with BD_ENGINE_MAX_INFLIGHT begun
 * before the oldest is ended (bd_engine_detect_begin/_end), as the worker drives an
 * engine, so that the host's staging of the next batch overlaps the device's run of the
 * previous one. The batches alternate between two pre-generated image sets (each in use
 * until its batch ends). *ms: wall time of the whole pass after one warm-up round. */
/* Ends *ticket's batch (none: BD_OK) and frees its detections; *ticket = -1. */
static bd_status end_batch(bd_engine *e, int *ticket, bd_detections *dets, int batch,
                           bd_err *err) {
  if (*ticket < 0) return BD_OK;
  bd_status st = bd_engine_detect_end(e, *ticket, err);
  *ticket = -1;
  for (int b = 0; b < batch; b++) bd_detections_free(&dets[b]);
  return st;
}

static bd_status e2e_pipelined(bd_engine *e, int batch, int iters, const bd_image **sets[2],
                               bd_detections *dets[2], double *ms, bd_err *err) {
  int ticket[2] = {-1, -1};
  bd_status st = BD_OK;
  double t0 = 0;
  for (int it = -2; it < iters && st == BD_OK; it++) {
    const int k = it & 1;
    if (it == 0) { /* warm-up round done: drain it, then time */
      for (int j = 0; j < 2 && st == BD_OK; j++) st = end_batch(e, &ticket[j], dets[j], batch, err);
      t0 = now_ms();
      if (st != BD_OK) break;
    }
    if ((st = end_batch(e, &ticket[k], dets[k], batch, err)) != BD_OK) break;
    st = bd_engine_detect_begin(e, batch, sets[k], NULL, dets[k], NULL, &ticket[k], err);
  }
  for (int j = 0; j < 2; j++) { /* the last two, oldest first (also after an error) */
    const int k = (iters + j) & 1;
    bd_err e2 = {0};
    bd_status s2 = end_batch(e, &ticket[k], dets[k], batch, st == BD_OK ? err : &e2);
    if (st == BD_OK) st = s2;
  }
  *ms = now_ms() - t0;
  return st;
}


int bd_cmd_bench(int argc, char **argv) {
  const char *model = NULL, *device = "cpu";
  int threads = 0, batch = 1, iters = 20, warmup = 3, json = 0, e2e = 0, iw = 640, ih = 480;
  int count = 0, pool = 0, per_device = 1, profile = 0, prof_top = 25;
  double bw = 0, tflops = 0;
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
    if (!strcmp(a, "--count")) {
      count = 1;
      continue;
    }
    if (!strcmp(a, "--pool")) {
      pool = 1;
      continue;
    }
    if (!strcmp(a, "--profile")) {
      profile = 1;
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
    else if (!strcmp(a, "--bw"))
      bad = parse_pos(v, 1e3, &bw);
    else if (!strcmp(a, "--tflops"))
      bad = parse_pos(v, 1e6, &tflops);
    else if (!strcmp(a, "--family"))
      bad = bd_family_parse(v, &family);
    else if (!strcmp(a, "--profile-top"))
      bad = parse_int(v, 0, 1000000, &prof_top), profile = 1;
    else if (!strcmp(a, "--instances-per-gpu"))
      bad = parse_int(v, 1, 16, &per_device), pool = 1;
    else if (!strcmp(a, "--image-size"))
      bad = parse_size(v, &iw, &ih);
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
  if (profile && (count || pool || e2e)) {
    fprintf(stderr, "batchdet bench: --profile times the network alone: not with %s\n",
            count ? "--count" : pool ? "--pool" : "--end-to-end");
    return BD_EXIT_USAGE;
  }
  if (count) return bench_count(model, batch, bw, tflops, json);
  if (pool) {
    bd_bench_pool_args pa = {model, device, per_device, threads, batch, iters, warmup,
                             iw,    ih,     json,       family};
    return bd_bench_pool(&pa);
  }
  int is_cuda, idx;
  if (bd_engine_parse_device(device, &is_cuda, &idx)) {
    fprintf(stderr, "batchdet bench: unknown device '%s'\n", device);
    return BD_EXIT_USAGE;
  }
  if (profile && !is_cuda) {
    fprintf(stderr,
            "batchdet bench: --profile needs a cuda device (--device cuda or cuda:N): the "
            "per-action times are CUDA events; '%s' has none\n",
            device);
    return BD_EXIT_USAGE;
  }

  int rc = BD_EXIT_FAIL;
  bd_engine *e = NULL;
  float *in = NULL;
  float *outs[8] = {0};
  double *lat = NULL, *glat = NULL;
  bd_prof_row *prof = NULL;
  int n_prof = 0;
  /* Device-side figures (cuda, network only): -1 until known / when unavailable. */
  int gpu_time = is_cuda && !e2e;
  double mem0 = -1, mem_peak = -1;
  bd_image *imgs = NULL, *imgs2 = NULL;
  const bd_image **ptrs = NULL, **ptrs2 = NULL;
  bd_detections *dets = NULL, *dets2 = NULL;
  double pipe_img_s = -1; /* --end-to-end on cuda: the pass with two batches in flight */
  bd_err err;
  bd_err_clear(&err);
  /* Network only: no device detection buffers (staging), so that the memory figure is the
   * network's, like the peers'. */
  bd_engine_opts o = {.device = device, .threads = threads, .max_batch = batch, .family = family,
                      .host_prepost = !e2e};
  size_t used = 0;
  if (is_cuda && bd_engine_device_mem_used(device, &used, NULL) == BD_OK) mem0 = (double)used;
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
  glat = calloc((size_t)iters, sizeof *glat);
  if (!lat || !glat) goto nomem;
  if (!e2e) {
    if (!(in = malloc((size_t)batch * row * sizeof *in))) goto nomem;
    for (int i = 0; i < nout; i++)
      if (!(outs[i] = malloc((size_t)batch * bd_engine_output_row_numel(e, i) * sizeof(float))))
        goto nomem;
  } else {
    if (image_set(batch, iw, ih, &imgs, &ptrs, &dets)) goto nomem;
    /* the second image set of the pipelined pass */
    if (is_cuda && image_set(batch, iw, ih, &imgs2, &ptrs2, &dets2)) goto nomem;
  }
  for (int it = -warmup; it < iters; it++) {
    /* Fresh uint8-valued data every iteration, generated outside the timed region. */
    if (!e2e) {
      /* 8 byte-values per generator step: at batch 64 x 640x640 that is 10 M steps per
       * iteration instead of 79 M (seconds of a short device session). */
      size_t n = (size_t)batch * row;
      for (size_t k = 0; k < n; k += 8) {
        uint64_t r = rng_next(&seed);
        for (size_t j = 0; j < 8 && k + j < n; j++) in[k + j] = (float)((r >> (8 * j)) & 255);
      }
    } else {
      for (int b = 0; b < batch; b++) bd_bench_random_bytes(imgs[b].data, (size_t)iw * ih * 3, &seed);
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
    if (gpu_time) {
      double gms = 0;
      st = bd_engine_time_device(e, batch, 1, &gms, &err);
      if (st == BD_E_UNSUPPORTED) {
        gpu_time = 0;
      } else if (st != BD_OK) {
        fprintf(stderr, "batchdet bench: %s\n", err.msg);
        goto out;
      } else if (it >= 0) {
        glat[it] = gms;
      }
    }
    if (mem0 >= 0 && bd_engine_device_mem_used(device, &used, NULL) == BD_OK &&
        (double)used > mem_peak)
      mem_peak = (double)used;
  }
  double total = 0;
  for (int i = 0; i < iters; i++) total += lat[i];
  qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
  double ms_img = total / iters / batch, img_s = 1000.0 / ms_img;
  double p50 = pct(lat, iters, 50), p99 = pct(lat, iters, 99);
  double gp50 = -1, gmin = -1, mem_mib = -1;
  if (gpu_time) {
    qsort(glat, (size_t)iters, sizeof *glat, cmp_double);
    gp50 = pct(glat, iters, 50);
    gmin = glat[0];
  }
  if (mem0 >= 0 && mem_peak >= mem0) mem_mib = (mem_peak - mem0) / 1048576.0;
  if (e2e && is_cuda) {
    /* Set 1: the last timed batch's images; set 2: fresh ones. */
    for (int b = 0; b < batch; b++) bd_bench_random_bytes(imgs2[b].data, (size_t)iw * ih * 3, &seed);
    const bd_image **sets[2] = {ptrs, ptrs2};
    bd_detections *dsets[2] = {dets, dets2};
    double pms = 0;
    if (e2e_pipelined(e, batch, iters, sets, dsets, &pms, &err) != BD_OK) {
      fprintf(stderr, "batchdet bench: pipelined pass: %s\n", err.msg);
      goto out;
    }
    if (pms > 0) pipe_img_s = (double)iters * batch * 1000.0 / pms;
  }
  /* After the timed iterations (the plan is prepared, its input uploaded): the same
   * network, one action at a time. */
  if (profile && bd_engine_profile_device(e, batch, iters, &prof, &n_prof, &err) != BD_OK) {
    fprintf(stderr, "batchdet bench: %s\n", err.msg);
    goto out;
  }
  bd_bench_prof_args pa = {prof, n_prof, batch, iters, prof_top, json, gp50};
  const char *gerr = is_cuda ? bd_engine_graph_status(e, batch, e2e) : NULL;
  const char *fam = bd_family_name(bd_engine_family(e)->family);
  if (json) {
    printf("{\"model\":\"");
    bd_bench_json_chars(model);
    printf(
        "\",\"device\":\"%s\",\"threads\":%d,\"batch\":%d,\"iters\":%d,\"warmup\":%d,"
        "\"mode\":\"%s\",\"family\":\"%s\",\"ms_per_image\":%.4f,\"img_s\":%.3f,"
        "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"min_ms\":%.4f,\"load_ms\":%.1f",
        bd_engine_device(e), threads, batch, iters, warmup, e2e ? "end-to-end" : "network", fam,
        ms_img, img_s, p50, p99, lat[0], t_load);
    if (!is_cuda) {
      printf(",\"cpu_convs\":\"");
      bd_bench_json_chars(bd_cpu_conv_kernels());
      printf("\"");
    }
    /* Device-side fields: null where not measured (cpu, end-to-end, no CUDA). */
    if (gp50 > 0)
      printf(",\"gpu_p50_ms\":%.4f,\"gpu_min_ms\":%.4f,\"gpu_img_s\":%.3f", gp50, gmin,
             batch * 1000.0 / gp50);
    else
      printf(",\"gpu_p50_ms\":null,\"gpu_min_ms\":null,\"gpu_img_s\":null");
    if (pipe_img_s > 0)
      printf(",\"pipelined_img_s\":%.3f,\"inflight\":%d", pipe_img_s, BD_ENGINE_MAX_INFLIGHT);
    if (mem_mib >= 0)
      printf(",\"dev_mem_mib\":%.1f,\"dev_mem_base_mib\":%.1f", mem_mib, mem0 / 1048576.0);
    else
      printf(",\"dev_mem_mib\":null,\"dev_mem_base_mib\":null");
    if (is_cuda) {
      printf(",\"graph_captured\":%s,\"graph_error\":\"", gerr ? "false" : "true");
      bd_bench_json_chars(gerr ? gerr : "");
      const char *shape = bd_engine_graph_shape(e, batch);
      printf("\",\"graph_shape\":\"");
      bd_bench_json_chars(shape ? shape : "");
      printf("\"");
    }
    if (profile && bd_bench_prof_print(&pa) != BD_EXIT_OK) goto out;
    printf("}\n");
  } else {
    printf("model      %s (%s)\n", model, fam);
    printf("device     %s, threads %d, batch %d, %d iters after %d warm-up (%s)\n",
           bd_engine_device(e), threads, batch, iters, warmup,
           e2e ? "end-to-end: pre + network + post" : "network only");
    if (!is_cuda) printf("cpu convs  %s\n", bd_cpu_conv_kernels());
    printf("ms/img     %.3f\n", ms_img);
    printf("img/s      %.2f\n", img_s);
    printf("batch p50  %.3f ms\n", p50);
    printf("batch p99  %.3f ms\n", p99);
    printf("load       %.1f ms\n", t_load);
    if (gp50 > 0) {
      printf("gpu p50    %.3f ms per batch (network alone: CUDA events, no host copies)\n", gp50);
      printf("gpu img/s  %.2f\n", batch * 1000.0 / gp50);
    }
    if (pipe_img_s > 0)
      printf("pipelined  %.2f img/s (%d batches, %d in flight: the host stages the next batch "
             "while the device runs one)\n",
             pipe_img_s, iters, BD_ENGINE_MAX_INFLIGHT);
    if (mem_mib >= 0)
      printf("gpu mem    %.1f MiB added by the engine (peak after a batch)\n", mem_mib);
    if (is_cuda) {
      if (gerr)
        printf("graph      NOT captured, runs op by op on the stream: %s\n", gerr);
      else
        printf("graph      captured: each batch is one CUDA graph replay\n");
      const char *shape = bd_engine_graph_shape(e, batch);
      if (shape) printf("branches   %s\n", shape);
    }
    if (profile && bd_bench_prof_print(&pa) != BD_EXIT_OK) goto out;
  }
  rc = BD_EXIT_OK;
  goto out;
nomem:
  fprintf(stderr, "batchdet bench: out of memory\n");
out:
  free(in);
  for (int i = 0; i < 8; i++) free(outs[i]);
  free(lat);
  free(glat);
  free(prof);
  image_set_free(batch, imgs, ptrs, dets);
  image_set_free(batch, imgs2, ptrs2, dets2);
  bd_engine_destroy(e);
  return rc;
}
