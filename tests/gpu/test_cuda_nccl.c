/* bd_cuda_nccl_broadcast: a buffer (odd size, random bytes) from the host and from a GPU
 * to every visible GPU, read back and compared byte for byte with the source; argument
 * checks. Skips (exit 77) without a GPU after the checks that need none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bd_cuda_nccl.h"
#include "test_cuda_common.h"

enum { BYTES = 3 * 1000 * 1000 + 7 };

static int ndev;

static void check_all(void *const *dst, const uint8_t *want) {
  uint8_t *got = malloc(BYTES);
  assert_non_null(got);
  for (int i = 0; i < ndev; i++) {
    assert_int_equal(cudaSetDevice(i), cudaSuccess);
    memset(got, 0, BYTES);
    assert_int_equal(cudaMemcpy(got, dst[i], BYTES, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_memory_equal(got, want, BYTES);
  }
  free(got);
}

static void test_from_host(void **s) {
  (void)s;
  uint8_t *src = malloc(BYTES);
  for (size_t k = 0; k < BYTES; k++) src[k] = (uint8_t)tc_uniform(0, 256);
  int devs[64];
  void *dst[64] = {0};
  for (int i = 0; i < ndev; i++) devs[i] = i;
  bd_err err;
  bd_status st = bd_cuda_nccl_broadcast(src, BYTES, ndev, devs, dst, &err);
  if (st != BD_OK) printf("%s\n", err.msg);
  assert_int_equal(st, BD_OK);
  check_all(dst, src);
  for (int i = 0; i < ndev; i++) {
    cudaSetDevice(i);
    cudaFree(dst[i]);
  }
  free(src);
}

/* Source on the last GPU, caller's destination buffers (poisoned first). */
static void test_from_device(void **s) {
  (void)s;
  uint8_t *src = malloc(BYTES);
  for (size_t k = 0; k < BYTES; k++) src[k] = (uint8_t)tc_uniform(0, 256);
  assert_int_equal(cudaSetDevice(ndev - 1), cudaSuccess);
  void *dsrc = tc_dev_copy(src, BYTES);
  int devs[64];
  void *dst[64] = {0};
  for (int i = 0; i < ndev; i++) {
    devs[i] = i;
    cudaSetDevice(i);
    dst[i] = tc_dev_poisoned(BYTES);
    assert_non_null(dst[i]);
  }
  bd_err err;
  bd_status st = bd_cuda_nccl_broadcast(dsrc, BYTES, ndev, devs, dst, &err);
  if (st != BD_OK) printf("%s\n", err.msg);
  assert_int_equal(st, BD_OK);
  check_all(dst, src);
  for (int i = 0; i < ndev; i++) {
    cudaSetDevice(i);
    cudaFree(dst[i]);
  }
  cudaSetDevice(ndev - 1);
  cudaFree(dsrc);
  free(src);
}

/* Checks that fail before any CUDA call: they run without a GPU too. */
static int check_args(void) {
  uint8_t b[4] = {0};
  int d2[2] = {0, 0}, d1[1] = {-1};
  void *dst[2] = {0};
  bd_err err;
  int bad = 0;
  bad += bd_cuda_nccl_broadcast(b, 4, 0, d2, dst, &err) != BD_E_INVALID;
  bad += bd_cuda_nccl_broadcast(b, 4, 2, d2, dst, &err) != BD_E_INVALID; /* duplicate */
  bad += bd_cuda_nccl_broadcast(b, 4, 1, d1, dst, &err) != BD_E_INVALID;
  bad += bd_cuda_nccl_broadcast(b, 0, 1, d2, dst, &err) != BD_E_LIMIT;
  bad += bd_cuda_nccl_broadcast(NULL, 4, 1, d2, dst, &err) != BD_E_INVALID;
  bad += dst[0] != NULL || dst[1] != NULL;
  return bad;
}

int main(void) {
  if (check_args()) {
    printf("argument checks failed\n");
    return 1;
  }
  TC_SKIP_IF_NO_DEVICE();
  ndev = bd_cuda_device_count();
  if (ndev > 64) ndev = 64;
  tc_seed();
  printf("%d GPU(s), NCCL %s\n", ndev, bd_cuda_nccl_available() ? "yes" : "no (peer copies)");
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_from_host),
                                     cmocka_unit_test(test_from_device)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
