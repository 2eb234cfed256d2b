# Parity of the engine against independent references (tests/reference/README.md):
# our PyTorch DAMO-YOLO (seeded weights, exported to ONNX) and onnxruntime-node.
# Exports are cached in ${CMAKE_BINARY_DIR}/parity/cache keyed by model/form/size/batch and
# the hash of damoyolo.py, so only the first run pays for them.
set(BD_REF_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with torch 1.13 + onnx (Debian)")
find_program(BD_NODE node)
set(BD_REF_DIR ${CMAKE_SOURCE_DIR}/tests/reference)

if(EXISTS ${BD_REF_PYTHON} AND BD_NODE AND EXISTS ${CMAKE_SOURCE_DIR}/tests/node/node_modules/onnxruntime-node)
  # The reference itself: parameter counts, op histogram, fused vs training form, decode.
  bd_add_script_test(reference_damoyolo_structure
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/test_damoyolo.py LABELS reference parity
    TIMEOUT 1200)   # the first run exports 11 models (cached afterwards)
  # The parity scripts can fail (stand-in runner + perturbation; matcher unit checks).
  bd_add_script_test(reference_parity_selftest
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py selftest LABELS reference parity)

  # name model size batch form [extra parity.py arguments, comma-separated: --half=KIND
  # converts the model to 16-bit floats (halfmodel.py); --opset=N --dynamic vary the export]
  set(BD_PARITY_CASES
    "T_320 T 320 1 deploy" "T_640 T 640 1 deploy" "T_320_b2 T 320 2 deploy"
    "T_320_train T 320 1 train" "S_320 S 320 1 deploy" "M_320 M 320 1 deploy"
    "L_320 L 320 1 deploy" "Ns_416 Ns 416 1 deploy" "Ns_416_train Ns 416 1 train"
    "Nm_416 Nm 416 1 deploy" "Nl_416 Nl 416 1 deploy" "N_416 N 416 1 deploy"
    "T_320_fp16 T 320 1 deploy --half=float16"
    "S_320_fp16io32 S 320 1 deploy --half=float16-io32"
    "Ns_416_bf16 Ns 416 1 deploy --half=bfloat16"
    "T_320_b2_op17_dyn T 320 2 deploy --opset=17,--dynamic"
    "S_320_b3_op13_dyn S 320 3 deploy --opset=13,--dynamic"
    "T_320_b2_as24 T 320 2 deploy --opset=17,--dynamic,--relabel=24"
    "T_320_c20 T 320 1 deploy --classes=20")
  foreach(c ${BD_PARITY_CASES})
    separate_arguments(f UNIX_COMMAND "${c}")
    list(GET f 0 tag)
    list(GET f 1 model)
    list(GET f 2 size)
    list(GET f 3 batch)
    list(GET f 4 form)
    set(extra "")
    list(LENGTH f n)
    if(n GREATER 5)
      list(GET f 5 extra)
      string(REPLACE "," ";" extra "${extra}")
    endif()
    bd_add_script_test(parity_damoyolo_${tag}
      COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py damoyolo --model ${model}
              --size ${size} --batch ${batch} --form ${form} ${extra}
      LABELS parity)
  endforeach()

  bd_add_script_test(parity_yolox_nano
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yolox LABELS parity)
  # YOLOX beyond the shipped nano (tests/reference/yolox.py): the reference checked on
  # the shipped weights, YOLOX-s 640 raw outputs, YOLOX-tiny detections on the photos
  bd_add_script_test(parity_yolox_reference
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yoloxref --model shipped LABELS parity)
  bd_add_script_test(parity_yolox_s_640
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yoloxref --model s LABELS parity)
  bd_add_script_test(parity_yolox_tiny_photos
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yolox --export tiny LABELS parity)
  # activations lowered by the importer (LeakyRelu, Clip, HardSigmoid, HardSwish), alone
  # and through a YOLOX-tiny with act="lrelu"
  bd_add_script_test(parity_acts
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py acts LABELS parity)
  # the lowered nodes (scalar constants first in Sub) on the cuda backend over the kernel
  # emulation, against the cpu backend (test_cuda_model.c)
  if(TARGET test_cuda_model_kemu)
    set_tests_properties(parity_acts PROPERTIES FIXTURES_SETUP act_models)
    foreach(_m hswish clip_op11_lo lrelu_0.1)
      add_test(NAME test_cuda_model_kemu_act_${_m} COMMAND test_cuda_model_kemu)
      set_tests_properties(test_cuda_model_kemu_act_${_m} PROPERTIES
        FIXTURES_REQUIRED act_models LABELS engine TIMEOUT 300 ENVIRONMENT
        "${BD_TEST_ENV};BD_CUDA_MODEL=${CMAKE_BINARY_DIR}/parity/acts/${_m}.onnx;BD_CUDA_BIG_BATCH=2")
    endforeach()
  endif()
  bd_add_script_test(parity_yolox_tiny_lrelu
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yoloxref --model tiny --act lrelu
            LABELS parity)
  # a custom 3-class YOLOX (no names file: detections without labels)
  bd_add_script_test(parity_yolox_nano_3classes
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yolox --export nano --classes 3
            --obj-bias -1 LABELS parity)
  # the shipped weights at a non-square input (letterbox, grids, decode per axis)
  bd_add_script_test(parity_yolox_nano_320x480
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yolox --at 320x480 LABELS parity)
  bd_add_script_test(parity_yolox_nano_fp16
    COMMAND ${BD_REF_PYTHON} ${BD_REF_DIR}/parity.py yolox --half float16 LABELS parity)
else()
  message(STATUS "parity tests disabled: need ${BD_REF_PYTHON}, node and "
                 "tests/node/node_modules (deploy/install-deps.sh)")
endif()
