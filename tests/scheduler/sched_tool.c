/* Test helper for the scheduler tests: Kafka ends a test script (python) lacks.
 *   sched_tool consume BROKERS TOPIC GROUP EXPECT TIMEOUT_S
 *       prints "KEY<TAB>PAYLOAD" per message until EXPECT messages or the timeout
 *       (then waits 1 s more for stray extra messages, so that a surplus is seen).
 *   sched_tool produce BROKERS TOPIC   (stdin lines "KEY<TAB>PAYLOAD")
 * Exit 0 when done (consume: EXPECT reached), 1 otherwise. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int consume(const char *brokers, const char *topic, const char *group, long expect,
                   double timeout) {
  char err[512];
  rd_kafka_conf_t *cc = rd_kafka_conf_new();
  rd_kafka_conf_set(cc, "bootstrap.servers", brokers, err, sizeof err);
  rd_kafka_conf_set(cc, "group.id", group, err, sizeof err);
  rd_kafka_conf_set(cc, "auto.offset.reset", "earliest", err, sizeof err);
  rd_kafka_conf_set(cc, "log_level", "3", err, sizeof err);
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof err);
  if (!c) return 1;
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(c, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  long got = 0;
  double deadline = now() + timeout, extra_until = -1;
  while (now() < deadline && (extra_until < 0 || now() < extra_until)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
    if (!m) continue;
    if (!m->err) {
      printf("%.*s\t%.*s\n", (int)m->key_len, (const char *)m->key, (int)m->len,
             (const char *)m->payload);
      if (++got == expect) extra_until = now() + 1.0;
    }
    rd_kafka_message_destroy(m);
  }
  fflush(stdout);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  return got >= expect ? 0 : 1;
}

static int produce(const char *brokers, const char *topic) {
  char err[512];
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  rd_kafka_conf_set(pc, "bootstrap.servers", brokers, err, sizeof err);
  rd_kafka_conf_set(pc, "log_level", "3", err, sizeof err);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
  if (!p) return 1;
  static char line[1 << 20];
  int rc = 0;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = '\0';
    char *tab = strchr(line, '\t');
    if (!tab) continue;
    *tab = '\0';
    if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(line, strlen(line)),
                          RD_KAFKA_V_VALUE(tab + 1, strlen(tab + 1)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END))
      rc = 1;
    rd_kafka_poll(p, 0);
  }
  if (rd_kafka_flush(p, 30000)) rc = 1;
  rd_kafka_destroy(p);
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 7 && !strcmp(argv[1], "consume"))
    return consume(argv[2], argv[3], argv[4], atol(argv[5]), atof(argv[6]));
  if (argc == 4 && !strcmp(argv[1], "produce")) return produce(argv[2], argv[3]);
  fprintf(
      stderr,
      "usage: sched_tool consume BROKERS TOPIC GROUP EXPECT TIMEOUT_S | produce BROKERS TOPIC\n");
  return 2;
}
