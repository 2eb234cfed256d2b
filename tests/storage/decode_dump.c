/* decode_dump IN.png|IN.jpg OUT.ppm: bd_decode_file (default options) written as a
 * binary PPM, for script tests that compare our pixels with another decoder's. */
#include <stdio.h>

#include "bd_decode.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: decode_dump IN OUT.ppm\n");
    return 2;
  }
  bd_image im;
  bd_err e = {0};
  if (bd_decode_file(argv[1], NULL, &im, NULL, &e) != BD_OK) {
    fprintf(stderr, "decode_dump: %s\n", e.msg);
    return 1;
  }
  int rc = 0;
  FILE *f = fopen(argv[2], "wb");
  size_t n = (size_t)im.w * im.h * 3;
  if (!f || fprintf(f, "P6\n%d %d\n255\n", im.w, im.h) < 0 || fwrite(im.data, 1, n, f) != n) {
    fprintf(stderr, "decode_dump: cannot write %s\n", argv[2]);
    rc = 1;
  }
  if (f && fclose(f) != 0) rc = 1;
  bd_image_free(&im);
  return rc;
}
