/* Replays a libFuzzer corpus through LLVMFuzzerTestOneInput in builds without
 * libFuzzer (gcc, the normal ctest run): every regular file of the directory given as
 * argv[1] (or each file argument) is fed once. A crash or abort fails the test; the
 * sanitizers of the Debug build catch memory errors on the way. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs larger than this are not replayed (libFuzzer's default -max_len is far less). */
#define REPLAY_MAX_INPUT (80u << 20)

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0 || (uint64_t)sb.st_size > REPLAY_MAX_INPUT) {
    fprintf(stderr, "replay: %s: unreadable or larger than %u bytes\n", path, REPLAY_MAX_INPUT);
    fclose(f);
    return 1;
  }
  size_t n = (size_t)sb.st_size;
  /* An exact-size copy, so that ASan catches a read one past the input's end. */
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf || fread(buf, 1, n, f) != n) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    free(buf);
    fclose(f);
    return 1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
    return 2;
  }
  int files = 0, bad = 0;
  for (int a = 1; a < argc; a++) {
    struct stat sb;
    if (stat(argv[a], &sb) != 0) {
      fprintf(stderr, "replay: %s: not found\n", argv[a]);
      return 2;
    }
    if (!S_ISDIR(sb.st_mode)) {
      bad += run_file(argv[a]);
      files++;
      continue;
    }
    DIR *d = opendir(argv[a]);
    if (!d) {
      fprintf(stderr, "replay: cannot open directory %s\n", argv[a]);
      return 2;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
      if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
      bad += run_file(path);
      files++;
    }
    closedir(d);
  }
  printf("replay: %d inputs, %d unreadable\n", files, bad);
  /* An empty corpus would make the test pass while checking nothing. */
  return files > 0 && bad == 0 ? 0 : 1;
}
