# Fuzz targets for the wire formats (proto/). Pattern for other fragments:
#  - BATCHDET_FUZZ_ENGINE=libfuzzer (set by tests/fuzz/run_fuzz.sh with clang): build
#    fuzz_<name> as a libFuzzer binary; run_fuzz.sh builds and runs it.
#  - otherwise (normal gcc build): build the same source with replay_main.c and
#    register a ctest that replays tests/fuzz/corpus/<name>/.
set(BATCHDET_FUZZ_ENGINE "" CACHE STRING "libfuzzer: build tests/fuzz targets for libFuzzer (clang)")
if(BATCHDET_FUZZ_ENGINE STREQUAL "libfuzzer")
  add_executable(fuzz_manifest ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_manifest.c)
  target_compile_options(fuzz_manifest PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_manifest PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_manifest PRIVATE bd_proto bd_common)
else()
  add_executable(fuzz_manifest ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_manifest.c
                               ${CMAKE_CURRENT_SOURCE_DIR}/replay_main.c)
  target_link_libraries(fuzz_manifest PRIVATE bd_proto bd_common)
  bd_add_script_test(fuzz_manifest_replay
                     COMMAND fuzz_manifest ${CMAKE_CURRENT_SOURCE_DIR}/corpus/manifest
                     TIMEOUT 120)
endif()
