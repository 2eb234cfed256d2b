// Host emulation of CUDA kernels, for compiling a kernel file as host C++ (g++, no GPU):
// cuda_kernel_emu.cc includes this, then one file of gpu/cuda. BD_LAUNCH (which the
// kernel files use for <<<>>>) hands the grid to the emulated runtime (cuda_rt_emu.c) as
// device work: it runs when submitted, or is recorded into the graph its stream is
// capturing and runs at each launch of that graph. Arguments are evaluated at the launch,
// as on a GPU.
//
// A grid runs one block after another. Kernels with block-level cooperation
// (BD_KEMU_THREADED=1: __syncthreads, warp shuffles, WMMA) run one POSIX thread per CUDA
// thread, a barrier for __syncthreads and per-warp barriers for warp-collective
// operations, __shared__ as function statics (the block's shared memory, since blocks run
// in turn). The others run their threads one after another on the calling thread. The
// runtime runs one piece of device work at a time, so this state is never shared.
// Device intrinsics are their IEEE host operations.
#ifndef CUDA_BLOCK_EMU_H
#define CUDA_BLOCK_EMU_H

#include <cuda_runtime.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmath>
#include <functional>

#include "cuda_rt_emu.h"

#define BD_KERNEL_EMU 1
#ifndef BD_KEMU_THREADED
#define BD_KEMU_THREADED 0
#endif

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

inline void __syncthreads() {
  pthread_barrier_wait(&emu_block_bar);
}
inline void emu_warp_sync() {
  pthread_barrier_wait(&emu_warp_bar[emu_tid.x >> 5]);
}

pthread_barrier_t emu_grid_bar; // between blocks: shared memory is reused by the next

struct emu_thread {
  pthread_t th;
  unsigned t, gx, gy;
  void (*body)(void *);
  void *ctx;
};

// One CUDA thread's part of every block of the grid, block after block.
inline void *emu_main(void *arg) {
  emu_thread *e = static_cast<emu_thread *>(arg);
  emu_tid = {e->t, 0, 0};
  for (unsigned by = 0; by < e->gy; ++by)
    for (unsigned bx = 0; bx < e->gx; ++bx) {
      emu_bid = {bx, by, 0};
      e->body(e->ctx);
      pthread_barrier_wait(&emu_grid_bar);
    }
  return nullptr;
}

// Runs a gx x gy grid of `block` threads (<= 1024), one block at a time, a thread each
// (the same threads for every block).
template <typename F>
void emu_launch2(unsigned gx, unsigned gy, unsigned block, F f) {
  static emu_thread th[1024];
  emu_gdim = {gx, gy, 1};
  emu_bdim = {block, 1, 1};
  const unsigned warps = (block + 31) / 32;
  pthread_barrier_init(&emu_block_bar, nullptr, block);
  pthread_barrier_init(&emu_grid_bar, nullptr, block);
  for (unsigned w = 0; w < warps; ++w)
    pthread_barrier_init(&emu_warp_bar[w], nullptr, block - 32 * w < 32 ? block - 32 * w : 32);
  for (unsigned t = 0; t < block; ++t) {
    th[t] = {pthread_t(), t, gx, gy, [](void *c) { (*static_cast<F *>(c))(); }, &f};
    if (pthread_create(&th[t].th, nullptr, emu_main, &th[t]) != 0) __builtin_trap();
  }
  for (unsigned t = 0; t < block; ++t) pthread_join(th[t].th, nullptr);
  pthread_barrier_destroy(&emu_block_bar);
  pthread_barrier_destroy(&emu_grid_bar);
  for (unsigned w = 0; w < warps; ++w) pthread_barrier_destroy(&emu_warp_bar[w]);
}

// The same grid with every thread run in turn on the calling thread (no cooperation).
template <typename F>
void emu_serial2(unsigned gx, unsigned gy, unsigned block, F f) {
  emu_gdim = {gx, gy, 1};
  emu_bdim = {block, 1, 1};
  for (unsigned by = 0; by < gy; ++by)
    for (unsigned bx = 0; bx < gx; ++bx)
      for (unsigned t = 0; t < block; ++t) {
        emu_bid = {bx, by, 0};
        emu_tid = {t, 0, 0};
        f();
      }
}

// Linked in, the kernels are real device work submitted to the runtime, so stream capture
// can record them (cuda_rt_emu.h).
// They keep no shadow floats either, so allocations are exact (AddressSanitizer sees a
// kernel step outside one).
[[maybe_unused]] const int emu_graphs_on = (bd_cuda_emu_graphs = 1, bd_cuda_emu_shadows = 0);

// The error of this thread's last launch (cudaGetLastError in the kernel files).
thread_local cudaError_t emu_last_error = cudaSuccess;
inline cudaError_t emu_take_error() {
  cudaError_t e = emu_last_error;
  emu_last_error = cudaSuccess;
  return e;
}

struct emu_work {
  std::function<void()> f;
};
inline void emu_work_run(void *p) {
  static_cast<emu_work *>(p)->f();
}
inline void emu_work_drop(void *p) {
  delete static_cast<emu_work *>(p);
}

// One launch of kernel k: the configuration checked as the GPU would, the arguments
// copied now, the grid run as device work on stream s.
template <typename K, typename... A>
void emu_kernel(cudaStream_t s, dim3 grid, dim3 block, K k, A... a) {
  if (block.x < 1 || block.x > 1024 || block.y != 1 || block.z != 1 || grid.x < 1 ||
      grid.y < 1 || grid.y > 65535 || grid.z != 1) {
    fprintf(stderr, "cuda emulation: invalid launch configuration (%u,%u,%u) x %u\n", grid.x,
            grid.y, grid.z, block.x);
    emu_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  emu_work *w = new emu_work{[=]() {
    bd_emu_tick();
    auto body = [&] { k(a...); };
    if (BD_KEMU_THREADED)
      emu_launch2(grid.x, grid.y, block.x, body);
    else
      emu_serial2(grid.x, grid.y, block.x, body);
  }};
  cudaError_t e = bd_emu_submit(s, emu_work_run, w, emu_work_drop);
  if (e != cudaSuccess) emu_last_error = e;
}

}  // namespace

// ---- device intrinsics used by the kernel files ----
// At global scope: the CUDA headers, read with __device__ defined away, declare some of
// them there, and these are then their definitions.
static int emu_shfl[32][32];

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
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline int __float2int_rn(float x) {
  return (int)std::nearbyint(x); // the default rounding mode: to nearest, ties to even
}
inline float __expf(float x) {
  return expf(x);
}


#define BD_LAUNCH(kernel, grid, block, stream, ...) \
  emu_kernel((stream), dim3(grid), dim3(block), kernel, __VA_ARGS__)
#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
#define cudaGetLastError() emu_take_error()

#endif
