/* Fuzz target: the ONNX importer and the compiler on arbitrary bytes. A model file is
 * outside input (a user's --models directory); nothing in it may crash the worker. */
#include <stddef.h>
#include <stdint.h>

#include "bd_compile.h"
#include "bd_onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bd_graph *g = NULL;
  bd_plan *p = NULL;
  bd_err err;
  if (bd_onnx_load_buffer(data, size, &g, &err) != BD_OK) return 0;
  if (bd_compile(g, NULL, NULL, &err) == BD_OK) {
    if (bd_plan_new(g, 1, &p, &err) == BD_OK) bd_plan_destroy(p);
    if (bd_plan_new(g, 3, &p, &err) == BD_OK) bd_plan_destroy(p);
  }
  bd_graph_destroy(g);
  return 0;
}
