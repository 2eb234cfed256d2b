# bd_fetch / bd_s3 tests: local fault-injection HTTP server (python3) and s3rver (node).
bd_add_unit_test(test_fetch SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fetch.c ${CMAKE_CURRENT_LIST_DIR}/test_fetch_spawn.c
                 LIBS bd_storage Threads::Threads TIMEOUT 60 LABELS storage)
bd_add_unit_test(test_fetch_s3 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fetch_s3.c ${CMAKE_CURRENT_LIST_DIR}/test_fetch_spawn.c
                 LIBS bd_storage Threads::Threads TIMEOUT 60 LABELS storage)
