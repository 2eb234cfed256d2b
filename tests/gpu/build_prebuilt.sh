#!/usr/bin/env bash
# Runs HERE (the build machine), before a device call: fills .devdeps/ (prepare_devdeps.sh),
# builds the engine-only Release binaries with CUDA in build-eo/ and copies batchdet and
# the cuda test binaries into .devdeps/bin-pre/, which the device check runs as
#   BD_PREBUILT=.devdeps/bin-pre bash tests/gpu/device_check.sh
# Usage: bash tests/gpu/build_prebuilt.sh [BUILD_DIR]   (default build-eo; -j from BD_JOBS, 2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${1:-$ROOT/build-eo}
PRE=$ROOT/.devdeps/bin-pre
bash "$ROOT/tests/gpu/prepare_devdeps.sh"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DBATCHDET_ENGINE_ONLY=ON \
  -DBATCHDET_BLAS=OFF -DBATCHDET_CUDA=ON >"$B.cmake.log" 2>&1 || {
  tail -n 30 "$B.cmake.log"
  exit 1
}
TARGETS=(batchdet test_cuda_kernels test_cuda_conv test_cuda_model test_cuda_prep test_cuda_detect
  test_cuda_post test_cuda_nccl test_pool test_cuda_dnn_survey)
cmake --build "$B" -j"${BD_JOBS:-2}" --target "${TARGETS[@]}"
mkdir -p "$PRE"
cp "$B/cli/batchdet" "$PRE/"
for t in "${TARGETS[@]:1}"; do cp "$B/tests/gpu/$t" "$PRE/"; done
# Other cuda test binaries the build made (tests added by other issues), if any.
for f in "$B"/tests/gpu/test_cuda_*; do
  n=$(basename "$f")
  [ -x "$f" ] && [ ! -e "$PRE/$n" ] && [ "$n" != test_cuda_emu ] && cp "$f" "$PRE/"
done
ls -la "$PRE"
du -sh "$ROOT/.devdeps"
