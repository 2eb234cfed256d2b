#!/usr/bin/env bash
# The device scripts' plumbing, on made-up step logs (no GPU): device_step.sh's step
# records each status in STEP_RC and pack_logs takes extra files; device_tuned.sh's
# pick_tuned names the fastest switch whose outputs were checked, and nothing when no
# switch wins by the margin, when its checks failed or when there is no default to beat.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bd-tuned-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILS=0
fail() {
  echo "FAIL: $*"
  FAILS=$((FAILS + 1))
}

OUT=$WORK/out
mkdir -p "$OUT"
T0=$(date +%s)
SUMMARY=()
. "$ROOT/tests/gpu/device_step.sh"
. "$ROOT/tests/gpu/device_tuned.sh"

# ---- step records statuses; a step past the deadline is skipped as 125 ----
step ok-step 10 true >/dev/null
step bad-step 10 sh -c 'exit 3' >/dev/null
DEADLINE=$(($(date +%s) + 3)) step late-step 10 true >/dev/null
[ "${STEP_RC[ok-step]:-}" = 0 ] || fail "ok-step rc '${STEP_RC[ok-step]:-}'"
[ "${STEP_RC[bad-step]:-}" = 3 ] || fail "bad-step rc '${STEP_RC[bad-step]:-}'"
[ "${STEP_RC[late-step]:-}" = 125 ] || fail "late-step rc '${STEP_RC[late-step]:-}'"

# ---- pack_logs NAME FILE...: logs, env.txt and the named files packed, others left ----
echo x >"$OUT/env.txt"
echo y >"$OUT/extra.txt"
echo z >"$OUT/keep.json"
pack_logs packed extra.txt missing.txt
got=$(tar tzf "$OUT/packed.tgz" 2>/dev/null | sed 's|^\./||' | sort | paste -sd ' ')
[ "$got" = "bad-step.log env.txt extra.txt ok-step.log steps.log" ] || fail "packed: '$got'"
[ -f "$OUT/keep.json" ] && [ ! -f "$OUT/extra.txt" ] && [ ! -f "$OUT/ok-step.log" ] ||
  fail "pack_logs left or removed the wrong files: $(ls "$OUT" | paste -sd ' ')"
rm -f "$OUT"/*

# ---- pick_tuned ----
# bench NAME RC [P50]: a made-up step with `batchdet bench`'s gpu p50 line
bench() {
  STEP_RC[$1]=$2
  if [ $# -gt 2 ]; then
    printf 'img/s      6000.0\ngpu p50    %s ms per batch (network alone: CUDA events, no host copies)\n' \
      "$3" >"$OUT/$1.log"
  else
    echo "no numbers" >"$OUT/$1.log"
  fi
}
reset() {
  rm -f "$OUT"/*
  for k in "${!STEP_RC[@]}"; do unset "STEP_RC[$k]"; done
}
# expect CASE WANT: pick_tuned's choice (first line of tuned_env.txt, "" for none)
expect() {
  local out got
  out=$(pick_tuned)
  got=$(head -n 1 "$OUT/tuned_env.txt" 2>/dev/null)
  if [ "$got" != "$2" ]; then
    fail "$1: picked '$got', want '$2'"
    echo "$out" | sed 's/^/    /'
  fi
}

# 1. default = mean of the two default runs (5.0, 5.2 -> 5.1); wgmma 4.0 with its checks
#    passed beats nograph 4.5
reset
bench bench-damoT-b32-graph 0 5.000
bench bench-damoT-b32 0 5.200
bench bench-damoT-b32-wgmma 0 4.000
STEP_RC[test_cuda_conv-wgmma]=0
STEP_RC[test_cuda_model-damoT-wgmma]=0
bench bench-damoT-b32-nograph 0 4.500
bench bench-damoT-b32-notwins 0 5.300
expect "wgmma fastest" "BATCHDET_CUDA_WGMMA=1"
grep -q '^# DAMO-T b32 gpu p50 4.000 ms with BATCHDET_CUDA_WGMMA=1 against 5.1000 ms' \
  "$OUT/tuned_env.txt" || fail "why line: $(sed -n 2p "$OUT/tuned_env.txt")"
pick_tuned | grep -q 'BATCHDET_CUDA_TWINS=0 .* 5.300 ms  *+3.9%' ||
  fail "report lacks the slower switch: $(pick_tuned)"

# 2. wgmma's whole-model check failed: the next fastest checked one
STEP_RC[test_cuda_model-damoT-wgmma]=1
expect "wgmma unchecked" "BATCHDET_CUDA_DNN_GRAPH=0"
pick_tuned | grep -q 'BATCHDET_CUDA_WGMMA=1.*outputs not checked: test_cuda_model-damoT-wgmma:1' ||
  fail "report does not say why wgmma was passed over: $(pick_tuned)"

# 3. a check that never ran counts as not passed
unset 'STEP_RC[test_cuda_conv-wgmma]'
STEP_RC[test_cuda_model-damoT-wgmma]=0
expect "wgmma conv test not run" "BATCHDET_CUDA_DNN_GRAPH=0"

# 4. a variant's bench step failed (its log holds a number anyway): ignored
reset
bench bench-damoT-b32-graph 0 5.000
bench bench-damoT-b32-nograph 1 3.000
bench bench-damoT-b32-noalias 0 4.900
expect "failed bench ignored; 2% is under the margin" ""
BD_TUNED_MARGIN=1 expect "margin 1%" "BATCHDET_CUDA_ALIAS=0"

# 5. a default run that failed does not count toward the default; none left: no pick
reset
bench bench-damoT-b32-graph 137 1.000
bench bench-damoT-b32 0
bench bench-damoT-b32-nograph 0 2.000
expect "no default" ""
pick_tuned | grep -q 'no default DAMO-T b32 run passed' || fail "no-default message: $(pick_tuned)"

# 6. a stale tuned_env.txt from an earlier run is removed when nothing wins
reset
echo BATCHDET_CUDA_WGMMA=1 >"$OUT/tuned_env.txt"
bench bench-damoT-b32-graph 0 5.000
expect "stale file" ""

if [ "$FAILS" -ne 0 ]; then
  echo "test_device_tuned: $FAILS failure(s)"
  exit 1
fi
echo "test_device_tuned: ok"
