/* What the real cuDNN (this machine's library, no GPU needed: cuDNN 9.8 and later build
 * graphs, run heuristics and finalize plans for a GPU described by its properties) makes
 * of the convolution graphs bd_cuda_dnn_graph.c builds: the graphs the backend asked for
 * in a run over the emulated device (BATCHDET_CUDA_DNN_GRAPH_SHAPES), optionally scaled to
 * another input size and batch, surveyed for the GPU whose properties a JSON file holds.
 *
 *   test_cuda_dnn_survey --devprop FILE --shapes FILE [--from S --to T] [--batch N]
 *                        [--ws BYTES] [--require-graphs] [--require-model]
 *   test_cuda_dnn_survey --dump-devprop FILE     (on a GPU: device 0's properties)
 *
 * Prints a line per distinct graph, then a summary. --require-graphs: every graph's
 * operation graph must finalize (what the emulated cuDNN accepts, the real one must).
 * --require-model: every graph the emulated cuDNN (cuda_emu.c) gives an engine that is not
 * compiled at run time must keep a configuration bd_cuda_dnn_graph_new would time here
 * (not runtime-compiled, deterministic, a plan that finalizes within the workspace): the
 * emulation's tests assume it of the real library. Graphs that keep one the model does not
 * expect are counted (a newer cuDNN may offer more). Exit 77 where this cuDNN is older
 * than 9.8. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cuda_internal.h"
#include "cudnn_model.h"

#define MAX_SHAPES 4096
#define MAX_DIM (1 << 20) /* any one number of a shape line */

static void usage(void) {
  fprintf(stderr,
          "usage: test_cuda_dnn_survey --devprop FILE --shapes FILE [--from S --to T] "
          "[--batch N]\n"
          "                            [--ws BYTES] [--require-graphs] [--require-eligible "
          "PCT]\n"
          "       test_cuda_dnn_survey --dump-devprop FILE\n");
}

/* The whole of file path, NUL-terminated, at most max bytes; NULL (and a message) else. */
static char *read_text(const char *path, size_t max) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(max + 1);
  size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
  fclose(f);
  if (!buf || n > max) {
    fprintf(stderr, "%s: %s\n", path, buf ? "too long" : "out of memory");
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  return buf;
}

typedef struct shape {
  bd_cuda_conv_shape q;
  int fused;
} shape;

/* Parses one line of the shapes file (BD_CUDA_DNN_SHAPE_FIELDS numbers); 0 when malformed. */
static int parse_shape(const char *line, shape *s) {
  long v[BD_CUDA_DNN_SHAPE_FIELDS];
  const char *p = line;
  for (int i = 0; i < BD_CUDA_DNN_SHAPE_FIELDS; ++i) {
    char *end = NULL;
    errno = 0;
    v[i] = strtol(p, &end, 10);
    if (end == p || errno || v[i] < 0 || v[i] > MAX_DIM) return 0;
    p = end;
  }
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') ++p;
  if (*p) return 0;
  memset(s, 0, sizeof(*s));
  bd_cuda_conv_shape *q = &s->q;
  int *f[] = {&q->n,  &q->h,  &q->w,     &q->c,     &q->oh,    &q->ow,  &q->m,   &q->kh,
              &q->kw, &q->sh, &q->sw,    &q->dh,    &q->dw,    &q->pad_t, &q->pad_l, &q->group,
              &q->act, &q->res, &q->ldx, &q->ldy,   &q->ldr,   &s->fused};
  for (int i = 0; i < BD_CUDA_DNN_SHAPE_FIELDS; ++i) *f[i] = (int)v[i];
  return q->n > 0 && q->h > 0 && q->w > 0 && q->c > 0 && q->m > 0 && q->kh > 0 && q->kw > 0 &&
         q->sh > 0 && q->sw > 0 && q->dh > 0 && q->dw > 0 && q->group > 0 && s->fused <= 1;
}

/* Spatial sizes scaled by to/from (an input of `from` pixels a side become `to`): 0 when a
 * size would not be a whole number. */
static int rescale(bd_cuda_conv_shape *q, int from, int to) {
  int *d[] = {&q->h, &q->w, &q->oh, &q->ow};
  for (int i = 0; i < 4; ++i) {
    const long long x = (long long)*d[i] * to;
    if (x % from || x / from > MAX_DIM) return 0;
    *d[i] = (int)(x / from);
  }
  return 1;
}

static int dump_devprop(const char *path) {
  static char json[BD_CUDA_DNN_DEVPROP_MAX + 1];
  bd_err err = {0};
  if (bd_cuda_dnn_devprop_json(0, json, sizeof json, &err) != BD_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  FILE *f = fopen(path, "w");
  if (!f || fputs(json, f) < 0 || fputc('\n', f) < 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    if (f) fclose(f);
    return 1;
  }
  if (fclose(f)) return 1;
  printf("device 0's properties (cuDNN %zu) -> %s\n", cudnnGetVersion(), path);
  return 0;
}

static const char *const act_name[] = {"none", "relu", "sigmoid", "silu"};

/* The emulated cuDNN's model (cudnn_model.h): whether q's graph has an engine that is not
 * compiled at run time. */
static int modelled(const bd_cuda_conv_shape *q, int fused) {
  return !fused ||
         cudnn_fused_precompiled(q->act, q->res, q->ldr ? q->ldr : q->m, q->ldy ? q->ldy : q->m);
}

int main(int argc, char **argv) {
  const char *devprop_path = NULL, *shapes_path = NULL, *dump = NULL;
  int from = 0, to = 0, batch = 0, require_graphs = 0, require_model = 0, rc = 1;
  long long ws_cap = 256LL << 20;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--require-graphs")) {
      require_graphs = 1;
      continue;
    }
    if (!strcmp(a, "--require-model")) {
      require_model = 1;
      continue;
    }
    if (!v) {
      usage();
      return 2;
    }
    ++i;
    if (!strcmp(a, "--devprop")) devprop_path = v;
    else if (!strcmp(a, "--shapes")) shapes_path = v;
    else if (!strcmp(a, "--dump-devprop")) dump = v;
    else if (!strcmp(a, "--from")) from = atoi(v);
    else if (!strcmp(a, "--to")) to = atoi(v);
    else if (!strcmp(a, "--batch")) batch = atoi(v);
    else if (!strcmp(a, "--ws")) ws_cap = atoll(v);
    else {
      usage();
      return 2;
    }
  }
  if (cudnnGetVersion() < 90800) {
    printf("SKIP: cuDNN %zu has no deviceless plans (9.8 and later)\n", cudnnGetVersion());
    return 77;
  }
  if (dump) return dump_devprop(dump);
  if (!devprop_path || !shapes_path || (from > 0) != (to > 0) || from < 0 || to < 0 ||
      batch < 0 || ws_cap < 0) {
    usage();
    return 2;
  }
  char *json = read_text(devprop_path, BD_CUDA_DNN_DEVPROP_MAX);
  char *text = read_text(shapes_path, (size_t)MAX_SHAPES * 256);
  shape *shapes = calloc(MAX_SHAPES, sizeof(*shapes));
  int n = 0, lines = 0;
  if (!json || !text || !shapes) goto out;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    shape s;
    ++lines;
    if (!parse_shape(line, &s)) {
      fprintf(stderr, "%s: line %d: not %d numbers of a shape\n", shapes_path, lines,
              BD_CUDA_DNN_SHAPE_FIELDS);
      goto out;
    }
    if (from && !rescale(&s.q, from, to)) {
      fprintf(stderr, "%s: line %d: %dx%d does not scale by %d/%d\n", shapes_path, lines, s.q.h,
              s.q.w, to, from);
      goto out;
    }
    if (batch) s.q.n = batch;
    int seen = 0;
    for (int k = 0; k < n && !seen; ++k) seen = !memcmp(&shapes[k], &s, sizeof s);
    if (seen) continue;
    if (n == MAX_SHAPES) {
      fprintf(stderr, "%s: more than %d distinct graphs\n", shapes_path, MAX_SHAPES);
      goto out;
    }
    shapes[n++] = s;
  }
  if (n == 0) {
    fprintf(stderr, "%s: no graphs (was BATCHDET_CUDA_DNN_GRAPH_SHAPES set on the run?)\n",
            shapes_path);
    goto out;
  }
  printf("cuDNN %zu, %d distinct graphs from %d lines, workspace cap %lld bytes\n",
         cudnnGetVersion(), n, lines, ws_cap);
  printf("%-34s %-7s %5s %6s %4s %6s %6s %5s %8s %5s %6s %3s %10s %6s\n",
         "conv (n h w c -> m k s)", "fused", "graph", "listed", "rtc", "nondet", "noplan", ">ws",
         "eligible", "first", "engine", "cga", "ws", "top");
  int graphs = 0, eligible = 0, fused = 0, fused_eligible = 0, missing = 0, extra = 0,
      clusters = 0;
  for (int k = 0; k < n; ++k) {
    const bd_cuda_conv_shape *q = &shapes[k].q;
    bd_cuda_dnn_survey sv;
    bd_err err = {0};
    if (bd_cuda_dnn_graph_survey(json, q, shapes[k].fused, (size_t)ws_cap, &sv, &err) != BD_OK) {
      fprintf(stderr, "%s\n", err.msg);
      goto out;
    }
    char conv[64], fu[16];
    snprintf(conv, sizeof conv, "%d %dx%d %d -> %d k%dx%d s%d", q->n, q->h, q->w, q->c, q->m, q->kh,
             q->kw, q->sh);
    snprintf(fu, sizeof fu, "%s%s", !shapes[k].fused ? "no" : act_name[q->act & 3],
             shapes[k].fused && q->res ? (q->res == BD_RES_PRE_ACT ? "+r<" : "+r>") : "");
    const int model = sv.taken && modelled(q, shapes[k].fused);
    missing += model && sv.eligible == 0;
    extra += sv.taken && !model && sv.eligible > 0;
    printf("%-34s %-7s %5s %6d %4d %6d %6d %5d %8d %5d %6lld %3s %10zu %6lld%s\n", conv, fu,
           !sv.taken ? "n/a" : sv.graph ? "ok" : "NO", sv.listed, sv.rtc, sv.nondet, sv.unplanned,
           sv.over_ws, sv.eligible, sv.first, sv.engine,
           sv.cluster < 0 ? "-" : sv.cluster ? "yes" : "no", sv.ws, sv.top_engine,
           model && sv.eligible == 0 ? "  <- the emulation expects one" : "");
    graphs += sv.graph;
    eligible += sv.eligible > 0;
    fused += shapes[k].fused;
    fused_eligible += shapes[k].fused && sv.eligible > 0;
    clusters += sv.cluster > 0;
  }
  printf("graphs finalized %d of %d; with an eligible configuration %d of %d (fused: %d of "
         "%d; the first on a cluster engine: %d); beyond the emulation's model: %d\n",
         graphs, n, eligible, n, fused_eligible, fused, clusters, extra);
  rc = 0;
  if (require_graphs && graphs != n) {
    printf("FAIL: cuDNN refused %d of the %d operation graphs (BATCHDET_CUDA_DNN_GRAPH_LOG=1 "
           "says why)\n",
           n - graphs, n);
    rc = 1;
  }
  if (require_model && missing) {
    printf("FAIL: %d graphs keep no configuration that the emulated cuDNN gives them\n",
           missing);
    rc = 1;
  }
out:
  free(json);
  free(text);
  free(shapes);
  return rc;
}
