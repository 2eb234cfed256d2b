/* batchdet bench --pool: end-to-end throughput (decoded images in, boxes out) through the
 * device pool, the path the worker takes, with the worker's device strings: "cpu",
 * "cpu:N" (N instances), "cuda" = every GPU, "cuda:0,2" (--instances-per-gpu engines per
 * GPU); one engine per instance, each with two
 * batches in flight, the pool's queue kept full. Prints the overall rate and, per
 * instance, batches, images and img/s over the time it was busy. Random RGB images (one
 * distinct set per batch in flight, filled before timing; the pool borrows the pixels of
 * a batch until its result is polled). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_cli.h"
#include "bd_config.h"
#include "bd_pool.h"

int bd_bench_pool(const bd_bench_pool_args *a) {
  int rc = BD_EXIT_FAIL;
  bd_pool *p = NULL;
  bd_image *imgs = NULL;
  const bd_image **ptrs = NULL;
  bd_err err;
  bd_err_clear(&err);
  /* Device strings as the worker reads them: cpu:N is N cpu instances (each with
   * --threads threads), --instances-per-gpu applies to GPUs. */
  bd_pool_opts po = {.devices = a->devices, .instances_per_device = a->per_device};
  char *end = NULL;
  if (!strncmp(a->devices, "cpu", 3)) {
    long n = 1;
    if (a->devices[3] == ':') n = strtol(a->devices + 4, &end, 10);
    if ((a->devices[3] && a->devices[3] != ':') || (end && (*end || end == a->devices + 4)) ||
        n < 1 || n > BD_POOL_MAX_PER_DEVICE) {
      fprintf(stderr, "batchdet bench: bad device '%s' (cpu, cpu:N with N 1..%d, cuda, cuda:0,2)\n",
              a->devices, BD_POOL_MAX_PER_DEVICE);
      return BD_EXIT_USAGE;
    }
    po.devices = "cpu";
    po.instances_per_device = (int)n;
  }
  po.engine.threads = a->threads;
  po.engine.max_batch = a->batch;
  po.engine.family = a->family;
  double t0 = bd_now();
  if (bd_pool_new(a->model, &po, &p, &err) != BD_OK) {
    fprintf(stderr, "batchdet bench: %s\n", err.msg);
    return BD_EXIT_FAIL;
  }
  double t_load = bd_now() - t0;
  int n_inst = bd_pool_num_instances(p);
  int sets = 2 * n_inst + 2; /* the pool's default queue_cap: every batch in flight */
  size_t npx = (size_t)a->w * a->h * 3;
  imgs = calloc((size_t)sets * a->batch, sizeof *imgs);
  ptrs = calloc((size_t)sets * a->batch, sizeof *ptrs);
  if (!imgs || !ptrs) goto nomem;
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  for (int k = 0; k < sets * a->batch; k++) {
    imgs[k].w = a->w;
    imgs[k].h = a->h;
    if (!(imgs[k].data = malloc(npx))) goto nomem;
    bd_bench_random_bytes(imgs[k].data, npx, &seed);
    ptrs[k] = &imgs[k];
  }
  /* Warm-up batches run and drain first (loading lazily prepared buckets); then the
   * timed batches, the queue kept full from the first submit to the last result. */
  long images = 0, failed = 0;
  double t_start = 0;
  int *free_sets = malloc(sizeof(int) * (size_t)sets);
  if (!free_sets) goto nomem;
  for (int phase = 0; phase < 2; phase++) {
    long total = phase ? a->iters : a->warmup, submitted = 0, done = 0;
    int n_free = sets;
    for (int k = 0; k < sets; k++) free_sets[k] = sets - 1 - k;
    if (phase) t_start = bd_now();
    while (done < total) {
      while (submitted < total && n_free > 0) {
        int set = free_sets[n_free - 1];
        bd_status st = bd_pool_submit(p, a->batch, ptrs + (size_t)set * a->batch, NULL,
                                      (uint64_t)set, 0, &err);
        if (st == BD_E_UNAVAILABLE) break;
        if (st != BD_OK) {
          fprintf(stderr, "batchdet bench: %s\n", err.msg);
          free(free_sets);
          goto out;
        }
        n_free--;
        submitted++;
      }
      bd_pool_result r;
      bd_status st = bd_pool_poll(p, 600000, &r, &err);
      if (st != BD_OK) {
        fprintf(stderr, "batchdet bench: %s\n", err.msg);
        free(free_sets);
        goto out;
      }
      free_sets[n_free++] = (int)r.tag;
      if (r.batch_status != BD_OK) {
        fprintf(stderr, "batchdet bench: batch failed: %s\n", r.err.msg);
        failed++;
      }
      if (phase) images += r.n;
      bd_pool_result_free(&r);
      done++;
    }
  }
  free(free_sets);
  double wall = bd_now() - t_start;
  bd_pool_stats stt[BD_POOL_MAX_INSTANCES];
  int ns = bd_pool_get_stats(p, stt, BD_POOL_MAX_INSTANCES);
  if (a->json) {
    printf("{\"model\":\"");
    bd_bench_json_chars(a->model);
    printf("\",\"devices\":\"%s\",\"mode\":\"pool\",\"batch\":%d,\"iters\":%d,\"warmup\":%d,"
           "\"image_w\":%d,\"image_h\":%d,\"img_s\":%.3f,\"failed_batches\":%ld,\"load_ms\":%.1f,"
           "\"instances\":[",
           a->devices, a->batch, a->iters, a->warmup, a->w, a->h, wall > 0 ? images / wall : 0.0,
           failed, t_load * 1e3);
    for (int i = 0; i < ns; i++)
      printf("%s{\"name\":\"%s\",\"batches\":%lld,\"images\":%lld,\"busy_s\":%.4f,\"img_s\":%.3f}",
             i ? "," : "", stt[i].name, (long long)stt[i].batches, (long long)stt[i].images,
             stt[i].busy_s, stt[i].img_per_s);
    printf("]}\n");
  } else {
    printf("model      %s\n", a->model);
    printf("devices    %s: %d instance(s), batch %d, %d batches after %d warm-up, %dx%d images\n",
           a->devices, n_inst, a->batch, a->iters, a->warmup, a->w, a->h);
    printf("mode       end to end through the device pool (decoded images in, boxes out)\n");
    printf("img/s      %.2f (%ld images in %.3f s)\n", wall > 0 ? images / wall : 0.0, images,
           wall);
    printf("load       %.1f ms\n", t_load * 1e3);
    printf("%-12s %8s %8s %10s %10s\n", "instance", "batches", "images", "busy s", "img/s");
    for (int i = 0; i < ns; i++)
      printf("%-12s %8lld %8lld %10.3f %10.2f\n", stt[i].name, (long long)stt[i].batches,
             (long long)stt[i].images, stt[i].busy_s, stt[i].img_per_s);
    printf("(per-instance img/s counts warm-up batches too; busy s: time with a batch running)\n");
  }
  rc = failed ? BD_EXIT_FAIL : BD_EXIT_OK;
  goto out;
nomem:
  fprintf(stderr, "batchdet bench: out of memory\n");
out:
  bd_pool_destroy(p);
  if (imgs)
    for (int k = 0; k < sets * a->batch; k++) bd_image_free(&imgs[k]);
  free(imgs);
  free(ptrs);
  return rc;
}
