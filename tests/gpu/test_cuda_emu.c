/* The cuda backend's host code (representation choice, conversions, strided views,
 * arena offsets, Slice/Concat/Reshape/Transpose lowering) run over a host emulation of
 * the device (cuda_emu.c) on yolox_nano against the cpu backend. Runs on every machine.
 *  - batch 1, 16-bit storage emulated as IEEE half: ||emu-cpu||/||cpu|| <= 1e-2 (measured
 *    4.7e-3 on the dog photo): a logic error (wrong view, offset, padding) shows here.
 *  - batch 2, BF16 as on the GPU: <= 5e-2. Measured 3.1e-2 on the dog photo (1.6e-2 on
 *    the smooth synthetic pattern): the BF16 noise floor of this network end to end, 6.5x
 *    the half-precision error, as the 3 fewer mantissa bits predict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bd_backend.h"
#include "bd_compile.h"
#include "bd_cuda_backend.h"
#include "bd_cuda_internal.h"
#include "bd_onnx.h"
#include "test_cuda_common.h"

static bd_graph *g_graph;
extern int bd_cuda_emu_half;
extern int bd_cuda_emu_layer;

static int64_t numel(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int d = 0; d < p->rank[v]; ++d) n *= p->dims[v][d];
  return n;
}

/* The test input: the photo $BD_TEST_PPM, else $BD_TEST_DATA/images/dog.ppm (made by
 * prepare_devdeps.sh), else a synthetic pattern. */
static void fill_input(const bd_plan *plan, int v, float *in) {
  char ppm[1024];
  const char *data = getenv("BD_TEST_DATA"), *env = getenv("BD_TEST_PPM");
  if (env)
    snprintf(ppm, sizeof(ppm), "%s", env);
  else
    snprintf(ppm, sizeof(ppm), "%s/images/dog.ppm", data ? data : "../shared/data");
  assert_int_equal(plan->rank[v], 4);
  assert_int_equal(plan->dims[v][1], 3);
  int photo = tc_fill_images(in, (int)plan->dims[v][0], (int)plan->dims[v][2],
                             (int)plan->dims[v][3], ppm);
  printf("input: %s\n", photo ? ppm : "synthetic pattern (no photo)");
}

static void check(bd_status st, const bd_err *err, const char *what) {
  if (st != BD_OK) printf("%s: %s\n", what, err->msg);
  assert_int_equal(st, BD_OK);
}

static void run_batch(int batch, double bound) {
  bd_err err = {0};
  bd_plan *plan = NULL;
  bd_backend *cpu = NULL, *emu = NULL;
  const bd_graph *g = g_graph;
  check(bd_plan_new(g, batch, &plan, &err), &err, "bd_plan_new");
  int v = g->inputs[0], o = g->outputs[0];
  assert_int_equal(g->n_inputs, 1);
  assert_int_equal(g->n_outputs, 1);
  int64_t ni = numel(plan, v), no = numel(plan, o);
  float *in = malloc((size_t)ni * 4), *ref = malloc((size_t)no * 4), *got = malloc((size_t)no * 4);
  assert_non_null(got);
  fill_input(plan, v, in);
  check(bd_cpu_backend_new(g, 2, &cpu, &err), &err, "cpu backend");
  check(bd_backend_prepare(cpu, plan, &err), &err, "cpu prepare");
  check(bd_backend_run(cpu, plan, (const float *const *)&in, &ref, &err), &err, "cpu run");
  check(bd_cuda_backend_new(g, 0, &emu, &err), &err, "cuda backend (emulated)");
  check(bd_backend_prepare(emu, plan, &err), &err, "cuda prepare (emulated)");
  memset(got, 0xFF, (size_t)no * 4);
  check(bd_backend_run(emu, plan, (const float *const *)&in, &got, &err), &err, "cuda run (emulated)");
  double num = 0, den = 0;
  for (int64_t k = 0; k < no; ++k) {
    double d = (double)got[k] - ref[k];
    num += d * d;
    den += (double)ref[k] * ref[k];
  }
  double rel = sqrt(num / (den > 0 ? den : 1));
  printf("batch %d: rel L2 %.3e over %lld outputs (%d launches)\n", batch, rel, (long long)no,
         bd_cuda_emu_layer);
  int last = plan->rank[o] - 1;
  if (plan->dims[o][last] == 85) { /* yolox: box 0..3, objectness 4, classes 5..84 */
    const int lo[3] = {0, 4, 5}, hi[3] = {4, 5, 85};
    for (int gi = 0; gi < 3; ++gi) {
      double n2 = 0, d2 = 0;
      for (int64_t k = 0; k < no; ++k) {
        int c = (int)(k % 85);
        if (c < lo[gi] || c >= hi[gi]) continue;
        n2 += ((double)got[k] - ref[k]) * ((double)got[k] - ref[k]);
        d2 += (double)ref[k] * ref[k];
      }
      printf("  channels %d..%d: rel L2 %.3e\n", lo[gi], hi[gi] - 1, sqrt(n2 / (d2 > 0 ? d2 : 1)));
    }
  }
  assert_true(rel <= bound);
  bd_backend_destroy(emu);
  bd_backend_destroy(cpu);
  bd_plan_destroy(plan);
  free(in);
  free(ref);
  free(got);
}

static void test_batch1_half(void **state) {
  (void)state;
  bd_cuda_emu_half = 1;
  run_batch(1, 1e-2);
  bd_cuda_emu_half = 0;
}

static void test_batch2_bf16(void **state) {
  (void)state;
  bd_cuda_emu_half = 0;
  run_batch(2, 5e-2);
}

int main(void) {
  char path[1024];
  const char *data = getenv("BD_TEST_DATA");
  snprintf(path, sizeof(path), "%s/models/yolox_nano.onnx", data ? data : "../shared/data");
  bd_err err = {0};
  if (bd_onnx_load_file(path, &g_graph, &err) != BD_OK ||
      bd_compile(g_graph, NULL, NULL, &err) != BD_OK) {
    printf("cannot load %s: %s\n", path, err.msg);
    bd_graph_destroy(g_graph);
    return 1;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_batch1_half),
                                     cmocka_unit_test(test_batch2_bf16)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  bd_graph_destroy(g_graph);
  return rc;
}
