/* batchdet export: a job's results as COCO JSON, JSON lines or YOLO label files. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_export.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet export --job ID --format coco|jsonl|yolo -o PATH [--redis URL]\n"
          "\n"
          "coco:  COCO results JSON (images, annotations with COCO category ids 1..90 and\n"
          "       bbox [x,y,w,h] in pixels, score; categories). Error results left out.\n"
          "       Categories are named by the results' labels (a custom model's names);\n"
          "       classes from 80 up get ids 1000 + class.\n"
          "jsonl: every stored result (errors too), one JSON object per line. -o - = stdout.\n"
          "yolo:  directory PATH with one IMAGE.txt per image: 'class cx cy w h' normalised\n"
          "       to 0..1 (the standard 5 columns: no score), and data.yaml with nc and the\n"
          "       class names (as Ultralytics reads them).\n"
          "Streams the results page by page (bounded memory); progress on stderr when it is\n"
          "a terminal, and a summary line at the end.\n"
          "Exit: 0 ok, 1 failed, 2 usage error.\n");
}

static double g_t0;

static void progress(void *ctx, size_t seen, long long total) {
  (void)ctx;
  const int W = 40;
  double frac = total > 0 ? (double)seen / (double)total : 0;
  if (frac > 1) frac = 1;
  int fill = (int)(frac * W);
  char bar[64];
  for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
  bar[W] = '\0';
  double dt = bd_now() - g_t0;
  fprintf(stderr, "\r[%s] %zu/%lld %.0f/s ", bar, seen, total, dt > 0 ? (double)seen / dt : 0.0);
}

int bd_cmd_export(int argc, char **argv) {
  static const struct option opts[] = {{"job", 1, 0, 'j'},    {"format", 1, 0, 'f'},
                                       {"output", 1, 0, 'o'}, {"redis", 1, 0, 'r'},
                                       {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
  const char *job = NULL, *fmt = NULL, *out = NULL, *redis = NULL;
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
    switch (c) {
      case 'j':
        job = optarg;
        break;
      case 'f':
        fmt = optarg;
        break;
      case 'o':
        out = optarg;
        break;
      case 'r':
        redis = optarg;
        break;
      case 'h':
        usage(stdout);
        return BD_EXIT_OK;
      default:
        usage(stderr);
        return BD_EXIT_USAGE;
    }
  }
  int f = fmt ? bd_export_format_parse(fmt) : -1;
  if (!job || !out || f < 0 || optind < argc) {
    fprintf(stderr, "batchdet export: need --job, --format coco|jsonl|yolo and -o PATH\n");
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  if (f == BD_EXPORT_YOLO && strcmp(out, "-") == 0) {
    fprintf(stderr, "batchdet export: yolo writes a directory; -o - is not possible\n");
    return BD_EXIT_USAGE;
  }
  bd_err err = {0};
  bd_export_summary s;
  g_t0 = bd_now();
  int tty = isatty(2);
  bd_status st =
      bd_export_run(bd_config_str(redis, "BATCHDET_REDIS", "redis://127.0.0.1:6379"), job,
                    (bd_export_format)f, out, tty ? progress : NULL, NULL, &s, &err);
  if (tty) fputc('\n', stderr);
  if (st != BD_OK) {
    fprintf(stderr, "batchdet export: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  fprintf(stderr,
          "exported job %s as %s: %zu images, %zu detections, %zu errors%s, %zu unreadable, "
          "%.1f s\n",
          job, fmt, s.images, s.annotations, s.errors, f == BD_EXPORT_JSONL ? "" : " (left out)",
          s.bad, bd_now() - g_t0);
  return BD_EXIT_OK;
}
