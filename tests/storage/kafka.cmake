# bd_kafka tests: pause state across cooperative rebalances, the producer's partition
# answers and the auto-store consumer, on librdkafka's in-process mock cluster.
bd_add_unit_test(test_kafka SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_kafka.c
                 LIBS bd_storage TIMEOUT 240 LABELS storage)
