// Host emulation of CUDA kernels, for compiling a kernel file as host C++ (g++, no GPU):
// cuda_kernel_emu.cc includes this, then one file of gpu/cuda. BD_LAUNCH (which the
// kernel files use for <<<>>>) hands the grid to the emulated runtime (cuda_rt_emu.c) as
// device work: it runs when submitted, or is recorded into the graph its stream is
// capturing and runs at each launch of that graph. Arguments are evaluated at the launch,
// as on a GPU.
//
// A grid runs one block after another. Kernels with block-level cooperation
// (BD_KEMU_THREADED=1: __syncthreads, warp shuffles, WMMA) run one fiber per CUDA thread
// (below), __shared__ as function statics (the block's shared memory, since blocks run
// in turn). The others run their threads one after another on the calling thread. The
// runtime runs one piece of device work at a time, so this state is never shared.
// Device intrinsics are their IEEE host operations.
#ifndef CUDA_BLOCK_EMU_H
#define CUDA_BLOCK_EMU_H

#include <cuda_runtime.h>

#include <stdint.h>
#include <ucontext.h>
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
#undef __grid_constant__
#define __grid_constant__

namespace {

struct emu_dim3 {
  unsigned x, y, z;
};
thread_local emu_dim3 emu_tid, emu_bid;
emu_dim3 emu_bdim, emu_gdim;

// ---- cooperating blocks: one fiber per CUDA thread ----
// A block's threads are fibers (ucontext) on the launching thread, run in turn: each
// runs until it waits at a barrier or ends. __syncthreads releases the block's waiting
// fibers once every fiber that has not ended waits there; a warp-collective operation
// (emu_warp_sync) releases its warp's fibers the same way. A barrier nothing can reach
// (a __syncthreads some threads skip while others wait) aborts, where a GPU would hang.
// AddressSanitizer is told about every stack switch.
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
extern "C" void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                               size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                                size_t *size_old);
extern "C" void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

// Switching stacks. On x86-64 a switch of our own (emu_ctx_switch): the callee-saved
// registers, MXCSR and the x87 control word pushed on the stack being left, its stack
// pointer stored, the other's loaded and popped; no system call. swapcontext saves and
// restores the signal mask with one on every switch, and under ASan its interceptor also
// clears the shadow of the target's whole stack (2 x 32 KB for a 256 KB stack): together
// over half of a model test's time over this emulation. Elsewhere, swapcontext. The
// switches are announced to ASan (emu_resume, emu_yield). A fiber's frames below its
// entry function all return before it ends; the entry's and emu_yield's, which do not,
// lie in the stack's top EMU_TOP bytes (checked as the fiber ends), whose shadow is
// cleared before the next block reuses the stack.
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1
extern "C" void emu_ctx_switch(void **save_sp, void *to_sp);
// Weak: every object over this header defines the same code; the link keeps one.
asm(".text\n.weak emu_ctx_switch\n.type emu_ctx_switch,@function\nemu_ctx_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size emu_ctx_switch, .-emu_ctx_switch\n");
#endif

enum emu_wait { EMU_RUN, EMU_BLOCK_BAR, EMU_WARP_BAR, EMU_DONE };
// One cp.async in flight: its 16 bytes (read at the issue: sources are inputs no kernel
// writes while it runs), where they land, and its group (the thread's commits before it).
struct emu_cp {
  unsigned char *dst;
  unsigned char data[16];
  unsigned group;
};
constexpr unsigned EMU_CP_MAX = 256; // copies a thread may have in flight
struct emu_fiber {
#ifdef EMU_FAST_SWITCH
  void *sp; // where its stack pointer was left
#else
  ucontext_t ctx;
#endif
  char *stack;
  emu_wait wait;
  emu_cp cp[EMU_CP_MAX]; // in issue order
  unsigned n_cp, groups; // copies in flight; groups committed
  unsigned n_mma;        // mma.sync calls made (cuda_mma_emu.h)
  unsigned n_px;         // entries of px: units it wrote and has not fenced (emu_px_*)
  uint32_t px[EMU_CP_MAX];
};
constexpr size_t EMU_STACK = (size_t)256 << 10; // ASan's redzones need room
constexpr size_t EMU_TOP = 8192; // the frames left behind as a fiber ends (EMU_FAST_SWITCH)
emu_fiber emu_fibers[1024];
#ifdef EMU_FAST_SWITCH
void *emu_sched_sp;
#else
ucontext_t emu_sched_ctx;
#endif
#ifdef EMU_ASAN
const void *emu_sched_bottom; // the scheduler's stack, for the switches back
size_t emu_sched_size;
#endif
unsigned emu_cur;        // the fiber running now
std::function<void()> *emu_body;

// From the running fiber back to the scheduler (w: what it waits for).
inline void emu_yield(emu_wait w) {
  emu_fiber &f = emu_fibers[emu_cur];
  f.wait = w;
#ifdef EMU_ASAN
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(w == EMU_DONE ? nullptr : &fake, emu_sched_bottom,
                                 emu_sched_size);
#endif
#ifdef EMU_FAST_SWITCH
  if (w == EMU_DONE &&
      static_cast<char *>(__builtin_frame_address(0)) < f.stack + EMU_STACK - EMU_TOP) {
    fprintf(stderr, "cuda emulation: a fiber ends below its stack's top %zu bytes\n", EMU_TOP);
    abort();
  }
  emu_ctx_switch(&f.sp, emu_sched_sp); // once done, never resumed
#else
  if (w == EMU_DONE) return; // the entry function returns to uc_link
  swapcontext(&f.ctx, &emu_sched_ctx);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// ---- the async proxy's view of shared memory (fence.proxy.async) ----
// wgmma reads its shared operands through the async proxy; cp.async (like a plain store)
// writes through the generic one, so a thread's landed copies must be followed by its
// fence.proxy.async (then the barrier) before a wgmma reads them. In the shared block a
// wgmma kernel watches (emu_px_watch, from cuda_mma_emu.h's emu_wg_begin) every 16 bytes
// hold a tag while they hold a copy landed but not yet fenced by the thread that landed
// it: (the block's epoch << 16) | (thread + 1), 0 or an older epoch when fenced. A wgmma
// operand read on a unit tagged in this block aborts (cuda_mma_emu.h). Plain stores are
// not seen; the wgmma tiles write their operands by cp.async only.
static unsigned char *emu_px_origin;
static size_t emu_px_units;
static uint64_t *emu_px_tag, emu_px_epoch; // emu_px_epoch: one per block run
inline void emu_px_watch(const void *smem, size_t bytes) {
  unsigned char *o = static_cast<unsigned char *>(const_cast<void *>(smem));
  if (o != emu_px_origin || (bytes + 15) / 16 != emu_px_units) {
    free(emu_px_tag);
    emu_px_units = (bytes + 15) / 16;
    if (!(emu_px_tag = static_cast<uint64_t *>(calloc(emu_px_units, sizeof(uint64_t)))))
      __builtin_trap();
    emu_px_origin = o;
  }
}
// The tag of thread t's unfenced copies in this block.
inline uint64_t emu_px_tag_of(unsigned t) { return emu_px_epoch << 16 | (t + 1); }
// The watched unit holding p, or -1 outside the watched block.
inline int64_t emu_px_unit(const void *p) {
  const unsigned char *c = static_cast<const unsigned char *>(p);
  if (!emu_px_origin || c < emu_px_origin || c >= emu_px_origin + emu_px_units * 16) return -1;
  return (c - emu_px_origin) / 16;
}
// The copy of fiber f landed at dst: tagged until f fences.
inline void emu_px_landed(emu_fiber &f, const unsigned char *dst) {
  const int64_t u = emu_px_unit(dst);
  if (u < 0) return;
  const unsigned t = (unsigned)(&f - emu_fibers);
  emu_px_tag[u] = emu_px_tag_of(t);
  if (f.n_px == EMU_CP_MAX) {
    fprintf(stderr, "cuda emulation: thread %u landed %u copies without fence.proxy.async\n",
            t, EMU_CP_MAX);
    abort();
  }
  f.px[f.n_px++] = (uint32_t)u;
}
// fence.proxy.async by the running thread: its landed copies are visible to the async
// proxy (after the barrier that follows).
inline void emu_px_fence() {
  emu_fiber &f = emu_fibers[emu_cur];
  for (unsigned i = 0; i < f.n_px; ++i)
    if (emu_px_tag[f.px[i]] == emu_px_tag_of(emu_cur)) emu_px_tag[f.px[i]] = 0;
  f.n_px = 0;
}
// The thread whose landed copy in p's 16 bytes is not yet fenced (in this block), or -1.
inline int emu_px_unfenced(const void *p) {
  const int64_t u = emu_px_unit(p);
  const uint64_t t = u < 0 ? 0 : emu_px_tag[u];
  return t && t >> 16 == emu_px_epoch ? (int)(t & 0xFFFFu) - 1 : -1;
}

// ---- cp.async (bd_cuda_conv_mma.cu's cp16, cp_commit, cp_wait) ----
// A copy lands only when its thread waits for its group (cp.async.wait_group N: every
// committed group but the N newest), or when the thread ends (a copy nobody waited for
// lands as late as it can); until then its destination holds 0xFF bytes (NaN in FP16 and
// BF16). So a stage read before its wait and barrier, a wait count one too lax, or a
// stage refilled while another warp still reads it gives wrong results here, as it may
// on a GPU, instead of the copies' data being there already.
inline void emu_cp_land(emu_fiber &f, unsigned below) {
  unsigned k = 0;
  for (unsigned i = 0; i < f.n_cp; ++i) {
    if (f.cp[i].group < below) {
      memcpy(f.cp[i].dst, f.cp[i].data, 16);
      emu_px_landed(f, f.cp[i].dst);
    } else
      f.cp[k++] = f.cp[i];
  }
  f.n_cp = k;
}
// 16 bytes from src to dst (shared), or 16 zeros where !ok (src is not read).
inline void emu_cp_async16(void *dst, const void *src, bool ok) {
  // The hardware faults ("misaligned address") unless both addresses of a 16-byte
  // cp.async are 16-byte aligned, whether or not it reads (src-size 0).
  if (((uintptr_t)dst | (uintptr_t)src) & 15u) {
    fprintf(stderr, "cuda emulation: cp.async of 16 bytes from %p to %p: misaligned address\n",
            src, dst);
    abort();
  }
  if (!BD_KEMU_THREADED) {
    ok ? memcpy(dst, src, 16) : memset(dst, 0, 16);
    return;
  }
  emu_fiber &f = emu_fibers[emu_cur];
  if (f.n_cp == EMU_CP_MAX) {
    fprintf(stderr, "cuda emulation: thread %u has %u cp.async in flight\n", emu_cur,
            EMU_CP_MAX);
    abort();
  }
  emu_cp &c = f.cp[f.n_cp++];
  c.dst = static_cast<unsigned char *>(dst);
  ok ? memcpy(c.data, src, 16) : memset(c.data, 0, 16);
  c.group = f.groups;
  memset(dst, 0xFF, 16);
}
inline void emu_cp_commit() {
  if (BD_KEMU_THREADED) ++emu_fibers[emu_cur].groups;
}
inline void emu_cp_wait(unsigned n) {
  if (!BD_KEMU_THREADED) return;
  emu_fiber &f = emu_fibers[emu_cur];
  if (f.groups > n) emu_cp_land(f, f.groups - n);
}

inline void emu_fiber_entry() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &emu_sched_bottom, &emu_sched_size);
#endif
  (*emu_body)();
  emu_cp_land(emu_fibers[emu_cur], ~0u);
  emu_yield(EMU_DONE);
}

inline void __syncthreads() {
  emu_yield(EMU_BLOCK_BAR);
}
inline void emu_warp_sync() {
  emu_yield(EMU_WARP_BAR);
}
inline void __syncwarp(unsigned = 0xFFFFFFFFu) {
  emu_warp_sync();
}

// From the scheduler into fiber t until it yields or ends (a function of its own: the
// caller's variables are not live across the switch).
__attribute__((noinline)) inline void emu_resume(unsigned t) {
  emu_fiber &f = emu_fibers[t];
  emu_cur = t;
  emu_tid = {t, 0, 0};
#ifdef EMU_ASAN
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, EMU_STACK);
#endif
#ifdef EMU_FAST_SWITCH
  emu_ctx_switch(&emu_sched_sp, f.sp);
#else
  swapcontext(&emu_sched_ctx, &f.ctx);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Fiber t ready to start the kernel body (its stack allocated once, kept for later blocks).
__attribute__((noinline)) inline void emu_fiber_init(unsigned t) {
  emu_fiber &f = emu_fibers[t];
  if (!f.stack && !(f.stack = static_cast<char *>(malloc(EMU_STACK)))) __builtin_trap();
#ifdef EMU_FAST_SWITCH
  // The frame emu_ctx_switch pops to enter emu_fiber_entry as if called: MXCSR and the
  // x87 control word as the scheduler's, six zero registers, the entry as the return
  // address, then a zero return address of its own at a 16-byte boundary plus 8.
  uint64_t *top = reinterpret_cast<uint64_t *>(
      (reinterpret_cast<uintptr_t>(f.stack) + EMU_STACK) & ~(uintptr_t)15);
#ifdef EMU_ASAN
  __asan_unpoison_memory_region(f.stack + EMU_STACK - EMU_TOP, EMU_TOP);
#endif
  uint64_t *sp = top - 9;
  uint32_t mx;
  uint16_t cw;
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mx), "=m"(cw));
  sp[0] = (uint64_t)mx | (uint64_t)cw << 32;
  for (int i = 1; i <= 6; ++i) sp[i] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&emu_fiber_entry);
  sp[8] = 0;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = EMU_STACK;
  f.ctx.uc_link = &emu_sched_ctx;
  makecontext(&f.ctx, emu_fiber_entry, 0);
#endif
  f.wait = EMU_RUN;
  f.n_cp = f.groups = f.n_mma = f.n_px = 0;
}

// The order a block's runnable threads run in, between two barriers: BD_KEMU_ORDER
// forward, reverse, or shuffle (the default: a fresh permutation every round, seeded by
// the block and the round, so runs repeat). A GPU runs them in no order; a kernel that
// reads another thread's shared memory without a barrier between gets what it wrote
// before or not depending on the order, so a race shows as a wrong result in some order.
enum emu_order_mode { EMU_ORDER_SHUFFLE, EMU_ORDER_FORWARD, EMU_ORDER_REVERSE };
inline emu_order_mode emu_order_mode_get() {
  static int m = -1;
  if (m < 0) {
    const char *e = getenv("BD_KEMU_ORDER");
    m = !e || !strcmp(e, "shuffle") ? EMU_ORDER_SHUFFLE
        : !strcmp(e, "forward")    ? EMU_ORDER_FORWARD
        : !strcmp(e, "reverse")    ? EMU_ORDER_REVERSE
                                   : -2;
    if (m == -2) {
      fprintf(stderr, "cuda emulation: BD_KEMU_ORDER=%s: expected forward, reverse or "
                      "shuffle\n", e);
      abort();
    }
  }
  return (emu_order_mode)m;
}
inline uint64_t emu_mix(uint64_t x) { // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline void emu_order(unsigned *ord, unsigned block, uint64_t seed) {
  const emu_order_mode m = emu_order_mode_get();
  for (unsigned t = 0; t < block; ++t) ord[t] = m == EMU_ORDER_REVERSE ? block - 1 - t : t;
  if (m != EMU_ORDER_SHUFFLE) return;
  uint64_t s = emu_mix(seed) | 1;
  for (unsigned t = block - 1; t > 0; --t) { // Fisher-Yates over xorshift64*
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    const unsigned j = (unsigned)((s * 0x2545F4914F6CDD1Dull >> 33) % (t + 1));
    const unsigned x = ord[t];
    ord[t] = ord[j], ord[j] = x;
  }
}

// Runs one block of `block` fibers to the end.
inline void emu_run_block(unsigned block) {
  ++emu_px_epoch; // the previous block's unfenced copies are no concern of this one
  for (unsigned t = 0; t < block; ++t) emu_fiber_init(t);
  const unsigned warps = (block + 31) / 32;
  static unsigned ord[1024];
  const uint64_t bid = ((uint64_t)emu_bid.z << 42) ^ ((uint64_t)emu_bid.y << 21) ^ emu_bid.x;
  for (uint64_t round = 0;; ++round) {
    unsigned live = 0;
    emu_order(ord, block, bid * 1000003u + round);
    for (unsigned i = 0; i < block; ++i) {
      const unsigned t = ord[i];
      emu_fiber &f = emu_fibers[t];
      if (f.wait != EMU_RUN) continue;
      emu_resume(t);
    }
    int released = 0;
    unsigned at_block = 0;
    for (unsigned t = 0; t < block; ++t) {
      live += emu_fibers[t].wait != EMU_DONE;
      at_block += emu_fibers[t].wait == EMU_BLOCK_BAR;
    }
    if (!live) return;
    if (at_block == live) {
      for (unsigned t = 0; t < block; ++t)
        if (emu_fibers[t].wait == EMU_BLOCK_BAR) emu_fibers[t].wait = EMU_RUN;
      continue;
    }
    // The warps whose live threads all wait at a warp barrier go on: all of them, or
    // when shuffling a random non-empty subset, so that warps drift apart as on a GPU (one
    // may run on to the next __syncthreads while another is still between warp barriers:
    // a shared buffer reused without a block barrier gets overwritten under its reader).
    static unsigned ready[32];
    unsigned n_ready = 0;
    for (unsigned w = 0; w < warps; ++w) {
      unsigned lo = 32 * w, hi = lo + 32 < block ? lo + 32 : block, n_live = 0, n_wait = 0;
      for (unsigned t = lo; t < hi; ++t) {
        n_live += emu_fibers[t].wait != EMU_DONE;
        n_wait += emu_fibers[t].wait == EMU_WARP_BAR;
      }
      if (n_wait && n_wait == n_live) ready[n_ready++] = w;
    }
    const bool subset = n_ready > 1 && emu_order_mode_get() == EMU_ORDER_SHUFFLE;
    const uint64_t pick = subset ? emu_mix(~(bid * 1000003u + round)) : ~0ull;
    for (unsigned i = 0; i < n_ready; ++i) {
      if (subset && !(pick >> (i % 64) & 1) && i != (unsigned)(pick % n_ready)) continue;
      const unsigned lo = 32 * ready[i], hi = lo + 32 < block ? lo + 32 : block;
      for (unsigned t = lo; t < hi; ++t)
        if (emu_fibers[t].wait == EMU_WARP_BAR) emu_fibers[t].wait = EMU_RUN;
      released = 1;
    }
    if (!released) {
      fprintf(stderr, "cuda emulation: block (%u,%u,%u) deadlocked: %u of %u live threads at "
                      "__syncthreads, the others at warp barriers of partial warps\n",
              emu_bid.x, emu_bid.y, emu_bid.z, at_block, live);
      abort();
    }
  }
}

// Runs a gx x gy x gz grid of `block` threads (<= 1024), one block at a time.
template <typename F>
void emu_launch2(unsigned gx, unsigned gy, unsigned gz, unsigned block, F f) {
  emu_gdim = {gx, gy, gz};
  emu_bdim = {block, 1, 1};
  std::function<void()> body = [&f] { f(); };
  emu_body = &body;
  for (unsigned bz = 0; bz < gz; ++bz)
    for (unsigned by = 0; by < gy; ++by)
      for (unsigned bx = 0; bx < gx; ++bx) {
        emu_bid = {bx, by, bz};
        emu_run_block(block);
      }
  emu_body = nullptr;
}

// The same grid with every thread run in turn on the calling thread (no cooperation).
template <typename F>
void emu_serial2(unsigned gx, unsigned gy, unsigned gz, unsigned block, F f) {
  emu_gdim = {gx, gy, gz};
  emu_bdim = {block, 1, 1};
  for (unsigned bz = 0; bz < gz; ++bz)
    for (unsigned by = 0; by < gy; ++by)
      for (unsigned bx = 0; bx < gx; ++bx)
        for (unsigned t = 0; t < block; ++t) {
          emu_bid = {bx, by, bz};
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

// Launches made while the backend's programmatic-dependent-launch switch was on
// (bd_cuda_kernels.h; cuda_rt_emu.c counts them): the attribute means nothing here, but
// which graphs would carry it is the backend's policy, and tests check it.
extern "C" int bd_cuda_pdl;
extern "C" long bd_emu_pdl_launches;

// One launch of kernel k: the configuration checked as the GPU would, the arguments
// copied now, the grid run as device work on stream s.
template <typename K, typename... A>
void emu_kernel(cudaStream_t s, dim3 grid, dim3 block, K k, A... a) {
  if (__atomic_load_n(&bd_cuda_pdl, __ATOMIC_RELAXED))
    __atomic_add_fetch(&bd_emu_pdl_launches, 1, __ATOMIC_RELAXED);
  if (block.x < 1 || block.x > 1024 || block.y != 1 || block.z != 1 || grid.x < 1 ||
      grid.y < 1 || grid.y > 65535 || grid.z < 1 || grid.z > 65535) {
    fprintf(stderr, "cuda emulation: invalid launch configuration (%u,%u,%u) x %u\n", grid.x,
            grid.y, grid.z, block.x);
    emu_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  emu_work *w = new emu_work{[=]() {
    bd_emu_tick();
    auto body = [&] { k(a...); };
    if (BD_KEMU_THREADED)
      emu_launch2(grid.x, grid.y, grid.z, block.x, body);
    else
      emu_serial2(grid.x, grid.y, grid.z, block.x, body);
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
// Dynamic shared memory: the kernel files declare it as a static of the block's size in
// the emulation (BD_KERNEL_EMU), so the byte count has nothing to size.
#define BD_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...) \
  emu_kernel((stream), dim3(grid), dim3(block), kernel, __VA_ARGS__)
#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
#define cudaGetLastError() emu_take_error()

#endif
