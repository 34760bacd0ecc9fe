# Audit log, log writer and metrics (issue 5), against the proxy's modules.
fence_test(test_logw SOURCES unit/test_logw.c LIBS fenceproxycore fencetestsupport)
fence_test(test_stats SOURCES unit/test_stats.c LIBS fenceproxycore)
fence_test(test_audit SOURCES unit/test_audit.c LIBS fenceproxycore fencetestsupport)
