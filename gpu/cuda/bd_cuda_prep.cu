// Pre-processing on the GPU (issue 6, first part): uint8 RGB images -> resized (OpenCV
// INTER_LINEAR fixed-point arithmetic, bit-identical to bd_family_resize_u8 and so to
// cv2.resize) -> the network input, letterbox padding or stretch, RGB or BGR order:
// FP32 NCHW, or the 16-bit NHWC tensor the network's first layers make of the input
// (bd_cuda_prep_layout: the input itself, or a Focus stem's space-to-depth Concat with
// its zero padding), so that device detection needs no conversion pass (pixel levels
// are integers <= 255, exact in both 16-bit types). One thread per output pixel; rows of
// a batch are described by bd_cuda_prep_desc so that one launch serves a batch of mixed
// sizes.
#include "bd_cuda_common.cuh"
#include "bd_cuda_kernels.h"

namespace {

__device__ __forceinline__ int cv_coef(float v) {
  int r = __float2int_rn(v); // cvRound: half to even, like lrintf
  return r < -32768 ? -32768 : (r > 32767 ? 32767 : r);
}

// The source coordinate and the two weights for output coordinate d, exactly as the
// CPU code: double (d + 0.5) * scale - 0.5 (no FMA contraction), then float.
__device__ __forceinline__ void coord(int d, double scale, int slen, bool clamp_edge, int *s0,
                                      int *w0, int *w1) {
  float f = (float)__dadd_rn(__dmul_rn((double)d + 0.5, scale), -0.5);
  int s = (int)floorf(f);
  f -= (float)s;
  if (clamp_edge) {
    if (s < 0) f = 0.f, s = 0;
    if (s >= slen - 1) f = 0.f, s = slen - 1;
  }
  *s0 = s;
  *w0 = cv_coef(__fmul_rn(__fsub_rn(1.f, f), 2048.f));
  *w1 = cv_coef(__fmul_rn(f, 2048.f));
}

// Pixel (x, y) of the network input of image D (inside its resized part): its three
// levels in source order.
__device__ __forceinline__ void src_pixel(const uint8_t *src, const bd_cuda_prep_desc &D, int x,
                                          int y, int v[3]) {
  const uint8_t *S = src + D.offset;
  if (D.rw == D.sw && D.rh == D.sh) { // cv::resize copies
    const uint8_t *q = S + ((int64_t)y * D.sw + x) * 3;
    v[0] = q[0];
    v[1] = q[1];
    v[2] = q[2];
    return;
  }
  int sx, a0, a1, sy, b0, b1;
  coord(x, D.scale_x, D.sw, true, &sx, &a0, &a1);
  coord(y, D.scale_y, D.sh, false, &sy, &b0, &b1);
  int y0 = sy < 0 ? 0 : (sy >= D.sh ? D.sh - 1 : sy);
  int y1 = sy + 1 < 0 ? 0 : (sy + 1 >= D.sh ? D.sh - 1 : sy + 1);
  const uint8_t *r0 = S + ((int64_t)y0 * D.sw + sx) * 3, *r1 = S + ((int64_t)y1 * D.sw + sx) * 3;
  for (int c = 0; c < 3; ++c) {
    int h0 = a1 ? r0[c] * a0 + r0[c + 3] * a1 : r0[c] * a0;
    int h1 = a1 ? r1[c] * a0 + r1[c + 3] * a1 : r1[c] * a0;
    int t = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2;
    v[c] = t < 0 ? 0 : (t > 255 ? 255 : t);
  }
}

__global__ void k_prep(const uint8_t *__restrict__ src, const bd_cuda_prep_desc *__restrict__ d,
                       int n, int out_w, int out_h, int bgr, float pad, float *__restrict__ dst) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t plane = (int64_t)out_w * out_h, total = plane * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int b = (int)(i / plane);
    int64_t p = i - (int64_t)b * plane;
    int y = (int)(p / out_w), x = (int)(p - (int64_t)y * out_w);
    const bd_cuda_prep_desc &D = d[b];
    float *o = dst + (int64_t)b * 3 * plane + p;
    if (x >= D.rw || y >= D.rh) {
      o[0] = o[plane] = o[2 * plane] = pad;
      continue;
    }
    int v[3];
    src_pixel(src, D, x, y, v);
    for (int c = 0; c < 3; ++c) o[c * plane] = (float)v[bgr ? 2 - c : c];
  }
}

// Output pixel o of a layout (bd_cuda_prep_layout) from each piece's values v[k][i]
// (channel c0 + i of its input pixel): all `pitch` values, zeros where no piece writes,
// stored 16 bytes at a time where the pitch allows (vec). Every index is a compile-time
// one (unrolled loops, runtime bounds as breaks and selects), so the pixel is assembled
// in registers: an array indexed by the pieces' channel offsets lived in local memory
// (ptxas: a 64/80-byte stack frame in each kernel).
__device__ __forceinline__ void layout_store(const bd_cuda_prep_layout &lo,
                                             const float (&v)[BD_PREP_MAX_PIECES][3], int vec,
                                             bd_h16 *__restrict__ o) {
#pragma unroll
  for (int c0 = 0; c0 < BD_PREP_MAX_PITCH; c0 += 8) {
    if (c0 >= lo.pitch) break;
    uint4 out;
    bd_h16x2 *h = reinterpret_cast<bd_h16x2 *>(&out);
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      float a = 0.f, b = 0.f;
#pragma unroll
      for (int k = 0; k < BD_PREP_MAX_PIECES; ++k) {
        if (k >= lo.n_pieces) break;
        const int ra = c0 + j - lo.piece[k].ch, rb = ra + 1, nc = lo.piece[k].nc;
        if (ra >= 0 && ra < nc) a = ra == 0 ? v[k][0] : ra == 1 ? v[k][1] : v[k][2];
        if (rb >= 0 && rb < nc) b = rb == 0 ? v[k][0] : rb == 1 ? v[k][1] : v[k][2];
      }
      h[j / 2] = bd_h16x2_st(a, b);
    }
    if (vec) {
      *reinterpret_cast<uint4 *>(o + c0) = out;
    } else {
      const bd_h16 *e = reinterpret_cast<const bd_h16 *>(&out);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (c0 + j < lo.pitch) o[c0 + j] = e[j];
    }
  }
}

// 16-bit NHWC through a layout (bd_cuda_prep_layout): one thread per output pixel, its
// pieces' input pixels resized, then layout_store.
__global__ void k_prep_h16(const uint8_t *__restrict__ src,
                           const bd_cuda_prep_desc *__restrict__ d, int n, int bgr, float pad,
                           bd_cuda_prep_layout lo, int vec, bd_h16 *__restrict__ dst) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t plane = (int64_t)lo.out_w * lo.out_h, total = plane * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int b = (int)(i / plane);
    int64_t p = i - (int64_t)b * plane;
    int oy = (int)(p / lo.out_w), ox = (int)(p - (int64_t)oy * lo.out_w);
    const bd_cuda_prep_desc &D = d[b];
    float v[BD_PREP_MAX_PIECES][3];
#pragma unroll
    for (int k = 0; k < BD_PREP_MAX_PIECES; ++k) {
      if (k >= lo.n_pieces) break;
      const int x = lo.piece[k].ox + lo.stride * ox, y = lo.piece[k].oy + lo.stride * oy;
      int px[3] = {0, 0, 0};
      const bool in = x < D.rw && y < D.rh;
      if (in) src_pixel(src, D, x, y, px);
#pragma unroll
      for (int c = 0; c < 3; ++c) { // source channel c0 + c, in network order
        const int sc = lo.piece[k].c0 + c, q = bgr ? 2 - sc : sc;
        v[k][c] = in ? (float)(q == 0 ? px[0] : q == 1 ? px[1] : px[2]) : pad;
      }
    }
    layout_store(lo, v, vec, dst + i * lo.pitch);
  }
}

// The same layout from the network's FP32 NCHW input (the raw network path: `bench`, the
// engine's run): a Focus stem's four strided Slices, their zeroed padding channels and
// Concat, or the input's 16-bit copy, in one pass; reads are float loads of neighbouring
// pixels, each output pixel's `pitch` values one or two 16-byte stores.
__global__ void k_layout_f32(const float *__restrict__ src, int n, int in_h, int in_w,
                             bd_cuda_prep_layout lo, int vec, bd_h16 *__restrict__ dst) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  int64_t plane = (int64_t)lo.out_w * lo.out_h, total = plane * n, in_plane = (int64_t)in_h * in_w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int b = (int)(i / plane);
    int64_t p = i - (int64_t)b * plane;
    int oy = (int)(p / lo.out_w), ox = (int)(p - (int64_t)oy * lo.out_w);
    float v[BD_PREP_MAX_PIECES][3];
    layout_pixel_f32(src, b, in_plane, in_w, lo, ox, oy, v);
    layout_store(lo, v, vec, dst + i * lo.pitch);
  }
}

// k_layout_f32 with the input rows staged in shared memory: a block per output row
// (image b, row oy) loads the R input rows that row reads (stride * oy + 0..R-1, R = the
// pieces' largest oy + 1), all 3 channels, whole and coalesced (16-byte loads where rows
// are multiples of 4 floats), then writes the row's pixels from them. The per-pixel
// kernel above reads each input float alone, and with a Focus stem's stride 2 a warp's
// load uses every other float: on the H100 it moved 262 MB in 168 us at DAMO-T b32
// (1.56 TB/s) against ~87 us at 3 TB/s.
constexpr int kLayoutRowsSmem = 48 * 1024; // bytes; rows that need more take k_layout_f32

__device__ __forceinline__ float *layout_rows_smem() {
#ifdef BD_KERNEL_EMU
  __shared__ __align__(16) float sm[kLayoutRowsSmem / 4];
  return sm;
#else
  extern __shared__ __align__(16) float bd_layout_rows_smem[];
  return bd_layout_rows_smem;
#endif
}

__global__ void k_layout_f32_rows(const float *__restrict__ src, int in_h, int in_w, int rows,
                                  bd_cuda_prep_layout lo, int vec, int vec_in,
                                  bd_h16 *__restrict__ dst) {
  bd_pdl_wait(); // first: see bd_cuda_common.cuh (BD_LAUNCH)
  float *sm = layout_rows_smem(); // [3][rows][in_w]
  const int b = blockIdx.x / lo.out_h, oy = blockIdx.x - b * lo.out_h;
  const int64_t in_plane = (int64_t)in_h * in_w;
  const float *s0 = src + (int64_t)b * 3 * in_plane + (int64_t)lo.stride * oy * in_w;
  for (int cr = 0; cr < 3 * rows; ++cr) { // channel cr / rows, row cr % rows
    const float *s = s0 + (int64_t)(cr / rows) * in_plane + (int64_t)(cr % rows) * in_w;
    float *d = sm + cr * in_w;
    if (vec_in)
      for (int x = threadIdx.x; x < in_w / 4; x += blockDim.x)
        reinterpret_cast<float4 *>(d)[x] = reinterpret_cast<const float4 *>(s)[x];
    else
      for (int x = threadIdx.x; x < in_w; x += blockDim.x) d[x] = s[x];
  }
  __syncthreads();
  bd_h16 *o = dst + (int64_t)blockIdx.x * lo.out_w * lo.pitch;
  for (int ox = threadIdx.x; ox < lo.out_w; ox += blockDim.x) {
    float v[BD_PREP_MAX_PIECES][3];
#pragma unroll
    for (int k = 0; k < BD_PREP_MAX_PIECES; ++k) {
      if (k >= lo.n_pieces) break;
      const float *r = sm + (lo.piece[k].c0 * rows + lo.piece[k].oy) * in_w + lo.piece[k].ox +
                       lo.stride * ox;
#pragma unroll
      for (int c = 0; c < 3; ++c) v[k][c] = c < lo.piece[k].nc ? r[c * rows * in_w] : 0.f;
    }
    layout_store(lo, v, vec, o + (int64_t)ox * lo.pitch);
  }
}

} // namespace

extern "C" cudaError_t bd_cuda_layout_f32_h16(const float *src, int n, int in_h, int in_w,
                                              const bd_cuda_prep_layout *lo, void *dst,
                                              cudaStream_t s) {
  if (n < 1 || !bd_cuda_prep_layout_ok(lo) || !bd_cuda_prep_layout_inside(lo, in_h, in_w))
    return cudaErrorInvalidValue;
  int64_t total = (int64_t)n * lo->out_w * lo->out_h;
  int vec = lo->pitch % 8 == 0 && (uintptr_t)dst % 16 == 0, rows = 0;
  for (int k = 0; k < lo->n_pieces; ++k)
    rows = lo->piece[k].oy + 1 > rows ? lo->piece[k].oy + 1 : rows;
  const size_t smem = (size_t)3 * rows * in_w * sizeof(float);
  /* Staged rows: every row a block loads is inside the input (stride * oy + r for r
   * below the largest piece oy, which bd_cuda_prep_layout_inside bounds). */
  if (smem <= (size_t)kLayoutRowsSmem && (int64_t)n * lo->out_h <= 0x7fffffff) {
    const int vec_in = in_w % 4 == 0 && (uintptr_t)src % 16 == 0;
    BD_LAUNCH_SMEM(k_layout_f32_rows, (unsigned)(n * lo->out_h), 256, smem, s, src, in_h, in_w,
                   rows, *lo, vec, vec_in, (bd_h16 *)dst);
    return cudaGetLastError();
  }
  BD_LAUNCH(k_layout_f32, bd_grid(total, 256), 256, s, src, n, in_h, in_w, *lo, vec,
            (bd_h16 *)dst);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_preprocess_u8(const uint8_t *src, const bd_cuda_prep_desc *descs,
                                             int n, int out_w, int out_h, int bgr, float pad,
                                             float *dst, cudaStream_t s) {
  if (n < 1 || out_w < 1 || out_h < 1) return cudaErrorInvalidValue;
  int64_t total = (int64_t)n * out_w * out_h;
  BD_LAUNCH(k_prep, bd_grid(total, 256), 256, s, src, descs, n, out_w, out_h, bgr, pad, dst);
  return cudaGetLastError();
}

extern "C" cudaError_t bd_cuda_preprocess_u8_h16(const uint8_t *src,
                                                 const bd_cuda_prep_desc *descs, int n, int bgr,
                                                 float pad, const bd_cuda_prep_layout *lo,
                                                 void *dst, cudaStream_t s) {
  if (n < 1 || !bd_cuda_prep_layout_ok(lo)) return cudaErrorInvalidValue;
  int64_t total = (int64_t)n * lo->out_w * lo->out_h;
  int vec = lo->pitch % 8 == 0 && (uintptr_t)dst % 16 == 0; /* 16-byte stores */
  BD_LAUNCH(k_prep_h16, bd_grid(total, 256), 256, s, src, descs, n, bgr, pad, *lo, vec,
            (bd_h16 *)dst);
  return cudaGetLastError();
}
