# Sourced by the device-machine scripts (device_check.sh, device_bench.sh): finds cuDNN and NCCL in the
# Python wheels (the GPU machine has them only there), links them under one temporary
# folder and puts every wheel library folder, .devdeps/lib and the toolkit's lib64 on
# LD_LIBRARY_PATH. Sets: NVCC, SAN, CMAKE_DNN (array of -D flags for a CUDA build), PKG
# (pkg-config stub flag when the machine has none), CUDNN_DIR, NCCL_DIR. Needs ROOT and DD
# (the .devdeps folder).
pymod_dir() { # prints the folder of python package $1 (namespace packages too)
  python3 -c "import importlib, sys
m = importlib.import_module('$1')
print(list(m.__path__)[0])" 2>/dev/null
}
CUDNN_DIR=$(pymod_dir nvidia.cudnn)
NCCL_DIR=$(pymod_dir nvidia.nccl)
NV_DIR=$(pymod_dir nvidia)
SITES=$(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null)
if [ -z "$CUDNN_DIR" ] || [ ! -f "$CUDNN_DIR/include/cudnn.h" ]; then
  h=$(find $SITES -name cudnn.h -path '*include*' 2>/dev/null | head -n 1)
  [ -n "$h" ] && CUDNN_DIR=$(dirname "$(dirname "$h")")
fi
if [ -z "$NCCL_DIR" ] || [ ! -f "$NCCL_DIR/include/nccl.h" ]; then
  h=$(find $SITES -name nccl.h -path '*include*' 2>/dev/null | head -n 1)
  [ -n "$h" ] && NCCL_DIR=$(dirname "$(dirname "$h")")
fi
LIBTMP=$(mktemp -d)
CMAKE_DNN=()
if [ -n "$CUDNN_DIR" ] && [ -f "$CUDNN_DIR/include/cudnn.h" ]; then
  so=$(ls "$CUDNN_DIR"/lib/libcudnn.so* 2>/dev/null | head -n 1)
  [ -n "$so" ] && ln -sf "$so" "$LIBTMP/libcudnn.so"
  CMAKE_DNN+=(-DCUDNN_INC="$CUDNN_DIR/include" -DCUDNN_LIB="$LIBTMP/libcudnn.so")
fi
if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/include/nccl.h" ]; then
  so=$(ls "$NCCL_DIR"/lib/libnccl.so* 2>/dev/null | head -n 1)
  [ -n "$so" ] && ln -sf "$so" "$LIBTMP/libnccl.so"
  CMAKE_DNN+=(-DNCCL_INC="$NCCL_DIR/include" -DNCCL_LIB="$LIBTMP/libnccl.so")
fi
# cuDNN loads its engine libraries, cuBLASLt and NVRTC by name at run time.
if [ -n "$NV_DIR" ]; then
  for d in $(find "$NV_DIR" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u); do
    LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
  done
fi
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
SAN=$(command -v compute-sanitizer || echo "$(dirname "$NVCC")/compute-sanitizer")
export LD_LIBRARY_PATH=$LIBTMP:$DD/lib:${LD_LIBRARY_PATH:-}:$(dirname "$NVCC")/../lib64:/usr/local/cuda/lib64
PKG=()
command -v pkg-config >/dev/null || PKG=(-DPKG_CONFIG_EXECUTABLE="$DD/bin/pkg-config")
