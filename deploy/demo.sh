#!/usr/bin/env bash
# batchdet demo. Until the worker and scheduler land (issues 9-11) this installs what is
# missing, builds, runs `batchdet detect` over the shipped photos with the YOLOX-nano model,
# writes annotated previews and prints what is coming next.
#   ./deploy/demo.sh [DIR|FILE...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./deploy/install-deps.sh
BUILD=build-demo
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
BD="$BUILD/cli/batchdet"

MODEL="${BATCHDET_MODEL:-}"
if [ -z "$MODEL" ]; then
  for cand in "${BATCHDET_MODELS:-}/yolox_nano.onnx" "$ROOT/../shared/data/models/yolox_nano.onnx"; do
    if [ -f "$cand" ]; then MODEL="$cand"; break; fi
  done
fi
if [ -z "$MODEL" ]; then
  echo "demo: no model found; set BATCHDET_MODEL=/path/to/yolox_nano.onnx" >&2
  exit 1
fi
INPUTS=("$@")
if [ ${#INPUTS[@]} -eq 0 ]; then INPUTS=("$ROOT/../shared/data/images"); fi
OUT="${BATCHDET_DEMO_OUT:-$ROOT/demo-out}"
mkdir -p "$OUT/annotated"
echo "demo: model $MODEL"
"$BD" detect --model "$MODEL" --annotate "$OUT/annotated" "${INPUTS[@]}" | tee "$OUT/detections.jsonl"
echo
echo "demo: $(grep -c '"detections"' "$OUT/detections.jsonl" || true) images with results," \
     "$(grep -c '"error"' "$OUT/detections.jsonl" || true) per-image errors;" \
     "previews in $OUT/annotated"
echo "demo: coming next: Kafka workers, Redis results, coordinator and status (issues 9-11)."
