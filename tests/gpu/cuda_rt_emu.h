/* Host emulation of the CUDA runtime (cuda_rt_emu.c), shared by the two emulations of the
 * device that link it:
 * - cuda_emu.c: CPU twins of the kernels over 16-bit "shadow" floats (the backend's
 *   planning, precision experiments, the emulated cuDNN); stream capture is refused there
 *   because the twins run when called;
 * - cuda_block_emu.h: the real kernel files compiled as host C++ (cuda_kernel_emu.cc),
 *   whose launches go through bd_emu_submit, so that stream capture records them and a
 *   graph launch replays them (bd_cuda_emu_graphs = 1).
 * Memory is host memory, copies are memcpy, and device work runs when it is submitted on
 * a stream that is not capturing (one piece of device work at a time, process-wide);
 * with $BD_EMU_ASYNC=1 (real kernels only) it is queued per stream and runs at the host's
 * synchronisation points in an adversarial order (cuda_rt_emu.c). */
#ifndef CUDA_RT_EMU_H
#define CUDA_RT_EMU_H

#include <stddef.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Runs device work now, or appends it to the graph that stream s is capturing (replayed
 * by every launch of the graph instantiated from it). ctx belongs to the emulation from
 * here on: drop(ctx) frees it once the work is done, or when its graph goes. */
cudaError_t bd_emu_submit(cudaStream_t s, void (*run)(void *), void *ctx, void (*drop)(void *));

/* 1: cudaStreamBeginCapture records (the real kernels' emulation); 0 (default): it is
 * refused and the backend runs its uncaptured path (the twins run when called). */
extern int bd_cuda_emu_graphs;
/* 1 (default): every allocation carries the twins' shadow floats (bd_emu_shadow); 0 (the
 * real kernels' emulation): allocations are exactly the bytes asked for. */
extern int bd_cuda_emu_shadows;
/* The shadow float slots of a 16-bit view based at p (NULL stays NULL); aborts on a view
 * outside every device allocation. */
float *bd_emu_shadow(const void *p);
/* One step of the emulated device clock (a kernel launch or a device copy). */
void bd_emu_tick(void);
/* Live allocations of exactly n bytes: pinned host (host 1) or device (host 0). */
int bd_cuda_emu_live_allocs(size_t n, int host);

#ifdef __cplusplus
}
#endif

#endif
