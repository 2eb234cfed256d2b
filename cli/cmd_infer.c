/* batchdet infer: raw tensor inference for parity tests. Reads a float32 NCHW file,
 * runs the network (no pre/post-processing) and writes each output as float32 plus a
 * JSON description. Builds in the engine-only configuration (no jansson: the JSON is
 * tiny and written by hand). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_engine.h"

#define INFER_MAX_INPUT_BYTES ((size_t)2 << 30)

static void infer_usage(FILE *f) {
  fprintf(
      f,
      "usage: batchdet infer --model PATH --input IN.f32 --out PREFIX\n"
      "                      [--device cpu|cuda|cuda:N] [--threads N] [--family "
      "none|auto|yolox|damoyolo]\n"
      "\n"
      "IN.f32 is raw float32 NCHW; its length must be a multiple of one image (C*H*W of\n"
      "the model input), the batch is length / that. Writes PREFIX.0.f32, PREFIX.1.f32 ...\n"
      "(graph output order, float32) and PREFIX.json {\"outputs\":[{\"name\",\"dims\"}...]}.\n");
}

static const char *arg_value(int argc, char **argv, int *i) {
  const char *a = argv[*i];
  const char *eq = strchr(a, '=');
  if (eq) return eq + 1;
  if (*i + 1 >= argc) return NULL;
  return argv[++*i];
}

static int opt_is(const char *a, const char *name) {
  size_t n = strlen(name);
  return strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

int bd_cmd_infer(int argc, char **argv) {
  const char *model = NULL, *input = NULL, *prefix = NULL, *device = "cpu";
  int threads = 0;
  bd_family family = BD_FAMILY_NONE; /* any graph; --family checks a detector */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      infer_usage(stdout);
      return BD_EXIT_OK;
    }
    if (!opt_is(a, "--model") && !opt_is(a, "--input") && !opt_is(a, "--out") &&
        !opt_is(a, "--device") && !opt_is(a, "--threads") && !opt_is(a, "--family")) {
      fprintf(stderr, "batchdet infer: unknown argument '%s'\n", a);
      infer_usage(stderr);
      return BD_EXIT_USAGE;
    }
    if (!(v = arg_value(argc, argv, &i))) {
      fprintf(stderr, "batchdet infer: %s needs a value\n", a);
      return BD_EXIT_USAGE;
    }
    if (opt_is(a, "--model"))
      model = v;
    else if (opt_is(a, "--input"))
      input = v;
    else if (opt_is(a, "--out"))
      prefix = v;
    else if (opt_is(a, "--device"))
      device = v;
    else if (opt_is(a, "--family")) {
      if (bd_family_parse(v, &family)) {
        fprintf(stderr, "batchdet infer: unknown family '%s'\n", v);
        return BD_EXIT_USAGE;
      }
    } else {
      char *end;
      long t = strtol(v, &end, 10);
      if (*end || t < 0 || t > 1024) {
        fprintf(stderr, "batchdet infer: --threads wants 0..1024\n");
        return BD_EXIT_USAGE;
      }
      threads = (int)t;
    }
  }
  if (!model || !input || !prefix) {
    fprintf(stderr, "batchdet infer: --model, --input and --out are required\n");
    infer_usage(stderr);
    return BD_EXIT_USAGE;
  }
  int is_cuda, idx;
  if (bd_engine_parse_device(device, &is_cuda, &idx)) {
    fprintf(stderr, "batchdet infer: unknown device '%s' (cpu, cuda, cuda:N)\n", device);
    return BD_EXIT_USAGE;
  }

  int rc = BD_EXIT_FAIL;
  bd_engine *e = NULL;
  float *in = NULL;
  float *outs[8] = {0};
  FILE *f = NULL;
  char *path = NULL;
  bd_err err;
  bd_err_clear(&err);

  f = fopen(input, "rb");
  if (!f) {
    fprintf(stderr, "batchdet infer: %s: %s\n", input, strerror(errno));
    goto out;
  }
  if (fseek(f, 0, SEEK_END) != 0) goto io;
  long len = ftell(f);
  if (len < 0 || fseek(f, 0, SEEK_SET) != 0) goto io;
  if ((size_t)len > INFER_MAX_INPUT_BYTES || len % 4) {
    fprintf(stderr, "batchdet infer: %s: %ld bytes is not a float32 tensor under 2 GiB\n", input,
            len);
    goto out;
  }
  bd_engine_opts o = {.device = device, .threads = threads, .max_batch = 64, .family = family};
  if (bd_engine_load(model, &o, &e, &err) != BD_OK) {
    fprintf(stderr, "batchdet infer: %s\n", err.msg);
    goto out;
  }
  size_t row = (size_t)bd_engine_input_row_numel(e);
  size_t nf = (size_t)len / 4;
  if (nf == 0 || nf % row) {
    fprintf(stderr, "batchdet infer: %s holds %zu floats, not a multiple of one input row (%zu)\n",
            input, nf, row);
    goto out;
  }
  int batch = (int)(nf / row);
  in = malloc(nf * sizeof *in);
  if (!in) goto nomem;
  if (fread(in, 4, nf, f) != nf) goto io;
  fclose(f);
  f = NULL;
  int nout = bd_engine_num_outputs(e);
  /* The engine bounds max_batch rows of outputs; the input may hold many more rows. */
  uint64_t out_bytes = 0;
  for (int i = 0; i < nout; i++)
    out_bytes += (uint64_t)batch * (uint64_t)bd_engine_output_row_numel(e, i) * sizeof(float);
  if (out_bytes > BD_ENGINE_MAX_OUTPUT_BYTES) {
    fprintf(stderr,
            "batchdet infer: the outputs of %d rows would take %llu bytes, over the limit of "
            "%llu; split the input\n",
            batch, (unsigned long long)out_bytes, (unsigned long long)BD_ENGINE_MAX_OUTPUT_BYTES);
    goto out;
  }
  for (int i = 0; i < nout; i++)
    if (!(outs[i] = malloc((size_t)batch * bd_engine_output_row_numel(e, i) * sizeof(float))))
      goto nomem;
  if (bd_engine_run_raw(e, batch, in, outs, &err) != BD_OK) {
    fprintf(stderr, "batchdet infer: %s\n", err.msg);
    goto out;
  }
  size_t plen = strlen(prefix) + 32;
  if (!(path = malloc(plen))) goto nomem;
  for (int i = 0; i < nout; i++) {
    snprintf(path, plen, "%s.%d.f32", prefix, i);
    size_t n = (size_t)batch * bd_engine_output_row_numel(e, i);
    if (!(f = fopen(path, "wb")) || fwrite(outs[i], 4, n, f) != n || fclose(f) != 0) {
      f = NULL;
      fprintf(stderr, "batchdet infer: writing %s failed\n", path);
      goto out;
    }
    f = NULL;
  }
  snprintf(path, plen, "%s.json", prefix);
  if (!(f = fopen(path, "w"))) {
    fprintf(stderr, "batchdet infer: %s: %s\n", path, strerror(errno));
    goto out;
  }
  fprintf(f, "{\"family\":\"%s\",\"device\":\"%s\",\"batch\":%d,\"outputs\":[",
          bd_family_name(bd_engine_family(e)->family), bd_engine_device(e), batch);
  for (int i = 0; i < nout; i++) {
    int64_t dims[8];
    int r = bd_engine_output_dims(e, i, batch, dims);
    fprintf(f, "%s{\"name\":", i ? "," : "");
    json_string(f, bd_engine_output_name(e, i));
    fprintf(f, ",\"dims\":[");
    for (int k = 0; k < r; k++) fprintf(f, "%s%lld", k ? "," : "", (long long)dims[k]);
    fprintf(f, "]}");
  }
  fprintf(f, "]}\n");
  if (fclose(f) != 0) {
    f = NULL;
    fprintf(stderr, "batchdet infer: writing %s failed\n", path);
    goto out;
  }
  f = NULL;
  rc = BD_EXIT_OK;
  goto out;
io:
  fprintf(stderr, "batchdet infer: reading %s failed\n", input);
  goto out;
nomem:
  fprintf(stderr, "batchdet infer: out of memory\n");
out:
  if (f) fclose(f);
  free(path);
  free(in);
  for (int i = 0; i < 8; i++) free(outs[i]);
  bd_engine_destroy(e);
  return rc;
}
