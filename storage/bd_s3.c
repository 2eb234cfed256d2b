#define _GNU_SOURCE /* memmem */
#include "bd_s3.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bd_fetch_internal.h"
#include "bd_url.h"

#define BD_S3_INI_MAX (1024 * 1024)
#define BD_S3_INI_LINE_MAX 4096
#define BD_S3_LIST_XML_MAX (16u * 1024 * 1024)
#define BD_S3_LIST_DEFAULT_MAX 10000000u
#define BD_S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- configuration and credentials ---- */

static int copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) return -1;
  memcpy(dst, src, n + 1);
  return 0;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

bd_status bd_s3_creds_from_file(const char *path, const char *profile, bd_s3_creds *out,
                                bd_err *err) {
  bd_status st = BD_OK;
  char *line = NULL;
  FILE *fp = NULL;
  memset(out, 0, sizeof *out);
  if (!profile || !*profile) profile = "default";
  fp = fopen(path, "r");
  if (!fp) return bd_err_set(err, BD_E_NOT_FOUND, "s3: credentials file not readable");
  line = malloc(BD_S3_INI_LINE_MAX + 2);
  if (!line) {
    st = bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
    goto out;
  }
  int in_profile = 0, found = 0;
  size_t total = 0;
  unsigned lineno = 0;
  while (fgets(line, BD_S3_INI_LINE_MAX + 2, fp)) {
    lineno++;
    size_t n = strlen(line);
    total += n;
    if (total > BD_S3_INI_MAX) {
      st = bd_err_set(err, BD_E_LIMIT, "s3: credentials file larger than %d bytes", BD_S3_INI_MAX);
      goto out;
    }
    if (n > BD_S3_INI_LINE_MAX) {
      st = bd_err_set(err, BD_E_LIMIT, "s3: credentials file line %u longer than %d bytes", lineno,
                      BD_S3_INI_LINE_MAX);
      goto out;
    }
    char *s = trim(line);
    if (*s == '\0' || *s == '#' || *s == ';') continue;
    if (*s == '[') {
      char *e = strchr(s, ']');
      if (!e) continue;
      *e = '\0';
      char *name = trim(s + 1);
      /* ~/.aws/config spells sections "[profile NAME]"; accept both. */
      if (strncmp(name, "profile ", 8) == 0) name = trim(name + 8);
      in_profile = strcmp(name, profile) == 0;
      found |= in_profile;
      continue;
    }
    if (!in_profile) continue;
    char *eq = strchr(s, '=');
    if (!eq) continue;
    *eq = '\0';
    char *k = trim(s), *v = trim(eq + 1);
    int bad = 0;
    if (strcasecmp(k, "aws_access_key_id") == 0)
      bad = copy_str(out->access_key, sizeof out->access_key, v);
    else if (strcasecmp(k, "aws_secret_access_key") == 0)
      bad = copy_str(out->secret_key, sizeof out->secret_key, v);
    else if (strcasecmp(k, "aws_session_token") == 0)
      bad = copy_str(out->session_token, sizeof out->session_token, v);
    if (bad) {
      st = bd_err_set(err, BD_E_LIMIT, "s3: credentials file line %u: value of %s too long", lineno,
                      k);
      goto out;
    }
  }
  if (!found) {
    st = bd_err_set(err, BD_E_NOT_FOUND, "s3: profile '%s' not in credentials file", profile);
    goto out;
  }
  out->have = out->access_key[0] && out->secret_key[0];
out:
  if (line) {
    memset(line, 0, BD_S3_INI_LINE_MAX + 2);
    free(line);
  }
  if (fp) fclose(fp);
  if (st != BD_OK) memset(out, 0, sizeof *out);
  return st;
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

bd_status bd_s3_cfg_load(bd_s3_cfg *cfg, const char *endpoint, const char *region, int path_style,
                         bd_err *err) {
  memset(cfg, 0, sizeof *cfg);
  if (!endpoint) endpoint = env("AWS_ENDPOINT_URL_S3");
  if (!endpoint) endpoint = env("AWS_ENDPOINT_URL");
  if (!region) region = env("AWS_REGION");
  if (!region) region = env("AWS_DEFAULT_REGION");
  if (!region) region = "us-east-1";
  if (copy_str(cfg->region, sizeof cfg->region, region))
    return bd_err_set(err, BD_E_LIMIT, "s3: region name too long");
  for (const char *p = cfg->region; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
      return bd_err_set(err, BD_E_INVALID, "s3: region '%s' has characters outside [a-z0-9-]",
                        cfg->region);
  if (endpoint) {
    if (!bd_url_has_scheme(endpoint, "http") && !bd_url_has_scheme(endpoint, "https"))
      return bd_err_set(err, BD_E_INVALID, "s3: endpoint must start with http:// or https://");
    if (copy_str(cfg->endpoint, sizeof cfg->endpoint, endpoint))
      return bd_err_set(err, BD_E_LIMIT, "s3: endpoint URL too long");
    size_t n = strlen(cfg->endpoint);
    while (n > 0 && cfg->endpoint[n - 1] == '/') cfg->endpoint[--n] = '\0';
  }
  cfg->path_style = path_style >= 0 ? !!path_style : cfg->endpoint[0] != '\0';

  const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
  if (ak && sk) {
    const char *tok = env("AWS_SESSION_TOKEN");
    if (copy_str(cfg->creds.access_key, sizeof cfg->creds.access_key, ak) ||
        copy_str(cfg->creds.secret_key, sizeof cfg->creds.secret_key, sk) ||
        (tok && copy_str(cfg->creds.session_token, sizeof cfg->creds.session_token, tok))) {
      bd_s3_cfg_wipe(cfg);
      return bd_err_set(err, BD_E_LIMIT, "s3: AWS credential variable too long");
    }
    cfg->creds.have = 1;
    return BD_OK;
  }
  char path[1024];
  const char *file = env("AWS_SHARED_CREDENTIALS_FILE");
  if (!file) {
    const char *home = env("HOME");
    if (!home || snprintf(path, sizeof path, "%s/.aws/credentials", home) >= (int)sizeof path)
      return BD_OK;
    file = path;
  }
  bd_err e2 = {0};
  bd_status st = bd_s3_creds_from_file(file, env("AWS_PROFILE"), &cfg->creds, &e2);
  /* A missing file or profile means anonymous access; a broken file is an error. */
  if (st != BD_OK && st != BD_E_NOT_FOUND) return bd_err_set(err, st, "%s", e2.msg);
  return BD_OK;
}

void bd_s3_cfg_wipe(bd_s3_cfg *cfg) {
  if (!cfg) return;
  volatile unsigned char *p = (volatile unsigned char *)&cfg->creds;
  for (size_t i = 0; i < sizeof cfg->creds; i++) p[i] = 0;
}

/* ---- URLs and signing ---- */

bd_status bd_s3_split(const char *s3url, char *bucket, size_t bucket_cap, const char **key,
                      bd_err *err) {
  if (!bd_url_has_scheme(s3url, "s3"))
    return bd_err_set(err, BD_E_INVALID, "s3: URL must start with s3://");
  const char *b = s3url + 5;
  const char *slash = strchr(b, '/');
  size_t bl = slash ? (size_t)(slash - b) : strlen(b);
  if (bl < 3 || bl > 63 || bl >= bucket_cap)
    return bd_err_set(err, BD_E_INVALID, "s3: bad bucket name length");
  for (size_t i = 0; i < bl; i++) {
    char c = b[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
      return bd_err_set(err, BD_E_INVALID, "s3: bucket name has characters outside [a-z0-9.-]");
  }
  memcpy(bucket, b, bl);
  bucket[bl] = '\0';
  *key = slash ? slash + 1 : "";
  if (strnlen(*key, BD_S3_KEY_MAX + 1) > BD_S3_KEY_MAX)
    return bd_err_set(err, BD_E_LIMIT, "s3: key longer than %d bytes", BD_S3_KEY_MAX);
  return BD_OK;
}

char *bd_s3_http_url(const bd_s3_cfg *cfg, const char *bucket, const char *key, const char *query,
                     bd_err *err) {
  char *ek = bd_url_encode(key ? key : "", 1);
  char *out = NULL;
  if (!ek) {
    bd_err_set(err, BD_E_NOMEM, "s3: out of memory encoding key");
    return NULL;
  }
  const char *q = query && *query ? query : NULL;
  size_t cap = strlen(cfg->endpoint) + strlen(bucket) + strlen(ek) + (q ? strlen(q) : 0) + 128;
  out = malloc(cap);
  if (!out) {
    bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
    goto out;
  }
  if (cfg->endpoint[0] && cfg->path_style) {
    snprintf(out, cap, "%s/%s/%s%s%s", cfg->endpoint, bucket, ek, q ? "?" : "", q ? q : "");
  } else if (cfg->endpoint[0]) {
    const char *sep = strstr(cfg->endpoint, "://");
    snprintf(out, cap, "%.*s://%s.%s/%s%s%s", (int)(sep - cfg->endpoint), cfg->endpoint, bucket,
             sep + 3, ek, q ? "?" : "", q ? q : "");
  } else if (cfg->path_style) {
    snprintf(out, cap, "https://s3.%s.amazonaws.com/%s/%s%s%s", cfg->region, bucket, ek,
             q ? "?" : "", q ? q : "");
  } else {
    snprintf(out, cap, "https://%s.s3.%s.amazonaws.com/%s%s%s", bucket, cfg->region, ek,
             q ? "?" : "", q ? q : "");
  }
out:
  free(ek);
  return out;
}

bd_status bd_s3_sign_easy(const bd_s3_cfg *cfg, void *easy, struct curl_slist **hdrs, bd_err *err) {
  if (!cfg->creds.have) return BD_OK;
  char sig[128];
  snprintf(sig, sizeof sig, "aws:amz:%s:s3", cfg->region);
  CURL *h = easy;
  if (curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sig) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_USERNAME, cfg->creds.access_key) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->creds.secret_key) != CURLE_OK)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "s3: this libcurl cannot sign requests (CURLOPT_AWS_SIGV4)");
  /* S3 refuses signed requests without the payload hash header; a GET has an empty body. */
  struct curl_slist *l = curl_slist_append(*hdrs, "x-amz-content-sha256: " BD_S3_EMPTY_SHA256);
  if (!l) return bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
  *hdrs = l;
  if (cfg->creds.session_token[0]) {
    size_t n = strlen(cfg->creds.session_token) + 32;
    char *line = malloc(n);
    if (!line) return bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
    snprintf(line, n, "x-amz-security-token: %s", cfg->creds.session_token);
    l = curl_slist_append(*hdrs, line);
    memset(line, 0, n);
    free(line);
    if (!l) return bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
    *hdrs = l;
  }
  return BD_OK;
}

/* ---- ListObjectsV2 ---- */

/* Finds <tag>text</tag> inside [b, e); returns 1 and the text bounds. Tags with
 * attributes are not used by ListObjectsV2 for the fields we read. */
static int xml_find(const char *b, const char *e, const char *tag, const char **vb,
                    const char **ve) {
  char open[64], close[64];
  int no = snprintf(open, sizeof open, "<%s>", tag);
  int nc = snprintf(close, sizeof close, "</%s>", tag);
  const char *p = memmem(b, (size_t)(e - b), open, (size_t)no);
  if (!p) return 0;
  p += no;
  const char *q = memmem(p, (size_t)(e - p), close, (size_t)nc);
  if (!q) return 0;
  *vb = p;
  *ve = q;
  return 1;
}

/* Decodes XML text (the five entities and numeric references) into out. */
static int xml_text(const char *b, const char *e, char *out, size_t cap) {
  size_t o = 0;
  while (b < e) {
    unsigned long cp;
    if (*b == '&') {
      const char *semi = memchr(b, ';', (size_t)(e - b));
      if (!semi || semi - b > 10) return -1;
      size_t n = (size_t)(semi - b - 1);
      const char *ent = b + 1;
      if (n == 3 && !memcmp(ent, "amp", 3))
        cp = '&';
      else if (n == 2 && !memcmp(ent, "lt", 2))
        cp = '<';
      else if (n == 2 && !memcmp(ent, "gt", 2))
        cp = '>';
      else if (n == 4 && !memcmp(ent, "quot", 4))
        cp = '"';
      else if (n == 4 && !memcmp(ent, "apos", 4))
        cp = '\'';
      else if (n >= 2 && ent[0] == '#') {
        char num[12];
        memcpy(num, ent + 1, n - 1);
        num[n - 1] = '\0';
        char *end;
        cp = (num[0] == 'x') ? strtoul(num + 1, &end, 16) : strtoul(num, &end, 10);
        if (*end || cp == 0 || cp > 0x10FFFF) return -1;
      } else {
        return -1;
      }
      b = semi + 1;
    } else {
      cp = (unsigned char)*b++;
      if (o + 1 >= cap) return -1;
      out[o++] = (char)cp;
      continue;
    }
    /* UTF-8 encode the decoded code point. */
    unsigned char u[4];
    int k;
    if (cp < 0x80)
      u[0] = (unsigned char)cp, k = 1;
    else if (cp < 0x800)
      u[0] = (unsigned char)(0xC0 | (cp >> 6)), u[1] = (unsigned char)(0x80 | (cp & 63)), k = 2;
    else if (cp < 0x10000)
      u[0] = (unsigned char)(0xE0 | (cp >> 12)), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 63)),
      u[2] = (unsigned char)(0x80 | (cp & 63)), k = 3;
    else
      u[0] = (unsigned char)(0xF0 | (cp >> 18)), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 63)),
      u[2] = (unsigned char)(0x80 | ((cp >> 6) & 63)), u[3] = (unsigned char)(0x80 | (cp & 63)),
      k = 4;
    if (o + (size_t)k >= cap) return -1;
    memcpy(out + o, u, (size_t)k);
    o += (size_t)k;
  }
  out[o] = '\0';
  return 0;
}

bd_status bd_s3_parse_list(const char *xml, size_t len, bd_s3_list_fn fn, void *ctx, int *truncated,
                           char *token, size_t token_cap, int *stopped, bd_err *err) {
  char key[BD_S3_KEY_MAX + 1], etag[256], lm[64], num[32];
  const char *vb, *ve, *e = xml + len;
  *truncated = 0;
  *stopped = 0;
  if (token_cap) token[0] = '\0';
  if (len > BD_S3_LIST_XML_MAX)
    return bd_err_set(err, BD_E_LIMIT, "s3: list response over %u bytes", BD_S3_LIST_XML_MAX);
  if (!memmem(xml, len, "<ListBucketResult", 17)) {
    if (xml_find(xml, e, "Code", &vb, &ve) && xml_text(vb, ve, num, sizeof num) == 0)
      return bd_err_set(err, BD_E_INVALID, "s3: list failed: %s", num);
    return bd_err_set(err, BD_E_INVALID, "s3: list response is not a ListBucketResult");
  }
  const char *p = xml;
  for (;;) {
    const char *cb, *ce;
    if (!xml_find(p, e, "Contents", &cb, &ce)) break;
    p = ce + 11;
    bd_s3_object o = {key, etag, lm, 0};
    if (!xml_find(cb, ce, "Key", &vb, &ve) || xml_text(vb, ve, key, sizeof key))
      return bd_err_set(err, BD_E_INVALID, "s3: list entry without a valid <Key>");
    etag[0] = lm[0] = '\0';
    if (xml_find(cb, ce, "ETag", &vb, &ve) && xml_text(vb, ve, etag, sizeof etag))
      return bd_err_set(err, BD_E_LIMIT, "s3: list entry ETag too long");
    size_t el = strlen(etag);
    if (el >= 2 && etag[0] == '"' && etag[el - 1] == '"') {
      memmove(etag, etag + 1, el - 2);
      etag[el - 2] = '\0';
    }
    if (xml_find(cb, ce, "LastModified", &vb, &ve) && xml_text(vb, ve, lm, sizeof lm))
      return bd_err_set(err, BD_E_LIMIT, "s3: list entry LastModified too long");
    if (xml_find(cb, ce, "Size", &vb, &ve)) {
      if (xml_text(vb, ve, num, sizeof num) || !num[0] ||
          strspn(num, "0123456789") != strlen(num) || strlen(num) > 19)
        return bd_err_set(err, BD_E_INVALID, "s3: list entry with a bad <Size>");
      o.size = strtoull(num, NULL, 10);
    }
    if (fn && fn(ctx, &o)) {
      *stopped = 1;
      return BD_OK;
    }
  }
  if (xml_find(xml, e, "IsTruncated", &vb, &ve) && ve - vb == 4 && !memcmp(vb, "true", 4))
    *truncated = 1;
  if (*truncated) {
    if (!xml_find(xml, e, "NextContinuationToken", &vb, &ve) ||
        xml_text(vb, ve, token, token_cap) || !token[0])
      return bd_err_set(err, BD_E_INVALID,
                        "s3: truncated list without a usable NextContinuationToken");
  }
  return BD_OK;
}

typedef struct list_count {
  bd_s3_list_fn fn;
  void *ctx;
  size_t n, max;
  int limit_hit;
} list_count;

static int list_counting(void *ctx, const bd_s3_object *o) {
  list_count *c = ctx;
  if (c->n >= c->max) {
    c->limit_hit = 1;
    return 1;
  }
  c->n++;
  return c->fn ? c->fn(c->ctx, o) : 0;
}

bd_status bd_s3_list(const char *s3prefix, int page_size, size_t max_objects,
                     const bd_fetch_opts *opts, bd_s3_list_fn fn, void *ctx, bd_err *err) {
  bd_status st = BD_OK;
  bd_fetch *f = NULL;
  char *eprefix = NULL, *etok = NULL, *url = NULL, *query = NULL;
  char bucket[64], token[2048];
  const char *prefix;
  bd_fetch_result res = {0};
  list_count lc = {fn, ctx, 0, max_objects ? max_objects : BD_S3_LIST_DEFAULT_MAX, 0};
  if (page_size < 1 || page_size > 1000)
    return bd_err_set(err, BD_E_INVALID, "s3: list page size %d outside 1..1000", page_size);
  if ((st = bd_s3_split(s3prefix, bucket, sizeof bucket, &prefix, err)) != BD_OK) return st;
  bd_fetch_opts o;
  if (opts)
    o = *opts;
  else
    bd_fetch_opts_default(&o);
  o.concurrency = 1;
  o.queue_max = 1;
  o.max_body = BD_S3_LIST_XML_MAX;
  f = bd_fetch_new(&o, NULL, NULL, err);
  if (!f) return err ? err->code : BD_E_INTERNAL;
  eprefix = bd_url_encode(prefix, 0);
  if (!eprefix) {
    st = bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
    goto out;
  }
  token[0] = '\0';
  /* Bounded: each page lists at least one object or ends the listing, and the object
   * count is capped; the page cap guards against a server that loops on tokens. */
  for (unsigned page = 0; page < 100000; page++) {
    free(etok);
    free(query);
    free(url);
    etok = query = url = NULL;
    size_t qcap = strlen(eprefix) + 3 * sizeof token + 128;
    query = malloc(qcap);
    if (!query || (token[0] && !(etok = bd_url_encode(token, 0)))) {
      st = bd_err_set(err, BD_E_NOMEM, "s3: out of memory");
      goto out;
    }
    /* SigV4 wants the canonical query: parameters sorted by name, values encoded. */
    snprintf(query, qcap, "%s%s%slist-type=2&max-keys=%d&prefix=%s",
             etok ? "continuation-token=" : "", etok ? etok : "", etok ? "&" : "", page_size,
             eprefix);
    url = bd_s3_http_url(bd_fetch__s3(f), bucket, "", query, err);
    if (!url) {
      st = err ? err->code : BD_E_NOMEM;
      goto out;
    }
    if ((st = bd_fetch__submit_http(f, page, url, 1, NULL, -1, err)) != BD_OK) goto out;
    if ((st = bd_fetch_poll(f, -1, &res, err)) != BD_OK) goto out;
    if (res.status != BD_OK) {
      st = bd_err_set(err, res.status, "s3: list %s: %s", s3prefix, res.err.msg);
      goto out;
    }
    int truncated = 0, stopped = 0;
    st = bd_s3_parse_list((const char *)res.data, res.len, list_counting, &lc, &truncated, token,
                          sizeof token, &stopped, err);
    bd_fetch_result_clear(&res);
    if (st != BD_OK) goto out;
    if (lc.limit_hit) {
      st =
          bd_err_set(err, BD_E_LIMIT, "s3: list of %s has more than %zu objects", s3prefix, lc.max);
      goto out;
    }
    if (stopped || !truncated) goto out;
  }
  st = bd_err_set(err, BD_E_LIMIT, "s3: list of %s needs too many pages", s3prefix);
out:
  bd_fetch_result_clear(&res);
  free(eprefix);
  free(etok);
  free(query);
  free(url);
  bd_fetch_destroy(f);
  return st;
}
