/* bd_cuda_kernels: the extern "C" launchers of the cuda backend's own kernels (one op
 * family per .cu file). Host code (C) describes tensors as strided views so that one
 * kernel serves every layout: FP32 in ONNX order (NCHW, row-major) and 16-bit NHWC.
 *
 * Every launcher only enqueues work on `stream` (capturable into a CUDA graph: no
 * allocation, no synchronisation) and returns the launch status (cudaGetLastError). */
#ifndef BD_CUDA_KERNELS_H
#define BD_CUDA_KERNELS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BD_CUDA_MAX_RANK 6

/* 1: our kernels launch with programmatic stream serialization (bd_cuda_common.cuh,
 * bd_pdl_wait). Process-wide, read at each launch (atomically); the backend sets it
 * around each graph capture under the capture lock, by the plan's batch
 * (BATCHDET_CUDA_PDL, compute capability 9.0+), and leaves it 0 otherwise. */
extern int bd_cuda_pdl;

/* BD_CT_H16 is the backend's 16-bit storage type: IEEE half, or bfloat16 in builds with
 * BD_CUDA_BF16 (see bd_cuda_common.cuh for why half is the default). */
typedef enum { BD_CT_F32 = 0, BD_CT_H16 = 1 } bd_cuda_dtype;

/* A strided tensor view: element (i0..i{r-1}) lives at base + sum(ik * strides[k])
 * elements. A stride of 0 broadcasts. */
typedef struct bd_cuda_view {
  void *base;
  int dtype; /* bd_cuda_dtype */
  int rank;  /* 1..BD_CUDA_MAX_RANK */
  int64_t dims[BD_CUDA_MAX_RANK];
  int64_t strides[BD_CUDA_MAX_RANK];
} bd_cuda_view;

typedef enum {
  BD_UN_ID = 0,
  BD_UN_RELU,
  BD_UN_SIGMOID,
  BD_UN_SILU,
  BD_UN_EXP
} bd_cuda_unop;

typedef enum { BD_BIN_ADD = 0, BD_BIN_SUB, BD_BIN_MUL, BD_BIN_DIV } bd_cuda_binop;

/* out[i] = f(in[i]) over out's dims (in's dims are ignored: its strides are read with
 * out's dims, 0-strides broadcast). Covers copies, layout/dtype conversion, transpose,
 * slice, concat pieces and the unary activations. FP32 math, 16-bit stores round to nearest even. */
cudaError_t bd_cuda_map(const bd_cuda_view *out, const bd_cuda_view *in, int unop,
                        cudaStream_t stream);
/* n (1..BD_CUDA_MAP_MULTI) such maps in one launch (blockIdx.y picks one), each as
 * bd_cuda_map's generic strided path (no 16-byte vector paths): for a Concat of small
 * pieces, where each launch costs more than its copy (DAMO-T's box Concats at batch 1:
 * 10-11 us for three launches on the H100). Every in of one dtype, every out of one
 * dtype; cudaErrorInvalidValue otherwise. */
#define BD_CUDA_MAP_MULTI 8
cudaError_t bd_cuda_map_multi(int n, const bd_cuda_view *outs, const bd_cuda_view *ins,
                              int unop, cudaStream_t stream);

/* out[i] = a[i] op b[i] over out's dims (numpy broadcasting through 0-strides). */
cudaError_t bd_cuda_binary(const bd_cuda_view *out, const bd_cuda_view *a,
                           const bd_cuda_view *b, int binop, cudaStream_t stream);

/* Convolution geometry, NHWC activations, KRSC weights ([M][kh][kw][C/group]). ldx, ldy,
 * ldr: channels between consecutive pixels of x, y and the residual r when they are
 * channel slices of wider tensors (Concat pieces read or written in place); 0 = packed
 * (c, m, m). A pitched residual is taken by our tensor-core kernel only (the others
 * refuse it). cuDNN runs only packed tensors: the layer code routes a pitched output
 * through a packed copy and the epilogue. */
typedef struct bd_cuda_conv_shape {
  int n, h, w, c;   /* input */
  int oh, ow, m;    /* output */
  int kh, kw, sh, sw, dh, dw, pad_t, pad_l, group;
  int act;          /* bd_act */
  int res;          /* bd_res_mode */
  int ldx, ldy;     /* pixel pitches, 0 = packed */
  int xzero;        /* 1: x's channels c..ldx-1 are zeros (a channel-padded layer reads x
                       as its padded input, no copy) */
  int ldr;          /* residual pixel pitch, 0 = packed */
  /* Twin outputs (our tensor-core kernel only, bd_cuda_conv_mma_tiled): m1 > 0 sends
   * output channels [0, m1) to y (pitch ldy) and [m1, m) to y2 (pitch ldy2, its channel
   * 0 first): two convs of one input with the same geometry (DAMO-YOLO's and YOLOX's CSP
   * stages: 1x1 conv1 and conv2) run as one, their weights and biases stacked, the input
   * read once. Even twins (m1 and m multiples of 8): ldy and ldy2 multiples of 8, y and
   * y2 16-byte aligned (8 channels a store). With a residual (both twins' of one mode:
   * the split FPN convs after bd_compile's split_upsampled_concats; even twins only)
   * channels [m1, m) read theirs from r2 at pitch ldr2 (M - m1 when 0; a multiple of 8,
   * r2 16-byte aligned). Ragged twins (m1 or m not a multiple of 8: a detection head's
   * box and class convs, 68 + 80 channels) have no residual and any pitches; the second
   * output's channels start at m1 rounded up to 8 (m1s; [m1, m1s) are computed from the
   * weights there, zeros in the backend's blob, and never stored), so ldy >= m1, ldy2 >=
   * m - m1s, and an 8-channel group lies in one output: stored in one 16-byte store where
   * it is whole and its output's pitch and base allow, else channel by channel. 0: one
   * output. act2 (below) is the second's activation. */
  int m1, ldy2;
  void *y2;
  /* Residual read upsampled (our tensor-core kernel only): rup > 1 makes r a tensor of
   * oh/rup x ow/rup pixels (pitch ldr) that output pixel (oy, ox) reads at (oy/rup,
   * ox/rup): a nearest Resize by an integer factor fused into its reader (FPN top-down
   * paths after bd_compile's split_upsampled_concats). oh, ow multiples of rup, a
   * residual, no twin, n*oh*ow < 2^31. 0 or 1: r has the output's pixels. */
  int rup;
  const void *r2; /* twins with a residual: the second's (see m1 above) */
  int ldr2;
  int act2; /* twins: channels [m1, m)'s activation as bd_act + 1; 0: act, as the first's */
  /* Planning only (the kernels ignore it): 1 when the output's only reader is a channel
   * Concat, whose piece it becomes where the layer can write one; the conv choice decides
   * such layers apart from others of their shape (bd_cuda_conv_choose). */
  int piece;
} bd_cuda_conv_shape;

/* Where a twin's second output starts in the stacked channels (and weights and biases):
 * m1 rounded up to 8 (ragged twins; m1 itself for even ones). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int bd_cuda_twin_m1s(int m1) {
  return (m1 + 7) / 8 * 8;
}

/* Direct convolution with the fused epilogue (bias, activation, residual), 16-bit in and
 * out, FP32 accumulate. Used for depthwise convs and whenever cuDNN has no algorithm.
 * bias (FP32, M) and r (16-bit NHWC like y) may be NULL. */
cudaError_t bd_cuda_conv_direct(const bd_cuda_conv_shape *p, const void *x, const void *w,
                                const float *bias, const void *r, void *y,
                                cudaStream_t stream);

/* Tensor-core implicit-GEMM convolution (WMMA, FP32 accumulate) with the same fused
 * epilogue and contract as bd_cuda_conv_direct, for group == 1, C % 8 == 0, 16-byte
 * aligned x and w, and either M % 8 == 0 with 16-byte aligned y, r and ldy, ldr % 8 == 0,
 * or any other M with any ldy, ldr >= M (cudaErrorInvalidValue otherwise; a layer whose
 * C is not a multiple of 8 runs on zero-padded weights and input, bd_cuda_cudnn.c).
 * Summation order differs from the direct kernel (results equal up to FP32 rounding). */
cudaError_t bd_cuda_conv_mma(const bd_cuda_conv_shape *p, const void *x, const void *w,
                             const float *bias, const void *r, void *y, cudaStream_t stream);
/* The same on block tile `tile` (0: 128 pixels x 64 channels, 1: 256 x 32, 2: 64 x 128;
 * 3: 64 x 128 and 4: 128 x 64 with the reduction split over blockIdx.z ("split-K", for
 * outputs too small to fill the GPU: batch 1, deep low-resolution layers); 5: 128 x 64
 * and 6: 64 x 128 with k-slices through a 3-deep cp.async ring ("async"); 7: 128 x 128
 * (64 x 32 per warp, a 2-deep ring), 8 and 9: tiles 5 and 6, all three with the input's
 * copies through L1 ("async L1"); 10 and 11: tiles 8 and 9 split like 4 and 3; 12 and
 * 13: 128 x 32 and 64 x 64 async L1 on 4 warps; 14-16: async L1 in dynamic shared
 * memory with 64-wide warp tiles and deeper rings: 128 x 128 of 64 x 64 warp tiles with
 * 64-deep k-slices, 3 stages; 128 x 128 of 64 x 32, 4 stages; 256 x 64 of 64 x 64, 4
 * stages (bd_cuda_conv_mma_tile_info; a GPU without that much shared memory a block
 * refuses them at launch); 17: "patch", whole input patches in shared memory for layers
 * with few channels (bd_cuda_conv_patch_geo says which: it refuses the others); 18 and
 * 19: Hopper warpgroup MMA (wgmma), 128 x 128 and 128 x 64, 64-deep k-slices in a 4-deep
 * ring, 20: tile 19 split like 4; 21 and 22: the same at 128 x 192 and 128 x 96 (no
 * channels wasted on 96- and 192-channel layers, half of DAMO-YOLO's arithmetic), 23: tile
 * 22 split like 4; the wgmma tiles only where bd_cuda_conv_wgmma_ready
 * (cudaErrorNotSupported elsewhere); 24 and 25: async L1 in dynamic shared memory, 4
 * stages, at the same widths on mma.sync (any sm_80+): 128 x 96 of 32 x 48 warp tiles,
 * 128 x 192 of the same (16 warps); -1:
 * bd_cuda_conv_mma_default_tile(p->m), which bd_cuda_conv_mma uses). A split tile sums
 * FP32 partials in ws (bd_cuda_conv_mma_ws_bytes) and a second kernel adds them and runs
 * the epilogue; it refuses (cudaErrorInvalidValue) a shape bd_cuda_conv_mma_splits gives
 * 0 for, or a smaller ws. ws may be NULL for the other tiles. */
#define BD_CONV_MMA_TILES 26
#define BD_CONV_SPLIT_BLOCKS 264                     /* blocks aimed at: 2 per SM of an H100 */
#define BD_CONV_SPLIT_MAX_WS ((size_t)16 << 20)       /* partials' bytes at most */
cudaError_t bd_cuda_conv_mma_tiled(const bd_cuda_conv_shape *p, int tile, const void *x,
                                   const void *w, const float *bias, const void *r, void *y,
                                   void *ws, size_t ws_bytes, cudaStream_t stream);
/* Without a measurement: wide pixel tiles for few output channels, wide channel tiles for
 * many. */
static inline int bd_cuda_conv_mma_default_tile(int m) { return m <= 32 ? 1 : m >= 128 ? 2 : 0; }
/* Each block tile's name, pixels x channels and whether it splits the reduction (the
 * launch in bd_cuda_conv_mma.cu instantiates the same geometry per tile). */
typedef struct bd_conv_mma_tile_info {
  const char *name;
  int bm, bn, split;
  int patch; /* 1: tile 17, which only takes the shapes bd_cuda_conv_patch_geo accepts */
  int wgmma; /* 1: tiles 18-23, which run only where bd_cuda_conv_wgmma_ready */
} bd_conv_mma_tile_info;
static inline const bd_conv_mma_tile_info *bd_cuda_conv_mma_tile_info(int tile) {
  static const bd_conv_mma_tile_info t[BD_CONV_MMA_TILES] = {
      {"128x64", 128, 64, 0, 0, 0},
      {"256x32", 256, 32, 0, 0, 0},
      {"64x128", 64, 128, 0, 0, 0},
      {"64x128 split-K", 64, 128, 1, 0, 0},
      {"128x64 split-K", 128, 64, 1, 0, 0},
      {"128x64 async", 128, 64, 0, 0, 0},
      {"64x128 async", 64, 128, 0, 0, 0},
      {"128x128 async L1", 128, 128, 0, 0, 0},
      {"128x64 async L1", 128, 64, 0, 0, 0},
      {"64x128 async L1", 64, 128, 0, 0, 0},
      {"128x64 async L1 split-K", 128, 64, 1, 0, 0},
      {"64x128 async L1 split-K", 64, 128, 1, 0, 0},
      {"128x32 async L1", 128, 32, 0, 0, 0},
      {"64x64 async L1", 64, 64, 0, 0, 0},
      {"128x128 w64x64 k64 x3", 128, 128, 0, 0, 0},
      {"128x128 w64x32 x4", 128, 128, 0, 0, 0},
      {"256x64 w64x64 x4", 256, 64, 0, 0, 0},
      {"patch", 256, 64, 0, 1, 0},
      {"128x128 wgmma x4", 128, 128, 0, 0, 1},
      {"128x64 wgmma x4", 128, 64, 0, 0, 1},
      {"128x64 wgmma x4 split-K", 128, 64, 1, 0, 1},
      {"128x192 wgmma x4", 128, 192, 0, 0, 1},
      {"128x96 wgmma x4", 128, 96, 0, 0, 1},
      {"128x96 wgmma x4 split-K", 128, 96, 1, 0, 1},
      {"128x96 w32x48 x4", 128, 96, 0, 0, 0},
      {"128x192 w32x48 x4", 128, 192, 0, 0, 0},
  };
  return tile >= 0 && tile < BD_CONV_MMA_TILES ? &t[tile] : (const bd_conv_mma_tile_info *)0;
}
/* Whether the wgmma tiles (18-23) may run: BATCHDET_CUDA_WGMMA=1 and the current GPU
 * an sm_90 (their sm_90a code runs there only). Off by default: they were written without
 * a Hopper to check them on (bd_cuda_conv_mma.cu). Read at each use. */
static inline int bd_cuda_conv_wgmma_ready(void) {
  const char *e = getenv("BATCHDET_CUDA_WGMMA");
  int dev = 0, major = 0, minor = 0;
  if (!e || strcmp(e, "1") != 0 || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return 0;
  return major == 9 && minor == 0;
}
/* Whether tile t may run here (the wgmma tiles only where bd_cuda_conv_wgmma_ready). */
static inline int bd_cuda_conv_tile_ready(int t) {
  const bd_conv_mma_tile_info *i = bd_cuda_conv_mma_tile_info(t);
  return i && (!i->wgmma || bd_cuda_conv_wgmma_ready());
}
static inline const char *bd_cuda_conv_mma_tile_name(int tile) {
  const bd_conv_mma_tile_info *t = bd_cuda_conv_mma_tile_info(tile);
  return t ? t->name : "?";
}
/* Tile 17 ("patch", k_conv_patch in bd_cuda_conv_mma.cu): a block takes 16 x th output
 * pixels of one image (th = 16, or 8 where that would pass BD_CONV_PATCH_SMEM_SOFT, the
 * image is at most 8 rows high or M > 64) and holds, in dynamic shared memory, the input
 * patch they read (ph x pw pixels, each of c16 = C rounded up to 16 channels, zeros past
 * C, pixels ps = c16 + 8 halves apart: conflict-free fragment reads at stride 1) and the
 * weights [M8][KH][KW][C16] (rows ks = k + 8 halves apart, k = KH*KW*C16); the
 * accumulators go to the epilogue through FP32 rows over the patch (8 warps x 8 pixels x
 * BD_CONV_PATCH_LDC floats). For layers with few channels: dense, undilated, equal
 * strides 1 or 2, C % 8 == 0 with 8 <= C <= 64, M <= 96, k <= 576, the shared bytes within
 * BD_CONV_PATCH_SMEM_MAX. A pure function of the shape (0: the tile does not take it), so
 * the choice, the launch and the tests agree. */
#define BD_CONV_PATCH_TILE 17
#define BD_CONV_PATCH_TW 16
#define BD_CONV_PATCH_MAX_K 576
#define BD_CONV_PATCH_MAX_M 96
#define BD_CONV_PATCH_SMEM_SOFT (64 * 1024) /* 3 blocks an SM of an H100 */
#define BD_CONV_PATCH_SMEM_MAX (112 * 1024) /* 2 */
#define BD_CONV_PATCH_LDC(nt) ((nt) * 8 + 4) /* floats a pixel in the epilogue's staging */
typedef struct bd_conv_patch_geo {
  int c16, ps, th, mt, ph, pw, k, ks, nt;
  int tiles_x, tiles_y;
  long long n_tiles;
  int w_off;   /* the weights' first half in shared memory */
  int smem;    /* bytes */
} bd_conv_patch_geo;
static inline int bd_cuda_conv_patch_geo(const bd_cuda_conv_shape *p, bd_conv_patch_geo *g) {
  bd_conv_patch_geo r;
  const int s = p->sh;
  if (p->group != 1 || p->dh != 1 || p->dw != 1 || p->sw != s || (s != 1 && s != 2) ||
      p->c < 8 || p->c > 64 || p->c % 8 || p->m < 1 || p->m > BD_CONV_PATCH_MAX_M ||
      p->kh < 1 || p->kw < 1 || p->kh > 7 || p->kw > 7 || p->n < 1 || p->oh < 1 || p->ow < 1 ||
      p->pad_t < 0 || p->pad_l < 0)
    return 0;
  r.c16 = (p->c + 15) / 16 * 16;
  r.ps = r.c16 + 8;
  r.k = p->kh * p->kw * r.c16;
  r.ks = r.k + 8;
  r.nt = (p->m + 7) / 8;
  if (r.k > BD_CONV_PATCH_MAX_K) return 0;
  const int wbytes = r.nt * 8 * r.ks * 2;
  for (r.mt = p->oh > 8 && r.nt <= 8 ? 2 : 1; r.mt >= 1; --r.mt) {
    r.th = 8 * r.mt;
    r.ph = (r.th - 1) * s + p->kh;
    r.pw = (BD_CONV_PATCH_TW - 1) * s + p->kw;
    const int pbytes = (r.ph * r.pw * r.ps * 2 + 15) / 16 * 16;
    const int sbytes = 8 * 8 * BD_CONV_PATCH_LDC(r.nt) * 4; /* the staging overlays it */
    r.w_off = (pbytes > sbytes ? pbytes : sbytes) / 2;
    r.smem = r.w_off * 2 + wbytes;
    if (r.smem <= (r.mt > 1 ? BD_CONV_PATCH_SMEM_SOFT : BD_CONV_PATCH_SMEM_MAX)) break;
  }
  if (r.mt < 1) return 0;
  r.tiles_x = (p->ow + BD_CONV_PATCH_TW - 1) / BD_CONV_PATCH_TW;
  r.tiles_y = (p->oh + r.th - 1) / r.th;
  r.n_tiles = (long long)p->n * r.tiles_x * r.tiles_y;
  if (g) *g = r;
  return 1;
}

/* How many parts a tile splits the reduction of shape p into: 1 for the unsplit tiles (tile
 * 17: 1 where bd_cuda_conv_patch_geo takes the shape, else 0); for
 * a split tile the count that brings the grid near BD_CONV_SPLIT_BLOCKS with at least 4
 * k-slices of 32 per part (at most 16 parts), or 0 where splitting does not apply (the
 * grid is already that large, the reduction is short, or the partials would pass
 * BD_CONV_SPLIT_MAX_WS; they hold M rounded up to 8 channels a pixel). A pure function of
 * the shape: plan sizing and launch agree. */
static inline int bd_cuda_conv_mma_splits(const bd_cuda_conv_shape *p, int tile) {
  const bd_conv_mma_tile_info *t = bd_cuda_conv_mma_tile_info(tile);
  if (t && t->patch) return bd_cuda_conv_patch_geo(p, 0);
  if (!t || !t->split) return 1;
  const int bm = t->bm, bn = t->bn;
  const int64_t n_pix = (int64_t)p->n * p->oh * p->ow;
  const int64_t blocks = ((n_pix + bm - 1) / bm) * ((p->m + bn - 1) / bn);
  const int64_t slices = ((int64_t)p->kh * p->kw * p->c + 31) / 32;
  if (n_pix < 1 || blocks >= BD_CONV_SPLIT_BLOCKS / 2 || slices < 8) return 0;
  int64_t s = (BD_CONV_SPLIT_BLOCKS + blocks - 1) / blocks;
  if (s > slices / 4) s = slices / 4;
  if (s > 16) s = 16;
  if (s < 2) return 0;
  const int64_t per = (slices + s - 1) / s; /* k-slices per part; no part left empty */
  s = (slices + per - 1) / per;
  if (s < 2 || (size_t)s * (size_t)n_pix * (size_t)((p->m + 7) / 8 * 8) * sizeof(float) >
                   BD_CONV_SPLIT_MAX_WS)
    return 0;
  return (int)s;
}
/* Workspace bytes tile needs for shape p (0 for the unsplit tiles). */
static inline size_t bd_cuda_conv_mma_ws_bytes(const bd_cuda_conv_shape *p, int tile) {
  const int s = bd_cuda_conv_mma_splits(p, tile);
  return s > 1 ? (size_t)s * (size_t)p->n * p->oh * p->ow * ((p->m + 7) / 8 * 8) * sizeof(float)
               : 0;
}
/* The parts tile (-1: the default, unsplit) runs shape p in with workspace ws of ws_bytes
 * (16-byte aligned, at least bd_cuda_conv_mma_ws_bytes, for a split), or 0 when it
 * cannot: bd_cuda_conv_mma_tiled's workspace contract. */
static inline int bd_cuda_conv_mma_parts(const bd_cuda_conv_shape *p, int tile, const void *ws,
                                         size_t ws_bytes) {
  const int s = tile < 0 ? 1 : bd_cuda_conv_mma_splits(p, tile);
  if (s > 1 && (!ws || ((uintptr_t)ws & 15u) || ws_bytes < bd_cuda_conv_mma_ws_bytes(p, tile)))
    return 0;
  return s;
}

/* In-place epilogue after a cuDNN convolution: y = act(y + bias [+ r]) [+ r] (packed y
 * only: ldy must be 0 or m). */
cudaError_t bd_cuda_conv_epilogue(const bd_cuda_conv_shape *p, const float *bias,
                                  const void *r, void *y, cudaStream_t stream);

/* The epilogue out of place: y (M channels, pixels p->ldy apart) = epilogue(src), src
 * holding rows of src_c >= M channels (a channel-padded or packed convolution output). */
cudaError_t bd_cuda_conv_epilogue_from(const bd_cuda_conv_shape *p, const void *src, int src_c,
                                       const float *bias, const void *r, void *y,
                                       cudaStream_t stream);

/* Max pooling, 16-bit NHWC, padding is -inf. Pixels of x and y are xp and yp (>= c)
 * channels apart: c for packed tensors, more for a channel slice of a wider tensor (a
 * Concat piece read or written in place). */
cudaError_t bd_cuda_maxpool_nhwc(int n, int h, int w, int c, int oh, int ow, int kh, int kw,
                                 int sh, int sw, int pad_t, int pad_l, int xp, int yp,
                                 const void *x, void *y, cudaStream_t stream);

/* ONNX Resize on axes H and W, 16-bit NHWC. mode/coord/nearest are bd_resize_mode,
 * bd_coord_mode, bd_nearest_mode; scale = output/input; xp, yp as for maxpool. */
cudaError_t bd_cuda_resize_nhwc(int n, int h, int w, int c, int oh, int ow, int mode,
                                int coord, int nearest, float scale_h, float scale_w, int xp,
                                int yp, const void *x, void *y, cudaStream_t stream);

/* Softmax over the middle axis of an [outer][len][inner] FP32 tensor. */
cudaError_t bd_cuda_softmax_f32(int64_t outer, int64_t len, int64_t inner, const float *x,
                                float *y, cudaStream_t stream);

/* SoftmaxDot: y[i] = sum_k softmax(x[i, k]) * w[k] over axis `axis` of view x (FP32 or
 * 16-bit, any strides; the bins need not be contiguous); y is an FP32 view with x's dims
 * but 1 on that axis. w: the axis' length of FP32 weights on the device. FP32 math. */
cudaError_t bd_cuda_softmax_dot(const bd_cuda_view *y, const bd_cuda_view *x, int axis,
                                const float *w, cudaStream_t stream);

/* Batched FP32 matmul: y[b] = a[b] (MxK) * bm[b] (KxN); a batch stride of 0 broadcasts. */
cudaError_t bd_cuda_matmul_f32(int64_t batch, int64_t m, int64_t k, int64_t n,
                               const float *a, int64_t a_bstride, const float *bm,
                               int64_t b_bstride, float *y, cudaStream_t stream);

/* One image of a pre-processing batch: its RGB bytes at src + offset (sw x sh, packed
 * HWC), resized to rw x rh (<= the network input) with scale = 1 / (rw / sw) computed in
 * double by the host as bd_family_resize_u8 does. */
typedef struct bd_cuda_prep_desc {
  int64_t offset;
  int sw, sh, rw, rh;
  double scale_x, scale_y;
} bd_cuda_prep_desc;

/* uint8 RGB -> OpenCV-exact bilinear resize -> FP32 NCHW [n][3][out_h][out_w], BGR planes
 * when bgr, `pad` right and below the resized image (yolox letterbox: 114). descs is a
 * device array of n descriptors. */
cudaError_t bd_cuda_preprocess_u8(const uint8_t *src, const bd_cuda_prep_desc *descs, int n,
                                  int out_w, int out_h, int bgr, float pad, float *dst,
                                  cudaStream_t stream);
/* Where the 16-bit NHWC tensor that the network's first layers make of its input goes:
 * output pixel (i, j) of each image, `pitch` values, holds for each piece k the channels
 * c0 .. c0 + nc - 1 (network order) of input pixel (oy + stride i, ox + stride j) at
 * channels ch .. ch + nc - 1; every other channel is 0. The input itself: stride 1, one
 * piece (0, 0, 0, 3, 0), pitch 3; a Focus stem's Concat (YOLOX, DAMO-YOLO): stride 2,
 * four pieces, pitch 16 (12 channels, zero-padded). */
#define BD_PREP_MAX_PIECES 8
#define BD_PREP_MAX_PITCH 32
typedef struct bd_cuda_prep_layout {
  int stride, out_w, out_h, pitch, n_pieces;
  struct {
    int oy, ox, c0, nc, ch;
  } piece[BD_PREP_MAX_PIECES];
} bd_cuda_prep_layout;
/* 1 when lo is well formed: pieces within the pitch and the 3 input channels. (Whether
 * the pixels read lie inside the network input is the caller's: it derives lo from the
 * plan.) */
static inline int bd_cuda_prep_layout_ok(const bd_cuda_prep_layout *lo) {
  if (!lo || lo->stride < 1 || lo->stride > 8 || lo->out_w < 1 || lo->out_h < 1 ||
      lo->pitch < 1 || lo->pitch > BD_PREP_MAX_PITCH || lo->n_pieces < 1 ||
      lo->n_pieces > BD_PREP_MAX_PIECES)
    return 0;
  for (int k = 0; k < lo->n_pieces; ++k)
    if (lo->piece[k].oy < 0 || lo->piece[k].ox < 0 || lo->piece[k].c0 < 0 ||
        lo->piece[k].nc < 1 || lo->piece[k].c0 + lo->piece[k].nc > 3 || lo->piece[k].ch < 0 ||
        lo->piece[k].ch + lo->piece[k].nc > lo->pitch)
      return 0;
  return 1;
}
/* 1 when every pixel a well-formed layout lo reads lies inside an in_h x in_w input. */
static inline int bd_cuda_prep_layout_inside(const bd_cuda_prep_layout *lo, int in_h, int in_w) {
  if (in_h < 1 || in_w < 1) return 0;
  for (int k = 0; k < lo->n_pieces; ++k)
    if (lo->piece[k].oy + (int64_t)lo->stride * (lo->out_h - 1) >= in_h ||
        lo->piece[k].ox + (int64_t)lo->stride * (lo->out_w - 1) >= in_w)
      return 0;
  return 1;
}
/* The bytes layout lo writes for n images. */
static inline size_t bd_cuda_prep_layout_bytes(const bd_cuda_prep_layout *lo, int64_t n) {
  return (size_t)n * lo->out_h * lo->out_w * lo->pitch * 2;
}
/* Whether the patch tile (bd_cuda_conv_patch_geo, with at most 64 output channels) can
 * read conv shape p's input as the FP32 NCHW input [n][3][in_h][in_w] seen through
 * layout lo (bd_cuda_conv_patch_layout): lo well formed and inside the input, its output
 * p's input (h x w), its pieces within p's C channels (the others are zeros, as the layout
 * writes them). */
static inline int bd_cuda_conv_patch_layout_ok(const bd_cuda_conv_shape *p,
                                               const bd_cuda_prep_layout *lo, int in_h,
                                               int in_w) {
  bd_conv_patch_geo g;
  if (!lo || !bd_cuda_prep_layout_ok(lo) || !bd_cuda_prep_layout_inside(lo, in_h, in_w) ||
      lo->out_h != p->h || lo->out_w != p->w || !bd_cuda_conv_patch_geo(p, &g) || g.nt > 8)
    return 0;
  for (int k = 0; k < lo->n_pieces; ++k)
    if (lo->piece[k].ch + lo->piece[k].nc > p->c) return 0;
  return 1;
}
/* The patch tile's convolution (bd_cuda_conv_mma_tiled's tile 17 and contract for w, bias,
 * r, y) of that input: the layout and the conv in one kernel, no 16-bit input tensor
 * (cudaErrorInvalidValue where bd_cuda_conv_patch_layout_ok says no). */
cudaError_t bd_cuda_conv_patch_layout(const bd_cuda_conv_shape *p, const float *src, int in_h,
                                      int in_w, const bd_cuda_prep_layout *lo, const void *w,
                                      const float *bias, const void *r, void *y,
                                      cudaStream_t stream);
/* The network's FP32 NCHW input [n][3][in_h][in_w] as 16-bit NHWC through layout lo
 * (16-bit rounding to nearest even; zeros in the channels no piece writes): the raw
 * network path's first action when the plan has such a layout (bd_cuda_raw_direct). */
cudaError_t bd_cuda_layout_f32_h16(const float *src, int n, int in_h, int in_w,
                                   const bd_cuda_prep_layout *lo, void *dst, cudaStream_t stream);
/* The same pixels as 16-bit NHWC through layout lo (the storage type of the build): the
 * tensor the network's first layers read, written directly by device detection. */
cudaError_t bd_cuda_preprocess_u8_h16(const uint8_t *src, const bd_cuda_prep_desc *descs, int n,
                                      int bgr, float pad, const bd_cuda_prep_layout *lo,
                                      void *dst, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
