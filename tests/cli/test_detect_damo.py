#!/usr/bin/env python3
"""The damoyolo family end to end without the real weights: a tiny graph with the
official export's output contract (scores [1,A,80] sigmoid-ed, boxes [1,A,4] xyxy in input
pixels, A = 21*(S/32)^2, head built from Conv/Sigmoid/Reshape/Transpose/Concat/Slice/Gather/
Sub/Add/Unsqueeze like the exporter's) is written with python3-onnx; `batchdet detect
--family auto` must recognise it as damoyolo and give exactly what an independent numpy
implementation gives: cv2 stretch resize (RGB, 0..255), the same network math, multi-label
score > thr, per-class greedy NMS (IoU > thr), top max_det, x*(w/S), y*(h/S), clipped."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import cv2
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:
    print("SKIP:", e)
    sys.exit(77)

# `test_detect_damo.py --write-model PATH` only writes the tiny model (other tests use it:
# the emulated device tests run it cheaply).
write_only = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--write-model" else None
tmp = tempfile.mkdtemp(prefix="bd_damo_")
S, C = 64, 80
rng = np.random.default_rng(3)
levels = [(8, S // 8), (16, S // 16), (32, S // 32)]
A = sum(g * g for _, g in levels)
assert A == 21 * (S // 32) ** 2

inits, nodes, cls_outs, reg_outs = [], [], [], []
for li, (s, g) in enumerate(levels):
    # One conv per level with kernel = stride = s: 80 class logits + 4 box logits per cell.
    w = (rng.standard_normal((C + 4, 3, s, s)) / (s * s * 3 * 60)).astype(np.float32)
    b = (rng.standard_normal(C + 4) * 0.5).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"w{li}"), numpy_helper.from_array(b, f"b{li}"),
              numpy_helper.from_array(np.array([1, C + 4, g * g], np.int64), f"shape{li}")]
    nodes += [helper.make_node("Conv", ["images", f"w{li}", f"b{li}"], [f"c{li}"], kernel_shape=[s, s], strides=[s, s]),
              helper.make_node("Reshape", [f"c{li}", f"shape{li}"], [f"r{li}"]),
              helper.make_node("Transpose", [f"r{li}"], [f"t{li}"], perm=[0, 2, 1])]
nodes.append(helper.make_node("Concat", ["t0", "t1", "t2"], ["cat"], axis=1))
for n, (a, b) in {"s0": (0, C), "s1": (C, C + 4)}.items():
    inits += [numpy_helper.from_array(np.array([a], np.int64), n + "a"), numpy_helper.from_array(np.array([b], np.int64), n + "b"),
              numpy_helper.from_array(np.array([2], np.int64), n + "x")]
    nodes.append(helper.make_node("Slice", ["cat", n + "a", n + "b", n + "x"], [n]))
nodes += [helper.make_node("Sigmoid", ["s0"], ["scores"]), helper.make_node("Sigmoid", ["s1"], ["bsig"])]
# Anchor points (cell top-left, no +0.5, as DAMO) and a reach of 2 strides per side.
px, py, st = [], [], []
for s, g in levels:
    yy, xx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    px += list(xx.ravel() * s); py += list(yy.ravel() * s); st += [s] * (g * g)
px, py, st = (np.array(v, np.float32)[None, :] for v in (px, py, st))
inits += [numpy_helper.from_array(px, "px"), numpy_helper.from_array(py, "py"), numpy_helper.from_array(2 * st, "reach")]
for k in range(4):
    inits.append(numpy_helper.from_array(np.array(k, np.int64), f"k{k}"))
    nodes += [helper.make_node("Gather", ["bsig", f"k{k}"], [f"g{k}"], axis=2),
              helper.make_node("Mul", [f"g{k}", "reach"], [f"d{k}"])]
nodes += [helper.make_node("Sub", ["px", "d0"], ["x1"]), helper.make_node("Sub", ["py", "d1"], ["y1"]),
          helper.make_node("Add", ["px", "d2"], ["x2"]), helper.make_node("Add", ["py", "d3"], ["y2"])]
for n in ("x1", "y1", "x2", "y2"):
    nodes.append(helper.make_node("Unsqueeze", [n], [n + "u"], axes=[2]))
nodes.append(helper.make_node("Concat", ["x1u", "y1u", "x2u", "y2u"], ["boxes"], axis=2))
graph = helper.make_graph(nodes, "tiny_damo", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, A, C]),
                           helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, A, 4])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
model.ir_version = 7
onnx.checker.check_model(model)
path = write_only or os.path.join(tmp, "tiny_damo.onnx")
onnx.save(model, path)
if write_only:
    print("wrote", path)
    sys.exit(0)
bd = os.environ["BATCHDET"]
data = os.environ["BD_TEST_DATA"]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(img_rgb, thr, iou, max_det):
    h, w = img_rgb.shape[:2]
    x = cv2.resize(img_rgb, (S, S), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1).astype(np.float32)
    W = {i.name: numpy_helper.to_array(i) for i in inits}
    rows = []
    for li, (s, g) in enumerate(levels):
        patches = x.reshape(3, g, s, g, s).transpose(1, 3, 0, 2, 4).reshape(g * g, -1).astype(np.float64)
        rows.append(patches @ W[f"w{li}"].reshape(C + 4, -1).T.astype(np.float64) + W[f"b{li}"])
    cat = np.concatenate(rows).astype(np.float32)
    sc, bs = sigmoid(cat[:, :C]), sigmoid(cat[:, C:])
    d = bs * (2 * st[0])[:, None]
    boxes = np.stack([px[0] - d[:, 0], py[0] - d[:, 1], px[0] + d[:, 2], py[0] + d[:, 3]], 1)
    cand = [(float(sc[a, c]), a * C + c, c, boxes[a]) for a in range(A) for c in range(C) if sc[a, c] > thr]
    cand.sort(key=lambda t: (-t[0], t[1]))
    keep = []
    for t in cand:
        ok = True
        for k in keep:
            if k[2] != t[2]:
                continue
            a, b = t[3], k[3]
            iw = min(a[2], b[2]) - max(a[0], b[0]); ih = min(a[3], b[3]) - max(a[1], b[1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                if inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter) > iou:
                    ok = False
                    break
        if ok:
            keep.append(t)
            if len(keep) == max_det:
                break
    fx, fy = w / S, h / S
    return [(c, s_, [min(max(b[0] * fx, 0), w), min(max(b[1] * fy, 0), h), min(max(b[2] * fx, 0), w),
                     min(max(b[3] * fy, 0), h)]) for s_, _, c, b in keep]


fails = 0
for name, thr, iou, md in (("dog.png", 0.5, 0.7, 100), ("scream.jpg", 0.45, 0.5, 30)):
    img = os.path.join(data, "images", name)
    p = subprocess.run([bd, "detect", "--model", path, "--score-thr", str(thr), "--iou-thr", str(iou),
                        "--max-det", str(md), img], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        print("FAIL detect rc", p.returncode, p.stderr)
        fails += 1
        continue
    got = json.loads(p.stdout)["detections"]
    rgb = cv2.cvtColor(cv2.imread(img, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ref = reference(rgb, thr, iou, md)
    ok = len(got) == len(ref) and len(ref) > 3 and all(
        g["class"] == r[0] and abs(g["score"] - r[1]) < 2e-5 and all(abs(a - b) < 0.02 for a, b in zip(g["box"], r[2]))
        for g, r in zip(got, ref))
    print(("ok  " if ok else "FAIL"), name, f"{len(got)} detections vs reference {len(ref)}")
    if not ok:
        fails += 1
        for g, r in list(zip(got, ref))[:5]:
            print("  got", g["class"], g["score"], g["box"], " ref", r[0], round(r[1], 5), [round(v, 2) for v in r[2]])
# Forcing the other family must fail cleanly.
p = subprocess.run([bd, "detect", "--model", path, "--family", "yolox", os.path.join(data, "images", "dog.png")],
                   capture_output=True, text=True, timeout=300)
print(("ok  " if p.returncode == 1 and "yolox" in p.stderr else "FAIL"), "--family yolox on a damoyolo graph:", p.stderr.strip()[:120])
fails += not (p.returncode == 1 and "yolox" in p.stderr)
sys.exit(1 if fails else 0)
