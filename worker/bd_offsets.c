#include "bd_offsets.h"

#include <stdlib.h>
#include <string.h>

/* One partition: a ring of tracked offsets in increasing order with done flags. */
typedef struct part {
  char *topic;
  int32_t partition;
  int64_t *off;
  uint8_t *done;
  int head, len, cap;
  int64_t committed; /* last offset returned by committable, -1 none */
} part;

struct bd_offsets {
  part *parts;
  int n, cap;
  int in_flight;
};

bd_status bd_offsets_new(bd_offsets **out, bd_err *err) {
  bd_offsets *o = calloc(1, sizeof *o);
  if (!o) return bd_err_set(err, BD_E_NOMEM, "offsets: out of memory");
  *out = o;
  return BD_OK;
}

void bd_offsets_destroy(bd_offsets *o) {
  if (!o) return;
  for (int i = 0; i < o->n; i++) {
    free(o->parts[i].topic);
    free(o->parts[i].off);
    free(o->parts[i].done);
  }
  free(o->parts);
  free(o);
}

static part *find(bd_offsets *o, const char *topic, int32_t partition, int create) {
  for (int i = 0; i < o->n; i++)
    if (o->parts[i].partition == partition && strcmp(o->parts[i].topic, topic) == 0)
      return &o->parts[i];
  if (!create) return NULL;
  if (o->n == o->cap) {
    int cap = o->cap ? o->cap * 2 : 16;
    part *np = realloc(o->parts, (size_t)cap * sizeof *np);
    if (!np) return NULL;
    o->parts = np;
    o->cap = cap;
  }
  part *p = &o->parts[o->n];
  memset(p, 0, sizeof *p);
  p->topic = strdup(topic);
  if (!p->topic) return NULL;
  p->partition = partition;
  p->committed = -1;
  o->n++;
  return p;
}

static int64_t *at_off(part *p, int i) { return &p->off[(p->head + i) % p->cap]; }
static uint8_t *at_done(part *p, int i) { return &p->done[(p->head + i) % p->cap]; }

bd_status bd_offsets_track(bd_offsets *o, const char *topic, int32_t partition, int64_t offset,
                           bd_err *err) {
  part *p = find(o, topic, partition, 1);
  if (!p) return bd_err_set(err, BD_E_NOMEM, "offsets: out of memory");
  if (p->len > 0 && *at_off(p, p->len - 1) >= offset)
    return bd_err_set(err, BD_E_INTERNAL, "offsets: %s[%d] offset %lld tracked out of order",
                      topic, (int)partition, (long long)offset);
  if (p->len == p->cap) {
    int cap = p->cap ? p->cap * 2 : 64;
    int64_t *no = malloc((size_t)cap * sizeof *no);
    uint8_t *nd = malloc((size_t)cap);
    if (!no || !nd) {
      free(no);
      free(nd);
      return bd_err_set(err, BD_E_NOMEM, "offsets: out of memory");
    }
    for (int i = 0; i < p->len; i++) {
      no[i] = *at_off(p, i);
      nd[i] = *at_done(p, i);
    }
    free(p->off);
    free(p->done);
    p->off = no;
    p->done = nd;
    p->head = 0;
    p->cap = cap;
  }
  *at_off(p, p->len) = offset;
  *at_done(p, p->len) = 0;
  p->len++;
  o->in_flight++;
  return BD_OK;
}

bd_status bd_offsets_done(bd_offsets *o, const char *topic, int32_t partition, int64_t offset) {
  part *p = find(o, topic, partition, 0);
  if (!p) return BD_E_NOT_FOUND;
  /* Binary search: offsets in the ring are increasing. */
  int lo = 0, hi = p->len - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int64_t v = *at_off(p, mid);
    if (v == offset) {
      if (*at_done(p, mid)) return BD_OK;
      *at_done(p, mid) = 1;
      o->in_flight--;
      return BD_OK;
    }
    if (v < offset)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return BD_E_NOT_FOUND;
}

static int64_t advance(part *p) {
  int64_t next = -1;
  while (p->len > 0 && *at_done(p, 0)) {
    next = *at_off(p, 0) + 1;
    p->head = (p->head + 1) % p->cap;
    p->len--;
  }
  if (next < 0 || next <= p->committed) return -1;
  p->committed = next;
  return next;
}

int64_t bd_offsets_committable(bd_offsets *o, const char *topic, int32_t partition) {
  part *p = find(o, topic, partition, 0);
  return p ? advance(p) : -1;
}

void bd_offsets_revoke(bd_offsets *o, const char *topic, int32_t partition) {
  part *p = find(o, topic, partition, 0);
  if (!p) return;
  for (int i = 0; i < p->len; i++)
    if (!*at_done(p, i)) o->in_flight--;
  p->len = 0;
  p->head = 0;
  p->committed = -1;
}

int bd_offsets_in_flight(const bd_offsets *o) { return o->in_flight; }

int bd_offsets_foreach_committable(bd_offsets *o,
                                   void (*fn)(void *ctx, const char *topic, int32_t partition,
                                              int64_t offset),
                                   void *ctx) {
  int n = 0;
  for (int i = 0; i < o->n; i++) {
    int64_t c = advance(&o->parts[i]);
    if (c >= 0) {
      fn(ctx, o->parts[i].topic, o->parts[i].partition, c);
      n++;
    }
  }
  return n;
}
