/* What cuDNN 9.19 offers, for an H100, as precompiled engines (not compiled at run time)
 * for a fused convolution graph in the form bd_cuda_dnn_graph.c builds (16-bit bias, a
 * residual before the activation added before the bias), as test_cuda_dnn_survey found
 * by asking the real library without a GPU: ReLU or no activation, a residual only before
 * it and strided as the output (ldr, ldy: the residual's and the output's pixel pitches).
 * The emulated cuDNN (cuda_emu.c) lists only its runtime-compiled engine for the other
 * fused graphs; the tests over it expect fusion by this rule, and the survey requires the
 * real library to keep an engine wherever it holds. */
#ifndef BD_TEST_CUDNN_MODEL_H
#define BD_TEST_CUDNN_MODEL_H

#include "bd_graph.h"

static inline int cudnn_fused_precompiled(int act, int res, int ldr, int ldy) {
  if (act != BD_ACT_NONE && act != BD_ACT_RELU) return 0;
  return res == BD_RES_NONE || (res == BD_RES_PRE_ACT && ldr == ldy);
}

#endif
