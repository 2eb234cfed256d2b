#!/usr/bin/env python3
"""Writes a small DAMO-YOLO-like head graph (fixed batch B0=2, opset 11 and 13) with the
patterns of damoyolo.md section 9: Constant nodes, Shape/Slice/Concat-built Reshape
targets, Cast (no-op), Transpose+Softmax, MatMul over bins, a B0-row constant, Gather,
Unsqueeze, Concat. Usage: gen_head.py OUT_DIR"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

B, R, H, W = 2, 7, 4, 4


def build(opset):
    nodes, inits = [], []
    c = lambda name, arr: nodes.append(helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name)))
    wr = np.random.RandomState(0).randn(4 * (R + 1), 3, 1, 1).astype(np.float32)
    inits.append(numpy_helper.from_array(wr, "wr"))
    nodes.append(helper.make_node("Conv", ["images", "wr"], ["reg"], kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Cast", ["reg"], ["regc"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Shape", ["regc"], ["shp"]))
    c("s0", np.array([0], np.int64)); c("s1", np.array([1], np.int64)); c("ax0", np.array([0], np.int64))
    nodes.append(helper.make_node("Slice", ["shp", "s0", "s1", "ax0"], ["bdim"]))
    c("rest", np.array([4, R + 1, H * W], np.int64))
    nodes.append(helper.make_node("Concat", ["bdim", "rest"], ["tgt"], axis=0))
    nodes.append(helper.make_node("Reshape", ["regc", "tgt"], ["r4"]))          # [B,4,R+1,HW]
    nodes.append(helper.make_node("Transpose", ["r4"], ["t"], perm=[0, 1, 3, 2]))  # bins last
    nodes.append(helper.make_node("Softmax", ["t"], ["sm"], axis=3))
    c("flat", np.array([B * 4 * H * W, R + 1], np.int64))                       # baked B0
    nodes.append(helper.make_node("Reshape", ["sm", "flat"], ["f"]))
    c("proj", np.arange(R + 1, dtype=np.float32).reshape(R + 1, 1))
    nodes.append(helper.make_node("MatMul", ["f", "proj"], ["d"]))
    c("t3", np.array([B, 4, H * W], np.int64))
    nodes.append(helper.make_node("Reshape", ["d", "t3"], ["d3"]))
    c("stride", np.full((B, 1, H * W), 8.0, np.float32))                        # B0 identical rows
    nodes.append(helper.make_node("Mul", ["d3", "stride"], ["ds"]))
    c("i1", np.array(1, np.int64))
    nodes.append(helper.make_node("Gather", ["ds", "i1"], ["g"], axis=1))        # [B,HW]
    if opset >= 13:
        c("ax2", np.array([2], np.int64))
        nodes.append(helper.make_node("Unsqueeze", ["g", "ax2"], ["u"]))
    else:
        nodes.append(helper.make_node("Unsqueeze", ["g"], ["u"], axes=[2]))
    nodes.append(helper.make_node("Concat", ["u", "u"], ["out"], axis=-1))      # [B,HW,2]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [B, 3, H, W])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


if __name__ == "__main__":
    os.makedirs(sys.argv[1], exist_ok=True)
    for op in (11, 13):
        onnx.save(build(op), os.path.join(sys.argv[1], "head_op%d.onnx" % op))
