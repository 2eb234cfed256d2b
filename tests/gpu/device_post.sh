#!/usr/bin/env bash
# GPU checks of the post-processing kernels (bd_cuda_post), the NCCL broadcast
# (bd_cuda_nccl) and cuda instances of the device pool (bd_pool).
#
# HERE (build machine), first:   bash tests/gpu/device_post.sh --build [BUILD_DIR]
#   builds test_cuda_post, test_cuda_nccl and test_pool engine-only Release in BUILD_DIR
#   (default build-eo, as tests/gpu/build_prebuilt.sh) and copies them into
#   .devdeps/bin-pre (run build_prebuilt.sh before, for .devdeps and the other binaries).
# THERE (GPU machine):           BD_PREBUILT=.devdeps/bin-pre bash tests/gpu/device_post.sh
#   runs the three tests, then compute-sanitizer memcheck, racecheck (shared-memory races
#   in the per-image block) and synccheck on test_cuda_post. Every step is time-bounded;
#   logs in $OUT (default ./device-out). Budget: about 3 minutes.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DD=$ROOT/.devdeps

if [ "${1:-}" = "--build" ]; then
  set -e
  B=${2:-$ROOT/build-eo}
  cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DBATCHDET_ENGINE_ONLY=ON \
    -DBATCHDET_BLAS=OFF -DBATCHDET_CUDA=ON >"$B.post.cmake.log" 2>&1
  cmake --build "$B" -j"${BD_JOBS:-2}" --target test_cuda_post test_cuda_nccl test_pool
  mkdir -p "$DD/bin-pre"
  cp "$B/tests/gpu/test_cuda_post" "$B/tests/gpu/test_cuda_nccl" "$B/tests/gpu/test_pool" \
    "$DD/bin-pre/"
  ls -la "$DD/bin-pre"
  exit 0
fi

OUT=${OUT:-$ROOT/device-out}
mkdir -p "$OUT"
B=$ROOT/${BD_PREBUILT:-.devdeps/bin-pre}
T0=$(date +%s)
SUMMARY=()
STEP_TAIL=12 STEP_LOG=post-steps.log
. "$ROOT/tests/gpu/device_step.sh"
trap "pack_logs device-post-logs" EXIT

# Runtime libraries: the toolkit's, and every nvidia wheel folder (cuDNN, NCCL).
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
SAN=$(command -v compute-sanitizer || echo "$(dirname "$NVCC")/compute-sanitizer")
NV_DIR=$(python3 -c "import nvidia, sys; print(list(nvidia.__path__)[0])" 2>/dev/null)
if [ -n "$NV_DIR" ]; then
  for d in $(find "$NV_DIR" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u); do
    LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
  done
fi
export LD_LIBRARY_PATH=$DD/lib:${LD_LIBRARY_PATH:-}:$(dirname "$NVCC")/../lib64:/usr/local/cuda/lib64
export BD_TEST_DATA=$DD/data
export BD_TEST_SEED=${BD_TEST_SEED:-12345}

step post 120 "$B/test_cuda_post"
step post-ref 60 "$B/test_cuda_post" ref
step nccl 60 "$B/test_cuda_nccl"
step pool 180 "$B/test_pool"
step post-memcheck 120 "$SAN" --tool memcheck --error-exitcode 3 "$B/test_cuda_post"
if [ -z "${BD_POST_QUICK:-}" ]; then # BD_POST_QUICK=1: memcheck only (short device windows)
  step post-racecheck 180 "$SAN" --tool racecheck --error-exitcode 3 "$B/test_cuda_post"
  step post-synccheck 120 "$SAN" --tool synccheck --error-exitcode 3 "$B/test_cuda_post"
fi

echo
echo "==== post/nccl/pool device check ($(($(date +%s) - T0))s; logs in $OUT) ===="
grep -hE "img [0-9]|GPU\(s\)|PASSED|FAILED|got|img/s|cuda instances" "$OUT"/post.log \
  "$OUT"/nccl.log "$OUT"/pool.log 2>/dev/null | head -n 40
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT"/post-*check.log 2>/dev/null
printf '%s\n' "${SUMMARY[@]}"
