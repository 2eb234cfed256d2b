# Engine facade, families (pre/post-processing), NMS and labels.
bd_add_unit_test(test_nms SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nms.c LIBS bd_gpu
                 TIMEOUT 60 LABELS engine)
bd_add_unit_test(test_family SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_family.c LIBS bd_gpu
                 TIMEOUT 60 LABELS engine)
bd_add_unit_test(test_family_labels SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_family_labels.c
                 LIBS bd_gpu TIMEOUT 60 LABELS engine)
bd_add_unit_test(test_engine SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_engine.c LIBS bd_gpu
                 TIMEOUT 600 LABELS engine)

# OpenCV as the independent reference for the resize and the whole pre-processing
# (python3-opencv from Debian; the test skips with exit 77 when it is missing).
add_executable(test_family_resize_tool ${CMAKE_CURRENT_LIST_DIR}/test_family_resize_tool.c)
target_link_libraries(test_family_resize_tool PRIVATE bd_gpu bd_common)
bd_add_script_test(test_family_resize_cv2
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_family_resize_cv2.py
                           $<TARGET_FILE:test_family_resize_tool>
                   TIMEOUT 300 LABELS engine)
set_tests_properties(test_family_resize_cv2 PROPERTIES SKIP_RETURN_CODE 77)
