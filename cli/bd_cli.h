/* Subcommand entry points of the batchdet executable. Each returns the process exit
 * code: 0 ok, 1 runtime failure (or "invalid" for validate), 2 usage error. Only these
 * functions (through main) decide exit codes; libraries never exit. */
#ifndef BD_CLI_H
#define BD_CLI_H

int bd_cmd_detect(int argc, char **argv);
int bd_cmd_bench(int argc, char **argv);
int bd_cmd_infer(int argc, char **argv);
int bd_cmd_worker(int argc, char **argv);
int bd_cmd_submit(int argc, char **argv);
int bd_cmd_coordinator(int argc, char **argv);
int bd_cmd_status(int argc, char **argv);
int bd_cmd_export(int argc, char **argv);
int bd_cmd_resubmit(int argc, char **argv);
int bd_cmd_manifest(int argc, char **argv);

/* batchdet bench --pool (cmd_bench_pool.c): end to end through the device pool. */
#include <stddef.h>
#include <stdint.h>

#include "bd_family.h"
typedef struct bd_bench_pool_args {
  const char *model, *devices; /* devices: the pool's syntax (cpu, cpu:N, cuda, cuda:0,2) */
  int per_device, threads, batch, iters, warmup, w, h, json;
  bd_family family;
} bd_bench_pool_args;
int bd_bench_pool(const bd_bench_pool_args *a);
/* Benchmark helpers (cmd_bench.c): n pseudo-random bytes (xorshift64*, 8 per step) from
 * *seed; s printed as the inside of a JSON string (quotes and backslashes escaped,
 * control characters dropped). */
void bd_bench_random_bytes(uint8_t *dst, size_t n, uint64_t *seed);
void bd_bench_json_chars(const char *s);

/* batchdet bench --profile (cmd_bench_prof.c): prints rows (bd_engine_profile_device,
 * n_rows of them, execution order) sorted by time, the top `top` (0: all) in the table,
 * then a summary by kind and the sum of the medians against graph_ms (the whole
 * network's device time; <= 0: unknown). json: the profile as a `,"profile":{...}`
 * member for the caller's JSON object. Returns an exit code. */
#include "bd_prof.h"
typedef struct bd_bench_prof_args {
  const bd_prof_row *rows;
  int n_rows, batch, reps, top, json;
  double graph_ms;
} bd_bench_prof_args;
int bd_bench_prof_print(const bd_bench_prof_args *a);

/* Exit codes shared by every subcommand. */
enum { BD_EXIT_OK = 0, BD_EXIT_FAIL = 1, BD_EXIT_USAGE = 2 };

#endif
