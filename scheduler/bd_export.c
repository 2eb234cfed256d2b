/* bd_export: see bd_export.h. */
#define _GNU_SOURCE
#include "bd_export.h"
#include "bd_labels.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bd_proto.h"
#include "bd_sredis.h"
#include "bd_text.h"
#include "bd_url.h"

#define PAGE 512
#define MAX_DIM 65535

/* COCO names and the 80 -> 91 category ids come from the engine's label table; classes
 * from 80 up get 1000 + class. */

int bd_export_format_parse(const char *s) {
  if (!strcmp(s, "coco")) return BD_EXPORT_COCO;
  if (!strcmp(s, "jsonl")) return BD_EXPORT_JSONL;
  if (!strcmp(s, "yolo")) return BD_EXPORT_YOLO;
  return -1;
}

int bd_export_coco_category(int cls) {
  if (cls >= 0 && cls < 80) return bd_coco80_category_id(cls);
  return 1000 + cls;
}

const char *bd_export_coco_name(int cls) {
  return cls >= 0 && cls < 80 ? bd_coco80_names[cls] : "";
}

/* ---- seen-set of 64-bit hashes (0 marks an empty slot) ---- */

typedef struct {
  uint64_t *slot;
  size_t cap, n;
} hset;

static uint64_t hash64(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  h ^= h >> 33;
  return h ? h : 1;
}

/* 1 when new, 0 when seen, -1 on OOM. */
static int hset_add(hset *h, uint64_t v) {
  if ((h->n + 1) * 2 > h->cap) {
    size_t nc = h->cap ? h->cap * 2 : 4096;
    uint64_t *ns = calloc(nc, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < h->cap; i++)
      if (h->slot[i]) {
        size_t j = (size_t)h->slot[i] & (nc - 1);
        while (ns[j]) j = (j + 1) & (nc - 1);
        ns[j] = h->slot[i];
      }
    free(h->slot);
    h->slot = ns;
    h->cap = nc;
  }
  size_t j = (size_t)v & (h->cap - 1);
  while (h->slot[j]) {
    if (h->slot[j] == v) return 0;
    j = (j + 1) & (h->cap - 1);
  }
  h->slot[j] = v;
  h->n++;
  return 1;
}

/* ---- writer state ---- */

typedef struct {
  bd_sredis *rd;
  const char *job;
  size_t prefix; /* strlen("det:JOB:") */
  bd_export_format fmt;
  const char *path;
  FILE *out, *ann; /* ann: COCO annotations spool */
  hset seen;
  size_t seen_n, next_img, next_ann;
  int first_img, first_ann;
  bd_export_summary *sum;
  bd_export_progress_fn progress;
  void *pctx;
  bd_err *err;
  bd_status st;
  /* COCO categories: the first label each class carried (a custom model's names file)
   * and which classes >= 80 occur; index = class */
  char **cat_name;
  unsigned char *cat_seen;
  int n_cat;   /* entries allocated */
  int top_cat; /* highest class seen + 1 */
} exp_ctx;

/* Class c's name: the first label a result gave it, else COCO's, else "class c" in buf. */
static const char *category_name(const exp_ctx *x, int c, char buf[32]) {
  const char *nm = c < x->n_cat && x->cat_name[c] ? x->cat_name[c] : bd_export_coco_name(c);
  if (*nm) return nm;
  snprintf(buf, 32, "class %d", c);
  return buf;
}

/* Notes class cls with its result's label (NULL: none). 0, or -1 out of memory. */
static int note_category(exp_ctx *x, int cls, const char *label) {
  if (cls >= x->n_cat) {
    int n = cls + 1 > 2 * x->n_cat ? cls + 1 : 2 * x->n_cat;
    char **nn = realloc(x->cat_name, (size_t)n * sizeof *nn);
    if (!nn) return -1;
    x->cat_name = nn;
    unsigned char *ns = realloc(x->cat_seen, (size_t)n);
    if (!ns) return -1;
    x->cat_seen = ns;
    for (int i = x->n_cat; i < n; i++) nn[i] = NULL, ns[i] = 0;
    x->n_cat = n;
  }
  x->cat_seen[cls] = 1;
  if (cls >= x->top_cat) x->top_cat = cls + 1;
  if (label && *label && !x->cat_name[cls] && !(x->cat_name[cls] = strdup(label))) return -1;
  return 0;
}

static void json_str(FILE *f, const char *s) {
  json_t *j = json_string(s);
  char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
  fputs(d ? d : "\"\"", f);
  free(d);
  json_decref(j);
}

static void fmt_num(FILE *f, double v) {
  /* Two decimals: sub-pixel boxes need no more, and files stay small. */
  char b[64];
  snprintf(b, sizeof b, "%.2f", v);
  size_t n = strlen(b);
  while (n > 1 && b[n - 1] == '0') b[--n] = '\0';
  if (n && b[n - 1] == '.') b[--n] = '\0';
  fputs(strcmp(b, "-0") == 0 ? "0" : b, f);
}

static int read_box(json_t *d, int *cls, double *score, double box[4]) {
  json_t *c = json_object_get(d, "class"), *s = json_object_get(d, "score"),
         *b = json_object_get(d, "box");
  if (!json_is_integer(c) || !json_is_number(s) || !json_is_array(b) || json_array_size(b) != 4)
    return -1;
  json_int_t ci = json_integer_value(c);
  if (ci < 0 || ci > 65535) return -1;
  *cls = (int)ci;
  *score = json_number_value(s);
  for (int i = 0; i < 4; i++) {
    json_t *v = json_array_get(b, (size_t)i);
    if (!json_is_number(v)) return -1;
    box[i] = json_number_value(v);
  }
  return box[2] >= box[0] && box[3] >= box[1] ? 0 : -1;
}

static const char *basename_of(const char *url) {
  const char *q = strrchr(url, '/');
  return q && q[1] ? q + 1 : url;
}

/* COCO's file_name, malloc'd: the URL's last segment; for a file:// URL (submit --dir
 * percent-encodes the path) the name as on disk, with U+FFFD for bytes that are not
 * UTF-8. NULL when out of memory. */
static char *file_name_of(const char *url) {
  const char *b = basename_of(url);
  if (!bd_url_has_scheme(url, "file")) return strdup(b);
  const size_t n = strlen(b);
  char *d = malloc(n + 1), *s = NULL;
  size_t len = 0;
  if (!d) return NULL;
  /* a malformed escape or a %00 keeps the segment as it is */
  if (bd_url_decode(b, b + n, d, n + 1, &len) == 0 && len == strlen(d)) s = bd_utf8_sanitize(d);
  free(d);
  return s ? s : strdup(b);
}

static void write_one(exp_ctx *x, const char *id, const char *val, size_t vlen, const char *url) {
  if (x->fmt == BD_EXPORT_JSONL) {
    /* Stored values are single-line JSON; a stray newline would break the format. */
    if (memchr(val, '\n', vlen)) {
      x->sum->bad++;
      return;
    }
    fwrite(val, 1, vlen, x->out);
    fputc('\n', x->out);
    json_t *o = json_loadb(val, vlen, 0, NULL);
    if (json_is_object(o) && json_object_get(o, "error")) {
      x->sum->errors++;
    } else {
      x->sum->images++;
      /* Counted as coco and yolo count them, so the three summaries agree. */
      json_t *dets = json_object_get(o, "detections");
      for (size_t i = 0; i < json_array_size(dets); i++) {
        int cls;
        double score, b[4];
        if (!read_box(json_array_get(dets, i), &cls, &score, b)) x->sum->annotations++;
      }
    }
    json_decref(o);
    return;
  }
  json_t *o = json_loadb(val, vlen, 0, NULL);
  if (!json_is_object(o)) {
    x->sum->bad++;
    goto out;
  }
  if (json_object_get(o, "error")) {
    x->sum->errors++;
    goto out;
  }
  json_t *jw = json_object_get(o, "width"), *jh = json_object_get(o, "height"),
         *dets = json_object_get(o, "detections");
  json_int_t w = json_is_integer(jw) ? json_integer_value(jw) : 0;
  json_int_t h = json_is_integer(jh) ? json_integer_value(jh) : 0;
  if (w < 1 || h < 1 || w > MAX_DIM || h > MAX_DIM || !json_is_array(dets)) {
    x->sum->bad++;
    goto out;
  }
  x->sum->images++;
  size_t nd = json_array_size(dets);
  if (x->fmt == BD_EXPORT_COCO) {
    size_t img = ++x->next_img;
    fprintf(x->out, "%s\n{\"id\":%zu,\"file_name\":", x->first_img ? "" : ",", img);
    char *fname = url ? file_name_of(url) : NULL;
    json_str(x->out, fname ? fname : url ? basename_of(url) : id);
    free(fname);
    fprintf(x->out, ",\"width\":%lld,\"height\":%lld,\"image_key\":", (long long)w, (long long)h);
    json_str(x->out, id);
    fputc('}', x->out);
    x->first_img = 0;
    for (size_t i = 0; i < nd; i++) {
      int cls;
      double score, b[4];
      json_t *dj = json_array_get(dets, i);
      if (read_box(dj, &cls, &score, b)) continue;
      if (note_category(x, cls, json_string_value(json_object_get(dj, "label")))) {
        x->st = bd_err_set(x->err, BD_E_NOMEM, "out of memory");
        goto out;
      }
      fprintf(x->ann, "%s\n{\"id\":%zu,\"image_id\":%zu,\"category_id\":%d,\"bbox\":[",
              x->first_ann ? "" : ",", ++x->next_ann, img, bd_export_coco_category(cls));
      fmt_num(x->ann, b[0]), fputc(',', x->ann), fmt_num(x->ann, b[1]), fputc(',', x->ann);
      fmt_num(x->ann, b[2] - b[0]), fputc(',', x->ann), fmt_num(x->ann, b[3] - b[1]);
      fputs("],\"area\":", x->ann);
      fmt_num(x->ann, (b[2] - b[0]) * (b[3] - b[1]));
      fprintf(x->ann, ",\"score\":%.4f,\"iscrowd\":0}", score);
      x->first_ann = 0;
      x->sum->annotations++;
    }
  } else {
    char *fn = NULL;
    if (asprintf(&fn, "%s/%s.txt", x->path, id) < 0) {
      x->st = bd_err_set(x->err, BD_E_NOMEM, "out of memory");
      goto out;
    }
    FILE *f = fopen(fn, "w");
    if (!f) {
      x->st = bd_err_set(x->err, BD_E_IO, "%s: %s", fn, strerror(errno));
      free(fn);
      goto out;
    }
    for (size_t i = 0; i < nd; i++) {
      int cls;
      double score, b[4];
      json_t *dj = json_array_get(dets, i);
      if (read_box(dj, &cls, &score, b)) continue;
      if (note_category(x, cls, json_string_value(json_object_get(dj, "label")))) {
        x->st = bd_err_set(x->err, BD_E_NOMEM, "out of memory");
        break;
      }
      double v[4] = {(b[0] + b[2]) / 2 / (double)w, (b[1] + b[3]) / 2 / (double)h,
                     (b[2] - b[0]) / (double)w, (b[3] - b[1]) / (double)h};
      for (int k = 0; k < 4; k++) v[k] = v[k] < 0 ? 0 : v[k] > 1 ? 1 : v[k];
      fprintf(f, "%d %.6f %.6f %.6f %.6f\n", cls, v[0], v[1], v[2], v[3]);
      x->sum->annotations++;
    }
    if (fclose(f) != 0) x->st = bd_err_set(x->err, BD_E_IO, "%s: write failed", fn);
    free(fn);
  }
out:
  json_decref(o);
}

static int on_chunk(exp_ctx *x, const char *const *keys, const size_t *lens, size_t n) {
  redisReply *vals = NULL, *urls = NULL;
  const char *argv[PAGE + 2];
  size_t al[PAGE + 2];
  argv[0] = "MGET";
  al[0] = 4;
  for (size_t i = 0; i < n; i++) argv[i + 1] = keys[i], al[i + 1] = lens[i];
  x->st = bd_sredis_cmdv(x->rd, (int)n + 1, argv, al, &vals, x->err);
  if (x->st != BD_OK) return 1;
  if (x->fmt == BD_EXPORT_COCO) {
    char uk[BD_ID_MAX + 16];
    snprintf(uk, sizeof uk, "job:%s:urls", x->job);
    argv[0] = "HMGET";
    al[0] = 5;
    argv[1] = uk;
    al[1] = strlen(uk);
    for (size_t i = 0; i < n; i++)
      argv[i + 2] = keys[i] + x->prefix, al[i + 2] = lens[i] - x->prefix;
    x->st = bd_sredis_cmdv(x->rd, (int)n + 2, argv, al, &urls, x->err);
    if (x->st != BD_OK) goto out;
  }
  for (size_t i = 0; i < n && i < vals->elements && x->st == BD_OK; i++) {
    redisReply *v = vals->element[i];
    if (v->type != REDIS_REPLY_STRING || lens[i] <= x->prefix) continue; /* deleted since SCAN */
    int isnew = hset_add(&x->seen, hash64(keys[i], lens[i]));
    if (isnew < 0) {
      x->st = bd_err_set(x->err, BD_E_NOMEM, "out of memory");
      break;
    }
    if (!isnew) {
      x->sum->duplicates++;
      continue;
    }
    char id[BD_ID_MAX + 1];
    size_t il = lens[i] - x->prefix;
    if (il > BD_ID_MAX) {
      x->sum->bad++;
      continue;
    }
    memcpy(id, keys[i] + x->prefix, il);
    id[il] = '\0';
    const char *url = NULL;
    if (urls && urls->type == REDIS_REPLY_ARRAY && i < urls->elements &&
        urls->element[i]->type == REDIS_REPLY_STRING)
      url = urls->element[i]->str;
    write_one(x, id, v->str, (size_t)v->len, url);
    x->seen_n++;
  }
out:
  if (vals) freeReplyObject(vals);
  if (urls) freeReplyObject(urls);
  return x->st != BD_OK;
}

static int on_page(void *ctx, const char *const *keys, const size_t *lens, size_t n) {
  exp_ctx *x = ctx;
  /* COUNT is only a hint: a SCAN page may hold more keys than PAGE; take it in chunks. */
  for (size_t b = 0; b < n; b += PAGE)
    if (on_chunk(x, keys + b, lens + b, n - b < PAGE ? n - b : PAGE)) return 1;
  if (x->progress) x->progress(x->pctx, x->seen_n, x->sum->total);
  return 0;
}

bd_status bd_export_run(const char *redis_url, const char *job, bd_export_format fmt,
                        const char *path, bd_export_progress_fn progress, void *ctx,
                        bd_export_summary *sum, bd_err *err) {
  memset(sum, 0, sizeof *sum);
  sum->total = -1;
  if (!bd_proto_id_valid(job)) return bd_err_set(err, BD_E_INVALID, "--job: bad id");
  exp_ctx x = {0};
  x.job = job;
  x.fmt = fmt;
  x.path = path;
  x.sum = sum;
  x.progress = progress;
  x.pctx = ctx;
  x.err = err;
  x.first_img = x.first_ann = 1;
  x.prefix = strlen("det:") + strlen(job) + 1;
  bd_status st = BD_OK;
  redisReply *rep = NULL;
  x.rd = bd_sredis_new(redis_url, err);
  if (!x.rd) return err ? err->code : BD_E_UNAVAILABLE;
  /* The job record decides whether the job exists, as for status and resubmit; checked
   * before -o is created, so a typo leaves no empty file behind. */
  st = bd_sredis_cmd(x.rd, &rep, err, "EXISTS job:%s", job);
  if (st != BD_OK) goto out;
  long long exists = bd_sredis_reply_ll(rep, 0);
  freeReplyObject(rep);
  if (exists <= 0) {
    st = bd_err_set(err, BD_E_NOT_FOUND, "job %s: no such job", job);
    goto out;
  }
  st = bd_sredis_cmd(x.rd, &rep, err, "HGET job:%s total", job);
  if (st != BD_OK) goto out;
  sum->total = bd_sredis_reply_ll(rep, -1);
  freeReplyObject(rep);
  if (fmt == BD_EXPORT_YOLO) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
      st = bd_err_set(err, BD_E_IO, "-o %s: %s", path, strerror(errno));
      goto out;
    }
  } else {
    x.out = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!x.out) {
      st = bd_err_set(err, BD_E_IO, "-o %s: %s", path, strerror(errno));
      goto out;
    }
  }
  if (fmt == BD_EXPORT_COCO) {
    x.ann = tmpfile();
    if (!x.ann) {
      st = bd_err_set(err, BD_E_IO, "temporary file: %s", strerror(errno));
      goto out;
    }
    fputs("{\"info\":{\"description\":\"batchdet export of job ", x.out);
    fputs(job, x.out); /* ids are [A-Za-z0-9._-]: no escaping needed */
    fputs("\",\"version\":\"1\"},\n\"images\":[", x.out);
  }
  char pat[BD_ID_MAX + 16];
  snprintf(pat, sizeof pat, "det:%s:*", job);
  st = bd_sredis_scan_pages(x.rd, pat, PAGE, on_page, &x, err);
  if (st == BD_OK) st = x.st;
  if (st != BD_OK) goto out;
  if (fmt == BD_EXPORT_COCO) {
    fputs("],\n\"annotations\":[", x.out);
    rewind(x.ann);
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, x.ann)) > 0) fwrite(buf, 1, k, x.out);
    if (ferror(x.ann)) st = bd_err_set(err, BD_E_IO, "temporary file: read error");
    /* COCO's 80 (their ids whatever the model, so evaluation tools find every one), named
     * by the results' labels where they differ (a custom model's names file); then the
     * classes from 80 up that occur, id 1000 + class. */
    fputs("],\n\"categories\":[", x.out);
    for (int c = 0; c < 80 || c < x.n_cat; c++) {
      if (c >= 80 && !x.cat_seen[c]) continue;
      char unnamed[32];
      fprintf(x.out, "%s{\"id\":%d,\"name\":", c ? "," : "", bd_export_coco_category(c));
      json_str(x.out, category_name(&x, c, unnamed));
      fputc('}', x.out);
    }
    fputs("]}\n", x.out);
  } else if (fmt == BD_EXPORT_YOLO) {
    /* The class names as Ultralytics' data.yaml has them (nc, names; 80 at least), in a
     * file no image can clash with (those end in .txt); JSON strings are YAML strings. */
    char *fn = NULL;
    FILE *f = asprintf(&fn, "%s/data.yaml", path) < 0 ? NULL : fopen(fn, "w");
    if (!f) {
      st = fn ? bd_err_set(err, BD_E_IO, "%s: %s", fn, strerror(errno))
              : bd_err_set(err, BD_E_NOMEM, "out of memory");
    } else {
      int nc = x.top_cat > 80 ? x.top_cat : 80;
      fprintf(f, "# class names of batchdet job %s (class c is names[c] in every ID.txt)\n", job);
      fprintf(f, "nc: %d\nnames: [", nc);
      for (int c = 0; c < nc; c++) {
        char unnamed[32];
        if (c) fputs(", ", f);
        json_str(f, category_name(&x, c, unnamed));
      }
      fputs("]\n", f);
      if (fclose(f) != 0) st = bd_err_set(err, BD_E_IO, "%s: write failed", fn);
    }
    free(fn);
  }
out:
  if (x.ann) fclose(x.ann);
  if (x.out && x.out != stdout) {
    if (fclose(x.out) != 0 && st == BD_OK)
      st = bd_err_set(err, BD_E_IO, "-o %s: write failed", path);
  } else if (x.out) {
    fflush(x.out);
  }
  free(x.seen.slot);
  for (int c = 0; c < x.n_cat; c++) free(x.cat_name[c]);
  free(x.cat_name);
  free(x.cat_seen);
  bd_sredis_destroy(x.rd);
  return st;
}
