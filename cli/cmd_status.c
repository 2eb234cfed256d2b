/* batchdet status: jobs and workers from Redis, as a table, one job's detail, or JSON. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_view.h"

static volatile sig_atomic_t g_stop;
static void on_sig(int s) {
  (void)s;
  g_stop = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet status [--job ID] [--watch [--interval S]] [--json] [--redis URL]\n"
          "\n"
          "Without --job: a table of jobs (progress, done/failed/total, img/s, ETA, state)\n"
          "and workers (host, img/s per device, last report). --job ID: that job with its\n"
          "most frequent error messages. --watch redraws every --interval seconds (default\n"
          "2) until Ctrl-C, or until the job ends when --job is given. --json prints one\n"
          "JSON document instead. Rates and ETAs come from 'batchdet coordinator'.\n"
          "Exit: 0 ok, 1 failed (or no such job), 2 usage error.\n");
}

int bd_cmd_status(int argc, char **argv) {
  static const struct option opts[] = {
      {"job", 1, 0, 'j'},  {"watch", 0, 0, 'w'}, {"interval", 1, 0, 'i'},
      {"json", 0, 0, 'J'}, {"redis", 1, 0, 'r'}, {"help", 0, 0, 'h'},
      {0, 0, 0, 0}};
  const char *job = NULL, *redis = NULL;
  int watch = 0, json = 0, c;
  double interval = 2;
  bd_err err = {0};
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'j':
        job = optarg;
        break;
      case 'w':
        watch = 1;
        break;
      case 'i':
        if (bd_parse_double(optarg, 0.1, 3600, "--interval", &interval, &err)) {
          fprintf(stderr, "batchdet status: %s\n", err.msg);
          return BD_EXIT_USAGE;
        }
        break;
      case 'J':
        json = 1;
        break;
      case 'r':
        redis = optarg;
        break;
      case 'h':
        usage(stdout);
        return BD_EXIT_OK;
      default:
        usage(stderr);
        return BD_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  bd_sredis *r =
      bd_sredis_new(bd_config_str(redis, "BATCHDET_REDIS", "redis://127.0.0.1:6379"), &err);
  if (!r) {
    fprintf(stderr, "batchdet status: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  signal(SIGINT, on_sig);
  signal(SIGTERM, on_sig);
  int rc = BD_EXIT_OK;
  for (;;) {
    bd_view v;
    if (bd_view_load(r, job, &v, &err) != BD_OK) {
      fprintf(stderr, "batchdet status: %s\n", err.msg);
      bd_view_free(&v);
      rc = BD_EXIT_FAIL;
      break;
    }
    int done = job && v.n_jobs && bd_view_job_final(&v.jobs[0]);
    if (json) {
      char *s = bd_view_json(&v, job);
      if (s) printf("%s\n", s);
      free(s);
    } else {
      /* Build the frame first, then clear and print it in one write: no flicker. */
      char *buf = NULL;
      size_t len = 0;
      FILE *m = open_memstream(&buf, &len);
      if (m) {
        bd_view_render(&v, job, m);
        fclose(m);
        if (watch) fputs("\033[H\033[2J", stdout);
        fwrite(buf, 1, len, stdout);
      }
      free(buf);
    }
    fflush(stdout);
    bd_view_free(&v);
    if (!watch || done || g_stop) break;
    struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
    nanosleep(&ts, NULL); /* EINTR on Ctrl-C ends the wait early */
    if (g_stop) break;
  }
  bd_sredis_destroy(r);
  return rc;
}
