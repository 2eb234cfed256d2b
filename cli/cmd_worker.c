/* batchdet worker: consume manifests from Kafka, detect, write results to Redis.
 * Options: flags, then BATCHDET_* variables, then defaults (bd_config). */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bd_backend.h"
#include "bd_cli.h"
#include "bd_config.h"
#include "bd_log.h"
#include "bd_worker.h"

typedef struct opt {
  const char *flag, *env, *meta, *help;
  const char *val; /* from the command line */
} opt;

static opt k_opts[] = {
    {"--brokers", "BATCHDET_BROKERS", "B", "Kafka bootstrap servers (127.0.0.1:9092)", NULL},
    {"--redis", "BATCHDET_REDIS", "URL", "Redis URL (redis://127.0.0.1:6379)", NULL},
    {"--models", "BATCHDET_MODELS", "DIR",
     "directory of NAME.onnx models, class names in NAME.names (models)", NULL},
    {"--devices", "BATCHDET_DEVICES", "SPEC",
     "cpu | cpu:N (N cpu instances) | cuda (every visible GPU) | cuda:0,1 | sim:N:MS (cpu)", NULL},
    {"--instances-per-gpu", "BATCHDET_INSTANCES_PER_GPU", "N",
     "engines (each its own thread and model copy) per GPU for cuda, 1..16 (1)", NULL},
    {"--group", "BATCHDET_GROUP", "G", "consumer group (batchdet-workers)", NULL},
    {"--instance-id", "BATCHDET_INSTANCE_ID", "ID",
     "static group member id and worker id (host:pid)", NULL},
    {"--topic", "BATCHDET_TOPIC", "T", "manifest topic (batchdet.jobs)", NULL},
    {"--reports-topic", "BATCHDET_REPORTS_TOPIC", "T", "report topic (batchdet.reports)", NULL},
    {"--dlq-topic", "BATCHDET_DLQ_TOPIC", "T", "dead-letter topic (batchdet.jobs.dlq)", NULL},
    {"--batch", "BATCHDET_BATCH", "N", "images per device batch, 1..1024 (8)", NULL},
    {"--batch-timeout-ms", "BATCHDET_BATCH_TIMEOUT_MS", "MS", "longest wait to fill a batch (50)",
     NULL},
    {"--fetch-concurrency", "BATCHDET_FETCH_CONCURRENCY", "N", "parallel downloads (64)", NULL},
    {"--decode-threads", "BATCHDET_DECODE_THREADS", "N", "decode pool threads (2)", NULL},
    {"--cpu-threads", "BATCHDET_CPU_THREADS", "N",
     "engine threads per cpu instance (0 = cores / instances)", NULL},
    {"--max-inflight-mb", "BATCHDET_MAX_INFLIGHT_MB", "MB",
     "pause consuming above this many fetched+decoded MiB, and hold decoding while the "
     "decoded pixels not yet through the network would pass it (1024)",
     NULL},
    {"--max-inflight-shards", "BATCHDET_MAX_INFLIGHT_SHARDS", "N",
     "pause consuming above this many shards (8)", NULL},
    {"--session-timeout-ms", "BATCHDET_SESSION_TIMEOUT_MS", "MS",
     "group session timeout: how fast a dead worker's partitions move (10000 with --instance-id)",
     NULL},
    {"--metrics-port", "BATCHDET_METRICS_PORT", "P",
     "serve /metrics and /healthz on this port (0 = off)", NULL},
    {"--metrics-addr", "BATCHDET_METRICS_ADDR", "A",
     "IPv4 address the metrics port binds (0.0.0.0: all, for Kubernetes probes)", NULL},
    {"--report-interval", "BATCHDET_REPORT_INTERVAL", "S", "seconds between throughput reports (5)",
     NULL},
    {"--grace", "BATCHDET_GRACE", "S", "seconds to finish in-flight shards at SIGTERM (30)", NULL},
};
#define N_OPTS (sizeof k_opts / sizeof k_opts[0])

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet worker [OPTIONS]\n\n"
          "Consume job manifests from Kafka, fetch and decode the images, run the detector\n"
          "and write results to Redis; offsets are stored only after Redis has the results.\n\n"
          "options (flag, then environment variable, then default):\n");
  for (size_t i = 0; i < N_OPTS; i++) {
    char left[64];
    snprintf(left, sizeof left, "%s %s", k_opts[i].flag, k_opts[i].meta);
    fprintf(f, "  %-26s %s [%s]\n", left, k_opts[i].help, k_opts[i].env);
  }
  fprintf(f, "  %-26s %s [%s]\n", "--allow-file", "accept file:// image URLs",
          "BATCHDET_ALLOW_FILE=1");
  fprintf(f, "  %-26s %s\n", "-h, --help", "this help");
  fprintf(f,
          "\nSIGTERM/SIGINT/SIGHUP: stop consuming, finish in-flight shards within --grace,\n"
          "commit, exit 0 (SIGHUP too: a closed terminal must not throw work away). A second\n"
          "signal exits at once (unfinished shards are redone elsewhere).\n");
}

static const char *get(const char *flag) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (!strcmp(k_opts[i].flag, flag)) return bd_config_str(k_opts[i].val, k_opts[i].env, NULL);
  return NULL;
}

static void on_signal(int sig) {
  (void)sig;
  if (bd_worker_stop()) {
    static const char m[] = "batchdet worker: second signal, exiting now\n";
    ssize_t k = write(2, m, sizeof m - 1);
    (void)k;
    _exit(BD_EXIT_FAIL);
  }
}

static int parse_int(const char *flag, int lo, int hi, int *out) {
  const char *s = get(flag);
  if (!s) return 0;
  bd_err err = {0};
  if (bd_parse_int(s, lo, hi, flag, out, &err) != BD_OK) {
    fprintf(stderr, "batchdet worker: %s\n", err.msg);
    return -1;
  }
  return 0;
}

static int parse_double(const char *flag, double lo, double hi, double *out) {
  const char *s = get(flag);
  if (!s) return 0;
  bd_err err = {0};
  if (bd_parse_double(s, lo, hi, flag, out, &err) != BD_OK) {
    fprintf(stderr, "batchdet worker: %s\n", err.msg);
    return -1;
  }
  return 0;
}

int bd_cmd_worker(int argc, char **argv) {
  int allow_file = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return BD_EXIT_OK;
    }
    if (!strcmp(a, "--allow-file")) {
      allow_file = 1;
      continue;
    }
    size_t k = 0;
    const char *eq = strchr(a, '=');
    for (; k < N_OPTS; k++) {
      size_t fl = strlen(k_opts[k].flag);
      if (eq && (size_t)(eq - a) == fl && !strncmp(a, k_opts[k].flag, fl)) {
        k_opts[k].val = eq + 1;
        break;
      }
      if (!strcmp(a, k_opts[k].flag)) {
        if (i + 1 >= argc) {
          fprintf(stderr, "batchdet worker: %s needs a value\n", a);
          return BD_EXIT_USAGE;
        }
        k_opts[k].val = argv[++i];
        break;
      }
    }
    if (k == N_OPTS) {
      fprintf(stderr, "batchdet worker: unknown argument '%s'\n", a);
      usage(stderr);
      return BD_EXIT_USAGE;
    }
  }
  const char *af = getenv("BATCHDET_ALLOW_FILE");
  if (af && (!strcmp(af, "1") || !strcmp(af, "true"))) allow_file = 1;

  bd_worker_config c;
  bd_worker_config_default(&c);
  if (get("--brokers")) c.brokers = get("--brokers");
  if (get("--redis")) c.redis_url = get("--redis");
  if (get("--models")) {
    c.models_dir = get("--models");
    c.models_dir_explicit = 1;
  }
  if (get("--devices")) c.devices = get("--devices");
  if (get("--group")) c.group = get("--group");
  if (get("--instance-id")) c.instance_id = get("--instance-id");
  if (get("--topic")) c.topic = get("--topic");
  if (get("--reports-topic")) c.reports_topic = get("--reports-topic");
  if (get("--dlq-topic")) c.dlq_topic = get("--dlq-topic");
  if (get("--metrics-addr")) {
    struct in_addr ia;
    c.metrics_addr = get("--metrics-addr");
    if (inet_pton(AF_INET, c.metrics_addr, &ia) != 1) {
      fprintf(stderr, "batchdet worker: --metrics-addr wants an IPv4 address, not '%s'\n",
              c.metrics_addr);
      return BD_EXIT_USAGE;
    }
  }
  c.allow_file = allow_file;
  if (parse_int("--batch", 1, 1024, &c.batch) ||
      parse_int("--batch-timeout-ms", 0, 60000, &c.batch_timeout_ms) ||
      parse_int("--fetch-concurrency", 1, 4096, &c.fetch_concurrency) ||
      parse_int("--decode-threads", 1, 256, &c.decode_threads) ||
      parse_int("--cpu-threads", 0, 1024, &c.cpu_threads) ||
      parse_int("--instances-per-gpu", 1, 16, &c.instances_per_gpu) ||
      parse_int("--max-inflight-mb", 1, 1 << 20, &c.max_inflight_mb) ||
      parse_int("--max-inflight-shards", 1, 100000, &c.max_inflight_shards) ||
      parse_int("--metrics-port", 0, 65535, &c.metrics_port) ||
      parse_int("--session-timeout-ms", 0, 3600000, &c.session_timeout_ms) ||
      parse_double("--report-interval", 0.05, 3600, &c.report_interval_s) ||
      parse_double("--grace", 0, 86400, &c.grace_s))
    return BD_EXIT_USAGE;
  bd_wdev_spec spec;
  bd_err err = {0};
  if (bd_worker_parse_devices(c.devices, c.instances_per_gpu, &spec, &err) != BD_OK) {
    fprintf(stderr, "batchdet worker: %s\n", err.msg);
    return BD_EXIT_USAGE;
  }
  if (c.cpu_threads == 0 && spec.kind == BD_WDEV_CPU) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c.cpu_threads = cores > spec.n ? (int)(cores / spec.n) : 1;
  }
  if (spec.kind == BD_WDEV_CPU)
    bd_log(BD_LOG_INFO, "cpu: %d instance%s of %d threads; convs on %s", spec.n,
           spec.n == 1 ? "" : "s", c.cpu_threads, bd_cpu_conv_kernels());

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (bd_worker_run(&c, &err) != BD_OK) {
    fprintf(stderr, "batchdet worker: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  return BD_EXIT_OK;
}
