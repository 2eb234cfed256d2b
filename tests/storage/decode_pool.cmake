# storage/bd_decode_pool: the decode thread pool, and the fetch/decode benchmark.
bd_add_unit_test(test_decode_pool SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_decode_pool.c
                 LIBS bd_storage Threads::Threads TIMEOUT 120 LABELS storage)

# Benchmark program (prints a table; tests/bench/fetch_decode.sh runs it next to tjbench).
# Registered only as a smoke run with tiny counts, so that it keeps building and working.
add_executable(bench_fetch_decode ${CMAKE_SOURCE_DIR}/tests/bench/fetch_decode.c)
target_link_libraries(bench_fetch_decode PRIVATE bd_storage Threads::Threads m)
bd_add_script_test(bench_fetch_decode_smoke
                   COMMAND env BENCH=$<TARGET_FILE:bench_fetch_decode> BD_BENCH_SMOKE=1
                           ${CMAKE_SOURCE_DIR}/tests/bench/fetch_decode.sh
                   TIMEOUT 120 LABELS "storage;bench")
