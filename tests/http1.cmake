# HTTP/1.1 parser tests. px_http1.c is compiled straight into the test so it
# does not depend on the rest of fenceproxycore building.
fence_test(test_http1 SOURCES unit/test_http1.c ${CMAKE_SOURCE_DIR}/proxy/px_http1.c)
target_include_directories(test_http1 PRIVATE ${CMAKE_SOURCE_DIR}/proxy)
