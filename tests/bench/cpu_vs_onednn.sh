#!/usr/bin/env bash
# Our cpu backend's convolutions vs oneDNN's, every conv layer of YOLOX-nano at batch 1,
# 416x416, 1 and 2 threads (issue 4, item 3), then the whole model through our engine for
# context. Measurement only: needs libdnnl-dev (apt-get install libdnnl-dev), which is NOT
# a batchdet dependency; the build makes onednn_conv_bench only where it is installed.
#
# usage: tests/bench/cpu_vs_onednn.sh [BUILD_DIR [ROUNDS [GAP_US]]]
#   BUILD_DIR a Release (or RelWithDebInfo) build, default ./build; ROUNDS default 15.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build}
ROUNDS=${2:-15}
GAP_US=${3:-3000}
MODEL=${BD_TEST_DATA:-$SRC/../shared/data}/models/yolox_nano.onnx
BIN=$BUILD/tests/gpu/onednn_conv_bench
MODEL_BIN=$BUILD/tests/gpu/cpu_model_bench

if [ ! -x "$BIN" ]; then
  echo "no $BIN: install libdnnl-dev (measurement only) and re-run cmake on $BUILD" >&2
  exit 2
fi
bt=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
san=$(sed -n 's/^BATCHDET_SANITIZE:BOOL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
if [ "$bt" = "Debug" ] || [ "$san" = "ON" ]; then
  echo "warning: $BUILD is a $bt build (sanitizers $san): timings are meaningless" >&2
fi

echo "== $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== build $BUILD ($bt), OpenBLAS $(grep -q '^BATCHDET_BLAS:BOOL=ON' "$BUILD/CMakeCache.txt" && echo on || echo off)"
rc=0
"$BIN" "$MODEL" "$ROUNDS" "$GAP_US" || rc=$?
if [ -x "$MODEL_BIN" ]; then
  echo
  echo "== whole model through our engine (per-op profile, process CPU ms per run)"
  for t in 1 2; do "$MODEL_BIN" "$MODEL" "$t" 1 30; done
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
