/* batchdet detect: run a detector over image files and directories on this machine.
 *
 * Files are read and decoded here (storage/decode), batched, passed to the engine as RGB8
 * images, and each image's result is printed as one JSON line, in input order:
 *   {"image":"dog.jpg","width":768,"height":576,"detections":[{"class":16,"label":"dog",
 *    "score":0.93,"box":[x1,y1,x2,y2]}]}
 * or {"image":"x.jpg","error":"..."} for an image that could not be read; the run goes on.
 * Exit: 0 when the run completed and at least one image was processed, 1 when the model
 * could not load, the network failed, or every image failed, 2 on usage errors. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bd_cli.h"
#include "bd_decode.h"
#include "bd_draw.h"
#include "bd_engine.h"
#include "bd_fetch.h"
#include "bd_labels.h"
#include "bd_strmap.h"
#include "bd_text.h"

#define DETECT_MAX_FILES 10000000
#define DETECT_MAX_DECODED_MB (1L << 20)
#define DETECT_PEEK_BYTES (1 << 20) /* a JPEG's frame header lies past its EXIF, if any */
#define DETECT_MAX_DEPTH 64

typedef struct {
  char *path; /* to open */
  char *name; /* as reported: the argument for files, relative path under a directory */
  char *stem; /* output file stem for --annotate / --dump-input */
} entry;

typedef struct {
  entry *v;
  size_t n, cap;
} entry_list;

typedef struct {
  const char *model, *device, *labels_path, *annotate, *dump, *format;
  bd_family family;
  int threads, batch, fast_decode;
  int progress; /* 1: a line every 5 s on stderr (--progress); stderr a terminal: one updated line
                 */
  long max_decoded_mb; /* decoded pixels of one batch, at most */
  int n_args; /* FILE|DIR|URL arguments given */
  bd_detect_params params;
} detect_opts;

static void detect_usage(FILE *f) {
  fprintf(
      f,
      "usage: batchdet detect [--model PATH] [--family auto|damoyolo|yolox] [--device "
      "cpu|cuda|cuda:N]\n"
      "                       [--threads N] [--batch N] [--score-thr F] [--iou-thr F] [--max-det "
      "N]\n"
      "                       [--format jsonl|coco] [--annotate DIR] [--labels FILE]\n"
      "                       [--dump-input DIR] [--fast-decode] [--max-decoded-mb N]\n"
      "                       [--progress]\n"
      "                       FILE|DIR|URL...\n"
      "\n"
      "Detects objects in image files (JPEG, PNG; the format is sniffed from the content).\n"
      "Directories are walked recursively in sorted order, taking files named *.jpg, *.jpeg,\n"
      "*.png (any case) and skipping hidden entries; files named on the command line are\n"
      "always tried. http://, https:// and s3:// URLs are fetched (S3 credentials and\n"
      "endpoint from the AWS_* variables), with retries on 429/5xx/timeouts.\n"
      "\n"
      "  --model PATH      ONNX model (default: $BATCHDET_MODEL)\n"
      "  --family F        auto (recognise from the graph's outputs), yolox or damoyolo\n"
      "  --device D        cpu (default), cuda, cuda:N\n"
      "  --threads N       cpu backend threads (0 = all cores, default)\n"
      "  --batch N         images per network batch (default 8)\n"
      "  --max-decoded-mb N  decoded pixels held at once, in MiB (default 1024): a batch\n"
      "                    takes fewer images when their sizes (read from the headers) would\n"
      "                    pass it; one image is always taken\n"
      "  --score-thr F     keep detections scoring at least F (default 0.3 for both families;\n"
      "                    damoyolo keeps score > F strictly, as its reference does)\n"
      "  --iou-thr F       per-class NMS IoU threshold (default yolox 0.45, damoyolo 0.7)\n"
      "  --max-det N       detections kept per image (default 100)\n"
      "  --format jsonl    one JSON line per image (default):\n"
      "                    "
      "{\"image\",\"width\",\"height\",\"detections\":[{\"class\",\"label\",\"score\",\n"
      "                    \"box\":[x1,y1,x2,y2]}]} in original-image pixels, or "
      "{\"image\",\"error\"}\n"
      "  --format coco     one COCO-style object at the end: {\"images\":[{id,file_name,width,\n"
      "                    "
      "height}],\"annotations\":[{id,image_id,category_id,bbox:[x,y,w,h],score,\n"
      "                    "
      "area,iscrowd}],\"categories\":[{id,name}],\"errors\":[{file_name,error}]};\n"
      "                    category ids are COCO's 91-ids for 80-class models, else class+1\n"
      "  --annotate DIR    write DIR/<base> (DIR/<base>.jpg when <base> is not a .jpg/.jpeg)\n"
      "                    with boxes and \"label score\" drawn\n"
      "  --labels FILE     class names, one per line (default: MODEL.names beside the\n"
      "                    model if there is one, else the 80 COCO names for an 80-class\n"
      "                    model, else none: detections then carry only \"class\")\n"
      "  --dump-input DIR  write DIR/<base>.f32 (the float32 NCHW [1,3,H,W] tensor fed to the\n"
      "                    network) and DIR/<base>.json (image, width, height, ratio or\n"
      "                    scale_x/scale_y, input_size, family)\n"
      "  --progress        a progress line (images done of all, failed, img/s, ETA) on\n"
      "                    stderr every 5 s; when stderr is a terminal (and the results go\n"
      "                    elsewhere) one line is kept up to date without it\n"
      "  --fast-decode     JPEG DCT-domain downscale when the image is at least twice the\n"
      "                    network size; OFF by default because it changes the pixels the\n"
      "                    network sees (results then differ slightly from the reference)\n"
      "\n"
      "<base> is the file's base name with its extension (dog.jpg -> dog.jpg.f32), or its\n"
      "path under the directory argument with '/' replaced by '_' (directory walks); where\n"
      "two inputs would share one, the later gets ~2, ~3, ... before its extension.\n"
      "Directory walks follow symbolic links but enter each directory once. A file name\n"
      "that is not UTF-8 is reported with U+FFFD for each byte that is not.\n"
      "Exit status: 0 the run completed (per-image errors are reported as lines), 1 the model\n"
      "could not be loaded or run, no image could be processed, or the results could not be\n"
      "written, 2 usage error.\n");
}

/* ---------------------------------------------------------------- inputs */

static void entry_free(entry *e) {
  free(e->path);
  free(e->name);
  free(e->stem);
}

/* The output file base: the file's base name WITH its extension (dog.jpg and dog.png
 * must not collide), or the path under a directory argument with '/' -> '_'. */
static char *make_stem(const char *name, int from_dir) {
  const char *b = name;
  if (!from_dir) {
    const char *s = strrchr(name, '/');
    if (s) b = s + 1;
  }
  char *st = strdup(*b ? b : "image");
  if (!st) return NULL;
  for (char *p = st; *p; p++)
    if (*p == '/' || *p == '?' || *p == '&') *p = '_';
  return st;
}

static int push_entry(entry_list *l, const char *path, const char *name, int from_dir) {
  if (l->n >= DETECT_MAX_FILES) return -1;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    entry *nv = realloc(l->v, nc * sizeof *nv);
    if (!nv) return -1;
    l->v = nv;
    l->cap = nc;
  }
  entry *e = &l->v[l->n];
  e->path = strdup(path);
  /* reported in JSON, which must be UTF-8 */
  e->name = bd_utf8_sanitize(name); /* a copy; U+FFFD for bytes that are not UTF-8 */
  e->stem = e->name ? make_stem(e->name, from_dir) : NULL;
  if (e->name && strcmp(e->name, name))
    fprintf(stderr, "batchdet detect: warning: file name is not UTF-8, reported as %s\n", e->name);
  if (!e->path || !e->name || !e->stem) {
    entry_free(e);
    return -1;
  }
  l->n++;
  return 0;
}

static int is_url(const char *s) {
  return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8) || !strncmp(s, "s3://", 5) ||
         !strncmp(s, "file://", 7);
}

static int has_image_ext(const char *n) {
  const char *d = strrchr(n, '.');
  return d && (!strcasecmp(d, ".jpg") || !strcasecmp(d, ".jpeg") || !strcasecmp(d, ".png"));
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An open-addressing set of (device, inode) pairs: the directories a walk has entered,
 * so that a symbolic link back up the tree (or a second link to one directory) is not
 * walked again. */
typedef struct {
  dev_t dev;
  ino_t ino;
} dir_id;

typedef struct {
  dir_id *v;
  unsigned char *used;
  size_t cap, n;
} dir_set;

static size_t dir_hash(dev_t dev, ino_t ino) {
  uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
  return (size_t)(h ^ h >> 29);
}

/* 1: added, 0: already there, -1: out of memory. */
static int dir_set_add(dir_set *s, dev_t dev, ino_t ino) {
  if (2 * (s->n + 1) > s->cap) {
    dir_set g = {.cap = s->cap ? 2 * s->cap : 64};
    g.v = malloc(g.cap * sizeof *g.v);
    g.used = calloc(g.cap, 1);
    if (!g.v || !g.used) {
      free(g.v);
      free(g.used);
      return -1;
    }
    for (size_t i = 0; i < s->cap; i++)
      if (s->used[i]) dir_set_add(&g, s->v[i].dev, s->v[i].ino);
    free(s->v);
    free(s->used);
    *s = g;
  }
  size_t i = dir_hash(dev, ino) & (s->cap - 1);
  for (; s->used[i]; i = (i + 1) & (s->cap - 1))
    if (s->v[i].dev == dev && s->v[i].ino == ino) return 0;
  s->used[i] = 1;
  s->v[i] = (dir_id){dev, ino};
  s->n++;
  return 1;
}

typedef struct {
  entry_list *l;
  dir_set seen;
} walk_ctx;

/* Recursive sorted walk of a directory not yet entered (w->seen); rel is the path under
 * the directory argument ("" at top). A directory or entry that cannot be read is
 * reported and skipped; -1 only when out of memory or past DETECT_MAX_FILES. */
static int walk(walk_ctx *w, const char *dir, const char *rel, int depth) {
  if (depth > DETECT_MAX_DEPTH) {
    fprintf(stderr, "batchdet detect: %s: deeper than %d directories, skipped\n", dir,
            DETECT_MAX_DEPTH);
    return 0;
  }
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "batchdet detect: %s: %s, skipped\n", dir, strerror(errno));
    return 0;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue; /* hidden, ".", ".." */
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 32;
      char **nv = realloc(names, nc * sizeof *nv);
      if (!nv) {
        rc = -1;
        goto out;
      }
      names = nv;
      cap = nc;
    }
    if (!(names[n] = strdup(de->d_name))) {
      rc = -1;
      goto out;
    }
    n++;
  }
  if (n > 1) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t pl = strlen(dir) + strlen(names[i]) + 2, rl = strlen(rel) + strlen(names[i]) + 2;
    char *p = malloc(pl), *r = malloc(rl);
    if (!p || !r) {
      free(p);
      free(r);
      rc = -1;
      break;
    }
    size_t dl = strlen(dir);
    snprintf(p, pl, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", names[i]);
    snprintf(r, rl, "%s%s%s", rel, *rel ? "/" : "", names[i]);
    struct stat sb;
    if (stat(p, &sb) != 0) {
      if (has_image_ext(names[i]) || errno != ENOENT) /* ENOENT: a dangling link */
        fprintf(stderr, "batchdet detect: %s: %s, skipped\n", p, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
      const int added = dir_set_add(&w->seen, sb.st_dev, sb.st_ino);
      if (added < 0)
        rc = -1;
      else if (added)
        rc = walk(w, p, r, depth + 1);
      else
        fprintf(stderr, "batchdet detect: %s: directory already walked (a link), skipped\n", p);
    } else if (S_ISREG(sb.st_mode) && has_image_ext(names[i])) {
      rc = push_entry(w->l, p, r, 1);
    }
    free(p);
    free(r);
  }
out:
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  closedir(d);
  return rc;
}

/* ---------------------------------------------------------------- progress */

/* "1h02m", "3m12s", "12s" */
static void fmt_eta(char *b, size_t cap, double s) {
  long t = s < 0 ? 0 : s > 1e8 ? 99999999 : (long)(s + 0.5);
  if (t >= 3600)
    snprintf(b, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    snprintf(b, cap, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(b, cap, "%lds", t);
}

/* After a batch: on a terminal the line is rewritten in place (at most every 0.5 s, and
 * after the first batch), with --progress a new line every 5 s. *shown: a terminal line
 * is on screen (cleared before the summary). */
static void show_progress(int tty, int forced, size_t done, size_t total, size_t failed,
                          double elapsed, double *last, int *shown) {
  double every = tty ? 0.5 : 5.0;
  if ((!tty && !forced) || (*last >= 0 && elapsed - *last < every)) return;
  *last = elapsed;
  double rate = elapsed > 0 ? (double)done / elapsed : 0;
  char eta[32];
  fmt_eta(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : 0);
  fprintf(stderr, "%sbatchdet detect: %zu/%zu images (%.0f%%), %zu failed, %.1f img/s, ETA %s%s",
          tty ? "\r" : "", done, total, total ? 100.0 * (double)done / (double)total : 100.0,
          failed, rate, eta, tty ? "\033[K" : "\n");
  fflush(stderr);
  *shown = tty;
}

/* ---------------------------------------------------------------- output */

static double round_to(double v, double q) {
  return round(v / q) * q;
}

/* "label" only where the class has a name (as the worker's results). */
static json_t *det_json(const bd_det *d, const bd_labels *labels) {
  const char *lab = bd_labels_name(labels, d->cls);
  json_t *box = json_pack("[ffff]", round_to(d->x1, 0.01), round_to(d->y1, 0.01),
                          round_to(d->x2, 0.01), round_to(d->y2, 0.01));
  if (!lab)
    return json_pack("{s:i,s:f,s:o}", "class", d->cls, "score", round_to(d->score, 1e-5), "box",
                     box);
  return json_pack("{s:i,s:s,s:f,s:o}", "class", d->cls, "label", lab, "score",
                   round_to(d->score, 1e-5), "box", box);
}

/* One JSON line on stdout, flushed; -1 (errno set) when it could not be formatted or
 * written (a full disk, a closed pipe): the results would be lost, so the run stops. */
static int print_line(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
  if (!s) {
    errno = ENOMEM;
    return -1;
  }
  int ok = fputs(s, stdout) >= 0 && fputc('\n', stdout) != EOF;
  free(s);
  return fflush(stdout) == 0 && ok && !ferror(stdout) ? 0 : -1;
}

/* Makes the stems of l's entries unique (the later of two equal ones gets ~2, ~3, ...
 * before its extension), so that --annotate and --dump-input never overwrite one
 * image's files with another's. -1 when out of memory. */
static int unique_stems(entry_list *l) {
  /* stem -> the next ~k to try for it; one key per entry */
  bd_strmap *set = bd_strmap_new(l->n);
  int rc = set ? 0 : -1;
  for (size_t i = 0; i < l->n && rc == 0; i++) {
    entry *e = &l->v[i];
    int fresh = 0;
    long *next = bd_strmap_put(set, e->stem, 2, &fresh);
    if (!next) rc = -1;
    if (!next || fresh) continue;
    const char *dot = strrchr(e->stem, '.');
    const int pre = (int)(dot ? (size_t)(dot - e->stem) : strlen(e->stem));
    for (long k = *next;; k++) {
      char *c = malloc(strlen(e->stem) + 24);
      if (!c) {
        rc = -1;
        break;
      }
      snprintf(c, strlen(e->stem) + 24, "%.*s~%ld%s", pre, e->stem, k, dot ? dot : "");
      long *taken = bd_strmap_put(set, c, 2, &fresh);
      if (!taken || !fresh) {
        free(c);
        if (!taken) {
          rc = -1;
          break;
        }
        continue;
      }
      *next = k + 1; /* slots never move */
      free(e->stem);
      e->stem = c;
      break;
    }
  }
  bd_strmap_destroy(set);
  return rc;
}

static int ensure_dir(const char *dir) {
  struct stat sb;
  if (stat(dir, &sb) == 0) return S_ISDIR(sb.st_mode) ? 0 : -1;
  return mkdir(dir, 0777) == 0 || errno == EEXIST ? 0 : -1;
}

static int write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  int ok = fwrite(data, 1, len, f) == len;
  ok &= fclose(f) == 0;
  return ok ? 0 : -1;
}

static char *join_path(const char *dir, const char *stem, const char *ext) {
  size_t n = strlen(dir) + strlen(stem) + strlen(ext) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s%s", dir, stem, ext);
  return p;
}

static int dump_input(const detect_opts *o, bd_engine *e, const entry *en, const bd_image *im,
                      bd_err *err) {
  int c, h, w, rc = -1;
  bd_engine_input_chw(e, &c, &h, &w);
  float *t = malloc((size_t)c * h * w * sizeof *t);
  char *pf = join_path(o->dump, en->stem, ".f32"), *pj = join_path(o->dump, en->stem, ".json");
  json_t *j = NULL;
  char *s = NULL;
  bd_prep_info pi;
  if (!t || !pf || !pj) goto out;
  if (bd_engine_preprocess(e, im, t, &pi, err) != BD_OK) goto out;
  if (write_file(pf, t, (size_t)c * h * w * sizeof *t)) {
    bd_err_set(err, BD_E_IO, "writing %s", pf);
    goto out;
  }
  const bd_family_info *fi = bd_engine_family(e);
  j = json_pack("{s:s,s:i,s:i}", "image", en->name, "width", im->w, "height", im->h);
  if (fi->family == BD_FAMILY_YOLOX) {
    json_object_set_new(j, "ratio", json_real(pi.ratio));
  } else {
    json_object_set_new(j, "scale_x", json_real(pi.scale_x));
    json_object_set_new(j, "scale_y", json_real(pi.scale_y));
  }
  json_object_set_new(j, "input_size", h == w ? json_integer(h) : json_pack("[ii]", h, w));
  json_object_set_new(j, "input_shape", json_pack("[iiii]", 1, c, h, w));
  json_object_set_new(j, "family", json_string(bd_family_name(fi->family)));
  s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!s || write_file(pj, s, strlen(s))) {
    bd_err_set(err, BD_E_IO, "writing %s", pj);
    goto out;
  }
  rc = 0;
out:
  free(s);
  json_decref(j);
  free(t);
  free(pf);
  free(pj);
  return rc;
}

static int annotate(const detect_opts *o, const entry *en, bd_image *im, const bd_detections *d,
                    const bd_labels *labels, double sx, double sy, bd_err *err) {
  int side = im->w < im->h ? im->w : im->h;
  int thick = side / 300 > 2 ? side / 300 : 2, ts = (side + 299) / 300;
  for (int k = d->n - 1; k >= 0; k--) { /* best last, so it is drawn on top */
    const bd_det *b = &d->det[k];
    bd_rgb col = bd_draw_palette(b->cls);
    /* Boxes are in the reported frame; the image may be DCT-downscaled. */
    int x1 = (int)lround(b->x1 / sx), y1 = (int)lround(b->y1 / sy);
    int x2 = (int)lround(b->x2 / sx), y2 = (int)lround(b->y2 / sy);
    bd_draw_rect(im, x1, y1, x2, y2, thick, col);
    char txt[96];
    const char *lab = bd_labels_name(labels, b->cls);
    if (lab)
      snprintf(txt, sizeof txt, "%s %.2f", lab, b->score);
    else
      snprintf(txt, sizeof txt, "class %d %.2f", b->cls, b->score);
    bd_draw_label(im, x1, y1, txt, ts, (bd_rgb){255, 255, 255}, col);
  }
  uint8_t *jpg = NULL;
  size_t len = 0;
  if (bd_encode_jpeg(im, 90, &jpg, &len, err) != BD_OK) return -1;
  /* dog.jpg -> dog.jpg; dog.png -> dog.png.jpg (unique, and still a .jpg). */
  const char *ext = strrchr(en->stem, '.');
  int is_jpg = ext && (!strcasecmp(ext, ".jpg") || !strcasecmp(ext, ".jpeg"));
  char *p = join_path(o->annotate, en->stem, is_jpg ? "" : ".jpg");
  int rc = (p && write_file(p, jpg, len) == 0) ? 0 : -1;
  if (rc) bd_err_set(err, BD_E_IO, "writing %s", p ? p : o->annotate);
  free(p);
  free(jpg);
  return rc;
}

/* ---------------------------------------------------------------- URLs */

/* Fetches the URL entries from..m-1 of one batch concurrently (the fetcher is made on
 * first use); 0..from-1 were fetched before and are kept. bodies[k] gets the bytes of URL
 * entry k; derr[k] its error; files keep both empty. */
static int fetch_batch(bd_fetch **f, const entry *en, int from, int m, bd_fetch_result *bodies,
                       char (*derr)[BD_ERR_MSG_MAX]) {
  int pending = 0;
  for (int k = from; k < m; k++) {
    derr[k][0] = '\0';
    memset(&bodies[k], 0, sizeof bodies[k]);
    if (!is_url(en[k].path)) continue;
    bd_err e;
    if (!*f) {
      bd_fetch_opts fo;
      bd_fetch_opts_default(&fo);
      fo.concurrency = 16;
      fo.allow_file = 1; /* a local user could name the path itself */
      if (!(*f = bd_fetch_new(&fo, NULL, NULL, &e))) return -1;
    }
    if (bd_fetch_submit(*f, (uint64_t)k, en[k].path, NULL, -1, &e) != BD_OK)
      snprintf(derr[k], BD_ERR_MSG_MAX, "%s", e.msg);
    else
      pending++;
  }
  while (pending > 0) {
    bd_fetch_result r;
    bd_err e;
    memset(&r, 0, sizeof r);
    if (bd_fetch_poll(*f, -1, &r, &e) != BD_OK) return -1;
    pending--;
    if (r.id < (uint64_t)from || r.id >= (uint64_t)m) {
      bd_fetch_result_clear(&r);
      continue;
    }
    if (r.status != BD_OK) {
      snprintf(derr[r.id], BD_ERR_MSG_MAX, "%s", r.err.msg);
      bd_fetch_result_clear(&r);
    } else if (r.len == 0) {
      snprintf(derr[r.id], BD_ERR_MSG_MAX, "fetch: empty body");
      bd_fetch_result_clear(&r);
    } else {
      bodies[r.id] = r;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- memory budget */

/* An upper bound of entry en's decoded size in bytes, from its header alone: w * h * 3
 * for a JPEG or PNG whose frame header is in its first bytes (a URL's fetched body, a
 * file's first DETECT_PEEK_BYTES); the decoder's largest image for a JPEG or PNG whose
 * header is not there; 0 for anything else (the decoder refuses it before allocating). */
static long long decoded_bound(const entry *en, const bd_fetch_result *body, const char *derr) {
  const long long worst = (long long)BD_DECODE_DEFAULT_MAX_PIXELS * 3;
  if (derr[0]) return 0; /* its fetch failed: nothing to decode */
  const uint8_t *buf = body->data;
  size_t len = body->len;
  uint8_t *head = NULL;
  if (!buf) {
    FILE *fp = fopen(en->path, "rb");
    head = fp ? malloc(DETECT_PEEK_BYTES) : NULL;
    len = head ? fread(head, 1, DETECT_PEEK_BYTES, fp) : 0;
    if (fp) fclose(fp);
    buf = head;
  }
  long long b = 0;
  int w = 0, h = 0;
  if (buf && bd_decode_sniff(buf, len) != BD_IMG_UNKNOWN)
    b = bd_decode_peek_size(buf, len, &w, &h) ? (long long)w * h * 3 : worst;
  free(head);
  return b;
}

/* ---------------------------------------------------------------- decoding */

/* Decoding dominates a GPU run's host time, so one batch's images are decoded on
 * several threads (bd_decode_* are reentrant). Results land in per-image slots. */
typedef struct {
  const entry *en;
  const bd_decode_opts *dopts;
  bd_fetch_result *bodies;
  bd_image *imgs;
  bd_decode_info *info;
  char (*derr)[BD_ERR_MSG_MAX];
  const bd_image **ptrs;
  int m, stride, first;
} decode_ctx;

static void decode_one(decode_ctx *c, int k) {
  bd_err de;
  bd_err_clear(&de);
  bd_status ds;
  c->ptrs[k] = NULL;
  if (c->derr[k][0]) return; /* fetch failed */
  if (c->bodies[k].data) {
    ds = bd_decode_image(c->bodies[k].data, c->bodies[k].len, c->dopts, &c->imgs[k], &c->info[k],
                         &de);
    bd_fetch_result_clear(&c->bodies[k]);
  } else {
    ds = bd_decode_file(c->en[k].path, c->dopts, &c->imgs[k], &c->info[k], &de);
  }
  /* PNGs may be wider than pre-processing takes: say so, not "invalid" later */
  if (ds == BD_OK && (ds = bd_engine_check_image_size(c->imgs[k].w, c->imgs[k].h, &de)) != BD_OK)
    bd_image_free(&c->imgs[k]);
  if (ds != BD_OK) {
    snprintf(c->derr[k], BD_ERR_MSG_MAX, "%s", de.msg[0] ? de.msg : bd_status_name(de.code));
    return;
  }
  c->ptrs[k] = &c->imgs[k];
}

static void *decode_thread(void *arg) {
  decode_ctx *c = arg;
  for (int k = c->first; k < c->m; k += c->stride) decode_one(c, k);
  return NULL;
}

static void decode_parallel(const decode_ctx *base, int m, int threads) {
  enum { MAXT = 16 };
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  if (threads > MAXT) threads = MAXT;
  if (threads > m) threads = m;
  pthread_t th[MAXT];
  decode_ctx c[MAXT];
  int started[MAXT] = {0};
  for (int t = 0; t < threads; t++) {
    c[t] = *base;
    c[t].m = m;
    c[t].stride = threads < 1 ? 1 : threads;
    c[t].first = t;
    if (t > 0) started[t] = pthread_create(&th[t], NULL, decode_thread, &c[t]) == 0;
  }
  if (threads < 1) return;
  decode_thread(&c[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      decode_thread(&c[t]);
  }
}

/* ---------------------------------------------------------------- main */

/* A directory argument: walked unless an earlier one entered it. */
static int walk_top(walk_ctx *w, const char *dir, const struct stat *sb) {
  const int added = dir_set_add(&w->seen, sb->st_dev, sb->st_ino);
  if (added <= 0) {
    if (added == 0)
      fprintf(stderr, "batchdet detect: %s: directory already walked, skipped\n", dir);
    return added;
  }
  return walk(w, dir, "", 0);
}

static int parse_args_in(int argc, char **argv, detect_opts *o, walk_ctx *w, int *help) {
  entry_list *files = w->l;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      *help = 1;
      return 0;
    }
    if (!strcmp(a, "--fast-decode")) {
      o->fast_decode = 1;
      continue;
    }
    if (!strcmp(a, "--progress")) {
      o->progress = 1;
      continue;
    }
    if (!strcmp(a, "--")) {
      for (i++; i < argc; i++, o->n_args++)
        if (push_entry(files, argv[i], argv[i], 0)) return -1;
      break;
    }
    if (a[0] != '-' || !a[1]) {
      struct stat sb;
      o->n_args++;
      int rc = (!is_url(a) && stat(a, &sb) == 0 && S_ISDIR(sb.st_mode))
                   ? walk_top(w, a, &sb)
                   : push_entry(files, a, a, 0);
      if (rc) {
        fprintf(stderr, "batchdet detect: out of memory or more than %d files listing inputs\n",
                DETECT_MAX_FILES);
        return -1;
      }
      continue;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL;
    char *end = NULL;
    if (!v) {
      fprintf(stderr, "batchdet detect: %s needs a value\n", a);
      return -1;
    }
    if (!strcmp(a, "--model"))
      o->model = v;
    else if (!strcmp(a, "--device"))
      o->device = v;
    else if (!strcmp(a, "--labels"))
      o->labels_path = v;
    else if (!strcmp(a, "--annotate"))
      o->annotate = v;
    else if (!strcmp(a, "--dump-input"))
      o->dump = v;
    else if (!strcmp(a, "--format")) {
      if (strcmp(v, "jsonl") && strcmp(v, "coco")) {
        fprintf(stderr, "batchdet detect: --format is jsonl or coco\n");
        return -1;
      }
      o->format = v;
    } else if (!strcmp(a, "--family")) {
      if (bd_family_parse(v, &o->family) || o->family == BD_FAMILY_NONE) {
        fprintf(stderr, "batchdet detect: unknown family '%s' (auto, yolox, damoyolo)\n", v);
        return -1;
      }
    } else if (!strcmp(a, "--threads") || !strcmp(a, "--batch") || !strcmp(a, "--max-det") ||
               !strcmp(a, "--max-decoded-mb")) {
      long x = strtol(v, &end, 10);
      int lo = strcmp(a, "--threads") ? 1 : 0;
      int hi = !strcmp(a, "--batch")            ? BD_ENGINE_MAX_BATCH
               : !strcmp(a, "--threads")        ? BD_ENGINE_MAX_THREADS
               : !strcmp(a, "--max-decoded-mb") ? DETECT_MAX_DECODED_MB
                                                : 100000;
      if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "batchdet detect: %s wants an integer in %d..%d\n", a, lo, hi);
        return -1;
      }
      if (!strcmp(a, "--threads"))
        o->threads = (int)x;
      else if (!strcmp(a, "--batch"))
        o->batch = (int)x;
      else if (!strcmp(a, "--max-decoded-mb"))
        o->max_decoded_mb = x;
      else
        o->params.max_det = (int)x;
    } else if (!strcmp(a, "--score-thr") || !strcmp(a, "--iou-thr")) {
      double x = strtod(v, &end);
      if (!*v || *end || !(x >= 0.0 && x <= 1.0)) {
        fprintf(stderr, "batchdet detect: %s wants a number in 0..1\n", a);
        return -1;
      }
      if (!strcmp(a, "--score-thr"))
        o->params.score_thr = (float)x;
      else
        o->params.iou_thr = (float)x;
    } else {
      fprintf(stderr, "batchdet detect: unknown option '%s'\n", a);
      return -1;
    }
  }
  return 0;
}

static int parse_args(int argc, char **argv, detect_opts *o, entry_list *files, int *help) {
  walk_ctx w = {.l = files};
  const int rc = parse_args_in(argc, argv, o, &w, help);
  free(w.seen.v);
  free(w.seen.used);
  return rc;
}

int bd_cmd_detect(int argc, char **argv) {
  detect_opts o = {.device = "cpu",
                   .format = "jsonl",
                   .batch = 8,
                   .max_decoded_mb = 1024,
                   .params = {.score_thr = -1.f, .iou_thr = -1.f, .max_det = 0}};
  entry_list files = {0};
  int help = 0, rc = BD_EXIT_FAIL;
  bd_engine *e = NULL;
  bd_labels *labels = NULL;
  json_t *coco = NULL, *c_images = NULL, *c_anns = NULL, *c_errors = NULL;
  bd_image *imgs = NULL;
  bd_decode_info *info = NULL;
  const bd_image **ptrs = NULL;
  bd_detections *dets = NULL;
  bd_status *status = NULL;
  bd_detect_params *params = NULL;
  char(*derr)[BD_ERR_MSG_MAX] = NULL;
  bd_fetch_result *bodies = NULL;
  bd_fetch *fetcher = NULL;
  bd_err err;
  bd_err_clear(&err);

  if (parse_args(argc, argv, &o, &files, &help)) {
    detect_usage(stderr);
    rc = BD_EXIT_USAGE;
    goto out;
  }
  if (help) {
    detect_usage(stdout);
    rc = BD_EXIT_OK;
    goto out;
  }
  if (!o.model) o.model = getenv("BATCHDET_MODEL");
  if (!o.model || !*o.model) {
    fprintf(stderr, "batchdet detect: no model: pass --model PATH or set BATCHDET_MODEL\n");
    rc = BD_EXIT_USAGE;
    goto out;
  }
  int is_cuda, idx;
  if (bd_engine_parse_device(o.device, &is_cuda, &idx)) {
    fprintf(stderr, "batchdet detect: unknown device '%s' (cpu, cuda, cuda:N)\n", o.device);
    rc = BD_EXIT_USAGE;
    goto out;
  }
  if (files.n == 0) {
    if (!o.n_args) {
      fprintf(stderr, "batchdet detect: no input images: name files, directories or URLs\n");
      detect_usage(stderr);
      rc = BD_EXIT_USAGE;
    } else {
      fprintf(stderr,
              "batchdet detect: no input images (no *.jpg, *.jpeg or *.png in the "
              "directories given)\n");
    }
    goto out;
  }
  if ((o.annotate || o.dump) && unique_stems(&files)) goto nomem;
  if ((o.annotate && ensure_dir(o.annotate)) || (o.dump && ensure_dir(o.dump))) {
    fprintf(stderr, "batchdet detect: cannot create output directory %s\n",
            o.annotate && ensure_dir(o.annotate) ? o.annotate : o.dump);
    goto out;
  }
  if (o.labels_path && bd_labels_load(o.labels_path, &labels, &err) != BD_OK) {
    fprintf(stderr, "batchdet detect: %s\n", err.msg);
    goto out;
  }
  bd_engine_opts eo = {
      .device = o.device, .threads = o.threads, .max_batch = o.batch, .family = o.family};
  if (bd_engine_load(o.model, &eo, &e, &err) != BD_OK) {
    fprintf(stderr, "batchdet detect: %s\n", err.msg);
    goto out;
  }
  const bd_family_info *fi = bd_engine_family(e);
  char names_path[4096] = "";
  if (!o.labels_path && bd_labels_for_model(o.model, fi->num_classes, &labels, names_path,
                                            sizeof names_path, &err) != BD_OK) {
    fprintf(stderr, "batchdet detect: %s\n", err.msg);
    goto out;
  }
  if (!labels)
    fprintf(stderr,
            "batchdet detect: warning: the model has %d classes, not COCO's 80, and there is "
            "no %s: detections carry class indices only (--labels FILE names them)\n",
            fi->num_classes, names_path);
  else if (bd_labels_count(labels) < fi->num_classes)
    fprintf(stderr, "batchdet detect: warning: %d labels for %d classes\n", bd_labels_count(labels),
            fi->num_classes);
  int coco_fmt = !strcmp(o.format, "coco");
  if (coco_fmt) {
    coco = json_object();
    c_images = json_array();
    c_anns = json_array();
    c_errors = json_array();
    if (!coco || !c_images || !c_anns || !c_errors) goto nomem;
  }
  int B = o.batch;
  imgs = calloc((size_t)B, sizeof *imgs);
  info = calloc((size_t)B, sizeof *info);
  ptrs = calloc((size_t)B, sizeof *ptrs);
  dets = calloc((size_t)B, sizeof *dets);
  status = calloc((size_t)B, sizeof *status);
  params = calloc((size_t)B, sizeof *params);
  derr = calloc((size_t)B, sizeof *derr);
  bodies = calloc((size_t)B, sizeof *bodies);
  if (!imgs || !info || !ptrs || !dets || !status || !params || !derr || !bodies) goto nomem;
  bd_decode_opts dopts = {0};
  if (o.fast_decode) {
    dopts.target_w = fi->in_w;
    dopts.target_h = fi->in_h;
    dopts.fit = fi->family == BD_FAMILY_YOLOX ? BD_DECODE_FIT_LETTERBOX : BD_DECODE_FIT_STRETCH;
  }
  size_t n_ok = 0;
  long ann_id = 1;
  struct timespec t_start, t_end;
  double net_s = 0;
  clock_gettime(CLOCK_MONOTONIC, &t_start);
  const long long budget = o.max_decoded_mb << 20;
  int carried = 0; /* entries fetched for the previous batch but left for this one */
  /* the in-place line only while results go elsewhere (on one terminal they would mix) */
  const int tty = isatty(2) && !isatty(1);
  double last_shown = -1;
  int progress_shown = 0;
  int m = 0;
  for (size_t i0 = 0; i0 < files.n; i0 += (size_t)m) {
    const int win = files.n - i0 < (size_t)B ? (int)(files.n - i0) : B;
    if (fetch_batch(&fetcher, &files.v[i0], carried, win, bodies, derr) != 0) {
      fprintf(stderr, "batchdet detect: cannot start the fetcher\n");
      goto out;
    }
    /* The longest run of the window whose decoded sizes fit the budget; at least one. */
    long long held = 0;
    for (m = 0; m < win; m++) {
      long long b = decoded_bound(&files.v[i0 + m], &bodies[m], derr[m]);
      if (m > 0 && held + b > budget) break;
      held += b;
    }
    decode_ctx dc = {.en = &files.v[i0], .dopts = &dopts, .bodies = bodies, .imgs = imgs,
                     .info = info, .derr = derr, .ptrs = ptrs};
    decode_parallel(&dc, m, o.threads);
    for (int k = 0; k < m; k++) {
      bd_err de;
      params[k] = o.params;
      if (ptrs[k] && o.dump && dump_input(&o, e, &files.v[i0 + k], &imgs[k], &de))
        fprintf(stderr, "batchdet detect: %s: --dump-input: %s\n", files.v[i0 + k].name, de.msg);
    }
    struct timespec d0, d1;
    clock_gettime(CLOCK_MONOTONIC, &d0);
    bd_status dst = bd_engine_detect(e, m, ptrs, params, dets, status, &err);
    clock_gettime(CLOCK_MONOTONIC, &d1);
    net_s += (double)(d1.tv_sec - d0.tv_sec) + (d1.tv_nsec - d0.tv_nsec) * 1e-9;
    if (dst != BD_OK) {
      fprintf(stderr, "batchdet detect: %s\n", err.msg);
      for (int k = 0; k < m; k++) bd_image_free(&imgs[k]);
      goto out;
    }
    for (int k = 0; k < m; k++) {
      const entry *en = &files.v[i0 + k];
      if (!ptrs[k] || status[k] != BD_OK) {
        const char *msg = ptrs[k] ? bd_status_name(status[k]) : derr[k];
        /* library messages may quote bytes from outside (a file name, a server's text) */
        char *safe = bd_utf8_sanitize(msg);
        json_t *l = NULL;
        int bad;
        if (coco_fmt)
          bad = !safe || json_array_append_new(c_errors, json_pack("{s:s,s:s}", "file_name",
                                                                   en->name, "error", safe));
        else
          bad = !safe || !(l = json_pack("{s:s,s:s}", "image", en->name, "error", safe)) ||
                print_line(l);
        json_decref(l);
        free(safe);
        bd_image_free(&imgs[k]);
        bd_detections_free(&dets[k]);
        if (bad) goto write_failed;
        continue;
      }
      n_ok++;
      /* Boxes are in the decoded frame; map to the full-size oriented frame. */
      double sx = (double)info[k].oriented_w / imgs[k].w,
             sy = (double)info[k].oriented_h / imgs[k].h;
      for (int d = 0; d < dets[k].n; d++) {
        bd_det *b = &dets[k].det[d];
        b->x1 = (float)(b->x1 * sx), b->x2 = (float)(b->x2 * sx);
        b->y1 = (float)(b->y1 * sy), b->y2 = (float)(b->y2 * sy);
      }
      int bad = 0;
      if (coco_fmt) {
        long id = (long)(i0 + k) + 1;
        bad |= json_array_append_new(
            c_images, json_pack("{s:I,s:s,s:i,s:i}", "id", (json_int_t)id, "file_name", en->name,
                                "width", info[k].oriented_w, "height", info[k].oriented_h));
        for (int d = 0; d < dets[k].n; d++) {
          const bd_det *b = &dets[k].det[d];
          int cat = fi->num_classes == 80 ? bd_coco80_category_id(b->cls) : b->cls + 1;
          double w = b->x2 - b->x1, h = b->y2 - b->y1;
          bad |= json_array_append_new(
              c_anns, json_pack("{s:I,s:I,s:i,s:[ffff],s:f,s:f,s:i}", "id", (json_int_t)ann_id++,
                                "image_id", (json_int_t)id, "category_id", cat, "bbox",
                                round_to(b->x1, 0.01), round_to(b->y1, 0.01), round_to(w, 0.01),
                                round_to(h, 0.01), "score", round_to(b->score, 1e-5), "area",
                                round_to(w * h, 0.01), "iscrowd", 0));
        }
      } else {
        json_t *arr = json_array();
        for (int d = 0; d < dets[k].n; d++)
          bad |= json_array_append_new(arr, det_json(&dets[k].det[d], labels));
        json_t *l = json_pack("{s:s,s:i,s:i,s:o}", "image", en->name, "width", info[k].oriented_w,
                              "height", info[k].oriented_h, "detections", arr);
        bad |= !l || print_line(l);
        json_decref(l);
      }
      if (bad) {
        bd_image_free(&imgs[k]);
        bd_detections_free(&dets[k]);
        goto write_failed;
      }
      if (o.annotate) {
        bd_err ae;
        if (annotate(&o, en, &imgs[k], &dets[k], labels, sx, sy, &ae))
          fprintf(stderr, "batchdet detect: %s: --annotate: %s\n", en->name, ae.msg);
      }
      bd_image_free(&imgs[k]);
      bd_detections_free(&dets[k]);
    }
    {
      struct timespec tn;
      clock_gettime(CLOCK_MONOTONIC, &tn);
      size_t done = i0 + (size_t)m;
      show_progress(tty, o.progress, done, files.n, done - n_ok,
                    (double)(tn.tv_sec - t_start.tv_sec) + (tn.tv_nsec - t_start.tv_nsec) * 1e-9,
                    &last_shown, &progress_shown);
    }
    /* Entries the budget left out move to the front, fetched bodies and errors with them. */
    carried = win - m;
    for (int k = m; k < win; k++) {
      bodies[k - m] = bodies[k];
      memcpy(derr[k - m], derr[k], sizeof derr[k]);
    }
    for (int k = carried; k < win; k++) memset(&bodies[k], 0, sizeof bodies[k]);
  }
  if (coco_fmt) {
    json_t *cats = json_array();
    for (int c = 0; c < fi->num_classes; c++) {
      const char *nm = bd_labels_name(labels, c);
      char unnamed[32];
      snprintf(unnamed, sizeof unnamed, "class %d", c);
      json_array_append_new(
          cats,
          json_pack("{s:i,s:s}", "id", fi->num_classes == 80 ? bd_coco80_category_id(c) : c + 1,
                    "name", nm ? nm : unnamed));
    }
    json_object_set_new(coco, "images", c_images);
    json_object_set_new(coco, "annotations", c_anns);
    json_object_set_new(coco, "categories", cats);
    json_object_set_new(coco, "errors", c_errors);
    c_images = c_anns = c_errors = NULL;
    if (print_line(coco)) goto write_failed;
  }
  clock_gettime(CLOCK_MONOTONIC, &t_end);
  if (progress_shown) fputs("\r\033[K", stderr); /* the summary takes the progress line's place */
  {
    double wall = (double)(t_end.tv_sec - t_start.tv_sec) + (t_end.tv_nsec - t_start.tv_nsec) * 1e-9;
    /* One summary line: overall rate (fetch, decode, detection, output) and the rate of
     * the detection calls alone on this device. */
    fprintf(stderr,
            "batchdet detect: %zu images (%zu failed) in %.2f s, %.1f img/s; detection %.1f "
            "img/s on %s (pre/post-processing on the %s)\n",
            files.n, files.n - n_ok, wall, wall > 0 ? (double)files.n / wall : 0.0,
            net_s > 0 ? (double)files.n / net_s : 0.0, bd_engine_device(e),
            bd_engine_device_prepost(e) ? "device" : "host");
  }
  if (n_ok == 0) fprintf(stderr, "batchdet detect: no image could be processed\n");
  rc = n_ok ? BD_EXIT_OK : BD_EXIT_FAIL;
  goto out;
write_failed:
  fprintf(stderr, "batchdet detect: writing results to standard output: %s; stopped\n",
          strerror(errno ? errno : EIO));
  for (int k = 0; k < o.batch && imgs; k++) bd_image_free(&imgs[k]);
  for (int k = 0; k < o.batch && dets; k++) bd_detections_free(&dets[k]);
  rc = BD_EXIT_FAIL;
  goto out;
nomem:
  fprintf(stderr, "batchdet detect: out of memory\n");
out:
  json_decref(coco);
  json_decref(c_images);
  json_decref(c_anns);
  json_decref(c_errors);
  free(imgs);
  free(info);
  free(ptrs);
  free(dets);
  free(status);
  free(params);
  free(derr);
  if (bodies)
    for (int k = 0; k < o.batch; k++) bd_fetch_result_clear(&bodies[k]);
  free(bodies);
  bd_fetch_destroy(fetcher);
  for (size_t i = 0; i < files.n; i++) entry_free(&files.v[i]);
  free(files.v);
  bd_labels_destroy(labels);
  bd_engine_destroy(e);
  return rc;
}
