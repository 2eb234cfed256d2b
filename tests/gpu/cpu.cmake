# cpu backend tests. Built from the backend's own sources rather than bd_gpu, twice:
# with OpenBLAS (this machine's configuration) and with the built-in GEMM (the GPU
# machines build without OpenBLAS and use the cpu backend as their reference).
file(GLOB BD_CPU_TEST_BACKEND_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/gpu/cpu/*.c)
list(APPEND BD_CPU_TEST_BACKEND_SRC ${CMAKE_SOURCE_DIR}/gpu/bd_graph.c)
find_library(BD_CPU_TEST_OPENBLAS NAMES openblas)
find_path(BD_CPU_TEST_OPENBLAS_INC NAMES cblas.h PATH_SUFFIXES openblas openblas-pthread)

foreach(t conv ops)
  foreach(variant blas builtin)
    if(variant STREQUAL "blas" AND NOT (BATCHDET_BLAS AND BD_CPU_TEST_OPENBLAS AND BD_CPU_TEST_OPENBLAS_INC))
      continue()
    endif()
    set(name test_cpu_${t}_${variant})
    set(_extra "")
    if(t STREQUAL "ops") # test_spp_chained: bd_compile's pool rewrite run on the backend
      file(GLOB _extra CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/gpu/bd_compile*.c)
      list(APPEND _extra ${CMAKE_SOURCE_DIR}/gpu/bd_plan.c)
    endif()
    bd_add_unit_test(${name} SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cpu_${t}.c
                     ${BD_CPU_TEST_BACKEND_SRC} ${_extra} LIBS Threads::Threads m)
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/gpu ${CMAKE_SOURCE_DIR}/gpu/cpu)
    if(variant STREQUAL "blas")
      target_compile_definitions(${name} PRIVATE BD_HAVE_BLAS=1)
      target_include_directories(${name} PRIVATE ${BD_CPU_TEST_OPENBLAS_INC})
      target_link_libraries(${name} PRIVATE ${BD_CPU_TEST_OPENBLAS})
    endif()
  endforeach()
endforeach()

# The AVX-512 fused conv tiles exist only in optimised builds without sanitizers (their
# ifunc and intrinsics code is compiled out under ASan), so the Debug+ASan suite would
# never run them: this variant compiles the test and the backend at -O2 without
# sanitizers (the same naive references as above).
bd_add_unit_test(test_cpu_conv_fused SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cpu_conv.c
                 ${BD_CPU_TEST_BACKEND_SRC} LIBS Threads::Threads m)
target_include_directories(test_cpu_conv_fused PRIVATE ${CMAKE_SOURCE_DIR}/gpu ${CMAKE_SOURCE_DIR}/gpu/cpu)
target_compile_definitions(test_cpu_conv_fused PRIVATE BD_TEST_FUSED=1)
target_compile_options(test_cpu_conv_fused PRIVATE -O2 -fno-sanitize=all)

# Conv micro-benchmark (prints a table; not registered in ctest).
add_executable(cpu_conv_bench ${CMAKE_SOURCE_DIR}/tests/bench/cpu_conv_bench.c ${BD_CPU_TEST_BACKEND_SRC})
target_include_directories(cpu_conv_bench PRIVATE ${CMAKE_SOURCE_DIR}/gpu ${CMAKE_SOURCE_DIR}/gpu/cpu)
target_link_libraries(cpu_conv_bench PRIVATE bd_common Threads::Threads m)
if(BATCHDET_BLAS AND BD_CPU_TEST_OPENBLAS AND BD_CPU_TEST_OPENBLAS_INC)
  target_compile_definitions(cpu_conv_bench PRIVATE BD_HAVE_BLAS=1)
  target_include_directories(cpu_conv_bench PRIVATE ${BD_CPU_TEST_OPENBLAS_INC})
  target_link_libraries(cpu_conv_bench PRIVATE ${BD_CPU_TEST_OPENBLAS})
endif()

# Whole-model benchmark through the importer and compiler (bd_gpu):
#   cpu_model_bench ../shared/data/models/yolox_nano.onnx [threads [batch [reps]]]
add_executable(cpu_model_bench ${CMAKE_SOURCE_DIR}/tests/bench/cpu_conv_bench.c)
target_compile_definitions(cpu_model_bench PRIVATE BD_BENCH_MODEL=1)
target_include_directories(cpu_model_bench PRIVATE ${CMAKE_SOURCE_DIR}/gpu/cpu)
target_link_libraries(cpu_model_bench PRIVATE bd_gpu bd_common)
