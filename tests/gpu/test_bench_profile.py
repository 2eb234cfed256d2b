#!/usr/bin/env python3
"""`batchdet bench --profile` end to end without a GPU: argv[1] is batchdet_emu (the CLI
linked against the host emulation of the CUDA device, tests/gpu/cuda_emu.c, whose clock
advances 1 us per launch), the model the shared yolox_nano at batch 1.

Checks: --json gives one JSON object whose "profile" has one row per action (steps
0..n-1 once each), sorted by time, every Conv with how it runs and its GFLOP, the
percentages and the summary adding up to the sum of the medians, and, the emulated clock
being exact, the whole-network time equal to that sum; the text table has exactly
--profile-top rows and the closing lines; --profile is refused with a clear message on
the cpu device (by $BATCHDET, the real CLI, too), with --end-to-end, and a bad
--profile-top. Exit 1 on any failure."""
import json
import os
import subprocess
import sys

EMU = sys.argv[1]
REAL = os.environ.get("BATCHDET")
DATA = os.environ.get("BD_TEST_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))
MODEL = os.path.join(DATA, "models", "yolox_nano.onnx")
CATEGORIES = {"conversions", "output copies", "zeroing", "head/FP32 ops", "concat", "resize", "maxpool",
              "element-wise/map", "conv direct", "conv direct padded"}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def bench(*args, exe=EMU, timeout=240):
    p = subprocess.run([exe, "bench", "--model", MODEL, *args], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def near(a, b, tol):
    return abs(a - b) <= tol


# 1. JSON: the rows and the summary.
rc, out, err = bench("--device", "cuda", "--batch", "1", "--iters", "2", "--warmup", "0",
                     "--profile", "--json")
check(rc == 0, f"bench --profile --json exits 0 (rc {rc}, {err.strip()[-300:]})")
lines = out.strip().splitlines()
check(len(lines) == 1, f"--json prints one line ({len(lines)})")
try:
    b = json.loads(lines[-1]) if lines else {}
except ValueError as e:
    b = {}
    check(False, f"--json output parses: {e}")
# The emulation refuses stream capture: bench must say the batches ran op by op.
check(b.get("graph_captured") is False and "Capture" in b.get("graph_error", ""),
      f"graph status reported ({b.get('graph_captured')}, {b.get('graph_error')!r})")
p = b.get("profile", {})
rows, summary = p.get("rows", []), p.get("summary", [])
n = p.get("n_actions", -1)
check(n > 50 and len(rows) == n, f"one row per action: {len(rows)} rows, {n} actions")
check(p.get("reps") == 2, f"reps = --iters ({p.get('reps')})")
check(sorted(r["step"] for r in rows) == list(range(n)), "steps 0..n-1, each once")
us = [r["us"] for r in rows]
check(us == sorted(us, reverse=True), "rows sorted by median time, longest first")
check(all(near(r["us_replay"], r["us"], 1e-3) for r in rows),
      "each action's replayed time: its launches, as its median (the emulated clock)")
check(near(p.get("sum_replay_ms", -1), sum(r["us_replay"] for r in rows) / 1e3, 1e-4),
      "replayed rows add up to sum_replay_ms")
sum_ms = p.get("sum_ms", -1)
check(near(sum(us) / 1e3, sum_ms, 1e-4), f"rows add up to sum_ms ({sum(us) / 1e3} vs {sum_ms})")
check(near(sum(r["pct"] for r in rows), 100, 0.1), "percentages add up to 100")
convs = [r for r in rows if r["op"] == "Conv"]
check(len(convs) > 50, f"the convs are there ({len(convs)})")
check(len({r["name"] for r in convs}) == len(convs), "each conv once")
check(all(r["how"] in ("direct", "direct padded") and r["conv_algo"] == -1 for r in convs),
      "convs say how they run (direct kernel without cuDNN)")
check(any(r["how"] == "direct padded" for r in convs), "channel-padded convs say so")
check(all(r["gflop"] > 0 and r["bytes"] > 0 for r in convs), "convs have GFLOP and bytes")
check(all(r["gflop"] == 0 and r["conv_algo"] == -3 for r in rows if r["op"] != "Conv"),
      "only convs count FLOPs")
check(all(near(r["tflop_s"], r["gflop"] / (r["us"] * 1e-6) / 1e3, 1e-3 + 1e-3 * r["tflop_s"])
          for r in convs if r["us"] > 0), "TFLOP/s = GFLOP / time")
reshapes = [r for r in rows if r["op"] == "Reshape"]
check(len(reshapes) == 3 and all(r["bytes"] == 0 and r["us"] == 0 for r in reshapes),
      "the head's Reshapes are views: rows without work")
check(all(len(r["shape"]) >= 1 and r["shape"][0] == 1 for r in rows if r["op"] == "Conv"),
      "output shapes at batch 1")
cats = {s["category"] for s in summary}
check(cats <= CATEGORIES and "conv direct" in cats, f"summary categories {sorted(cats)}")
check(sum(s["count"] for s in summary) == n, "summary counts every action once")
check(near(sum(s["us"] for s in summary) / 1e3, sum_ms, 1e-4), "summary adds up to sum_ms")
check(p.get("graph_ms") is not None and near(p["graph_ms"], sum_ms, 1e-4),
      f"whole-network time = sum of the actions on the exact emulated clock "
      f"({p.get('graph_ms')} vs {sum_ms})")
check(b.get("gpu_p50_ms") is not None and b.get("ms_per_image", 0) > 0, "the bench fields stay")

# 2. Text: the top K table and the closing lines.
rc, out, err = bench("--device", "cuda", "--batch", "1", "--iters", "1", "--warmup", "0",
                     "--profile-top", "5")
check(rc == 0, f"bench --profile-top 5 exits 0 (rc {rc}, {err.strip()[-300:]})")
text = out.splitlines()
try:
    h, k = text.index(next(l for l in text if l.startswith("rank "))), \
        text.index(next(l for l in text if l.startswith("by kind")))
    table = text[h + 1:k]
except StopIteration:
    table = []
check([int(l.split()[0]) for l in table] == [1, 2, 3, 4, 5], f"top 5 rows ({len(table)})")
check(any(l.startswith("kind conv direct") for l in text), "summary lists the convs")
check(any(l.startswith("sum of medians") for l in text) and
      any(l.startswith("sum of replays") for l in text) and
      any(l.startswith("graph replay") for l in text), "sum vs graph lines")

# 3. Refusals.
for exe in [EMU] + ([REAL] if REAL and os.path.exists(REAL) else []):
    rc, out, err = bench("--device", "cpu", "--profile", exe=exe)
    check(rc == 2 and "--profile needs a cuda device" in err,
          f"{os.path.basename(exe)}: --profile on cpu refused (rc {rc}, {err.strip()[:160]})")
rc, _, err = bench("--device", "cuda", "--profile", "--end-to-end")
check(rc == 2 and "--end-to-end" in err, f"--profile --end-to-end refused (rc {rc})")
rc, _, err = bench("--device", "cuda", "--profile-top", "-1")
check(rc == 2 and "--profile-top" in err, f"bad --profile-top refused (rc {rc})")
rc, out, _ = bench("--help")
check(rc == 0 and "--profile-top" in out, "--help documents --profile")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
