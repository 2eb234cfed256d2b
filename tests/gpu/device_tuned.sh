# Sourced by device_check.sh (and tests/gpu/test_device_tuned.sh). The check times DAMO-T
# at batch 32 with each of our switches flipped beside the default; pick_tuned reads those
# logs, prints every variant against the default, and names the fastest one for
# device_bench.sh's second batchdet row ("batchdet-tuned", its environment in the table's
# note), so that one device call gives the table both as the code stands and with the
# setting the same call found faster, without a rebuild in between.
#
# pick_tuned: needs OUT (the step logs: NAME.log, "gpu p50  X ms ..." from `batchdet
# bench`) and STEP_RC (associative: step name -> exit status, filled by device_step.sh's
# step). A variant counts when its bench step and every step that checks its outputs
# passed, and it beats the default's gpu p50 by at least BD_TUNED_MARGIN percent (default
# 3: the spread between bench runs in one call was under 2% on the second H100 session, 6%
# between the check's and the table's). The default is the mean of the default runs that
# passed. Writes $OUT/tuned_env.txt (line 1: the environment, NAME=VALUE; line 2: why) or
# removes it when nothing wins. Returns 0.

# VARIANT ENV | its b32 bench step | the steps that must have passed (outputs checked
# against the cpu backend or a double reference with that setting); a switch that turns
# one of our later optimizations off runs the path the GPU ran before it, checked there.
BD_TUNED_VARIANTS=(
  "BATCHDET_CUDA_WGMMA=1|bench-damoT-b32-wgmma|test_cuda_conv-wgmma test_cuda_model-damoT-wgmma"
  "BATCHDET_CUDA_DNN_GRAPH=0|bench-damoT-b32-nograph|"
  "BATCHDET_CUDA_PDL=1|bench-damoT-b32-pdl|test_cuda_model-damoT-pdl"
  "BATCHDET_CUDA_BRANCHES=1|bench-damoT-b32-branches|test_cuda_model-damoT-branches"
  "BATCHDET_CUDA_TWINS=0|bench-damoT-b32-notwins|"
  "BATCHDET_CUDA_TWINS=even|bench-damoT-b32-eventwins|"
  "BATCHDET_CUDA_FUSE_LAYOUT=0|bench-damoT-b32-nofuse|"
  "BATCHDET_CUDA_UPRES=0|bench-damoT-b32-noupres|"
  "BATCHDET_SPLIT_UPSAMPLED=0|bench-damoT-b32-nosplit|"
  "BATCHDET_CUDA_ALIAS=0|bench-damoT-b32-noalias|"
)
BD_TUNED_DEFAULTS=(bench-damoT-b32-graph bench-damoT-b32)

# tuned_p50 STEP: the gpu p50 (ms) in $OUT/STEP.log when that step passed, else nothing
tuned_p50() {
  [ "${STEP_RC[$1]:-x}" = 0 ] || return 0
  awk '/^gpu p50/ && $3 + 0 > 0 { print $3; exit }' "$OUT/$1.log" 2>/dev/null
}

pick_tuned() {
  local margin=${BD_TUNED_MARGIN:-3} base="" n=0 s v p line env log req r bad
  local best_env="" best_p="" best_why=""
  rm -f "$OUT/tuned_env.txt"
  for s in "${BD_TUNED_DEFAULTS[@]}"; do
    v=$(tuned_p50 "$s")
    [ -n "$v" ] || continue
    base=$(awk -v a="${base:-0}" -v b="$v" -v n="$n" 'BEGIN { printf "%.4f", (a * n + b) / (n + 1) }')
    n=$((n + 1))
  done
  if [ -z "$base" ]; then
    echo "tuned: none (no default DAMO-T b32 run passed)"
    return 0
  fi
  echo "DAMO-T b32 gpu p50, each switch against the default ($base ms, mean of $n run(s)):"
  for line in "${BD_TUNED_VARIANTS[@]}"; do
    IFS='|' read -r env log req <<<"$line"
    p=$(tuned_p50 "$log")
    if [ -z "$p" ]; then
      printf '  %-30s %s\n' "$env" "not measured (${log}: ${STEP_RC[$log]:-not run})"
      continue
    fi
    bad=""
    for r in $req; do
      [ "${STEP_RC[$r]:-x}" = 0 ] || bad="$bad $r:${STEP_RC[$r]:-not run}"
    done
    printf '  %-30s %8.3f ms %+6.1f%%%s\n' "$env" "$p" \
      "$(awk -v p="$p" -v b="$base" 'BEGIN { print (p / b - 1) * 100 }')" \
      "${bad:+  (outputs not checked:$bad)}"
    [ -z "$bad" ] || continue
    if awk -v p="$p" -v b="$base" -v m="$margin" -v q="${best_p:-1e30}" \
      'BEGIN { exit !(p <= b * (1 - m / 100) && p < q) }'; then
      best_env=$env best_p=$p
      best_why="DAMO-T b32 gpu p50 $p ms with $env against $base ms by default ($log vs ${BD_TUNED_DEFAULTS[*]})"
    fi
  done
  if [ -z "$best_env" ]; then
    echo "tuned: none (no switch beat the default by ${margin}% with its outputs checked)"
    return 0
  fi
  printf '%s\n# %s\n' "$best_env" "$best_why" >"$OUT/tuned_env.txt"
  echo "tuned: $best_env ($best_why) -> tuned_env.txt"
  return 0
}
