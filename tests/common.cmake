fence_test(test_duration SOURCES unit/test_duration.c LIBS fencecommon)
# px_log, px_config and the recording upstream (config helper). Sources are
# compiled in directly so that these tests do not wait for fenceproxycore.
fence_test(test_log SOURCES unit/test_log.c ../proxy/px_log.c)
target_include_directories(test_log PRIVATE ${CMAKE_SOURCE_DIR}/proxy)
fence_test(test_config SOURCES unit/test_config.c ../proxy/px_config.c
  ../proxy/px_log.c LIBS fencepolicy fencecommon PkgConfig::INIH)
target_include_directories(test_config PRIVATE ${CMAKE_SOURCE_DIR}/proxy)
fence_test(test_upstream_selftest SOURCES unit/test_upstream_selftest.c
  support/ts_upstream.c LIBS Threads::Threads)
