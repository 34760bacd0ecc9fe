fence_test(test_duration SOURCES unit/test_duration.c LIBS fencecommon)
