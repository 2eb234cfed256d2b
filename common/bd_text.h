/* bd_text: UTF-8 checks for text that ends up in JSON (file names, labels). jansson
 * refuses strings that are not UTF-8, so text from outside is checked (labels: refused
 * with the line) or made valid (file names: each byte that does not start a valid
 * sequence becomes U+FFFD) before it is packed. Thread safety: reentrant. */
#ifndef BD_TEXT_H
#define BD_TEXT_H

#include <stddef.h>

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points
 * above U+10FFFF; NUL bytes allowed), else 0; *bad (may be NULL) gets the offset of the
 * first byte that is not. */
int bd_utf8_valid(const char *s, size_t n, size_t *bad);

/* The length of the well-formed sequence that starts s (at most n bytes): 1..4, or 0
 * where none does. */
size_t bd_utf8_seq(const char *s, size_t n);

/* A malloc'd copy of NUL-terminated s with each byte that does not begin a well-formed
 * sequence replaced by U+FFFD (EF BF BD); NULL on allocation failure. */
char *bd_utf8_sanitize(const char *s);

#endif
