#!/usr/bin/env bash
# The test command: installs every dependency, builds (Debug + ASan + UBSan) and runs
# the whole suite with ctest, then prints ctest's summary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
./deploy/install-deps.sh
BUILD="${BATCHDET_TEST_BUILD:-build-test}"
JOBS="$(nproc)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DBATCHDET_SANITIZE=ON -DBATCHDET_CUDA=AUTO >"$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "$JOBS" 2>&1 | grep -E "error|warning|Error" || true
cmake --build "$BUILD" -j "$JOBS" >/dev/null
cd "$BUILD"
set +e
ctest --output-on-failure -j "$JOBS" --timeout 900 "$@" >ctest.log 2>&1
rc=$?
set -e
# Failures in full, then ctest's own summary (the last lines of its output).
if [ $rc -ne 0 ]; then grep -vE "^\s+Start |Test +#[0-9]+: .* Passed" ctest.log | tail -n 200; fi
grep -E "tests passed|Test +#[0-9]+:|Total Test time" ctest.log | tail -n 80
exit $rc
