/* Private to the ONNX importer: the import context shared by bd_onnx.c (file, tensors,
 * graph inputs/outputs) and bd_onnx_ops.c (per-op attribute parsing). */
#ifndef BD_ONNX_INT_H
#define BD_ONNX_INT_H

#include "bd_graph.h"
#include "onnx.pb-c.h"

typedef struct bd_onnx_imp {
  bd_graph *g;
  int *slots; /* open-addressing name -> value index table, -1 = empty */
  size_t n_slots;
  int64_t opset;
} bd_onnx_imp;

/* Value index of `name`, or -1. */
int bd_onnx_find(const bd_onnx_imp *im, const char *name);
/* Registers the value just added (index v) under its name. */
bd_status bd_onnx_register(bd_onnx_imp *im, int v, bd_err *err);
/* Converts a TensorProto to a new constant value named `name`. */
bd_status bd_onnx_tensor_value(bd_onnx_imp *im, const Onnx__TensorProto *t, const char *name,
                               int *out, bd_err *err);
/* Maps an ONNX TensorProto data type to ours; 0 when unsupported. float16 and bfloat16
 * are float32 in our graph (tensors widened at load, Cast to them casts to float32). */
bd_dtype bd_onnx_dtype(int32_t onnx_type);
/* " (...)" advice for an unsupported op that is an in-graph NMS (end2end exports), or "". */
const char *bd_onnx_nms_hint(const char *op);
/* Adds one (non-Constant) node; `label` names it in messages. */
bd_status bd_onnx_add_node(bd_onnx_imp *im, const Onnx__NodeProto *np, const char *label,
                           bd_err *err);
/* A Constant node's value (attribute value / value_float(s) / value_int(s)). */
bd_status bd_onnx_constant(bd_onnx_imp *im, const Onnx__NodeProto *np, const char *label,
                           bd_err *err);

#endif
