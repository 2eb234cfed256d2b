# The whole cuda backend over the real kernels on the host (kemu.cmake), with stream
# capture recording and graph launches replaying as on a GPU: the GPU tests of the model
# (captured graph vs the cpu backend, vs the same work uncaptured, replayed twice), of
# device detection (pre-processing, network, decode and NMS in one graph per slot, two
# batches in flight) and of the pool's cuda instances, unchanged; those two with the
# runtime's async mode (BD_EMU_ASYNC=1, cuda_rt_emu.c: work queued per stream and run in
# an adversarial order that keeps only stream order and event waits), so that a missing
# wait between the copy and compute streams gives wrong boxes here as it would on a GPU. Models: yolox_nano and
# DAMO-YOLO-T at 96x96 for the network (also on our tensor-core conv), the tiny damoyolo-contract model for detection
# and the pool, yolox_nano once more for detection on one photo.
if(BD_HAVE_CUDA AND TARGET bd_cuda AND COMMAND bd_kemu_test)
  bd_kemu_test(test_cuda_model_kemu SOURCES ${_cuda_dir}/test_cuda_model.c TIMEOUT 900)
  set_tests_properties(test_cuda_model_kemu PROPERTIES ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_BIG_BATCH=2")
  # test_cuda_model_kemu_NAME: the model test on DAMO-YOLO-T 96 (independent branches
  # expected) with more environment ENV.
  function(bd_kemu_damo_model NAME ENV)
    set(_env "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_BIG_BATCH=2;BD_EXPECT_BRANCHES=1")
    if(ENV)
      list(APPEND _env ${ENV})
    endif()
    add_test(NAME test_cuda_model_kemu_${NAME} COMMAND test_cuda_model_kemu)
    set_tests_properties(test_cuda_model_kemu_${NAME} PROPERTIES FIXTURES_REQUIRED damoT96
                         LABELS engine TIMEOUT 600 ENVIRONMENT "${_env}")
  endfunction()
  bd_kemu_damo_model(damoT "")
  # Our tensor-core convolution on every layer it takes, through the whole model (all 77
  # of DAMO-YOLO-T's convs: pitched inputs and Concat pieces, residuals, the head, the
  # Focus stem's 12 channels on zero-padded weights, the 68 regression channels).
  # Its CSP stages' twin 1x1 convs (merge_3..7) each in one launch (bd_cuda_conv_twins),
  # merge_4/5 as split by bd_compile (a pair at the low resolution, a pair with residuals
  # read upsampled: 7 pairs, 4 Resizes in the convs' epilogues), and the head's box (68
  # channels) and class (80, sigmoid) 3x3 convs at each level as ragged twins: 10 pairs.
  bd_kemu_damo_model(damoT_mma "BATCHDET_CUDA_CONV=mma;BD_EXPECT_TWINS=10;BD_EXPECT_UPRES=4;BD_EXPECT_PIECES=16")
  # The same with the patch tile (k_conv_patch) on every layer it takes: the stem on its
  # stored zero-padded input, the first stages' 24/64-channel convs, strides 1 and 2.
  bd_kemu_damo_model(damoT_patch "BATCHDET_CUDA_CONV=patch;BD_EXPECT_PATCH=1")
  # The same on the Hopper warpgroup tiles (18-23; the emulated GPU answers as an sm_90)
  # on every layer: pitched inputs, Concat pieces, residuals (upsampled ones too), twins.
  bd_kemu_damo_model(damoT_wgmma
    "BATCHDET_CUDA_CONV=wgmma;BATCHDET_CUDA_WGMMA=1;BD_EMU_SM=90;BD_EXPECT_WGMMA=19,20,21,22,23;BD_EXPECT_TWINS=10;BD_EXPECT_UPRES=4;BD_EXPECT_PIECES=16")
  # test_cuda_model_kemu_NAME: the model test on the tiny model with more environment ENV.
  function(bd_kemu_tiny_model NAME ENV)
    add_test(NAME test_cuda_model_kemu_${NAME} COMMAND test_cuda_model_kemu)
    set_tests_properties(test_cuda_model_kemu_${NAME} PROPERTIES FIXTURES_REQUIRED tiny_damo
                         LABELS engine TIMEOUT 600
                         ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_tiny};${ENV}")
  endfunction()
  # Programmatic dependent launch's policy (auto: graphs of plans up to batch 4 on a
  # Hopper): the emulated device answers sm_90, the tiny model's batch-1 plan is captured
  # with it, a batch-5 plan without; BATCHDET_CUDA_PDL=0 and =1 the same way.
  foreach(_pdl auto:4 0:0 1:99)
    string(REPLACE ":" ";" _pv ${_pdl})
    list(GET _pv 0 _mode)
    list(GET _pv 1 _max)
    bd_kemu_tiny_model(pdl_${_mode} "BD_CUDA_BIG_BATCH=2;BD_EMU_SM=90;BD_CUDA_PLAN2=5;BATCHDET_CUDA_PDL=${_mode};BD_EXPECT_PDL_MAX=${_max}")
  endforeach()
  # The graphs captured as chains (BATCHDET_CUDA_BRANCHES=0), as before parallel
  # branches; and with branches in a batch-5 plan too (=1; auto stops at batch 4), whose
  # memory is not laid out for them.
  bd_kemu_tiny_model(chain "BD_CUDA_BIG_BATCH=2;BATCHDET_CUDA_BRANCHES=0")
  bd_kemu_tiny_model(branches "BD_CUDA_BIG_BATCH=5;BATCHDET_CUDA_BRANCHES=1")
  bd_kemu_test(test_cuda_detect_kemu SOURCES ${_cuda_dir}/test_cuda_detect.c TIMEOUT 900)
  set_tests_properties(test_cuda_detect_kemu PROPERTIES FIXTURES_REQUIRED tiny_damo
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_MODEL=${_tiny};BD_TEST_PPM_DIR=${_ppm_dir};BD_EMU_ASYNC=1")
  add_test(NAME test_cuda_detect_kemu_yolox COMMAND test_cuda_detect_kemu)
  set_tests_properties(test_cuda_detect_kemu_yolox PROPERTIES LABELS engine TIMEOUT 900
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_QUICK=1;BD_TEST_PPM=${_ppm_dir}/dog.ppm;BD_EMU_ASYNC=1")
  bd_kemu_test(test_pool_kemu SOURCES ${_cuda_dir}/test_pool.c)
  target_compile_definitions(test_pool_kemu PRIVATE TEST_POOL_EMU=1)
  set_tests_properties(test_pool_kemu PROPERTIES FIXTURES_REQUIRED tiny_damo SKIP_RETURN_CODE 77
                       ENVIRONMENT "${BD_TEST_ENV};BD_POOL_MODEL=${_tiny};BD_EMU_ASYNC=1")
  if(EXISTS ${CMAKE_CURRENT_BINARY_DIR}/dog.ppm)
    set_property(TEST test_cuda_model_kemu test_cuda_model_kemu_damoT test_cuda_model_kemu_damoT_mma
                 test_cuda_model_kemu_damoT_patch test_cuda_model_kemu_damoT_wgmma APPEND PROPERTY
                 ENVIRONMENT "BD_TEST_PPM=${CMAKE_CURRENT_BINARY_DIR}/dog.ppm")
  endif()
  set_property(TEST test_cuda_prep_kemu APPEND PROPERTY ENVIRONMENT "BD_TEST_PPM_DIR=${_ppm_dir}")
endif()
# `batchdet bench --device cuda` (network, end to end, pool) on a batchdet linked against
# the kernel emulation: the bench's own capture of the network says it succeeded.
if(BD_HAVE_CUDA AND TARGET bd_cuda AND COMMAND bd_kemu_test)
  set(_cli ${CMAKE_SOURCE_DIR}/cli)
  add_executable(batchdet_kemu ${_cli}/main.c ${_cli}/cmd_bench.c ${_cli}/cmd_bench_pool.c
                 ${_cli}/cmd_bench_prof.c ${BD_KEMU_SOURCES})
  target_compile_definitions(batchdet_kemu PRIVATE BD_ENGINE_ONLY=1 BD_VERSION="kemu")
  target_include_directories(batchdet_kemu PRIVATE ${_cli} ${_kemu_cu} ${_kemu_dir}
                             ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(batchdet_kemu PRIVATE -UBD_HAVE_CUDNN)
  target_link_libraries(batchdet_kemu PRIVATE bd_gpu bd_common Threads::Threads m)
  set_target_properties(batchdet_kemu PROPERTIES LINKER_LANGUAGE CXX)
  if(BATCHDET_CUDA_BF16)
    target_compile_definitions(batchdet_kemu PRIVATE BD_CUDA_BF16=1)
  endif()
  bd_add_script_test(test_bench_kemu
                     COMMAND /usr/bin/python3 ${_cuda_dir}/test_bench_kemu.py
                             $<TARGET_FILE:batchdet_kemu> ${_tiny} ${BD_TEST_DATA}/models/yolox_nano.onnx
                     TIMEOUT 600 LABELS "engine;cli")
  set_tests_properties(test_bench_kemu PROPERTIES FIXTURES_REQUIRED tiny_damo)
endif()
