// Detection post-processing on the GPU (issue 6): yolox grid decode, candidate
// selection (score filter, then rounds of the topk best by a total order), per-class
// greedy NMS, max_det, mapping to original pixels and clipping. Semantics and the CPU twins:
// bd_cuda_post.h / bd_cuda_post_ref.c. Arithmetic that decides a comparison (boxes,
// IoU, mapping) uses the _rn intrinsics so that nvcc cannot contract it into FMAs the
// CPU does not do.
//
// tests/gpu/cuda_kernel_emu.cc compiles this file as host C++ (cuda_block_emu.h: threads
// and barriers stand in for a block, BD_LAUNCH for <<<>>>) so that the kernels' block
// algorithms are tested on machines without a GPU.
#include <cfloat>

#include "bd_cuda_common.cuh"
#include "bd_cuda_post.h"

namespace {

constexpr int kThreads = 512;
constexpr int kItems = 8;  // consecutive scores per thread in the selection passes
constexpr int kChunk = kThreads * kItems;
constexpr int kSort = BD_CUDA_POST_MAX_TOPK;  // power of two
static_assert((kSort & (kSort - 1)) == 0, "bitonic sort size");
static_assert(kSort == 2 * kThreads, "one compare pair per thread and step");

// Order-preserving map float -> uint32 (larger score, larger key); -0 and +0 coincide,
// as they compare equal on the CPU.
__device__ __forceinline__ uint32_t score_key(float s) {
  if (s == 0.f) s = 0.f;
  uint32_t u = __float_as_uint(s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool is_cand(float s, float thr, int strict) {
  // NaN and +Inf (a broken model's) never pass, as on the CPU
  return (strict ? s > thr : s >= thr) && s <= FLT_MAX;
}

__device__ __forceinline__ float clampf(float v, float lo, float hi) {
  return v > lo ? (v < hi ? v : hi) : lo;
}

// bd_box_iou, a = the kept box, b = the candidate, rounding step by step.
__device__ __forceinline__ float box_iou(float4 a, float4 b) {
  float iw = __fsub_rn(a.z < b.z ? a.z : b.z, a.x > b.x ? a.x : b.x);
  float ih = __fsub_rn(a.w < b.w ? a.w : b.w, a.y > b.y ? a.y : b.y);
  if (iw <= 0.f || ih <= 0.f) return 0.f;
  float inter = __fmul_rn(iw, ih);
  float aa = __fmul_rn(__fsub_rn(a.z, a.x), __fsub_rn(a.w, a.y));
  float ab = __fmul_rn(__fsub_rn(b.z, b.x), __fsub_rn(b.w, b.y));
  float uni = __fsub_rn(__fadd_rn(aa, ab), inter);
  return uni > 0.f ? __fdiv_rn(inter, uni) : 0.f;
}

__global__ void k_yolox_decode(const float *__restrict__ raw, int n, int in_h, int in_w, int C,
                               int A, int decoded, float *__restrict__ score,
                               float *__restrict__ box, int *__restrict__ cls) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  const int a0 = (in_h / 8) * (in_w / 8), a1 = (in_h / 16) * (in_w / 16);
  const int64_t total = (int64_t)n * A;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int a = (int)(i % A);
    int l = 0, k = a;
    if (a >= a0 + a1) {
      l = 2;
      k = a - a0 - a1;
    } else if (a >= a0) {
      l = 1;
      k = a - a0;
    }
    const int s = 8 << l, gw = in_w / s, gy = k / gw, gx = k - gy * gw;
    const float *r = raw + i * (5 + C);
    int best = 0;
    for (int c = 1; c < C; ++c)
      if (r[5 + c] > r[5 + best]) best = c;
    const float fs = (float)s;
    float cx, cy, w, h;
    if (decoded) {  // the graph decoded: cx, cy, w, h in input pixels
      cx = r[0], cy = r[1], w = r[2], h = r[3];
    } else {
      cx = __fmul_rn(__fadd_rn(r[0], (float)gx), fs);
      cy = __fmul_rn(__fadd_rn(r[1], (float)gy), fs);
      w = __fmul_rn(expf(r[2]), fs), h = __fmul_rn(expf(r[3]), fs);
    }
    float hw = __fmul_rn(w, 0.5f), hh = __fmul_rn(h, 0.5f);
    score[i] = __fmul_rn(r[4], r[5 + best]);
    reinterpret_cast<float4 *>(box)[i] =
        make_float4(__fsub_rn(cx, hw), __fsub_rn(cy, hh), __fadd_rn(cx, hw), __fadd_rn(cy, hh));
    cls[i] = best;
  }
}

// Exclusive prefix sum of v over the block, in thread order; *total gets the block's
// sum. Every thread must call it. sw: kThreads / 32 + 1 ints of shared memory.
__device__ int block_scan(int v, int *sw, int *total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) sw[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      const int t = sw[w];
      sw[w] = acc;
      acc += t;
    }
    sw[kThreads / 32] = acc;
  }
  __syncthreads();
  const int r = sw[warp] + x - v;
  *total = sw[kThreads / 32];
  __syncthreads();  // sw is reused by the next call
  return r;
}

// One block per image. yolox: S = decoded scores [n][A], boxes [n][A][4] and cls [n][A]
// by anchor; damoyolo: S = scores [n][A*C], boxes [n][A][4] by anchor = index / C.
// The candidates are taken in rounds of at most topk, in the total order (score desc,
// index asc): each round selects the topk first candidates after the previous round's
// last one, sorts them, drops those a box kept in an earlier round suppresses, and runs
// the greedy NMS over the rest. Kept boxes go straight to the image's output rows
// (network-input pixels until the final mapping), where later rounds read them. Greedy
// NMS decides each box from better boxes only, so the rounds give the CPU's result for
// any number of candidates; an image with at most topk candidates takes one round.
// One block an image (a grid of the batch), so occupancy buys nothing: minimum blocks 1
// lets ptxas use 103 registers (sm_90a) instead of aiming at 64 and spilling 40 bytes,
// and the per-thread item loops are unrolled so key[] and c[] stay in registers.
__global__ void __launch_bounds__(kThreads, 1)
    k_select_nms(const float *__restrict__ S_all, const float *__restrict__ boxes_all,
                 const int *__restrict__ cls_all, int yolox, int A, int C,
                 const bd_cuda_post_desc *__restrict__ descs, int topk, int out_cap,
                 float *__restrict__ dets, int *__restrict__ counts) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  __shared__ unsigned long long skey[kSort];
  __shared__ float4 sbox[kSort];
  __shared__ int scls[kSort];
  __shared__ unsigned char ssup[kSort];
  __shared__ int shist[256];
  __shared__ int sw[kThreads / 32 + 1];
  __shared__ int sdig[2];

  const int b = blockIdx.x, tid = threadIdx.x;
  const bd_cuda_post_desc D = descs[b];
  const int M = yolox ? A : A * C, strict = !yolox;
  const float *S = S_all + (int64_t)b * M;
  const float thr = D.score_thr;
  float *out = dets + (int64_t)b * out_cap * 6;
  const int max_det = D.max_det < out_cap ? D.max_det : out_cap;

  // Candidates after the boundary (the last one of the previous round: key bkey, index
  // bidx) in the total order; in the first round, every candidate.
  bool after = false;
  uint32_t bkey = 0;
  int bidx = -1;
  auto eligible = [&](int i, float s, uint32_t key) {
    return is_cand(s, thr, strict) && (!after || key < bkey || (key == bkey && i > bidx));
  };

  int kept = 0;
  while (kept < max_det) {
    // 1. How many candidates are left. Each thread takes kItems consecutive scores per
    // chunk, so that thread order is index order (the compaction below relies on it)
    // and a chunk of kThreads * kItems costs one block scan.
    int total = 0;
    for (int base = 0; base < M; base += kChunk) {
      const int i0 = base + tid * kItems;
      int cnt = 0;
#pragma unroll
      for (int u = 0; u < kItems; ++u)
        if (i0 + u < M) {
          const float s = S[i0 + u];
          cnt += eligible(i0 + u, s, score_key(s));
        }
      int t;
      block_scan(cnt, sw, &t);
      total += t;
    }
    if (total == 0) break;
    const bool select = total > topk;
    const int want = select ? topk : total;

    // 2. Too many: radix select (8-bit digits, most significant first) of the topk-th
    // largest key T; need_eq = how many candidates equal to T make the cut.
    uint32_t T = 0;
    int need_eq = 0;
    if (select) {
      uint32_t prefix = 0, mask = 0;
      int k = topk;
      for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = tid; j < 256; j += kThreads) shist[j] = 0;
        __syncthreads();
        for (int i = tid; i < M; i += kThreads) {
          const float s = S[i];
          const uint32_t key = score_key(s);
          if (!eligible(i, s, key)) continue;
          if ((key & mask) == prefix) atomicAdd(&shist[(key >> shift) & 255u], 1);
        }
        __syncthreads();
        if (tid == 0) {
          int acc = 0, d = 255;
          for (; d > 0; --d) {
            if (acc + shist[d] >= k) break;
            acc += shist[d];
          }
          sdig[0] = d;
          sdig[1] = k - acc;
        }
        __syncthreads();
        prefix |= (uint32_t)sdig[0] << shift;
        mask |= 0xFFu << shift;
        k = sdig[1];
        __syncthreads();
      }
      T = prefix;
      need_eq = k;
    }

    // 3. Ordered compaction of the chosen candidates (equal keys: lowest indices first),
    // as sort keys: (~score key, index) ascending = score descending, index ascending.
    int n_c = 0, eq_seen = 0;
    for (int base = 0; base < M && n_c < want; base += kChunk) {
      const int i0 = base + tid * kItems;
      uint32_t key[kItems];
      bool c[kItems];
      int n_eq = 0;
#pragma unroll
      for (int u = 0; u < kItems; ++u) {
        const float s = i0 + u < M ? S[i0 + u] : 0.f;
        key[u] = score_key(s);
        c[u] = i0 + u < M && eligible(i0 + u, s, key[u]);
        n_eq += c[u] && select && key[u] == T;
      }
      int eq_rank = 0, eq_tot = 0;
      if (select) eq_rank = eq_seen + block_scan(n_eq, sw, &eq_tot);
      int n_take = 0;
#pragma unroll
      for (int u = 0; u < kItems; ++u) {
        bool take = c[u];
        if (select) {
          const bool eq = c[u] && key[u] == T;
          take = c[u] && (key[u] > T || (eq && eq_rank < need_eq));
          eq_rank += eq;
          c[u] = take;
        }
        n_take += take;
      }
      int taken;
      int pos = n_c + block_scan(n_take, sw, &taken);
#pragma unroll
      for (int u = 0; u < kItems; ++u)
        if (c[u]) skey[pos++] = ((unsigned long long)(~key[u]) << 32) | (uint32_t)(i0 + u);
      n_c += taken;
      eq_seen += eq_tot;
    }
    for (int j = n_c + tid; j < kSort; j += kThreads) skey[j] = ~0ull;
    __syncthreads();

    // 4. Bitonic sort of the kSort keys, one compare pair per thread and step.
    for (int k = 2; k <= kSort; k <<= 1)
      for (int j = k >> 1; j > 0; j >>= 1) {
        const int i = 2 * tid - (tid & (j - 1)), ij = i + j;
        const bool up = (i & k) == 0;
        const unsigned long long x = skey[i], y = skey[ij];
        if ((x > y) == up) {
          skey[i] = y;
          skey[ij] = x;
        }
        __syncthreads();
      }

    // 5. The round's boxes; those a box kept in an earlier round suppresses (its rows
    // hold network-input boxes until step 7) start suppressed.
    for (int p = tid; p < n_c; p += kThreads) {
      const int idx = (int)(uint32_t)skey[p];
      float4 bx;
      int cl;
      if (yolox) {
        bx = reinterpret_cast<const float4 *>(boxes_all)[(int64_t)b * A + idx];
        cl = cls_all[(int64_t)b * A + idx];
      } else {
        const float *q = boxes_all + ((int64_t)b * A + idx / C) * 4;
        bx = make_float4(q[0], q[1], q[2], q[3]);
        cl = idx % C;
      }
      unsigned char sup = 0;
      for (int k = 0; k < kept && !sup; ++k) {
        const float *o = out + (int64_t)k * 6;
        if ((int)o[5] == cl && box_iou(make_float4(o[0], o[1], o[2], o[3]), bx) > D.iou_thr)
          sup = 1;
      }
      sbox[p] = bx;
      scls[p] = cl;
      ssup[p] = sup;
    }
    __syncthreads();

    // 6. Greedy NMS in sorted order: every thread walks the list (uniform decisions read
    // from shared memory after a barrier), the kept box suppresses later ones in
    // parallel; thread 0 writes it to the next output row.
    for (int i = 0; i < n_c && kept < max_det; ++i) {
      if (ssup[i]) continue;
      const float4 bi = sbox[i];
      const int ci = scls[i];
      if (tid == 0) {
        float *o = out + (int64_t)kept * 6;
        o[0] = bi.x, o[1] = bi.y, o[2] = bi.z, o[3] = bi.w;
        o[4] = S[(uint32_t)skey[i]];
        o[5] = (float)ci;
      }
      ++kept;
      for (int j = i + 1 + tid; j < n_c; j += kThreads)
        if (!ssup[j] && scls[j] == ci && box_iou(bi, sbox[j]) > D.iou_thr) ssup[j] = 1;
      __syncthreads();
    }
    if (!select) break;  // every candidate has had its turn
    const unsigned long long last = skey[n_c - 1];
    after = true;
    bkey = ~(uint32_t)(last >> 32);
    bidx = (int)(uint32_t)last;
    __syncthreads();  // skey, sbox and the output rows are rewritten by the next round
  }
  __syncthreads();

  // 7. Map the kept rows to original pixels and clip; zeros past the count.
  const float fw = (float)D.orig_w, fh = (float)D.orig_h;
  for (int k = tid; k < out_cap; k += kThreads) {
    float *o = out + (int64_t)k * 6;
    if (k >= kept) {
      for (int j = 0; j < 6; ++j) o[j] = 0.f;
      continue;
    }
    for (int j = 0; j < 4; ++j) {
      float t = yolox ? __fdiv_rn(o[j], D.ratio) : __fmul_rn(o[j], (j & 1) ? D.scale_y : D.scale_x);
      o[j] = clampf(t, 0.f, (j & 1) ? fh : fw);
    }
  }
  if (tid == 0) counts[b] = kept;
}

int grid_anchors(int in_h, int in_w) {
  return (in_h / 8) * (in_w / 8) + (in_h / 16) * (in_w / 16) + (in_h / 32) * (in_w / 32);
}

bool bad_common(int n, int topk, int out_cap) {
  return n < 1 || n > 65535 || topk < 1 || topk > BD_CUDA_POST_MAX_TOPK || out_cap < 1 ||
         out_cap > BD_CUDA_POST_MAX_DET;
}

}  // namespace

extern "C" cudaError_t bd_cuda_post_yolox_decode(const float *raw, int n, int in_h, int in_w,
                                                 int num_classes, int decoded, float *score,
                                                 float *box, int *cls, cudaStream_t stream) {
  if (n < 1 || n > 65535 || in_h < 32 || in_w < 32 || in_h > 4096 || in_w > 4096 ||
      num_classes < 1 || num_classes > BD_CUDA_POST_MAX_CLASSES)
    return cudaErrorInvalidValue;
  const int A = grid_anchors(in_h, in_w);
  BD_LAUNCH(k_yolox_decode, bd_grid((int64_t)n * A, 256), 256, stream, raw, n, in_h, in_w,
            num_classes, A, decoded ? 1 : 0, score, box, cls);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_post_yolox(const float *raw, int n, int in_h, int in_w,
                                          int num_classes, int decoded,
                                          const bd_cuda_post_desc *descs, int topk, int out_cap,
                                          void *ws, float *dets, int *counts, cudaStream_t stream) {
  if (bad_common(n, topk, out_cap) || !ws || ((uintptr_t)ws & 15u)) return cudaErrorInvalidValue;
  const int A = grid_anchors(in_h, in_w);
  const size_t per = ((size_t)n * A * sizeof(float) + 255) / 256 * 256;
  float *score = (float *)ws;
  float *box = (float *)((char *)ws + per);
  int *cls = (int *)((char *)ws + 5 * per);
  cudaError_t e =
      bd_cuda_post_yolox_decode(raw, n, in_h, in_w, num_classes, decoded, score, box, cls, stream);
  if (e != cudaSuccess) return e;
  BD_LAUNCH(k_select_nms, n, kThreads, stream, score, box, cls, 1, A, num_classes, descs, topk,
            out_cap, dets, counts);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_post_damo(const float *scores, const float *boxes, int n,
                                         int num_anchors, int num_classes,
                                         const bd_cuda_post_desc *descs, int topk, int out_cap,
                                         float *dets, int *counts, cudaStream_t stream) {
  if (bad_common(n, topk, out_cap) || num_anchors < 1 || num_anchors > BD_CUDA_POST_MAX_ANCHORS ||
      num_classes < 1 || num_classes > BD_CUDA_POST_MAX_CLASSES ||
      (int64_t)num_anchors * num_classes > BD_CUDA_POST_MAX_SCORES)
    return cudaErrorInvalidValue;
  BD_LAUNCH(k_select_nms, n, kThreads, stream, scores, boxes, nullptr, 0, num_anchors, num_classes,
            descs, topk, out_cap, dets, counts);
  return cudaGetLastError();
}
