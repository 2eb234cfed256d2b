#!/usr/bin/env python3
"""Models whose graph decodes the boxes itself, end to end through `batchdet detect`.

1. yolox_nano re-exported with YOLOX's standard in-graph decode (the official export's
   decode_in_inference: Concat[(xy + grid) * stride, exp(wh) * stride, obj/cls scores],
   output still [1,3549,85]) is built from the shipped model with python3-onnx. Its
   detections must be the plain model's (same classes and scores, boxes within 0.05 px):
   batchdet recognises the decode and does not apply its own a second time (before,
   every box came out as the whole image). The same with the decode written the other way
   round (constants first) and with --family yolox.
2. Decodes that are not batchdet's (grid as (y, x), xy left raw) are refused with an
   error naming the decode, never run with wrong boxes.
3. A damoyolo-contract model with 4 classes, scores [1,A,4] and boxes [1,A,4] in either
   output order: the same detections both ways (the scores output is the Sigmoid one),
   scores in 0..1.
4. Its labels: none (and a warning) without names, MODEL.names beside it otherwise (also
   as COCO categories); a broken names file is an error.

`test_detect_decoded.py --write-model PATH` only writes the model of 1 (the emulated
device tests run it). Skips (77) without python3-onnx / numpy."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:
    print("SKIP:", e)
    sys.exit(77)

data = os.environ.get("BD_TEST_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
plain = os.path.join(data, "models", "yolox_nano.onnx")
images = [os.path.join(data, "images", n) for n in ("dog.jpg", "kite.jpg")]
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def yolox_decoded(path, variant="std"):
    """The shipped model with the decode appended, as YOLOX's export writes it."""
    m = onnx.load(plain)
    out = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = ["raw_out" if o == out else o for o in n.output]
    H, W = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[2:]]
    grids, strides = [], []
    for s in (8, 16, 32):
        yv, xv = np.meshgrid(np.arange(H // s), np.arange(W // s), indexing="ij")
        g = np.stack([yv, xv] if variant == "grid_yx" else [xv, yv], -1).reshape(-1, 2)
        grids.append(g)
        strides.append(np.full((g.shape[0], 1), s))
    init = m.graph.initializer
    init.append(numpy_helper.from_array(np.concatenate(grids)[None].astype(np.float32), "dec_grid"))
    init.append(numpy_helper.from_array(np.concatenate(strides)[None].astype(np.float32), "dec_stride"))
    for n, v in (("dec_0", 0), ("dec_2", 2), ("dec_4", 4), ("dec_end", 2**63 - 1), ("dec_ax", 2)):
        init.append(numpy_helper.from_array(np.array([v], np.int64), n))
    N = helper.make_node
    nodes = [N("Slice", ["raw_out", "dec_0", "dec_2", "dec_ax"], ["dec_xy"]),
             N("Slice", ["raw_out", "dec_2", "dec_4", "dec_ax"], ["dec_wh"]),
             N("Slice", ["raw_out", "dec_4", "dec_end", "dec_ax"], ["dec_rest"]),
             N("Exp", ["dec_wh"], ["dec_wh1"])]
    if variant == "commuted":
        nodes += [N("Add", ["dec_grid", "dec_xy"], ["dec_xy1"]),
                  N("Mul", ["dec_stride", "dec_xy1"], ["dec_xy2"]),
                  N("Mul", ["dec_stride", "dec_wh1"], ["dec_wh2"])]
    elif variant == "wh_only":
        nodes += [N("Identity", ["dec_xy"], ["dec_xy2"]),
                  N("Mul", ["dec_wh1", "dec_stride"], ["dec_wh2"])]
    else:
        nodes += [N("Add", ["dec_xy", "dec_grid"], ["dec_xy1"]),
                  N("Mul", ["dec_xy1", "dec_stride"], ["dec_xy2"]),
                  N("Mul", ["dec_wh1", "dec_stride"], ["dec_wh2"])]
    nodes.append(N("Concat", ["dec_xy2", "dec_wh2", "dec_rest"], [out], axis=-1))
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def damo_c4(path, boxes_first):
    """Tiny damoyolo contract, 4 classes: scores = Sigmoid(...) [1,A,4], boxes [1,A,4]
    xyxy around the anchor points; the same weights whatever the output order."""
    S, C = 64, 4
    rng = np.random.default_rng(5)
    inits, nodes, sc, bx, pts = [], [], [], [], []
    N = helper.make_node
    for li, s in enumerate((8, 16, 32)):
        g = S // s
        w = (rng.standard_normal((C + 4, 3, s, s)) / (s * s * 3 * 60)).astype(np.float32)
        b = (rng.standard_normal(C + 4) * 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{li}"), numpy_helper.from_array(b, f"b{li}"),
                  numpy_helper.from_array(np.array([1, C + 4, g * g], np.int64), f"shp{li}")]
        nodes += [N("Conv", ["images", f"w{li}", f"b{li}"], [f"c{li}"], kernel_shape=[s, s], strides=[s, s]),
                  N("Reshape", [f"c{li}", f"shp{li}"], [f"r{li}"]),
                  N("Transpose", [f"r{li}"], [f"t{li}"], perm=[0, 2, 1])]
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        p = (np.stack([xv, yv], -1).reshape(-1, 2) + 0.5) * s
        pts.append(np.concatenate([p, p], 1))
    A = sum((S // s) ** 2 for s in (8, 16, 32))
    inits += [numpy_helper.from_array(np.array([0], np.int64), "k0"),
              numpy_helper.from_array(np.array([C], np.int64), "kc"),
              numpy_helper.from_array(np.array([C + 4], np.int64), "kend"),
              numpy_helper.from_array(np.array([2], np.int64), "kax"),
              numpy_helper.from_array(np.array([-24, -24, 24, 24], np.float32).reshape(1, 1, 4), "reach"),
              numpy_helper.from_array(np.concatenate(pts)[None].astype(np.float32), "points")]
    nodes += [N("Concat", ["t0", "t1", "t2"], ["cat"], axis=1),
              N("Slice", ["cat", "k0", "kc", "kax"], ["logits"]),
              N("Slice", ["cat", "kc", "kend", "kax"], ["dist"]),
              N("Sigmoid", ["logits"], ["scores"]),
              N("Sigmoid", ["dist"], ["dsig"]),
              N("Mul", ["dsig", "reach"], ["d"]),
              N("Add", ["points", "d"], ["boxes"])]
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, A, C]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, A, 4])]
    if boxes_first:
        outs.reverse()
    graph = helper.make_graph(nodes, "damo_c4", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
                              outs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


if len(sys.argv) == 3 and sys.argv[1] == "--write-model":
    yolox_decoded(sys.argv[2])
    sys.exit(0)

bd = os.environ["BATCHDET"]
tmp = tempfile.mkdtemp(prefix="bd_decoded_")


def detect(model, *extra, imgs=images):
    e = dict(os.environ)
    e.pop("BATCHDET_MODEL", None)
    p = subprocess.run([bd, "detect", "--threads", "2", "--model", model, *extra, *imgs],
                       capture_output=True, text=True, env=e, timeout=600)
    res = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, res, p.stderr


def same(got, want, box_tol):
    """'' when got's detections are want's (classes, scores, boxes within box_tol)."""
    if len(got) != len(want):
        return f"{len(got)} images, want {len(want)}"
    for g, w in zip(got, want):
        gd, wd = g.get("detections"), w.get("detections")
        if gd is None or wd is None:
            return f"{g.get('image')}: error {g.get('error')} / {w.get('error')}"
        if len(gd) != len(wd):
            return f"{g['image']}: {len(gd)} detections, want {len(wd)}"
        for a, b in zip(gd, wd):
            if a["class"] != b["class"] or abs(a["score"] - b["score"]) > 2e-5:
                return f"{g['image']}: {a} vs {b}"
            if max(abs(x - y) for x, y in zip(a["box"], b["box"])) > box_tol:
                return f"{g['image']}: box {a['box']} vs {b['box']}"
    return ""


# 1. the standard decode in the graph gives the plain model's detections
rc, want, err = detect(plain)
check(rc == 0 and len(want) == 2 and all(len(r.get("detections", [])) >= 2 for r in want),
      f"plain model detects (rc {rc}) {err.strip()[-200:]}")
for variant, extra in (("std", ()), ("commuted", ()), ("std", ("--family", "yolox"))):
    path = os.path.join(tmp, f"yolox_decoded_{variant}.onnx")
    if not os.path.exists(path):
        yolox_decoded(path, variant)
    rc, got, err = detect(path, *extra)
    check(rc == 0, f"{variant} {' '.join(extra)}: detect exits 0 (rc {rc}) {err.strip()[-300:]}")
    diff = same(got, want, 0.05)
    check(diff == "", f"{variant} {' '.join(extra)}: the plain model's detections {diff}")

# 2. decodes that are not batchdet's are refused, not run
for variant in ("grid_yx", "wh_only"):
    path = os.path.join(tmp, f"yolox_decoded_{variant}.onnx")
    yolox_decoded(path, variant)
    rc, got, err = detect(path)
    check(rc != 0 and "decode" in err and not any(r.get("detections") for r in got),
          f"{variant}: refused (rc {rc}: {err.strip()[-300:]})")

# 2b. an Exp inside the network (one SiLU's sigmoid written as 1 / (1 + exp(-x))) is no
# decode: the raw model still runs, with the plain model's detections
m = onnx.load(plain)
sig = next(n for n in m.graph.node if n.op_type == "Sigmoid")
x, y = sig.input[0], sig.output[0]
m.graph.initializer.extend([numpy_helper.from_array(np.array(-1, np.float32), "act_m1"),
                            numpy_helper.from_array(np.array(1, np.float32), "act_1")])
i = list(m.graph.node).index(sig)
m.graph.node.remove(sig)
N = helper.make_node
for k, nd in enumerate([N("Mul", [x, "act_m1"], ["act_neg"]), N("Exp", ["act_neg"], ["act_e"]),
                        N("Add", ["act_e", "act_1"], ["act_den"]), N("Div", ["act_1", "act_den"], [y])]):
    m.graph.node.insert(i + k, nd)
path = os.path.join(tmp, "yolox_exp_act.onnx")
onnx.save(m, path)
rc, got, err = detect(path)
ok = rc == 0 and len(got) == len(want) and all(
    len(g.get("detections", [])) == len(w["detections"]) and all(
        a["class"] == b["class"] and abs(a["score"] - b["score"]) < 1e-3 and
        max(abs(p - q) for p, q in zip(a["box"], b["box"])) < 0.5
        for a, b in zip(g["detections"], w["detections"])) for g, w in zip(got, want))
check(ok, f"an Exp activation inside the network is no decode: runs like the plain model "
      f"(rc {rc}: {err.strip()[-200:]})")

# 3. damoyolo, 4 classes: the output order does not matter
res = []
for boxes_first in (0, 1):
    path = os.path.join(tmp, f"damo_c4_{boxes_first}.onnx")
    damo_c4(path, boxes_first)
    rc, got, err = detect(path, "--score-thr", "0.2")
    check(rc == 0, f"damo c4 boxes_first={boxes_first}: detect exits 0 (rc {rc}) {err.strip()[-300:]}")
    dets = [d for r in got for d in r.get("detections", [])]
    check(dets and all(0 < d["score"] <= 1 for d in dets),
          f"damo c4 boxes_first={boxes_first}: {len(dets)} detections, scores in (0, 1] "
          f"(max {max([d['score'] for d in dets], default=0)})")
    res.append(got)
diff = same(res[1], res[0], 0)
check(diff == "", f"damo c4: the same detections in either output order {diff}")

# 4. labels of a 4-class model: not COCO's (they were: class 0 came out as "person");
# none without names (a warning says so), else MODEL.names beside the model or --labels
dets = [d for r in res[0] for d in r.get("detections", [])]
rc, _, err = detect(os.path.join(tmp, "damo_c4_0.onnx"), "--score-thr", "0.2")
check(dets and all("label" not in d for d in dets) and "has 4 classes, not COCO's 80" in err
      and "damo_c4_0.names" in err, f"damo c4 without names: no labels, a warning ({err.strip()[:200]})")
with open(os.path.join(tmp, "damo_c4_0.names"), "w") as f:
    f.write("helmet\nvest\nboot\nglove\n")
rc, got, err = detect(os.path.join(tmp, "damo_c4_0.onnx"), "--score-thr", "0.2")
names = ["helmet", "vest", "boot", "glove"]
dets = [d for r in got for d in r.get("detections", [])]
check(rc == 0 and dets and all(d.get("label") == names[d["class"]] for d in dets)
      and "warning" not in err, f"damo c4 with damo_c4_0.names beside it: its labels ({err.strip()[:200]})")
out = os.path.join(tmp, "c4.json")
rc, got, err = detect(os.path.join(tmp, "damo_c4_0.onnx"), "--score-thr", "0.2", "--format", "coco")
cats = json.loads("\n".join(json.dumps(r) for r in got)) if len(got) == 1 else {}
check(rc == 0 and cats.get("categories") == [{"id": i + 1, "name": n} for i, n in enumerate(names)],
      f"damo c4 --format coco: categories from the names file ({str(cats.get('categories'))[:200]})")
with open(os.path.join(tmp, "damo_c4_0.names"), "w") as f:
    f.write("helmet\n\nboot\n")
rc, got, err = detect(os.path.join(tmp, "damo_c4_0.onnx"))
check(rc == 1 and "damo_c4_0.names" in err and not got,
      f"a broken names file stops detect (rc {rc}: {err.strip()[:200]})")

print(f"{len(fails)} failure(s)")
sys.exit(1 if fails else 0)
