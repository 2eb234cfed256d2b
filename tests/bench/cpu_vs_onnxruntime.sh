#!/usr/bin/env bash
# Benchmark (not a test): batchdet's cpu backend against onnxruntime-node on the same
# model, same thread count, same machine, same run. Batch 1 (the shipped ONNX files have
# a fixed batch), network only, random uint8-valued inputs for both.
#
# usage: tests/bench/cpu_vs_onnxruntime.sh [THREADS] [ITERS] [MODEL]
#   env BATCHDET=path/to/batchdet (default: build/cli/batchdet; use a Release build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T="${1:-$(nproc)}"
ITERS="${2:-30}"
MODEL="${3:-$ROOT/../shared/data/models/yolox_nano.onnx}"
BD="${BATCHDET:-$ROOT/build/cli/batchdet}"
NODE_MODULES="$ROOT/tests/node/node_modules"
WARMUP=3

[ -x "$BD" ] || { echo "no batchdet binary at $BD (set BATCHDET)" >&2; exit 2; }
[ -d "$NODE_MODULES/onnxruntime-node" ] || { echo "onnxruntime-node missing: run deploy/install-deps.sh" >&2; exit 2; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "model:   $MODEL"
echo "threads: $T   iters: $ITERS (after $WARMUP warm-up)   batch: 1"
echo

BD_JSON="$("$BD" bench --model "$MODEL" --device cpu --threads "$T" --batch 1 \
  --iters "$ITERS" --warmup "$WARMUP" --json)"

ORT_JS="$(mktemp /tmp/bd_ort_bench.XXXXXX.js)"
trap 'rm -f "$ORT_JS"' EXIT
cat > "$ORT_JS" <<'JS'
const ort = require('onnxruntime-node');
const [model, threads, iters, warmup] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
(async () => {
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', executionMode: 'sequential'});
  const name = sess.inputNames[0];
  const meta = sess.inputMetadata ? sess.inputMetadata : null;
  // Input dims: from the session metadata when available, else YOLOX-nano's.
  let dims = [1, 3, 416, 416];
  try { const m = Array.isArray(meta) ? meta[0] : meta[name]; if (m && m.shape) dims = m.shape.map(Number); } catch (e) {}
  const n = dims.reduce((a, b) => a * b, 1);
  const lat = [];
  for (let i = -warmup; i < iters; i++) {
    const x = new Float32Array(n);
    for (let k = 0; k < n; k++) x[k] = (Math.random() * 256) | 0;   // fresh uint8 values
    const t = new ort.Tensor('float32', x, dims);
    const t0 = process.hrtime.bigint();
    await sess.run({ [name]: t });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (i >= 0) lat.push(ms);
  }
  const tot = lat.reduce((a, b) => a + b, 0);
  lat.sort((a, b) => a - b);
  const pct = p => lat[Math.min(lat.length, Math.max(1, Math.ceil(p / 100 * lat.length))) - 1];
  console.log(JSON.stringify({ms_per_image: tot / iters, p50_ms: pct(50), p99_ms: pct(99), min_ms: lat[0]}));
})().catch(e => { console.error(e); process.exit(1); });
JS
ORT_JSON="$(NODE_PATH="$NODE_MODULES" node "$ORT_JS" "$MODEL" "$T" "$ITERS" "$WARMUP")"

/usr/bin/python3 - "$BD_JSON" "$ORT_JSON" <<'PY'
import json, sys
b, o = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'engine':<22}{'ms/img':>10}{'img/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
for name, r in (("batchdet cpu", b), ("onnxruntime-node", o)):
    print(f"{name:<22}{r['ms_per_image']:>10.2f}{1000 / r['ms_per_image']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}")
print(f"\nratio batchdet / onnxruntime (ms/img): {b['ms_per_image'] / o['ms_per_image']:.2f}x")
PY
