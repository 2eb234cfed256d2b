#!/usr/bin/python3
"""Half-precision variants of a float32 ONNX model, for parity.py's --half checks.

  to_half(src, dst, kind, keep_io)  float16 or bfloat16 everywhere, as exporters and
      converters write them (model.half() + export, onnxconverter-common): every float
      initializer and Constant, Cast(to=FLOAT), value_info and, unless keep_io, the graph's
      input and outputs (keep_io: they stay float32, with Casts at the boundary, as
      convert_float_to_float16(keep_io_types=True) writes). Resize/Upsample scales and
      roi stay float32, as the ONNX schema wants.
  widen(src, dst)  the float32 model that computes what batchdet promises for a half
      model: every 16-bit tensor widened exactly, every 16-bit type and Cast made float32.

Only python3-onnx and numpy; no onnxconverter-common on Debian.
"""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

HALF = {'float16': T.FLOAT16, 'bfloat16': T.BFLOAT16}


def _f32_to_bf16_bits(a):
    """float32 array -> bfloat16 bits (uint16), round to nearest even (no NaN in weights)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _half_tensor(t, code):
    a = numpy_helper.to_array(t).astype(np.float32)
    if code == T.FLOAT16:
        return numpy_helper.from_array(a.astype(np.float16), t.name)
    out = T()
    out.name = t.name
    out.data_type = T.BFLOAT16
    out.dims.extend(a.shape)
    out.raw_data = _f32_to_bf16_bits(a).tobytes()
    return out


def _wide_tensor(t):
    if t.data_type == T.FLOAT16:
        a = np.frombuffer(t.raw_data, np.float16) if t.raw_data else \
            np.array(t.int32_data, np.uint16).view(np.float16)
        a = a.astype(np.float32)
    else:
        bits = np.frombuffer(t.raw_data, np.uint16) if t.raw_data else \
            np.array(t.int32_data, np.uint16)
        a = (bits.astype(np.uint32) << 16).view(np.float32)
    return numpy_helper.from_array(a.reshape(tuple(t.dims)), t.name)


def _retype(m, old, new, keep_io):
    """Tensors, Cast targets and declared types of type `old` become `new`."""
    g = m.graph
    keep = set()
    for n in g.node:
        if n.op_type in ('Resize', 'Upsample'):
            keep.update(n.input[1:])
    conv = _wide_tensor if new == T.FLOAT else (lambda t: _half_tensor(t, new))
    for t in g.initializer:
        if t.data_type == old and t.name not in keep:
            t.CopyFrom(conv(t))
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == old and \
                    not set(n.output) & keep:
                a.t.CopyFrom(conv(a.t))
            if n.op_type == 'Cast' and a.name == 'to' and a.i == old:
                a.i = new
    declared = list(g.value_info) + ([] if keep_io else list(g.input) + list(g.output))
    for v in declared:
        if v.type.tensor_type.elem_type == old:
            v.type.tensor_type.elem_type = new


def to_half(src, dst, kind, keep_io=False):
    code = HALF[kind]
    m = onnx.load(src)
    _retype(m, T.FLOAT, code, keep_io)
    if keep_io:
        g = m.graph
        inits = {t.name for t in g.initializer}
        x = [i for i in g.input if i.name not in inits][0].name
        for n in g.node:
            for k, name in enumerate(n.input):
                if name == x:
                    n.input[k] = x + '_half'
        casts = [helper.make_node('Cast', [x], [x + '_half'], to=code, name='cast_in')]
        for o in g.output:
            for n in g.node:
                for names in (n.input, n.output):
                    for k, name in enumerate(names):
                        if name == o.name:
                            names[k] = o.name + '_half'
            casts.append(helper.make_node('Cast', [o.name + '_half'], [o.name], to=T.FLOAT,
                                          name='cast_out_' + o.name))
        nodes = [casts[0]] + list(g.node) + casts[1:]
        del g.node[:]
        g.node.extend(nodes)
    onnx.save(m, dst)


def widen(src, dst):
    m = onnx.load(src)
    for code in HALF.values():
        _retype(m, code, T.FLOAT, False)
    onnx.save(m, dst)
