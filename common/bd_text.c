/* bd_text: see bd_text.h. */
#include "bd_text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The length of the well-formed sequence at s (at most n bytes), 0 where there is none
 * (Unicode 15, table 3-7). */
static size_t seq_len(const unsigned char *s, size_t n) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;      /* overlong */
    else if (c == 0xED) hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;      /* overlong */
    else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

size_t bd_utf8_seq(const char *s, size_t n) {
  return n ? seq_len((const unsigned char *)s, n) : 0;
}

int bd_utf8_valid(const char *s, size_t n, size_t *bad) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    const size_t l = seq_len(u + i, n - i);
    if (!l) {
      if (bad) *bad = i;
      return 0;
    }
    i += l;
  }
  return 1;
}

char *bd_utf8_sanitize(const char *s) {
  const size_t n = strlen(s);
  if (n > (SIZE_MAX - 1) / 3) return NULL;
  char *out = malloc(3 * n + 1), *o = out;
  if (!out) return NULL;
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    const size_t l = seq_len(u + i, n - i);
    if (l) {
      memcpy(o, u + i, l);
      o += l, i += l;
    } else {
      memcpy(o, "\xEF\xBF\xBD", 3);
      o += 3, i++;
    }
  }
  *o = '\0';
  return out;
}
