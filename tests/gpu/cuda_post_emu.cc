// Host emulation of the bd_cuda_post kernels: gpu/cuda/bd_cuda_post.cu compiled as C++
// with one POSIX thread per CUDA thread, a barrier for __syncthreads, per-warp barriers
// for the shuffles and __shared__ as function statics (blocks run one after another).
// It runs the kernels' own block algorithms (block scans, radix select, bitonic sort,
// NMS loop) and launchers, so test_cuda_post_emu checks them without a GPU; only the
// device arithmetic is the host's (the _rn intrinsics are IEEE operations on both).
#include <cuda_runtime.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <cmath>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace {

struct emu_dim3 {
  unsigned x, y, z;
};
thread_local emu_dim3 emu_tid, emu_bid;
emu_dim3 emu_bdim, emu_gdim;
pthread_barrier_t emu_block_bar;
pthread_barrier_t emu_warp_bar[32];
int emu_shfl[32][32];

inline void __syncthreads() {
  pthread_barrier_wait(&emu_block_bar);
}

inline int __shfl_up_sync(unsigned, int x, int o) {
  const int lane = emu_tid.x & 31, w = emu_tid.x >> 5;
  emu_shfl[w][lane] = x;
  pthread_barrier_wait(&emu_warp_bar[w]);
  const int r = lane >= o ? emu_shfl[w][lane - o] : x;
  pthread_barrier_wait(&emu_warp_bar[w]);
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

struct emu_thread {
  pthread_t th;
  unsigned t, b;
  void (*body)(void *);
  void *ctx;
};

void *emu_main(void *arg) {
  emu_thread *e = static_cast<emu_thread *>(arg);
  emu_tid = {e->t, 0, 0};
  emu_bid = {e->b, 0, 0};
  e->body(e->ctx);
  return nullptr;
}

// Runs grid blocks of `block` threads (a multiple of 32, <= 1024), one block at a time.
template <typename F>
void emu_launch(unsigned grid, unsigned block, F f) {
  static emu_thread th[1024];
  emu_gdim = {grid, 1, 1};
  emu_bdim = {block, 1, 1};
  const unsigned warps = (block + 31) / 32;
  for (unsigned b = 0; b < grid; ++b) {
    pthread_barrier_init(&emu_block_bar, nullptr, block);
    for (unsigned w = 0; w < warps; ++w)
      pthread_barrier_init(&emu_warp_bar[w], nullptr, block - 32 * w < 32 ? block - 32 * w : 32);
    for (unsigned t = 0; t < block; ++t) {
      th[t] = {pthread_t(), t, b, [](void *c) { (*static_cast<F *>(c))(); }, &f};
      if (pthread_create(&th[t].th, nullptr, emu_main, &th[t]) != 0) __builtin_trap();
    }
    for (unsigned t = 0; t < block; ++t) pthread_join(th[t].th, nullptr);
    pthread_barrier_destroy(&emu_block_bar);
    for (unsigned w = 0; w < warps; ++w) pthread_barrier_destroy(&emu_warp_bar[w]);
  }
}

}  // namespace

#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
#define cudaGetLastError() (cudaSuccess)
#define BD_POST_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), emu_launch((grid), (block), [&] { kernel(__VA_ARGS__); }))
#define BD_CUDA_POST_EMU 1
#include "../../gpu/cuda/bd_cuda_post.cu"
