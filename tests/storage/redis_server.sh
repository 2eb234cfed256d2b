#!/bin/sh
# Runs redis-server in the foreground for the storage tests: loopback only, the given
# port (tests pick a free one), no RDB snapshots, AOF with fsync on every write in DIR
# (so that a SIGKILL loses nothing acknowledged and a restart on DIR finds all data).
# Usage: redis_server.sh DIR PORT [PASSWORD]
# The caller (test) owns the process: it stops it, and it dies with the caller
# (the tests set PR_SET_PDEATHSIG before exec'ing this script).
set -eu
dir=$1
port=$2
pass=${3:-}
[ -d "$dir" ] || { echo "redis_server.sh: no directory $dir" >&2; exit 2; }
set -- --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly yes \
  --appendfsync always --logfile "$dir/redis.log" --daemonize no --protected-mode yes
if [ -n "$pass" ]; then
  set -- "$@" --requirepass "$pass"
fi
exec /usr/bin/redis-server "$@"
