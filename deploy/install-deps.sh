#!/usr/bin/env bash
# Installs every build and test dependency of batchdet on a fresh Debian 12 machine.
# Idempotent: packages already present are skipped, and apt-get update runs at most once.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  protobuf-c-compiler libprotobuf-c-dev libonnx-dev
  libjansson-dev libcmocka-dev
  libopenblas-dev
  libturbojpeg0-dev libjpeg-turbo-progs libpng-dev zlib1g-dev
  librdkafka-dev libhiredis-dev libcurl4-openssl-dev libmicrohttpd-dev
  redis-server tmux chromium fonts-dejavu-core python3-yaml curl
  python3 python3-torch python3-onnx python3-numpy python3-opencv
  clang libclang-rt-14-dev
  nodejs
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all Debian packages present"
fi

# npm comes with the nodesource nodejs on our machines; Debian's nodejs needs the npm package.
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

# Test tools from npm, kept in tests/node (not committed: node_modules is ignored).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$ROOT/tests/node/package.json" ] && [ ! -d "$ROOT/tests/node/node_modules/onnxruntime-node" ]; then
  echo "install-deps: npm test tools"
  (cd "$ROOT/tests/node" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "install-deps: done"
