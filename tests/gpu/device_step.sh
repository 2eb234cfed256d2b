# Sourced by the device-machine scripts (device_check.sh, device_bench.sh, device_post.sh):
# step NAME CAP CMD... runs CMD for at most min(CAP, time left before DEADLINE - STEP_RESERVE)
# seconds (no DEADLINE: CAP), its output in $OUT/NAME.log, the command line appended to
# $OUT/$STEP_LOG; a row for the summary is added to SUMMARY (ok, FAIL rc=N, SKIP for 77,
# TIMEOUT for 124/137) and the log's last STEP_TAIL lines are printed. A step that would
# get under 10 s is not run: row SKIPPED, status 125. Returns CMD's status; LIMIT holds the
# limit it ran under; STEP_RC[NAME] its status (125 when skipped). Needs OUT, T0 and
# SUMMARY (an array).
STEP_RESERVE=${STEP_RESERVE:-5}
STEP_TAIL=${STEP_TAIL:-15}
STEP_W=${STEP_W:-22}
STEP_LOG=${STEP_LOG:-steps.log}
LIMIT=0
declare -gA STEP_RC
step() {
  local name=$1 cap=$2
  shift 2
  LIMIT=$cap
  if [ -n "${DEADLINE:-}" ]; then
    local left=$((DEADLINE - $(date +%s) - STEP_RESERVE))
    [ "$left" -lt "$LIMIT" ] && LIMIT=$left
  fi
  if [ "$LIMIT" -lt 10 ]; then
    echo "=== $name: skipped, time budget spent" | tee -a "$OUT/$STEP_LOG"
    SUMMARY+=("$(printf "%-${STEP_W}s %-16s" "$name" "SKIPPED (budget)")")
    STEP_RC[$name]=125
    return 125
  fi
  local s=$(date +%s)
  echo "=== $name (limit ${LIMIT}s, $((s - T0))s elapsed): $*" | tee -a "$OUT/$STEP_LOG"
  timeout -k 5 "$LIMIT" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  STEP_RC[$name]=$rc
  local d=$(($(date +%s) - s)) verdict=ok
  [ $rc -ne 0 ] && verdict="FAIL rc=$rc"
  [ $rc -eq 77 ] && verdict="SKIP"
  { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && verdict="TIMEOUT"
  SUMMARY+=("$(printf "%-${STEP_W}s %-16s %4ss" "$name" "$verdict" "$d")")
  tail -n "$STEP_TAIL" "$OUT/$name.log"
  return $rc
}

# pack_logs NAME [FILE...]: the device tool brings back at most 8 files from $OUT, so the
# scripts pack their per-step logs, env.txt and the FILEs into $OUT/NAME.tgz when they end
# (trap EXIT); BD_PACK_LOGS=0 leaves them loose (runs on a development machine).
pack_logs() {
  [ "${BD_PACK_LOGS:-1}" = 1 ] || return 0
  local name=$1
  shift
  (
    cd "$OUT" || exit 0
    local f extra=()
    for f in "$@"; do [ -f "$f" ] && extra+=("./$f"); done
    set -- $(ls ./*.log ./env.txt 2>/dev/null) "${extra[@]}"
    [ $# -gt 0 ] && tar czf "$name.tgz" --remove-files "$@" 2>/dev/null
  ) || true
}
