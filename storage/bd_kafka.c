/* bd_kafka: see bd_kafka.h. */
#include "bd_kafka.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_config.h"

#define MAX_PARTS 4096 /* partitions tracked for bd_kafka_flush's "reached" count */

struct bd_kafka_consumer {
  rd_kafka_t *rk;
  int auto_store;    /* offsets stored by librdkafka as messages are delivered */
  int assigned_once; /* a SyncGroup assignment (possibly empty) reached this member */
  int paused;        /* the caller's last bd_kafka_consumer_pause state (backpressure) */
  bd_kafka_revoke_fn on_revoke;
  bd_kafka_assign_fn on_assign;
  void *ctx;
  char rebalance_err[256]; /* a failed (un)assign, reported by the next poll */
  int close_abandoned;     /* bd_kafka_consumer_close timed out */
};

struct bd_kafka_producer {
  rd_kafka_t *rk;
  int queue_full_wait_ms;
  pthread_mutex_t mu; /* guards the delivery counts below (delivery reports run in any
                         thread that polls or flushes) */
  long delivered;
  long failed; /* since the previous flush */
  char first_error[256];
  unsigned char reached[MAX_PARTS]; /* partitions that acknowledged a message */
};

void bd_kafka_msg_clear(bd_kafka_msg *m) {
  if (!m) return;
  free(m->key);
  free(m->payload);
  memset(m, 0, sizeof *m);
}

static bd_status set_conf(rd_kafka_conf_t *conf, const char *k, const char *v, bd_err *err) {
  char e[512];
  if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK)
    return bd_err_set(err, BD_E_INVALID, "kafka: %s=%s: %s", k, v, e);
  return BD_OK;
}

static void rebalance_error(bd_kafka_consumer *c, const char *what, rd_kafka_error_t *er) {
  if (!er) return;
  if (!c->rebalance_err[0])
    snprintf(c->rebalance_err, sizeof c->rebalance_err, "kafka: %s: %s", what,
             rd_kafka_error_string(er));
  rd_kafka_error_destroy(er);
}

/* Pause state across rebalances: librdkafka keeps a partition's application pause flag on
 * its (cached) partition object when the partition is revoked, and a later assignment of
 * the same partition to this member starts paused again, with no error and no fetch. A
 * partition paused by backpressure, revoked, then reassigned after backpressure ended
 * (so the resume of "the assignment" did not include it) would never be consumed again:
 * its manifests would wait in Kafka for ever while the member heartbeats and keeps it. So
 * a partition leaves the assignment resumed, and enters it in the caller's current pause
 * state. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  bd_kafka_consumer *c = opaque;
  if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    c->assigned_once = 1;
    rd_kafka_error_t *er = rd_kafka_incremental_assign(rk, parts);
    if (er) {
      rebalance_error(c, "incremental assign", er);
      return;
    }
    /* Per-partition errors only say "not assigned/unknown": the partitions were just
     * assigned, so there is nothing to act on. */
    if (c->paused) (void)rd_kafka_pause_partitions(rk, parts);
    for (int i = 0; i < parts->cnt; i++)
      if (c->on_assign) c->on_assign(c->ctx, parts->elems[i].topic, parts->elems[i].partition);
  } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    /* Tell the worker first: its in-flight shards of these partitions must not store
     * offsets any more (another member redoes them). */
    for (int i = 0; i < parts->cnt; i++)
      if (c->on_revoke) c->on_revoke(c->ctx, parts->elems[i].topic, parts->elems[i].partition);
    /* Unconditionally, not only when c->paused: a pause call that failed half-way must
     * not leave a flag behind either. The partitions stop fetching here anyway. */
    (void)rd_kafka_resume_partitions(rk, parts);
    rebalance_error(c, "incremental unassign", rd_kafka_incremental_unassign(rk, parts));
  } else {
    /* A rebalance error: drop these partitions as if revoked (librdkafka's advice), so
     * their in-flight shards store no offsets and no pause flag survives. */
    for (int i = 0; parts && i < parts->cnt; i++)
      if (c->on_revoke) c->on_revoke(c->ctx, parts->elems[i].topic, parts->elems[i].partition);
    if (parts) (void)rd_kafka_resume_partitions(rk, parts);
    if (parts && strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
      rebalance_error(c, "incremental unassign", rd_kafka_incremental_unassign(rk, parts));
    else
      rd_kafka_assign(rk, NULL);
  }
}

bd_status bd_kafka_consumer_new(const bd_kafka_consumer_opts *o, bd_kafka_consumer **out,
                                bd_err *err) {
  bd_status st = BD_OK;
  char e[512];
  rd_kafka_conf_t *conf = NULL;
  bd_kafka_consumer *c = calloc(1, sizeof *c);
  if (!c) return bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
  if (!o->brokers || !*o->brokers || !o->group || !o->topic) {
    st = bd_err_set(err, BD_E_INVALID, "kafka: brokers, group and topic are required");
    goto out;
  }
  c->on_revoke = o->on_revoke;
  c->on_assign = o->on_assign;
  c->ctx = o->ctx;
  c->auto_store = o->auto_store != 0;
  conf = rd_kafka_conf_new();
  char max_msg[32];
  snprintf(max_msg, sizeof max_msg, "%u", BD_KAFKA_MAX_MESSAGE);
  if ((st = set_conf(conf, "bootstrap.servers", o->brokers, err)) ||
      (st = set_conf(conf, "group.id", o->group, err)) ||
      (st = set_conf(conf, "partition.assignment.strategy", "cooperative-sticky", err)) ||
      (st = set_conf(conf, "auto.offset.reset", "earliest", err)) ||
      (st = set_conf(conf, "fetch.max.bytes", max_msg, err)) ||
      (st = set_conf(conf, "log_level", "3", err)))
    goto out;
  /* Auto-store keeps librdkafka's defaults (store on delivery, commit every 5 s). */
  if (!c->auto_store && ((st = set_conf(conf, "enable.auto.offset.store", "false", err)) ||
                         (st = set_conf(conf, "enable.auto.commit", "true", err)) ||
                         (st = set_conf(conf, "auto.commit.interval.ms", "1000", err))))
    goto out;
  /* librdkafka's own debug contexts (e.g. "cgrp,consumer") for diagnosing group trouble. */
  const char *dbg = getenv("BATCHDET_KAFKA_DEBUG");
  if (dbg && *dbg &&
      ((st = set_conf(conf, "debug", dbg, err)) || (st = set_conf(conf, "log_level", "7", err))))
    goto out;
  if (o->instance_id && *o->instance_id &&
      (st = set_conf(conf, "group.instance.id", o->instance_id, err)))
    goto out;
  if (o->session_timeout_ms > 0) {
    char v[32];
    snprintf(v, sizeof v, "%d", o->session_timeout_ms);
    if ((st = set_conf(conf, "session.timeout.ms", v, err))) goto out;
  }
  rd_kafka_conf_set_opaque(conf, c);
  rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
  c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
  if (!c->rk) {
    st = bd_err_set(err, BD_E_INVALID, "kafka: %s", e);
    goto out;
  }
  conf = NULL; /* owned by rk now */
  rd_kafka_poll_set_consumer(c->rk);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, o->topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t re = rd_kafka_subscribe(c->rk, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (re) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: subscribe %s: %s", o->topic,
                    rd_kafka_err2str(re));
    goto out;
  }
  *out = c;
  c = NULL;
out:
  if (conf) rd_kafka_conf_destroy(conf);
  if (c) bd_kafka_consumer_destroy(c);
  return st;
}

bd_status bd_kafka_consumer_poll(bd_kafka_consumer *c, int timeout_ms, bd_kafka_msg *msg,
                                 bd_err *err) {
  memset(msg, 0, sizeof *msg);
  if (c->rebalance_err[0]) { /* set by the rebalance callback inside an earlier poll */
    bd_status st = bd_err_set(err, BD_E_UNAVAILABLE, "%s", c->rebalance_err);
    c->rebalance_err[0] = '\0';
    return st;
  }
  rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
  if (!m) return BD_E_TIMEOUT;
  bd_status st = BD_OK;
  if (m->err) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
      st = BD_E_TIMEOUT;
    else
      st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: %s", rd_kafka_message_errstr(m));
    goto out;
  }
  /* Its offset is stored already; the manual-store caller must see it to move on. */
  if (c->auto_store && m->len > BD_KAFKA_MAX_MESSAGE) {
    st = bd_err_set(err, BD_E_LIMIT, "kafka: message of %zu bytes in %s[%d]@%lld", m->len,
                    rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset);
    goto out;
  }
  snprintf(msg->topic, sizeof msg->topic, "%s", rd_kafka_topic_name(m->rkt));
  msg->partition = m->partition;
  msg->offset = m->offset;
  msg->len = m->len;
  msg->payload = malloc(m->len + 1);
  msg->key = malloc(m->key_len + 1);
  if (!msg->payload || !msg->key) {
    bd_kafka_msg_clear(msg);
    st = bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
    goto out;
  }
  if (m->len) memcpy(msg->payload, m->payload, m->len);
  msg->payload[m->len] = '\0';
  if (m->key_len) memcpy(msg->key, m->key, m->key_len);
  msg->key[m->key_len] = '\0';
out:
  rd_kafka_message_destroy(m);
  return st;
}

bd_status bd_kafka_consumer_store(bd_kafka_consumer *c, const char *topic, int32_t partition,
                                  int64_t next_offset, bd_err *err) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, partition)->offset = next_offset;
  rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
  if (!e && l->elems[0].err) e = l->elems[0].err;
  rd_kafka_topic_partition_list_destroy(l);
  if (e)
    return bd_err_set(err, BD_E_UNAVAILABLE, "kafka: store offset %s[%d]@%lld: %s", topic,
                      (int)partition, (long long)next_offset, rd_kafka_err2str(e));
  return BD_OK;
}

bd_status bd_kafka_consumer_pause(bd_kafka_consumer *c, int pause, bd_err *err) {
  rd_kafka_topic_partition_list_t *l = NULL;
  rd_kafka_resp_err_t e = rd_kafka_assignment(c->rk, &l);
  if (!e) e = pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
  if (l) rd_kafka_topic_partition_list_destroy(l);
  /* Remembered even on error: partitions assigned from now on take this state. */
  c->paused = pause != 0;
  if (e)
    return bd_err_set(err, BD_E_UNAVAILABLE, "kafka: %s: %s", pause ? "pause" : "resume",
                      rd_kafka_err2str(e));
  return BD_OK;
}

int64_t bd_kafka_consumer_lag(bd_kafka_consumer *c) {
  rd_kafka_topic_partition_list_t *l = NULL;
  if (rd_kafka_assignment(c->rk, &l) || !l) return -1;
  int64_t lag = 0;
  int known = 0;
  rd_kafka_position(c->rk, l);
  for (int i = 0; i < l->cnt; i++) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_get_watermark_offsets(c->rk, l->elems[i].topic, l->elems[i].partition, &lo, &hi) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
      continue;
    int64_t pos = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
    if (hi >= pos) {
      lag += hi - pos;
      known = 1;
    }
  }
  rd_kafka_topic_partition_list_destroy(l);
  return known ? lag : -1;
}

bd_status bd_kafka_consumer_close(bd_kafka_consumer *c, int timeout_ms, bd_err *err) {
  if (!c || !c->rk) return BD_OK;
  const double deadline = bd_now() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
  /* The stored offsets are committed (asynchronously here, and by the close itself with
   * enable.auto.commit): the close runs in librdkafka's background, and this thread serves
   * its rebalance callbacks on q until it ends or the deadline passes. */
  (void)rd_kafka_commit(c->rk, NULL, 1); /* queued now, before the partitions go */
  rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
  if (!q) return bd_err_set(err, BD_E_NOMEM, "kafka: close: out of memory");
  rd_kafka_error_t *er = rd_kafka_consumer_close_queue(c->rk, q);
  bd_status st = BD_OK;
  if (er) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: close: %s", rd_kafka_error_string(er));
    rd_kafka_error_destroy(er);
  }
  while (st == BD_OK && !rd_kafka_consumer_closed(c->rk)) {
    if (bd_now() >= deadline) {
      c->close_abandoned = 1;
      st = bd_err_set(err, BD_E_TIMEOUT,
                      "kafka: leaving the group did not finish within %.1f s (brokers "
                      "unreachable?); abandoned: offsets since the last commit are redone",
                      timeout_ms / 1000.0);
      break;
    }
    /* Events, not callbacks, come out of q (rd_kafka_queue_poll_callback aborts on one
     * with no callback, such as the commit's result): a revocation is handed to
     * rebalance_cb here, as the synchronous close would have. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
    if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
      rebalance_cb(c->rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), c);
    if (ev) rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  return st;
}

void bd_kafka_consumer_destroy(bd_kafka_consumer *c) {
  if (!c) return;
  /* librdkafka < 2.3 asserts in rd_kafka_sticky_assignor_state_destroy when a
   * cooperative-sticky member is destroyed before its first assignment (librdkafka
   * issue #4312, fixed by PR #4381). Such a member holds no partitions and no stored
   * offsets, so its handle is left to process exit instead of aborting the process. */
  if (c->rk && !c->assigned_once && rd_kafka_version() < 0x020300ff) c->rk = NULL;
  if (c->rk && c->close_abandoned)
    rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
  else if (c->rk)
    rd_kafka_destroy(c->rk);
  free(c);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  bd_kafka_producer *p = opaque;
  pthread_mutex_lock(&p->mu);
  if (m->err) {
    if (!p->failed) snprintf(p->first_error, sizeof p->first_error, "%s", rd_kafka_err2str(m->err));
    p->failed++;
  } else {
    p->delivered++;
    if (m->partition >= 0 && m->partition < MAX_PARTS) p->reached[m->partition] = 1;
  }
  pthread_mutex_unlock(&p->mu);
}

bd_status bd_kafka_producer_new(const bd_kafka_producer_opts *o, bd_kafka_producer **out,
                                bd_err *err) {
  bd_status st = BD_OK;
  char e[512], max_msg[32];
  bd_kafka_producer *p = calloc(1, sizeof *p);
  if (!p) return bd_err_set(err, BD_E_NOMEM, "kafka: out of memory");
  pthread_mutex_init(&p->mu, NULL);
  p->queue_full_wait_ms = o->queue_full_wait_ms > 0 ? o->queue_full_wait_ms : 10000;
  snprintf(max_msg, sizeof max_msg, "%u", BD_KAFKA_MAX_MESSAGE);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if ((st = set_conf(conf, "bootstrap.servers", o->brokers ? o->brokers : "", err)) ||
      (st = set_conf(conf, "enable.idempotence", "true", err)) ||
      (st = set_conf(conf, "message.timeout.ms", "60000", err)) ||
      (st = set_conf(conf, "message.max.bytes", max_msg, err)) ||
      (st = set_conf(conf, "linger.ms", "5", err)) || (st = set_conf(conf, "log_level", "3", err)))
    goto out;
  rd_kafka_conf_set_opaque(conf, p);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!p->rk) {
    st = bd_err_set(err, BD_E_INVALID, "kafka: %s", e);
    goto out;
  }
  conf = NULL;
  *out = p;
  p = NULL;
out:
  if (conf) rd_kafka_conf_destroy(conf);
  if (p) bd_kafka_producer_destroy(p);
  return st;
}

bd_status bd_kafka_partitions(bd_kafka_producer *p, const char *topic, int *n, bd_err *err) {
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

bd_status bd_kafka_produce(bd_kafka_producer *p, const char *topic, const char *key,
                           const void *value, size_t len, const char *hname, const char *hvalue,
                           bd_err *err) {
  rd_kafka_headers_t *h = NULL;
  if (hname) {
    h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, hname, -1, hvalue ? hvalue : "", -1);
  }
  /* A poll returns early when it served a delivery report, so the attempts are bounded
   * by the deadline and, at worst one per millisecond, by count. */
  double deadline = bd_now() + p->queue_full_wait_ms / 1000.0;
  for (int attempt = 0; attempt <= p->queue_full_wait_ms; attempt++) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (!e) {
      /* Headers now owned by the message. Serve delivery reports now, so that their
       * messages are freed even when this producer is seldom flushed. */
      rd_kafka_poll(p->rk, 0);
      return BD_OK;
    }
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      if (h) rd_kafka_headers_destroy(h);
      return bd_err_set(err, BD_E_UNAVAILABLE, "kafka: produce to %s: %s", topic,
                        rd_kafka_err2str(e));
    }
    if (bd_now() >= deadline) break;
    rd_kafka_poll(p->rk, 50); /* queue full: let deliveries drain */
  }
  if (h) rd_kafka_headers_destroy(h);
  return bd_err_set(err, BD_E_TIMEOUT, "kafka: produce to %s: local queue stayed full", topic);
}

bd_status bd_kafka_flush(bd_kafka_producer *p, int timeout_ms, int *n_partitions, bd_err *err) {
  rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
  bd_status st = BD_OK;
  pthread_mutex_lock(&p->mu);
  if (e) {
    st = bd_err_set(err, BD_E_TIMEOUT, "kafka: flush: %s (%ld delivered)", rd_kafka_err2str(e),
                    p->delivered);
  } else if (p->failed) {
    st = bd_err_set(err, BD_E_UNAVAILABLE, "kafka: %ld messages not delivered (%s)", p->failed,
                    p->first_error);
    /* Failures are counted since the previous flush, so that one lost report does not
     * make every later flush of a long-lived producer fail. */
    p->failed = 0;
  }
  if (n_partitions) {
    int k = 0;
    for (int i = 0; i < MAX_PARTS; i++) k += p->reached[i];
    *n_partitions = k;
  }
  pthread_mutex_unlock(&p->mu);
  return st;
}

void bd_kafka_producer_purge(bd_kafka_producer *p) {
  if (p && p->rk) (void)rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

void bd_kafka_producer_destroy(bd_kafka_producer *p) {
  if (!p) return;
  if (p->rk) {
    rd_kafka_flush(p->rk, 5000);
    rd_kafka_destroy(p->rk);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}
