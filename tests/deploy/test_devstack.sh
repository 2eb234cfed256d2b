#!/usr/bin/env bash
# deploy/devstack.sh: start brings up 3 Kafka brokers, Redis with AOF and an HTTP server on
# 127.0.0.1 and writes D/env; start again is a no-op; a dead member makes start restart the
# stack; stop leaves no process behind and never signals a process it did not start (a
# pid file naming a stranger with another start time).
# Env: BD_SOURCE_DIR, BATCHDET_KAFKA_MOCK.
set -euo pipefail
SRC="${BD_SOURCE_DIR:?}"
DS="$SRC/deploy/devstack.sh"
D="$(mktemp -d /tmp/bd-devstack-test.XXXXXX)"
DECOY=""
fail() { echo "FAIL: $*"; exit 1; }
cleanup() {
  "$DS" stop --dir "$D" >/dev/null 2>&1 || true
  [ -n "$DECOY" ] && kill "$DECOY" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

pids_of() { for n in kafka redis http; do cut -d' ' -f1 "$D/pids/$n.pid"; done; }
running() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

"$DS" start --dir "$D" --kafka-mock "${BATCHDET_KAFKA_MOCK:?}" >"$D/start1.out" 2>&1 || { cat "$D/start1.out"; fail "start"; }
[ -f "$D/env" ] || fail "no $D/env"
set -a; . "$D/env"; set +a
# 3 brokers, each accepting connections on loopback.
IFS=, read -r -a BROKERS <<<"$BATCHDET_BROKERS"
[ "${#BROKERS[@]}" = 3 ] || fail "expected 3 brokers, got '$BATCHDET_BROKERS'"
for b in "${BROKERS[@]}"; do
  [[ "$b" == 127.0.0.1:* ]] || fail "broker $b not on 127.0.0.1"
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5).close()' "${b#*:}" \
    || fail "broker $b refuses connections"
done
# Redis: AOF on, data in D.
[[ "$BATCHDET_REDIS" == redis://127.0.0.1:* ]] || fail "BATCHDET_REDIS=$BATCHDET_REDIS"
RP="${BATCHDET_REDIS##*:}"
[ "$(redis-cli -p "$RP" config get appendonly | tail -n1)" = yes ] || fail "redis appendonly is not yes"
[ "$(redis-cli -p "$RP" config get dir | tail -n1)" = "$D/redis" ] || fail "redis dir is not $D/redis"
redis-cli -p "$RP" set bd-devstack-test 1 >/dev/null
# HTTP: serves the www folder.
echo "hello devstack" >"$BATCHDET_HTTP_DIR/probe.txt"
[ "$(curl -sf --max-time 5 "$BATCHDET_HTTP/probe.txt")" = "hello devstack" ] || fail "HTTP server does not serve $BATCHDET_HTTP_DIR"
"$DS" status --dir "$D" >/dev/null || fail "status says not running"

# start again: same processes.
P1="$(pids_of | tr '\n' ' ')"
"$DS" start --dir "$D" >/dev/null 2>&1 || fail "second start"
P2="$(pids_of | tr '\n' ' ')"
[ "$P1" = "$P2" ] || fail "second start changed the processes ($P1 -> $P2)"

# a member dies: status fails, start restarts the whole stack.
kill "$(cut -d' ' -f1 "$D/pids/http.pid")"
for _ in $(seq 50); do "$DS" status --dir "$D" >/dev/null 2>&1 || break; sleep 0.1; done
if "$DS" status --dir "$D" >/dev/null 2>&1; then fail "status still says running after the HTTP server died"; fi
"$DS" start --dir "$D" >/dev/null 2>&1 || fail "restart after a dead member"
"$DS" status --dir "$D" >/dev/null || fail "not running after restart"
for p in $P1; do running "$p" && fail "old process $p survived the restart"; done
set -a; . "$D/env"; set +a
[ "$(redis-cli -p "${BATCHDET_REDIS##*:}" get bd-devstack-test)" = 1 ] || fail "Redis lost its data across a restart (AOF)"

# stop: every recorded process gone, nothing else touched.
ALL="$(pids_of | tr '\n' ' ')"
sleep 300 &
DECOY=$!
"$DS" stop --dir "$D" >/dev/null || fail "stop"
for p in $ALL; do running "$p" && fail "process $p still running after stop"; done
running "$DECOY" || fail "stop killed an unrelated process"
# A stale pid file naming the decoy (another start time) must not make stop kill it.
mkdir -p "$D/pids"
echo "$DECOY 1" >"$D/pids/redis.pid"
"$DS" stop --dir "$D" >/dev/null || fail "stop with a stale pid file"
running "$DECOY" || fail "stop killed a recycled pid"
[ ! -e "$D/pids/redis.pid" ] || fail "stale pid file left behind"
# stop twice is fine; nothing listens any more.
"$DS" stop --dir "$D" >/dev/null || fail "second stop"
if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2).close()' "${BATCHDET_REDIS##*:}" 2>/dev/null; then
  fail "Redis port still open after stop"
fi
ps -eo pid,args | grep -F "$D" | grep -v grep && fail "processes mentioning $D remain"
echo "devstack: start/idempotent start/restart/stop OK"

# --s3: s3rver joins the stack (when node and the npm test tools are installed).
if command -v node >/dev/null && [ -d "$SRC/tests/node/node_modules/s3rver" ]; then
  "$DS" start --dir "$D" --s3 >"$D/start3.out" 2>&1 || { cat "$D/start3.out"; fail "start --s3"; }
  set -a; . "$D/env"; set +a
  [ -n "${AWS_ENDPOINT_URL_S3:-}" ] || fail "no AWS_ENDPOINT_URL_S3 in env"
  code="$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "hello s3" "$AWS_ENDPOINT_URL_S3/images/k/probe.txt")"
  [ "$code" = 200 ] || fail "PUT to s3rver: HTTP $code"
  [ "$(curl -sf "$AWS_ENDPOINT_URL_S3/images/k/probe.txt")" = "hello s3" ] || fail "GET from s3rver"
  st="$("$DS" status --dir "$D")" || fail "status after start --s3"
  [[ "$st" == *"s3     running"* ]] || fail "status does not list s3: $st"
  S3PID="$(cut -d' ' -f1 "$D/pids/s3.pid")"
  "$DS" stop --dir "$D" >/dev/null || fail "stop with s3"
  running "$S3PID" && fail "s3rver still running after stop"
  echo "devstack --s3 OK"
fi
