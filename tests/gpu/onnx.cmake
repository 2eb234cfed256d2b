# ONNX importer and graph compiler tests (gpu/onnx, gpu/bd_compile*.c, gpu/bd_plan.c).
bd_add_unit_test(test_onnx SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_onnx.c LIBS bd_gpu
                 TIMEOUT 120 LABELS engine)
bd_add_unit_test(test_compile SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_compile.c LIBS bd_gpu
                 TIMEOUT 60 LABELS engine)

# Small generated models (python3-onnx), written into the build tree by a fixture.
find_program(BD_SYS_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(BD_SYS_PYTHON3)
  set(BD_GEN_MODELS ${CMAKE_CURRENT_BINARY_DIR}/models)
  add_test(NAME gen_onnx_models
           COMMAND ${BD_SYS_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/models/gen_head.py ${BD_GEN_MODELS})
  set_tests_properties(gen_onnx_models PROPERTIES FIXTURES_SETUP onnx_models TIMEOUT 60)
  bd_add_unit_test(test_onnx_head SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_onnx_head.c LIBS bd_gpu
                   TIMEOUT 60 LABELS engine)
  set_property(TEST test_onnx_head APPEND PROPERTY ENVIRONMENT "BD_GEN_MODELS=${BD_GEN_MODELS}")
  set_tests_properties(test_onnx_head PROPERTIES FIXTURES_REQUIRED onnx_models)
endif()

# Hostile and unusual small models (gen_hostile.py) through the engine on the cpu. The
# 99,999-Identity chain is its own entry: its TIMEOUT bounds a load that was quadratic.
if(BD_SYS_PYTHON3)
  set(BD_HOSTILE_MODELS ${CMAKE_CURRENT_BINARY_DIR}/models/hostile)
  add_test(NAME gen_onnx_hostile
           COMMAND ${BD_SYS_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/models/gen_hostile.py
                   ${BD_HOSTILE_MODELS})
  set_tests_properties(gen_onnx_hostile PROPERTIES FIXTURES_SETUP onnx_hostile TIMEOUT 120)
  bd_add_unit_test(test_onnx_hostile SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_onnx_hostile.c
                   LIBS bd_gpu TIMEOUT 120 LABELS engine)
  set_property(TEST test_onnx_hostile APPEND PROPERTY ENVIRONMENT
               "BD_GEN_MODELS=${BD_HOSTILE_MODELS}")
  set_tests_properties(test_onnx_hostile PROPERTIES FIXTURES_REQUIRED onnx_hostile)
  add_test(NAME test_onnx_hostile_chain COMMAND test_onnx_hostile chain)
  set_tests_properties(test_onnx_hostile_chain PROPERTIES
                       ENVIRONMENT "${BD_TEST_ENV};BD_GEN_MODELS=${BD_HOSTILE_MODELS}"
                       TIMEOUT 60 LABELS engine FIXTURES_REQUIRED onnx_hostile)
endif()
