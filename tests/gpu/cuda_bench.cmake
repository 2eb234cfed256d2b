# The cuda backend's benchmark hooks (gpu/cuda/bd_cuda_bench.c) over the host emulation
# of the device (no GPU needed; cuda_emu.c's clock: 1 us per launch): the per-action
# profile, with the default convs and with BATCHDET_CUDA_CONV=mma; and `batchdet bench
# --profile` itself, on a batchdet linked against the emulation (batchdet_emu).
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  set(_bdir ${CMAKE_CURRENT_SOURCE_DIR})
  set(_bcu ${CMAKE_SOURCE_DIR}/gpu/cuda)
  bd_add_unit_test(test_cuda_bench_emu SOURCES ${_bdir}/test_cuda_bench.c ${BD_TWIN_EMU_SOURCES}
                   LIBS bd_gpu LABELS engine TIMEOUT 300)
  target_include_directories(test_cuda_bench_emu PRIVATE ${_bcu} ${_bdir} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(test_cuda_bench_emu PRIVATE -UBD_HAVE_CUDNN)
  add_test(NAME test_cuda_bench_emu_mma COMMAND test_cuda_bench_emu)
  set_tests_properties(test_cuda_bench_emu_mma PROPERTIES TIMEOUT 300 LABELS engine
                       ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=mma")

  set(_cli ${CMAKE_SOURCE_DIR}/cli)
  add_executable(batchdet_emu ${_cli}/main.c ${_cli}/cmd_bench.c ${_cli}/cmd_bench_pool.c
                 ${_cli}/cmd_bench_prof.c ${BD_TWIN_EMU_SOURCES})
  target_compile_definitions(batchdet_emu PRIVATE BD_ENGINE_ONLY=1 BD_VERSION="emu")
  target_include_directories(batchdet_emu PRIVATE ${_cli} ${_bcu} ${_bdir} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(batchdet_emu PRIVATE -UBD_HAVE_CUDNN)
  target_link_libraries(batchdet_emu PRIVATE bd_gpu bd_common)
  bd_add_script_test(test_bench_profile_emu
                     COMMAND /usr/bin/python3 ${_bdir}/test_bench_profile.py
                             $<TARGET_FILE:batchdet_emu>
                     TIMEOUT 300 LABELS "engine;cli")
endif()
