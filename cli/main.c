/* batchdet: one executable, subcommands in the git/kubectl habit. This file only
 * dispatches; each subcommand lives in cmd_<name>.c. Subcommands that are not built
 * yet resolve to the weak stubs below and answer "not implemented yet" (exit 2). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bd_cli.h"
#include "bd_log.h"

#ifndef BD_VERSION
#define BD_VERSION "0.0.0"
#endif

static int not_implemented(const char *name) {
  fprintf(stderr, "batchdet %s: not implemented yet\n", name);
  return BD_EXIT_USAGE;
}

#define BD_WEAK_STUB(fn, name) \
  __attribute__((weak)) int fn(int argc, char **argv) { \
    (void)argc; \
    (void)argv; \
    return not_implemented(name); \
  }

BD_WEAK_STUB(bd_cmd_detect, "detect")
BD_WEAK_STUB(bd_cmd_bench, "bench")
BD_WEAK_STUB(bd_cmd_infer, "infer")
BD_WEAK_STUB(bd_cmd_worker, "worker")
BD_WEAK_STUB(bd_cmd_submit, "submit")
BD_WEAK_STUB(bd_cmd_coordinator, "coordinator")
BD_WEAK_STUB(bd_cmd_status, "status")
BD_WEAK_STUB(bd_cmd_export, "export")
BD_WEAK_STUB(bd_cmd_resubmit, "resubmit")
BD_WEAK_STUB(bd_cmd_manifest, "manifest")

typedef struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
  int hidden;
} subcommand;

static const subcommand commands[] = {
    {"detect", bd_cmd_detect, "run a detector over image files, directories or URLs", 0},
    {"bench", bd_cmd_bench, "measure engine throughput and latency on a model", 0},
    {"worker", bd_cmd_worker, "consume manifest jobs from Kafka and write results to Redis", 0},
    {"submit", bd_cmd_submit, "split a list, directory or S3 prefix into job manifests", 0},
    {"coordinator", bd_cmd_coordinator, "track job progress from worker reports", 0},
    {"status", bd_cmd_status, "show jobs and workers", 0},
    {"export", bd_cmd_export, "write a job's results as COCO, JSON lines or YOLO files", 0},
    {"resubmit", bd_cmd_resubmit, "requeue a job's failed images", 0},
    {"manifest", bd_cmd_manifest, "manifest tools: 'manifest validate FILE|-'", 0},
    {"infer", bd_cmd_infer, "raw tensor inference for parity tests (float32 files in/out)", 1},
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: batchdet [--log-level error|warn|info|debug] [--version] [--help] COMMAND [ARGS]\n"
          "\n"
          "Label large image archives with an object detector, on CPUs or GPUs.\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!commands[i].hidden) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\n"
          "Run 'batchdet COMMAND --help' for a command's options.\n"
          "Configuration: flags, then BATCHDET_* environment variables, then defaults\n"
          "(BATCHDET_LOG sets the log level).\n");
}

/* Standard streams that are closed at start are held by /dev/null opened read-only, so
 * that no file this process opens lands on descriptor 1 or 2 and gets results or logs
 * written into it; writes to them then fail, which the check below reports. */
static void hold_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      int n = open("/dev/null", O_RDONLY);
      if (n >= 0 && n != fd) {
        dup2(n, fd);
        close(n);
      }
    }
}

/* Results written to stdout that did not all reach it (a full disk, a closed stream):
 * a command that returned success fails (one that failed has said why). */
static int check_stdout(int rc) {
  if ((fflush(stdout) == 0 && !ferror(stdout)) || rc != BD_EXIT_OK) return rc; /* else said */
  fprintf(stderr, "batchdet: writing to standard output failed: %s\n",
          errno ? strerror(errno) : "I/O error");
  return BD_EXIT_FAIL;
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
  hold_std_fds();
  return check_stdout(run(argc, argv));
}

static int run(int argc, char **argv) {
  const char *lvl = getenv("BATCHDET_LOG");
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
      printf("batchdet %s\n", BD_VERSION);
      return BD_EXIT_OK;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
      usage(stdout);
      return BD_EXIT_OK;
    } else if (strcmp(a, "--log-level") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "batchdet: --log-level needs a value\n");
        return BD_EXIT_USAGE;
      }
      lvl = argv[++i];
    } else if (strncmp(a, "--log-level=", 12) == 0) {
      lvl = a + 12;
    } else if (a[0] == '-') {
      fprintf(stderr, "batchdet: unknown option '%s'\n", a);
      usage(stderr);
      return BD_EXIT_USAGE;
    } else {
      break;
    }
  }
  if (lvl && *lvl) {
    int l = bd_log_parse_level(lvl);
    if (l < 0) {
      fprintf(stderr, "batchdet: unknown log level '%s' (error, warn, info, debug)\n", lvl);
      return BD_EXIT_USAGE;
    }
    bd_log_set_level((bd_log_level)l);
  }
  if (i >= argc) {
    usage(stderr);
    return BD_EXIT_USAGE;
  }
  for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
    if (strcmp(argv[i], commands[k].name) == 0) return commands[k].fn(argc - i, argv + i);
  fprintf(stderr, "batchdet: unknown command '%s'\n\n", argv[i]);
  usage(stderr);
  return BD_EXIT_USAGE;
}
