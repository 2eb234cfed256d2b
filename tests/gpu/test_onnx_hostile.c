/* Hostile and unusual small models (tests/gpu/models/gen_hostile.py) through the whole
 * engine on the cpu: each once crashed the importer, the compiler or the cpu backend
 * under ASan/UBSan, took quadratic time, or loaded with silently different semantics.
 * A model is either refused at load with a message that says why, or runs and gives
 * what onnxruntime gives (the expected rows follow from the generator).
 * `test_onnx_hostile chain` runs only the 99,999-Identity chain (its own ctest entry,
 * whose TIMEOUT bounds the load that used to take minutes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_engine.h"

#define C 3
#define H 32
#define W 32
#define ROW (C * H * W)

static char dir[900];

static bd_status load(const char *name, int max_batch, bd_engine **e, bd_err *err) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
  bd_engine_opts o = {
      .device = "cpu", .threads = 1, .max_batch = max_batch, .family = BD_FAMILY_NONE};
  *e = NULL;
  bd_err_clear(err);
  return bd_engine_load(path, &o, e, err);
}

static void expect_refused(const char *name, bd_status code, const char *needle) {
  bd_engine *e = NULL;
  bd_err err;
  bd_status st = load(name, 2, &e, &err);
  bd_engine_destroy(e);
  if (st != code || !strstr(err.msg, needle))
    fail_msg("%s: status %d '%s'; expected %d with '%s'", name, (int)st, err.msg, (int)code,
             needle);
}

/* Runs `n` rows of a known input; *out (the caller frees it) gets output 0. */
static void run(const char *name, int n, float **x_out, float **out, int64_t *dims, int *rank) {
  bd_engine *e = NULL;
  bd_err err;
  if (load(name, 2, &e, &err) != BD_OK) fail_msg("%s: %s", name, err.msg);
  assert_int_equal(bd_engine_num_outputs(e), 1);
  assert_int_equal(bd_engine_input_row_numel(e), ROW);
  float *x = malloc(sizeof(float) * ROW * (size_t)n);
  assert_non_null(x);
  for (int i = 0; i < ROW * n; i++) x[i] = (float)(i % 1000) * 0.5f - 100.0f;
  int64_t row = bd_engine_output_row_numel(e, 0);
  float *y = malloc(sizeof(float) * (size_t)(row * n));
  assert_non_null(y);
  if (bd_engine_run_raw(e, n, x, &y, &err) != BD_OK) fail_msg("%s: %s", name, err.msg);
  *rank = bd_engine_output_dims(e, 0, n, dims);
  bd_engine_destroy(e);
  *x_out = x;
  *out = y;
}

/* Output [n,C,1,W] is row `h` of each image. */
static void check_one_row(const char *name, int h) {
  float *x, *y;
  int64_t d[8];
  int r;
  run(name, 2, &x, &y, d, &r);
  assert_int_equal(r, 4);
  assert_true(d[0] == 2 && d[1] == C && d[2] == 1 && d[3] == W);
  for (int b = 0; b < 2; b++)
    for (int c = 0; c < C; c++)
      for (int w = 0; w < W; w++)
        assert_true(y[(b * C + c) * W + w] == x[((b * C + c) * H + h) * W + w]);
  free(x);
  free(y);
}

/* Output is the input, unchanged. */
static void check_same(const char *name) {
  float *x, *y;
  int64_t d[8];
  int r;
  run(name, 2, &x, &y, d, &r);
  assert_int_equal(r, 4);
  assert_true(d[0] == 2 && d[1] == C && d[2] == H && d[3] == W);
  assert_memory_equal(x, y, sizeof(float) * ROW * 2);
  free(x);
  free(y);
}

/* Constant value_ints/value_floats = []: was an 8-byte write into a 1-byte buffer; now an
 * empty 1-D tensor, refused where its shape does not fit and usable where it does. */
static void test_const_empty_list(void **s) {
  (void)s;
  expect_refused("const_empty_ints", BD_E_INVALID, "(Reshape): shape does not fit");
  expect_refused("const_empty_floats", BD_E_INVALID, "(Add): shapes cannot be broadcast");
  check_same("const_empty_concat");
}

/* Gather indices of another type than int32/int64 were read as int32 past their end. */
static void test_gather_index_type(void **s) {
  (void)s;
  expect_refused("gather_idx_u8", BD_E_INVALID,
                 "(Gather): indices must be int32 or int64, not uint8");
  expect_refused("gather_idx_bool", BD_E_INVALID,
                 "(Gather): indices must be int32 or int64, not bool");
  expect_refused("gather_idx_f32", BD_E_INVALID, "not float32");
}

/* A Conv kernel taken from W: W [0,3,2^31,1] made it INT_MIN (signed overflow later). */
static void test_conv_kernel_from_w(void **s) {
  (void)s;
  expect_refused("conv_w_k2p31", BD_E_INVALID, "(Conv): W has no elements");
  expect_refused("conv_w_k2048", BD_E_INVALID, "(Conv): W's kernel dims are out of range");
}

/* Slice steps of INT64_MAX / INT64_MIN on a computed tensor: the cpu backend's count and
 * strides overflowed; it now shares the compiler's count (onnxruntime's clamping). */
static void test_slice_extreme_steps(void **s) {
  (void)s;
  check_one_row("slice_maxstep", 0);
  check_one_row("slice_minstep", H - 1);
  check_one_row("slice_negstep_low", 0);
  check_same("slice_negstep_empty");
}

/* Concat with a 0-channel input: memcpy from its NULL storage. */
static void test_concat_empty_piece(void **s) {
  (void)s;
  check_same("concat_zero_piece");
}

/* Outputs too large for any backend were accepted, and callers' malloc of them aborted;
 * an empty output was reported as not carrying the batch. */
static void test_output_limits(void **s) {
  (void)s;
  expect_refused("out_huge", BD_E_LIMIT, "output 'y' takes 1228554252288 bytes per row");
  expect_refused("out_empty", BD_E_UNSUPPORTED, "output 'y' is empty (shape [1,3,0,32])");
  expect_refused("batch_baked", BD_E_UNSUPPORTED,
                 "output 'y' does not carry the batch on axis 0 (shape [2,1536] at batch 1); "
                 "the model's batch is symbolic, so it is compiled at batch 1: export it "
                 "traced at batch 1");
  /* 768 MB per row each: 2 x 64 rows are over the limit together, 1 row is not */
  bd_engine *e = NULL;
  bd_err err;
  assert_int_equal(load("out_two_big", 64, &e, &err), BD_E_LIMIT);
  if (!strstr(err.msg, "the 2 outputs take")) fail_msg("%s", err.msg);
  assert_null(e);
  if (load("out_two_big", 1, &e, &err) != BD_OK) fail_msg("%s", err.msg);
  bd_engine_destroy(e);
}

/* Clip is lowered to Relu/Add/Sub at import: bounds it cannot take are refused there. */
static void test_clip_bounds(void **s) {
  (void)s;
  expect_refused("clip_min_gt_max", BD_E_UNSUPPORTED, "(Clip): min 3 > max 1");
  expect_refused("clip_vector_min", BD_E_UNSUPPORTED,
                 "(Clip): input 1 must be a constant float scalar");
}

/* Attributes of the wrong type were read as absent (the op's default); duplicates were
 * read first-wins. onnxruntime refuses both as invalid models. */
static void test_attribute_types(void **s) {
  (void)s;
  static const struct {
    const char *model, *needle;
  } cases[] = {
      {"attr_bn_eps_int",
       "node 'batchnormalization' (BatchNormalization): attribute epsilon "
       "has type INT; ONNX defines it as FLOAT"},
      {"attr_conv_autopad_int",
       "node 'conv' (Conv): attribute auto_pad has type INT; ONNX "
       "defines it as STRING"},
      {"attr_conv_strides_floats", "attribute strides has type FLOATS; ONNX defines it as INTS"},
      {"attr_conv_dup_strides", "node 'conv' (Conv): attribute strides is given twice"},
      {"attr_softmax_axis_float",
       "(Softmax): attribute axis has type FLOAT; ONNX defines it as INT"},
      {"attr_flatten_axis_float",
       "(Flatten): attribute axis has type FLOAT; ONNX defines it as INT"},
      {"attr_maxpool_ceil_float", "(MaxPool): attribute ceil_mode has type FLOAT"},
      {"attr_resize_mode_int", "(Resize): attribute mode has type INT; ONNX defines it as STRING"},
      {"attr_cast_to_float", "(Cast): attribute to has type FLOAT; ONNX defines it as INT"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_refused(cases[i].model, BD_E_INVALID, cases[i].needle);
  /* the same attribute with its ONNX type loads and runs */
  float *x, *y;
  int64_t d[8];
  int r;
  run("attr_resize_mode_ok", 1, &x, &y, d, &r);
  assert_true(r == 4 && d[2] == 2 * H && d[3] == 2 * W);
  free(x);
  free(y);
}

/* 99,999 chained Identities: no-op removal scanned every node per Identity. */
static void test_identity_chain(void **s) {
  (void)s;
  check_same("identity_chain");
}

int main(int argc, char **argv) {
  const char *d = getenv("BD_GEN_MODELS");
  snprintf(dir, sizeof dir, "%s", d ? d : ".");
  const struct CMUnitTest all[] = {
      cmocka_unit_test(test_const_empty_list),   cmocka_unit_test(test_gather_index_type),
      cmocka_unit_test(test_conv_kernel_from_w), cmocka_unit_test(test_slice_extreme_steps),
      cmocka_unit_test(test_concat_empty_piece), cmocka_unit_test(test_output_limits),
      cmocka_unit_test(test_attribute_types),    cmocka_unit_test(test_clip_bounds),
  };
  const struct CMUnitTest chain[] = {cmocka_unit_test(test_identity_chain)};
  if (argc > 1 && strcmp(argv[1], "chain") == 0) return cmocka_run_group_tests(chain, NULL, NULL);
  return cmocka_run_group_tests(all, NULL, NULL);
}
