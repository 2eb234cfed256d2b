# storage/decode: image decoders, orientation, encoder, drawing.
bd_add_unit_test(test_decode SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode.c LIBS bd_storage m)
bd_add_unit_test(test_decode_png SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_png.c LIBS bd_storage)
bd_add_unit_test(test_decode_draw SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_decode_draw.c LIBS bd_storage)
