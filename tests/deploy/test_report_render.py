#!/usr/bin/env python3
"""The demo's HTML report renders in a real browser: deploy/report.py turns a synthetic
result (a plain grey image made here, two boxes of known classes at known places) into
report.html; headless Chromium screenshots it; the PNG (decoded here with zlib, no
imaging library) must be non-blank (more than 10 distinct colours) and must show both
box colours of the report's palette, which only the SVG overlay draws (the image is grey).

    test_report_render.py [REPORT.html]   (with an argument: only render that page and
                                           check it is non-blank; used by the demo test)
Skips (77) when chromium is not installed."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

SRC = os.environ.get("BD_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def chromium():
    for c in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c)
        if p:
            return p
    return None


def write_png(path, w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def read_png(path):
    """8-bit RGB/RGBA, non-interlaced PNG -> (w, h, channels, pixel bytes)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, [], None
    while pos < len(data):
        n, t = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            w, h, depth, ctype, _, _, inter = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and inter == 0, "unsupported PNG %d/%d/%d" % (depth, ctype, inter)
            ch = 3 if ctype == 2 else 4
        elif t == b"IDAT":
            idat.append(body)
        pos += 12 + n
    raw = zlib.decompress(b"".join(idat))
    stride = w * ch
    out = bytearray(h * stride)
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(ch, stride):
                line[i] = (line[i] + line[i - ch]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - ch] if i >= ch else 0
                b = prev[i]
                c = prev[i - ch] if i >= ch else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return w, h, ch, bytes(out)


def screenshot(html, png):
    exe = chromium()
    prof = tempfile.mkdtemp(prefix="bd-chromium-")
    try:
        p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                            "--user-data-dir=" + prof, "--screenshot=" + png, "--window-size=1200,900",
                            "file://" + os.path.abspath(html)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    finally:
        shutil.rmtree(prof, ignore_errors=True)
    if not os.path.exists(png):
        print(p.stdout.decode("utf-8", "replace")[-2000:])
        raise SystemExit("FAIL: chromium wrote no screenshot")


def colours(png):
    w, h, ch, px = read_png(png)
    seen = set()
    for i in range(0, len(px), ch):
        seen.add(px[i:i + 3])
    return w, h, seen


def near(seen, rgb, tol=10):
    return any(all(abs(c[k] - rgb[k]) <= tol for k in range(3)) for c in seen)


def main():
    if not chromium():
        print("SKIP: chromium not installed (deploy/install-deps.sh installs it)")
        return 77
    tmp = tempfile.mkdtemp(prefix="bd-report-render-")
    try:
        if len(sys.argv) > 1:
            png = os.path.join(tmp, "shot.png")
            screenshot(sys.argv[1], png)
            w, h, seen = colours(png)
            print("%s: %dx%d screenshot, %d colours" % (sys.argv[1], w, h, len(seen)))
            return 0 if len(seen) > 10 else 1
        imgs = os.path.join(tmp, "www")
        os.makedirs(imgs)
        write_png(os.path.join(imgs, "grey-0001.png"), 400, 300, (128, 128, 128))
        res = os.path.join(tmp, "results.jsonl")
        with open(res, "w") as f:
            f.write(json.dumps({"image": "grey-0001.png", "width": 400, "height": 300, "detections": [
                {"class": 0, "label": "person", "score": 0.9, "box": [40, 60, 200, 280]},
                {"class": 1, "label": "bicycle", "score": 0.8, "box": [220, 40, 380, 200]}]}) + "\n")
            f.write(json.dumps({"image": "missing-0002.jpg", "error": "fetch: HTTP 404"}) + "\n")
        out = os.path.join(tmp, "report.html")
        subprocess.run([sys.executable, os.path.join(SRC, "deploy", "report.py"), "html", "--results", res,
                        "--images-dir", imgs, "-o", out], check=True, timeout=60)
        page = open(out, encoding="utf-8").read()
        for want in ("person", "bicycle", "HTTP 404", "<svg", "report_files/"):
            if want not in page:
                print("FAIL: report lacks %r" % want)
                return 1
        png = os.path.join(tmp, "shot.png")
        screenshot(out, png)
        w, h, seen = colours(png)
        print("screenshot %dx%d, %d distinct colours" % (w, h, len(seen)))
        if len(seen) <= 10:
            print("FAIL: blank screenshot")
            return 1
        # person = palette[0] #e6194b, bicycle = palette[1] #3cb44b (deploy/report.py PALETTE)
        for name, rgb in (("person box", (0xe6, 0x19, 0x4b)), ("bicycle box", (0x3c, 0xb4, 0x4b)),
                          ("grey image", (128, 128, 128))):
            if not near(seen, rgb):
                print("FAIL: no %s colour %s in the screenshot" % (name, rgb))
                return 1
        print("report renders: boxes and image visible")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
