/* bd_kafka against librdkafka's in-process mock cluster.
 *
 * The consumer across cooperative rebalances: a partition that was paused (backpressure)
 * when it was revoked must be consumed again when it comes back to the same member after
 * backpressure ended, and a partition assigned while the member is paused must stay
 * paused until the member resumes.
 *
 * The first property is the one the worker e2e test (phase C) lost a shard to: librdkafka
 * keeps the pause flag of a revoked partition, so without bd_kafka's handling the
 * reassigned partition is never fetched and its manifests wait in Kafka for ever. The
 * expected counts come from what the test produced, never from the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "bd_kafka.h"

#define NPART 4
#define TOPIC "t.jobs"

typedef struct member {
  const char *name;
  bd_kafka_consumer *c;
  int assigned[NPART]; /* 1 while the partition is ours, by the callbacks */
  int assigns, revokes;
  int got[NPART]; /* messages received per partition */
  int total;
} member;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_assign(void *ctx, const char *topic, int32_t partition) {
  member *m = ctx;
  assert_string_equal(topic, TOPIC);
  assert_true(partition >= 0 && partition < NPART);
  assert_int_equal(m->assigned[partition], 0);
  m->assigned[partition] = 1;
  m->assigns++;
}

static void on_revoke(void *ctx, const char *topic, int32_t partition) {
  member *m = ctx;
  assert_string_equal(topic, TOPIC);
  assert_true(partition >= 0 && partition < NPART);
  m->assigned[partition] = 0;
  m->revokes++;
}

static int n_assigned(const member *m) {
  int n = 0;
  for (int i = 0; i < NPART; i++) n += m->assigned[i];
  return n;
}

static void join(member *m, const char *brokers, const char *name) {
  memset(m, 0, sizeof *m);
  m->name = name;
  bd_kafka_consumer_opts o = {.brokers = brokers,
                              .group = "g",
                              .topic = TOPIC,
                              .on_revoke = on_revoke,
                              .on_assign = on_assign,
                              .ctx = m,
                              .session_timeout_ms = 6000};
  bd_err err = {0};
  assert_int_equal(bd_kafka_consumer_new(&o, &m->c, &err), BD_OK);
}

static void poll_once(member *m) {
  bd_kafka_msg msg;
  bd_err err = {0};
  if (bd_kafka_consumer_poll(m->c, 20, &msg, &err) == BD_OK) {
    assert_true(msg.partition >= 0 && msg.partition < NPART);
    m->got[msg.partition]++;
    m->total++;
    bd_kafka_msg_clear(&msg);
  }
}

/* Polls every member until cond() holds; fails after timeout_s. */
static void poll_until(member **ms, int n, int (*cond)(member **), double timeout_s,
                       const char *what) {
  double deadline = now_s() + timeout_s;
  while (!cond(ms)) {
    if (now_s() > deadline) fail_msg("timed out after %.0f s waiting for: %s", timeout_s, what);
    for (int i = 0; i < n; i++) poll_once(ms[i]);
  }
}

static void poll_for(member **ms, int n, double s) {
  double end = now_s() + s;
  while (now_s() < end)
    for (int i = 0; i < n; i++) poll_once(ms[i]);
}

static int a_has_all(member **ms) {
  return n_assigned(ms[0]) == NPART;
}
static int split(member **ms) {
  return n_assigned(ms[1]) > 0 && n_assigned(ms[0]) + n_assigned(ms[1]) == NPART;
}

/* A one-broker mock cluster with `topic`; its bootstrap address in brokers. */
static rd_kafka_mock_cluster_t *mock_start(const char *topic, int nparts, rd_kafka_t **mrk,
                                           char *brokers, size_t cap) {
  char e[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e), RD_KAFKA_CONF_OK);
  *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  assert_non_null(*mrk);
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(*mrk, 1);
  assert_non_null(mc);
  assert_int_equal(rd_kafka_mock_topic_create(mc, topic, nparts, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  snprintf(brokers, cap, "%s", rd_kafka_mock_cluster_bootstraps(mc));
  return mc;
}

static void produce_keys(const char *brokers, int first, int n) {
  bd_kafka_producer *p = NULL;
  bd_err err = {0};
  bd_kafka_producer_opts po = {.brokers = brokers};
  assert_int_equal(bd_kafka_producer_new(&po, &p, &err), BD_OK);
  for (int i = first; i < first + n; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "job:%d", i);
    snprintf(val, sizeof val, "m%d", i);
    assert_int_equal(bd_kafka_produce(p, TOPIC, key, val, strlen(val), NULL, NULL, &err), BD_OK);
  }
  assert_int_equal(bd_kafka_flush(p, 30000, NULL, &err), BD_OK);
  bd_kafka_producer_destroy(p);
}

static int g_want;
static int a_got_want(member **ms) {
  return ms[0]->total >= g_want;
}

static void test_pause_across_rebalance(void **state) {
  (void)state;
  rd_kafka_t *mrk = NULL;
  char brokers[256];
  rd_kafka_mock_cluster_t *mc = mock_start(TOPIC, NPART, &mrk, brokers, sizeof brokers);

  member a, b;
  member *ms[2] = {&a, &b};
  bd_err err = {0};
  join(&a, brokers, "a");
  poll_until(ms, 1, a_has_all, 60, "a owns every partition");

  /* Backpressure on a; b joins and takes partitions that a had paused. */
  assert_int_equal(bd_kafka_consumer_pause(a.c, 1, &err), BD_OK);
  join(&b, brokers, "b");
  poll_until(ms, 2, split, 60, "a and b share the partitions");
  assert_true(a.revokes > 0);
  /* Backpressure ends while b owns them: only a's current assignment is resumed. */
  assert_int_equal(bd_kafka_consumer_pause(a.c, 0, &err), BD_OK);
  /* b leaves; its partitions come back to a. */
  assert_int_equal(bd_kafka_consumer_close(b.c, 30000, &err), BD_OK);
  bd_kafka_consumer_destroy(b.c);
  b.c = NULL;
  poll_until(ms, 1, a_has_all, 60, "a owns every partition again");

  /* Every message of every partition reaches a, the returned partitions included. */
  const int n = 40;
  produce_keys(brokers, 0, n);
  g_want = n;
  double deadline = now_s() + 30;
  while (!a_got_want(ms) && now_s() < deadline) poll_once(&a);
  if (a.total != n)
    fail_msg(
        "a received %d of %d messages (per partition %d %d %d %d): a partition paused "
        "before its revoke stayed paused after its reassignment",
        a.total, n, a.got[0], a.got[1], a.got[2], a.got[3]);
  for (int i = 0; i < NPART; i++) assert_true(a.got[i] > 0); /* 40 keys cover 4 partitions */

  /* Paused member: partitions assigned now must not be fetched until it resumes. */
  assert_int_equal(bd_kafka_consumer_pause(a.c, 1, &err), BD_OK);
  join(&b, brokers, "b2");
  poll_until(ms, 2, split, 60, "a and b2 share the partitions");
  assert_int_equal(bd_kafka_consumer_close(b.c, 30000, &err), BD_OK);
  bd_kafka_consumer_destroy(b.c);
  b.c = NULL;
  poll_until(ms, 1, a_has_all, 60, "a owns every partition (paused)");
  int before = a.total;
  produce_keys(brokers, n, n);
  poll_for(ms, 1, 3.0);
  assert_int_equal(a.total, before); /* nothing fetched while paused */
  assert_int_equal(bd_kafka_consumer_pause(a.c, 0, &err), BD_OK);
  g_want = before + n;
  deadline = now_s() + 30;
  while (!a_got_want(ms) && now_s() < deadline) poll_once(&a);
  assert_int_equal(a.total, before + n);

  assert_int_equal(bd_kafka_consumer_close(a.c, 30000, &err), BD_OK);
  bd_kafka_consumer_destroy(a.c);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(mrk);
}

/* The scheduler's ends: a topic's partition count, the partitions that received a
 * submit's messages, and the coordinator's auto-store consumer, whose group resumes
 * after the last message it was handed. The references are the mock topic's partition
 * count, the messages this test produced and the partitions they were read from. */
#define RTOPIC "t.reports"
#define RPART 3

static void rtopic_poll(bd_kafka_consumer *c, int want, int *got, int *seen, double timeout_s,
                        const char *what) {
  double deadline = now_s() + timeout_s;
  while (*got < want) {
    if (now_s() > deadline) fail_msg("timed out after %.0f s waiting for: %s", timeout_s, what);
    bd_kafka_msg msg;
    bd_err err = {0};
    if (bd_kafka_consumer_poll(c, 20, &msg, &err) != BD_OK) continue;
    assert_string_equal(msg.topic, RTOPIC);
    assert_true(msg.partition >= 0 && msg.partition < RPART);
    int i = -1;
    assert_int_equal(sscanf(msg.payload, "r%d", &i), 1);
    assert_true(i >= 0 && i < 1000 && seen[i] == 0); /* each message once */
    seen[i] = msg.partition + 1;
    (*got)++;
    bd_kafka_msg_clear(&msg);
  }
}

static void produce_reports(bd_kafka_producer *p, int first, int n) {
  bd_err err = {0};
  for (int i = first; i < first + n; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "w%d", i);
    snprintf(val, sizeof val, "r%d", i);
    assert_int_equal(bd_kafka_produce(p, RTOPIC, key, val, strlen(val), NULL, NULL, &err), BD_OK);
  }
}

static void test_partitions_and_auto_store(void **state) {
  (void)state;
  rd_kafka_t *mrk = NULL;
  char brokers[256];
  rd_kafka_mock_cluster_t *mc = mock_start(RTOPIC, RPART, &mrk, brokers, sizeof brokers);

  bd_kafka_producer *p = NULL;
  bd_err err = {0};
  bd_kafka_producer_opts po = {.brokers = brokers, .queue_full_wait_ms = 60000};
  assert_int_equal(bd_kafka_producer_new(&po, &p, &err), BD_OK);
  int n = -1;
  assert_int_equal(bd_kafka_partitions(p, RTOPIC, &n, &err), BD_OK);
  assert_int_equal(n, RPART);
  int reached = -1;
  assert_int_equal(bd_kafka_flush(p, 30000, &reached, &err), BD_OK);
  assert_int_equal(reached, 0); /* nothing produced yet */
  const int n1 = 30, n2 = 10;
  produce_reports(p, 0, n1);
  assert_int_equal(bd_kafka_flush(p, 30000, &reached, &err), BD_OK);

  static int seen[1000];
  memset(seen, 0, sizeof seen);
  int got = 0;
  bd_kafka_consumer *c = NULL;
  bd_kafka_consumer_opts co = {
      .brokers = brokers,
      .group = "coord",
      .topic = RTOPIC,
      .auto_store = 1,
      .session_timeout_ms = 6000}; /* the mock group waits for a member that left */
  assert_int_equal(bd_kafka_consumer_new(&co, &c, &err), BD_OK);
  rtopic_poll(c, n1, &got, seen, 60, "the first reports");
  int parts[RPART] = {0}, distinct = 0;
  for (int i = 0; i < n1; i++) {
    assert_true(seen[i] > 0);
    if (!parts[seen[i] - 1]++) distinct++;
  }
  assert_int_equal(reached, distinct);
  assert_int_equal(distinct, RPART); /* these 30 keys hash to every partition */
  assert_int_equal(bd_kafka_consumer_close(c, 30000, &err), BD_OK);
  bd_kafka_consumer_destroy(c);

  /* The same group again: only what came after the delivered messages. */
  produce_reports(p, n1, n2);
  assert_int_equal(bd_kafka_flush(p, 30000, NULL, &err), BD_OK);
  memset(seen, 0, sizeof seen);
  got = 0;
  assert_int_equal(bd_kafka_consumer_new(&co, &c, &err), BD_OK);
  rtopic_poll(c, n2, &got, seen, 60, "the later reports");
  double end = now_s() + 2.0;
  while (now_s() < end) {
    bd_kafka_msg msg;
    if (bd_kafka_consumer_poll(c, 20, &msg, NULL) == BD_OK) {
      char again[32];
      snprintf(again, sizeof again, "%s", msg.payload);
      bd_kafka_msg_clear(&msg);
      fail_msg("message %s delivered again to the group", again);
    }
  }
  for (int i = 0; i < n1 + n2; i++) assert_int_equal(seen[i] > 0, i >= n1);
  assert_int_equal(bd_kafka_consumer_close(c, 30000, &err), BD_OK);
  bd_kafka_consumer_destroy(c);

  /* A topic that does not exist is not a retriable error (the mock cluster would create
   * it on request, as brokers with auto.create.topics.enable do, so it refuses it). */
  rd_kafka_mock_topic_set_error(mc, "t.missing", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  n = -1;
  assert_int_equal(bd_kafka_partitions(p, "t.missing", &n, &err), BD_E_NOT_FOUND);
  assert_int_equal(n, 0);
  bd_kafka_producer_destroy(p);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(mrk);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pause_across_rebalance),
      cmocka_unit_test(test_partitions_and_auto_store),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
