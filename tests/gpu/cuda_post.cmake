# GPU post-processing (bd_cuda_post) and the NCCL broadcast (bd_cuda_nccl): test_cuda_post_ref checks the CPU twins against the
# family code on any machine; test_cuda_post checks the kernels (skips, exit 77, without
# a GPU). Both use yolox_nano's real outputs on a photo decoded once by djpeg.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  bd_add_unit_test(test_cuda_post SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_post.c
                   LIBS bd_gpu bd_cuda LABELS cuda TIMEOUT 300)
  target_include_directories(test_cuda_post PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  set_tests_properties(test_cuda_post PROPERTIES SKIP_RETURN_CODE 77)
  add_test(NAME test_cuda_post_ref COMMAND test_cuda_post ref)
  set_tests_properties(test_cuda_post_ref PROPERTIES ENVIRONMENT "${BD_TEST_ENV}" TIMEOUT 300
                       LABELS engine)
  # The kernels' code on the host emulation of the CUDA block (threads + barriers,
  # kemu.cmake): called on host memory, bit-exact against the family; then the GPU path
  # itself (device copies, stream capture, graph launch) over the emulated runtime.
  bd_kemu_test(test_cuda_post_emu SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_post.c
               ${CMAKE_SOURCE_DIR}/gpu/cuda/bd_cuda_post_ref.c)
  add_test(NAME test_cuda_post_kemu COMMAND test_cuda_post_emu gpu)
  set_tests_properties(test_cuda_post_kemu PROPERTIES ENVIRONMENT "${BD_TEST_ENV}" TIMEOUT 600
                       LABELS engine)
  target_compile_definitions(test_cuda_post_emu PRIVATE TEST_POST_EMU=1)
  target_include_directories(test_cuda_post_emu PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  # NCCL weight broadcast to every visible GPU (skips without one).
  bd_add_unit_test(test_cuda_nccl SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_nccl.c
                   LIBS bd_cuda LABELS cuda TIMEOUT 120)
  target_include_directories(test_cuda_nccl PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  set_tests_properties(test_cuda_nccl PROPERTIES SKIP_RETURN_CODE 77)
  find_program(BD_DJPEG djpeg)
  if(BD_DJPEG AND EXISTS ${BD_TEST_DATA}/images/dog.jpg)
    execute_process(COMMAND ${BD_DJPEG} -pnm ${BD_TEST_DATA}/images/dog.jpg
                    OUTPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/post_dog.ppm RESULT_VARIABLE _post_rc)
    if(_post_rc EQUAL 0)
      set_property(TEST test_cuda_post test_cuda_post_ref test_cuda_post_emu test_cuda_post_kemu APPEND PROPERTY ENVIRONMENT
                   "BD_TEST_PPM=${CMAKE_CURRENT_BINARY_DIR}/post_dog.ppm")
    endif()
  endif()
endif()
# Our tensor-core convolution (bd_cuda_conv_mma.cu) on the host emulation of its blocks
# and of WMMA (kemu.cmake), against a CPU convolution (no GPU needed).
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  bd_kemu_test(test_conv_mma_emu SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conv_mma_emu.c
               TIMEOUT 300)
  target_include_directories(test_conv_mma_emu PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  # The wgmma tiles too: the emulated GPU answers as an sm_90 (cuda_rt_emu.c).
  set_property(TEST test_conv_mma_emu APPEND PROPERTY ENVIRONMENT
               "BATCHDET_CUDA_WGMMA=1;BD_EMU_SM=90")
endif()
