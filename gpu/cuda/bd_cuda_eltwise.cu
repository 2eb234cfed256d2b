// Element-wise family: the strided map (copies, layout and dtype conversion, transpose,
// slice and concat pieces, unary activations) and numpy-broadcast binary ops.
// Views are canonicalised on the host side of the launcher (size-1 dims dropped, dims
// sorted by output stride, contiguous runs merged) so that same-layout work becomes one
// flat dimension and takes the 16-byte vector path.
#include <cstring>

#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

// bd_cuda_kernels.h: the launches' programmatic-dependent-launch switch (every kernel
// file's BD_LAUNCH reads it; defined with the element-wise family, which every build of
// the kernels has; tests/gpu/cuda_emu.c defines its own).
extern "C" {
int bd_cuda_pdl = 0;
}

namespace {

constexpr int kThreads = 256;

struct Geo {
  int rank;
  int64_t dims[BD_CUDA_MAX_RANK];
  int64_t s[3][BD_CUDA_MAX_RANK]; // [0] out, [1] in/a, [2] b
};

// Drops size-1 dims, orders by descending output stride (outputs written in memory
// order), then merges dims that are contiguous in every operand.
void canon(Geo *g, int nops) {
  int r = 0;
  for (int d = 0; d < g->rank; ++d) {
    if (g->dims[d] == 1) continue;
    g->dims[r] = g->dims[d];
    for (int k = 0; k < nops; ++k) g->s[k][r] = g->s[k][d];
    ++r;
  }
  g->rank = r;
  for (int i = 1; i < r; ++i) // insertion sort, stable
    for (int j = i; j > 0 && g->s[0][j - 1] < g->s[0][j]; --j) {
      int64_t t = g->dims[j];
      g->dims[j] = g->dims[j - 1];
      g->dims[j - 1] = t;
      for (int k = 0; k < nops; ++k) {
        t = g->s[k][j];
        g->s[k][j] = g->s[k][j - 1];
        g->s[k][j - 1] = t;
      }
    }
  int w = 0;
  for (int d = 1; d < r; ++d) {
    bool merge = true;
    for (int k = 0; k < nops; ++k)
      if (g->s[k][w] != g->s[k][d] * g->dims[d]) merge = false;
    if (merge) {
      g->dims[w] *= g->dims[d];
      for (int k = 0; k < nops; ++k) g->s[k][w] = g->s[k][d];
    } else {
      ++w;
      g->dims[w] = g->dims[d];
      for (int k = 0; k < nops; ++k) g->s[k][w] = g->s[k][d];
    }
  }
  g->rank = r == 0 ? 1 : w + 1;
  if (r == 0) {
    g->dims[0] = 1;
    for (int k = 0; k < nops; ++k) g->s[k][0] = 0;
  }
}

__device__ __forceinline__ float unop(float x, int op) {
  switch (op) {
  case BD_UN_RELU: return x > 0.0f ? x : 0.0f;
  case BD_UN_SIGMOID: return bd_sigmoid(x);
  case BD_UN_SILU: return x * bd_sigmoid(x);
  case BD_UN_EXP: return __expf(x);
  default: return x;
  }
}

__device__ __forceinline__ float binop(float a, float b, int op) {
  switch (op) {
  case BD_BIN_SUB: return a - b;
  case BD_BIN_MUL: return a * b;
  case BD_BIN_DIV: return a / b;
  default: return a + b;
  }
}

// Element i of a map's output: its offsets in out (*oi) and in (*ii).
template <typename IDX>
__device__ __forceinline__ void map_offsets(const Geo &g, IDX i, IDX *oi, IDX *ii) {
  IDX r = i, o = 0, n = 0;
  for (int d = g.rank - 1; d >= 0; --d) {
    IDX dim = (IDX)g.dims[d];
    IDX q = r / dim, c = r - q * dim;
    r = q;
    o += c * (IDX)g.s[0][d];
    n += c * (IDX)g.s[1][d];
  }
  *oi = o;
  *ii = n;
}

template <typename TI, typename TO, typename IDX>
__global__ void k_map(const TI *__restrict__ in, TO *__restrict__ out, Geo g, IDX n, int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (IDX i = blockIdx.x * (IDX)blockDim.x + threadIdx.x; i < n;
       i += (IDX)gridDim.x * blockDim.x) {
    IDX oi, ii;
    map_offsets(g, i, &oi, &ii);
    out[oi] = bd_st<TO>(unop(bd_ld(in[ii]), op));
  }
}

// bd_cuda_map_multi's maps: piece blockIdx.y of k_map_multi.
struct MultiMap {
  Geo g[BD_CUDA_MAP_MULTI];
  const void *in[BD_CUDA_MAP_MULTI];
  void *out[BD_CUDA_MAP_MULTI];
  int64_t n[BD_CUDA_MAP_MULTI];
};

// k_map for piece blockIdx.y of mm (read in place from the parameters: __grid_constant__).
template <typename TI, typename TO>
__global__ void k_map_multi(const __grid_constant__ MultiMap mm, int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  const int k = blockIdx.y;
  const Geo &g = mm.g[k];
  const TI *__restrict__ in = static_cast<const TI *>(mm.in[k]);
  TO *__restrict__ out = static_cast<TO *>(mm.out[k]);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < mm.n[k];
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t oi, ii;
    map_offsets(g, i, &oi, &ii);
    out[oi] = bd_st<TO>(unop(bd_ld(in[ii]), op));
  }
}

// 8 16-bit values per thread through 16-byte loads and stores (contiguous, same layout).
__global__ void k_map_h16x8(const uint4 *__restrict__ in, uint4 *__restrict__ out,
                             int64_t n8, int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint4 v = in[i];
    bd_h16x2 *h = reinterpret_cast<bd_h16x2 *>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 f = bd_h16x2_ld(h[k]);
      h[k] = bd_h16x2_st(unop(f.x, op), unop(f.y, op));
    }
    out[i] = v;
  }
}

// Rows of 8k 16-bit values at row strides that are multiples of 8 (a Concat piece into
// its channel range, a channel slice): 16-byte accesses, like k_map_h16x8.
__global__ void k_map_rows_x8(const uint4 *__restrict__ in, uint4 *__restrict__ out,
                              int64_t rows, int64_t cols8, int64_t in_s8, int64_t out_s8,
                              int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t n8 = rows * cols8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / cols8, c = i - r * cols8;
    uint4 v = in[r * in_s8 + c];
    if (op != BD_UN_ID) {
      bd_h16x2 *h = reinterpret_cast<bd_h16x2 *>(&v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float2 f = bd_h16x2_ld(h[k]);
        h[k] = bd_h16x2_st(unop(f.x, op), unop(f.y, op));
      }
    }
    out[r * out_s8 + c] = v;
  }
}

// 16-bit rows to FP32 rows (an FP32 Concat of 16-bit maps: YOLOX's and DAMO-YOLO's
// score outputs), 8 values per thread: one 16-byte load, two 16-byte stores. Row strides
// in elements: in_s8 in 8-value units, out_s4 in 4-float units.
__global__ void k_map_rows_h16_f32x8(const uint4 *__restrict__ in, float4 *__restrict__ out,
                                     int64_t rows, int64_t cols8, int64_t in_s8, int64_t out_s4,
                                     int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t n8 = rows * cols8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / cols8, c = i - r * cols8;
    uint4 v = in[r * in_s8 + c];
    const bd_h16x2 *h = reinterpret_cast<const bd_h16x2 *>(&v);
    float f[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 t = bd_h16x2_ld(h[k]);
      f[2 * k] = unop(t.x, op);
      f[2 * k + 1] = unop(t.y, op);
    }
    float4 *o = out + r * out_s4 + 2 * c;
    o[0] = make_float4(f[0], f[1], f[2], f[3]);
    o[1] = make_float4(f[4], f[5], f[6], f[7]);
  }
}

template <typename TA, typename TB, typename TO, typename IDX>
__global__ void k_bin(const TA *__restrict__ a, const TB *__restrict__ b, TO *__restrict__ out,
                      Geo g, IDX n, int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (IDX i = blockIdx.x * (IDX)blockDim.x + threadIdx.x; i < n;
       i += (IDX)gridDim.x * blockDim.x) {
    IDX r = i, oi = 0, ai = 0, bi = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
      IDX dim = (IDX)g.dims[d];
      IDX q = r / dim, c = r - q * dim;
      r = q;
      oi += c * (IDX)g.s[0][d];
      ai += c * (IDX)g.s[1][d];
      bi += c * (IDX)g.s[2][d];
    }
    out[oi] = bd_st<TO>(binop(bd_ld(a[ai]), bd_ld(b[bi]), op));
  }
}

__global__ void k_bin_h16x8(const uint4 *__restrict__ a, const uint4 *__restrict__ b,
                             uint4 *__restrict__ out, int64_t n8, int op) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint4 va = a[i], vb = b[i], vo;
    const bd_h16x2 *ha = reinterpret_cast<const bd_h16x2 *>(&va);
    const bd_h16x2 *hb = reinterpret_cast<const bd_h16x2 *>(&vb);
    bd_h16x2 *ho = reinterpret_cast<bd_h16x2 *>(&vo);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float2 fa = bd_h16x2_ld(ha[k]), fb = bd_h16x2_ld(hb[k]);
      ho[k] = bd_h16x2_st(binop(fa.x, fb.x, op), binop(fa.y, fb.y, op));
    }
    out[i] = vo;
  }
}

int64_t numel(const Geo &g) {
  int64_t n = 1;
  for (int d = 0; d < g.rank; ++d) n *= g.dims[d];
  return n;
}

// Largest element offset reachable in any operand decides the index width; 2^30 leaves
// room for the grid-stride increment (at most 2^28) without int32 overflow.
bool fits32(const Geo &g, int nops) {
  const int64_t lim = (int64_t)1 << 30;
  for (int k = 0; k < nops; ++k) {
    int64_t m = 0;
    for (int d = 0; d < g.rank; ++d) {
      int64_t s = g.s[k][d] < 0 ? -g.s[k][d] : g.s[k][d];
      m += (g.dims[d] - 1) * s;
    }
    if (m >= lim) return false;
  }
  return numel(g) < lim;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

template <typename TI, typename TO>
void launch_map(const Geo &g, const void *in, void *out, int op, cudaStream_t s) {
  int64_t n = numel(g);
  if (fits32(g, 2))
    BD_LAUNCH(BD_K(k_map<TI, TO, int32_t>), bd_grid(n, kThreads), kThreads, s, (const TI *)in,
              (TO *)out, g, (int32_t)n, op);
  else
    BD_LAUNCH(BD_K(k_map<TI, TO, int64_t>), bd_grid(n, kThreads), kThreads, s, (const TI *)in,
              (TO *)out, g, n, op);
}

template <typename TA, typename TB, typename TO>
void launch_bin(const Geo &g, const void *a, const void *b, void *out, int op,
                cudaStream_t s) {
  int64_t n = numel(g);
  if (fits32(g, 3))
    BD_LAUNCH(BD_K(k_bin<TA, TB, TO, int32_t>), bd_grid(n, kThreads), kThreads, s, (const TA *)a,
              (const TB *)b, (TO *)out, g, (int32_t)n, op);
  else
    BD_LAUNCH(BD_K(k_bin<TA, TB, TO, int64_t>), bd_grid(n, kThreads), kThreads, s, (const TA *)a,
              (const TB *)b, (TO *)out, g, n, op);
}

template <typename TA, typename TB>
void launch_bin_o(const Geo &g, const void *a, const void *b, void *out, int dto, int op,
                  cudaStream_t s) {
  if (dto == BD_CT_H16)
    launch_bin<TA, TB, bd_h16>(g, a, b, out, op, s);
  else
    launch_bin<TA, TB, float>(g, a, b, out, op, s);
}

template <typename TA>
void launch_bin_b(const Geo &g, const void *a, const void *b, int dtb, void *out, int dto,
                  int op, cudaStream_t s) {
  if (dtb == BD_CT_H16)
    launch_bin_o<TA, bd_h16>(g, a, b, out, dto, op, s);
  else
    launch_bin_o<TA, float>(g, a, b, out, dto, op, s);
}

} // namespace

namespace {
// A map's canonical geometry (canon); false where the ranks do not fit.
bool map_geo(const bd_cuda_view *out, const bd_cuda_view *in, Geo *g) {
  if (out->rank < 1 || out->rank > BD_CUDA_MAX_RANK || in->rank != out->rank) return false;
  g->rank = out->rank;
  for (int d = 0; d < g->rank; ++d) {
    g->dims[d] = out->dims[d];
    g->s[0][d] = out->strides[d];
    g->s[1][d] = in->strides[d];
  }
  canon(g, 2);
  return true;
}
} // namespace

extern "C" cudaError_t bd_cuda_map(const bd_cuda_view *out, const bd_cuda_view *in, int op,
                                   cudaStream_t s) {
  Geo g;
  if (!map_geo(out, in, &g)) return cudaErrorInvalidValue;
  int64_t n = numel(g);
  if (n == 0) return cudaSuccess;
  if (g.rank == 1 && g.s[0][0] == 1 && g.s[1][0] == 1 && in->dtype == BD_CT_H16 &&
      out->dtype == BD_CT_H16 && n % 8 == 0 && aligned16(in->base) && aligned16(out->base)) {
    BD_LAUNCH(k_map_h16x8, bd_grid(n / 8, kThreads), kThreads, s, (const uint4 *)in->base,
              (uint4 *)out->base, n / 8, op);
    return cudaGetLastError();
  }
  if (g.rank == 2 && g.s[0][1] == 1 && g.s[1][1] == 1 && in->dtype == BD_CT_H16 &&
      out->dtype == BD_CT_H16 && g.dims[1] % 8 == 0 && g.s[0][0] % 8 == 0 &&
      g.s[1][0] % 8 == 0 && aligned16(in->base) && aligned16(out->base)) {
    int64_t n8 = n / 8;
    BD_LAUNCH(k_map_rows_x8, bd_grid(n8, kThreads), kThreads, s, (const uint4 *)in->base,
              (uint4 *)out->base, g.dims[0], g.dims[1] / 8, g.s[1][0] / 8, g.s[0][0] / 8, op);
    return cudaGetLastError();
  }
  if (in->dtype == BD_CT_H16 && out->dtype == BD_CT_F32 && g.rank <= 2 &&
      g.s[0][g.rank - 1] == 1 && g.s[1][g.rank - 1] == 1 && g.dims[g.rank - 1] % 8 == 0 &&
      (g.rank == 1 || (g.s[1][0] % 8 == 0 && g.s[0][0] % 4 == 0)) && aligned16(in->base) &&
      aligned16(out->base)) {
    int64_t rows = g.rank == 2 ? g.dims[0] : 1, cols = g.dims[g.rank - 1];
    int64_t in_s = g.rank == 2 ? g.s[1][0] : cols, out_s = g.rank == 2 ? g.s[0][0] : cols;
    BD_LAUNCH(k_map_rows_h16_f32x8, bd_grid(n / 8, kThreads), kThreads, s,
              (const uint4 *)in->base, (float4 *)out->base, rows, cols / 8, in_s / 8, out_s / 4,
              op);
    return cudaGetLastError();
  }
  if (in->dtype == BD_CT_H16) {
    if (out->dtype == BD_CT_H16)
      launch_map<bd_h16, bd_h16>(g, in->base, out->base, op, s);
    else
      launch_map<bd_h16, float>(g, in->base, out->base, op, s);
  } else {
    if (out->dtype == BD_CT_H16)
      launch_map<float, bd_h16>(g, in->base, out->base, op, s);
    else
      launch_map<float, float>(g, in->base, out->base, op, s);
  }
  return cudaGetLastError();
}

namespace {
template <typename TI, typename TO>
void launch_map_multi(const MultiMap &mm, int n, int64_t most, int op, cudaStream_t s) {
  BD_LAUNCH(BD_K(k_map_multi<TI, TO>), dim3(bd_grid(most, kThreads), (unsigned)n), kThreads, s,
            mm, op);
}
} // namespace

extern "C" cudaError_t bd_cuda_map_multi(int n, const bd_cuda_view *outs, const bd_cuda_view *ins,
                                         int op, cudaStream_t s) {
  if (n < 1 || n > BD_CUDA_MAP_MULTI) return cudaErrorInvalidValue;
  MultiMap mm;
  memset(&mm, 0, sizeof mm);
  int64_t most = 0;
  for (int k = 0; k < n; ++k) {
    const bd_cuda_view *out = &outs[k], *in = &ins[k];
    if (in->dtype != ins[0].dtype || out->dtype != outs[0].dtype || !map_geo(out, in, &mm.g[k]))
      return cudaErrorInvalidValue;
    mm.n[k] = numel(mm.g[k]);
    mm.in[k] = in->base;
    mm.out[k] = out->base;
    most = mm.n[k] > most ? mm.n[k] : most;
  }
  if (most == 0) return cudaSuccess;
  const bool hi = ins[0].dtype == BD_CT_H16, ho = outs[0].dtype == BD_CT_H16;
  if (hi && ho) launch_map_multi<bd_h16, bd_h16>(mm, n, most, op, s);
  else if (hi) launch_map_multi<bd_h16, float>(mm, n, most, op, s);
  else if (ho) launch_map_multi<float, bd_h16>(mm, n, most, op, s);
  else launch_map_multi<float, float>(mm, n, most, op, s);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_binary(const bd_cuda_view *out, const bd_cuda_view *a,
                                      const bd_cuda_view *b, int op, cudaStream_t s) {
  if (out->rank < 1 || out->rank > BD_CUDA_MAX_RANK || a->rank != out->rank ||
      b->rank != out->rank)
    return cudaErrorInvalidValue;
  Geo g;
  g.rank = out->rank;
  for (int d = 0; d < g.rank; ++d) {
    g.dims[d] = out->dims[d];
    g.s[0][d] = out->strides[d];
    g.s[1][d] = a->strides[d];
    g.s[2][d] = b->strides[d];
  }
  canon(&g, 3);
  int64_t n = numel(g);
  if (n == 0) return cudaSuccess;
  if (g.rank == 1 && g.s[0][0] == 1 && g.s[1][0] == 1 && g.s[2][0] == 1 &&
      a->dtype == BD_CT_H16 && b->dtype == BD_CT_H16 && out->dtype == BD_CT_H16 &&
      n % 8 == 0 && aligned16(a->base) && aligned16(b->base) && aligned16(out->base)) {
    BD_LAUNCH(k_bin_h16x8, bd_grid(n / 8, kThreads), kThreads, s, (const uint4 *)a->base,
              (const uint4 *)b->base, (uint4 *)out->base, n / 8, op);
    return cudaGetLastError();
  }
  if (a->dtype == BD_CT_H16)
    launch_bin_b<bd_h16>(g, a->base, b->base, b->dtype, out->base, out->dtype, op, s);
  else
    launch_bin_b<float>(g, a->base, b->base, b->dtype, out->base, out->dtype, op, s);
  return cudaGetLastError();
}
