/* The embedded Kafka daemon, driven as a real client would: an idempotent producer
 * and a consumer group over the daemon's bootstrap address, with a broker taken down
 * and brought back through the control FIFO in the middle of production. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "bd_config.h"

#define N_MSG 300

static pid_t g_pid;
static char g_bootstrap[512];
static char g_fifo[256];

static int start_daemon(void) {
  const char *bin = getenv("BD_KAFKA_MOCK");
  if (!bin) return -1;
  snprintf(g_fifo, sizeof g_fifo, "/tmp/bd-kafka-mock-%d.fifo", (int)getpid());
  int p[2];
  if (pipe(p) != 0) return -1;
  g_pid = fork();
  if (g_pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execl(bin, bin, "--brokers", "3", "--topic", "t.jobs:6:3", "--control-fifo", g_fifo,
          "--no-stdin", (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  FILE *f = fdopen(p[0], "r");
  if (!f || !fgets(g_bootstrap, sizeof g_bootstrap, f)) return -1;
  g_bootstrap[strcspn(g_bootstrap, "\n")] = '\0';
  fclose(f);
  return 0;
}

static void control(const char *cmd) {
  /* The daemon creates the FIFO before printing the bootstrap line. */
  FILE *f = fopen(g_fifo, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", cmd);
  fclose(f);
}

static int g_delivered, g_failed;
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  if (m->err)
    g_failed++;
  else
    g_delivered++;
}

static void test_produce_consume_with_broker_down(void **state) {
  (void)state;
  assert_int_equal(start_daemon(), 0);
  assert_non_null(strstr(g_bootstrap, "127.0.0.1") ? g_bootstrap : NULL);
  char err[512];
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(pc, "bootstrap.servers", g_bootstrap, err, sizeof err), 0);
  assert_int_equal(rd_kafka_conf_set(pc, "enable.idempotence", "true", err, sizeof err), 0);
  assert_int_equal(rd_kafka_conf_set(pc, "message.timeout.ms", "30000", err, sizeof err), 0);
  rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
  assert_non_null(p);
  for (int i = 0; i < N_MSG; i++) {
    char key[32], val[64];
    snprintf(key, sizeof key, "job-%d", i % 7);
    snprintf(val, sizeof val, "{\"n\":%d}", i);
    if (i == N_MSG / 3) control("down 2");
    if (i == 2 * N_MSG / 3) control("up 2");
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC("t.jobs"), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE(val, strlen(val)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    assert_int_equal(e, 0);
    rd_kafka_poll(p, 0);
  }
  assert_int_equal(rd_kafka_flush(p, 60000), 0);
  assert_int_equal(g_failed, 0);
  assert_int_equal(g_delivered, N_MSG);
  rd_kafka_destroy(p);

  rd_kafka_conf_t *cc = rd_kafka_conf_new();
  rd_kafka_conf_set(cc, "bootstrap.servers", g_bootstrap, err, sizeof err);
  rd_kafka_conf_set(cc, "group.id", "t-group", err, sizeof err);
  rd_kafka_conf_set(cc, "auto.offset.reset", "earliest", err, sizeof err);
  rd_kafka_conf_set(cc, "partition.assignment.strategy", "cooperative-sticky", err, sizeof err);
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof err);
  assert_non_null(c);
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, "t.jobs", RD_KAFKA_PARTITION_UA);
  assert_int_equal(rd_kafka_subscribe(c, subs), 0);
  rd_kafka_topic_partition_list_destroy(subs);
  static unsigned char seen[N_MSG];
  int got = 0;
  double deadline = bd_now() + 60;
  while (got < N_MSG && bd_now() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
    if (!m) continue;
    if (!m->err) {
      int n = -1;
      if (m->len < 60) {
        char tmp[64];
        memcpy(tmp, m->payload, m->len);
        tmp[m->len] = '\0';
        sscanf(tmp, "{\"n\":%d}", &n);
      }
      if (n >= 0 && n < N_MSG && !seen[n]) {
        seen[n] = 1;
        got++;
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  assert_int_equal(got, N_MSG);

  control("quit");
  int status = 0;
  for (int i = 0; i < 100; i++) {
    if (waitpid(g_pid, &status, WNOHANG) == g_pid) {
      g_pid = 0;
      break;
    }
    usleep(50000);
  }
  assert_int_equal(g_pid, 0);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int teardown(void **state) {
  (void)state;
  if (g_pid > 0) {
    kill(g_pid, SIGKILL);
    waitpid(g_pid, NULL, 0);
  }
  unlink(g_fifo);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_produce_consume_with_broker_down, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
