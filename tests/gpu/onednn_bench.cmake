# oneDNN vs our cpu backend, per convolution layer (issue 4, item 3). Measurement only:
# oneDNN is not a batchdet dependency (not in deploy/install-deps.sh); this benchmark is
# built only where libdnnl-dev happens to be installed, and is not a ctest test.
#   onednn_conv_bench ../shared/data/models/yolox_nano.onnx [rounds [gap_us]]
# (tests/bench/cpu_vs_onednn.sh runs it with the whole-model profile for context).
find_library(BD_ONEDNN_LIB NAMES dnnl)
find_path(BD_ONEDNN_INC NAMES oneapi/dnnl/dnnl.h)
find_package(OpenMP COMPONENTS C QUIET)
if(BD_ONEDNN_LIB AND BD_ONEDNN_INC AND OpenMP_C_FOUND)
  add_executable(onednn_conv_bench ${CMAKE_SOURCE_DIR}/tests/bench/onednn_conv_bench.c)
  target_include_directories(onednn_conv_bench PRIVATE ${BD_ONEDNN_INC})
  # OpenMP: the Debian oneDNN uses the OpenMP runtime; the thread count is set per primitive.
  target_link_libraries(onednn_conv_bench PRIVATE bd_gpu bd_common ${BD_ONEDNN_LIB} OpenMP::OpenMP_C m)
  message(STATUS "batchdet: onednn_conv_bench enabled (${BD_ONEDNN_LIB})")
endif()
