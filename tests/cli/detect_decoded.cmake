# Models whose graph decodes the boxes itself (yolox_nano re-exported with YOLOX's
# decode_in_inference, built from the shipped model) and damoyolo's 4-class output
# order, through `batchdet detect` (skips with 77 without python3-onnx / numpy).
bd_add_script_test(test_cli_detect_decoded
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_detect_decoded.py
                   TIMEOUT 600 LABELS cli)
set_tests_properties(test_cli_detect_decoded PROPERTIES SKIP_RETURN_CODE 77)
