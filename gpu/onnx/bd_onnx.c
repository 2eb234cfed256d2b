/* ONNX ModelProto -> bd_graph: file reading, the name table, tensors (initializers and
 * Constant values), graph inputs and outputs. Per-op attribute parsing lives in
 * bd_onnx_ops.c. Everything read from the file is checked before use. */
#include "bd_onnx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bd_onnx_int.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw_data is little-endian: the importer assumes a little-endian host"
#endif

#define DIM_MAX ((int64_t)1 << 31)

/* ---- name table (FNV-1a, open addressing; value names are unique) ---- */
static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

int bd_onnx_find(const bd_onnx_imp *im, const char *name) {
  if (!name || !*name || !im->n_slots) return -1;
  size_t mask = im->n_slots - 1;
  for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
    int v = im->slots[i];
    if (v < 0) return -1;
    if (strcmp(im->g->values[v].name, name) == 0) return v;
  }
}

static bd_status table_grow(bd_onnx_imp *im, bd_err *err) {
  size_t n = im->n_slots ? im->n_slots * 2 : 1024;
  int *s = malloc(n * sizeof *s);
  if (!s) return bd_err_set(err, BD_E_NOMEM, "model: out of memory (name table)");
  for (size_t i = 0; i < n; i++) s[i] = -1;
  for (size_t j = 0; j < im->n_slots; j++) {
    int v = im->slots[j];
    if (v < 0) continue;
    size_t i = name_hash(im->g->values[v].name) & (n - 1);
    while (s[i] >= 0) i = (i + 1) & (n - 1);
    s[i] = v;
  }
  free(im->slots);
  im->slots = s;
  im->n_slots = n;
  return BD_OK;
}

bd_status bd_onnx_register(bd_onnx_imp *im, int v, bd_err *err) {
  const char *name = im->g->values[v].name;
  if (!*name) return BD_OK;
  if (bd_onnx_find(im, name) >= 0)
    return bd_err_set(err, BD_E_INVALID, "model: value '%s' is defined twice", name);
  /* keep the load factor under 1/2 */
  if ((size_t)(v + 1) * 2 > im->n_slots) {
    bd_status st = table_grow(im, err);
    if (st) return st;
  }
  size_t mask = im->n_slots - 1;
  size_t i = name_hash(name) & mask;
  while (im->slots[i] >= 0) i = (i + 1) & mask;
  im->slots[i] = v;
  return BD_OK;
}

const char *bd_onnx_nms_hint(const char *op) {
  /* NonMaxSuppression, EfficientNMS_TRT, BatchedNMSDynamic_TRT, TopK of an end2end export */
  if (strstr(op, "NMS") || strstr(op, "NonMaxSuppression") || strcmp(op, "TopK") == 0)
    return " (the model carries its own NMS: export it without NMS, e.g. without --end2end; "
           "batchdet runs NMS itself)";
  return "";
}

/* ---- tensors ---- */
/* 16-bit floats are widened to float32: tensors at load (exactly: every float16 and
 * bfloat16 is a float32) and Cast to them is taken as a cast to float32, so a float16
 * model runs as the float32 model with the same (rounded) weights. */
static int half_type(int32_t t) {
  return t == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ||
         t == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
}

bd_dtype bd_onnx_dtype(int32_t t) {
  switch (t) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
      return BD_DT_F32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return BD_DT_I64;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return BD_DT_I32;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: return BD_DT_U8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return BD_DT_BOOL;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return BD_DT_F64;
    default: return (bd_dtype)0;
  }
}

/* IEEE binary16 or bfloat16 bits -> float. */
static float half_to_float(uint16_t h, int bf16) {
  uint32_t bits;
  if (bf16) {
    bits = (uint32_t)h << 16;
  } else {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0x1F) {
      bits = sign | 0x7F800000u | (m << 13); /* inf, NaN (payload kept) */
    } else if (e) {
      bits = sign | ((e + 112) << 23) | (m << 13);
    } else { /* zero or subnormal: m * 2^-24 */
      float f = (float)m * 0x1p-24f;
      memcpy(&bits, &f, sizeof bits);
      bits |= sign;
    }
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

bd_status bd_onnx_tensor_value(bd_onnx_imp *im, const Onnx__TensorProto *t, const char *name,
                               int *out, bd_err *err) {
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "tensor '%s': external data is not supported (save the model with "
                      "weights inside the file)", name);
  if (t->segment)
    return bd_err_set(err, BD_E_UNSUPPORTED, "tensor '%s': segmented tensors are not supported",
                      name);
  int half = half_type(t->data_type);
  bd_dtype dt = bd_onnx_dtype(t->data_type);
  if (!dt)
    return bd_err_set(err, BD_E_UNSUPPORTED, "tensor '%s': data type %d is not supported", name,
                      (int)t->data_type);
  if (t->n_dims > BD_MAX_RANK)
    return bd_err_set(err, BD_E_LIMIT, "tensor '%s': rank %zu exceeds %d", name, t->n_dims,
                      BD_MAX_RANK);
  size_t esz = half ? 2 : bd_dtype_size(dt); /* in the file */
  int64_t numel = 1;
  for (size_t i = 0; i < t->n_dims; i++) {
    if (t->dims[i] < 0 || t->dims[i] > DIM_MAX)
      return bd_err_set(err, BD_E_INVALID, "tensor '%s': dim %zu = %lld is out of range", name,
                        i, (long long)t->dims[i]);
    numel *= t->dims[i];
    /* the data must come from a file of at most BD_ONNX_MAX_FILE_BYTES */
    if (numel > (int64_t)(BD_ONNX_MAX_FILE_BYTES / esz))
      return bd_err_set(err, BD_E_LIMIT, "tensor '%s': element count exceeds the limit", name);
  }
  size_t nbytes = (size_t)numel * esz;
  int bf16 = t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
  size_t have = 0;
  uint8_t *data = NULL;
  /* A half tensor widens to twice its size in the file: data its dims do not match is
   * refused before that buffer (up to 2 GiB) is allocated. */
  if (half && (t->has_raw_data ? t->raw_data.len != nbytes : t->n_int32_data != (size_t)numel)) {
    have = (size_t)-1;
    goto check_size;
  }
  data = malloc(numel ? (size_t)numel * bd_dtype_size(dt) : 1);
  if (!data) return bd_err_set(err, BD_E_NOMEM, "tensor '%s': out of memory", name);
  if (half) { /* raw_data: little-endian 16-bit words; int32_data: one word per element */
    float *f = (float *)data;
    have = nbytes;
    for (int64_t i = 0; i < numel; i++)
      f[i] = half_to_float(
          t->has_raw_data ? (uint16_t)(t->raw_data.data[2 * i] | t->raw_data.data[2 * i + 1] << 8)
                          : (uint16_t)t->int32_data[i],
          bf16);
  } else if (t->has_raw_data) {
    have = t->raw_data.len;
    if (have == nbytes && nbytes) memcpy(data, t->raw_data.data, nbytes);
  } else {
    size_t n = 0;
    switch (dt) {
      case BD_DT_F32:
        n = t->n_float_data;
        if (n == (size_t)numel && n) memcpy(data, t->float_data, nbytes);
        break;
      case BD_DT_I64:
        n = t->n_int64_data;
        if (n == (size_t)numel && n) memcpy(data, t->int64_data, nbytes);
        break;
      case BD_DT_F64:
        n = t->n_double_data;
        if (n == (size_t)numel && n) memcpy(data, t->double_data, nbytes);
        break;
      case BD_DT_I32:
        n = t->n_int32_data;
        if (n == (size_t)numel && n) memcpy(data, t->int32_data, nbytes);
        break;
      case BD_DT_U8:
      case BD_DT_BOOL: /* ONNX stores these widened in int32_data */
        n = t->n_int32_data;
        if (n == (size_t)numel)
          for (size_t i = 0; i < n; i++) data[i] = (uint8_t)t->int32_data[i];
        break;
    }
    have = n == (size_t)numel ? nbytes : (size_t)-1;
  }
check_size:
  if (have != nbytes) {
    free(data);
    return bd_err_set(err, BD_E_INVALID,
                      "tensor '%s': data size does not match its dims (%lld elements of %s)", name,
                      (long long)numel, half ? (bf16 ? "bfloat16" : "float16") : bd_dtype_name(dt));
  }
  int64_t dims[BD_MAX_RANK];
  for (size_t i = 0; i < t->n_dims; i++) dims[i] = t->dims[i];
  int v = bd_graph_add_value(im->g, name, dt, (int)t->n_dims, dims);
  if (v < 0) {
    free(data);
    return bd_err_set(err, BD_E_NOMEM, "tensor '%s': out of memory", name);
  }
  im->g->values[v].data = data;
  *out = v;
  return bd_onnx_register(im, v, err);
}

/* ---- graph inputs / outputs ---- */
static bd_status add_input(bd_onnx_imp *im, const Onnx__ValueInfoProto *vi, bd_err *err) {
  const char *name = vi->name ? vi->name : "";
  const Onnx__TypeProto *tp = vi->type;
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
    return bd_err_set(err, BD_E_UNSUPPORTED, "model input '%s' is not a tensor", name);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  if (bd_onnx_dtype(tt->elem_type) != BD_DT_F32)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "model input '%s' has element type %d; batchdet needs float32 (or "
                      "float16/bfloat16, computed in float32)",
                      name, (int)tt->elem_type);
  if (!tt->shape)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "model input '%s' has no shape; batchdet needs [N,3,H,W]", name);
  if (tt->shape->n_dim != 4)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "model input '%s' has rank %zu; batchdet needs [N,3,H,W]", name,
                      tt->shape->n_dim);
  int64_t dims[4];
  for (int i = 0; i < 4; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    dims[i] = -1;
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (d->dim_value < 1 || d->dim_value > DIM_MAX)
        return bd_err_set(err, BD_E_INVALID, "model input '%s': dim %d = %lld is out of range",
                          name, i, (long long)d->dim_value);
      dims[i] = d->dim_value;
    }
  }
  if (dims[1] != 3 || dims[2] < 1 || dims[3] < 1)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "model input '%s' has shape [%lld,%lld,%lld,%lld]; batchdet needs "
                      "[N,3,H,W] with H and W fixed", name, (long long)dims[0],
                      (long long)dims[1], (long long)dims[2], (long long)dims[3]);
  /* a symbolic batch is compiled at B0 = 1; plans re-batch */
  im->g->batch0 = dims[0] > 0 ? dims[0] : 1;
  im->g->batch_named = dims[0] <= 0;
  dims[0] = im->g->batch0;
  int v = bd_graph_add_value(im->g, name, BD_DT_F32, 4, dims);
  if (v < 0) return bd_err_set(err, BD_E_NOMEM, "model: out of memory");
  im->g->values[v].is_input = 1;
  im->g->values[v].batch_dep = 1;
  im->g->inputs[im->g->n_inputs++] = v;
  return bd_onnx_register(im, v, err);
}

static const char *node_label(const Onnx__NodeProto *np) {
  if (np->name && *np->name) return np->name;
  if (np->n_output && np->output[0] && *np->output[0]) return np->output[0];
  return "";
}

static bd_status import_graph(bd_onnx_imp *im, const Onnx__ModelProto *m, bd_err *err) {
  bd_status st;
  const Onnx__GraphProto *gp = m->graph;
  if (!gp) return bd_err_set(err, BD_E_INVALID, "model: the file has no graph");
  im->opset = -1;
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->opset_import[i];
    if (!o->domain || !*o->domain || strcmp(o->domain, "ai.onnx") == 0) im->opset = o->version;
  }
  if (im->opset < 0) {
    if (m->n_opset_import)
      return bd_err_set(err, BD_E_UNSUPPORTED, "model: no default-domain (ai.onnx) opset import");
    im->opset = 1; /* IR < 3 files had no opset_import; ONNX says opset 1 then */
  }
  /* 22..24 changed none of our ops' semantics (types added: bfloat16, float4, float8) */
  if (im->opset < 1 || im->opset > 24)
    return bd_err_set(err, BD_E_UNSUPPORTED, "model: opset %lld is not supported (1..24)",
                      (long long)im->opset);
  im->g->opset = im->opset;
  if (gp->n_node > BD_ONNX_MAX_NODES)
    return bd_err_set(err, BD_E_LIMIT, "model: %zu nodes exceed the limit of %d", gp->n_node,
                      BD_ONNX_MAX_NODES);
  if (gp->n_initializer > BD_ONNX_MAX_NODES * 4 || gp->n_input > 1000 || gp->n_output > 1000)
    return bd_err_set(err, BD_E_LIMIT, "model: too many initializers, inputs or outputs");
  if (gp->n_sparse_initializer)
    return bd_err_set(err, BD_E_UNSUPPORTED, "model: sparse initializers are not supported");

  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *t = gp->initializer[i];
    int v;
    if ((st = bd_onnx_tensor_value(im, t, t->name ? t->name : "", &v, err))) return st;
  }
  /* graph inputs that are also initializers are constants (IR < 4 lists them all) */
  int n_real = 0;
  const Onnx__ValueInfoProto *first = NULL;
  for (size_t i = 0; i < gp->n_input; i++) {
    if (bd_onnx_find(im, gp->input[i]->name) >= 0) continue;
    if (!n_real) first = gp->input[i];
    n_real++;
  }
  if (n_real != 1)
    return bd_err_set(err, BD_E_UNSUPPORTED,
                      "model has %d non-constant inputs; batchdet needs exactly one [N,3,H,W] "
                      "input", n_real);
  if ((st = add_input(im, first, err))) return st;

  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    const char *label = node_label(np);
    const char *op = np->op_type ? np->op_type : "";
    if (np->domain && *np->domain && strcmp(np->domain, "ai.onnx") != 0)
      return bd_err_set(err, BD_E_UNSUPPORTED, "node '%s' (%s): domain '%s' is not supported%s",
                        label, op, np->domain, bd_onnx_nms_hint(op));
    if (strcmp(op, "Constant") == 0) st = bd_onnx_constant(im, np, label, err);
    else st = bd_onnx_add_node(im, np, label, err);
    if (st) return st;
  }

  if (gp->n_output < 1 || gp->n_output > 8)
    return bd_err_set(err, BD_E_UNSUPPORTED, "model has %zu outputs; batchdet supports 1..8",
                      gp->n_output);
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *name = gp->output[i]->name ? gp->output[i]->name : "";
    int v = bd_onnx_find(im, name);
    if (v < 0)
      return bd_err_set(err, BD_E_INVALID, "model output '%s' is not produced by any node", name);
    if (im->g->values[v].producer < 0)
      return bd_err_set(err, BD_E_UNSUPPORTED,
                        "model output '%s' is a constant or the input; not supported", name);
    for (int j = 0; j < im->g->n_outputs; j++)
      if (im->g->outputs[j] == v)
        return bd_err_set(err, BD_E_UNSUPPORTED, "model output '%s' is listed twice", name);
    im->g->values[v].is_output = 1;
    im->g->outputs[im->g->n_outputs++] = v;
  }
  return BD_OK;
}

bd_status bd_onnx_load_buffer(const uint8_t *buf, size_t len, bd_graph **out, bd_err *err) {
  bd_status st;
  Onnx__ModelProto *m = NULL;
  bd_onnx_imp im = {0};
  *out = NULL;
  if (len > BD_ONNX_MAX_FILE_BYTES)
    return bd_err_set(err, BD_E_LIMIT, "model: %zu bytes exceed the limit of %zu", len,
                      BD_ONNX_MAX_FILE_BYTES);
  if (len == 0) return bd_err_set(err, BD_E_INVALID, "model: not a valid ONNX file (empty)");
  m = onnx__model_proto__unpack(NULL, len, buf);
  if (!m) return bd_err_set(err, BD_E_INVALID, "model: not a valid ONNX file (protobuf parse failed)");
  if ((st = bd_graph_new(&im.g, err))) goto out;
  st = import_graph(&im, m, err);
out:
  free(im.slots);
  onnx__model_proto__free_unpacked(m, NULL);
  if (st) bd_graph_destroy(im.g);
  else *out = im.g;
  return st;
}

bd_status bd_onnx_load_file(const char *path, bd_graph **out, bd_err *err) {
  bd_status st = BD_OK;
  uint8_t *buf = NULL;
  struct stat sb;
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return bd_err_set(err, errno == ENOENT ? BD_E_NOT_FOUND : BD_E_IO, "model '%s': %s", path,
                      strerror(errno));
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    st = bd_err_set(err, BD_E_IO, "model '%s': not a regular file", path);
    goto out;
  }
  if ((uint64_t)sb.st_size > BD_ONNX_MAX_FILE_BYTES) {
    st = bd_err_set(err, BD_E_LIMIT, "model '%s': %lld bytes exceed the limit of %zu", path,
                    (long long)sb.st_size, BD_ONNX_MAX_FILE_BYTES);
    goto out;
  }
  size_t len = (size_t)sb.st_size;
  buf = malloc(len ? len : 1);
  if (!buf) {
    st = bd_err_set(err, BD_E_NOMEM, "model '%s': out of memory", path);
    goto out;
  }
  if (len && fread(buf, 1, len, f) != len) {
    st = bd_err_set(err, BD_E_IO, "model '%s': read failed", path);
    goto out;
  }
  st = bd_onnx_load_buffer(buf, len, out, err);
  if (st) bd_err_prefix(err, "%s", path);
out:
  free(buf);
  fclose(f);
  return st;
}
