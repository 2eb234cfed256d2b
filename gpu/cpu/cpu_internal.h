/* cpu_internal: shared pieces of the cpu backend (gpu/cpu/): the thread pool, the GEMM,
 * the per-run state every op kernel reads, and the op kernels themselves.
 *
 * Not a public header: only the cpu backend sources include it. Kernels never allocate; everything
 * they need (arena, per-thread scratch) is sized by prepare(). */
#ifndef BD_CPU_INTERNAL_H
#define BD_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bd_backend.h"
#include "bd_graph.h"
#include "bd_status.h"

/* Hot loops are written for the auto-vectoriser; -O2 in GCC 12 only vectorises loops
 * whose trip count is a known multiple of the vector width, so ask for O3 here. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__)
#define BD_CPU_HOT _Pragma("GCC optimize(\"O3\")")
#else
#define BD_CPU_HOT
#endif

/* Plain loops where GCC would call memset/memcpy for a short row (clang has no such
 * attribute: the fuzz build uses clang). */
#if defined(__GNUC__) && !defined(__clang__)
#define BD_CPU_NO_LOOP_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define BD_CPU_NO_LOOP_CALLS
#endif

/* Function multi-versioning for the few compute kernels: one AVX-512, one AVX2+FMA and
 * one baseline clone, chosen at load time (the build has no -march). Not under ASan or
 * TSan: their instrumented ifunc resolvers run before the sanitizer runtime and crash. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__OPTIMIZE__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define BD_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BD_CPU_CLONES
#endif

/* ---- thread pool ---- */
typedef struct bd_cpu_pool bd_cpu_pool;
/* Runs fn(ctx, begin, end, tid) over [0, n) in contiguous chunks (about 4 per thread)
 * claimed by whichever thread is free; the calling thread takes part. Callers must give
 * results that do not depend on the chunking (each index computed on its own). */
typedef void (*bd_cpu_task_fn)(void *ctx, int64_t begin, int64_t end, int tid);

bd_status bd_cpu_pool_new(int threads, bd_cpu_pool **out, bd_err *err);
void bd_cpu_pool_destroy(bd_cpu_pool *p);
int bd_cpu_pool_threads(const bd_cpu_pool *p);
void bd_cpu_pool_for(bd_cpu_pool *p, int64_t n, bd_cpu_task_fn fn, void *ctx);
/* Dynamic variant: items are handed out one at a time, fn(ctx, i, i + 1, tid), for
 * uneven work items such as conv tiles. Each item is computed whole by one thread, so
 * results do not depend on which thread ran it. */
void bd_cpu_pool_for_each(bd_cpu_pool *p, int64_t n, bd_cpu_task_fn fn, void *ctx);

/* ---- GEMM: C[m x n] = A[m x k] * B[k x n], all row-major, single-threaded ---- */
size_t bd_cpu_gemm_scratch_floats(void);
/* accumulate: 0 -> C = A*B, 1 -> C += A*B. scratch: bd_cpu_gemm_scratch_floats() floats
 * (64-byte aligned), unused with BLAS. */
void bd_cpu_gemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
                 int ldc, int accumulate, float *scratch);
/* The built-in GEMM, callable even when BLAS is used (tests compare both). */
void bd_cpu_gemm_builtin(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                         float *c, int ldc, int accumulate, float *scratch);

/* ---- fused conv GEMM tiles, AVX-512 and AVX2 (cpu_pw512.c) ---- */
int bd_cpu_pw512_available(void);
/* Largest K (input channels x kernel taps per group) the fused tiles take; the packed
 * weight panel needs 12 * K floats of scratch. */
#define BD_CPU_PW512_MAX_K 65536
/* Rows per packed weight panel for a block of mc output channels: 12 or 8. */
int bd_cpu_pw512_rows(int mc);
/* Packs rows [0, rows) of w (row pitch ldw) into a K x R panel, k-major; rows >= `rows`
 * are zero. */
void bd_cpu_pw512_pack_w(int R, int rows, int K, const float *w, int ldw, float *panel);
/* y[i*ldy + j] = epilogue(sum_k w(i, k) * x(k, j) + bias[i], res[i*ldy + j]) for i < mc,
 * j < cw. w: ceil(mc / R) consecutive K x R panels (bd_cpu_pw512_pack_w), w(i, k) =
 * wp[(i / R) * R * K + k * R + i % R]. x(k, j) = x[(j / 32) * sstride + k * ldx + j % 32]:
 * strips of 32 columns, in place (sstride 32, ldx the row pitch) or packed (ldx 32,
 * sstride 32 * K); with koff, x(k, j) = x[koff[k] + j] (sstride 32: the implicit GEMM).
 * bias and res may be NULL. */
void bd_cpu_pw512_tile(int R, int mc, int cw, int K, const float *wp, const float *x, int ldx,
                       size_t sstride, const int *koff, float *y, int ldy, const float *bias,
                       const float *res, bd_act act, bd_res_mode rmode);

/* The channel-vector tile (AVX-512 only): vector lanes are output channels and a block
 * is 8 pixels from a list, for small planes, where the tile above computes junk columns
 * and partly used strips. Channels of a group come in blocks (bd_cpu_cv512_blocks:
 * widths 48, 32 or 16, only the last part padding), packed by bd_cpu_cv512_pack_w into
 * K x width panels, k-major, block b at start[b] * K (bd_cpu_cv512_packed_floats in
 * all). bd_cpu_cv512_tile runs the blocks that start in [c0, c1) over pixels
 * i < np: y[c * ldy + yo[i]] = epilogue(sum_k w(c, k) * x[koff[k] + pb[i]] + bias[c],
 * res[c * ldy + yo[i]]), or with koff NULL x[k * ldx + pb[i]] (a pointwise conv's
 * input planes in place); bias and res may be NULL; mg <= BD_CPU_CV512_MAX_MG. */
#define BD_CPU_CV512_MAX_MG 4096 /* output channels per group it takes */
#define BD_CPU_CV512_MAX_BLOCKS (BD_CPU_CV512_MAX_MG / 16 + 2)
int bd_cpu_cv512_blocks(int mg, int *start, int *width);
size_t bd_cpu_cv512_packed_floats(int mg, int K);
void bd_cpu_cv512_pack_w(int mg, int K, const float *w, int ldw, float *panels);
void bd_cpu_cv512_tile(int mg, int c0, int c1, int K, const float *panels, const float *x,
                       const int *koff, int ldx, int np, const int *pb, const int *yo, float *y,
                       int ldy, const float *bias, const float *res, bd_act act, bd_res_mode rmode);

/* CPUs with AVX2 + FMA but no AVX-512: the same tile, raw (y = W * X; the caller applies
 * bias, residual and activation), blocks of R / 2 channels x 16 columns. */
int bd_cpu_pw256_available(void);
void bd_cpu_pw256_tile(int R, int mc, int cw, int K, const float *wp, const float *x, int ldx,
                       size_t sstride, const int *koff, float *y, int ldy);

/* ---- run state ---- */
typedef struct bd_cpu {
  bd_backend base;
  bd_cpu_pool *pool;
  int threads;
  int conv_blas_threads; /* 1: one GEMM per image with BLAS threads (measured alternative) */
  int fused; /* fused conv tiles: 512 (AVX-512), 256 (AVX2 + FMA) or 0 (GEMM + epilogue) */
  uint8_t *arena;
  size_t arena_bytes;
  float *scratch; /* threads * scratch_floats */
  size_t scratch_floats;
  uint8_t *side; /* graph inputs/outputs whose dtype is not float32 */
  size_t side_bytes;
  void **ptr; /* per value, filled at the start of each run */
  float **wpack; /* per node: a conv's constant weights packed for the fused tiles, or NULL */
  uint8_t *wpack_cv; /* per node: 1 where wpack holds the channel-vector tile's panels */
  int cv_mode;       /* BD_CPU_CV_AUTO (default), _NEVER or _ALWAYS */
  int n_nodes;
  int n_values;
  double *profile;      /* benchmarks: ms per op accumulated here when set (see below) */
  double *step_profile; /* benchmarks: ms per plan step, the same way */
} bd_cpu;

/* Benchmarks only: when ms is not NULL, each run adds the process CPU time of every step to
 * ms[op] (BD_OP__COUNT + 3 entries; convs go to ms[BD_OP__COUNT + path], path 0 general,
 * 1 pointwise, 2 depthwise). */
void bd_cpu_backend_set_profile(bd_backend *be, double *ms);
/* Benchmarks only: the same per plan step (ms[s] for p->steps[s], p->n_steps entries). */
void bd_cpu_backend_set_step_profile(bd_backend *be, double *ms);
/* Where the implicit GEMM runs on the channel-vector tile (AVX-512): where it computes
 * less (auto), never, or always (tests); set before prepare (it decides the packing). */
enum { BD_CPU_CV_AUTO = 0, BD_CPU_CV_NEVER = 1, BD_CPU_CV_ALWAYS = 2 };
void bd_cpu_backend_set_channel_tiles(bd_backend *be, int mode);
/* Benchmarks only: 1 runs pointwise convs as one OpenBLAS GEMM per image with BLAS
 * threads (the alternative the default tiling was measured against); no-op without BLAS. */
void bd_cpu_backend_set_blas_threads_mode(bd_backend *be, int on);
/* Tests and benchmarks: 0 forces GEMM + separate epilogue, 256 or 512 the AVX2 or AVX-512
 * tiles (0 where the CPU lacks them), 1 the best the CPU has (the default). Before prepare. */
void bd_cpu_backend_set_fused_tiles(bd_backend *be, int on);
/* The fused tiles this CPU and build can run: 512, 256 or 0. */
int bd_cpu_fused_isa(void);
int bd_cpu_conv_path(const bd_graph *g, const bd_plan *p, const bd_node *n);

static inline float *bd_cpu_scratch(bd_cpu *c, int tid) {
  return c->scratch + (size_t)tid * c->scratch_floats;
}

static inline int64_t bd_cpu_numel(const bd_plan *p, int v) {
  int64_t n = 1;
  for (int i = 0; i < p->rank[v]; i++) n *= p->dims[v][i];
  return n;
}

/* ---- op kernels (cpu_conv.c, cpu_ops.c, cpu_shape.c) ---- */
typedef bd_status (*bd_cpu_op_fn)(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);

/* Per-thread scratch floats an op of this node needs at this plan (0 if none). */
size_t bd_cpu_conv_scratch(const bd_graph *g, const bd_plan *p, const bd_node *n);
size_t bd_cpu_maxpool_scratch(const bd_plan *p, const bd_node *n);
size_t bd_cpu_resize_scratch(const bd_plan *p, const bd_node *n);
bd_status bd_cpu_conv_check(const bd_graph *g, const bd_plan *p, const bd_node *n, bd_err *err);
/* The conv's weights packed for the fused tiles (*out, aligned_alloc'd, caller frees), or
 * *out = NULL where the fused tiles do not apply (none on this CPU or build, depthwise, K
 * too large, fewer than 6 channels per group, weights not a constant). *cv = 1: packed for
 * the channel-vector tile (chosen with plan p's shapes; the runs of every plan follow
 * this choice), else for the row tiles. */
bd_status bd_cpu_conv_pack(const bd_cpu *c, const bd_graph *g, const bd_plan *p, const bd_node *n,
                           float **out, int *cv, bd_err *err);

bd_status bd_cpu_op_conv(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_batchnorm(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_unary(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_binary(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_concat(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_maxpool(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_resize(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_softmax(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_softmax_dot(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_copy(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_transpose(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_matmul(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_slice(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_gather(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_cast(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);
bd_status bd_cpu_op_shape(bd_cpu *c, const bd_plan *p, const bd_node *n, bd_err *err);

/* Converts n elements between dtypes (used by Cast and for non-float graph I/O). */
void bd_cpu_convert(const void *src, bd_dtype st, void *dst, bd_dtype dt, int64_t n);

#endif
