#!/bin/sh
# run_fuzz.sh TARGET SECONDS [extra libFuzzer flags...]
#
# Builds tests/fuzz target fuzz_TARGET with clang 14 and -fsanitize=fuzzer,address,
# undefined into build-fuzz/ (at the repository root; libraries are instrumented with
# fuzzer-no-link for coverage) and runs it for SECONDS on a COPY of
# tests/fuzz/corpus/TARGET/ (new inputs land in the copy, build-fuzz/corpus-TARGET/;
# crashes in build-fuzz/artifacts-TARGET/). Copy interesting new inputs back by hand
# (libFuzzer's -merge=1 keeps the corpus small). A dictionary
# tests/fuzz/fuzz_TARGET.dict is used when present.
# Env: CC (default clang-14), FUZZ_JOBS (build parallelism, default 2).
# Exit status: libFuzzer's (0 = no crash in the time given).
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [libFuzzer flags...]   (e.g. $0 manifest 600)" >&2
  exit 2
fi
target=$1
secs=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bdir="$root/build-fuzz"
cc=${CC:-clang-14}
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

if [ ! -f "$bdir/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$bdir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBATCHDET_CUDA=OFF -DBATCHDET_SANITIZE=OFF -DBATCHDET_FUZZ_ENGINE=libfuzzer \
    -DCMAKE_C_FLAGS="$san" >"$bdir.cmake.log" 2>&1 || { cat "$bdir.cmake.log" >&2; exit 1; }
fi
cmake --build "$bdir" -j"${FUZZ_JOBS:-2}" --target "fuzz_$target"

corpus="$bdir/corpus-$target"
art="$bdir/artifacts-$target"
mkdir -p "$corpus" "$art"
if [ -d "$here/corpus/$target" ]; then
  cp -n "$here/corpus/$target"/* "$corpus"/ 2>/dev/null || true
fi
dict=""
if [ -f "$here/fuzz_$target.dict" ]; then dict="-dict=$here/fuzz_$target.dict"; fi
# shellcheck disable=SC2086
exec "$bdir/tests/fuzz/fuzz_$target" -max_total_time="$secs" -artifact_prefix="$art/" \
  -print_final_stats=1 $dict "$@" "$corpus"
