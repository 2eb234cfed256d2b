#!/usr/bin/env bash
# End-to-end worker throughput for 1, 2, 4, 8 worker processes (sim devices) against the
# embedded Kafka daemon and redis-server, with the scaling efficiency. Not a ctest.
#   tests/bench/worker_scale.sh [BUILD_DIR]
# Environment: SCALE_WORKERS ("1 2 4 8"), SCALE_IMAGES (2000), SCALE_SHARD (50),
# SCALE_DEVICES (sim:1:20). Use a Release build for meaningful numbers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
build="${1:-$src/build}"
export BATCHDET="${BATCHDET:-$build/cli/batchdet}"
export BD_KAFKA_MOCK="${BD_KAFKA_MOCK:-$build/deploy/batchdet-kafka-mock}"
export BD_TEST_PRODUCE="${BD_TEST_PRODUCE:-$build/tests/worker/bd_test_produce}"
export BD_TEST_DATA="${BD_TEST_DATA:-$src/../shared/data}"
export BD_REDIS_SERVER="${BD_REDIS_SERVER:-$(command -v redis-server)}"
for f in "$BATCHDET" "$BD_KAFKA_MOCK" "$BD_TEST_PRODUCE" "$BD_REDIS_SERVER"; do
  [[ -x "$f" ]] || { echo "worker_scale.sh: missing $f (build batchdet, batchdet-kafka-mock, bd_test_produce)" >&2; exit 2; }
done
exec /usr/bin/python3 "$src/tests/worker/wk_scale.py"
