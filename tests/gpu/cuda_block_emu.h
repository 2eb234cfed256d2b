// Host emulation of CUDA thread blocks, for compiling a kernel file as host C++ (g++,
// no GPU): one POSIX thread per CUDA thread, a barrier for __syncthreads, per-warp
// barriers for warp-collective operations, __shared__ as function statics (blocks of a
// grid run one after another, so statics are the block's shared memory). Used by
// cuda_post_emu.cc (bd_cuda_post.cu) and cuda_mma_emu.cc (bd_cuda_conv_mma.cu); each
// includes this, adds the intrinsics its kernels use, then includes the .cu.
#ifndef CUDA_BLOCK_EMU_H
#define CUDA_BLOCK_EMU_H

#include <cuda_runtime.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

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

struct emu_thread {
  pthread_t th;
  unsigned t, bx, by;
  void (*body)(void *);
  void *ctx;
};

inline void *emu_main(void *arg) {
  emu_thread *e = static_cast<emu_thread *>(arg);
  emu_tid = {e->t, 0, 0};
  emu_bid = {e->bx, e->by, 0};
  e->body(e->ctx);
  return nullptr;
}

// Runs a gx x gy grid of `block` threads (<= 1024), one block at a time.
template <typename F>
void emu_launch2(unsigned gx, unsigned gy, unsigned block, F f) {
  static emu_thread th[1024];
  emu_gdim = {gx, gy, 1};
  emu_bdim = {block, 1, 1};
  const unsigned warps = (block + 31) / 32;
  for (unsigned by = 0; by < gy; ++by)
    for (unsigned bx = 0; bx < gx; ++bx) {
      pthread_barrier_init(&emu_block_bar, nullptr, block);
      for (unsigned w = 0; w < warps; ++w)
        pthread_barrier_init(&emu_warp_bar[w], nullptr, block - 32 * w < 32 ? block - 32 * w : 32);
      for (unsigned t = 0; t < block; ++t) {
        th[t] = {pthread_t(), t, bx, by, [](void *c) { (*static_cast<F *>(c))(); }, &f};
        if (pthread_create(&th[t].th, nullptr, emu_main, &th[t]) != 0) __builtin_trap();
      }
      for (unsigned t = 0; t < block; ++t) pthread_join(th[t].th, nullptr);
      pthread_barrier_destroy(&emu_block_bar);
      for (unsigned w = 0; w < warps; ++w) pthread_barrier_destroy(&emu_warp_bar[w]);
    }
}

template <typename F>
void emu_launch(unsigned grid, unsigned block, F f) {
  emu_launch2(grid, 1, block, f);
}

}  // namespace

#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
#define cudaGetLastError() (cudaSuccess)

#endif
