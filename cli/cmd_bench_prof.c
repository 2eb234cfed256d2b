/* batchdet bench --profile: prints the per-action device profile of one batch size
 * (bd_engine_profile_device: every node step, representation conversion and output copy
 * of the network timed alone between CUDA events) as a table sorted by time, a summary
 * per kind of work, and the sum of the per-action times against the whole network
 * replayed as one CUDA graph. Bytes and FLOPs are the backend's estimates (bd_prof.h).
 * Printing only: the numbers come from the engine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_graph.h"

#define PROF_NAME_COLS 36

/* How the action runs: conv algorithm, or the representation written. */
static void prof_how(const bd_prof_row *r, char *buf, size_t n) {
  if (r->kind == BD_PROF_CONVERT) {
    snprintf(buf, n, "%s", r->rep16 ? "to 16-bit NHWC" : "to FP32");
  } else if (r->kind == BD_PROF_OUTPUT) {
    snprintf(buf, n, "to FP32 output");
  } else if (r->kind == BD_PROF_ZERO) {
    snprintf(buf, n, "memset, channels padded");
  } else if (r->kind == BD_PROF_LAYOUT) {
    snprintf(buf, n, "input to 16-bit layout");
  } else if (r->upsampled_read) {
    snprintf(buf, n, "read upsampled by its convs");
  } else if (r->conv_algo == BD_PROF_NOT_CONV) {
    snprintf(buf, n, "%s", r->rep16 ? "16-bit NHWC" : "FP32");
  } else if (r->conv_twin == 2) {
    snprintf(buf, n, "in its twin's launch");
  } else {
    const char *pad = r->conv_twin     ? " twins"
                      : r->conv_padded ? " padded"
                      : r->conv_upres  ? " +upsampled"
                                       : "";
    if (r->conv_algo == BD_PROF_MMA)
      snprintf(buf, n, "mma%s%s%s", r->conv_tile ? " " : "", r->conv_tile ? r->conv_tile : "", pad);
    else if (r->conv_algo == BD_PROF_DIRECT)
      snprintf(buf, n, "direct%s", pad);
    else if (r->conv_algo == BD_PROF_GRAPH)
      snprintf(buf, n, "cudnn graph%s%s", r->conv_fused ? " fused" : "", pad);
    else
      snprintf(buf, n, "cudnn algo %d%s%s", r->conv_algo, r->conv_fused ? " fused" : "", pad);
  }
}

/* The summary group of a row: convs by how they run, then by kind of work. */
static void prof_category(const bd_prof_row *r, char *buf, size_t n) {
  char how[48];
  if (r->kind == BD_PROF_CONVERT || r->kind == BD_PROF_LAYOUT) {
    snprintf(buf, n, "conversions");
  } else if (r->kind == BD_PROF_OUTPUT) {
    snprintf(buf, n, "output copies");
  } else if (r->kind == BD_PROF_ZERO) {
    snprintf(buf, n, "zeroing");
  } else if (r->op == BD_OP_CONV) {
    prof_how(r, how, sizeof how);
    snprintf(buf, n, "conv %s", how);
  } else if (!r->rep16) {
    snprintf(buf, n, "head/FP32 ops");
  } else {
    snprintf(buf, n, "%s",
             r->op == BD_OP_CONCAT    ? "concat"
             : r->op == BD_OP_RESIZE  ? "resize"
             : r->op == BD_OP_MAXPOOL ? "maxpool"
                                      : "element-wise/map");
  }
}

static const char *prof_op(const bd_prof_row *r) {
  if (r->kind == BD_PROF_CONVERT) return "Convert";
  if (r->kind == BD_PROF_OUTPUT) return "Output";
  if (r->kind == BD_PROF_ZERO) return "Zero";
  if (r->kind == BD_PROF_LAYOUT) return "Layout";
  return bd_op_name((bd_op)r->op);
}

static void prof_shape(const bd_prof_row *r, char *buf, size_t n) {
  size_t at = 0;
  buf[0] = 0;
  for (int d = 0; d < r->rank && at < n; d++)
    at += (size_t)snprintf(buf + at, n - at, "%s%lld", d ? "x" : "", (long long)r->dims[d]);
  if (r->rank == 0) snprintf(buf, n, "scalar");
}

/* GB/s and TFLOP/s of `bytes` and `flops` in `ms`; 0 when no time was measured. */
static double gbs(double bytes, double ms) {
  return ms > 0 ? bytes / ms / 1e6 : 0;
}
static double tflops(double flops, double ms) {
  return ms > 0 ? flops / ms / 1e9 : 0;
}

typedef struct prof_group {
  char name[64];
  int count;
  double ms, bytes, flops;
} prof_group;

static const bd_prof_row *g_sort_rows; /* qsort has no context argument */
static int cmp_by_time(const void *a, const void *b) {
  const bd_prof_row *x = &g_sort_rows[*(const int *)a], *y = &g_sort_rows[*(const int *)b];
  if (x->ms_median != y->ms_median) return x->ms_median < y->ms_median ? 1 : -1;
  return (x->step > y->step) - (x->step < y->step);
}
static int cmp_group(const void *a, const void *b) {
  const prof_group *x = a, *y = b;
  if (x->ms != y->ms) return x->ms < y->ms ? 1 : -1;
  return strcmp(x->name, y->name);
}

int bd_bench_prof_print(const bd_bench_prof_args *a) {
  int n = a->n_rows, ng = 0, rc = BD_EXIT_FAIL;
  int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
  prof_group *grp = calloc((size_t)(n ? n : 1), sizeof *grp);
  double sum = 0, sum_replay = 0;
  char how[48], cat[64], shape[96];
  if (!order || !grp) {
    fprintf(stderr, "batchdet bench: out of memory\n");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    const bd_prof_row *r = &a->rows[i];
    order[i] = i;
    sum += r->ms_median;
    sum_replay += r->ms_replay;
    prof_category(r, cat, sizeof cat);
    int k = 0;
    while (k < ng && strcmp(grp[k].name, cat)) k++;
    if (k == ng) snprintf(grp[ng++].name, sizeof grp->name, "%s", cat);
    grp[k].count++;
    grp[k].ms += r->ms_median;
    grp[k].bytes += r->bytes;
    grp[k].flops += r->flops;
  }
  g_sort_rows = a->rows;
  qsort(order, (size_t)n, sizeof *order, cmp_by_time);
  qsort(grp, (size_t)ng, sizeof *grp, cmp_group);
  double pct_of = sum > 0 ? 100.0 / sum : 0;
  int top = a->top > 0 && a->top < n ? a->top : n;
  if (a->json) {
    printf(",\"profile\":{\"reps\":%d,\"n_actions\":%d,\"rows\":[", a->reps, n);
    for (int i = 0; i < n; i++) {
      const bd_prof_row *r = &a->rows[order[i]];
      prof_how(r, how, sizeof how);
      prof_category(r, cat, sizeof cat);
      printf("%s{\"step\":%d,\"node\":%d,\"name\":\"", i ? "," : "", r->step, r->node);
      bd_bench_json_chars(r->name);
      printf("\",\"op\":\"%s\",\"shape\":[", prof_op(r));
      for (int d = 0; d < r->rank; d++) printf("%s%lld", d ? "," : "", (long long)r->dims[d]);
      printf(
          "],\"how\":\"%s\",\"category\":\"%s\",\"conv_algo\":%d,\"us\":%.3f,\"us_min\":%.3f,"
          "\"us_replay\":%.3f,\"pct\":%.3f,\"bytes\":%.0f,\"gflop\":%.6f,\"gb_s\":%.2f,"
          "\"tflop_s\":%.4f}",
          how, cat, r->conv_algo, r->ms_median * 1e3, r->ms_min * 1e3, r->ms_replay * 1e3,
          r->ms_median * pct_of,
          r->bytes, r->flops / 1e9, gbs(r->bytes, r->ms_median), tflops(r->flops, r->ms_median));
    }
    printf("],\"summary\":[");
    for (int k = 0; k < ng; k++)
      printf(
          "%s{\"category\":\"%s\",\"count\":%d,\"us\":%.3f,\"pct\":%.3f,\"bytes\":%.0f,"
          "\"gflop\":%.6f,\"gb_s\":%.2f}",
          k ? "," : "", grp[k].name, grp[k].count, grp[k].ms * 1e3, grp[k].ms * pct_of,
          grp[k].bytes, grp[k].flops / 1e9, gbs(grp[k].bytes, grp[k].ms));
    printf("],\"sum_ms\":%.5f,\"sum_replay_ms\":%.5f", sum, sum_replay);
    if (a->graph_ms > 0)
      printf(",\"graph_ms\":%.5f,\"overhead_ms\":%.5f}", a->graph_ms, a->graph_ms - sum);
    else
      printf(",\"graph_ms\":null,\"overhead_ms\":null}");
    rc = BD_EXIT_OK;
    goto out;
  }
  printf(
      "\nprofile    batch %d: each of the %d actions alone between CUDA events (uncaptured), "
      "median of %d reps after 1 warm-up; replay: the action alone as a replayed graph runs "
      "it; top %d by time\n",
      a->batch, n, a->reps, top);
  printf("rank  step   us/run   replay      %%  %-*s %-10s %-16s %-22s %9s %8s %8s %7s\n",
         PROF_NAME_COLS, "node", "op", "output", "how", "MB", "GFLOP", "GB/s", "TFLOP/s");
  for (int i = 0; i < top; i++) {
    const bd_prof_row *r = &a->rows[order[i]];
    size_t len = strlen(r->name);
    /* the tail of an ONNX name says most (the layer), its head repeats the module */
    const char *name = len > PROF_NAME_COLS ? r->name + len - (PROF_NAME_COLS - 2) : r->name;
    prof_how(r, how, sizeof how);
    prof_shape(r, shape, sizeof shape);
    printf("%4d %5d %8.1f %8.1f %6.2f  %s%-*s %-10s %-16s %-22s %9.3f %8.3f %8.1f %7.2f\n",
           i + 1, r->step, r->ms_median * 1e3, r->ms_replay * 1e3, r->ms_median * pct_of,
           len > PROF_NAME_COLS ? ".." : "",
           len > PROF_NAME_COLS ? PROF_NAME_COLS - 2 : PROF_NAME_COLS, name, prof_op(r), shape, how,
           r->bytes / 1e6, r->flops / 1e9, gbs(r->bytes, r->ms_median),
           tflops(r->flops, r->ms_median));
  }
  printf("by kind                         count     us/run      %%        GB     GB/s  TFLOP/s\n");
  for (int k = 0; k < ng; k++)
    printf("kind %-27s %5d %10.1f %6.2f %9.4f %8.1f %8.2f\n", grp[k].name, grp[k].count,
           grp[k].ms * 1e3, grp[k].ms * pct_of, grp[k].bytes / 1e9, gbs(grp[k].bytes, grp[k].ms),
           tflops(grp[k].flops, grp[k].ms));
  printf("sum of medians %10.3f ms: the %d actions one by one\n", sum, n);
  printf("sum of replays %10.3f ms: the same, each action as a replayed graph (no host gaps)\n",
         sum_replay);
  if (a->graph_ms > 0) {
    double d = a->graph_ms - sum;
    printf(
        "graph replay   %10.3f ms: the whole network in one run, its CUDA graph replayed "
        "(gpu p50)\n",
        a->graph_ms);
    printf(
        "graph - sum    %10.3f ms: > 0: gaps and serialisation the replay keeps; < 0: "
        "launch overhead of single actions the replay removes\n",
        d > -5e-4 && d < 5e-4 ? 0.0 : d);
  }
  rc = BD_EXIT_OK;
out:
  free(order);
  free(grp);
  return rc;
}
