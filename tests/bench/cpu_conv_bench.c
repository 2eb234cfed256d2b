/* Micro-benchmark of the cpu backend's conv paths on YOLOX-nano-like layers (416 input).
 * Prints a table: ms per layer and GFLOP/s at 1 and 2 threads; with OpenBLAS it also
 * times the alternative parallelisation (one GEMM per image with BLAS threads) on the
 * pointwise layers. Usage: cpu_conv_bench [reps [layer-substring]]. Numbers only. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_backend.h"
#include "bd_graph.h"
#include "cpu_internal.h"

#ifdef BD_HAVE_BLAS
#include <cblas.h>
#endif

typedef struct {
  const char *name;
  int C, H, W, M, k, s, group;
} layer;

__attribute__((unused)) static const layer layers[] = {
    {"stem 3x3 12->16 @208", 12, 208, 208, 16, 3, 1, 1},
    {"dw 3x3 s2 16 @208", 16, 208, 208, 16, 3, 2, 16},
    {"pw 16->32 @104", 16, 104, 104, 32, 1, 1, 1},
    {"dw 3x3 32 @104", 32, 104, 104, 32, 3, 1, 32},
    {"pw 32->32 @104", 32, 104, 104, 32, 1, 1, 1},
    {"dw 3x3 s2 64 @104", 64, 104, 104, 64, 3, 2, 64},
    {"pw 64->64 @52", 64, 52, 52, 64, 1, 1, 1},
    {"dw 3x3 64 @52", 64, 52, 52, 64, 3, 1, 64},
    {"dw 5x5 64 @52", 64, 52, 52, 64, 5, 1, 64},
    {"pw 128->128 @26", 128, 26, 26, 128, 1, 1, 1},
    {"pw 512->256 @13", 512, 13, 13, 256, 1, 1, 1},
    {"3x3 64->64 @52", 64, 52, 52, 64, 3, 1, 1},
    {"3x3 128->128 @26", 128, 26, 26, 128, 3, 1, 1},
    /* DAMO-YOLO-T at 640: the layers with the most FLOPs (dense 3x3, the neck's 1x1) */
    {"damoT 3x3 152->192 @40", 152, 40, 40, 192, 3, 1, 1},
    {"damoT 3x3 192->192 @20", 192, 20, 20, 192, 3, 1, 1},
    {"damoT 3x3 96->96 @40", 96, 40, 40, 96, 3, 1, 1},
    {"damoT 3x3 s2 24->64 @320", 24, 320, 320, 64, 3, 2, 1},
    {"damoT 3x3 24->64 @160", 24, 160, 160, 64, 3, 1, 1},
    {"damoT 3x3 32->32 @80", 32, 80, 80, 32, 3, 1, 1},
    {"damoT 3x3 64->80 @80", 64, 80, 80, 80, 3, 1, 1},
    {"damoT 3x3 12->24 @320", 12, 320, 320, 24, 3, 1, 1},
    {"damoT 1x1 768->384 @20", 768, 20, 20, 384, 1, 1, 1},
    {"damoT 1x1 672->96 @40", 672, 40, 40, 96, 1, 1, 1},
    {"damoT 1x1 64->64 @160", 64, 160, 160, 64, 1, 1, 1},
    /* DAMO-YOLO-S at 320: small planes, deep K */
    {"damoS 3x3 s2 256->256 @20", 256, 20, 20, 256, 3, 2, 1},
    {"damoS 3x3 192->256 @10", 192, 10, 10, 256, 3, 1, 1},
    {"damoS 3x3 128->80 @40", 128, 40, 40, 80, 3, 1, 1},
    {"damoS 3x3 88->128 @40", 88, 40, 40, 128, 3, 1, 1},
    {"damoS 3x3 s2 144->512 @20", 144, 20, 20, 512, 3, 2, 1},
    {"damoS 1x1 1024->512 @10", 1024, 10, 10, 512, 1, 1, 1},
    {"damoS 1x1 256->128 @10", 256, 10, 10, 128, 1, 1, 1},
    /* planes of 1024 floats: one L1 set for a channel-vector block's 16 channels */
    {"plane1024 3x3 256->256 @32", 256, 32, 32, 256, 3, 1, 1},
    {"plane1024 1x1 512->256 @32", 512, 32, 32, 256, 1, 1, 1},
};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Process CPU time: on a shared machine, at 1 thread this is the compute time without
 * the waits for a core. */
__attribute__((unused)) static double cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The minimum, not the median: the 2-core dev machines are shared, and the minimum is
 * the run least disturbed by other processes. */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return v[0];
}

__attribute__((unused)) static int64_t tu_numel_plan(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int i = 0; i < p->rank[v]; i++) n *= p->dims[v][i];
  return n;
}

__attribute__((unused)) static float *randv(size_t n) {
  float *v = malloc(n * sizeof *v);
  if (!v) exit(1);
  for (size_t i = 0; i < n; i++) v[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  return v;
}

#ifdef BD_BENCH_MODEL
#include "bd_compile.h"
#include "bd_onnx.h"

/* cpu_model_bench MODEL.onnx [threads [batch [reps]]]: whole-network time through
 * import + compile + plan + cpu backend, with a per-op breakdown. */
int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.onnx [threads [batch [reps]]]\n", argv[0]);
    return 2;
  }
  int threads = argc > 2 ? atoi(argv[2]) : 2, batch = argc > 3 ? atoi(argv[3]) : 1;
  int reps = argc > 4 ? atoi(argv[4]) : 20;
  if (reps < 1 || reps > 10000) reps = 20;
  bd_err err;
  bd_graph *g = NULL;
  bd_plan *p = NULL;
  bd_backend *be = NULL;
  bd_compile_report rep;
  /* BD_BENCH_CV=0|1|2: the channel-vector tile where it computes less, never, always */
  int cv = getenv("BD_BENCH_CV") ? atoi(getenv("BD_BENCH_CV")) : BD_CPU_CV_AUTO;
  if (bd_onnx_load_file(argv[1], &g, &err) != BD_OK || bd_compile(g, NULL, &rep, &err) != BD_OK ||
      bd_plan_new(g, batch, &p, &err) != BD_OK ||
      bd_cpu_backend_new(g, threads, &be, &err) != BD_OK ||
      (bd_cpu_backend_set_channel_tiles(be, cv), bd_backend_prepare(be, p, &err)) != BD_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  /* BD_BENCH_BLAS_THREADS=1: pointwise convs as one BLAS-threaded GEMM per image */
  if (getenv("BD_BENCH_BLAS_THREADS")) bd_cpu_backend_set_blas_threads_mode(be, atoi(getenv("BD_BENCH_BLAS_THREADS")));
  if (getenv("BD_BENCH_FUSED")) bd_cpu_backend_set_fused_tiles(be, atoi(getenv("BD_BENCH_FUSED")));
  int in = g->inputs[0];
  size_t nin = (size_t)tu_numel_plan(p, in);
  float *x = malloc(nin * sizeof *x);
  for (size_t i = 0; i < nin; i++) x[i] = (float)((i * 2654435761u) % 256);
  float *outs[8];
  for (int i = 0; i < g->n_outputs; i++) outs[i] = malloc((size_t)tu_numel_plan(p, g->outputs[i]) * sizeof(float));
  const float *ins[1] = {x};
  double flop = 0, path_flop[3] = {0};
  int path_n[3] = {0};
  for (int s = 0; s < p->n_steps; s++) {
    const bd_node *n = &g->nodes[p->steps[s]];
    if (n->op != BD_OP_CONV) continue;
    const int64_t *wd = p->dims[n->in[1]], *yd = p->dims[n->out[0]];
    double f = 2.0 * yd[0] * yd[1] * yd[2] * yd[3] * wd[1] * wd[2] * wd[3];
    int path = bd_cpu_conv_path(g, p, n);
    flop += f;
    path_flop[path] += f;
    path_n[path]++;
  }
  if (bd_backend_run(be, p, ins, outs, &err) != BD_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const char *dump = getenv("BD_BENCH_DUMP"); /* PREFIX: write PREFIX.in.f32, PREFIX.<i>.f32 */
  if (dump) {
    char path[4096];
    snprintf(path, sizeof path, "%s.in.f32", dump);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(x, sizeof(float), nin, f);
      fclose(f);
    }
    for (int i = 0; i < g->n_outputs; i++) {
      snprintf(path, sizeof path, "%s.%d.f32", dump, i);
      f = fopen(path, "wb");
      if (f) {
        fwrite(outs[i], sizeof(float), (size_t)tu_numel_plan(p, g->outputs[i]), f);
        fclose(f);
      }
    }
  }
  double t[10000], cpu[10000];
  for (int r = 0; r < reps; r++) {
    double t0 = now_ms(), c0 = cpu_ms();
    bd_backend_run(be, p, ins, outs, &err);
    t[r] = now_ms() - t0;
    cpu[r] = cpu_ms() - c0;
  }
  double best = median(t, reps), med = t[reps / 2], cbest = median(cpu, reps);
  double prof[BD_OP__COUNT + 3] = {0};
  double *sprof = calloc((size_t)p->n_steps, sizeof *sprof);
  bd_cpu_backend_set_profile(be, prof);
  bd_cpu_backend_set_step_profile(be, sprof);
  for (int r = 0; r < reps; r++) bd_backend_run(be, p, ins, outs, &err);
  printf("%s: batch %d, %d threads, %d steps, conv %.2f GFLOP: min %.2f ms, median %.2f ms "
         "(%.1f GFLOP/s conv at min), %.2f ms/image; process CPU time min %.2f ms\n", argv[1],
         batch, threads, p->n_steps, flop / 1e9, best, med, flop / best / 1e6, best / batch, cbest);
  const char *conv_names[3] = {"Conv general (im2col+GEMM)", "Conv pointwise (GEMM)", "Conv depthwise (direct)"};
  printf("  per op, process CPU ms per run:\n");
  for (int i = 0; i < BD_OP__COUNT + 3; i++) {
    if (prof[i] <= 0) continue;
    if (i >= BD_OP__COUNT)
      printf("  %-28s %8.3f ms  %3d layers %7.1f MFLOP %6.1f GFLOP/s\n", conv_names[i - BD_OP__COUNT],
             prof[i] / reps, path_n[i - BD_OP__COUNT], path_flop[i - BD_OP__COUNT] / 1e6,
             path_flop[i - BD_OP__COUNT] / (prof[i] / reps) / 1e6);
    else
      printf("  %-28s %8.3f ms\n", bd_op_name((bd_op)i), prof[i] / reps);
  }
  /* BD_BENCH_TOP=N: the N steps with the most time, with their shapes */
  int top = getenv("BD_BENCH_TOP") ? atoi(getenv("BD_BENCH_TOP")) : 0;
  if (top > 0 && sprof) printf("  top steps, process CPU ms per run:\n");
  for (int k = 0; k < top && sprof; k++) {
    int b = -1;
    for (int s = 0; s < p->n_steps; s++)
      if (sprof[s] >= 0 && (b < 0 || sprof[s] > sprof[b])) b = s;
    if (b < 0) break;
    const bd_node *n = &g->nodes[p->steps[b]];
    double ms = sprof[b] / reps;
    sprof[b] = -1;
    if (n->op != BD_OP_CONV) {
      printf("  %8.3f ms  %s\n", ms, bd_op_name(n->op));
      continue;
    }
    const int64_t *xd = p->dims[n->in[0]], *wd = p->dims[n->in[1]], *yd = p->dims[n->out[0]];
    double f = 2.0 * yd[0] * yd[1] * yd[2] * yd[3] * wd[1] * wd[2] * wd[3];
    printf("  %8.3f ms  conv %lldx%lld s%d g%d %4lld->%-4lld @%lldx%lld path %d %6.1f GFLOP/s\n",
           ms, (long long)wd[2], (long long)wd[3], n->p.conv.sh, n->p.conv.group, (long long)xd[1],
           (long long)yd[1], (long long)xd[2], (long long)xd[3], bd_cpu_conv_path(g, p, n),
           f / ms / 1e6);
  }
  free(sprof);
  for (int i = 0; i < g->n_outputs; i++) free(outs[i]);
  free(x);
  bd_backend_destroy(be);
  bd_plan_destroy(p);
  bd_graph_destroy(g);
  return 0;
}
#else
int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 20;
  if (reps < 1 || reps > 10000) reps = 20;
  printf("%-24s %8s %8s %8s %8s %8s\n", "layer", "MFLOP", "ms@1", "GF/s@1", "ms@2", "GF/s@2");
  for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
    const layer *L = &layers[li];
    if (argc > 2 && !strstr(L->name, argv[2])) continue;
    int pad = L->k / 2;
    int OH = (L->H + 2 * pad - L->k) / L->s + 1, OW = (L->W + 2 * pad - L->k) / L->s + 1;
    int64_t xd[4] = {1, L->C, L->H, L->W}, wd[4] = {L->M, L->C / L->group, L->k, L->k};
    int64_t yd[4] = {1, L->M, OH, OW}, bd[1] = {L->M};
    double flop = 2.0 * L->M * OH * OW * (double)(L->C / L->group) * L->k * L->k;
    bd_graph *g = NULL;
    if (bd_graph_new(&g, NULL) != BD_OK) return 1;
    int xv = bd_graph_add_value(g, "x", BD_DT_F32, 4, xd);
    int wv = bd_graph_add_value(g, "w", BD_DT_F32, 4, wd);
    int bv = bd_graph_add_value(g, "b", BD_DT_F32, 1, bd);
    int yv = bd_graph_add_value(g, "y", BD_DT_F32, 4, yd);
    g->values[wv].data = randv((size_t)(L->M * (L->C / L->group) * L->k * L->k));
    g->values[bv].data = randv((size_t)L->M);
    g->values[xv].is_input = 1;
    g->inputs[g->n_inputs++] = xv;
    g->values[yv].is_output = 1;
    g->outputs[g->n_outputs++] = yv;
    int in[3] = {xv, wv, bv};
    int ni = bd_graph_add_node(g, BD_OP_CONV, "conv", 3, in, 1, &yv);
    g->nodes[ni].p.conv = (bd_conv_params){.kh = L->k, .kw = L->k, .sh = L->s, .sw = L->s,
                                           .dh = 1, .dw = 1, .pad_t = pad, .pad_l = pad,
                                           .pad_b = pad, .pad_r = pad, .group = L->group,
                                           .act = BD_ACT_SILU};
    bd_plan p = {0};
    int rank[4] = {4, 4, 1, 4};
    int64_t dims[4][BD_MAX_RANK];
    memcpy(dims[0], xd, sizeof xd);
    memcpy(dims[1], wd, sizeof wd);
    memcpy(dims[2], bd, sizeof bd);
    memcpy(dims[3], yd, sizeof yd);
    size_t off[4] = {SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX};
    int steps[1] = {0};
    p.batch = 1;
    p.n_values = 4;
    p.rank = rank;
    p.dims = dims;
    p.offset = off;
    p.n_steps = 1;
    p.steps = steps;
    float *x = randv((size_t)(L->C * L->H * L->W));
    float *y = malloc(sizeof(float) * (size_t)(L->M * OH * OW));
    double ms[2];
    for (int th = 1; th <= 2; th++) {
      bd_backend *be = NULL;
      bd_err err;
      if (bd_cpu_backend_new(g, th, &be, &err) != BD_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
      }
      if (getenv("BD_BENCH_CV")) bd_cpu_backend_set_channel_tiles(be, atoi(getenv("BD_BENCH_CV")));
      if (bd_backend_prepare(be, &p, &err) != BD_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
      }
      const float *ins[1] = {x};
      float *outs[1] = {y};
      double t[10000];
      bd_backend_run(be, &p, ins, outs, &err);
      for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        bd_backend_run(be, &p, ins, outs, &err);
        t[r] = now_ms() - t0;
      }
      ms[th - 1] = median(t, reps);
      bd_backend_destroy(be);
    }
    printf("%-24s %8.1f %8.3f %8.1f %8.3f %8.1f\n", L->name, flop / 1e6, ms[0],
           flop / ms[0] / 1e6, ms[1], flop / ms[1] / 1e6);
#ifdef BD_HAVE_BLAS
    if (L->k == 1) {
      /* alternative: one GEMM for the image, parallelised inside OpenBLAS */
      double t[10000];
      openblas_set_num_threads(2);
      for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->M, OH * OW, L->C, 1.f,
                    g->values[wv].data, L->C, x, OH * OW, 0.f, y, OH * OW);
        t[r] = now_ms() - t0;
      }
      double m2 = median(t, reps);
      openblas_set_num_threads(1);
      printf("%-24s %8s %8s %8s %8.3f %8.1f  (one sgemm, 2 BLAS threads, no epilogue)\n", "",
             "", "", "", m2, flop / m2 / 1e6);
    }
#endif
    free(x);
    free(y);
    bd_graph_destroy(g);
  }
  return 0;
}
#endif
