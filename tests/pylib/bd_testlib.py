"""Helpers shared by the Python tests of several folders (imported after
sys.path.insert(0, <tests>/pylib)): tiny PNGs that decode to many pixels, a run's
peak memory, and a run with stderr on a terminal."""
import os
import struct
import subprocess
import time
import zlib


def png_chunk(t, d):
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def big_png(path, w, h):
    """A w x h gray PNG of zeros: a few KB on disk, w * h * 3 bytes once decoded to RGB."""
    raw = zlib.compress(b"".join(b"\0" + bytes(w) for _ in range(h)), 9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b""))


def run_rss(argv, out_path):
    """Runs argv with stdout to out_path; returns (exit code, stdout text, peak RSS in MiB).
    ASan's quarantine is turned off: freed memory would otherwise stay resident."""
    e = dict(os.environ)
    e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").strip(":")
    with open(out_path, "w+") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, env=e)
        _, status, ru = os.wait4(p.pid, 0)
        out.seek(0)
        return os.waitstatus_to_exitcode(status), out.read(), ru.ru_maxrss / 1024.0


def run_tty(argv, timeout=120):
    """argv with stdout on a pipe and stderr on a pseudo-terminal (progress lines are
    drawn only on terminals): (returncode, stdout text, what the terminal received)."""
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    got = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:   # EIO once the child closed its side
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    out = p.communicate(timeout=timeout)[0]
    return p.returncode, out.decode("utf-8", "replace"), got.decode("utf-8", "replace")
