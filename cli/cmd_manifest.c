/* batchdet manifest validate FILE|-: checks a job manifest with the worker's own
 * decoder and prints every problem, one per line, each naming its field. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_manifest.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet manifest validate FILE|-\n"
          "\n"
          "Checks a job manifest (JSON, \"v\":1) with the same rules the worker applies:\n"
          "required v, job, shard, model, images (optional gen: the submission, set by submit);\n"
          "ids of 1..%d chars of [A-Za-z0-9._-];\n"
          "unique image ids; http, https, s3://BUCKET/KEY or file:/// URLs of at most %d\n"
          "bytes; score_thr and iou_thr in 0..1; max_det in 1..%d; at most %d images;\n"
          "documents of at most %zu MiB. '-' reads standard input.\n"
          "\n"
          "Output: 'ok: N images' on stdout when valid; otherwise every problem (up to %d)\n"
          "on stderr, one per line, starting with the field, e.g.\n"
          "  images[3].url: unsupported scheme \"ftp\" (http, https, s3, file)\n"
          "\n"
          "Exit status: 0 valid, 1 invalid or the file cannot be read, 2 usage error.\n",
          BD_ID_MAX, BD_MANIFEST_MAX_URL, BD_MANIFEST_MAX_DET, BD_MANIFEST_MAX_IMAGES,
          BD_PROTO_MAX_DOC >> 20, BD_PROTO_MAX_ERRORS);
}

/* Reads at most limit + 1 bytes, so that an oversize document is reported by the
 * decoder's own limit check without reading all of it. */
static int read_all(FILE *f, size_t limit, char **out, size_t *out_len) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (!buf) return -1;
  for (;;) {
    if (len == cap) {
      if (cap > limit) break;
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        return -1;
      }
      buf = nb;
      cap *= 2;
    }
    size_t want = cap - len;
    if (len + want > limit + 1) want = limit + 1 - len;
    size_t got = fread(buf + len, 1, want, f);
    len += got;
    if (got < want || len > limit) break;
  }
  if (ferror(f)) {
    free(buf);
    return -1;
  }
  *out = buf;
  *out_len = len;
  return 0;
}

static int validate(const char *path) {
  int rc = BD_EXIT_FAIL;
  char *buf = NULL;
  size_t len = 0;
  bd_manifest *m = NULL;
  bd_proto_errors *errs = NULL;
  int is_stdin = strcmp(path, "-") == 0;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "batchdet manifest: cannot open %s: %s\n", path, strerror(errno));
    goto out;
  }
  if (read_all(f, BD_PROTO_MAX_DOC, &buf, &len) != 0) {
    fprintf(stderr, "batchdet manifest: cannot read %s: %s\n", path, strerror(errno));
    goto out;
  }
  errs = malloc(sizeof *errs);
  if (!errs) {
    fprintf(stderr, "batchdet manifest: out of memory\n");
    goto out;
  }
  if (bd_manifest_decode(buf, len, &m, errs) == BD_OK) {
    printf("ok: %zu images\n", m->n_images);
    rc = BD_EXIT_OK;
    goto out;
  }
  for (int i = 0; i < errs->count; i++) fprintf(stderr, "%s\n", errs->msg[i]);
  if (errs->dropped > 0) fprintf(stderr, "... and %d more errors\n", errs->dropped);
  fprintf(stderr, "invalid: %d error%s in %s\n", bd_proto_errors_total(errs),
          bd_proto_errors_total(errs) == 1 ? "" : "s", is_stdin ? "standard input" : path);
out:
  if (f && !is_stdin) fclose(f);
  free(buf);
  free(errs);
  bd_manifest_destroy(m);
  return rc;
}

int bd_cmd_manifest(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return BD_EXIT_OK;
  }
  if (argc < 2) {
    fprintf(stderr, "batchdet manifest: missing subcommand\n");
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  if (strcmp(argv[1], "validate") != 0) {
    fprintf(stderr, "batchdet manifest: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
    usage(stdout);
    return BD_EXIT_OK;
  }
  if (argc != 3 || (argv[2][0] == '-' && argv[2][1] != '\0')) {
    fprintf(stderr, "batchdet manifest validate: expected exactly one FILE or '-'\n");
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  return validate(argv[2]);
}
