/* bd_ssrc: the image sources of `batchdet submit`: a list file (one URL per line, or
 * `id,url` CSV), a directory (recursive, sorted, as file:// URLs) or an S3 prefix
 * (ListObjectsV2, paginated), gathered into one list of (id, url, etag, last_modified).
 *
 * A list file may start with a UTF-8 BOM (skipped) and must name at least one image.
 * Local paths (--dir, and absolute paths in a list) become file:// URLs with every
 * byte outside RFC 3986's unreserved set and '/' percent-encoded, so any name works.
 * --dir leaves out hidden names ('.' first) and entries that are not regular files
 * or links to them, and counts them.
 *
 * Ids: given ones (CSV) are checked (1..128 of [A-Za-z0-9._-], unique); the others are
 * derived from the URL's path (directory: the path relative to DIR; S3: the key after
 * the prefix's last '/'), every other byte mapped to '_', names over 128 bytes cut to
 * their tail plus a hash, and made unique with "-2", "-3", ... in listing order.
 * Deriving from the path keeps ids stable from one run to the next, which the
 * incremental mode relies on.
 *
 * Ownership: a bd_ssrc owns every string in it. Thread safety: one thread. */
#ifndef BD_SSRC_H
#define BD_SSRC_H

#include <stddef.h>

#include "bd_status.h"

#define BD_SSRC_MAX_ITEMS 10000000 /* images per submit */
#define BD_SSRC_MAX_LINE 8192      /* list file line */

typedef struct bd_ssrc_item {
  char *id; /* NULL until bd_ssrc_finish */
  char *url;
  char *base;                 /* text the id is derived from (NULL once the id is set) */
  char *etag, *last_modified; /* S3 listing validators, or NULL */
} bd_ssrc_item;

typedef struct bd_ssrc {
  bd_ssrc_item *items;
  size_t n, cap;
  size_t skipped_ext;    /* listed objects that did not match --ext */
  size_t skipped_badkey; /* S3 keys that cannot be written as a manifest URL */
  size_t skipped_hidden;     /* --dir: names starting with '.' (files and directories) */
  size_t skipped_unreadable; /* --dir: dangling links, other stat failures, non-files */
  /* called after every 1000th entry added (listing progress), when set */
  void (*on_added)(void *ctx, size_t n);
  void *on_added_ctx;
} bd_ssrc;

bd_ssrc *bd_ssrc_new(void);
void bd_ssrc_destroy(bd_ssrc *s);

/* Adds one entry; id may be NULL (derived later from base, or from url if base is NULL). */
bd_status bd_ssrc_add(bd_ssrc *s, const char *id, const char *url, const char *base,
                      const char *etag, const char *last_modified, bd_err *err);

bd_status bd_ssrc_from_list(bd_ssrc *s, const char *path, bd_err *err);
bd_status bd_ssrc_from_dir(bd_ssrc *s, const char *dir, const char *exts, bd_err *err);
bd_status bd_ssrc_from_s3(bd_ssrc *s, const char *prefix, const char *exts, bd_err *err);

/* Assigns the derived ids, checks given ones; call once after the adds. */
bd_status bd_ssrc_finish(bd_ssrc *s, bd_err *err);

/* Pure helpers (unit-tested). */
/* Maps text to an id in out (cap >= 129): see above. Never fails. */
void bd_ssrc_sanitize(const char *text, char *out, size_t cap);
/* Derived-id text of a URL: its path without scheme, host/bucket, query, fragment. */
const char *bd_ssrc_url_base(const char *url, char *buf, size_t cap);
/* 1 when name's extension is in exts ("jpg,jpeg,png", case-insensitive). */
int bd_ssrc_ext_match(const char *name, const char *exts);

#endif
