#!/usr/bin/env python3
"""bd_family pre-processing against OpenCV (python3-opencv) as the independent reference.

Resize: random sizes/channels, and the shipped photos at the YOLOX letterbox sizes and the
DAMO-YOLO stretch sizes (416 and 640), must be bit-identical to cv2.resize(INTER_LINEAR).
Pre-processing: the float tensors must equal the YOLOX reference preproc (letterbox on a
114 canvas, BGR) and the DAMO-YOLO one (stretch, RGB). Exits 77 (skip) without cv2."""
import os
import subprocess
import sys
import tempfile

try:
    import cv2
    import numpy as np
except ImportError as e:  # pragma: no cover
    print("SKIP: python3-opencv / numpy not available:", e)
    sys.exit(77)

tool = sys.argv[1]
data = os.environ.get("BD_TEST_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
tmp = tempfile.mkdtemp(prefix="bd_resize_")
failures = 0


def run_resize(img, dw, dh):
    h, w = img.shape[:2]
    cn = 1 if img.ndim == 2 else img.shape[2]
    src, dst = os.path.join(tmp, "in.raw"), os.path.join(tmp, "out.raw")
    np.ascontiguousarray(img).tofile(src)
    subprocess.run([tool, "resize", src, str(w), str(h), str(cn), dst, str(dw), str(dh)], check=True)
    return np.fromfile(dst, np.uint8).reshape((dh, dw) if cn == 1 else (dh, dw, cn))


def check(name, img, dw, dh):
    global failures
    ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
    got = run_resize(img, dw, dh)
    if not np.array_equal(ref, got):
        failures += 1
        d = np.abs(ref.astype(int) - got.astype(int))
        print(f"FAIL resize {name} {img.shape} -> {dw}x{dh}: {int((d > 0).sum())} differ, max {d.max()}")


rng = np.random.default_rng(7)
for t in range(60):
    w, h = (int(v) for v in rng.integers(1, 120, 2))
    dw, dh = (int(v) for v in rng.integers(1, 120, 2))
    shape = (h, w) if t % 3 == 0 else (h, w, 3)
    check(f"random{t}", rng.integers(0, 256, shape, dtype=np.uint8), dw, dh)

photos = sorted(f for f in os.listdir(os.path.join(data, "images")) if f.endswith((".jpg", ".png")))
for f in photos:
    img = cv2.imread(os.path.join(data, "images", f), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    for s in (416, 640):
        r = min(s / h, s / w)
        check(f, img, int(w * r), int(h * r))  # YOLOX letterbox
        check(f, img, s, s)                     # DAMO-YOLO stretch

# Whole pre-processing on two photos, both families.
for f in ("dog.png", "scream.jpg"):
    bgr = cv2.imread(os.path.join(data, "images", f), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    src = os.path.join(tmp, "img.rgb")
    rgb.tofile(src)
    for fam, (ih, iw) in (("yolox", (416, 416)), ("yolox", (384, 640)), ("damoyolo", (640, 640)), ("damoyolo", (416, 512))):
        out = os.path.join(tmp, "t.f32")
        subprocess.run([tool, "prep", fam, src, str(w), str(h), str(ih), str(iw), out], check=True)
        got = np.fromfile(out, np.float32).reshape(3, ih, iw)
        if fam == "yolox":  # YOLOX preproc(): BGR image, letterbox top-left on 114
            r = min(ih / h, iw / w)
            ref = np.full((ih, iw, 3), 114, np.uint8)
            rs = cv2.resize(bgr, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR)
            ref[: rs.shape[0], : rs.shape[1]] = rs
        else:  # DAMO-YOLO: RGB, stretch
            ref = cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_LINEAR)
        ref = ref.transpose(2, 0, 1).astype(np.float32)
        if not np.array_equal(ref, got):
            failures += 1
            print(f"FAIL prep {fam} {f} {ih}x{iw}: {int((ref != got).sum())} values differ")

print(f"{'FAIL' if failures else 'OK'}: {failures} mismatches")
sys.exit(1 if failures else 0)
