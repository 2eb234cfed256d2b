/* batchdet submit: splits a list file, a directory or an S3 prefix into job manifests
 * on Kafka and records the job in Redis (see scheduler/bd_submit.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_submit.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet submit --job ID --model NAME (--list FILE | --dir DIR | --s3-prefix "
          "s3://B/P)\n"
          "                       [--shard-size N] [--score-thr F] [--iou-thr F] [--max-det N]\n"
          "                       [--force] [--brokers B] [--redis URL] [--topic T] [--ext "
          "jpg,jpeg,png]\n"
          "                       [--incremental --since-job PREV [--model-hash H]]\n"
          "\n"
          "Sources: --list: one URL (or absolute path) per line, or 'id,url' CSV; ids derived\n"
          "from the URL path when absent; a list without images is an error. --dir: recursive,\n"
          "sorted, as percent-encoded file:// URLs (the worker needs --allow-file); hidden\n"
          "names, dangling links and non-files are left out and counted. --s3-prefix: every\n"
          "object under the prefix.\n"
          "--ext filters --dir and --s3-prefix (default jpg,jpeg,png).\n"
          "Shards of --shard-size images (default 256) go to --topic (batchdet.jobs) with key\n"
          "'JOB:SHARD'. An existing job id is refused unless --force, which deletes the\n"
          "job's results and counters first.\n"
          "--incremental --since-job PREV skips images whose result in job PREV is valid: no\n"
          "error, same model (and --model-hash when both are known), same S3 ETag and\n"
          "Last-Modified when the result recorded them.\n"
          "Config: BATCHDET_BROKERS (127.0.0.1:9092), BATCHDET_REDIS (redis://127.0.0.1:6379).\n"
          "Progress (listed, storing URLs, queuing shards) on stderr when it is a terminal.\n"
          "Exit: 0 submitted, 1 failed (or job exists), 2 usage error.\n");
}

/* One line on a terminal's stderr, rewritten at most every 0.2 s (and at a phase's end):
 * "listed N images", "storing URLs k/n", "queuing shards k/n". */
typedef struct {
  double last;
  int shown;
} submit_progress;

static void progress(void *ctx, const char *phase, size_t done, size_t total) {
  submit_progress *sp = ctx;
  double now = bd_now();
  if (now - sp->last < 0.2 && done != total) return;
  sp->last = now;
  if (!strcmp(phase, "listed"))
    fprintf(stderr, "\rbatchdet submit: listed %zu images\033[K", done);
  else
    fprintf(stderr, "\rbatchdet submit: %s %zu/%zu (%.0f%%)\033[K",
            !strcmp(phase, "stored") ? "storing URLs" : "queuing shards", done, total,
            total ? 100.0 * (double)done / (double)total : 100.0);
  fflush(stderr);
  sp->shown = 1;
}

int bd_cmd_submit(int argc, char **argv) {
  static const struct option opts[] = {{"job", 1, 0, 'j'},
                                       {"model", 1, 0, 'm'},
                                       {"list", 1, 0, 'l'},
                                       {"dir", 1, 0, 'd'},
                                       {"s3-prefix", 1, 0, 's'},
                                       {"shard-size", 1, 0, 'n'},
                                       {"score-thr", 1, 0, 'S'},
                                       {"iou-thr", 1, 0, 'I'},
                                       {"max-det", 1, 0, 'M'},
                                       {"force", 0, 0, 'f'},
                                       {"brokers", 1, 0, 'b'},
                                       {"redis", 1, 0, 'r'},
                                       {"topic", 1, 0, 't'},
                                       {"ext", 1, 0, 'e'},
                                       {"incremental", 0, 0, 'i'},
                                       {"since-job", 1, 0, 'p'},
                                       {"model-hash", 1, 0, 'H'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  bd_submit_opts o = {0};
  o.shard_size = 256;
  const char *brokers = NULL, *redis = NULL;
  int incremental = 0, c;
  bd_err err = {0};
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    bd_status st = BD_OK;
    switch (c) {
      case 'j':
        o.job = optarg;
        break;
      case 'm':
        o.model = optarg;
        break;
      case 'l':
        o.list = optarg;
        break;
      case 'd':
        o.dir = optarg;
        break;
      case 's':
        o.s3_prefix = optarg;
        break;
      case 'n':
        st = bd_parse_int(optarg, 1, BD_SUBMIT_MAX_SHARD_SIZE, "--shard-size", &o.shard_size, &err);
        break;
      case 'S':
        st = bd_parse_double(optarg, 0, 1, "--score-thr", &o.score_thr, &err), o.has_score_thr = 1;
        break;
      case 'I':
        st = bd_parse_double(optarg, 0, 1, "--iou-thr", &o.iou_thr, &err), o.has_iou_thr = 1;
        break;
      case 'M':
        st = bd_parse_int(optarg, 1, 10000, "--max-det", &o.max_det, &err), o.has_max_det = 1;
        break;
      case 'f':
        o.force = 1;
        break;
      case 'b':
        brokers = optarg;
        break;
      case 'r':
        redis = optarg;
        break;
      case 't':
        o.topic = optarg;
        break;
      case 'e':
        o.exts = optarg;
        break;
      case 'i':
        incremental = 1;
        break;
      case 'p':
        o.since_job = optarg;
        break;
      case 'H':
        o.model_hash = optarg;
        break;
      case 'h':
        usage(stdout);
        return BD_EXIT_OK;
      default:
        fprintf(stderr, "batchdet submit: unknown or incomplete option '%s'\n", argv[optind - 1]);
        usage(stderr);
        return BD_EXIT_USAGE;
    }
    if (st != BD_OK) {
      fprintf(stderr, "batchdet submit: %s\n", err.msg);
      return BD_EXIT_USAGE;
    }
  }
  if (optind < argc || !o.job || !o.model || (!!o.list + !!o.dir + !!o.s3_prefix) != 1 ||
      incremental != !!o.since_job) {
    fprintf(stderr, "batchdet submit: need --job, --model and one source%s\n",
            incremental != !!o.since_job ? " (--incremental goes with --since-job)" : "");
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  o.brokers = bd_config_str(brokers, "BATCHDET_BROKERS", "127.0.0.1:9092");
  o.redis_url = bd_config_str(redis, "BATCHDET_REDIS", "redis://127.0.0.1:6379");
  if (!o.topic) o.topic = "batchdet.jobs";
  submit_progress sp = {0, 0};
  if (isatty(2)) { /* on a terminal, a submit of millions of images shows where it is */
    o.progress = progress;
    o.progress_ctx = &sp;
  }
  bd_submit_summary s;
  bd_status st = bd_submit_run(&o, &s, &err);
  if (sp.shown) fputs("\r\033[K", stderr);
  if (st != BD_OK) {
    fprintf(stderr, "batchdet submit: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  if (s.removed_keys)
    printf("removed %lld keys of the previous job %s (--force)\n", s.removed_keys, o.job);
  if (s.skipped_ext || s.skipped_badkey || s.skipped_hidden || s.skipped_unreadable) {
    printf("ignored: %zu not matching --ext", s.skipped_ext);
    if (s.skipped_hidden) printf(", %zu hidden (name starts with '.')", s.skipped_hidden);
    if (s.skipped_unreadable)
      printf(", %zu dangling links, unreadable or not files", s.skipped_unreadable);
    if (s.skipped_badkey) printf(", %zu with keys unusable in a URL", s.skipped_badkey);
    printf("\n");
  }
  if (o.since_job) {
    printf("incremental since %s: %zu listed, %zu skipped (unchanged)", o.since_job, s.listed,
           s.inc[BD_INC_UNCHANGED]);
    for (int r = 1; r < BD_INC__COUNT; r++)
      if (s.inc[r]) printf(", %zu %s", s.inc[r], bd_inc_reason_name((bd_inc_reason)r));
    printf("\n");
  }
  printf("job %s: %zu images in %zu shards of <= %d, over %d of %d partitions of %s\n", o.job,
         s.images, s.shards, o.shard_size, s.partitions_used, s.topic_partitions, o.topic);
  return BD_EXIT_OK;
}
