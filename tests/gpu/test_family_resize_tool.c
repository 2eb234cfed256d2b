/* Helper for test_family_resize_cv2.py: resizes a raw interleaved uint8 file with
 * bd_family_resize_u8, or runs the family pre-processing on a raw RGB image.
 *   resize IN W H CN OUT DW DH
 *   prep yolox|damoyolo IN W H IN_H IN_W OUT.f32 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bd_family.h"

static unsigned char *read_all(const char *p, size_t n) {
  FILE *f = fopen(p, "rb");
  if (!f) return NULL;
  unsigned char *b = malloc(n ? n : 1);
  if (b && fread(b, 1, n, f) != n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  return b;
}

int main(int argc, char **argv) {
  bd_err err;
  if (argc == 9 && !strcmp(argv[1], "resize")) {
    int w = atoi(argv[3]), h = atoi(argv[4]), cn = atoi(argv[5]), dw = atoi(argv[7]),
        dh = atoi(argv[8]);
    unsigned char *in = read_all(argv[2], (size_t)w * h * cn);
    unsigned char *out = malloc((size_t)dw * dh * cn);
    if (!in || !out || bd_family_resize_u8(in, w, h, cn, out, dw, dh, &err) != BD_OK) return 1;
    FILE *f = fopen(argv[6], "wb");
    if (!f || fwrite(out, 1, (size_t)dw * dh * cn, f) != (size_t)dw * dh * cn) return 1;
    fclose(f);
    free(in);
    free(out);
    return 0;
  }
  if (argc == 9 && !strcmp(argv[1], "prep")) {
    bd_family_info fi = {0};
    if (bd_family_parse(argv[2], &fi.family)) return 2;
    int w = atoi(argv[4]), h = atoi(argv[5]);
    fi.in_h = atoi(argv[6]);
    fi.in_w = atoi(argv[7]);
    bd_image im = {w, h, read_all(argv[3], (size_t)w * h * 3)};
    size_t n = (size_t)3 * fi.in_h * fi.in_w;
    float *t = malloc(n * sizeof *t);
    bd_prep_info pi;
    if (!im.data || !t || bd_family_preprocess(&fi, &im, t, &pi, &err) != BD_OK) return 1;
    FILE *f = fopen(argv[8], "wb");
    if (!f || fwrite(t, sizeof *t, n, f) != n) return 1;
    fclose(f);
    free(im.data);
    free(t);
    return 0;
  }
  fprintf(stderr, "usage: resize IN W H CN OUT DW DH | prep FAMILY IN W H IN_H IN_W OUT\n");
  return 2;
}
