#!/usr/bin/env bash
# batchdet demo: the whole system on one machine, end to end, in a few minutes.
#
#   deploy/demo.sh [DIR | LIST]
#
# Installs what is missing, builds (Release, into build-demo), finds the model
# (deploy/models.sh), starts the dev stack (embedded Kafka with 3 brokers, redis-server
# with AOF, a local HTTP server: deploy/devstack.sh), a coordinator and one worker (every
# GPU when nvidia-smi lists one, else the CPU), submits a job, follows it to the end,
# exports COCO JSON, writes annotated previews and an HTML report, prints a summary and
# stops every process it started (also on Ctrl-C).
#
# Images: by default the shipped photos (../shared/data/images) repeated under distinct ids
# ($BATCHDET_DEMO_COPIES copies, default 8: 72 images), served by the local HTTP server so
# the worker fetches real http:// URLs. DIR: its images, served the same way. LIST: a file
# of URLs (http, https, s3, file), one per line or "id,url".
#
# Environment: BATCHDET_DEMO_OUT (output folder, default ./demo-out), BATCHDET_DEMO_COPIES,
# BATCHDET_DEMO_MODEL (yolox_nano), BATCHDET_DEMO_TIMEOUT (seconds for the job, 150),
# BATCHDET_BIN (use this batchdet binary: no install, no build; the kafka mock and test
# tools are looked up beside it), BATCHDET_DEMO_MODE (auto|full|worker|detect).
#
# Modes, chosen by what the binary implements: full (worker + submit + coordinator +
# status + export), worker (the worker fed by the tests' producer tool; results read from
# Redis), detect (`batchdet detect` over the same URLs). The summary says what was skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)
say() { echo "demo: $*" >&2; }
die() { say "$*"; exit 1; }

OUT="${BATCHDET_DEMO_OUT:-$ROOT/demo-out}"
COPIES="${BATCHDET_DEMO_COPIES:-8}"
MODEL="${BATCHDET_DEMO_MODEL:-yolox_nano}"
JOB_TIMEOUT="${BATCHDET_DEMO_TIMEOUT:-150}"
JOB="${BATCHDET_DEMO_JOB:-demo-$(date +%Y%m%d-%H%M%S)}"
MODE="${BATCHDET_DEMO_MODE:-auto}"
[[ "$COPIES" =~ ^[0-9]+$ ]] && [ "$COPIES" -ge 1 ] && [ "$COPIES" -le 1000 ] || die "BATCHDET_DEMO_COPIES must be 1..1000"
case "${1:-}" in
  -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
esac
[ $# -le 1 ] || die "usage: deploy/demo.sh [DIR | LIST]"
INPUT="${1:-}"
mkdir -p "$OUT"

# ---- processes we start, stopped on any exit ----------------------------------------
PIDS=()
STACK="$OUT/stack"
STACK_UP=0
stop_pid() { # PID NAME: TERM, a bounded wait, then KILL
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do # 30 s: the worker finishes in-flight shards
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$2 (pid $pid) still running after 30 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]%%:*}" "${PIDS[$i]#*:}"; done
  if [ "$STACK_UP" = 1 ]; then "$ROOT/deploy/devstack.sh" stop --dir "$STACK" >/dev/null 2>&1 || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---- install and build ----------------------------------------------------------------
if [ -n "${BATCHDET_BIN:-}" ]; then
  BD="$(cd "$(dirname "$BATCHDET_BIN")" && pwd)/$(basename "$BATCHDET_BIN")"
  BUILD="$(cd "$(dirname "$BD")/.." && pwd)"
else
  ./deploy/install-deps.sh
  BUILD="$ROOT/build-demo"
  CUDA=OFF # a CPU-only machine need not wait for nvcc
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then CUDA=AUTO; fi
  say "building (Release, CUDA $CUDA) into $BUILD"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBATCHDET_CUDA=$CUDA >"$OUT/build.log" 2>&1 \
    || { tail -n 30 "$OUT/build.log"; die "cmake configure failed ($OUT/build.log)"; }
  cmake --build "$BUILD" -j "$(nproc)" --target batchdet batchdet-kafka-mock >>"$OUT/build.log" 2>&1 \
    || { tail -n 30 "$OUT/build.log"; die "build failed ($OUT/build.log)"; }
  # The producer test tool feeds the worker while `submit` is not built (worker mode).
  cmake --build "$BUILD" -j "$(nproc)" --target bd_test_produce >>"$OUT/build.log" 2>&1 || true
  BD="$BUILD/cli/batchdet"
fi
MOCK="${BATCHDET_KAFKA_MOCK:-$BUILD/deploy/batchdet-kafka-mock}"
PRODUCE="${BD_TEST_PRODUCE:-$BUILD/tests/worker/bd_test_produce}"
[ -x "$BD" ] || die "no batchdet binary at $BD"

implemented() { local h; h="$("$BD" "$1" --help 2>&1 || true)"; [[ "$h" != *"not implemented yet"* ]]; }
SKIPPED=()
if [ "$MODE" = auto ]; then
  MODE=detect
  if implemented worker && [ -x "$MOCK" ]; then
    if implemented submit && implemented coordinator && implemented status && implemented export; then
      MODE=full
    elif [ -x "$PRODUCE" ]; then
      MODE=worker
    fi
  fi
fi
for c in worker submit coordinator status export; do
  implemented "$c" || SKIPPED+=("batchdet $c is not implemented yet")
done
case "$MODE" in
  full) ;;
  worker) SKIPPED+=("manifests produced by the test tool instead of 'batchdet submit'; results read from Redis, COCO written by deploy/report.py") ;;
  detect) SKIPPED+=("no worker: 'batchdet detect' ran over the same URLs") ;;
  *) die "BATCHDET_DEMO_MODE must be auto, full, worker or detect" ;;
esac
say "mode $MODE, binary $BD"

MODELS="$(./deploy/models.sh "$MODEL")" || die "no model $MODEL (see deploy/models.sh)"
say "model $MODELS/$MODEL.onnx"

DEVICES=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then DEVICES=cuda; fi

# ---- the image list ------------------------------------------------------------------
rm -rf "$OUT/www" "$OUT/annotated" "$OUT/report_files" "$OUT/logs"
mkdir -p "$OUT/www" "$OUT/annotated" "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
STACK="$OUT/stack"
: >"$OUT/images.csv" # id,url for submit
: >"$OUT/sources.txt" # distinct local photos, for the previews
serve() { # ID FILE: the file becomes http://.../ID (URL filled in once the stack runs)
  ln -sf "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")" "$OUT/www/$1"
  echo "$1,@HTTP@/$1" >>"$OUT/images.csv"
}
sanitize() { local s="${1//[^A-Za-z0-9._-]/_}"; echo "${s:0:100}"; }
if [ -z "$INPUT" ] || [ -d "$INPUT" ]; then
  SRC="${INPUT:-$ROOT/../shared/data/images}"
  [ -d "$SRC" ] || die "no image folder $SRC"
  mapfile -t FILES < <(find "$SRC" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort)
  [ ${#FILES[@]} -gt 0 ] || die "no .jpg/.jpeg/.png images in $SRC"
  n=1
  [ -z "$INPUT" ] && n="$COPIES"
  for ((c = 0; c < n; c++)); do
    for f in "${FILES[@]}"; do
      b="$(basename "$f")"
      serve "$(printf 'c%02d-%s' "$c" "$(sanitize "$b")")" "$f"
    done
  done
  printf '%s\n' "${FILES[@]}" | head -n 12 >"$OUT/sources.txt"
elif [ -f "$INPUT" ]; then
  k=0
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    [ -n "$line" ] && [ "${line:0:1}" != "#" ] || continue
    if [[ "$line" == *,* ]] && [[ "${line%%,*}" != *:* ]]; then echo "$line" >>"$OUT/images.csv"
    else printf 'img-%05d,%s\n' "$k" "$line" >>"$OUT/images.csv"; fi
    k=$((k + 1))
  done <"$INPUT"
  grep -o 'file://[^,]*$' "$OUT/images.csv" | sed 's|^file://||' | head -n 12 >"$OUT/sources.txt" || true
else
  die "$INPUT is neither a folder nor a list file"
fi
TOTAL=$(wc -l <"$OUT/images.csv")
[ "$TOTAL" -gt 0 ] || die "no images to submit"

# ---- the dev stack ---------------------------------------------------------------------
STACK_UP=1
"$ROOT/deploy/devstack.sh" start --dir "$STACK" --www "$OUT/www" --kafka-mock "$MOCK" >"$OUT/logs/devstack.log" 2>&1 \
  || { cat "$OUT/logs/devstack.log" >&2; die "dev stack did not start"; }
set -a
# shellcheck disable=SC1091
. "$STACK/env"
set +a
sed -i "s|@HTTP@|$BATCHDET_HTTP|" "$OUT/images.csv"
cut -d, -f1 "$OUT/images.csv" >"$OUT/ids.txt"
say "dev stack up: brokers $BATCHDET_BROKERS, redis $BATCHDET_REDIS, images at $BATCHDET_HTTP/"
ALLOW_FILE=()
grep -q ',file://' "$OUT/images.csv" && ALLOW_FILE=(--allow-file)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # URL SECONDS PID: until URL answers 200, or the process is gone
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
hget() { redis-cli -u "$BATCHDET_REDIS" --raw hget "job:$JOB" "$1" 2>/dev/null | head -n1; }

ELAPSED=0
START_TS=0
if [ "$MODE" != detect ]; then
  if [ "$MODE" = full ]; then
    CPORT="$(free_port)"
    "$BD" coordinator --metrics-port "$CPORT" >"$OUT/logs/coordinator.log" 2>&1 &
    PIDS+=("$!:coordinator")
  fi
  WPORT="$(free_port)"
  "$BD" --log-level info worker --models "$MODELS" --devices "$DEVICES" --instance-id demo-worker-1 \
    --metrics-port "$WPORT" --report-interval 1 "${ALLOW_FILE[@]}" >"$OUT/logs/worker.log" 2>&1 &
  WPID=$!
  PIDS+=("$WPID:worker")
  wait_http "http://127.0.0.1:$WPORT/healthz" 60 "$WPID" \
    || { tail -n 20 "$OUT/logs/worker.log" >&2; die "the worker did not become healthy in 60 s"; }
  say "worker up (devices $DEVICES, metrics http://127.0.0.1:$WPORT/metrics)"

  START_TS=$(date +%s.%N)
  if [ "$MODE" = full ]; then
    "$BD" submit --job "$JOB" --model "$MODEL" --list "$OUT/images.csv" --shard-size 8 \
      >"$OUT/logs/submit.log" 2>&1 || { cat "$OUT/logs/submit.log" >&2; die "submit failed"; }
  else
    python3 - "$JOB" "$MODEL" "$OUT/images.csv" >"$OUT/manifests.jsonl" <<'EOF'
import json, sys
job, model, path = sys.argv[1:4]
imgs = [l.rstrip("\n").split(",", 1) for l in open(path) if l.strip()]
for s, k in enumerate(range(0, len(imgs), 8)):
    print(json.dumps({"v": 1, "job": job, "shard": s, "model": model,
                      "images": [{"id": i, "url": u} for i, u in imgs[k:k + 8]]}))
EOF
    "$PRODUCE" produce "$BATCHDET_BROKERS" batchdet.jobs "$OUT/manifests.jsonl" >"$OUT/logs/produce.log" 2>&1 \
      || { cat "$OUT/logs/produce.log" >&2; die "producing the manifests failed"; }
  fi
  say "job $JOB: $TOTAL images submitted"

  # Follow the job: `status --watch` on a terminal (it returns when the job ends), else a
  # progress line per change. The Redis job hash is the truth for "finished" either way.
  WATCHED=0
  if [ "$MODE" = full ] && [ -t 1 ] && [ -t 2 ]; then
    timeout "$JOB_TIMEOUT" "$BD" status --job "$JOB" --watch --interval 1 || true
    WATCHED=1
  fi
  deadline=$(($(date +%s) + JOB_TIMEOUT))
  last=""
  while :; do
    d="$(hget done)"; f="$(hget failed)"
    d="${d:-0}"; f="${f:-0}"
    if [ "$WATCHED" = 0 ] && [ "$d/$f" != "$last" ]; then
      printf 'demo: progress %d/%d done, %d failed\n' "$d" "$TOTAL" "$f" >&2
      last="$d/$f"
    fi
    [ $((d + f)) -ge "$TOTAL" ] && break
    kill -0 "$WPID" 2>/dev/null || { tail -n 20 "$OUT/logs/worker.log" >&2; die "the worker exited"; }
    [ "$(date +%s)" -lt "$deadline" ] || die "job not finished after ${JOB_TIMEOUT}s ($d done, $f failed of $TOTAL)"
    sleep 0.5
  done
  ELAPSED=$(python3 -c "import time; print('%.2f' % (time.time() - $START_TS))")
  say "job finished in ${ELAPSED}s"
  curl -sf --max-time 5 "http://127.0.0.1:$WPORT/metrics" >"$OUT/metrics.txt" || say "could not scrape the worker's /metrics"

  if [ "$MODE" = full ]; then
    sleep 1.5 # one report interval, so the coordinator has the worker's last report
    "$BD" status --job "$JOB" --json >"$OUT/status.json" 2>"$OUT/logs/status.log" || say "status --json failed"
    [ "$WATCHED" = 1 ] || "$BD" status --job "$JOB" >&2 || true
    "$BD" export --job "$JOB" --format coco -o "$OUT/coco.json" >"$OUT/logs/export.log" 2>&1 \
      || { cat "$OUT/logs/export.log" >&2; die "export --format coco failed"; }
    "$BD" export --job "$JOB" --format jsonl -o "$OUT/results.jsonl" >>"$OUT/logs/export.log" 2>&1 \
      || { cat "$OUT/logs/export.log" >&2; die "export --format jsonl failed"; }
  else
    python3 deploy/report.py redis-dump --redis "$BATCHDET_REDIS" --job "$JOB" --ids "$OUT/ids.txt" -o "$OUT/results.jsonl"
    python3 deploy/report.py coco --results "$OUT/results.jsonl" -o "$OUT/coco.json"
  fi
else
  START_TS=$(date +%s.%N)
  cut -d, -f2- "$OUT/images.csv" >"$OUT/urls.txt"
  mapfile -t URLS <"$OUT/urls.txt"
  "$BD" detect --model "$MODELS/$MODEL.onnx" --device "${DEVICES%%:*}" "${URLS[@]}" >"$OUT/results.jsonl" 2>"$OUT/logs/detect.log" \
    || { tail -n 20 "$OUT/logs/detect.log" >&2; die "detect failed"; }
  ELAPSED=$(python3 -c "import time; print('%.2f' % (time.time() - $START_TS))")
  python3 deploy/report.py coco --results "$OUT/results.jsonl" -o "$OUT/coco.json"
fi

# ---- previews, report, summary -------------------------------------------------------
if [ -s "$OUT/sources.txt" ]; then
  mapfile -t SOURCES <"$OUT/sources.txt"
  "$BD" detect --model "$MODELS/$MODEL.onnx" --device "${DEVICES%%:*}" --annotate "$OUT/annotated" "${SOURCES[@]}" \
    >/dev/null 2>"$OUT/logs/annotate.log" || say "annotated previews failed (see $OUT/logs/annotate.log)"
fi
skipped="$(printf '%s; ' "${SKIPPED[@]+"${SKIPPED[@]}"}")"
python3 - "$OUT/summary.json" "$JOB" "$MODEL" "$MODE" "$DEVICES" "$ELAPSED" "$TOTAL" "${skipped%; }" <<'EOF'
import json, sys
p, job, model, mode, dev, el, total, skipped = sys.argv[1:9]
json.dump({"job": job, "model": model, "mode": mode, "devices": dev, "elapsed_s": float(el),
           "images": int(total), "skipped": skipped}, open(p, "w"), indent=1)
EOF
python3 deploy/report.py html --results "$OUT/results.jsonl" --images-dir "$OUT/www" \
  --image-list "$OUT/images.csv" --metrics "$OUT/metrics.txt" --status "$OUT/status.json" \
  --summary "$OUT/summary.json" -o "$OUT/report.html"

python3 - "$OUT" "$TOTAL" "$ELAPSED" <<'EOF' >&2
import collections, json, sys
out, total, el = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rs = [json.loads(l) for l in open(out + "/results.jsonl") if l.strip()]
ok = [r for r in rs if "error" not in r]
cls = collections.Counter(d["label"] for r in ok for d in r.get("detections", []))
coco = json.load(open(out + "/coco.json"))
print("demo: %d/%d images with results, %d errors, %d detections (%s)" % (
    len(ok), total, len(rs) - len(ok), sum(cls.values()),
    ", ".join("%s %d" % kv for kv in cls.most_common(6))))
if el > 0:
    print("demo: %.1f s for the job, %.1f images/s" % (el, len(rs) / el))
print("demo: COCO %s/coco.json (%d images, %d annotations)" % (out, len(coco.get("images", [])),
                                                              len(coco.get("annotations", []))))
EOF
say "report $OUT/report.html, previews $OUT/annotated/, logs $OUT/logs/"
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do say "skipped: $s"; done
say "total $(($(date +%s) - T0)) s"
