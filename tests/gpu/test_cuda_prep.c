/* GPU pre-processing (bd_cuda_preprocess_u8, and _h16: the same pixels as 16-bit NHWC)
 * against the CPU family code (bd_family_resize_u8 + plane packing written here):
 * bit-identical FP32 (and 16-bit) outputs on
 * random images of mixed sizes (down-, up-scaling, the copy case), letterbox with 114
 * padding in BGR and stretch in RGB, and on the shipped photos ($BD_TEST_PPM_DIR). Output
 * poisoned before each run. Skips (exit 77)
 * without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bd_cuda_kernels.h"
#include "bd_family.h"
#include "test_cuda_common.h"
#include "test_images.h"

enum { OW = 416, OH = 416, MAXIMG = 16 };

/* n images: sizes[i] = {w, h}; pixels from photos[i] when given, else random. */
static void run_images(int letterbox, int n, const int (*sizes)[2], const bd_image *photos) {
  bd_cuda_prep_desc desc[MAXIMG];
  int64_t total = 0;
  assert_true(n >= 1 && n <= MAXIMG);
  for (int i = 0; i < n; ++i) total += (int64_t)sizes[i][0] * sizes[i][1] * 3;
  uint8_t *src = malloc((size_t)total);
  float *want = malloc((size_t)n * 3 * OW * OH * 4), *got = malloc((size_t)n * 3 * OW * OH * 4);
  assert_non_null(got);
  for (int64_t k = 0; k < total; ++k) src[k] = (uint8_t)tc_uniform(0, 256);
  for (int64_t i = 0, o = 0; photos && i < n; o += (int64_t)sizes[i][0] * sizes[i][1] * 3, ++i)
    memcpy(src + o, photos[i].data, (size_t)sizes[i][0] * sizes[i][1] * 3);
  int64_t off = 0;
  for (int i = 0; i < n; ++i) {
    int sw = sizes[i][0], sh = sizes[i][1], rw = OW, rh = OH;
    if (letterbox) { /* yolox: r = min(H/h, W/w), int(w*r) */
      double r = (double)OH / sh < (double)OW / sw ? (double)OH / sh : (double)OW / sw;
      rw = (int)(sw * r);
      rh = (int)(sh * r);
      rw = rw < 1 ? 1 : (rw > OW ? OW : rw);
      rh = rh < 1 ? 1 : (rh > OH ? OH : rh);
    }
    desc[i] = (bd_cuda_prep_desc){off, sw, sh, rw, rh, 1.0 / ((double)rw / sw), 1.0 / ((double)rh / sh)};
    uint8_t *rs = malloc((size_t)rw * rh * 3);
    bd_err err = {0};
    assert_int_equal(bd_family_resize_u8(src + off, sw, sh, 3, rs, rw, rh, &err), BD_OK);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < OH; ++y)
        for (int x = 0; x < OW; ++x) {
          int sc = letterbox ? 2 - c : c;
          float v = (x < rw && y < rh) ? (float)rs[((size_t)y * rw + x) * 3 + sc] : 114.f;
          want[(((size_t)i * 3 + c) * OH + y) * OW + x] = v;
        }
    free(rs);
    off += (int64_t)sw * sh * 3;
  }
  void *dsrc = tc_dev_copy(src, (size_t)total), *ddesc = tc_dev_copy(desc, sizeof(desc));
  void *dout = tc_dev_poisoned((size_t)n * 3 * OW * OH * 4);
  assert_int_equal(bd_cuda_preprocess_u8(dsrc, ddesc, n, OW, OH, letterbox, 114.f, dout, 0),
                   cudaSuccess);
  assert_int_equal(cudaMemcpy(got, dout, (size_t)n * 3 * OW * OH * 4, cudaMemcpyDeviceToHost),
                   cudaSuccess);
  assert_int_equal(tc_compare("prep", got, want, (size_t)n * 3 * OW * OH, 0, 0), 0);
  /* 16-bit NHWC: the same levels (integers, exact in 16 bits), pixel-major. */
  const size_t elems = (size_t)n * 3 * OW * OH;
  void *dout16 = tc_dev_poisoned(elems * 2);
  uint16_t *got16 = malloc(elems * 2);
  assert_non_null(got16);
  assert_int_equal(bd_cuda_preprocess_u8_h16(dsrc, ddesc, n, OW, OH, letterbox, 114.f, dout16, 0),
                   cudaSuccess);
  assert_int_equal(cudaMemcpy(got16, dout16, elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < elems; ++i) { /* NHWC element i back in NCHW order */
    size_t c = i % 3, px = i / 3, b = px / ((size_t)OW * OH), p = px % ((size_t)OW * OH);
    got[(b * 3 + c) * OW * OH + p] = tc_h162f(got16[i]);
  }
  assert_int_equal(tc_compare("prep h16", got, want, elems, 0, 0), 0);
  cudaFree(dout16);
  free(got16);
  cudaFree(dsrc);
  cudaFree(ddesc);
  cudaFree(dout);
  free(src);
  free(want);
  free(got);
}

static void run(int letterbox) {
  static const int sizes[5][2] = {{640, 480}, {300, 500}, {416, 416}, {7, 5}, {1023, 97}};
  run_images(letterbox, 5, sizes, NULL);
}

/* The shipped photos ($BD_TEST_PPM_DIR, decoded by djpeg): both families' pre-processing,
 * bit for bit. Skipped when no photo is there. */
static void test_photos(void **state) {
  (void)state;
  bd_image im[MAXIMG];
  int sizes[MAXIMG][2], n = tim_read_ppm_dir(getenv("BD_TEST_PPM_DIR"), im, MAXIMG);
  for (int i = 0; i < n; ++i) sizes[i][0] = im[i].w, sizes[i][1] = im[i].h;
  if (!n) skip();
  printf("%d photos\n", n);
  run_images(1, n, (const int (*)[2])sizes, im);
  run_images(0, n, (const int (*)[2])sizes, im);
  for (int i = 0; i < n; ++i) bd_image_free(&im[i]);
}

static void test_letterbox_bgr(void **state) {
  (void)state;
  run(1);
}

static void test_stretch_rgb(void **state) {
  (void)state;
  run(0);
}

int main(void) {
  TC_SKIP_IF_NO_DEVICE();
  tc_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_letterbox_bgr),
                                     cmocka_unit_test(test_stretch_rgb),
                                     cmocka_unit_test(test_photos)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
