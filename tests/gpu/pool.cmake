# bd_pool (device pool of engines) with cpu instances on yolox_nano; the photo decoded
# once by djpeg when it is there (else the test synthesises pictures).
bd_add_unit_test(test_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pool.c LIBS bd_gpu
                 TIMEOUT 600 LABELS engine)
find_program(BD_DJPEG djpeg)
if(BD_DJPEG AND EXISTS ${BD_TEST_DATA}/images/dog.jpg)
  execute_process(COMMAND ${BD_DJPEG} -pnm ${BD_TEST_DATA}/images/dog.jpg
                  OUTPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/pool_dog.ppm RESULT_VARIABLE _pool_rc)
  if(_pool_rc EQUAL 0)
    set_property(TEST test_pool APPEND PROPERTY ENVIRONMENT
                 "BD_TEST_PPM=${CMAKE_CURRENT_BINARY_DIR}/pool_dog.ppm")
  endif()
endif()
