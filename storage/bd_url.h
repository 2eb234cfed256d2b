/* bd_url: small URL helpers shared by the fetcher and the S3 client.
 *
 * Redaction exists because URLs carry secrets (user:password@, presigned query
 * strings): any URL that goes into an error message passes through bd_url_redact
 * first. Thread safety: all functions are reentrant. */
#ifndef BD_URL_H
#define BD_URL_H

#include <stddef.h>

#include "bd_status.h"

/* Writes url into out (always NUL-terminated, truncated to cap) without its userinfo,
 * query string and fragment: "https://u:p@h:1/a/b?X-Amz-Signature=..#f" -> "https://h:1/a/b". */
void bd_url_redact(const char *url, char *out, size_t cap);

/* Percent-encodes s (RFC 3986: unreserved characters kept, everything else %XX in
 * upper case, as SigV4 requires); '/' is kept when keep_slash. Returns a malloc'd
 * string owned by the caller, or NULL when out of memory or s is longer than 64 KiB. */
char *bd_url_encode(const char *s, int keep_slash);

/* Percent-decodes [b, e) into out (NUL-terminated, at most cap bytes with it); *len
 * (may be NULL) gets the decoded length, which a %00 makes longer than strlen(out).
 * -1 on a '%' not followed by two hex digits or when out is too small, else 0. */
int bd_url_decode(const char *b, const char *e, char *out, size_t cap, size_t *len);

/* Case-insensitive scheme test: 1 when url starts with "scheme://". */
int bd_url_has_scheme(const char *url, const char *scheme);

#endif
