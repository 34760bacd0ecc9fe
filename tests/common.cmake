# common/ (durations, the hash map) and the recording upstream's self-test (support/).
fence_test(test_duration SOURCES common/test_duration.c LIBS fencecommon)
fence_test(test_hmap SOURCES common/test_hmap.c LIBS fencecommon)
fence_test(test_upstream_selftest SOURCES support/test_upstream_selftest.c LIBS fencetestsupport)
