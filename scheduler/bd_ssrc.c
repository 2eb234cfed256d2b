/* bd_ssrc: see bd_ssrc.h. */
#define _GNU_SOURCE
#include "bd_ssrc.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "bd_proto.h"
#include "bd_s3.h"
#include "bd_strmap.h"
#include "bd_url.h"

#define MAX_DEPTH 64

bd_ssrc *bd_ssrc_new(void) {
  return calloc(1, sizeof(bd_ssrc));
}

void bd_ssrc_destroy(bd_ssrc *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    free(s->items[i].id);
    free(s->items[i].url);
    free(s->items[i].base);
    free(s->items[i].etag);
    free(s->items[i].last_modified);
  }
  free(s->items);
  free(s);
}

static char *dup_or_null(const char *x, int *bad) {
  if (!x) return NULL;
  char *d = strdup(x);
  if (!d) *bad = 1;
  return d;
}

bd_status bd_ssrc_add(bd_ssrc *s, const char *id, const char *url, const char *base,
                      const char *etag, const char *last_modified, bd_err *err) {
  if (s->n >= BD_SSRC_MAX_ITEMS)
    return bd_err_set(err, BD_E_LIMIT, "more than %d images in one submit", BD_SSRC_MAX_ITEMS);
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 1024;
    bd_ssrc_item *ni = realloc(s->items, nc * sizeof *ni);
    if (!ni) return bd_err_set(err, BD_E_NOMEM, "out of memory listing images");
    s->items = ni;
    s->cap = nc;
  }
  int bad = 0;
  bd_ssrc_item it = {dup_or_null(id, &bad), dup_or_null(url, &bad),
                     dup_or_null(id ? NULL : base, &bad), dup_or_null(etag, &bad),
                     dup_or_null(last_modified, &bad)};
  if (bad) {
    free(it.id), free(it.url), free(it.base), free(it.etag), free(it.last_modified);
    return bd_err_set(err, BD_E_NOMEM, "out of memory listing images");
  }
  s->items[s->n++] = it;
  if (s->on_added && s->n % 1000 == 0) s->on_added(s->on_added_ctx, s->n);
  return BD_OK;
}

static int id_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

void bd_ssrc_sanitize(const char *text, char *out, size_t cap) {
  size_t n = strlen(text);
  while (n && text[0] == '/') text++, n--; /* "/a/b" and "a/b" are the same image */
  if (n == 0) {
    snprintf(out, cap, "img");
    return;
  }
  size_t lim = cap - 1 < BD_ID_MAX ? cap - 1 : BD_ID_MAX;
  const char *src = text;
  size_t keep = n, o = 0;
  if (n > lim) {
    /* Keep the tail (the file name, the part that differs) and a hash of the whole. */
    o = (size_t)snprintf(out, cap, "%08llx-", bd_str_hash(text) & 0xffffffffULL);
    keep = lim - o;
    src = text + n - keep;
  }
  for (size_t i = 0; i < keep; i++) out[o++] = id_char((unsigned char)src[i]) ? src[i] : '_';
  out[o] = '\0';
}

const char *bd_ssrc_url_base(const char *url, char *buf, size_t cap) {
  const char *p = strstr(url, "://");
  p = p ? p + 3 : url;
  if (strncmp(url, "file://", 7) != 0) {
    const char *slash = strchr(p, '/'); /* skip host or bucket */
    p = slash ? slash + 1 : p + strlen(p);
  }
  size_t n = strcspn(p, "?#");
  if (n >= cap) {
    p += n - (cap - 1);
    n = cap - 1;
  }
  memcpy(buf, p, n);
  buf[n] = '\0';
  return buf;
}

int bd_ssrc_ext_match(const char *name, const char *exts) {
  const char *slash = strrchr(name, '/');
  const char *dot = strrchr(slash ? slash + 1 : name, '.');
  if (!dot || !dot[1]) return 0;
  dot++;
  size_t dl = strlen(dot);
  const char *p = exts;
  while (*p) {
    size_t n = strcspn(p, ",");
    if (n == dl && strncasecmp(p, dot, n) == 0) return 1;
    p += n;
    if (*p == ',') p++;
  }
  return 0;
}

/* A manifest URL may hold no whitespace or control characters. Local paths become
 * percent-encoded file:// URLs (curl decodes them back); S3 keys are not rewritten,
 * since the fetcher signs and sends them literally. */
static int url_usable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7f) return 0;
  return 1;
}

/* ---- list file ---- */

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

/* file:// URL of an absolute path: every byte but RFC 3986 unreserved ones and '/' as
 * %XX, so that ' ', '#', '?', '%', newlines and non-ASCII names reach the file itself. */
static bd_status file_url(const char *abs, char **url, bd_err *err) {
  char *enc = bd_url_encode(abs, 1);
  *url = NULL;
  if (!enc) return bd_err_set(err, BD_E_LIMIT, "path too long or out of memory: %.80s", abs);
  if (asprintf(url, "file://%s", enc) < 0) {
    *url = NULL;
    free(enc);
    return bd_err_set(err, BD_E_NOMEM, "out of memory");
  }
  free(enc);
  return BD_OK;
}

bd_status bd_ssrc_from_list(bd_ssrc *s, const char *path, bd_err *err) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (!f) return bd_err_set(err, BD_E_NOT_FOUND, "--list %s: %s", path, strerror(errno));
  char *line = malloc(BD_SSRC_MAX_LINE + 2);
  bd_status st = BD_OK;
  long lineno = 0;
  if (!line) {
    st = bd_err_set(err, BD_E_NOMEM, "out of memory");
    goto out;
  }
  while (fgets(line, BD_SSRC_MAX_LINE + 2, f)) {
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) {
      st = bd_err_set(err, BD_E_LIMIT, "%s:%ld: line longer than %d bytes", path, lineno,
                      BD_SSRC_MAX_LINE);
      goto out;
    }
    char *t = line;
    /* Editors on Windows start UTF-8 files with a BOM; it is not part of the first id. */
    if (lineno == 1 && strncmp(t, "\xef\xbb\xbf", 3) == 0) t += 3;
    t = trim(t);
    if (!*t || *t == '#' || strcasecmp(t, "id,url") == 0) continue;
    char *id = NULL, *url = t;
    char *comma = strchr(t, ',');
    if (comma && !memmem(t, (size_t)(comma - t), "://", 3) && t[0] != '/') {
      *comma = '\0';
      id = trim(t);
      url = trim(comma + 1);
    }
    if (id && !bd_proto_id_valid(id)) {
      st = bd_err_set(err, BD_E_INVALID, "%s:%ld: id \"%.80s\" must be 1..128 of [A-Za-z0-9._-]",
                      path, lineno, id);
      goto out;
    }
    if (url[0] == '/') { /* an absolute local path: a file:// URL, the id from the path */
      char *fu = NULL;
      st = file_url(url, &fu, err);
      if (st == BD_OK) st = bd_ssrc_add(s, id, fu, url, NULL, NULL, err);
      free(fu);
      if (st != BD_OK) {
        bd_err_prefix(err, "%s:%ld", path, lineno);
        goto out;
      }
      continue;
    }
    if (!strstr(url, "://")) {
      st = bd_err_set(err, BD_E_INVALID, "%s:%ld: not a URL or absolute path: \"%.80s\"", path,
                      lineno, url);
      goto out;
    }
    if (!url_usable(url)) {
      st = bd_err_set(err, BD_E_INVALID, "%s:%ld: URL with whitespace or control characters", path,
                      lineno);
      goto out;
    }
    st = bd_ssrc_add(s, id, url, NULL, NULL, NULL, err);
    if (st != BD_OK) goto out;
  }
  if (ferror(f))
    st = bd_err_set(err, BD_E_IO, "--list %s: read error", path);
  else if (s->n == 0) /* a job of nothing is a mistake in the list, not a finished job */
    st = bd_err_set(err, BD_E_INVALID, "no images in %s",
                    strcmp(path, "-") == 0 ? "standard input" : path);
out:
  free(line);
  if (f != stdin) fclose(f);
  return st;
}

/* ---- directory ---- */

static bd_status walk(bd_ssrc *s, const char *abs, const char *rel, const char *exts, int depth,
                      bd_err *err) {
  if (depth > MAX_DEPTH)
    return bd_err_set(err, BD_E_LIMIT, "--dir: deeper than %d levels at %s", MAX_DEPTH, abs);
  struct dirent **ents = NULL;
  int n = scandir(abs, &ents, NULL, alphasort);
  if (n < 0) return bd_err_set(err, BD_E_IO, "--dir: %s: %s", abs, strerror(errno));
  bd_status st = BD_OK;
  char *pa = NULL, *pr = NULL, *url = NULL;
  for (int i = 0; i < n && st == BD_OK; i++) {
    const char *nm = ents[i]->d_name;
    if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
    if (nm[0] == '.') { /* hidden files and directories (.git, .thumbnails) */
      s->skipped_hidden++;
      continue;
    }
    if (asprintf(&pa, "%s/%s", abs, nm) < 0 ||
        asprintf(&pr, "%s%s%s", rel, *rel ? "/" : "", nm) < 0) {
      pa = pr = NULL;
      st = bd_err_set(err, BD_E_NOMEM, "out of memory");
      break;
    }
    struct stat sb;
    if (stat(pa, &sb) != 0) {
      s->skipped_unreadable++; /* a dangling link, or gone since scandir */
    } else if (S_ISDIR(sb.st_mode)) {
      st = walk(s, pa, pr, exts, depth + 1, err);
    } else if (!S_ISREG(sb.st_mode)) {
      s->skipped_unreadable++; /* fifos, sockets, devices */
    } else if (!bd_ssrc_ext_match(nm, exts)) {
      s->skipped_ext++;
    } else if ((st = file_url(pa, &url, err)) == BD_OK) {
      st = bd_ssrc_add(s, NULL, url, pr, NULL, NULL, err);
    }
    free(pa), free(pr), free(url);
    pa = pr = url = NULL;
  }
  for (int i = 0; i < n; i++) free(ents[i]);
  free(ents);
  return st;
}

bd_status bd_ssrc_from_dir(bd_ssrc *s, const char *dir, const char *exts, bd_err *err) {
  char abs[PATH_MAX];
  if (!realpath(dir, abs))
    return bd_err_set(err, BD_E_NOT_FOUND, "--dir %s: %s", dir, strerror(errno));
  const size_t before = s->n;
  bd_status st = walk(s, abs, "", exts, 0, err);
  if (st == BD_OK && s->n == before) /* as for a list: a job of nothing is a mistake */
    st = bd_err_set(err, BD_E_INVALID, "no images in %s (extensions %s)", dir, exts);
  return st;
}

/* ---- S3 ---- */

typedef struct {
  bd_ssrc *s;
  const char *bucket;
  size_t strip; /* bytes of the key before the derived id (prefix up to its last '/') */
  const char *exts;
  bd_err *err;
  bd_status st;
} s3ctx;

static int on_object(void *vctx, const bd_s3_object *o) {
  s3ctx *c = vctx;
  size_t kl = strlen(o->key);
  if (kl && o->key[kl - 1] == '/') return 0; /* "folder" placeholder objects */
  if (!bd_ssrc_ext_match(o->key, c->exts)) {
    c->s->skipped_ext++;
    return 0;
  }
  if (!url_usable(o->key)) {
    c->s->skipped_badkey++;
    return 0;
  }
  char *url = NULL;
  if (asprintf(&url, "s3://%s/%s", c->bucket, o->key) < 0) {
    c->st = bd_err_set(c->err, BD_E_NOMEM, "out of memory");
    return 1;
  }
  c->st = bd_ssrc_add(c->s, NULL, url, o->key + (c->strip <= kl ? c->strip : 0), o->etag,
                      o->last_modified, c->err);
  free(url);
  return c->st != BD_OK;
}

bd_status bd_ssrc_from_s3(bd_ssrc *s, const char *prefix, const char *exts, bd_err *err) {
  char bucket[64];
  const char *key = "";
  /* bd_s3_split wants a non-empty key; a bare bucket lists everything. */
  if (strncmp(prefix, "s3://", 5) != 0)
    return bd_err_set(err, BD_E_INVALID, "--s3-prefix must look like s3://bucket/prefix");
  const char *b = prefix + 5;
  size_t bl = strcspn(b, "/");
  if (bl < 3 || bl >= sizeof bucket)
    return bd_err_set(err, BD_E_INVALID, "--s3-prefix: bad bucket name in %s", prefix);
  if (b[bl] == '/') key = b + bl + 1;
  memcpy(bucket, b, bl);
  bucket[bl] = '\0';
  const char *last = strrchr(key, '/');
  s3ctx c = {s, bucket, last ? (size_t)(last - key) + 1 : 0, exts, err, BD_OK};
  const size_t before = s->n;
  bd_status st = bd_s3_list(prefix, 1000, BD_SSRC_MAX_ITEMS, NULL, on_object, &c, err);
  if (c.st != BD_OK) return c.st;
  if (st != BD_OK) bd_err_prefix(err, "--s3-prefix %s", prefix);
  else if (s->n == before)
    st = bd_err_set(err, BD_E_INVALID, "no images under %s (extensions %s)", prefix, exts);
  return st;
}

/* ---- ids ---- */

/* 1 when inserted, 0 when already there (the set is sized upfront for every id). */
static int idset_add(bd_strmap *h, const char *id) {
  int fresh = 0;
  (void)bd_strmap_put(h, id, 0, &fresh);
  return fresh;
}

bd_status bd_ssrc_finish(bd_ssrc *s, bd_err *err) {
  /* the given ids, then one per item without */
  bd_strmap *h = bd_strmap_new(s->n);
  if (!h) return bd_err_set(err, BD_E_NOMEM, "out of memory");
  bd_status st = BD_OK;
  for (size_t i = 0; i < s->n; i++)
    if (s->items[i].id && !idset_add(h, s->items[i].id)) {
      st = bd_err_set(err, BD_E_INVALID, "image id \"%s\" given twice", s->items[i].id);
      goto out;
    }
  char base[BD_SSRC_MAX_LINE + 16], id[BD_ID_MAX + 1], cand[BD_ID_MAX + 1];
  for (size_t i = 0; i < s->n; i++) {
    bd_ssrc_item *it = &s->items[i];
    if (it->id) continue;
    const char *text = it->base ? it->base : bd_ssrc_url_base(it->url, base, sizeof base);
    bd_ssrc_sanitize(text, id, sizeof id);
    snprintf(cand, sizeof cand, "%s", id);
    /* At most n ids exist, so one of the first n + 1 candidates is free. */
    for (size_t k = 2; !it->id && k <= s->n + 2; k++) {
      char *d = strdup(cand);
      if (!d) {
        st = bd_err_set(err, BD_E_NOMEM, "out of memory");
        goto out;
      }
      if (idset_add(h, d)) {
        it->id = d; /* the set points at the item's own id */
        break;
      }
      free(d);
      char suf[24];
      int sl = snprintf(suf, sizeof suf, "-%zu", k);
      size_t keep = strlen(id);
      if (keep + (size_t)sl > BD_ID_MAX) keep = BD_ID_MAX - (size_t)sl;
      snprintf(cand, sizeof cand, "%.*s%s", (int)keep, id, suf);
    }
    if (!it->id) {
      st = bd_err_set(err, BD_E_INTERNAL, "no unique id for %s", it->url);
      goto out;
    }
    free(it->base);
    it->base = NULL;
  }
out:
  bd_strmap_destroy(h);
  return st;
}
