# `batchdet detect` / `infer` / `bench` end to end on the shipped model and photos.
bd_add_script_test(test_cli_detect
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_detect.py
                   TIMEOUT 900 LABELS cli)
# damoyolo family end to end on a tiny generated graph with the official output contract,
# against a numpy + OpenCV reference (skips with 77 without python3-onnx / cv2).
bd_add_script_test(test_cli_detect_damo
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_detect_damo.py
                   TIMEOUT 600 LABELS cli)
set_tests_properties(test_cli_detect_damo PROPERTIES SKIP_RETURN_CODE 77)
