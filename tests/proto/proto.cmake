# Wire formats (proto/): unit tests per module and the manifest CLI test.
bd_add_unit_test(test_bd_manifest SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_bd_manifest.c LIBS bd_proto)
bd_add_unit_test(test_bd_proto_formats SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_bd_proto_formats.c
                 LIBS bd_proto)
bd_add_script_test(test_cli_manifest
                   COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_cli_manifest.sh
                           ${CMAKE_CURRENT_SOURCE_DIR}/data
                   TIMEOUT 120)
