#!/usr/bin/env bash
# batchdet dev stack: the real services a worker talks to, embedded on 127.0.0.1.
#
#   deploy/devstack.sh start  [--dir D] [--www DIR] [--kafka-mock PATH] [--brokers N] [--s3]
#   deploy/devstack.sh stop   [--dir D]
#   deploy/devstack.sh status [--dir D]
#   deploy/devstack.sh env    [--dir D]      (prints D/env)
#
# start runs, each in the background with its log in D/log/:
#   kafka  batchdet-kafka-mock (librdkafka's mock cluster: real Kafka protocol, N=3 brokers,
#          topics batchdet.jobs:12, batchdet.reports:3, batchdet.jobs.dlq:1; control FIFO
#          D/kafka.fifo takes "down ID" / "up ID")
#   redis  redis-server on a free port, appendonly yes (everysec), data in D/redis
#   http   python3 -m http.server serving --www DIR (default D/www) as http://127.0.0.1:PORT/
#   s3     with --s3: s3rver (npm, tests/node) on a free port, bucket "images", data in D/s3
# and writes D/env (KEY=VALUE lines, `set -a; . D/env` exports them):
#   BATCHDET_BROKERS, BATCHDET_REDIS, BATCHDET_HTTP, BATCHDET_HTTP_DIR, BATCHDET_KAFKA_FIFO,
#   with --s3 also AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#
# Every process started is recorded as "PID STARTTIME" in D/pids/NAME.pid; stop signals a pid
# only while /proc still shows that same process (so a recycled pid is never hit), TERM
# first, KILL after a bounded wait. start on a running stack only prints the env; start on
# a half-dead stack stops what is left first. Every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMES=(kafka redis http)

die() { echo "devstack: $*" >&2; exit 1; }

usage() { # the header comment above
  awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"
}

CMD="${1:-}"
[ -n "$CMD" ] || { usage >&2; exit 2; }
shift
DIR="${BATCHDET_DEVSTACK_DIR:-$ROOT/build-devstack}"
WWW=""
MOCK="${BATCHDET_KAFKA_MOCK:-}"
BROKERS=3
S3=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
    --dir=*) DIR="${1#*=}"; shift ;;
    --www) WWW="${2:?--www needs a value}"; shift 2 ;;
    --www=*) WWW="${1#*=}"; shift ;;
    --kafka-mock) MOCK="${2:?--kafka-mock needs a value}"; shift 2 ;;
    --kafka-mock=*) MOCK="${1#*=}"; shift ;;
    --brokers) BROKERS="${2:?--brokers needs a value}"; shift 2 ;;
    --brokers=*) BROKERS="${1#*=}"; shift ;;
    --s3) S3=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "devstack: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDS="$DIR/pids"
# A stack started with --s3 keeps it as a member for status and idempotent start.
if [ -f "$DIR/s3.enabled" ]; then S3=1; fi
if [ "$S3" = 1 ]; then NAMES+=(s3); fi

# Field 22 of /proc/PID/stat (start time in clock ticks since boot): the pair (pid, starttime)
# names one process for the machine's uptime. The command name (field 2) may hold spaces
# and parentheses, so count from the last ')'.
proc_start() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- $stat
  [ $# -ge 20 ] || return 1
  echo "${20}"
}

# alive NAME: the recorded process still exists and is the one we started.
alive() {
  local f="$PIDS/$1.pid" pid start now
  [ -f "$f" ] || return 1
  read -r pid start <"$f" || return 1
  [ -n "$pid" ] && [ -n "$start" ] || return 1
  now="$(proc_start "$pid")" || return 1
  [ "$now" = "$start" ]
}

recorded_pid() { local pid _s; read -r pid _s <"$PIDS/$1.pid" 2>/dev/null && echo "$pid"; }

record() { # NAME PID
  local start
  start="$(proc_start "$2")" || die "$1 (pid $2) exited at once; see $DIR/log/$1.log"
  echo "$2 $start" >"$PIDS/$1.pid"
}

stop_one() {
  local name="$1" pid i
  if ! alive "$name"; then
    rm -f "$PIDS/$name.pid"
    return 0
  fi
  pid="$(recorded_pid "$name")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do # 10 s
    alive "$name" || break
    sleep 0.1
  done
  if alive "$name"; then
    echo "devstack: $name (pid $pid) ignored SIGTERM for 10 s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$name" || break
      sleep 0.1
    done
  fi
  # A child of ours that exited stays a zombie only until this shell exits; /proc still
  # lists it, but it holds no port or file any more.
  rm -f "$PIDS/$name.pid"
  echo "devstack: stopped $name (pid $pid)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() { # PORT
  python3 -c 'import socket,sys
s=socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1",int(sys.argv[1])))==0 else 1)' "$1"
}

find_mock() {
  if [ -n "$MOCK" ]; then
    [ -x "$MOCK" ] || die "--kafka-mock $MOCK is not an executable"
    return
  fi
  local c
  for c in "$ROOT/build-demo/deploy/batchdet-kafka-mock" $(ls -t "$ROOT"/build*/deploy/batchdet-kafka-mock 2>/dev/null); do
    if [ -x "$c" ]; then MOCK="$c"; return; fi
  done
  command -v batchdet-kafka-mock >/dev/null 2>&1 && { MOCK="$(command -v batchdet-kafka-mock)"; return; }
  die "batchdet-kafka-mock not found: build the target (cmake --build BUILD --target batchdet-kafka-mock) or pass --kafka-mock PATH"
}

start_kafka() {
  local bs="$DIR/kafka.bootstrap" i
  rm -f "$bs" "$DIR/kafka.fifo"
  "$MOCK" --brokers "$BROKERS" --bootstrap-file "$bs" --control-fifo "$DIR/kafka.fifo" --no-stdin \
    </dev/null >"$DIR/log/kafka.out" 2>"$DIR/log/kafka.log" &
  record kafka $!
  for ((i = 0; i < 100; i++)); do # 10 s
    [ -s "$bs" ] && break
    alive kafka || die "kafka mock exited; see $DIR/log/kafka.log"
    sleep 0.1
  done
  [ -s "$bs" ] || die "kafka mock wrote no bootstrap address in 10 s; see $DIR/log/kafka.log"
  KAFKA_BS="$(head -n1 "$bs")"
}

start_redis() {
  local port i try
  command -v redis-server >/dev/null || die "redis-server not installed (deploy/install-deps.sh)"
  mkdir -p "$DIR/redis"
  for try in 1 2 3; do # the free port may be taken between probe and bind
    port="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$DIR/redis" --appendonly yes \
      --appendfsync everysec --save "" --daemonize no --protected-mode yes \
      --logfile "$DIR/log/redis.log" </dev/null >/dev/null 2>&1 &
    record redis $!
    for ((i = 0; i < 100; i++)); do # 10 s
      if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        REDIS_PORT="$port"
        return
      fi
      alive redis || break
      sleep 0.1
    done
    stop_one redis >/dev/null
  done
  die "redis-server did not answer PING; see $DIR/log/redis.log"
}

start_http() {
  local port i try
  [ -n "$WWW" ] || WWW="$DIR/www"
  mkdir -p "$WWW"
  WWW="$(cd "$WWW" && pwd)"
  for try in 1 2 3; do
    port="$(free_port)"
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$WWW" \
      </dev/null >"$DIR/log/http.log" 2>&1 &
    record http $!
    for ((i = 0; i < 100; i++)); do
      if port_open "$port"; then
        HTTP_PORT="$port"
        return
      fi
      alive http || break
      sleep 0.1
    done
    stop_one http >/dev/null
  done
  die "the HTTP server did not listen; see $DIR/log/http.log"
}

start_s3() {
  local port i try mods="$ROOT/tests/node/node_modules"
  command -v node >/dev/null || die "--s3 needs node (deploy/install-deps.sh)"
  [ -d "$mods/s3rver" ] || die "--s3 needs s3rver: (cd tests/node && npm install --ignore-scripts)"
  mkdir -p "$DIR/s3"
  for try in 1 2 3; do
    port="$(free_port)"
    # --openssl-legacy-provider: s3rver's ListObjectsV2 continuation tokens use DES.
    node --openssl-legacy-provider -e '
      const S3rver = require(process.argv[1] + "/s3rver");
      new S3rver({address: "127.0.0.1", port: +process.argv[2], silent: true, directory: process.argv[3],
                  configureBuckets: [{name: "images", configs: []}]}).run()
        .catch((e) => { console.error(e); process.exit(1); });' "$mods" "$port" "$DIR/s3" \
      </dev/null >"$DIR/log/s3.log" 2>&1 &
    record s3 $!
    for ((i = 0; i < 100; i++)); do
      if port_open "$port"; then
        S3_PORT="$port"
        return
      fi
      alive s3 || break
      sleep 0.1
    done
    stop_one s3 >/dev/null
  done
  die "s3rver did not listen; see $DIR/log/s3.log"
}

cmd_status() {
  local n any=0 all=1
  for n in "${NAMES[@]}"; do
    if alive "$n"; then
      printf '%-6s running  pid %s\n' "$n" "$(recorded_pid "$n")"
      any=1
    else
      printf '%-6s stopped\n' "$n"
      all=0
    fi
  done
  if [ $any = 1 ] && [ -f "$DIR/env" ]; then sed 's/^/  /' "$DIR/env"; fi
  [ $all = 1 ]
}

cmd_stop() {
  local n
  # Reverse order of start: the HTTP server and Redis before the brokers.
  for n in s3 http redis kafka; do stop_one "$n"; done
  rm -f "$DIR/env" "$DIR/kafka.bootstrap" "$DIR/s3.enabled"
}

cmd_start() {
  local n all=1 any=0
  for n in "${NAMES[@]}"; do
    if alive "$n"; then any=1; else all=0; fi
  done
  if [ $all = 1 ] && [ -f "$DIR/env" ]; then
    echo "devstack: already running ($DIR)" >&2
    cat "$DIR/env"
    return 0
  fi
  [ $any = 0 ] || { echo "devstack: partly running; restarting" >&2; cmd_stop >&2; }
  find_mock
  mkdir -p "$PIDS" "$DIR/log"
  # A failed start (die exits) must not leave half a stack behind.
  STARTING=1
  trap '[ "$STARTING" = 1 ] && cmd_stop >/dev/null 2>&1' EXIT
  start_kafka
  start_redis
  start_http
  if [ "$S3" = 1 ]; then start_s3; touch "$DIR/s3.enabled"; fi
  STARTING=0
  cat >"$DIR/env.tmp" <<EOF
BATCHDET_BROKERS=$KAFKA_BS
BATCHDET_REDIS=redis://127.0.0.1:$REDIS_PORT
BATCHDET_HTTP=http://127.0.0.1:$HTTP_PORT
BATCHDET_HTTP_DIR=$WWW
BATCHDET_KAFKA_FIFO=$DIR/kafka.fifo
BATCHDET_DEVSTACK_DIR=$DIR
EOF
  if [ "$S3" = 1 ]; then
    cat >>"$DIR/env.tmp" <<EOF
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
AWS_ACCESS_KEY_ID=S3RVER
AWS_SECRET_ACCESS_KEY=S3RVER
AWS_REGION=us-east-1
EOF
  fi
  mv "$DIR/env.tmp" "$DIR/env"
  echo "devstack: started in $DIR (logs in $DIR/log)" >&2
  cat "$DIR/env"
}

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) [ -f "$DIR/env" ] && cat "$DIR/env" || die "not running ($DIR/env missing)" ;;
  -h|--help|help) usage ;;
  *) echo "devstack: unknown command '$CMD'" >&2; usage >&2; exit 2 ;;
esac
