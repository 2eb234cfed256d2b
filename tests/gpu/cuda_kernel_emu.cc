// One kernel file of gpu/cuda compiled as host C++ over the kernel emulation
// (cuda_block_emu.h; BD_KEMU_MMA adds the emulated WMMA of cuda_mma_emu.h): CMake
// compiles this once per kernel file (bd_kemu in tests/gpu/kemu.cmake) with BD_KEMU_SRC
// naming it and BD_KEMU_THREADED=1 where blocks cooperate. The launchers it defines are
// the real ones, so the tests linked with bd_kemu run our kernels' own code on the host.
#include "cuda_block_emu.h"

#ifdef BD_KEMU_MMA
#include "cuda_mma_emu.h"
#endif

#include BD_KEMU_SRC
