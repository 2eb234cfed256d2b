#!/usr/bin/env python3
"""JPEGs decode to the pixels OpenCV's cv2.imread(IMREAD_COLOR) gives (libjpeg-turbo
under both), for the files where the two used to differ:
- complete files with a harmless defect (no EOI, junk before EOI or before SOS, JFIF
  2.01) decode, identically; a file cut inside its scan is still an error;
- Adobe CMYK and YCCK convert to RGB bit for bit as imread does;
- 12-bit and lossless frames are "unsupported" errors;
- EXIF orientation as lenient as imread's: an IFD0 entry count running past the
  segment, an orientation count other than 1, "Exif\\0" with any sixth byte.

The files are made here from the shipped photos (BD_TEST_DATA) by cv2.imencode and
byte surgery.

usage: test_decode_jpeg_compat.py DECODE_DUMP   (exit 77 when cv2 is missing)"""
import os
import struct
import subprocess
import sys
import tempfile

try:
    import cv2
    import numpy as np
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

DUMP = sys.argv[1]
DATA = os.environ.get("BD_TEST_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
IMAGES = os.path.join(DATA, "images")
TMP = tempfile.mkdtemp(prefix="bd_jpeg_compat_")
failures = []


def write(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def ours(path):
    """(pixels as BGR, None) or (None, error message)"""
    ppm = os.path.join(TMP, "out.ppm")
    r = subprocess.run([DUMP, path, ppm], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    head = open(ppm, "rb").read().split(b"\n", 3)
    w, h = map(int, head[1].split())
    return np.frombuffer(head[3], np.uint8).reshape(h, w, 3)[:, :, ::-1], None


def check_same(name, data):
    path = write(name, data)
    got, msg = ours(path)
    ref = cv2.imread(path, cv2.IMREAD_COLOR)
    if ref is None:
        failures.append(f"{name}: cv2.imread cannot read it (test file broken)")
    elif got is None:
        failures.append(f"{name}: rejected: {msg}")
    elif got.shape != ref.shape:
        failures.append(f"{name}: shape {got.shape} != imread's {ref.shape}")
    elif not np.array_equal(got, ref):
        d = np.abs(got.astype(int) - ref)
        failures.append(f"{name}: pixels differ from imread's (max {d.max()}, {(d > 0).sum()} samples)")
    else:
        print(f"ok   {name}")


def check_error(name, data, want):
    got, msg = ours(write(name, data))
    if got is not None:
        failures.append(f"{name}: decoded, expected an error containing {want!r}")
    elif want not in msg:
        failures.append(f"{name}: error {msg!r} does not contain {want!r}")
    else:
        print(f"ok   {name}: {msg}")


def find(data, pat, start=0):
    i = data.find(pat, start)
    assert i >= 0, pat
    return i


def segment(marker, payload):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def exif_app1(orient, be=False, count=1, declared=None, header=b"Exif\0\0"):
    """APP1 with a TIFF header and an IFD0 holding one SHORT orientation entry;
    declared: the IFD's entry count (default 1)."""
    e = ">" if be else "<"
    tiff = (b"MM" if be else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1 if declared is None else declared)
    tiff += struct.pack(e + "HHI", 0x0112, 3, count) + struct.pack(e + "HH", orient, 0)
    return segment(0xE1, header + tiff)


def main():
    dog = cv2.imread(os.path.join(IMAGES, "dog.jpg"), cv2.IMREAD_COLOR)
    if dog is None:
        print(f"FAIL: cannot read {IMAGES}/dog.jpg (BD_TEST_DATA)")
        return 1
    small = cv2.resize(dog, (200, 120), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpg = enc.tobytes()
    assert jpg[:2] == b"\xff\xd8" and jpg[-2:] == b"\xff\xd9" and jpg[6:11] == b"JFIF\0"
    check_same("control.jpg", jpg)

    # 1. complete files libjpeg only warns about
    check_same("no_eoi.jpg", jpg[:-2])
    check_same("junk_before_eoi.jpg", jpg[:-2] + bytes(range(1, 101)) + b"\xff\xd9")
    check_same("no_eoi_junk.jpg", jpg[:-2] + bytes(range(1, 101)))
    sos = find(jpg, b"\xff\xda")
    check_same("junk_before_sos.jpg", jpg[:sos] + b"\x00\x11\x22" + jpg[sos:])
    check_same("jfif_2_01.jpg", jpg[:11] + b"\x02\x01" + jpg[13:])
    # ... and files that are cut short stay errors
    check_error("cut_mid_scan.jpg", jpg[: sos + (len(jpg) - sos) * 6 // 10], "corrupt JPEG")
    check_error("cut_mid_scan_eoi.jpg", jpg[: sos + (len(jpg) - sos) * 6 // 10] + b"\xff\xd9",
                "corrupt JPEG")
    ok, penc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    prog = penc.tobytes()
    second_sos = find(prog, b"\xff\xda", find(prog, b"\xff\xda") + 2)
    check_error("progressive_cut_between_scans.jpg", prog[:second_sos], "corrupt JPEG")

    # 2. CMYK / YCCK (Adobe): the shipped YCCK file, and the same data as Adobe CMYK
    # (transform byte 2 -> 0: libjpeg then takes the components as CMYK as they are)
    ycck = open(os.path.join(IMAGES, "bad", "ok_cmyk_scream.jpg"), "rb").read()
    check_same("ycck_adobe.jpg", ycck)
    t = find(ycck, b"Adobe") + 11
    assert ycck[t] == 2
    check_same("cmyk_adobe.jpg", ycck[:t] + b"\x00" + ycck[t + 1:])

    # 3. frames libjpeg (8-bit) cannot decode
    sof = find(jpg, b"\xff\xc0")
    assert jpg[sof + 4] == 8
    check_error("precision12.jpg", jpg[: sof + 4] + b"\x0c" + jpg[sof + 5:],
                "unsupported JPEG: 12-bit samples")
    check_error("lossless_sof3.jpg", jpg[: sof + 1] + b"\xc3" + jpg[sof + 2:],
                "unsupported JPEG: lossless (SOF3)")

    # 4. EXIF orientation 6 (a transpose: the shape shows it), written leniently
    def with_exif(app1):
        return jpg[:2] + app1 + jpg[2:]

    check_same("exif_o6_control.jpg", with_exif(exif_app1(6)))
    check_same("exif_o6_count_past_segment.jpg", with_exif(exif_app1(6, declared=40)))
    check_same("exif_o6_count_past_segment_be.jpg", with_exif(exif_app1(6, be=True, declared=7)))
    check_same("exif_o6_value_count2.jpg", with_exif(exif_app1(6, count=2)))
    check_same("exif_o6_header_byte6.jpg", with_exif(exif_app1(6, header=b"Exif\0\xff")))

    if failures:
        for f in failures:
            print("FAIL " + f)
        return 1
    return 0


if __name__ == "__main__":
    rc = main()
    if rc == 0:
        for n in os.listdir(TMP):
            os.remove(os.path.join(TMP, n))
        os.rmdir(TMP)
    sys.exit(rc)
