/* bd_skafka: see bd_skafka.h. */
#include "bd_skafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SK_MAX_PARTS 4096 /* partitions tracked for the "spread over" count */

struct bd_skafka_producer {
  rd_kafka_t *rk;
  pthread_mutex_t mu;
  long delivered, failed;
  char first_error[256];
  unsigned char used[SK_MAX_PARTS];
};

struct bd_skafka_consumer {
  rd_kafka_t *rk;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  bd_skafka_producer *p = opaque;
  pthread_mutex_lock(&p->mu);
  if (m->err) {
    if (!p->failed) snprintf(p->first_error, sizeof p->first_error, "%s", rd_kafka_err2str(m->err));
    p->failed++;
  } else {
    p->delivered++;
    if (m->partition >= 0 && m->partition < SK_MAX_PARTS) p->used[m->partition] = 1;
  }
  pthread_mutex_unlock(&p->mu);
}

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, bd_err *err) {
  char es[512];
  if (rd_kafka_conf_set(c, k, v, es, sizeof es) != RD_KAFKA_CONF_OK) {
    bd_err_set(err, BD_E_INVALID, "kafka: %s=%s: %s", k, v, es);
    return -1;
  }
  return 0;
}

bd_skafka_producer *bd_skafka_producer_new(const char *brokers, bd_err *err) {
  bd_skafka_producer *p = calloc(1, sizeof *p);
  if (!p) {
    bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  char es[512];
  /* Idempotence: a retried produce after a broker hiccup never duplicates a manifest
   * (duplicates would be harmless for results, but waste a worker's time). */
  if (conf_set(c, "bootstrap.servers", brokers, err) ||
      conf_set(c, "enable.idempotence", "true", err) ||
      conf_set(c, "message.timeout.ms", "60000", err) ||
      conf_set(c, "message.max.bytes", "16777216", err) || conf_set(c, "log_level", "3", err)) {
    rd_kafka_conf_destroy(c);
    goto fail;
  }
  rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
  rd_kafka_conf_set_opaque(c, p);
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof es);
  if (!p->rk) {
    rd_kafka_conf_destroy(c);
    bd_err_set(err, BD_E_INVALID, "kafka: producer: %s", es);
    goto fail;
  }
  return p;
fail:
  pthread_mutex_destroy(&p->mu);
  free(p);
  return NULL;
}

void bd_skafka_producer_destroy(bd_skafka_producer *p) {
  if (!p) return;
  if (p->rk) {
    rd_kafka_flush(p->rk, 5000);
    rd_kafka_destroy(p->rk);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

bd_status bd_skafka_partitions(bd_skafka_producer *p, const char *topic, int *n, bd_err *err) {
  *n = 0;
  rd_kafka_topic_t *t = rd_kafka_topic_new(p->rk, topic, NULL);
  if (!t) return bd_err_set(err, BD_E_INVALID, "kafka: topic %s", topic);
  const struct rd_kafka_metadata *md = NULL;
  bd_status st = BD_OK;
  rd_kafka_resp_err_t e = rd_kafka_metadata(p->rk, 0, t, &md, 10000);
  if (e) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: metadata of %s: %s", topic, rd_kafka_err2str(e));
  } else if (md->topic_cnt != 1 || md->topics[0].err) {
    st = bd_err_set(err, BD_E_NOT_FOUND, "kafka: topic %s: %s", topic,
                    md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not found");
  } else {
    *n = md->topics[0].partition_cnt;
  }
  if (md) rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(t);
  return st;
}

bd_status bd_skafka_produce(bd_skafka_producer *p, const char *topic, const char *key,
                            const void *value, size_t len, bd_err *err) {
  for (int tries = 0; tries < 600; tries++) {
    rd_kafka_resp_err_t e =
        rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE((void *)value, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (!e) {
      rd_kafka_poll(p->rk, 0);
      return BD_OK;
    }
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
      return bd_err_set(err, BD_E_UNAVAILABLE, "kafka: produce to %s: %s", topic,
                        rd_kafka_err2str(e));
    rd_kafka_poll(p->rk, 100); /* local queue full: let deliveries drain */
  }
  return bd_err_set(err, BD_E_TIMEOUT, "kafka: produce to %s: local queue stayed full", topic);
}

bd_status bd_skafka_flush(bd_skafka_producer *p, int timeout_ms, int *n_partitions, bd_err *err) {
  rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
  bd_status st = BD_OK;
  pthread_mutex_lock(&p->mu);
  if (e)
    st = bd_err_set(err, BD_E_TIMEOUT, "kafka: flush: %s (%ld delivered)", rd_kafka_err2str(e),
                    p->delivered);
  else if (p->failed)
    st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: %ld messages not delivered: %s", p->failed,
                    p->first_error);
  if (n_partitions) {
    int k = 0;
    for (int i = 0; i < SK_MAX_PARTS; i++) k += p->used[i];
    *n_partitions = k;
  }
  pthread_mutex_unlock(&p->mu);
  return st;
}

bd_skafka_consumer *bd_skafka_consumer_new(const char *brokers, const char *group,
                                           const char *topic, bd_err *err) {
  bd_skafka_consumer *c = calloc(1, sizeof *c);
  if (!c) {
    bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
    return NULL;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char es[512];
  if (conf_set(conf, "bootstrap.servers", brokers, err) || conf_set(conf, "group.id", group, err) ||
      conf_set(conf, "auto.offset.reset", "earliest", err) ||
      conf_set(conf, "partition.assignment.strategy", "cooperative-sticky", err) ||
      conf_set(conf, "log_level", "3", err)) {
    rd_kafka_conf_destroy(conf);
    free(c);
    return NULL;
  }
  c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es);
  if (!c->rk) {
    rd_kafka_conf_destroy(conf);
    bd_err_set(err, BD_E_INVALID, "kafka: consumer: %s", es);
    free(c);
    return NULL;
  }
  rd_kafka_poll_set_consumer(c->rk);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (e) {
    bd_err_set(err, BD_E_UNAVAILABLE, "kafka: subscribe %s: %s", topic, rd_kafka_err2str(e));
    bd_skafka_consumer_destroy(c);
    return NULL;
  }
  return c;
}

void bd_skafka_consumer_destroy(bd_skafka_consumer *c) {
  if (!c) return;
  if (c->rk) {
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
  }
  free(c);
}

bd_status bd_skafka_poll(bd_skafka_consumer *c, int timeout_ms, char **payload, size_t *len,
                         bd_err *err) {
  *payload = NULL;
  *len = 0;
  rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
  if (!m) return BD_E_TIMEOUT;
  bd_status st = BD_OK;
  if (m->err) {
    /* Partition EOF and transient broker errors are not fatal for a reader. */
    st = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF
             ? BD_E_TIMEOUT
             : bd_err_set(err, BD_E_UNAVAILABLE, "kafka: %s", rd_kafka_message_errstr(m));
  } else if (m->len > (16u << 20)) {
    st = bd_err_set(err, BD_E_LIMIT, "kafka: message of %zu bytes", m->len);
  } else {
    *payload = malloc(m->len + 1);
    if (!*payload) {
      st = bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
    } else {
      memcpy(*payload, m->payload, m->len);
      (*payload)[m->len] = '\0';
      *len = m->len;
    }
  }
  rd_kafka_message_destroy(m);
  return st;
}
