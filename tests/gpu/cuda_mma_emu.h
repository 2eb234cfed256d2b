// nvcuda::wmma emulated by its documented semantics, for bd_cuda_conv_mma.cu compiled as
// host C++ (cuda_kernel_emu.cc with BD_KEMU_MMA): a fragment holds its whole 16x16 tile
// in lane 0 of the warp (load_matrix_sync reads element (r, c) of a row-major tile
// at p[r*ldm + c], of a column-major one at p[c*ldm + r]; mma_sync is d = a*b + c in
// FP32; store_matrix_sync writes row- or column-major, once per warp). Warp-collective
// calls are made by all 32 threads with the same arguments, so lane 0 computing the whole
// tile is what the warp computes: the other lanes skip the work (a fragment's elements
// are opaque, the kernels never read them; stores are lane 0's).
#ifndef CUDA_MMA_EMU_H
#define CUDA_MMA_EMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// EMU_NOASAN: functions outside the sanitizers' instrumentation (ASan, UBSan's bounds
// checks, which also kept loops from vectorising), where every access is to local
// arrays or is checked by the emulation itself (wgmma's shared reads are checked against
// the kernel's shared block, a table is indexed by a 16-bit value, sum[n / 2 <= 128]);
// instrumented, wgmma's operand reads and products were 90% of a whole-model wgmma test
// (195 s) and the WMMA products most of the mma ones.
#if defined(__GNUC__) && !defined(__clang__)
#define EMU_NOASAN __attribute__((no_sanitize_address, no_sanitize_undefined))
#else
#define EMU_NOASAN
#endif

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];
};

inline float emu_f(const __half &h) {
  return __half2float(h);
}
inline float emu_f(const __nv_bfloat16 &h) {
  return __bfloat162float(h);
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, float x) {
  if (emu_tid.x % 32) return;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) f.v[i][j] = x;
}
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_a, M, N, K, T, row_major> &f, const T *p,
                             unsigned ldm) {
  if (emu_tid.x % 32) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = emu_f(p[r * ldm + c]);
}
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<matrix_b, M, N, K, T, col_major> &f, const T *p,
                             unsigned ldm) {
  if (emu_tid.x % 32) return;
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) f.v[k][n] = emu_f(p[n * ldm + k]);
}
template <int M, int N, int K, typename TA, typename TB>
EMU_NOASAN inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                                const fragment<matrix_a, M, N, K, TA, row_major> &a,
                                const fragment<matrix_b, M, N, K, TB, col_major> &b,
                                const fragment<accumulator, M, N, K, float> &c) {
  if (emu_tid.x % 32) return;
  // each t[m][n] = c + a[m][0] b[0][n] + a[m][1] b[1][n] + ..., k in order; n innermost
  // so that the 16 sums of a row run side by side
  float t[16][16], bv[16][16];
  memcpy(t, c.v, sizeof t);
  memcpy(bv, b.v, sizeof bv);  // local copies: no aliasing, so the n loop vectorises
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 16; ++k) {
      const float am = a.v[m][k];
#pragma GCC ivdep
      for (int n = 0; n < 16; ++n) t[m][n] += am * bv[k][n];
    }
  memcpy(d.v, t, sizeof t);
}
template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                              unsigned ldm, layout_t l) {
  if (emu_tid.x % 32 == 0)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) p[l == mem_row_major ? m * ldm + n : n * ldm + m] = f.v[m][n];
  emu_warp_sync(); /* the warp's lanes see the tile once the call returns */
}
}  // namespace wmma
}  // namespace nvcuda

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16} (bd_cuda_conv_mma.cu's mma16816), T the
// 16-bit type, by PTX's documented fragment layout: lane l = 4g + t holds A rows g (a0,
// a2) and g + 8 (a1, a3) at columns 2t, 2t + 1 (a0, a1) and 2t + 8, 2t + 9 (a2, a3), the
// lower column in the lower half of each register; B column g at rows 2t, 2t + 1 (b0) and
// 2t + 8, 2t + 9 (b1); D rows g (d0, d1) and g + 8 (d2, d3) at columns 2t, 2t + 1. Each
// lane posts its registers, the warp meets, each lane sums its four outputs (FP32, k in
// order). Calls alternate between two exchanges (the fiber's count of calls), so the warp
// need not meet again after summing: a lane reaching the next call writes the other one,
// and it can write this one again only after that next call's meeting, which every lane
// reaches only once it has read this one. Lanes that make different numbers of calls (mma.sync must be
// made by the whole warp, converged) meet wrong partners and get wrong sums.
static uint32_t emu_mma_a[2][32][32][4], emu_mma_b[2][32][32][2];
template <typename T>
inline float emu_mma_el(uint32_t v, int hi) {
  const uint16_t h = (uint16_t)(hi ? v >> 16 : v & 0xFFFFu);
  T t;
  memcpy(static_cast<void *>(&t), &h, 2);
  return nvcuda::wmma::emu_f(t);
}
template <typename T>
inline void emu_mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const unsigned lane = emu_tid.x & 31, w = emu_tid.x >> 5,
                 x = emu_fibers[emu_cur].n_mma++ & 1;
  uint32_t(&ea)[32][4] = emu_mma_a[x][w], (&eb)[32][2] = emu_mma_b[x][w];
  memcpy(ea[lane], a, sizeof a);
  memcpy(eb[lane], b, sizeof b);
  emu_warp_sync();
  const int g = (int)lane >> 2, t = (int)lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float s = d[i];
    for (int k = 0; k < 16; ++k) {
      const int al = (row % 8) * 4 + (k % 8) / 2, ar = (row >= 8) + 2 * (k >= 8);
      const int bl = col * 4 + (k % 8) / 2, br = k >= 8;
      s += emu_mma_el<T>(ea[al][ar], k & 1) * emu_mma_el<T>(eb[bl][br], k & 1);
    }
    d[i] = s;
  }
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16} with both operands in shared
// memory (bd_cuda_conv_mma.cu's tiles 18-23), by the PTX ISA's rules: a descriptor holds
// the operand's start address, leading byte offset (LBO: between core matrices adjacent
// in k) and stride byte offset (SBO: between core matrices adjacent in rows), each in 16
// bytes, bits 0-13, 16-29 and 32-45; base offset bits 49-51 and swizzle mode bits 62-63
// (only 0, no swizzle, is emulated: anything else aborts). A core matrix is 8 rows of 16
// bytes (8 k), 128 contiguous bytes, so element (row, k) of a K-major operand is at start
// + (row / 8) SBO + (k / 8) LBO + (row % 8) 16 + (k % 8) 2. Thread l of warp q of the
// warpgroup accumulates rows 16 q + l / 4 and + 8 at columns 8 j + 2 (l % 4) and + 1
// (d[4 j .. 4 j + 3]). The operation is asynchronous: its products are computed at the
// issue, the operands they read are read again when the thread's wait_group retires its
// group and must hash the same (they must not change while a wgmma may read them: a
// stage refilled too early aborts), and the products reach d only then (reading the
// accumulators before the wait sees them without). Shared addresses are offsets in the
// kernel's shared block (emu_wg_begin) plus 1024. An operand byte that a thread's
// cp.async landed and that thread has not yet fenced (fence.proxy.async) aborts
// (cuda_block_emu.h: emu_px_*).
struct emu_wg_op {
  float *d;
  uint64_t da, db;
  int n;
  unsigned group;
  uint64_t (*products)(uint64_t, uint64_t, int, float *); // emu_wg_products of its type
  uint64_t operands;                                       // their hash at the issue
  float sum[128];
};
constexpr unsigned EMU_WG_MAX = 32; // wgmma a thread may have in flight
struct emu_wg_thread {
  emu_wg_op op[EMU_WG_MAX];
  unsigned n_op, groups;
};
static emu_wg_thread emu_wg[1024];
static const unsigned char *emu_smem_origin;
static size_t emu_smem_bytes;
inline void emu_wg_fail(const char *what) {
  fprintf(stderr, "cuda emulation: wgmma, block (%u,%u,%u) thread %u: %s\n", emu_bid.x, emu_bid.y,
          emu_bid.z, emu_tid.x, what);
  abort();
}
// The kernel's shared block (one per kernel: the operands' addresses are offsets in it);
// a thread starts with nothing in flight. One left in flight by this thread's previous
// block was never waited for: on a GPU its accumulators would be read unfinished or lost.
inline void emu_wg_begin(const void *smem, size_t bytes) {
  emu_wg_thread &t = emu_wg[emu_tid.x];
  if (t.n_op)
    emu_wg_fail("the previous block of this thread ended with wgmma in flight (no wait<0>)");
  emu_smem_origin = static_cast<const unsigned char *>(smem);
  emu_smem_bytes = bytes;
  emu_px_watch(smem, bytes);
  t.n_op = 0;
  t.groups = 0;
}
inline uint32_t emu_smem_u32(const void *p) {
  const unsigned char *c = static_cast<const unsigned char *>(p);
  if (!emu_smem_origin || c < emu_smem_origin || c >= emu_smem_origin + emu_smem_bytes)
    emu_wg_fail("a shared address outside the kernel's shared block");
  return (uint32_t)(c - emu_smem_origin) + 1024u;
}
// Row `row` of a K-major operand at descriptor desc: its 16 k as raw 16-bit values. k 0-7
// and 8-15 are one core-matrix row each, 16 contiguous bytes: one bounds check, one
// fence check (one unit of emu_px) and one copy each.
EMU_NOASAN inline void emu_wg_row(uint64_t desc, int row, uint16_t (&v)[16]) {
  if (desc >> 62 || (desc >> 49 & 7u)) emu_wg_fail("a swizzled or based descriptor");
  const uint64_t start = (desc & 0x3FFFu) << 4, lbo = (desc >> 16 & 0x3FFFu) << 4,
                 sbo = (desc >> 32 & 0x3FFFu) << 4;
  for (int c = 0; c < 2; ++c) {
    const uint64_t at =
        start + (uint64_t)(row / 8) * sbo + (uint64_t)c * lbo + (uint64_t)(row % 8) * 16;
    if (at < 1024 || at - 1024 + 16 > emu_smem_bytes)
      emu_wg_fail("an operand outside shared memory");
    const int unfenced = emu_px_unfenced(emu_smem_origin + (at - 1024));
    if (unfenced >= 0) {
      char what[128];
      snprintf(what, sizeof what,
               "reads shared memory thread %d's cp.async wrote, not yet fenced "
               "(fence.proxy.async)",
               unfenced);
      emu_wg_fail(what);
    }
    memcpy(v + 8 * c, emu_smem_origin + (at - 1024), 16);
  }
}
// The 16-bit type T's values as floats, all 65536 of them (made once).
template <typename T>
struct emu_wg_table {
  float f[65536];
  emu_wg_table() {
    for (uint32_t u = 0; u < 65536; ++u) f[u] = emu_mma_el<T>(u, 0);
  }
};
template <typename T>
inline const float *emu_wg_floats() {
  static const emu_wg_table<T> t;
  return t.f;
}
// FNV-1a over the bits of v[16] as four 64-bit words, continuing h.
EMU_NOASAN inline uint64_t emu_wg_hash(uint64_t h, const uint16_t (&v)[16]) {
  uint64_t w[4];
  memcpy(w, v, sizeof w);
  for (int k = 0; k < 4; ++k) h = (h ^ w[k]) * 0x100000001B3ull;
  return h;
}
// This thread's products of the 64 x n x 16 step: sum[4 j + i] as d[4 j + i] (above);
// with sum null only the operands are read. Returns a hash of the operands read.
template <typename T>
EMU_NOASAN inline uint64_t emu_wg_products(uint64_t da, uint64_t db, int n, float *sum) {
  const int lane = (int)(emu_tid.x % 32), q = (int)(emu_tid.x % 128 / 32);
  uint16_t ra[2][16], rb[16];
  emu_wg_row(da, 16 * q + lane / 4, ra[0]);
  emu_wg_row(da, 16 * q + lane / 4 + 8, ra[1]);
  uint64_t h = emu_wg_hash(emu_wg_hash(0xCBF29CE484222325ull, ra[0]), ra[1]);
  const float *f = sum ? emu_wg_floats<T>() : nullptr;
  float a[2][16], b[2][16];
  for (int k = 0; sum && k < 16; ++k) a[0][k] = f[ra[0][k]], a[1][k] = f[ra[1][k]];
  for (int j = 0; j < n / 8; ++j) {
    for (int c = 0; c < 2; ++c) {
      emu_wg_row(db, 8 * j + 2 * (lane % 4) + c, rb);
      h = emu_wg_hash(h, rb);
      for (int k = 0; sum && k < 16; ++k) b[c][k] = f[rb[k]];
    }
    if (!sum) continue;
    // four sums, each over k in order, as independent chains
    float s00 = 0.0f, s01 = 0.0f, s10 = 0.0f, s11 = 0.0f;
    for (int k = 0; k < 16; ++k) {
      s00 += a[0][k] * b[0][k];
      s01 += a[0][k] * b[1][k];
      s10 += a[1][k] * b[0][k];
      s11 += a[1][k] * b[1][k];
    }
    sum[4 * j] = s00, sum[4 * j + 1] = s01, sum[4 * j + 2] = s10, sum[4 * j + 3] = s11;
  }
  return h;
}
template <typename T> inline void emu_wgmma(float *d, int n, uint64_t da, uint64_t db) {
  emu_wg_thread &t = emu_wg[emu_tid.x];
  if (n < 8 || n > 256 || n % 8) emu_wg_fail("N not a multiple of 8 in 8..256");
  if (t.n_op == EMU_WG_MAX) emu_wg_fail("too many in flight");
  emu_wg_op &o = t.op[t.n_op++];
  o.d = d, o.da = da, o.db = db, o.n = n, o.group = t.groups;
  o.products = emu_wg_products<T>;
  o.operands = o.products(da, db, n, o.sum);
}
inline void emu_wg_commit() {
  ++emu_wg[emu_tid.x].groups;
}
// wgmma.wait_group N: every committed group but the N newest retires, in issue order.
inline void emu_wg_wait(unsigned n) {
  emu_wg_thread &t = emu_wg[emu_tid.x];
  if (t.groups <= n) return;
  const unsigned below = t.groups - n;
  unsigned k = 0;
  for (unsigned i = 0; i < t.n_op; ++i) {
    emu_wg_op &o = t.op[i];
    if (o.group >= below) {
      t.op[k++] = o;
      continue;
    }
    if (o.products(o.da, o.db, o.n, nullptr) != o.operands)
      emu_wg_fail("its shared operands changed between the issue and the wait");
    for (int j = 0; j < o.n / 2; ++j) o.d[j] += o.sum[j];
  }
  t.n_op = k;
}

#endif
