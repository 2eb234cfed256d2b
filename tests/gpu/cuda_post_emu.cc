// Host emulation of the bd_cuda_post kernels: gpu/cuda/bd_cuda_post.cu compiled as C++
// over cuda_block_emu.h (one POSIX thread per CUDA thread, barriers, __shared__ as
// statics), with the shuffle, atomics and _rn intrinsics the kernels use.
// It runs the kernels' own block algorithms (block scans, radix select, bitonic sort,
// NMS loop) and launchers, so test_cuda_post_emu checks them without a GPU; only the
// device arithmetic is the host's (the _rn intrinsics are IEEE operations on both).
#include <cmath>

#include "cuda_block_emu.h"

namespace {

int emu_shfl[32][32];

inline int __shfl_up_sync(unsigned, int x, int o) {
  const int lane = emu_tid.x & 31, w = emu_tid.x >> 5;
  emu_shfl[w][lane] = x;
  emu_warp_sync();
  const int r = lane >= o ? emu_shfl[w][lane - o] : x;
  emu_warp_sync();
  return r;
}

inline int atomicAdd(int *p, int v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}

unsigned bd_grid(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}

}  // namespace

#define BD_POST_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), emu_launch((grid), (block), [&] { kernel(__VA_ARGS__); }))
#define BD_CUDA_POST_EMU 1
#include "../../gpu/cuda/bd_cuda_post.cu"
