# JPEG edge cases (warnings on complete files, CMYK/YCCK, 12-bit, lenient EXIF) against
# OpenCV's imread; skips without cv2. decode_dump comes from decode.cmake.
bd_add_script_test(test_decode_jpeg_compat
                   COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_jpeg_compat.py
                           $<TARGET_FILE:decode_dump>
                   TIMEOUT 120)
set_tests_properties(test_decode_jpeg_compat PROPERTIES SKIP_RETURN_CODE 77)
