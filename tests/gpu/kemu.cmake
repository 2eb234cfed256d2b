# Our kernel files compiled as host C++ over the kernel emulation (cuda_block_emu.h, one
# object per .cu through cuda_kernel_emu.cc) plus the emulated runtime (cuda_rt_emu.c):
# bd_kemu. The tests linked with it run the real kernels' code on machines without a GPU,
# with stream capture recording and graph launches replaying: the GPU tests of the
# kernels, layers and pre-processing as they are (*_kemu), and the whole backend, device
# detection and the pool over the real kernels.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  set(_kemu_dir ${CMAKE_CURRENT_LIST_DIR})
  set(_kemu_cu ${CMAKE_SOURCE_DIR}/gpu/cuda)
  set(_kemu_objs)
  # The emulation's code (the kernels, the CPU twins below) under ASan: out-of-bounds
  # accesses stay checked but not the scope of every temporary (the 16-bit loads'
  # temporaries were poisoned and unpoisoned per multiply-add).
  set(_emu_san)
  if(BATCHDET_SANITIZE)
    set(_emu_san -fno-sanitize-address-use-after-scope)
  endif()
  foreach(_k eltwise conv pool resize prep softmax matmul post conv_mma)
    add_library(bd_kemu_${_k} OBJECT ${_kemu_dir}/cuda_kernel_emu.cc)
    target_compile_definitions(bd_kemu_${_k} PRIVATE "BD_KEMU_SRC=\"${_kemu_cu}/bd_cuda_${_k}.cu\"")
    if(_k STREQUAL "post" OR _k STREQUAL "conv_mma" OR _k STREQUAL "prep")
      target_compile_definitions(bd_kemu_${_k} PRIVATE BD_KEMU_THREADED=1)
    endif()
    if(_k STREQUAL "conv_mma")
      target_compile_definitions(bd_kemu_${_k} PRIVATE BD_KEMU_MMA=1)
    endif()
    if(BATCHDET_CUDA_BF16)
      target_compile_definitions(bd_kemu_${_k} PRIVATE BD_CUDA_BF16=1)
    endif()
    target_include_directories(bd_kemu_${_k} PRIVATE ${_kemu_dir} ${_kemu_cu} ${CMAKE_SOURCE_DIR}/gpu
                               ${CUDAToolkit_INCLUDE_DIRS}
                               $<TARGET_PROPERTY:bd_common,INTERFACE_INCLUDE_DIRECTORIES>)
    # Optimised in every build (the emulated grids are large); '#pragma unroll' and the
    # launchers' unused parameters mean nothing to the host compiler. The kernels pun
    # 16-byte vectors as 16-bit pairs, which CUDA allows: no strict-aliasing optimisation.
    target_compile_options(bd_kemu_${_k} PRIVATE -O2 -fno-strict-aliasing -Wno-unknown-pragmas
                           -Wno-unused-parameter)
    target_compile_options(bd_kemu_${_k} PRIVATE ${_emu_san})
    list(APPEND _kemu_objs $<TARGET_OBJECTS:bd_kemu_${_k}>)
  endforeach()
  # The backend's host code, compiled into every test over an emulated device (here
  # without cuDNN: convs take our kernels). A test takes all of these as its own objects,
  # so that nothing can come from bd_cuda (which bd_gpu links), whose nvcc objects would
  # stop the test at start-up (cuda_rt_emu.c).
  set(BD_CUDA_HOST_SOURCES ${_kemu_cu}/bd_cuda_backend.c ${_kemu_cu}/bd_cuda_exec.c
      ${_kemu_cu}/bd_cuda_cudnn.c ${_kemu_cu}/bd_cuda_detect.c ${_kemu_cu}/bd_cuda_bench.c
      ${_kemu_cu}/bd_cuda_dag.c ${_kemu_cu}/bd_cuda_time.c ${_kemu_cu}/bd_cuda_dnn_graph.c)
  set(BD_KEMU_SOURCES ${_kemu_objs} ${_kemu_dir}/cuda_rt_emu.c ${BD_CUDA_HOST_SOURCES})
  # The CPU twins' emulation (cuda.cmake, cuda_bench.cmake) on the same runtime.
  set(BD_TWIN_EMU_SOURCES ${_kemu_dir}/cuda_emu.c ${_kemu_dir}/cuda_rt_emu.c
      ${BD_CUDA_HOST_SOURCES})
  # The twins' reference loops optimised in every build too (a conv is a seven-deep loop
  # nest over 16-bit loads): in Debug they were most of a twin test's time.
  set(_emu_opt -O2 ${_emu_san})
  set_source_files_properties(${_kemu_dir}/cuda_emu.c PROPERTIES COMPILE_OPTIONS "${_emu_opt}")
  find_package(Threads REQUIRED)
  # bd_kemu_test(NAME SOURCES ... [LIBS ...] [TIMEOUT s]): a test over the kernel emulation.
  function(bd_kemu_test NAME)
    cmake_parse_arguments(K "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
    if(NOT K_TIMEOUT)
      set(K_TIMEOUT 600)
    endif()
    bd_add_unit_test(${NAME} SOURCES ${K_SOURCES} ${BD_KEMU_SOURCES} LIBS ${K_LIBS} bd_gpu
                     Threads::Threads m LABELS engine TIMEOUT ${K_TIMEOUT})
    target_include_directories(${NAME} PRIVATE ${_kemu_dir} ${_kemu_cu} ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_options(${NAME} PRIVATE -UBD_HAVE_CUDNN)
    # A test may check the emulation's own counters (graphs replayed, events recorded).
    target_compile_definitions(${NAME} PRIVATE BD_KEMU=1)
    if(BATCHDET_CUDA_BF16)
      target_compile_definitions(${NAME} PRIVATE BD_CUDA_BF16=1)
    endif()
    # The C++ runtime of the kernel objects.
    set_target_properties(${NAME} PROPERTIES LINKER_LANGUAGE CXX)
  endfunction()
  # The emulation's cooperating blocks alone: barriers in every order, each fiber's own
  # stack and floating-point state, ASan reporting a kernel's bad access on a fiber.
  bd_add_unit_test(test_block_emu SOURCES ${_kemu_dir}/test_block_emu.cc ${_kemu_dir}/cuda_rt_emu.c
                   LIBS Threads::Threads LABELS engine TIMEOUT 120)
  target_include_directories(test_block_emu PRIVATE ${_kemu_dir} ${_kemu_cu} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(test_block_emu PRIVATE -Wno-unknown-pragmas)
endif()

# The GPU tests of the kernels, layers and pre-processing, unchanged, over bd_kemu.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  foreach(_t test_cuda_kernels test_cuda_conv test_cuda_prep)
    bd_kemu_test(${_t}_kemu SOURCES ${_kemu_dir}/${_t}.c)
  endforeach()
  # test_cuda_conv's reference loops (a conv per case in double) optimised in every build,
  # still under the sanitizers: at -O0 they were 80% of test_cuda_conv_kemu's time.
  set_source_files_properties(${_kemu_dir}/test_cuda_conv.c PROPERTIES COMPILE_OPTIONS -O2)
  # The conv layers on our tensor-core kernel (BATCHDET_CUDA_CONV=mma), channel-padded
  # ones included: as test_cuda_conv_mma on a GPU.
  # test_cuda_conv_kemu runs the wgmma tiles as on an sm_90 (the emulated GPU answers as
  # one); test_cuda_conv_kemu_mma checks that they refuse where not enabled.
  set_property(TEST test_cuda_conv_kemu APPEND PROPERTY ENVIRONMENT
               "BATCHDET_CUDA_WGMMA=1;BD_EMU_SM=90")
  add_test(NAME test_cuda_conv_kemu_mma COMMAND test_cuda_conv_kemu)
  set_tests_properties(test_cuda_conv_kemu_mma PROPERTIES LABELS engine TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=mma")
endif()
