# cuda backend tests: kernels vs CPU twins, conv layers vs a CPU conv, the whole model
# vs the cpu backend. Without a GPU each prints "SKIP: no CUDA device" and exits 77.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  set(_cuda_dir ${CMAKE_CURRENT_SOURCE_DIR})
  bd_add_unit_test(test_cuda_kernels SOURCES ${_cuda_dir}/test_cuda_kernels.c LIBS bd_cuda LABELS cuda)
  bd_add_unit_test(test_cuda_conv SOURCES ${_cuda_dir}/test_cuda_conv.c LIBS bd_cuda LABELS cuda)
  bd_add_unit_test(test_cuda_model SOURCES ${_cuda_dir}/test_cuda_model.c LIBS bd_gpu bd_cuda
                   LABELS cuda TIMEOUT 600)
  bd_add_unit_test(test_cuda_prep SOURCES ${_cuda_dir}/test_cuda_prep.c LIBS bd_gpu bd_cuda LABELS cuda)
  foreach(t test_cuda_kernels test_cuda_conv test_cuda_model test_cuda_prep)
    target_include_directories(${t} PRIVATE ${_cuda_dir})
    set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77)
  endforeach()
  # The same layers and model on our tensor-core convolution (BATCHDET_CUDA_CONV=mma).
  foreach(t test_cuda_conv test_cuda_model)
    add_test(NAME ${t}_mma COMMAND ${t})
    set_tests_properties(${t}_mma PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda TIMEOUT 600
                         ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=mma")
  endforeach()
  # The real cuDNN's answer, without a GPU, on the graphs bd_cuda_dnn_graph.c builds (see
  # test_cuda_dnn_survey.c and the survey tests below).
  if(CUDNN_LIB)
    add_executable(test_cuda_dnn_survey ${_cuda_dir}/test_cuda_dnn_survey.c)
    target_link_libraries(test_cuda_dnn_survey PRIVATE bd_cuda bd_common)
    target_include_directories(test_cuda_dnn_survey PRIVATE ${CMAKE_SOURCE_DIR}/gpu/cuda)
  endif()
endif()

# The backend's host code over a host emulation of the device (no GPU needed): the
# backend sources are compiled in directly, without cuDNN (convs take the direct path),
# with cuda_emu.c standing in for the CUDA runtime and the kernels.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  set(_cu ${CMAKE_SOURCE_DIR}/gpu/cuda)
  bd_add_unit_test(test_cuda_emu SOURCES ${_cuda_dir}/test_cuda_emu.c ${BD_TWIN_EMU_SOURCES}
                   LIBS bd_gpu TIMEOUT 600)
  target_include_directories(test_cuda_emu PRIVATE ${_cu} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(test_cuda_emu PRIVATE -UBD_HAVE_CUDNN)
  # The same with the backend's cuDNN path compiled in, over an emulated cuDNN
  # (cuda_emu.c, BD_EMU_CUDNN): descriptors, algorithm search, the fused bias + ReLU call,
  # padded layers and Concat pieces written through the epilogue.
  bd_add_unit_test(test_cuda_emu_dnn SOURCES ${_cuda_dir}/test_cuda_emu.c ${BD_TWIN_EMU_SOURCES}
                   LIBS bd_gpu TIMEOUT 600)
  target_include_directories(test_cuda_emu_dnn PRIVATE ${_cu} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(test_cuda_emu_dnn PRIVATE BD_EMU_CUDNN=1)
  set_tests_properties(test_cuda_emu_dnn PROPERTIES
                       ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=cudnn")
  # BATCHDET_CUDA_CONV=auto (the default): our tensor-core kernel or cuDNN per layer by
  # measurement on the emulated clock, and with our kernel made wrong (nothing chosen).
  add_test(NAME test_cuda_emu_dnn_auto COMMAND test_cuda_emu_dnn)
  add_test(NAME test_cuda_emu_dnn_auto_fault COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_auto PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BD_TEST_CONV_AUTO=1")
  set_tests_properties(test_cuda_emu_dnn_auto_fault PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BD_TEST_CONV_AUTO=1;BD_EMU_MMA_FAULT=1")
  # cuDNN's graph API (bd_cuda_dnn_graph.c) over the emulated one: forced
  # (BATCHDET_CUDA_CONV=cudnn-graph) and as the choice's third side.
  add_test(NAME test_cuda_emu_dnn_graph COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_graph PROPERTIES TIMEOUT 600
                       FIXTURES_SETUP graph_shapes_yolox
                       ENVIRONMENT "${BD_TEST_ENV};BD_TEST_CONV_GRAPH=1;BATCHDET_CUDA_DNN_GRAPH_SHAPES=${CMAKE_CURRENT_BINARY_DIR}/graph_shapes_yolox.txt")
  # The same with engines compiled at run time let in: yolox_nano's SiLU layers fuse.
  add_test(NAME test_cuda_emu_dnn_graph_rtc COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_graph_rtc PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BD_TEST_CONV_GRAPH=1;BATCHDET_CUDA_DNN_RTC=1")
  # The backend's wiring of the tensor-core convolution (no channel padding, the layer
  # run) over the emulation.
  add_test(NAME test_cuda_emu_mma COMMAND test_cuda_emu)
  set_tests_properties(test_cuda_emu_mma PROPERTIES TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=mma")
  # A real photo as input (16-bit error on image statistics), decoded once at configure
  # time when djpeg is there; without it the tests use a synthetic pattern.
  find_program(BD_DJPEG djpeg)
  if(BD_DJPEG AND EXISTS ${BD_TEST_DATA}/images/dog.jpg)
    execute_process(COMMAND ${BD_DJPEG} -pnm ${BD_TEST_DATA}/images/dog.jpg
                    OUTPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/dog.ppm RESULT_VARIABLE _djpeg_rc)
    if(_djpeg_rc EQUAL 0)
      set_property(TEST test_cuda_emu test_cuda_emu_mma test_cuda_emu_dnn test_cuda_emu_dnn_auto test_cuda_emu_dnn_auto_fault test_cuda_emu_dnn_graph test_cuda_model test_cuda_model_mma APPEND
                   PROPERTY ENVIRONMENT
                   "BD_TEST_PPM=${CMAKE_CURRENT_BINARY_DIR}/dog.ppm")
    endif()
  endif()
endif()
# Device detection through bd_engine (test_cuda_detect.c): on a GPU, and over the same
# emulation. The emulated network is slow (naive loops): cuda_emu.c is optimised even
# in Debug builds (kemu.cmake) and the emulated run takes fewer pictures.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  bd_add_unit_test(test_cuda_detect SOURCES ${_cuda_dir}/test_cuda_detect.c LIBS bd_gpu bd_cuda
                   LABELS cuda TIMEOUT 600)
  target_include_directories(test_cuda_detect PRIVATE ${_cuda_dir})
  set_tests_properties(test_cuda_detect PROPERTIES SKIP_RETURN_CODE 77)
  bd_add_unit_test(test_cuda_detect_emu SOURCES ${_cuda_dir}/test_cuda_detect.c ${BD_TWIN_EMU_SOURCES}
                   LIBS bd_gpu TIMEOUT 900)
  target_include_directories(test_cuda_detect_emu PRIVATE ${_cu} ${_cuda_dir}
                             ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(test_cuda_detect_emu PRIVATE -UBD_HAVE_CUDNN)
  target_compile_definitions(test_cuda_detect_emu PRIVATE TEST_DETECT_EMU=1)
  # With the patch tile on the layers it takes (BATCHDET_CUDA_CONV=patch): yolox's Focus
  # stem reads the 16-bit tensor detection's pre-processing writes, while the raw path's
  # plan of the same engine has it read the FP32 input through the layout itself
  # (bd_cuda_raw_direct's fuse_layout).
  add_test(NAME test_cuda_detect_emu_patch COMMAND test_cuda_detect_emu)
  set_tests_properties(test_cuda_detect_emu_patch PROPERTIES TIMEOUT 900
                       ENVIRONMENT "${BD_TEST_ENV};BATCHDET_CUDA_CONV=patch")
  # The shared photos as PPM (djpeg at configure time) for the GPU run; the emulated run
  # takes the first.
  find_program(BD_DJPEG djpeg)
  set(_ppm_dir ${CMAKE_CURRENT_BINARY_DIR}/photos)
  file(GLOB _photos ${BD_TEST_DATA}/images/*.jpg)
  if(BD_DJPEG AND _photos)
    file(MAKE_DIRECTORY ${_ppm_dir})
    foreach(_jpg ${_photos})
      get_filename_component(_stem ${_jpg} NAME_WE)
      if(NOT EXISTS ${_ppm_dir}/${_stem}.ppm)
        execute_process(COMMAND ${BD_DJPEG} -pnm ${_jpg} OUTPUT_FILE ${_ppm_dir}/${_stem}.ppm
                        RESULT_VARIABLE _rc)
        if(NOT _rc EQUAL 0)
          file(REMOVE ${_ppm_dir}/${_stem}.ppm)
        endif()
      endif()
    endforeach()
    set_property(TEST test_cuda_detect test_cuda_prep APPEND PROPERTY ENVIRONMENT
                 "BD_TEST_PPM_DIR=${_ppm_dir}")
    set_property(TEST test_cuda_detect_emu test_cuda_detect_emu_patch APPEND PROPERTY
                 ENVIRONMENT "BD_TEST_PPM=${_ppm_dir}/dog.ppm")
  endif()
endif()
# A tiny damoyolo-contract model (64x64, a few convs; tests/cli/test_detect_damo.py
# --write-model) on which the emulated device runs whole pools and the damoyolo device
# path in seconds: test_pool_emu (cuda pool of two instances) and test_cuda_detect_emu_damo.
if(BD_HAVE_CUDA AND TARGET bd_cuda)
  set(_tiny ${CMAKE_CURRENT_BINARY_DIR}/tiny_damo.onnx)
  add_test(NAME tiny_damo_model COMMAND /usr/bin/python3
           ${CMAKE_SOURCE_DIR}/tests/cli/test_detect_damo.py --write-model ${_tiny})
  set_tests_properties(tiny_damo_model PROPERTIES FIXTURES_SETUP tiny_damo SKIP_RETURN_CODE 77
                       LABELS engine TIMEOUT 120)
  bd_add_unit_test(test_pool_emu SOURCES ${_cuda_dir}/test_pool.c ${BD_TWIN_EMU_SOURCES} LIBS bd_gpu
                   LABELS engine TIMEOUT 600)
  target_include_directories(test_pool_emu PRIVATE ${_cu} ${_cuda_dir} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(test_pool_emu PRIVATE -UBD_HAVE_CUDNN)
  target_compile_definitions(test_pool_emu PRIVATE TEST_POOL_EMU=1)
  # The worker's executor with a cuda instance over the same emulation, the device failing
  # under a batch ($BD_EMU_DEVICE_FAULT): the worker is fatal, the shard not acknowledged.
  if(TARGET bd_worker)
    bd_add_unit_test(test_bd_wk_exec_emu SOURCES ${CMAKE_SOURCE_DIR}/tests/worker/test_bd_wk_exec.c
                     ${BD_TWIN_EMU_SOURCES} LIBS bd_worker LABELS engine TIMEOUT 300)
    target_include_directories(test_bd_wk_exec_emu PRIVATE ${_cu} ${_cuda_dir} ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_options(test_bd_wk_exec_emu PRIVATE -UBD_HAVE_CUDNN)
    target_compile_definitions(test_bd_wk_exec_emu PRIVATE TEST_WK_EMU=1)
    set_tests_properties(test_bd_wk_exec_emu PROPERTIES FIXTURES_REQUIRED tiny_damo
                         ENVIRONMENT "${BD_TEST_ENV};BD_WK_MODELS_DIR=${CMAKE_CURRENT_BINARY_DIR};BD_WK_MODEL=tiny_damo;BD_EMU_DEVICE_FAULT=2")
  endif()
  # DAMO-YOLO-T itself (reference module, seed 0) at 96x96: the real head (DFL softmax,
  # integral, the reshapes and transposes read in place) and the Focus stem over the
  # emulation, batch 2, against the cpu backend (test_cuda_emu's $BD_CUDA_MODEL mode).
  set(_damo96 ${CMAKE_CURRENT_BINARY_DIR}/damoT96)
  add_test(NAME damoT96_model COMMAND /usr/bin/python3
           ${CMAKE_SOURCE_DIR}/tests/reference/damoyolo.py export --model T --form deploy
           --size 96 --batch 1 --seed 0 --out ${_damo96})
  set_tests_properties(damoT96_model PROPERTIES FIXTURES_SETUP damoT96 LABELS engine TIMEOUT 300)
  add_test(NAME test_cuda_emu_dnn_damoT COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_damoT PROPERTIES FIXTURES_REQUIRED damoT96
                       LABELS engine TIMEOUT 300
                       ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_INPUT=${_damo96}/input.f32;BD_CUDA_BATCH=2;BATCHDET_CUDA_CONV=cudnn")
  add_test(NAME test_cuda_emu_dnn_auto_damoT COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_auto_damoT PROPERTIES FIXTURES_REQUIRED damoT96
                       LABELS engine TIMEOUT 300
                       ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_INPUT=${_damo96}/input.f32;BD_TEST_CONV_AUTO=1")

  add_test(NAME test_cuda_emu_dnn_graph_damoT COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_graph_damoT PROPERTIES FIXTURES_REQUIRED damoT96
                       FIXTURES_SETUP graph_shapes_damoT LABELS engine TIMEOUT 300
                       ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_INPUT=${_damo96}/input.f32;BD_TEST_CONV_GRAPH=1;BATCHDET_CUDA_DNN_GRAPH_SHAPES=${CMAKE_CURRENT_BINARY_DIR}/graph_shapes_damoT96.txt")
  # The real cuDNN (no GPU: deviceless plans, cuDNN 9.8 and later) on the graphs that test
  # asked the emulated one for, scaled to DAMO-T 640 at batch 32 and 1, for an H100 (SXM):
  # every operation graph must finalize, and every graph the emulation gives a precompiled
  # engine must keep one the backend would time (test_cuda_dnn_survey.c). devprop/h100_sxm.json
  # is cuDNN's device-properties JSON with an H100 SXM's published figures, written without
  # one; device_check.sh writes the device's own to $OUT/cudnn_devprop.json. Leaks are not
  # checked: cuDNN keeps allocations of its engines' finalization for the process.
  if(TARGET test_cuda_dnn_survey)
    set(_survey_env "ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0")
    foreach(_b 32 1)
      add_test(NAME test_cuda_dnn_survey_damoT_b${_b}
               COMMAND test_cuda_dnn_survey --devprop ${_cuda_dir}/devprop/h100_sxm.json
                       --shapes ${CMAKE_CURRENT_BINARY_DIR}/graph_shapes_damoT96.txt
                       --from 96 --to 640 --batch ${_b} --require-graphs --require-model)
      set_tests_properties(test_cuda_dnn_survey_damoT_b${_b} PROPERTIES
                           FIXTURES_REQUIRED graph_shapes_damoT SKIP_RETURN_CODE 77
                           LABELS cuda TIMEOUT 120 ENVIRONMENT "${_survey_env}")
    endforeach()
    add_test(NAME test_cuda_dnn_survey_yolox_b32
             COMMAND test_cuda_dnn_survey --devprop ${_cuda_dir}/devprop/h100_sxm.json
                     --shapes ${CMAKE_CURRENT_BINARY_DIR}/graph_shapes_yolox.txt
                     --batch 32 --require-graphs --require-model)
    set_tests_properties(test_cuda_dnn_survey_yolox_b32 PROPERTIES
                         FIXTURES_REQUIRED graph_shapes_yolox SKIP_RETURN_CODE 77
                         LABELS cuda TIMEOUT 120 ENVIRONMENT "${_survey_env}")
  endif()
  # The same with our first block tile failing to launch: load goes on without it.
  add_test(NAME test_cuda_emu_dnn_auto_damoT_launchfail COMMAND test_cuda_emu_dnn)
  set_tests_properties(test_cuda_emu_dnn_auto_damoT_launchfail PROPERTIES
                       FIXTURES_REQUIRED damoT96 LABELS engine TIMEOUT 300
                       ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_INPUT=${_damo96}/input.f32;BD_TEST_CONV_AUTO=1;BD_EMU_MMA_FAULT=launch0")
  foreach(_conv auto mma)
    add_test(NAME test_cuda_emu_damoT_${_conv} COMMAND test_cuda_emu)
    set_tests_properties(test_cuda_emu_damoT_${_conv} PROPERTIES FIXTURES_REQUIRED damoT96
                         LABELS engine TIMEOUT 300
                         ENVIRONMENT "${BD_TEST_ENV};BD_CUDA_MODEL=${_damo96}/model.onnx;BD_CUDA_INPUT=${_damo96}/input.f32;BD_CUDA_BATCH=2;BATCHDET_CUDA_CONV=${_conv}")
  endforeach()
  # The pool and device detection on the tiny model once more with the backend's cuDNN
  # path over the emulated cuDNN (algorithm memo shared by the instances, fused layers).
  foreach(_t test_pool_emu test_cuda_detect_emu)
    get_target_property(_srcs ${_t} SOURCES)
    get_target_property(_defs ${_t} COMPILE_DEFINITIONS)
    bd_add_unit_test(${_t}_dnn SOURCES ${_srcs} LIBS bd_gpu LABELS engine TIMEOUT 600)
    target_include_directories(${_t}_dnn PRIVATE ${_cu} ${_cuda_dir} ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_definitions(${_t}_dnn PRIVATE BD_EMU_CUDNN=1 ${_defs})
    set_tests_properties(${_t}_dnn PROPERTIES FIXTURES_REQUIRED tiny_damo SKIP_RETURN_CODE 77)
  endforeach()
  set_tests_properties(test_pool_emu_dnn PROPERTIES ENVIRONMENT "${BD_TEST_ENV};BD_POOL_MODEL=${_tiny}")
  set_tests_properties(test_cuda_detect_emu_dnn PROPERTIES
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_MODEL=${_tiny};BD_TEST_PPM_DIR=${_ppm_dir}")
  add_test(NAME test_cuda_detect_emu_damo COMMAND test_cuda_detect_emu)
  set_tests_properties(test_pool_emu test_cuda_detect_emu_damo PROPERTIES
                       FIXTURES_REQUIRED tiny_damo SKIP_RETURN_CODE 77)
  set_tests_properties(test_pool_emu PROPERTIES ENVIRONMENT "${BD_TEST_ENV};BD_POOL_MODEL=${_tiny}")
  set_tests_properties(test_cuda_detect_emu_damo PROPERTIES
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_MODEL=${_tiny};BD_TEST_PPM_DIR=${_ppm_dir}"
                       LABELS engine TIMEOUT 600)
  # The damoyolo path with pre-processing into the FP32 input (BATCHDET_CUDA_PREP16=0):
  # the plan's own conversion runs again; the boxes are the same.
  add_test(NAME test_cuda_detect_emu_damo_prep32 COMMAND test_cuda_detect_emu)
  set_tests_properties(test_cuda_detect_emu_damo_prep32 PROPERTIES FIXTURES_REQUIRED tiny_damo
                       SKIP_RETURN_CODE 77 LABELS engine TIMEOUT 600
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_MODEL=${_tiny};BD_TEST_PPM_DIR=${_ppm_dir};BATCHDET_CUDA_PREP16=0")
endif()
if(TARGET test_cuda_emu AND BATCHDET_CUDA_BF16)
  target_compile_definitions(test_cuda_emu PRIVATE BD_CUDA_BF16=1)
  target_compile_definitions(test_cuda_detect_emu PRIVATE BD_CUDA_BF16=1)
  target_compile_definitions(test_pool_emu PRIVATE BD_CUDA_BF16=1)
endif()
