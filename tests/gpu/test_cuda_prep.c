/* GPU pre-processing (bd_cuda_preprocess_u8, and _h16: the same pixels as 16-bit NHWC,
 * plain or as a Focus stem's space-to-depth Concat) against the CPU family code
 * (bd_family_resize_u8 + plane packing and gathering written here): bit-identical FP32
 * (and 16-bit) outputs on
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

/* The two layouts detection uses: the input itself (pitch 3), and a Focus stem's Concat
 * of a w x h input (YOLOX's slice order, 12 channels padded to 16). */
static bd_cuda_prep_layout plain_layout(int w, int h) {
  bd_cuda_prep_layout lo = {.stride = 1, .out_w = w, .out_h = h, .pitch = 3, .n_pieces = 1};
  lo.piece[0].nc = 3;
  return lo;
}
static bd_cuda_prep_layout focus_layout(int w, int h) {
  bd_cuda_prep_layout lo = {.stride = 2, .out_w = w / 2, .out_h = h / 2, .pitch = 16,
                            .n_pieces = 4};
  static const int fo[4][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}}; /* (oy, ox) per piece */
  for (int k = 0; k < 4; ++k) {
    lo.piece[k].oy = fo[k][0];
    lo.piece[k].ox = fo[k][1];
    lo.piece[k].nc = 3;
    lo.piece[k].ch = 3 * k;
  }
  return lo;
}

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
  /* 16-bit NHWC through the two layouts detection uses: the input itself (pitch 3), and
   * a Focus stem's Concat (YOLOX's slice order, 12 channels padded to 16): the same
   * levels (integers, exact in 16 bits), zeros in the padding. */
  bd_cuda_prep_layout plain = plain_layout(OW, OH), focus = focus_layout(OW, OH);
  const bd_cuda_prep_layout *los[2] = {&plain, &focus};
  for (int l = 0; l < 2; ++l) {
    const bd_cuda_prep_layout *lo = los[l];
    const size_t px = (size_t)n * lo->out_w * lo->out_h, vals = px * lo->pitch;
    void *dout16 = tc_dev_poisoned(vals * 2);
    uint16_t *got16 = malloc(vals * 2);
    float *got_l = malloc(vals * sizeof(float)), *want_l = calloc(vals, sizeof(float));
    assert_non_null(got16);
    assert_non_null(got_l);
    assert_non_null(want_l);
    for (size_t q = 0; q < px; ++q) { /* the FP32 planes above, gathered by the layout */
      size_t b = q / ((size_t)lo->out_w * lo->out_h), r = q % ((size_t)lo->out_w * lo->out_h);
      int i = (int)(r / lo->out_w), j = (int)(r % lo->out_w);
      for (int k = 0; k < lo->n_pieces; ++k)
        for (int c = 0; c < lo->piece[k].nc; ++c) {
          int y = lo->piece[k].oy + lo->stride * i, x = lo->piece[k].ox + lo->stride * j;
          want_l[q * lo->pitch + lo->piece[k].ch + c] =
              want[((b * 3 + lo->piece[k].c0 + c) * OH + y) * OW + x];
        }
    }
    assert_int_equal(bd_cuda_preprocess_u8_h16(dsrc, ddesc, n, letterbox, 114.f, lo, dout16, 0),
                     cudaSuccess);
    assert_int_equal(cudaMemcpy(got16, dout16, vals * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t q = 0; q < vals; ++q) got_l[q] = tc_h162f(got16[q]);
    assert_int_equal(tc_compare(l ? "prep h16 focus" : "prep h16", got_l, want_l, vals, 0, 0), 0);
    cudaFree(dout16);
    free(got16);
    free(got_l);
    free(want_l);
  }
  /* A layout outside the pitch or the 3 channels is refused. */
  bd_cuda_prep_layout bad = focus;
  bad.piece[3].ch = 14;
  assert_int_not_equal(bd_cuda_preprocess_u8_h16(dsrc, ddesc, n, letterbox, 114.f, &bad, NULL, 0),
                       cudaSuccess);
  cudaFree(dsrc);
  cudaFree(ddesc);
  cudaFree(dout);
  free(src);
  free(want);
  free(got);
}

/* The raw network path's layout action (bd_cuda_layout_f32_h16): an FP32 NCHW input with
 * fractional values through the plain and the Focus layout (odd sizes: the last row and
 * column unread by stride 2; a width of 28 for the staged rows' 16-byte loads, 29 for
 * their scalar loads; 2100 for the per-pixel kernel, whose rows pass the staging's 48 KB
 * at stride 2), each value the 16-bit rounding of its input value, zeros in the padding;
 * a layout reading past the input is refused. */
static void layout_f32_case(int H, int W) {
  enum { N = 2 };
  const size_t nin = (size_t)N * 3 * H * W;
  float *x = malloc(nin * sizeof(float));
  assert_non_null(x);
  for (size_t i = 0; i < nin; ++i) x[i] = tc_uniform(-3.0f, 300.0f);
  void *dx = tc_dev_copy(x, nin * sizeof(float));
  bd_cuda_prep_layout plain = plain_layout(W, H), focus = focus_layout(W, H);
  const bd_cuda_prep_layout *los[2] = {&plain, &focus};
  for (int l = 0; l < 2; ++l) {
    const bd_cuda_prep_layout *lo = los[l];
    const size_t px = (size_t)N * lo->out_w * lo->out_h, vals = px * lo->pitch;
    void *d = tc_dev_poisoned(vals * 2);
    uint16_t *g16 = malloc(vals * 2);
    float *got = malloc(vals * sizeof(float)), *want = calloc(vals, sizeof(float));
    assert_true(g16 && got && want);
    for (size_t q = 0; q < px; ++q) {
      size_t b = q / ((size_t)lo->out_w * lo->out_h), r = q % ((size_t)lo->out_w * lo->out_h);
      int i = (int)(r / lo->out_w), j = (int)(r % lo->out_w);
      for (int k = 0; k < lo->n_pieces; ++k)
        for (int c = 0; c < lo->piece[k].nc; ++c) {
          int y = lo->piece[k].oy + lo->stride * i, xx = lo->piece[k].ox + lo->stride * j;
          want[q * lo->pitch + lo->piece[k].ch + c] =
              tc_h162f(tc_f2h16(x[((b * 3 + lo->piece[k].c0 + c) * H + y) * W + xx]));
        }
    }
    assert_int_equal(bd_cuda_layout_f32_h16(dx, N, H, W, lo, d, 0), cudaSuccess);
    assert_int_equal(cudaMemcpy(g16, d, vals * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t q = 0; q < vals; ++q) got[q] = tc_h162f(g16[q]);
    assert_int_equal(tc_compare(l ? "layout f32 focus" : "layout f32", got, want, vals, 0, 0), 0);
    cudaFree(d);
    free(g16);
    free(got);
    free(want);
  }
  bd_cuda_prep_layout past = focus;
  past.out_h = H / 2 + 1; /* row oy + 2 * (out_h - 1) = 37: outside */
  assert_int_not_equal(bd_cuda_layout_f32_h16(dx, N, H, W, &past, NULL, 0), cudaSuccess);
  cudaFree(dx);
  free(x);
}

static void test_layout_f32(void **state) {
  (void)state;
  layout_f32_case(37, 29);
  layout_f32_case(37, 28);
  layout_f32_case(5, 2100);
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
                                     cmocka_unit_test(test_photos),
                                     cmocka_unit_test(test_layout_f32)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
