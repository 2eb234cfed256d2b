#include "bd_url.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BD_URL_ENCODE_MAX (64 * 1024)

void bd_url_redact(const char *url, char *out, size_t cap) {
  if (!out || cap == 0) return;
  out[0] = '\0';
  if (!url) return;
  size_t o = 0;
  const char *p = url;
  const char *sep = strstr(url, "://");
  if (sep) {
    size_t n = (size_t)(sep - url) + 3;
    for (size_t i = 0; i < n && o + 1 < cap; i++) out[o++] = url[i];
    p = sep + 3;
    /* Userinfo ends at the last '@' before the path starts. */
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
      if (*q == '@') at = q;
    if (at) p = at + 1;
  }
  for (; *p && *p != '?' && *p != '#' && o + 1 < cap; p++) out[o++] = *p;
  out[o] = '\0';
}

static int unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

char *bd_url_encode(const char *s, int keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  if (!s) return NULL;
  size_t n = strnlen(s, BD_URL_ENCODE_MAX + 1);
  if (n > BD_URL_ENCODE_MAX) return NULL;
  char *out = malloc(n * 3 + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (unreserved(c) || (keep_slash && c == '/')) {
      out[o++] = (char)c;
    } else {
      out[o++] = '%';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  out[o] = '\0';
  return out;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int bd_url_decode(const char *b, const char *e, char *out, size_t cap, size_t *len) {
  size_t o = 0;
  while (b < e) {
    char c = *b++;
    if (c == '%') {
      if (e - b < 2 || hexval(b[0]) < 0 || hexval(b[1]) < 0) return -1;
      c = (char)(hexval(b[0]) * 16 + hexval(b[1]));
      b += 2;
    }
    if (o + 1 >= cap) return -1;
    out[o++] = c;
  }
  out[o] = '\0';
  if (len) *len = o;
  return 0;
}

int bd_url_has_scheme(const char *url, const char *scheme) {
  size_t n = strlen(scheme);
  return url && strncasecmp(url, scheme, n) == 0 && strncmp(url + n, "://", 3) == 0;
}
