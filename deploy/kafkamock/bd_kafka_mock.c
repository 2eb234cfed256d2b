/* batchdet-kafka-mock: an embedded Kafka cluster for development and tests.
 *
 * It runs librdkafka's mock cluster (real Kafka protocol on loopback sockets) as a small
 * daemon: N brokers, topics created with partitions, the bootstrap address printed on
 * stdout (and written to --bootstrap-file), and a control channel (stdin and/or a FIFO)
 * taking one command per line:
 *   down ID | up ID        take broker ID down / bring it back (fault tests)
 *   rtt ID MS              add round-trip latency to a broker
 *   topic NAME PARTS [RF]  create a topic
 *   quit                   stop
 * Clients cannot tell it from a real cluster; production uses real Kafka unchanged.
 * Exits 0 on quit, SIGTERM or SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TOPICS 32

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet-kafka-mock [--brokers N] [--topic NAME:PARTITIONS[:RF]]...\n"
          "                           [--bootstrap-file PATH] [--control-fifo PATH] [--no-stdin]\n"
          "\n"
          "An embedded Kafka cluster (librdkafka mock) on 127.0.0.1 for development and tests.\n"
          "Default topics: batchdet.jobs:12, batchdet.reports:3, batchdet.jobs.dlq:1 (RF = min(3, brokers)).\n"
          "Control commands (stdin or FIFO, one per line): down ID, up ID, rtt ID MS,\n"
          "topic NAME PARTS [RF], quit.\n");
}

static int create_topic(rd_kafka_mock_cluster_t *mc, const char *spec, int brokers) {
  char name[256];
  int parts = 1, rf = brokers < 3 ? brokers : 3;
  const char *c1 = strchr(spec, ':');
  size_t n = c1 ? (size_t)(c1 - spec) : strlen(spec);
  if (n == 0 || n >= sizeof name) return -1;
  memcpy(name, spec, n);
  name[n] = '\0';
  if (c1) {
    char *end;
    parts = (int)strtol(c1 + 1, &end, 10);
    if (*end == ':') rf = (int)strtol(end + 1, &end, 10);
    if (*end) return -1;
  }
  if (parts < 1 || parts > 10000 || rf < 1 || rf > brokers) return -1;
  rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, parts, rf);
  if (e) {
    fprintf(stderr, "kafka-mock: topic %s: %s\n", name, rd_kafka_err2str(e));
    return -1;
  }
  fprintf(stderr, "kafka-mock: topic %s partitions=%d rf=%d\n", name, parts, rf);
  return 0;
}

/* Executes one control line; returns 1 on quit. */
static int run_command(rd_kafka_mock_cluster_t *mc, char *line, int brokers) {
  char cmd[32], arg1[256];
  int a = 0, b = 0;
  line[strcspn(line, "\r\n")] = '\0';
  if (!*line) return 0;
  if (sscanf(line, "%31s", cmd) != 1) return 0;
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (strcmp(cmd, "quit") == 0) return 1;
  if (strcmp(cmd, "down") == 0 && sscanf(line, "%*s %d", &a) == 1) {
    e = rd_kafka_mock_broker_set_down(mc, a);
  } else if (strcmp(cmd, "up") == 0 && sscanf(line, "%*s %d", &a) == 1) {
    e = rd_kafka_mock_broker_set_up(mc, a);
  } else if (strcmp(cmd, "rtt") == 0 && sscanf(line, "%*s %d %d", &a, &b) == 2) {
    e = rd_kafka_mock_broker_set_rtt(mc, a, b);
  } else if (strcmp(cmd, "topic") == 0 && sscanf(line, "%*s %255s %d %d", arg1, &a, &b) >= 2) {
    char spec[300];
    if (b <= 0) b = brokers < 3 ? brokers : 3;
    snprintf(spec, sizeof spec, "%s:%d:%d", arg1, a, b);
    if (create_topic(mc, spec, brokers) != 0) fprintf(stderr, "kafka-mock: bad topic command\n");
    return 0;
  } else {
    fprintf(stderr, "kafka-mock: unknown command '%s'\n", line);
    return 0;
  }
  if (e)
    fprintf(stderr, "kafka-mock: '%s' failed: %s\n", line, rd_kafka_err2str(e));
  else
    fprintf(stderr, "kafka-mock: %s done\n", line);
  return 0;
}

int main(int argc, char **argv) {
  int brokers = 3, use_stdin = 1;
  const char *topics[MAX_TOPICS];
  int n_topics = 0;
  const char *bootstrap_file = NULL, *fifo = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--brokers") && v) {
      brokers = atoi(v);
      i++;
    } else if (!strcmp(a, "--topic") && v && n_topics < MAX_TOPICS) {
      topics[n_topics++] = v;
      i++;
    } else if (!strcmp(a, "--bootstrap-file") && v) {
      bootstrap_file = v;
      i++;
    } else if (!strcmp(a, "--control-fifo") && v) {
      fifo = v;
      i++;
    } else if (!strcmp(a, "--no-stdin")) {
      use_stdin = 0;
    } else {
      fprintf(stderr, "batchdet-kafka-mock: bad argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (brokers < 1 || brokers > 16) {
    fprintf(stderr, "batchdet-kafka-mock: --brokers must be 1..16\n");
    return 2;
  }

  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!rk) {
    fprintf(stderr, "batchdet-kafka-mock: %s\n", errstr);
    return 1;
  }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    fprintf(stderr, "batchdet-kafka-mock: could not start the mock cluster\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  int rc = 0, ffd = -1;
  if (n_topics == 0) {
    static const char *const defaults[] = {"batchdet.jobs:12", "batchdet.reports:3",
                                           "batchdet.jobs.dlq:1"};
    for (int i = 0; i < 3; i++)
      if (create_topic(mc, defaults[i], brokers) != 0) rc = 1;
  }
  for (int i = 0; i < n_topics; i++)
    if (create_topic(mc, topics[i], brokers) != 0) {
      fprintf(stderr, "batchdet-kafka-mock: bad --topic '%s'\n", topics[i]);
      rc = 2;
    }
  if (rc) goto out;

  const char *bs = rd_kafka_mock_cluster_bootstraps(mc);
  if (bootstrap_file) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", bootstrap_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", bs) < 0 || fclose(f) != 0 || rename(tmp, bootstrap_file) != 0) {
      fprintf(stderr, "batchdet-kafka-mock: cannot write %s: %s\n", bootstrap_file, strerror(errno));
      rc = 1;
      goto out;
    }
  }
  printf("%s\n", bs);
  fflush(stdout);

  if (fifo) {
    if (mkfifo(fifo, 0600) != 0 && errno != EEXIST) {
      fprintf(stderr, "batchdet-kafka-mock: mkfifo %s: %s\n", fifo, strerror(errno));
      rc = 1;
      goto out;
    }
    /* O_RDWR keeps the FIFO open when writers come and go, so poll never sees EOF. */
    ffd = open(fifo, O_RDWR | O_NONBLOCK);
    if (ffd < 0) {
      fprintf(stderr, "batchdet-kafka-mock: open %s: %s\n", fifo, strerror(errno));
      rc = 1;
      goto out;
    }
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char buf[2][1024];
  size_t len[2] = {0, 0};
  while (!g_stop) {
    struct pollfd pf[2];
    int np = 0, idx[2];
    if (use_stdin) {
      pf[np].fd = 0;
      pf[np].events = POLLIN;
      idx[np++] = 0;
    }
    if (ffd >= 0) {
      pf[np].fd = ffd;
      pf[np].events = POLLIN;
      idx[np++] = 1;
    }
    int r = poll(pf, (nfds_t)np, 200);
    if (r <= 0) continue;
    for (int k = 0; k < np; k++) {
      if (!(pf[k].revents & (POLLIN | POLLHUP))) continue;
      int s = idx[k];
      ssize_t got = read(pf[k].fd, buf[s] + len[s], sizeof buf[s] - 1 - len[s]);
      if (got <= 0) {
        if (s == 0) use_stdin = 0; /* stdin closed: keep running, controlled by FIFO/signals */
        continue;
      }
      len[s] += (size_t)got;
      buf[s][len[s]] = '\0';
      char *nl;
      while ((nl = memchr(buf[s], '\n', len[s])) != NULL) {
        *nl = '\0';
        if (run_command(mc, buf[s], brokers)) g_stop = 1;
        size_t used = (size_t)(nl - buf[s]) + 1;
        memmove(buf[s], nl + 1, len[s] - used);
        len[s] -= used;
      }
      if (len[s] == sizeof buf[s] - 1) len[s] = 0; /* overlong line: drop it */
    }
  }
  fprintf(stderr, "kafka-mock: stopping\n");
out:
  if (ffd >= 0) close(ffd);
  if (fifo) unlink(fifo);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return rc;
}
