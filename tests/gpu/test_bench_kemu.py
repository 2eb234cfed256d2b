#!/usr/bin/env python3
"""`batchdet bench --device cuda` end to end over the real kernels on the host: argv[1] is
batchdet_kemu (the CLI linked against tests/gpu/kemu.cmake's kernel emulation, where
stream capture records and graph launches replay), argv[2] the tiny damoyolo-contract
model, argv[3] the shared yolox_nano.onnx.

Checks, each through --json: the network bench and the end-to-end bench (pre-processing,
network, decode and NMS on the device) say their batches ran as captured CUDA graphs,
with a positive rate; yolox_nano's network bench does too (the letterbox family, its
Focus stem, concats written in place); the profile's per-action replayed times equal its
uncaptured ones on the emulated clock; with every conv on our kernel yolox_nano's CSP
pairs and head convs run as twin convs (one launch each); the pool bench over two instances on the one
emulated GPU fails no batch and accounts for every batch it timed. Exit 1 on any
failure."""
import json
import os
import subprocess
import sys

EXE, TINY, YOLOX = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def bench(model, *args, timeout=600):
    p = subprocess.run([EXE, "bench", "--model", model, "--json", *args], capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        return None
    return json.loads(p.stdout)


for name, model, size in (("network", TINY, ["--batch", "2", "--iters", "2", "--warmup", "1"]),
                          ("end-to-end", TINY, ["--batch", "2", "--iters", "2", "--warmup", "1",
                                                "--end-to-end"]),
                          ("yolox_nano network", YOLOX, ["--batch", "1", "--iters", "1",
                                                         "--warmup", "0"])):
    r = bench(model, "--device", "cuda", *size)
    check(r is not None, f"{name}: bench ran")
    if r is None:
        continue
    check(r.get("graph_captured") is True, f"{name}: captured graphs ({r.get('graph_error')})")
    check("as a DAG: longest chain" in (r.get("graph_shape") or ""),
          f"{name}: graph with branches ({r.get('graph_shape')})")
    check(r.get("img_s", 0) > 0, f"{name}: img/s {r.get('img_s')}")
    if name == "end-to-end":  # the pass with two batches in flight (begin/end) ran
        check((r.get("pipelined_img_s") or 0) > 0 and r.get("inflight") == 2,
              f"{name}: pipelined img/s {r.get('pipelined_img_s')}, {r.get('inflight')} in flight")

# The profile's replayed column over the real capture: each action captured alone and
# replayed costs its launches on the emulated clock, as its uncaptured median does.
r = bench(TINY, "--device", "cuda", "--batch", "2", "--iters", "2", "--warmup", "0", "--profile")
check(r is not None, "profile: bench ran")
if r is not None:
    rows = r.get("profile", {}).get("rows", [])
    check(len(rows) > 10 and all(abs(x["us_replay"] - x["us"]) < 1e-3 for x in rows),
          f"profile: replayed time = median for each of {len(rows)} actions")
    check(sum(x["us_replay"] for x in rows) > 0, "profile: replayed times measured")

# Twin convs on yolox_nano, all convs on our kernel: its CSP layers' 1x1 conv1/conv2 pairs
# (8, and the split pair of each of its 2 upsampled Concats) and its head's box +
# objectness convs (3 ragged pairs) each one launch in the profile, the second's row
# empty. (The other BATCHDET_CUDA_TWINS modes' pair counts: test_cuda_emu_mma's
# test_twin_modes, on the plan alone; each run here is ~8 yolox_nano runs over the kernels.)
for twins, want in (("1", 13),):
    p = subprocess.run([EXE, "bench", "--model", YOLOX, "--json", "--device", "cuda", "--batch", "1",
                        "--iters", "1", "--warmup", "0", "--profile"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "BATCHDET_CUDA_CONV": "mma",
                                         "BATCHDET_CUDA_TWINS": twins})
    check(p.returncode == 0, f"twins={twins}: profile ran ({p.stderr.strip()[-200:]})")
    if p.returncode != 0:
        continue
    rows = json.loads(p.stdout).get("profile", {}).get("rows", [])
    firsts = [x for x in rows if x.get("how", "").endswith(" twins")]
    seconds = [x for x in rows if x.get("how") == "in its twin's launch"]
    check(len(firsts) == want and len(seconds) == want,
          f"twins={twins}: {len(firsts)} launches for {len(seconds)} twin convs (want {want})")
    check(all(x.get("gflop") == 0 for x in seconds), f"twins={twins}: the seconds' rows count no work")

r = bench(TINY, "--pool", "--device", "cuda", "--instances-per-gpu", "2", "--batch", "2",
          "--iters", "4", "--warmup", "1")
check(r is not None, "pool: bench ran")
if r is not None:
    inst = r.get("instances", [])
    check(len(inst) == 2, f"pool: two instances ({len(inst)})")
    check(r.get("failed_batches") == 0, f"pool: no failed batch ({r.get('failed_batches')})")
    batches = sum(i.get("batches", 0) for i in inst)
    check(batches >= 4, f"pool: every timed batch done ({batches} >= 4)")
    check(sum(i.get("images", 0) for i in inst) == 2 * batches, "pool: images = 2 x batches")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
