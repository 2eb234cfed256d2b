# bd_redis tests: real redis-server processes (tests/storage/redis_server.sh) on loopback.
bd_add_unit_test(test_redis SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_redis.c ${CMAKE_CURRENT_LIST_DIR}/test_fetch_spawn.c
                 LIBS bd_storage Threads::Threads TIMEOUT 60 LABELS storage)
