# bd_family's recognition by structure (test_family_decode.c): yolox graphs with the box
# decode inside, damoyolo's 4-class output order. The end-to-end checks of the same, on
# yolox_nano re-exported with its decode, live in tests/cli/detect_decoded.cmake.
bd_add_unit_test(test_family_decode SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_family_decode.c
                 LIBS bd_gpu m TIMEOUT 60 LABELS engine)
# Device detection (pre-processing, network, post-processing: bd_cuda_post with
# `decoded`) on yolox_nano with the decode in its graph, against the cpu engine, over the
# kernels' CPU twins (emu), as test_cuda_detect_* run the plain model. The post kernel's
# `decoded` branch itself runs under the kernel emulation in test_cuda_post_kemu
# (test_yolox_decoded); the whole model under kemu too (test_cuda_detect_kemu with
# BD_DETECT_MODEL) takes 60-150 s and adds nothing to those two, so the suite leaves it.
if(BD_HAVE_CUDA AND TARGET test_cuda_detect_emu)
  set(_dec_model ${CMAKE_CURRENT_BINARY_DIR}/yolox_nano_decoded.onnx)
  add_test(NAME yolox_decoded_model COMMAND /usr/bin/python3
           ${CMAKE_SOURCE_DIR}/tests/cli/test_detect_decoded.py --write-model ${_dec_model})
  set_tests_properties(yolox_decoded_model PROPERTIES FIXTURES_SETUP yolox_decoded
                       SKIP_RETURN_CODE 77 ENVIRONMENT "${BD_TEST_ENV}" LABELS engine)
  set(_dec_ppm ${CMAKE_CURRENT_BINARY_DIR}/photos/dog.ppm)
  add_test(NAME test_cuda_detect_emu_decoded COMMAND test_cuda_detect_emu)
  set_tests_properties(test_cuda_detect_emu_decoded PROPERTIES LABELS engine TIMEOUT 900
                       FIXTURES_REQUIRED yolox_decoded
                       ENVIRONMENT "${BD_TEST_ENV};BD_DETECT_MODEL=${_dec_model};BD_DETECT_QUICK=1;BD_TEST_PPM=${_dec_ppm}")
endif()
