#!/usr/bin/env bash
# Fetch and decode throughput next to libjpeg-turbo's own tjbench, on this machine.
#
#   BENCH=build-rel/tests/storage/bench_fetch_decode tests/bench/fetch_decode.sh [SECONDS] [REQUESTS] [THREADS] [ROUNDS]
#
# Starts Python's http.server on 127.0.0.1 (a free port) serving the shared photos,
# runs tjbench (Debian libjpeg-turbo-progs) on each JPEG for its single-threaded
# decompression Mpixels/s, then bench_fetch_decode, which prints markdown tables.
# BD_BENCH_SMOKE=1 runs tiny counts (the ctest smoke run). Use a Release build for numbers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
data=${BD_TEST_DATA:-$here/../../../shared/data}
images=$data/images
bench=${BENCH:-}
if [[ -z "$bench" && -n "${BD_BINARY_DIR:-}" ]]; then bench=$BD_BINARY_DIR/tests/storage/bench_fetch_decode; fi
[[ -x "$bench" ]] || { echo "fetch_decode.sh: set BENCH to the bench_fetch_decode binary" >&2; exit 2; }
bench=$(realpath "$bench")
[[ -d "$images" ]] || { echo "fetch_decode.sh: no photos in $images" >&2; exit 2; }

if [[ "${BD_BENCH_SMOKE:-0}" == 1 ]]; then
  secs=0.05 nreq=20 conc=8 rounds=1 threads=${3:-2}
else
  secs=${1:-2} nreq=${2:-500} conc=64 rounds=${4:-2} threads=${3:-0}
fi

tmp=$(mktemp -d /tmp/fetch_decode.XXXXXX)
server=""
cleanup() {
  if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# `python3 -m http.server`, except for the listen backlog: its default of 5 overflows
# under 64 concurrent connects and the kernel's 1 s SYN retransmits then dominate the
# timing (seen: 31 s for 500 GETs on a loaded machine). Port 0: the kernel picks one.
python3 -u -c '
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
with Server(("127.0.0.1", 0), handler) as httpd:
    print("Serving HTTP on 127.0.0.1 port %d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()
' "$images" >"$tmp/server.out" 2>"$tmp/server.log" &
server=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.* port \([0-9][0-9]*\).*/\1/p' "$tmp/server.out" 2>/dev/null | head -1)
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "$port" ]] || { echo "fetch_decode.sh: http.server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }

echo "## Fetch and decode: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Machine: nproc $(nproc), CPU \"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)\", load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo "libjpeg-turbo: $(dpkg-query -W -f='${Version}' libturbojpeg0 2>/dev/null || echo unknown)."
echo "Command: fetch_decode.sh $secs $nreq $threads $rounds (bench $bench)"

# tjbench (single-threaded, -rgb like our decoder, -nowrite) runs from inside the bench,
# alternating with our decoder on each JPEG, so that both see the same machine load.
tjargs=()
if command -v tjbench >/dev/null; then
  tjargs=(--tjbench "$(command -v tjbench)")
  echo "tjbench: $(command -v tjbench) IMAGE.jpg -rgb -benchtime $secs -warmup min(0.25*$secs,0.5) -nowrite, best of $rounds"
else
  echo "tjbench: not installed (Debian libjpeg-turbo-progs); no ratio column"
fi

cd "$tmp" # tjbench runs in the bench's directory; keep anything it writes out of the tree
"$bench" --images "$images" --url "http://127.0.0.1:$port/" --requests "$nreq" --concurrency "$conc" \
  --decode-seconds "$secs" --threads "$threads" "${tjargs[@]}" --rounds "$rounds" --target 416x416
