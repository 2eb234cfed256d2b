#!/usr/bin/env bash
# Finds the directory that holds NAME.onnx (default yolox_nano) and prints it on stdout,
# for `batchdet worker --models DIR` / BATCHDET_MODELS. Looks in order at:
#   1. $BATCHDET_MODELS/NAME.onnx
#   2. ../shared/data/models/NAME.onnx (the project's shared test data, when present)
#   3. the download cache ${BATCHDET_MODEL_CACHE:-$HOME/.cache/batchdet/models}
#   4. for the YOLOX family: a download with curl from the upstream YOLOX release
#      (github.com/Megvii-BaseDetection/YOLOX, release 0.1.1rc0, Apache-2.0) into the cache.
# Messages go to stderr; exit 1 with a clear message when the model is nowhere and cannot
# be downloaded (no network, proxy, ...).
#   deploy/models.sh [NAME]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${1:-yolox_nano}"
case "$NAME" in
  -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[[ "$NAME" =~ ^[A-Za-z0-9._-]{1,128}$ ]] || { echo "models: bad model name '$NAME'" >&2; exit 2; }

for d in "${BATCHDET_MODELS:-}" "$ROOT/../shared/data/models"; do
  if [ -n "$d" ] && [ -f "$d/$NAME.onnx" ]; then
    (cd "$d" && pwd)
    exit 0
  fi
done

CACHE="${BATCHDET_MODEL_CACHE:-${HOME:-/tmp}/.cache/batchdet/models}"
if [ -f "$CACHE/$NAME.onnx" ]; then
  echo "$CACHE"
  exit 0
fi

case "$NAME" in
  yolox_nano | yolox_tiny | yolox_s | yolox_m | yolox_l | yolox_x | yolox_darknet) ;;
  *)
    echo "models: $NAME.onnx not found in \$BATCHDET_MODELS (${BATCHDET_MODELS:-unset}), ../shared/data/models" \
         "or $CACHE, and only the YOLOX release models can be downloaded; put $NAME.onnx in a folder" \
         "and set BATCHDET_MODELS" >&2
    exit 1 ;;
esac
URL="${BATCHDET_MODEL_URL:-https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/$NAME.onnx}"
command -v curl >/dev/null || { echo "models: curl is not installed; cannot download $URL" >&2; exit 1; }
mkdir -p "$CACHE"
tmp="$(mktemp "$CACHE/.$NAME.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
echo "models: downloading $URL" >&2
if ! curl --fail --location --silent --show-error --connect-timeout 15 --max-time 600 \
     --retry 2 -o "$tmp" "$URL"; then
  echo "models: could not download $URL (no network access from this machine?)." >&2
  echo "models: fetch it elsewhere and put it at \$BATCHDET_MODELS/$NAME.onnx, or set BATCHDET_MODELS" \
       "to a folder that has it." >&2
  exit 1
fi
# An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08. A proxy's HTML
# error page or a truncated file is refused here rather than at model load.
size="$(stat -c %s "$tmp")"
first="$(head -c1 "$tmp" | od -An -tx1 | tr -d ' ')"
if [ "$size" -lt 100000 ] || [ "$first" != "08" ]; then
  echo "models: $URL did not give an ONNX file ($size bytes, first byte 0x$first)" >&2
  exit 1
fi
mv "$tmp" "$CACHE/$NAME.onnx"
trap - EXIT
echo "models: saved $CACHE/$NAME.onnx ($size bytes)" >&2
echo "$CACHE"
