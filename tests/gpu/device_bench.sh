#!/usr/bin/env bash
# Issue 7 on the GPU machine, one command, under 8 minutes: batchdet vs PyTorch eager FP32,
# eager BF16, torch.compile BF16 (reduce-overhead; max-autotune for T b32 when time allows)
# and onnxruntime CUDA FP16 (the device machine's onnxruntime 1.30 has no CUDA provider:
# reported as such) on DAMO-YOLO T and
# S (seeded weights from tests/reference/damoyolo.py), batches 1, 8, 32, 64 at 640x640,
# through tests/bench/gpu_peers.py; plus the MAC/byte floor of both models
# (`batchdet bench --count`). Prints the step summary, the floors, then the table and the
# issue's three targets last. Logs and cells.jsonl (one line per measured cell) in $OUT.
#
#   BD_PREBUILT=.devdeps/bin-pre bash tests/gpu/device_bench.sh      (carry .devdeps)
#
# batchdet comes from $BD_PREBUILT/batchdet (default .devdeps/bin-pre: run
# tests/gpu/build_prebuilt.sh on the build machine first); without it the script builds
# an engine-only Release batchdet here first (about 2-3 minutes taken from the budget).
# Every step is time-bounded against one deadline (BD_BENCH_BUDGET s, default 470; 15 s
# kept for the table), a failing or timed-out step is reported and the script goes on;
# measured cells survive a timeout. Order = priority: models exported, floors, T eager +
# batchdet + ORT (cap 140 s), compile T b32 and T b1 (cap 100 s each), S eager + batchdet
# + ORT (cap 110 s), further compile cells (T b8, T b64, S b32, S b1, S b8, S b64) while at
# least BD_COMPILE_MIN (60) s remain, and last, when BD_AUTOTUNE_MIN (200) s remain,
# T b32 once more in mode max-autotune (its cell then replaces the first one). The sweep's
# mode is BD_COMPILE_MODE, default reduce-overhead (CUDA graphs, no autotuning): on the
# first H100 run (2026-11-27) max-autotune spent over 200 s compiling and autotuning T b32
# alone and the table had no compile cell; reduce-overhead compiled T b32 in ~25 s.
# Cells never reached are listed as "not run" or with their timeout. Knobs:
# BD_BENCH_ITERS (30), BD_BENCH_WARMUP (5).
# A second batchdet row, batchdet-tuned, when there is a setting to time: BD_TUNED_ENV
# ('NAME=VALUE ...'), else the first line of $OUT/tuned_env.txt, which device_check.sh
# writes when one of our switches beat the default at DAMO-T b32 in the same call with its
# outputs checked (tests/gpu/device_tuned.sh). Its T cells (b32, b1, b8, b64; cap 90 s)
# come after compile T b1, its S cells (cap 70 s) after the S eager ones; the targets are
# printed for it too.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
DD=$ROOT/.devdeps
T0=$(date +%s)
BUDGET=${BD_BENCH_BUDGET:-470}
DEADLINE=$((T0 + BUDGET))
ITERS=${BD_BENCH_ITERS:-30}
WARMUP=${BD_BENCH_WARMUP:-5}
CMODE=${BD_COMPILE_MODE:-reduce-overhead}
CMIN=${BD_COMPILE_MIN:-60}
AUTOTUNE_MIN=${BD_AUTOTUNE_MIN:-200}
CELLS=$OUT/cells.jsonl
ONNX=${TMPDIR:-/tmp}/bd-bench-onnx
export TORCHINDUCTOR_CACHE_DIR=${TMPDIR:-/tmp}/bd-bench-inductor
SUMMARY=()
LIMIT=0
: >"$CELLS"
. "$ROOT/tests/gpu/device_env.sh"

left() { echo $((DEADLINE - $(date +%s))); }

STEP_RESERVE=15 STEP_TAIL=8 STEP_W=18
. "$ROOT/tests/gpu/device_step.sh"
trap "pack_logs device-bench-logs tuned_env.txt table.txt" EXIT

note_cell() { # MODEL BATCH IMPL TEXT: a cell that has no measurement, with the reason
  printf '{"model":"%s","batch":%d,"impl":"%s","err":"%s"}\n' "$1" "$2" "$3" "$4" >>"$CELLS"
}

step nvidia-smi 15 nvidia-smi

# ---- batchdet: prebuilt, else an engine-only Release build here ----
PRE=${BD_PREBUILT:-.devdeps/bin-pre}
case "$PRE" in /*) ;; *) PRE=$ROOT/$PRE ;; esac
BD=$PRE/batchdet
if [ ! -x "$BD" ]; then
  echo "no prebuilt $BD: building batchdet here (counts against the budget)"
  B=$ROOT/build-bench
  step configure 90 cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release \
    -DBATCHDET_ENGINE_ONLY=ON -DBATCHDET_BLAS=OFF -DBATCHDET_CUDA=ON -DBATCHDET_TESTS=OFF \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DBATCHDET_DEVDEPS="$DD" -DBD_ONNX_PREGEN="$DD/onnxgen" \
    "${CMAKE_DNN[@]}" "${PKG[@]}"
  if ! step build 200 cmake --build "$B" -j"${BD_JOBS:-16}" --target batchdet; then
    # this machine's newer gcc may warn where the build machine's does not (-Werror)
    step configure-w 40 cmake "$B" -DCMAKE_C_FLAGS=-w -DCMAKE_CXX_FLAGS=-w
    step build-w 150 cmake --build "$B" -j"${BD_JOBS:-16}" --target batchdet
  fi
  BD=$B/cli/batchdet
fi
if ! "$BD" bench --help 2>/dev/null | grep -q -- '--count'; then
  echo "WARNING: $BD predates 'bench --count' and the gpu_p50_ms/dev_mem_mib fields:" \
    "its row is host-timed (FP32 copies included); rebuild .devdeps/bin-pre" | tee -a "$OUT/steps.log"
fi

# ---- models (FP32 deploy ONNX at batch 1, seed 0) and their floors ----
step export 90 python3 tests/bench/gpu_peers.py --export-only --models T,S --size 640 \
  --onnx-dir "$ONNX"
for m in T S; do
  step "count-$m" 20 "$BD" bench --model "$ONNX/${m}_640_s0/model.onnx" --count --batch 32
done

# ---- the table, in pieces (each a fresh process; cells are saved as they finish) ----
PEERS=(python3 tests/bench/gpu_peers.py --size 640 --iters "$ITERS" --warmup "$WARMUP"
  --batchdet "$BD" --onnx-dir "$ONNX" --save "$CELLS" --bench-timeout 60)
EAGER=batchdet,torch-fp32,torch-bf16,ort-cuda-fp16
TUNED=${BD_TUNED_ENV:-}
if [ -z "$TUNED" ] && [ -s "$OUT/tuned_env.txt" ]; then
  TUNED=$(head -n 1 "$OUT/tuned_env.txt")
fi
echo "batchdet-tuned: ${TUNED:-none (no BD_TUNED_ENV, no tuned_env.txt from device_check.sh)}" |
  tee -a "$OUT/steps.log"
tuned_cells() { # MODEL CAP
  [ -n "$TUNED" ] || return 0
  step "tuned-$1" "$2" "${PEERS[@]}" --models "$1" --batches 32,1,8,64 \
    --impls batchdet-tuned --batchdet-env "$TUNED"
}

CRC=0
compile_cell() { # MODEL BATCH CAP
  step "compile-$1-b$2" "$3" "${PEERS[@]}" --models "$1" --batches "$2" \
    --impls compile-bf16 --compile-mode "$CMODE"
  CRC=$?
  case $CRC in
  124 | 137) note_cell "$1" "$2" compile-bf16 "timeout after ${LIMIT} s ($CMODE compile + autotune)" ;;
  125) note_cell "$1" "$2" compile-bf16 "skipped: time budget" ;;
  esac
}

step peers-T 140 "${PEERS[@]}" --models T --batches 1,8,32,64 --impls "$EAGER"
compile_cell T 32 100
compile_cell T 1 100
tuned_cells T 90
step peers-S 110 "${PEERS[@]}" --models S --batches 1,8,32,64 --impls "$EAGER"
tuned_cells S 70
for mb in T:8 T:64 S:32 S:1 S:8 S:64; do
  m=${mb%:*} b=${mb#*:}
  if [ "$(left)" -ge $((CMIN + 15)) ]; then
    compile_cell "$m" "$b" 100
  else
    note_cell "$m" "$b" compile-bf16 "skipped: under ${CMIN} s of the budget left"
    SUMMARY+=("$(printf '%-18s %-16s' "compile-$m-b$b" "SKIPPED (budget)")")
  fi
done
# The issue's own peer mode, where the budget allows: a measured max-autotune cell
# replaces the reduce-overhead one in the table (its note names the mode); a timeout
# leaves the first.
if [ "$(left)" -ge $((AUTOTUNE_MIN + 15)) ]; then
  CMODE=max-autotune
  compile_cell T 32 $(($(left) - 20))
else
  echo "max-autotune T b32 not run: under ${AUTOTUNE_MIN} s of the budget left" |
    tee -a "$OUT/steps.log"
fi

# ---- report: steps, floors, then the table and the targets ----
echo
echo "==== device bench summary ($(($(date +%s) - T0))s of ${BUDGET}s budget; logs in $OUT) ===="
grep -m1 -E "NVIDIA (H|A|B)[0-9]+" "$OUT/nvidia-smi.log" 2>/dev/null | sed 's/|//g;s/  */ /g' || true
grep -h -E "^gpu_peers:" "$OUT"/peers-T.log 2>/dev/null | head -n 1
printf '%s\n' "${SUMMARY[@]}"
for m in T S; do
  echo "-- floor DAMO-$m (batchdet bench --count --batch 32):"
  grep -E "^(MACs|weights|min bytes|floor)" "$OUT/count-$m.log" 2>/dev/null
done
timeout 30 python3 tests/bench/gpu_peers.py --table "$CELLS" 2>&1 | tee "$OUT/table.txt"
exit 0
