#!/usr/bin/env python3
"""Decoding limits and cv2.imread parity at the edges:

- bd_decode_file sniffs a file's first bytes before reading it, and refuses a regular
  file over the size limit before reading anything: `batchdet detect` on a 200 MB file
  of zeros named .jpg, or a 300 MB one, stays small (peak RSS);
- other image formats (BMP, TIFF, WebP, ...) are named in the message, never "not an
  image";
- PNG has no 65535 px per-side limit (that is JPEG's): 70000x2 decodes as imread does;
  over libpng's default 1000000, which imread keeps, it is refused as imread refuses it;
- a PNG whose zlib stream carries 1 GiB of zeros after the pixels is refused before
  anything is inflated, and a bigger image carrying less than the IDAT bound allows is
  refused after its pixels, before png_read_end inflates the rest; a little too much
  data (what imread accepts with a warning), stored blocks, 1-byte IDAT chunks and
  Adam7 still decode;
- 16-bit PNG samples are truncated (v >> 8), bit-identical with imread.

PNGs are written here byte by byte (zlib + struct). usage: test_decode_limits.py
DECODE_DUMP (exit 77 without cv2/numpy; BATCHDET and BD_TEST_DATA from the
environment)."""
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import bd_testlib  # noqa: E402

try:
    import cv2
    import numpy as np
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

DUMP = sys.argv[1]
BD = os.environ["BATCHDET"]
MODEL = os.path.join(os.environ["BD_TEST_DATA"], "models", "yolox_nano.onnx")
tmp = tempfile.mkdtemp(prefix="bd_limits_")
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


chunk = bd_testlib.png_chunk


def png_file(name, w, h, ctype, depth, z, interlace=0, split=None):
    """z: the zlib stream; split: IDAT chunk size (None: one chunk)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    step = split or max(len(z), 1)
    idat = b"".join(chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))
    return path


def rows(a, depth):
    """a: h x (w*channels) samples -> filtered (filter 0) rows."""
    dt = ">u2" if depth == 16 else np.uint8
    return b"".join(b"\0" + r.astype(dt).tobytes() for r in a)


def adam7(a, ch):
    """h x w x ch uint8 -> the seven passes' filtered rows."""
    out = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = a[y0::dy, x0::dx]
        if sub.size:
            out += rows(sub.reshape(sub.shape[0], -1), 8)
    return out


def ours(path):
    """(pixels RGB or None, stderr, seconds)"""
    ppm = os.path.join(tmp, "out.ppm")
    t0 = time.monotonic()
    r = subprocess.run([DUMP, path, ppm], capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        return None, r.stderr.strip(), dt
    data = open(ppm, "rb").read()
    head = data.split(b"\n", 3)
    w, h = map(int, head[1].split())
    return np.frombuffer(head[3], np.uint8).reshape(h, w, 3), "", dt


def same_as_imread(name, path):
    got, err, _ = ours(path)
    ref = cv2.imread(path, cv2.IMREAD_COLOR)
    ok = got is not None and ref is not None and got.shape == ref.shape and \
        np.array_equal(got, ref[:, :, ::-1])
    check(ok, f"{name}: decodes bit-identical with imread"
              f" ({err or (got.shape if got is not None else '')})")


def run_rss(*args):
    return bd_testlib.run_rss([BD, *args], os.path.join(tmp, "rss.out"))


rng = np.random.default_rng(7)

# 1. memory: nothing past the first bytes of an unknown format is read, and a regular
# file over the limit is refused from fstat. The files are sparse (no disk, fast).
small = os.path.join(tmp, "small_zeros.jpg")
with open(small, "wb") as f:
    f.truncate(4096)
rc, out, base = run_rss("detect", "--model", MODEL, small)
check("not an image" in out, f"baseline: 4 KB of zeros: {out.strip()} ({base:.0f} MiB)")
for mb, want in ((200, "not an image (unknown format)"), (300, "file larger than 268435456 bytes")):
    path = os.path.join(tmp, f"zeros_{mb}MB.jpg")
    with open(path, "wb") as f:
        f.truncate(mb << 20)
    rc, out, rss = run_rss("detect", "--model", MODEL, path)
    check(want in out, f"{mb} MB of zeros named .jpg: {out.strip()[-90:]}")
    check(rss < base + 48, f"{mb} MB of zeros: peak RSS {rss:.0f} MiB, baseline {base:.0f} MiB")
    os.unlink(path)

# 2. other formats are named; unknown bytes are still "not an image"
img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
for ext, name in ((".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WebP")):
    okw, enc = cv2.imencode(ext, img)
    if not okw:
        print(f"skip {name}: cv2 cannot write it")
        continue
    path = os.path.join(tmp, "x" + ext + ".jpg")
    open(path, "wb").write(enc.tobytes())
    _, err, _ = ours(path)
    check(f"unsupported image format ({name}): only JPEG and PNG are decoded" in err,
          f"{name} named .jpg: {err}")
path = os.path.join(tmp, "text.jpg")
open(path, "wb").write(b"hello, not an image\n" * 10)
_, err, _ = ours(path)
check(err.endswith("not an image (unknown format)"), f"text named .jpg: {err}")

# 3. PNG sides past JPEG's 65535: imread decodes them; past libpng's 1000000 neither does
for w, h in ((70000, 2), (1, 70000)):
    a = np.resize(rng.integers(0, 256, 3 * 97, dtype=np.uint8), (h, w * 3))
    same_as_imread(f"{w}x{h} PNG", png_file(f"dim_{w}x{h}.png", w, h, 2, 8, zlib.compress(rows(a, 8))))
path = png_file("dim_1000001x1.png", 1000001, 1, 0, 8, zlib.compress(b"\0" * 1000002))
_, err, _ = ours(path)
check("over the 1000000 px per-side limit" in err and cv2.imread(path) is None,
      f"1000001x1 PNG refused, as imread does: {err}")

# 4. decompression bombs
W, H = 416, 312
pix = rng.integers(0, 256, (H, W * 3), dtype=np.uint8)
raw = rows(pix, 8)


def with_zeros(raw, n, level=6):
    co = zlib.compressobj(level)
    z = [co.compress(raw)]
    zero = b"\0" * (16 << 20)
    for _ in range(n // len(zero)):
        z.append(co.compress(zero))
    z.append(co.flush())
    return b"".join(z)


path = png_file("bomb_1GiB.png", W, H, 2, 8, with_zeros(raw, 1 << 30))
got, err, dt = ours(path)
check(got is None and "of IDAT data for a 0.4 MB image (a decompression bomb?)" in err,
      f"{W}x{H} PNG + 1 GiB of zeros ({os.path.getsize(path) >> 10} KiB): {err} ({dt:.2f} s)")
# within the IDAT bound (2000x2000 gray: 4 MB raw, 256 MiB of zeros -> 0.25 MB more),
# refused once the pixels are read
g = np.resize(rng.integers(0, 256, 1009, dtype=np.uint8), (2000, 2000))
path = png_file("bomb_after.png", 2000, 2000, 0, 8, with_zeros(rows(g, 8), 256 << 20))
got, err, dt = ours(path)
check(got is None and "of compressed data after the image's pixels" in err,
      f"2000x2000 PNG + 256 MiB of zeros: {err} ({dt:.2f} s)")
# what legitimate or near-legitimate streams look like still decodes
same_as_imread("too much data (5000 zero bytes after the pixels)",
               png_file("too_much.png", W, H, 2, 8, zlib.compress(raw + b"\0" * 5000)))
same_as_imread("stored blocks (IDAT > raw)", png_file("stored.png", W, H, 2, 8, zlib.compress(raw, 0)))
same_as_imread("1-byte IDAT chunks",
               png_file("idat1.png", 61, 37, 2, 8, zlib.compress(rows(pix[:37, :183], 8)), split=1))
a7 = rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)
same_as_imread("Adam7, stored blocks",
               png_file("adam7.png", 61, 37, 2, 8, zlib.compress(adam7(a7, 3), 0), interlace=1))

# 5. 16-bit samples: imread truncates (v >> 8)
v16 = rng.integers(0, 65536, (29, 31 * 3), dtype=np.uint16)
same_as_imread("16-bit RGB", png_file("rgb16.png", 31, 29, 2, 16, zlib.compress(rows(v16, 16))))
v16g = rng.integers(0, 65536, (29, 31 * 2), dtype=np.uint16)
same_as_imread("16-bit gray+alpha", png_file("ga16.png", 31, 29, 4, 16, zlib.compress(rows(v16g, 16))))

print("FAILED: %d" % len(fails) if fails else "all passed")
sys.exit(1 if fails else 0)
