#!/usr/bin/env python3
"""Writes small hostile or unusual ONNX models (input x: 1x3x32x32 float, output y) for
test_onnx_hostile.c: each once crashed the importer, the compiler or the cpu backend
under ASan/UBSan, took quadratic time, or loaded with silently different semantics.
Usage: gen_hostile.py OUT_DIR"""
import os
import sys

import numpy as np
from onnx import AttributeProto as AP
from onnx import TensorProto as T
from onnx import helper as H
from onnx import numpy_helper as nh

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)


def W(name, arr):
    return nh.from_array(np.asarray(arr), name)


def model(nodes, inits=(), outputs=("y",), opset=11):
    g = H.make_graph(
        nodes, "g", [H.make_tensor_value_info("x", T.FLOAT, [1, 3, 32, 32])],
        [H.make_tensor_value_info(o, T.FLOAT, None) for o in outputs], list(inits))
    m = H.make_model(g, opset_imports=[H.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def attr(name, typ, val=None):
    """An attribute of an explicit type (helper.make_attribute infers it from the value)."""
    a = AP()
    a.name, a.type = name, typ
    if typ == AP.FLOATS:
        a.floats.extend(val)
    elif typ == AP.INTS:
        a.ints.extend(val)
    elif typ == AP.FLOAT:
        a.f = val
    elif typ == AP.INT:
        a.i = val
    elif typ == AP.STRING:
        a.s = val
    return a


def node(op, ins, attrs, out="y"):
    n = H.make_node(op, ins, [out], name=op.lower())
    n.attribute.extend(attrs)
    return n


def save(name, m):
    with open(os.path.join(OUT, name + ".onnx"), "wb") as f:
        f.write(m.SerializeToString())


def wdims(name, dims):
    """A float tensor with dims and no data (valid when a dim is 0)."""
    t = T()
    t.name, t.data_type = name, T.FLOAT
    t.dims.extend(dims)
    return t


os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(0)
w3 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
b8 = rng.standard_normal(8).astype(np.float32)

# Constant with an empty list: an empty 1-D tensor (was an 8-byte write into 1 byte).
save("const_empty_ints", model([node("Constant", [], [attr("value_ints", AP.INTS, [])], "c"),
                                 H.make_node("Reshape", ["x", "c"], ["y"])]))
save("const_empty_floats", model([node("Constant", [], [attr("value_floats", AP.FLOATS, [])], "c"),
                                   H.make_node("Add", ["x", "c"], ["y"])]))
# ... and used: Shape(x) ++ [] is a Reshape target that keeps x as it is.
save("const_empty_concat", model([
    node("Constant", [], [attr("value_ints", AP.INTS, [])], "c"),
    H.make_node("Shape", ["x"], ["s"]),
    H.make_node("Concat", ["s", "c"], ["t"], axis=0),
    H.make_node("Reshape", ["x", "t"], ["y"])]))

# Gather indices of a type ONNX does not allow (were read as int32 past their end).
for n, a in (("u8", np.zeros(8, np.uint8)), ("bool", np.zeros(8, bool)),
             ("f32", np.zeros(2, np.float32))):
    save("gather_idx_" + n, model([H.make_node("Gather", ["x", "i"], ["y"], axis=1)], [W("i", a)]))

# Conv kernel taken from W: a zero-element W with a 2^31 dim (INT_MIN kernel), and a
# real W whose kernel is over the kernel_shape attribute's limit.
save("conv_w_k2p31", model([H.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")],
                           [wdims("w", [0, 3, 2**31, 1])]))
save("conv_w_k2048", model([H.make_node("Conv", ["x", "w"], ["y"])],
                           [W("w", np.zeros((1, 3, 2048, 1), np.float32))]))

# Slice steps of +-2^63-ish on a computed tensor (the cpu backend's count overflowed).
save("slice_maxstep", model([H.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                            [W("s", np.array([0], np.int64)), W("e", np.array([I64_MAX], np.int64)),
                             W("a", np.array([2], np.int64)), W("st", np.array([I64_MAX], np.int64))]))
save("slice_minstep", model([H.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                            [W("s", np.array([2**62], np.int64)), W("e", np.array([I64_MIN], np.int64)),
                             W("a", np.array([2], np.int64)), W("st", np.array([I64_MIN], np.int64))]))
# negative step from a start below -dim: onnxruntime clamps it to 0 (one row, row 0)
save("slice_negstep_low", model([H.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                                [W("s", np.array([-100], np.int64)), W("e", np.array([-100], np.int64)),
                                 W("a", np.array([2], np.int64)), W("st", np.array([-1], np.int64))]))
# ... and on an empty axis: nothing (the compiler said 1 row), so y is x again.
save("slice_negstep_empty", model([
    H.make_node("Slice", ["x", "s0", "e0", "a"], ["z"]),
    H.make_node("Slice", ["z", "s", "e", "a", "st"], ["z2"]),
    H.make_node("Concat", ["x", "z2"], ["y"], axis=2)],
    [W("s0", np.array([0], np.int64)), W("e0", np.array([0], np.int64)), W("a", np.array([2], np.int64)),
     W("s", np.array([-1], np.int64)), W("e", np.array([-100], np.int64)), W("st", np.array([-1], np.int64))]))

# A Concat with an empty (0-channel) input (memcpy from its NULL storage).
save("concat_zero_piece", model([
    H.make_node("Slice", ["x", "s", "e", "a"], ["z"]),
    H.make_node("Concat", ["z", "x", "z"], ["y"], axis=1)],
    [W("s", np.array([0], np.int64)), W("e", np.array([0], np.int64)), W("a", np.array([1], np.int64))]))

# An empty output.
save("out_empty", model([H.make_node("Slice", ["x", "s", "e", "a"], ["y"])],
                        [W("s", np.array([5], np.int64)), W("e", np.array([5], np.int64)),
                         W("a", np.array([2], np.int64))]))

# Outputs of 1.2 TB per row; two of 768 MB per row (each fits 64 rows of 64 GiB, not both).
save("out_huge", model([H.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
                       [W("sc", np.array([1, 1, 9999, 9999], np.float32))]))
save("out_two_big", model([H.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest"),
                           H.make_node("Resize", ["x", "", "sc"], ["y2"], mode="nearest")],
                          [W("sc", np.array([1, 1, 250, 250], np.float32))], outputs=("y", "y2")))

# A dynamic export traced at batch 2: input batch symbolic, a Reshape target keeps the 2.
bb = model([H.make_node("Reshape", ["x", "shp"], ["y"])], [W("shp", np.array([2, -1], np.int64))])
bb.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
save("batch_baked", bb)

# Lowered activations with bounds batchdet cannot take: min > max, a non-scalar min.
save("clip_min_gt_max", model([H.make_node("Clip", ["x"], ["y"], min=3.0, max=1.0)], opset=6))
save("clip_vector_min", model([H.make_node("Clip", ["x", "lo"], ["y"])],
                              [W("lo", np.array([0, 1], np.float32))]))

# Attributes of the wrong type or given twice (onnxruntime: invalid model).
sc2 = W("sc", np.array([1, 1, 2, 2], np.float32))
bn = [W(n, np.full(3, 0.5, np.float32)) for n in "sbmv"]
save("attr_bn_eps_int", model([node("BatchNormalization", ["x", "s", "b", "m", "v"],
                                     [attr("epsilon", AP.INT, 1)])], bn))
save("attr_conv_autopad_int", model([node("Conv", ["x", "w", "b"], [attr("auto_pad", AP.INT, 1)])],
                                    [W("w", w3), W("b", b8)]))
save("attr_conv_strides_floats", model([node("Conv", ["x", "w", "b"],
                                             [attr("strides", AP.FLOATS, [2.0, 2.0])])],
                                       [W("w", w3), W("b", b8)]))
save("attr_conv_dup_strides", model([node("Conv", ["x", "w", "b"],
                                          [attr("strides", AP.INTS, [1, 1]),
                                           attr("strides", AP.INTS, [2, 2])])],
                                    [W("w", w3), W("b", b8)]))
save("attr_softmax_axis_float", model([node("Softmax", ["x"], [attr("axis", AP.FLOAT, 2.0)])]))
save("attr_flatten_axis_float", model([node("Flatten", ["x"], [attr("axis", AP.FLOAT, 2.0)])]))
save("attr_maxpool_ceil_float", model([node("MaxPool", ["x"], [attr("kernel_shape", AP.INTS, [3, 3]),
                                                              attr("ceil_mode", AP.FLOAT, 1.0)])]))
save("attr_resize_mode_int", model([node("Resize", ["x", "", "sc"], [attr("mode", AP.INT, 1)])], [sc2]))
save("attr_resize_mode_ok", model([node("Resize", ["x", "", "sc"], [attr("mode", AP.STRING, b"linear")])],
                                  [sc2], opset=13))
save("attr_cast_to_float", model([node("Cast", ["x"], [attr("to", AP.FLOAT, 1.0)])]))

# 99,999 chained Identity nodes (the importer's limit is 100,000): removing them was
# quadratic (144 s under ASan).
N = 99999
save("identity_chain", model([H.make_node("Identity", ["x" if i == 0 else "r%d" % (i - 1)],
                                          ["r%d" % i if i < N - 1 else "y"]) for i in range(N)]))
