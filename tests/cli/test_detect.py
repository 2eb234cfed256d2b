#!/usr/bin/env python3
"""`batchdet detect`, `infer` and `bench` end to end on the shipped YOLOX-nano model and
photos. Expected objects come from the photos' known content (dog.jpg: dog, bicycle, car),
the bad-image outcomes from bad/EXPECTED.tsv, and the dumped input tensor is compared with
an independent OpenCV implementation of the YOLOX pre-processing when cv2 is installed."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import bd_testlib  # noqa: E402

bd = os.environ["BATCHDET"]
data = os.environ["BD_TEST_DATA"]
model = os.path.join(data, "models", "yolox_nano.onnx")
images = os.path.join(data, "images")
tmp = tempfile.mkdtemp(prefix="bd_detect_")
fails = []


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("BATCHDET_MODEL", None)
    if env:
        e.update(env)
    p = subprocess.run([bd, *args], capture_output=True, text=True, env=e, timeout=900)
    return p.returncode, p.stdout, p.stderr


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


# 1. dog.jpg: dog (16), bicycle (1), car (2); boxes inside the image.
rc, out, err = run("detect", "--model", model, os.path.join(images, "dog.jpg"))
check(rc == 0, f"detect dog.jpg exits 0 (rc {rc}, {err.strip()[:200]})")
lines = out.splitlines()
check(len(lines) == 1, "one line for one image")
if lines:
    r = json.loads(lines[0])
    check(r["image"] == os.path.join(images, "dog.jpg"), "image is the path as given")
    check((r["width"], r["height"]) == (768, 576), "width/height 768x576")
    classes = {d["class"] for d in r["detections"]}
    check({16, 1, 2} <= classes, f"dog, bicycle, car found (classes {sorted(classes)})")
    check(all(d["label"] for d in r["detections"]), "labels present")
    dog = [d for d in r["detections"] if d["class"] == 16]
    check(dog and dog[0]["label"] == "dog" and dog[0]["score"] > 0.5, "dog scores > 0.5")
    check(all(0 <= d["box"][0] < d["box"][2] <= 768 and 0 <= d["box"][1] < d["box"][3] <= 576
              for d in r["detections"]), "boxes inside the image")
    scores = [d["score"] for d in r["detections"]]
    check(scores == sorted(scores, reverse=True), "detections sorted by score")

# 2. bad/: one line per file, outcome per EXPECTED.tsv, run continues, exit 0.
expected = {}
with open(os.path.join(images, "bad", "EXPECTED.tsv")) as f:
    for line in f:
        if line.startswith("#") or not line.strip():
            continue
        name, expect = line.split("\t")[:2]
        expected[name] = expect
rc, out, err = run("detect", "--model", model, os.path.join(images, "bad"))
check(rc == 0, f"detect bad/ exits 0 (rc {rc})")
got = {}
for line in out.splitlines():
    r = json.loads(line)
    got[r["image"]] = r
check(sorted(got) == sorted(expected), f"one line per bad/ image ({sorted(got)})")
for name, expect in expected.items():
    r = got.get(name, {})
    if expect == "error":
        check("error" in r and "detections" not in r, f"{name}: error line")
    else:
        check("detections" in r, f"{name}: decoded")
person = got.get("ok_progressive_person.jpg", {})
check({0, 16, 17} <= {d["class"] for d in person.get("detections", [])},
      "progressive person.jpg: person, dog, horse")

# 2b. The whole images/ tree (good + bad): one line per image file, exit 0, and no
# sanitizer report (the ASan build runs LeakSanitizer at exit).
rc, out, err = run("detect", "--model", model, "--batch", "4", images)
n_files = sum(1 for dp, dn, fn in os.walk(images) for f in fn
              if f.lower().endswith((".jpg", ".jpeg", ".png")) and not f.startswith("."))
check(rc == 0 and len(out.splitlines()) == n_files, f"images/: {len(out.splitlines())} lines for {n_files} files, rc {rc}")
check("Sanitizer" not in err and "runtime error" not in err, "images/: no sanitizer report")
names = [json.loads(l)["image"] for l in out.splitlines()]
check(names == sorted(names, key=lambda p: p.split("/")) and "bad/empty.jpg" in names,
      "images/: sorted relative names")

# 3. Every image given explicitly, missing file included: per-image error, exit 0.
rc, out, err = run("detect", "--model", model, "--batch", "3", os.path.join(images, "scream.jpg"),
                   os.path.join(tmp, "missing.jpg"), os.path.join(images, "dog.png"))
ls = [json.loads(l) for l in out.splitlines()]
check(rc == 0 and len(ls) == 3 and "error" in ls[1] and "detections" in ls[2],
      "missing file is a per-image error, order kept")

# 3b. URLs: a loopback HTTP server serving images/; a 404 is a per-image error.
import functools
import http.server
import threading
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=images))
threading.Thread(target=srv.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{srv.server_address[1]}"
rc, out, err = run("detect", "--model", model, f"{base}/dog.jpg", f"{base}/missing.jpg",
                   os.path.join(images, "eagle.jpg"))
ls = [json.loads(l) for l in out.splitlines()]
check(rc == 0 and len(ls) == 3, f"URL run: 3 lines, exit 0 (rc {rc})")
if len(ls) == 3:
    check(ls[0]["image"] == f"{base}/dog.jpg" and {16, 1, 2} <= {d["class"] for d in ls[0]["detections"]},
          "dog.jpg over HTTP: dog, bicycle, car")
    check("404" in ls[1].get("error", ""), f"HTTP 404 is a per-image error ({ls[1]})")
    check("detections" in ls[2], "local file after URLs")
srv.shutdown()

# 4. All images fail -> exit 1; usage errors -> 2; bad model -> 1.
rc, out, err = run("detect", "--model", model, os.path.join(images, "bad", "empty.jpg"))
check(rc == 1 and "error" in out, f"all images failed: exit 1 (rc {rc})")
rc, _, _ = run("detect", os.path.join(images, "dog.jpg"))
check(rc == 2, f"no model: exit 2 (rc {rc})")
rc, _, _ = run("detect", "--model", model, "--score-thr", "2", os.path.join(images, "dog.jpg"))
check(rc == 2, f"bad threshold: exit 2 (rc {rc})")
rc, _, _ = run("detect", "--bogus", os.path.join(images, "dog.jpg"))
check(rc == 2, f"unknown option: exit 2 (rc {rc})")
rc, _, err = run("detect", "--model", os.path.join(images, "dog.jpg"), os.path.join(images, "dog.jpg"))
check(rc == 1 and err, f"unloadable model: exit 1 (rc {rc})")
rc, out, _ = run("detect", os.path.join(images, "dog.png"), env={"BATCHDET_MODEL": model})
check(rc == 0 and '"dog"' in out, "BATCHDET_MODEL is the default model")

# 5. --format coco, --annotate, --dump-input, thresholds.
ann = os.path.join(tmp, "ann")
dump = os.path.join(tmp, "dump")
rc, out, err = run("detect", "--model", model, "--format", "coco", "--annotate", ann,
                   "--dump-input", dump, "--max-det", "2", os.path.join(images, "dog.png"),
                   os.path.join(images, "bad", "empty.jpg"))
check(rc == 0, f"coco run exits 0 (rc {rc}, {err.strip()[:200]})")
try:
    c = json.loads(out)
    check(len(c["images"]) == 1 and c["images"][0]["width"] == 768, "coco images")
    check(len(c["annotations"]) == 2, "--max-det 2 keeps 2")
    cat = {a["category_id"] for a in c["annotations"]}
    check(18 in cat, f"dog is COCO category 18 ({cat})")
    check(len(c["categories"]) == 80 and c["categories"][16] == {"id": 18, "name": "dog"},
          "80 categories with COCO ids")
    check(len(c["errors"]) == 1, "coco errors list")
except (ValueError, KeyError) as e:
    check(False, f"coco output parses: {e}")
jpg = os.path.join(ann, "dog.png.jpg")
check(os.path.exists(jpg) and open(jpg, "rb").read(2) == b"\xff\xd8", "--annotate wrote a JPEG")
f32 = os.path.join(dump, "dog.png.f32")
meta = os.path.join(dump, "dog.png.json")
check(os.path.exists(f32) and os.path.getsize(f32) == 3 * 416 * 416 * 4, "--dump-input tensor size")
if os.path.exists(meta):
    m = json.load(open(meta))
    check(m["family"] == "yolox" and m["input_size"] == 416 and abs(m["ratio"] - 416 / 768) < 1e-6,
          f"--dump-input json {m}")
try:
    import cv2
    import numpy as np
    img = cv2.imread(os.path.join(images, "dog.png"), cv2.IMREAD_COLOR)  # BGR, as YOLOX
    r = min(416 / img.shape[0], 416 / img.shape[1])
    ref = np.full((416, 416, 3), 114, np.uint8)
    rs = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    ref[: rs.shape[0], : rs.shape[1]] = rs
    ref = ref.transpose(2, 0, 1).astype(np.float32)
    got_t = np.fromfile(f32, np.float32).reshape(3, 416, 416)
    check(np.array_equal(ref, got_t), "dumped tensor == OpenCV YOLOX preproc, bit for bit")
    have_np = True
except ImportError:
    print("skip: no cv2, dumped tensor not compared")
    have_np = False

# 6. infer on the dumped tensor (batch 2 by concatenation), and a bad length.
two = os.path.join(tmp, "two.f32")
with open(two, "wb") as f:
    blob = open(f32, "rb").read()
    f.write(blob + blob)
pre = os.path.join(tmp, "inf")
rc, out, err = run("infer", "--model", model, "--input", two, "--out", pre)
check(rc == 0, f"infer exits 0 (rc {rc}, {err.strip()[:200]})")
if rc == 0:
    j = json.load(open(pre + ".json"))
    check(j["outputs"][0]["dims"] == [2, 3549, 85], f"infer dims {j['outputs']}")
    check(os.path.getsize(pre + ".0.f32") == 2 * 3549 * 85 * 4, "infer output size")
    if have_np:
        o = np.fromfile(pre + ".0.f32", np.float32).reshape(2, 3549, 85)
        check(np.allclose(o[0], o[1], atol=1e-4), "identical rows give identical outputs")
# 6b. detect's post-processing against an independent numpy implementation of the YOLOX
# reference (grid decode, best class, obj*cls >= 0.3, per-class greedy NMS IoU > 0.45,
# top 100, / ratio, clip) applied to the raw network output of the same tensor.
def numpy_yolox(o, ratio, w, h, thr=0.3, iou=0.45, max_det=100):
    grids = []
    for s in (8, 16, 32):
        gy, gx = np.meshgrid(np.arange(416 // s), np.arange(416 // s), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, s)], 1))
    g = np.concatenate(grids).astype(np.float32)
    cx, cy = (o[:, 0] + g[:, 0]) * g[:, 2], (o[:, 1] + g[:, 1]) * g[:, 2]
    bw, bh = np.exp(o[:, 2]) * g[:, 2], np.exp(o[:, 3]) * g[:, 2]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    cls = o[:, 5:].argmax(1)
    score = o[:, 4] * o[np.arange(len(o)), 5 + cls]
    idx = np.nonzero(score >= thr)[0]
    idx = idx[np.lexsort((idx, -score[idx]))]
    keep = []
    for i in idx:
        ok = True
        for k in keep:
            if cls[k] != cls[i]:
                continue
            a, b = boxes[i], boxes[k]
            iw = min(a[2], b[2]) - max(a[0], b[0]); ih = min(a[3], b[3]) - max(a[1], b[1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
                if inter / u > iou:
                    ok = False
                    break
        if ok:
            keep.append(i)
        if len(keep) == max_det:
            break
    res = []
    for k in keep:
        b = boxes[k] / np.float32(ratio)
        b = [min(max(float(b[0]), 0), w), min(max(float(b[1]), 0), h), min(max(float(b[2]), 0), w), min(max(float(b[3]), 0), h)]
        res.append((int(cls[k]), float(score[k]), b))
    return res


if have_np:
    one = os.path.join(tmp, "one")
    rc, _, err = run("infer", "--model", model, "--input", f32, "--out", one)
    rc2, out, _ = run("detect", "--model", model, os.path.join(images, "dog.png"))
    if rc == 0 and rc2 == 0:
        o = np.fromfile(one + ".0.f32", np.float32).reshape(3549, 85)
        ref = numpy_yolox(o, min(416 / 576, 416 / 768), 768, 576)
        got = [(d["class"], d["score"], d["box"]) for d in json.loads(out)["detections"]]
        same = len(ref) == len(got) and all(
            rc_ == gc and abs(rs - gs) < 2e-5 and all(abs(x - y) < 0.02 for x, y in zip(rb, gb))
            for (rc_, rs, rb), (gc, gs, gb) in zip(ref, got))
        check(same, f"detect == numpy YOLOX post-processing on the raw output ({len(got)} vs {len(ref)})")
    else:
        check(False, "infer/detect for the post-processing comparison")

with open(os.path.join(tmp, "odd.f32"), "wb") as f:
    f.write(b"\0" * 400)
rc, _, err = run("infer", "--model", model, "--input", os.path.join(tmp, "odd.f32"), "--out", pre)
check(rc == 1 and "multiple" in err, f"infer rejects a partial tensor (rc {rc})")
rc, _, _ = run("infer", "--model", model)
check(rc == 2, "infer usage error: exit 2")

# 7. bench smoke (not a timing assertion).
rc, out, err = run("bench", "--model", model, "--iters", "2", "--warmup", "0", "--threads", "1", "--json")
check(rc == 0, f"bench exits 0 (rc {rc}, {err.strip()[:200]})")
if rc == 0:
    b = json.loads(out)
    keys = {"ms_per_image", "img_s", "batch", "device", "threads", "p50_ms", "p99_ms", "iters", "model"}
    check(keys <= set(b) and b["ms_per_image"] > 0, f"bench json keys {sorted(b)}")
    # which kernels run the cpu convs, in one of the forms bd_backend.h promises
    cc = b.get("cpu_convs", "")
    check(re.fullmatch(r"AVX-512 fused tiles|AVX2 fused tiles|im2col \+ built-in GEMM|"
                       r"im2col \+ OpenBLAS \(\S+ kernels\)", cc) is not None,
          f"bench names the cpu conv kernels: {cc!r}")
rc, out, err = run("bench", "--model", model, "--iters", "1", "--warmup", "0", "--threads", "1")
check(rc == 0 and re.search(r"^cpu convs  \S", out, re.M) is not None,
      f"bench's table names the cpu conv kernels (rc {rc}): {out[:300]!r}")

# 8. bench --pool: two cpu instances through the device pool; every timed image accounted
# for in the instances' counts (which include the warm-up batch).
rc, out, err = run("bench", "--model", model, "--pool", "--device", "cpu:2", "--threads", "1",
                   "--batch", "2", "--iters", "3", "--warmup", "1", "--image-size", "200x150", "--json")
check(rc == 0, f"bench --pool exits 0 (rc {rc}, {err.strip()[:200]})")
if rc == 0:
    b = json.loads(out)
    inst = b.get("instances", [])
    check(len(inst) == 2 and sorted(i["name"] for i in inst) == ["cpu#0", "cpu#1"],
          f"bench --pool lists two instances: {inst}")
    check(sum(i["images"] for i in inst) == (3 + 1) * 2 and sum(i["batches"] for i in inst) == 4,
          f"bench --pool instance counts add up: {inst}")
    check(b.get("img_s", 0) > 0 and b.get("failed_batches") == 0, f"bench --pool rate {b.get('img_s')}")
rc, _, err = run("bench", "--model", model, "--image-size", "10x10x10", "--end-to-end")
check(rc == 2 and "image-size" in err, f"bench --image-size 10x10x10 is a usage error (rc {rc})")
rc, _, err = run("bench", "--model", model, "--pool", "--device", "tpu")
check(rc == 1 and "tpu" in err, f"bench --pool rejects an unknown device (rc {rc}, {err.strip()[:120]})")
rc, _, err = run("bench", "--model", model, "--pool", "--device", "cpu:x")
check(rc == 2 and "cpu:x" in err, f"bench --pool rejects a bad cpu count (rc {rc}, {err.strip()[:120]})")

# 9. Inputs and outputs that once lost results (found by a probe, 2026-11-29).
dog = os.path.join(images, "dog.jpg")
w = os.path.join(tmp, "walk")
os.makedirs(os.path.join(w, "empty"))            # an empty directory: qsort(NULL, 0) once
os.makedirs(os.path.join(w, "hidden"))
open(os.path.join(w, "hidden", ".x.jpg"), "wb").close()
os.makedirs(os.path.join(w, "sub"))
os.symlink(dog, os.path.join(w, "sub", "d.jpg"))
os.symlink(".", os.path.join(w, "sub", "self"))  # loops: each directory entered once
os.symlink("..", os.path.join(w, "sub", "up"))
os.symlink("sub", os.path.join(w, "again"))
os.symlink("nowhere.jpg", os.path.join(w, "dangling.jpg"))
p = subprocess.run([bd, "detect", "--model", model, w], capture_output=True, text=True,
                   timeout=120)
names = [json.loads(ln)["image"] for ln in p.stdout.splitlines()]
# "again" (a link to sub) sorts first, so the image is reported under it
check(p.returncode == 0 and names == ["again/d.jpg"],
      f"walk with empty dirs and symlink loops: each image once ({names}, rc {p.returncode})")
check("already walked" in p.stderr and "dangling.jpg" in p.stderr,
      f"walk says what it skipped: {p.stderr.strip()[:300]}")

bad_name = os.path.join(tmp, "bad\udcff.jpg")   # the byte 0xFF, not UTF-8
os.symlink(dog, os.fsencode(bad_name))
rc, out, err = run("detect", "--model", model, os.fsencode(bad_name).decode("utf-8", "surrogateescape"))
rows = [json.loads(ln) for ln in out.splitlines()]
check(rc == 0 and len(rows) == 1 and rows[0]["image"].endswith("bad\ufffd.jpg")
      and rows[0]["detections"], f"a file name that is not UTF-8 keeps its line ({out[:120]}, rc {rc})")

lab = os.path.join(tmp, "labels_bad.txt")
with open(lab, "wb") as f:
    f.write(b"person\nd\xffog\n")
rc, out, err = run("detect", "--model", model, "--labels", lab, dog)
check(rc == 1 and "line 2 is not UTF-8" in err, f"labels that are not UTF-8 refused (rc {rc}, {err.strip()[:160]})")
rc, out, err = run("detect", "--model", model, "--labels", tmp, dog)
check(rc == 1 and "directory" in err, f"--labels DIR refused as such (rc {rc}, {err.strip()[:160]})")

valid = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "data", "valid.json")
for args in (["detect", "--model", model, dog], ["manifest", "validate", valid], ["--version"]):
    with open("/dev/full", "w") as full:
        p = subprocess.run([bd, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    check(p.returncode == 1 and "No space left" in p.stderr,
          f"{args[0]} {args[1] if len(args) > 1 else ''} to a full disk fails (rc {p.returncode}, {p.stderr.strip()[:160]})")
p = subprocess.run([bd, "detect", "--model", model, dog], stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, text=True, timeout=120,
                   preexec_fn=lambda: os.close(1))
check(p.returncode == 1, f"detect with stdout closed fails (rc {p.returncode}, {p.stderr.strip()[:160]})")

c = os.path.join(tmp, "collide")
for d in ("a", "b"):
    os.makedirs(os.path.join(c, d))
    os.symlink(dog, os.path.join(c, d, "x.jpg"))
os.symlink(dog, os.path.join(c, "a_x.jpg"))       # the walk's stem of a/x.jpg too
ann, dmp = os.path.join(tmp, "ann_c"), os.path.join(tmp, "dump_c")
rc, out, err = run("detect", "--model", model, "--annotate", ann, "--dump-input", dmp,
                   os.path.join(c, "a", "x.jpg"), os.path.join(c, "b", "x.jpg"), c)
check(rc == 0 and sorted(os.listdir(ann)) == ["a_x.jpg", "a_x~2.jpg", "b_x.jpg", "x.jpg", "x~2.jpg"],
      f"--annotate names never collide: {sorted(os.listdir(ann)) if os.path.isdir(ann) else None}")
dumped = {}
for fn in os.listdir(dmp) if os.path.isdir(dmp) else []:
    if fn.endswith(".json"):
        with open(os.path.join(dmp, fn)) as f:
            dumped[fn] = json.load(f)["image"]
check(len(dumped) == 5 and len(set(dumped.values())) == 5,
      f"--dump-input: one file per image ({dumped})")

rc, _, err = run("detect", "--model", model)
check(rc == 2, f"detect without inputs is a usage error (rc {rc})")
rc, _, err = run("detect", "--model", model, os.path.join(w, "empty"))
check(rc == 1 and "no input images" in err, f"a directory without images: exit 1 (rc {rc}, {err.strip()[:120]})")
rc, out, err = run("detect", "--model", model, "file://" + dog)
check(rc == 0 and json.loads(out)["detections"], f"file:// URL (rc {rc}, {err.strip()[:160]})")
rc, _, err = run("detect", "--model", model, "--threads", "300", dog)
check(rc == 2 and "--threads" in err, f"--threads past the cpu backend's limit is a usage error (rc {rc})")

# --max-decoded-mb: a batch of large images (tiny PNG files, 48 MB of RGB each once
# decoded) takes fewer images when their header sizes would pass the budget. Peak RSS of
# the same run with and without the budget (ASan's quarantine off, so that freed images
# leave); outputs equal. Two of the inputs are file:// URLs, fetched for a batch and
# carried to the next one when the budget cuts it.
def run_rss(*args):
    return bd_testlib.run_rss([bd, *args], os.path.join(tmp, "rss.out"))


big_png = bd_testlib.big_png
bigs = []
for i in range(5):
    bigs.append(os.path.join(tmp, "big%d.png" % i))
    big_png(bigs[-1], 4000, 4000)
ins = [bigs[0], "file://" + bigs[1], bigs[2], "file://" + bigs[3], bigs[4]]
rc1, out1, rss1 = run_rss("detect", "--model", model, "--batch", "8", "--max-decoded-mb", "4096", *ins)
rc2, out2, rss2 = run_rss("detect", "--model", model, "--batch", "8", "--max-decoded-mb", "64", *ins)
check(rc1 == 0 and rc2 == 0 and out1 == out2 and len(out2.splitlines()) == 5
      and all("detections" in json.loads(x) for x in out2.splitlines()),
      f"--max-decoded-mb: same results with and without the budget (rc {rc1} {rc2})")
check(rss2 < rss1 - 120, f"--max-decoded-mb 64 holds one 48 MB image at a time: peak RSS "
      f"{rss2:.0f} MiB vs {rss1:.0f} MiB for all five")
wide = os.path.join(tmp, "wide.png")
big_png(wide, 70000, 2)  # a PNG may be this wide; the pre-processing takes 65535 px
rc, out, err = run("detect", "--model", model, wide)
check(rc == 1 and "70000x2 is over the 65535 px per side" in out,
      f"an image wider than pre-processing takes: a clear per-image error ({out.strip()[:160]})")
rc, _, err = run("detect", "--model", model, "--max-decoded-mb", "0", dog)
check(rc == 2 and "--max-decoded-mb" in err, f"--max-decoded-mb 0 is a usage error (rc {rc})")

# Progress: --progress writes lines to a pipe; a terminal gets one line rewritten in place
# (carriage return, erase to the end of line) and cleared before the summary.
two = [dog, os.path.join(images, "giraffe.jpg")]
rc, out, err = run("detect", "--model", model, "--progress", "--batch", "1", *two)
lines = [ln for ln in err.splitlines() if "/2 images (" in ln]
check(rc == 0 and lines and lines[0].startswith("batchdet detect: 1/2 images (50%), 0 failed, ")
      and "ETA " in lines[0] and "\r" not in err,
      f"--progress on a pipe: lines ({err.strip()[:200]})")
rc, out, err = run("detect", "--model", model, "--batch", "1", *two)
check(rc == 0 and "/2 images (" not in err, "no progress on a pipe without --progress")
rc, out, t = bd_testlib.run_tty([bd, "detect", "--model", model, "--batch", "1", *two])
check(rc == 0 and len(out.splitlines()) == 2 and "\rbatchdet detect: 1/2 images (50%)" in t
      and "\x1b[K" in t and t.rstrip().split("\r")[-1].startswith("\x1b[Kbatchdet detect: 2 images"),
      f"progress on a terminal: one line, cleared before the summary ({t[:200]!r})")

print("FAILED: %d" % len(fails) if fails else "all passed")
sys.exit(1 if fails else 0)
