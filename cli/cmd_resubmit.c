/* batchdet resubmit --job ID --failed: requeues a job's failed images as new shards. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_submit.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet resubmit --job ID --failed [--include-pending] [--shard-size N]\n"
          "                         [--brokers B] [--redis URL] [--topic T]\n"
          "\n"
          "Requeues the images of job:ID:errors (URLs from job:ID:urls, written by submit) as\n"
          "new shards numbered after the job's last one. The job's total stays; an image that\n"
          "succeeds on retry moves from failed to done. An image that an earlier resubmit\n"
          "requeued is left alone until the shard carrying it has completed (it is counted as\n"
          "pending), so that running resubmit twice does not queue the work twice;\n"
          "--include-pending requeues those too (e.g. if that shard was lost). Images\n"
          "claimed by a resubmit that died before producing are taken again after 15 min.\n"
          "Exit: 0 ok (also when nothing failed), 1 failed, 2 usage error.\n");
}

int bd_cmd_resubmit(int argc, char **argv) {
  static const struct option opts[] = {
      {"job", 1, 0, 'j'},     {"failed", 0, 0, 'F'},          {"shard-size", 1, 0, 'n'},
      {"brokers", 1, 0, 'b'}, {"redis", 1, 0, 'r'},           {"topic", 1, 0, 't'},
      {"help", 0, 0, 'h'},    {"include-pending", 0, 0, 'P'}, {0, 0, 0, 0}};
  const char *job = NULL, *brokers = NULL, *redis = NULL, *topic = "batchdet.jobs";
  int failed = 0, include_pending = 0, shard_size = 256, c;
  bd_err err = {0};
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'j':
        job = optarg;
        break;
      case 'F':
        failed = 1;
        break;
      case 'P':
        include_pending = 1;
        break;
      case 'n':
        if (bd_parse_int(optarg, 1, BD_SUBMIT_MAX_SHARD_SIZE, "--shard-size", &shard_size, &err)) {
          fprintf(stderr, "batchdet resubmit: %s\n", err.msg);
          return BD_EXIT_USAGE;
        }
        break;
      case 'b':
        brokers = optarg;
        break;
      case 'r':
        redis = optarg;
        break;
      case 't':
        topic = optarg;
        break;
      case 'h':
        usage(stdout);
        return BD_EXIT_OK;
      default:
        usage(stderr);
        return BD_EXIT_USAGE;
    }
  }
  if (!job || !failed || optind < argc) {
    fprintf(stderr, "batchdet resubmit: need --job ID --failed\n");
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  bd_resubmit_summary s;
  if (bd_resubmit_failed(job, shard_size,
                         bd_config_str(brokers, "BATCHDET_BROKERS", "127.0.0.1:9092"),
                         bd_config_str(redis, "BATCHDET_REDIS", "redis://127.0.0.1:6379"), topic,
                         include_pending, &s, &err) != BD_OK) {
    fprintf(stderr, "batchdet resubmit: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  if (!s.images)
    printf("job %s: no failed images to requeue%s\n", job, s.missing_url ? " (URLs unknown)" : "");
  else
    printf("job %s: requeued %zu failed images as shards %lld..%lld\n", job, s.images,
           s.first_shard, s.first_shard + (long long)s.shards - 1);
  if (s.missing_url)
    printf("%zu failed images have no stored URL and were not requeued\n", s.missing_url);
  if (s.pending)
    printf(
        "%zu failed images are still pending in an earlier resubmit's shards and were not "
        "requeued (--include-pending requeues them too)\n",
        s.pending);
  return BD_EXIT_OK;
}
