# storage/decode: image decoders, orientation, encoder, drawing.
bd_add_unit_test(test_decode SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode.c LIBS bd_storage m)
bd_add_unit_test(test_decode_png SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_png.c LIBS bd_storage z)
bd_add_unit_test(test_decode_draw SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_draw.c LIBS bd_storage)
# Alpha / tRNS PNGs against OpenCV's imread (the YOLOX reference); skips without cv2.
add_executable(decode_dump ${CMAKE_CURRENT_SOURCE_DIR}/decode_dump.c)
target_link_libraries(decode_dump PRIVATE bd_storage bd_common)
bd_add_script_test(test_decode_alpha
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_alpha.py
                           $<TARGET_FILE:decode_dump>
                   TIMEOUT 120)
set_tests_properties(test_decode_alpha PROPERTIES SKIP_RETURN_CODE 77)
# Decoding limits and imread parity at the edges (file size and sniffing, other formats'
# messages, PNG sides, PNG decompression bombs, 16-bit); skips without cv2.
bd_add_script_test(test_decode_limits
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_limits.py
                           $<TARGET_FILE:decode_dump>
                   TIMEOUT 300)
set_tests_properties(test_decode_limits PROPERTIES SKIP_RETURN_CODE 77)
