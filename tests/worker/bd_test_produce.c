/* Test tool for the worker tests.
 *
 *   bd_test_produce produce BROKERS TOPIC FILE
 *       produces each non-empty line of FILE as one message (key = "JOB:SHARD" of the
 *       line when it is a JSON object with a job, else "malformed"), through bd_kafka's idempotent
 *       producer; exits 0 when every message was acknowledged.
 *   bd_test_produce consume BROKERS TOPIC N TIMEOUT_S
 *       reads TOPIC from the beginning (all partitions, no group commits) until N messages
 *       or the timeout, printing one JSON line per message:
 *       {"partition":P,"offset":O,"key":"...","headers":{"name":"value"},"value":<string>}
 */
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_config.h"
#include "bd_kafka.h"

static int produce(const char *brokers, const char *topic, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return 1;
  }
  bd_kafka_producer *p = NULL;
  bd_err err = {0};
  int rc = 1, n = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  bd_kafka_producer_opts po = {.brokers = brokers};
  if (bd_kafka_producer_new(&po, &p, &err) != BD_OK) goto out;
  while ((len = getline(&line, &cap, f)) > 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if (len == 0) continue;
    /* Keyed by job AND shard: keyed by job alone, every shard of a job would land in one
     * partition and so on one worker. */
    char key[256] = "malformed";
    json_t *j = json_loadb(line, (size_t)len, 0, NULL);
    if (json_is_object(j) && json_is_string(json_object_get(j, "job")))
      snprintf(key, sizeof key, "%s:%lld", json_string_value(json_object_get(j, "job")),
               (long long)json_integer_value(json_object_get(j, "shard")));
    json_decref(j);
    if (bd_kafka_produce(p, topic, key, line, (size_t)len, NULL, NULL, &err) != BD_OK) goto out;
    n++;
  }
  if (bd_kafka_flush(p, 60000, NULL, &err) != BD_OK) goto out;
  rc = 0;
out:
  if (rc)
    fprintf(stderr, "bd_test_produce: %s\n", err.msg);
  else
    fprintf(stderr, "bd_test_produce: %d messages to %s\n", n, topic);
  free(line);
  bd_kafka_producer_destroy(p);
  fclose(f);
  return rc;
}

static int consume(const char *brokers, const char *topic, int want, double timeout_s) {
  char e[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers, e, sizeof e);
  rd_kafka_conf_set(conf, "group.id", "bd-test-consume", e, sizeof e);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e);
  rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
  if (!rk) {
    fprintf(stderr, "bd_test_produce: %s\n", e);
    return 1;
  }
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
  int parts = 0;
  double deadline = bd_now() + timeout_s;
  while (bd_now() < deadline && parts == 0) {
    if (rd_kafka_metadata(rk, 0, t, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (md->topic_cnt == 1) parts = md->topics[0].partition_cnt;
      rd_kafka_metadata_destroy(md);
    }
  }
  rd_kafka_topic_destroy(t);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts ? parts : 1);
  for (int i = 0; i < parts; i++)
    rd_kafka_topic_partition_list_add(l, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  int got = 0;
  while (got < want && bd_now() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (!m->err) {
      json_t *o = json_object(), *h = json_object();
      rd_kafka_headers_t *hdrs = NULL;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t sz;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &sz) == 0; i++)
          json_object_set_new(h, name, json_stringn(val ? val : "", val ? sz : 0));
      }
      json_object_set_new(o, "partition", json_integer(m->partition));
      json_object_set_new(o, "offset", json_integer(m->offset));
      json_object_set_new(o, "key", json_stringn(m->key ? m->key : "", m->key ? m->key_len : 0));
      json_object_set_new(o, "headers", h);
      json_object_set_new(o, "value", json_stringn(m->payload ? m->payload : "", m->len));
      char *s = json_dumps(o, JSON_COMPACT);
      if (s) printf("%s\n", s);
      free(s);
      json_decref(o);
      got++;
    }
    rd_kafka_message_destroy(m);
  }
  fflush(stdout);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return got >= want ? 0 : 3;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "produce")) return produce(argv[2], argv[3], argv[4]);
  if (argc == 6 && !strcmp(argv[1], "consume"))
    return consume(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
  fprintf(stderr,
          "usage: bd_test_produce produce BROKERS TOPIC FILE\n"
          "       bd_test_produce consume BROKERS TOPIC N TIMEOUT_S\n");
  return 2;
}
