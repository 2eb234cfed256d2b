// The kernel emulation's cooperating blocks (cuda_block_emu.h) on their own: every kemu
// test rests on them. A block's threads are fibers switched by emu_ctx_switch on x86-64
// (swapcontext elsewhere): barriers must hold in every order the scheduler picks, each
// fiber must keep its own stack and floating-point state across switches,
// AddressSanitizer must still see a kernel's bad accesses on a fiber's stack, and a
// misaligned cp.async must stop the run as the GPU's fault would.
#define BD_KEMU_THREADED 1
#include "cuda_block_emu.h"

#include <fenv.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include <cmocka.h>
}

namespace {

// Each round every thread writes its slot, meets the block, reads a neighbour's slot,
// meets again; then the same within its warp. Any thread run past a barrier early reads
// a stale value: counted.
void test_barriers(void **) {
  constexpr unsigned kThreads = 256, kRounds = 20, kBlocks = 6;
  static unsigned shared_slot[kThreads];
  unsigned wrong = 0, reads = 0;
  emu_launch2(kBlocks, 1, 1, kThreads, [&] {
    const unsigned t = emu_tid.x;
    for (unsigned r = 0; r < kRounds; ++r) {
      const unsigned stamp = (emu_bid.x * kRounds + r) * 4096u;
      shared_slot[t] = stamp + t;
      __syncthreads();
      const unsigned n = (t + 37) % kThreads;
      wrong += shared_slot[n] != stamp + n;
      __syncthreads();
      shared_slot[t] = stamp + 1024u + t;
      __syncwarp();
      const unsigned w = (t & ~31u) | ((t + 5) & 31u);
      wrong += shared_slot[w] != stamp + 1024u + w;
      __syncthreads();
      reads += 2;
    }
  });
  assert_int_equal(reads, kBlocks * kThreads * kRounds * 2);
  assert_int_equal(wrong, 0);
}

// A fiber's locals survive other fibers running in between (each has its own stack, deep
// enough for a 64 KB frame), and fibers start with the launching thread's rounding mode
// and keep one they set themselves, while the launching thread keeps its own.
void test_fiber_state(void **) {
  constexpr unsigned kThreads = 64;
  unsigned bad_stack = 0, bad_round = 0;
  const int outer = fegetround();
  assert_int_equal(fesetround(FE_TOWARDZERO), 0);
  emu_launch2(2, 1, 1, kThreads, [&] {
    volatile unsigned big[16384];
    const unsigned t = emu_tid.x;
    for (unsigned i = 0; i < 16384; i += 97) big[i] = t * 131u + i;
    bad_round += fegetround() != FE_TOWARDZERO;
    if (t & 1) fesetround(FE_UPWARD);
    __syncthreads();
    for (unsigned i = 0; i < 16384; i += 97) bad_stack += big[i] != t * 131u + i;
    bad_round += fegetround() != ((t & 1) ? FE_UPWARD : FE_TOWARDZERO);
    __syncwarp();
    volatile float third = 1.0f, three = 3.0f;
    const float q = third / three; // 1/3: 0x3EAAAAAA toward zero, 0x3EAAAAAB upward
    uint32_t bits;
    memcpy(&bits, &q, 4);
    bad_round += bits != ((t & 1) ? 0x3EAAAAABu : 0x3EAAAAAAu);
  });
  const int after = fegetround();
  fesetround(outer);
  assert_int_equal(after, FE_TOWARDZERO);
  assert_int_equal(bad_stack, 0);
  assert_int_equal(bad_round, 0);
}

// Runs f in a child process and checks that the child fails with `says` on its stderr.
template <typename F> void child_fails_saying(F f, const char *says) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  const pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    f();
    _exit(0);
  }
  close(fds[1]);
  char buf[4096];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof buf - 1 && (r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)r;
  buf[got] = 0;
  if (!strstr(buf, says)) fprintf(stderr, "the child said:\n%s\n", buf);
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(!WIFEXITED(status) || WEXITSTATUS(status) != 0);
  assert_non_null(strstr(buf, says));
}

// A 16-byte cp.async from or to an address that is not 16-byte aligned stops the run, as
// the GPU's fault would (the kernels' vector paths rely on their arguments' alignment
// contract); aligned ones, zero-filled or read, land at the wait.
void test_cp_async_alignment(void **) {
  alignas(16) static unsigned char src[64], dst[64];
  for (int i = 0; i < 64; ++i) src[i] = (unsigned char)(i + 1);
  emu_launch2(1, 1, 1, 32, [] {
    const unsigned t = emu_tid.x;
    if (t < 4) emu_cp_async16(dst + 16 * t, src + 16 * t, t != 2);
    emu_cp_commit();
    emu_cp_wait(0);
  });
  for (int i = 0; i < 64; ++i) assert_int_equal(dst[i], i / 16 == 2 ? 0 : i + 1);
  child_fails_saying(
      [] {
        emu_launch2(1, 1, 1, 32, [] {
          emu_cp_async16(dst, src + (emu_tid.x == 7 ? 8 : 0), true);
          emu_cp_commit();
          emu_cp_wait(0);
        });
      },
      "misaligned address");
  child_fails_saying(
      [] {
        emu_launch2(1, 1, 1, 32, [] {
          emu_cp_async16(dst + (emu_tid.x == 3 ? 2 : 0), src, false);
          emu_cp_commit();
          emu_cp_wait(0);
        });
      },
      "misaligned address");
}

#ifdef EMU_ASAN
// Under ASan a read past a local array of a kernel running on a fiber is reported (the
// child process dies with the report; ASan's default exit status 1).
void test_asan_on_fibers(void **) {
  child_fails_saying(
      [] {
        emu_launch2(3, 1, 1, 64, [] {
          int local[8];
          for (int i = 0; i < 8; ++i) local[i] = i;
          __syncthreads();
          volatile int at = emu_bid.x == 2 && emu_tid.x == 40 ? 8 : (int)emu_tid.x % 8;
          int *const base = local; // through a pointer: UBSan's bounds check knows no bound
          volatile int v = base[at];
          (void)v;
        });
      },
      "stack-buffer-overflow");
}
#endif

}  // namespace

int main() {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_barriers),
      cmocka_unit_test(test_fiber_state),
      cmocka_unit_test(test_cp_async_alignment),
#ifdef EMU_ASAN
      cmocka_unit_test(test_asan_on_fibers),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
