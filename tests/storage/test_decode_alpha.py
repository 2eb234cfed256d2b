#!/usr/bin/env python3
"""PNGs with alpha or tRNS decode to the pixels OpenCV's cv2.imread(IMREAD_COLOR) gives
(the YOLOX reference pipeline): alpha dropped, tRNS ignored, palette colours kept,
never composited. PIL's convert('RGB') (DAMO-YOLO) is meant to agree (it drops alpha
and takes a palette entry's colour) but is not checked here: the test machine's
python3 has no PIL.

The PNGs are written here byte by byte (zlib + struct), so neither decoder's writer is
involved. 16-bit samples: truncated (v >> 8) as OpenCV does, checked exactly against
both cv2 and v >> 8.

usage: test_decode_alpha.py DECODE_DUMP   (exit 77 when cv2 is missing)"""
import os
import struct
import subprocess
import sys
import tempfile
import zlib

try:
    import cv2
    import numpy as np
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

DUMP = sys.argv[1]


def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def png(w, h, ctype, depth, samples, plte=None, trns=None, interlace=0):
    """samples: h rows of w*channels ints (palette: indices)."""
    ch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    assert interlace == 0
    raw = b""
    for row in samples:
        assert len(row) == w * ch
        if depth == 16:
            b = b"".join(struct.pack(">H", v) for v in row)
        elif depth == 8:
            b = bytes(row)
        else:
            bits = "".join(format(v, f"0{depth}b") for v in row)
            bits += "0" * (-len(bits) % 8)
            b = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
        raw += b"\0" + b
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", bytes(c for rgb in plte for c in rgb))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def ours(path, tmp):
    ppm = os.path.join(tmp, "out.ppm")
    r = subprocess.run([DUMP, path, ppm], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL {path}: decode_dump: {r.stderr.strip()}")
    data = open(ppm, "rb").read()
    head = data.split(b"\n", 3)
    w, h = map(int, head[1].split())
    return np.frombuffer(head[3], np.uint8).reshape(h, w, 3)


def cases():
    a = [0, 1, 51, 128, 254, 255]
    # RGBA 8: colours under every alpha, including fully transparent
    rgba = [[v for i, al in enumerate(a) for v in (200 - i * 30, 17 * i, 255 - i, al)]]
    yield "rgba8", png(6, 1, 6, 8, rgba), None
    rgba16 = [[v for i, al in enumerate(a) for v in (1000 * i + 77, 65535 - 999 * i, 257 * i + 128, al * 257)]]
    yield "rgba16", png(6, 1, 6, 16, rgba16), rgba16
    ga = [[v for i, al in enumerate(a) for v in (40 * i + 3, al)]]
    yield "ga8", png(6, 1, 4, 8, ga), None
    ga16 = [[v for i, al in enumerate(a) for v in (12000 * i + 129, al * 257)]]
    yield "ga16", png(6, 1, 4, 16, ga16), ga16
    pal = [(255, 0, 0), (0, 255, 0), (10, 20, 30), (250, 240, 230)]
    idx = [[0, 1, 2, 3, 1], [3, 2, 1, 0, 0]]
    yield "pal8_trns", png(5, 2, 3, 8, idx, plte=pal, trns=bytes([0, 128, 255])), None
    yield "pal4_trns", png(5, 2, 3, 4, idx, plte=pal, trns=bytes([0, 0, 0, 7])), None
    yield "pal2_trns", png(5, 2, 3, 2, idx, plte=pal, trns=bytes([90])), None
    # tRNS colour keys on gray and RGB: the keyed pixels keep their colour
    yield "gray8_trns", png(4, 1, 0, 8, [[0, 100, 200, 100]], trns=struct.pack(">H", 100)), None
    yield "gray1_trns", png(9, 1, 0, 1, [[1, 0, 1, 1, 0, 0, 1, 0, 1]], trns=struct.pack(">H", 1)), None
    yield "rgb8_trns", png(3, 1, 2, 8, [[1, 2, 3, 9, 8, 7, 1, 2, 3]], trns=struct.pack(">HHH", 1, 2, 3)), None
    g16 = [[0, 300, 65535]]
    yield "gray16_trns", png(3, 1, 0, 16, g16, trns=struct.pack(">H", 300)), g16


def main():
    bad = 0
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, data, raw16 in cases():
            path = os.path.join(tmp, name + ".png")
            open(path, "wb").write(data)
            got = ours(path, tmp)
            ref = cv2.imread(path, cv2.IMREAD_COLOR)
            if ref is None:
                raise SystemExit(f"FAIL {name}: cv2 cannot read it")
            ref = ref[:, :, ::-1]
            n += 1
            if got.shape != ref.shape:
                print(f"FAIL {name}: {got.shape} vs cv2 {ref.shape}")
                bad += 1
                continue
            d = np.abs(got.astype(int) - ref.astype(int)).max()
            ok = d == 0
            if raw16 is not None:
                # exact: v >> 8 of the colour samples, alpha dropped, gray to R=G=B
                v = np.array(raw16, dtype=np.int64)
                ch = v.shape[1] // got.shape[1]
                v = v.reshape(v.shape[0], got.shape[1], ch)
                col = v[:, :, :3] if ch >= 3 else np.repeat(v[:, :, :1], 3, axis=2)
                exp = col >> 8
                ok = ok and np.array_equal(got, exp.astype(np.uint8))
            print(f"{'ok  ' if ok else 'FAIL'} {name}: max |ours - cv2| = {d}")
            if not ok:
                print("  ours:", got.reshape(-1, 3).tolist())
                print("  cv2: ", ref.reshape(-1, 3).tolist())
                bad += 1
    print(f"{n - bad} of {n} match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
