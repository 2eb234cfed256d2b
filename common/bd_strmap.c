#include "bd_strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct bd_strmap {
  size_t mask, n, max;
  const char **keys;
  long *vals;
};

unsigned long long bd_str_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h;
}

bd_strmap *bd_strmap_new(size_t max_keys) {
  if (max_keys > ((size_t)1 << 40)) return NULL;
  size_t cap = 16;
  while (cap < max_keys * 2 + 2) cap <<= 1;
  bd_strmap *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->keys = calloc(cap, sizeof *m->keys);
  m->vals = calloc(cap, sizeof *m->vals);
  if (!m->keys || !m->vals) {
    bd_strmap_destroy(m);
    return NULL;
  }
  m->mask = cap - 1;
  m->max = max_keys;
  return m;
}

void bd_strmap_destroy(bd_strmap *m) {
  if (!m) return;
  free(m->keys);
  free(m->vals);
  free(m);
}

long *bd_strmap_put(bd_strmap *m, const char *key, long value, int *inserted) {
  if (inserted) *inserted = 0;
  /* load <= 1/2 by construction, so the probe ends at a free slot */
  for (size_t i = (size_t)bd_str_hash(key) & m->mask;; i = (i + 1) & m->mask) {
    if (!m->keys[i]) {
      if (m->n >= m->max) return NULL;
      m->keys[i] = key;
      m->vals[i] = value;
      m->n++;
      if (inserted) *inserted = 1;
      return &m->vals[i];
    }
    if (strcmp(m->keys[i], key) == 0) return &m->vals[i];
  }
}
