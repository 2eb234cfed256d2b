# Fuzz target for storage/decode (JPEG, PNG, EXIF). Same pattern as proto.cmake:
# libFuzzer binary under BATCHDET_FUZZ_ENGINE=libfuzzer (run_fuzz.sh decode SECONDS),
# else built with replay_main.c and a ctest replaying corpus/decode/.
if(TARGET bd_storage)
  if(BATCHDET_FUZZ_ENGINE STREQUAL "libfuzzer")
    add_executable(fuzz_decode ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_decode.c)
    target_compile_options(fuzz_decode PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_decode PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_decode PRIVATE bd_storage bd_common)
  else()
    add_executable(fuzz_decode ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_decode.c
                               ${CMAKE_CURRENT_SOURCE_DIR}/replay_main.c)
    target_link_libraries(fuzz_decode PRIVATE bd_storage bd_common)
    bd_add_script_test(fuzz_decode_replay
                       COMMAND fuzz_decode ${CMAKE_CURRENT_SOURCE_DIR}/corpus/decode
                       TIMEOUT 120)
  endif()
endif()
