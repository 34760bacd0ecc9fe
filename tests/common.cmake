# Durations (common/), logging and config (proxy/), and the recording
# upstream's self-test.
fence_test(test_duration SOURCES unit/test_duration.c LIBS fencecommon)
fence_test(test_log SOURCES unit/test_log.c LIBS fenceproxycore)
fence_test(test_config SOURCES unit/test_config.c LIBS fenceproxycore)
fence_test(test_upstream_selftest SOURCES unit/test_upstream_selftest.c LIBS fencetestsupport)
