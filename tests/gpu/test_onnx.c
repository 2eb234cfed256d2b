/* ONNX importer tests on the shared YOLOX-nano file and on broken variants of it
 * (edited in memory through the protobuf-c structs, so no binary is committed). The
 * expected op histogram was read with python3-onnx (see ../shared/data/PROVENANCE.md). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bd_compile.h"
#include "bd_onnx.h"
#include "onnx.pb-c.h"

static char model_path[1024];

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*len);
  if (fread(b, 1, *len, f) != *len) {
    free(b);
    b = NULL;
  }
  fclose(f);
  return b;
}

static void test_yolox_import(void **state) {
  (void)state;
  bd_graph *g = NULL;
  bd_err err = {0};
  if (bd_onnx_load_file(model_path, &g, &err)) fail_msg("%s", err.msg);
  int hist[BD_OP__COUNT] = {0};
  for (int i = 0; i < g->n_nodes; i++) hist[g->nodes[i].op]++;
  assert_int_equal(g->n_nodes, 369);
  assert_int_equal(hist[BD_OP_CONV], 113);
  assert_int_equal(hist[BD_OP_SIGMOID], 110);
  assert_int_equal(hist[BD_OP_MUL], 104);
  assert_int_equal(hist[BD_OP_CONCAT], 18);
  assert_int_equal(hist[BD_OP_SLICE], 8);
  assert_int_equal(hist[BD_OP_ADD], 7);
  assert_int_equal(hist[BD_OP_MAXPOOL], 3);
  assert_int_equal(hist[BD_OP_RESHAPE], 3);
  assert_int_equal(hist[BD_OP_RESIZE], 2);
  assert_int_equal(hist[BD_OP_TRANSPOSE], 1);
  assert_int_equal(g->opset, 11);
  assert_int_equal(g->n_inputs, 1);
  assert_string_equal(g->values[g->inputs[0]].name, "images");
  assert_int_equal(g->n_outputs, 1);
  if (bd_graph_infer_shapes(g, &err)) fail_msg("%s", err.msg);
  const bd_value *o = &g->values[g->outputs[0]];
  assert_int_equal(o->rank, 3);
  assert_int_equal(o->dims[0], 1);
  assert_int_equal(o->dims[1], 3549);
  assert_int_equal(o->dims[2], 85);
  bd_graph_destroy(g);
}

/* Values whose lifetimes overlap must not share arena bytes (checked pairwise). */
static void check_no_overlap(const bd_graph *g, const bd_plan *p) {
  int n = g->n_values;
  int *def = malloc(sizeof(int) * (size_t)n), *last = malloc(sizeof(int) * (size_t)n);
  size_t *sz = malloc(sizeof(size_t) * (size_t)n);
  for (int v = 0; v < n; v++) {
    def[v] = last[v] = g->values[v].producer;
    size_t e = 4;
    for (int k = 0; k < p->rank[v]; k++) e *= (size_t)p->dims[v][k];
    sz[v] = e;
  }
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_in; k++) {
      int v = g->nodes[i].in[k];
      if (v >= 0 && last[v] < i) last[v] = i;
    }
  for (int a = 0; a < n; a++) {
    if (p->offset[a] == SIZE_MAX) continue;
    assert_int_equal(p->offset[a] % 64, 0);
    assert_true(p->offset[a] + sz[a] <= p->arena_bytes);
    for (int b = a + 1; b < n; b++) {
      if (p->offset[b] == SIZE_MAX) continue;
      if (def[a] > last[b] || def[b] > last[a]) continue;
      int disjoint = p->offset[a] + sz[a] <= p->offset[b] || p->offset[b] + sz[b] <= p->offset[a];
      assert_true(disjoint);
    }
  }
  free(def);
  free(last);
  free(sz);
}

static void test_yolox_compile(void **state) {
  (void)state;
  bd_graph *g = NULL;
  bd_err err = {0};
  if (bd_onnx_load_file(model_path, &g, &err)) fail_msg("%s", err.msg);
  /* count Conv -> {Sigmoid, Mul(conv, sigmoid)} patterns on the imported graph */
  int silu_pairs = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].op != BD_OP_CONV) continue;
    int o = g->nodes[i].out[0], sig = -1, mul = -1, uses = 0;
    for (int j = 0; j < g->n_nodes; j++)
      for (int k = 0; k < g->nodes[j].n_in; k++)
        if (g->nodes[j].in[k] == o) {
          uses++;
          if (g->nodes[j].op == BD_OP_SIGMOID) sig = j;
          if (g->nodes[j].op == BD_OP_MUL) mul = j;
        }
    if (uses == 2 && sig >= 0 && mul >= 0) silu_pairs++;
  }
  assert_true(silu_pairs >= 100);
  bd_compile_report rep;
  if (bd_compile(g, NULL, &rep, &err)) fail_msg("%s", err.msg);
  int silu_convs = 0, sig = 0, mul = 0, res = 0, sig_convs = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const bd_node *n = &g->nodes[i];
    if (n->op == BD_OP_CONV && n->p.conv.act == BD_ACT_SILU) silu_convs++;
    if (n->op == BD_OP_CONV && n->p.conv.act == BD_ACT_SIGMOID) sig_convs++;
    if (n->op == BD_OP_CONV && n->p.conv.res == BD_RES_POST_ACT) res++;
    sig += n->op == BD_OP_SIGMOID;
    mul += n->op == BD_OP_MUL;
    assert_true(n->op != BD_OP_SHAPE && n->op != BD_OP_IDENTITY);
  }
  assert_int_equal(silu_convs, silu_pairs);
  assert_int_equal(mul, 0);
  assert_int_equal(sig + sig_convs, 110 - silu_pairs); /* obj and cls heads */
  assert_int_equal(res, 7); /* YOLOX bottlenecks: act(conv) + x */
  assert_int_equal(rep.nodes_in, 369);
  assert_int_equal(rep.nodes_out, g->n_nodes);
  assert_true(rep.fused_act >= silu_pairs);
  /* YOLOX's SPP (5, 9, 13 of one tensor): 9 and 13 become 5s over the previous pool */
  assert_int_equal(rep.chained_pools, 2);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == BD_OP_MAXPOOL) assert_int_equal(g->nodes[i].p.pool.kh, 5);
  static const int batches[3] = {1, 4, 32};
  for (int bi = 0; bi < 3; bi++) {
    int n = batches[bi];
    bd_plan *p = NULL;
    if (bd_plan_new(g, n, &p, &err)) fail_msg("%s", err.msg);
    int o = g->outputs[0];
    assert_int_equal(p->rank[o], 3);
    assert_int_equal(p->dims[o][0], n);
    assert_int_equal(p->dims[o][1], 3549);
    assert_int_equal(p->dims[o][2], 85);
    assert_true(p->arena_bytes < p->naive_bytes);
    assert_int_equal(p->n_steps, g->n_nodes);
    check_no_overlap(g, p);
    bd_plan_destroy(p);
  }
  bd_graph_destroy(g);
}

static void expect_file_error(const uint8_t *data, size_t len, bd_status code, const char *needle) {
  char path[] = "/tmp/bd_test_onnx_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  if (len) assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
  bd_graph *g = (bd_graph *)1;
  bd_err err = {0};
  assert_int_equal(bd_onnx_load_file(path, &g, &err), code);
  assert_null(g);
  if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
  remove(path);
}

static void test_bad_files(void **state) {
  (void)state;
  size_t len;
  uint8_t *buf = read_all(model_path, &len);
  assert_non_null(buf);
  expect_file_error(buf, 1000, BD_E_INVALID, "protobuf parse failed");
  uint8_t rnd[4096];
  unsigned s = 12345;
  for (size_t i = 0; i < sizeof rnd; i++) s = s * 1103515245u + 12345u, rnd[i] = (uint8_t)(s >> 16);
  expect_file_error(rnd, sizeof rnd, BD_E_INVALID, "not a valid ONNX file");
  expect_file_error(buf, 0, BD_E_INVALID, "not a valid ONNX file");
  bd_graph *g = (bd_graph *)1;
  bd_err err = {0};
  assert_int_equal(bd_onnx_load_file("/nonexistent/x.onnx", &g, &err), BD_E_NOT_FOUND);
  free(buf);
}

/* Loads the model, lets `edit` change it, repacks and imports the bytes into *g. */
static bd_status load_edited_graph(void (*edit)(Onnx__ModelProto *, char *), char *note,
                                   bd_graph **g, bd_err *err) {
  size_t len;
  uint8_t *buf = read_all(model_path, &len);
  assert_non_null(buf);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  assert_non_null(m);
  edit(m, note);
  size_t n = onnx__model_proto__get_packed_size(m);
  uint8_t *out = malloc(n);
  onnx__model_proto__pack(m, out);
  *g = NULL;
  bd_status st = bd_onnx_load_buffer(out, n, g, err);
  free(out);
  onnx__model_proto__free_unpacked(m, NULL);
  free(buf);
  return st;
}

static bd_status load_edited(void (*edit)(Onnx__ModelProto *, char *), char *note, bd_err *err) {
  bd_graph *g = NULL;
  bd_status st = load_edited_graph(edit, note, &g, err);
  bd_graph_destroy(g);
  return st;
}

static void edit_op(Onnx__ModelProto *m, char *note) {
  Onnx__NodeProto *n = m->graph->node[20];
  strcpy(note, n->name);
  free(n->op_type);
  n->op_type = strdup(*note ? "LSTM" : "Einsum");
}

static void edit_nms(Onnx__ModelProto *m, char *note) { /* as an end2end export has */
  Onnx__NodeProto *n = m->graph->node[20];
  strcpy(note, n->name);
  free(n->op_type);
  n->op_type = strdup("NonMaxSuppression");
}

static void edit_domain(Onnx__ModelProto *m, char *note) {
  Onnx__NodeProto *n = m->graph->node[3];
  strcpy(note, n->name);
  free(n->domain);
  n->domain = strdup("com.microsoft");
}

static void edit_rank(Onnx__ModelProto *m, char *note) {
  strcpy(note, m->graph->input[0]->name);
  Onnx__TensorShapeProto *sh = m->graph->input[0]->type->tensor_type->shape;
  protobuf_c_message_free_unpacked(&sh->dim[3]->base, NULL);
  sh->n_dim = 3;
}

static void edit_attr(Onnx__ModelProto *m, char *note) {
  for (size_t i = 0; i < m->graph->n_node; i++) {
    Onnx__NodeProto *n = m->graph->node[i];
    if (strcmp(n->op_type, "MaxPool") != 0) continue;
    strcpy(note, n->name);
    for (size_t k = 0; k < n->n_attribute; k++)
      if (strcmp(n->attribute[k]->name, "ceil_mode") == 0) n->attribute[k]->i = 1;
    return;
  }
}

static void edit_raw(Onnx__ModelProto *m, char *note) {
  for (size_t i = 0; i < m->graph->n_initializer; i++) {
    Onnx__TensorProto *t = m->graph->initializer[i];
    if (t->has_raw_data && t->raw_data.len > 8) {
      strcpy(note, t->name);
      t->raw_data.len -= 4;
      return;
    }
  }
}

/* ---- float16 / bfloat16: widened to float32 at load ---- */
#define HALF_N 10
/* binary16: 1, -2, smallest and largest subnormal, largest normal, -0, inf, -inf, NaN, 1/3 */
static const uint16_t f16_bits[HALF_N] = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x7BFF,
                                          0x8000, 0x7C00, 0xFC00, 0x7E00, 0x3555};
/* bfloat16: 1, -3, smallest subnormal, largest normal, -0, inf, -inf, NaN, 1/3, 2^-126 */
static const uint16_t bf16_bits[HALF_N] = {0x3F80, 0xC040, 0x0001, 0x7F7F, 0x8000,
                                           0x7F80, 0xFF80, 0x7FC0, 0x3EAB, 0x0080};

/* Adds initializer NAME of type `type` holding `bits` (raw little-endian or int32_data). */
static void add_half(Onnx__ModelProto *m, const char *name, int type, const uint16_t *bits, int n,
                     int raw) {
  Onnx__GraphProto *gp = m->graph;
  gp->initializer = realloc(gp->initializer, (gp->n_initializer + 1) * sizeof *gp->initializer);
  Onnx__TensorProto *t = malloc(sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = strdup(name);
  t->has_data_type = 1;
  t->data_type = type;
  t->n_dims = 1;
  t->dims = malloc(sizeof *t->dims);
  t->dims[0] = HALF_N;
  if (raw) {
    t->has_raw_data = 1;
    t->raw_data.len = 2 * (size_t)n;
    t->raw_data.data = malloc(2 * (size_t)n);
    for (int i = 0; i < n; i++) {
      t->raw_data.data[2 * i] = (uint8_t)bits[i];
      t->raw_data.data[2 * i + 1] = (uint8_t)(bits[i] >> 8);
    }
  } else {
    t->n_int32_data = (size_t)n;
    t->int32_data = malloc((size_t)n * sizeof *t->int32_data);
    for (int i = 0; i < n; i++) t->int32_data[i] = bits[i];
  }
  gp->initializer[gp->n_initializer++] = t;
}

static void edit_half(Onnx__ModelProto *m, char *note) {
  (void)note;
  add_half(m, "probe_f16_raw", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, f16_bits, HALF_N, 1);
  add_half(m, "probe_f16_typed", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, f16_bits, HALF_N, 0);
  add_half(m, "probe_bf16_raw", ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16, bf16_bits, HALF_N, 1);
  add_half(m, "probe_bf16_typed", ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16, bf16_bits, HALF_N, 0);
  /* a float16 model input (exported with half weights): computed in float32 */
  m->graph->input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
}

static void edit_half_short(Onnx__ModelProto *m, char *note) {
  strcpy(note, "probe_f16_short");
  add_half(m, note, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, f16_bits, HALF_N - 1, 1);
}

static void edit_half_typed_short(Onnx__ModelProto *m, char *note) {
  strcpy(note, "probe_bf16_short");
  add_half(m, note, ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16, bf16_bits, HALF_N - 1, 0);
}

static void edit_input_double(Onnx__ModelProto *m, char *note) {
  strcpy(note, m->graph->input[0]->name);
  m->graph->input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
}

static const float *probe(const bd_graph *g, const char *name) {
  for (int v = 0; v < g->n_values; v++)
    if (strcmp(g->values[v].name, name) == 0) {
      assert_int_equal(g->values[v].dtype, BD_DT_F32);
      assert_int_equal(g->values[v].rank, 1);
      assert_int_equal(g->values[v].dims[0], HALF_N);
      return g->values[v].data;
    }
  fail_msg("no value '%s'", name);
  return NULL;
}

static void expect_floats(const float *got, const float *want, const char *what) {
  for (int i = 0; i < HALF_N; i++) {
    int same =
        isnan(want[i]) ? isnan(got[i]) : got[i] == want[i] && !signbit(got[i]) == !signbit(want[i]);
    if (!same) fail_msg("%s[%d] = %a, want %a", what, i, got[i], want[i]);
  }
}

static void test_half_tensors(void **state) {
  (void)state;
  char note[512] = "";
  bd_err err = {0};
  bd_graph *g = NULL;
  assert_int_equal(load_edited_graph(edit_half, note, &g, &err), BD_OK);
  const float f16[HALF_N] = {1.f,  -2.f,     0x1p-24f,  0x3FFp-24f, 65504.f,
                             -0.f, INFINITY, -INFINITY, NAN,        0x1.554p-2f};
  const float bf16[HALF_N] = {1.f,      -3.f,      0x1p-133f, 0x1.FEp127f, -0.f,
                              INFINITY, -INFINITY, NAN,       0x1.56p-2f,  0x1p-126f};
  expect_floats(probe(g, "probe_f16_raw"), f16, "float16 raw_data");
  expect_floats(probe(g, "probe_f16_typed"), f16, "float16 int32_data");
  expect_floats(probe(g, "probe_bf16_raw"), bf16, "bfloat16 raw_data");
  expect_floats(probe(g, "probe_bf16_typed"), bf16, "bfloat16 int32_data");
  assert_int_equal(g->values[g->inputs[0]].dtype, BD_DT_F32);
  bd_graph_destroy(g);
  char want[600];
  assert_int_equal(load_edited(edit_half_short, note, &err), BD_E_INVALID);
  snprintf(want, sizeof want,
           "tensor '%s': data size does not match its dims (%d elements of "
           "float16)",
           note, HALF_N);
  if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
  assert_int_equal(load_edited(edit_half_typed_short, note, &err), BD_E_INVALID);
  snprintf(want, sizeof want, "(%d elements of bfloat16)", HALF_N);
  if (!strstr(err.msg, note) || !strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
  assert_int_equal(load_edited(edit_input_double, note, &err), BD_E_UNSUPPORTED);
  snprintf(want, sizeof want, "model input '%s' has element type 11; batchdet needs float32", note);
  if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
}

static void test_bad_models(void **state) {
  (void)state;
  char note[512], want[800];
  bd_err err = {0};
  assert_int_equal(load_edited(edit_op, note, &err), BD_E_UNSUPPORTED);
  snprintf(want, sizeof want, "node '%s' (LSTM): unsupported op", note);
  if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
  assert_int_equal(load_edited(edit_nms, note, &err), BD_E_UNSUPPORTED);
  snprintf(want, sizeof want,
           "node '%s' (NonMaxSuppression): unsupported op (the model carries "
           "its own NMS: export it without NMS",
           note);
  if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
  assert_int_equal(load_edited(edit_domain, note, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, note));
  assert_non_null(strstr(err.msg, "com.microsoft"));
  assert_int_equal(load_edited(edit_rank, note, &err), BD_E_UNSUPPORTED);
  snprintf(want, sizeof want, "model input '%s' has rank 3; batchdet needs [N,3,H,W]", note);
  if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
  assert_int_equal(load_edited(edit_attr, note, &err), BD_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, note));
  assert_non_null(strstr(err.msg, "ceil_mode"));
  assert_int_equal(load_edited(edit_raw, note, &err), BD_E_INVALID);
  assert_non_null(strstr(err.msg, note));
}

int main(void) {
  const char *d = getenv("BD_TEST_DATA");
  snprintf(model_path, sizeof model_path, "%s/models/yolox_nano.onnx", d ? d : "../shared/data");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_yolox_import), cmocka_unit_test(test_yolox_compile),
      cmocka_unit_test(test_bad_files),    cmocka_unit_test(test_bad_models),
      cmocka_unit_test(test_half_tensors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
