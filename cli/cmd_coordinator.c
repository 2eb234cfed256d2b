/* batchdet coordinator: tracks job progress, rates, ETAs and worker health. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_coord.h"
#include "bd_log.h"

static volatile sig_atomic_t g_stop;
static void on_sig(int s) {
  (void)s;
  g_stop = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet coordinator [--brokers B] [--redis URL] [--metrics-port P]\n"
          "                            [--metrics-addr A] [--stall-after S] [--silent-after S]\n"
          "                            [--topic T] [--group G] [--tick S]\n"
          "\n"
          "Consumes worker reports (topic batchdet.reports, group batchdet-coordinator),\n"
          "re-reads every live job from Redis each --tick (1 s; finished ones every 15-30 s),\n"
          "writes rate, eta, state\n"
          "(complete when every shard is), stalled (no progress for --stall-after, 300 s)\n"
          "into job:ID, and per-device img/s and silent (no report for --silent-after,\n"
          "30 s) into worker:ID. Prometheus metrics on http://A:P/metrics (A default\n"
          "127.0.0.1; P 0 = off, the default). Safe to restart at any time.\n"
          "Exit: 0 on SIGINT/SIGTERM/SIGHUP, 1 failed to start, 2 usage error.\n");
}

int bd_cmd_coordinator(int argc, char **argv) {
  static const struct option opts[] = {{"brokers", 1, 0, 'b'},
                                       {"redis", 1, 0, 'r'},
                                       {"metrics-port", 1, 0, 'p'},
                                       {"metrics-addr", 1, 0, 'a'},
                                       {"stall-after", 1, 0, 's'},
                                       {"silent-after", 1, 0, 'S'},
                                       {"topic", 1, 0, 't'},
                                       {"group", 1, 0, 'g'},
                                       {"tick", 1, 0, 'T'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  bd_coord_opts o = {0};
  const char *brokers = NULL, *redis = NULL;
  bd_err err = {0};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    bd_status st = BD_OK;
    switch (c) {
      case 'b':
        brokers = optarg;
        break;
      case 'r':
        redis = optarg;
        break;
      case 'p':
        st = bd_parse_int(optarg, -1, 65535, "--metrics-port", &o.metrics_port, &err);
        break;
      case 'a':
        o.metrics_addr = optarg;
        break;
      case 's':
        st = bd_parse_double(optarg, 0.1, 1e7, "--stall-after", &o.stall_after, &err);
        break;
      case 'S':
        st = bd_parse_double(optarg, 0.1, 1e7, "--silent-after", &o.silent_after, &err);
        break;
      case 't':
        o.topic = optarg;
        break;
      case 'g':
        o.group = optarg;
        break;
      case 'T':
        st = bd_parse_double(optarg, 0.05, 3600, "--tick", &o.tick, &err);
        break;
      case 'h':
        usage(stdout);
        return BD_EXIT_OK;
      default:
        usage(stderr);
        return BD_EXIT_USAGE;
    }
    if (st != BD_OK) {
      fprintf(stderr, "batchdet coordinator: %s\n", err.msg);
      return BD_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  o.brokers = bd_config_str(brokers, "BATCHDET_BROKERS", "127.0.0.1:9092");
  o.redis_url = bd_config_str(redis, "BATCHDET_REDIS", "redis://127.0.0.1:6379");
  bd_coord *co = bd_coord_new(&o, &err);
  if (!co) {
    fprintf(stderr, "batchdet coordinator: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sig;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  if (bd_coord_metrics_port(co))
    BD_LOGI("coordinator: metrics on port %d", bd_coord_metrics_port(co));
  /* Tests read the port from here. */
  fprintf(stderr, "coordinator ready: metrics port %d\n", bd_coord_metrics_port(co));
  bd_status st = bd_coord_run(co, &g_stop, &err);
  bd_coord_destroy(co);
  if (st != BD_OK) {
    fprintf(stderr, "batchdet coordinator: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  return BD_EXIT_OK;
}
