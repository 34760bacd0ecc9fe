# Audit log, log writer and metrics. The proxy's modules are compiled straight
# into these tests: they need neither libevent nor the rest of the proxy.
set(AUD_PX ${CMAKE_SOURCE_DIR}/proxy)

fence_test(test_logw SOURCES unit/test_logw.c ${AUD_PX}/px_logw.c
  LIBS Threads::Threads)
target_include_directories(test_logw PRIVATE ${AUD_PX})

fence_test(test_stats SOURCES unit/test_stats.c ${AUD_PX}/px_stats.c LIBS m)
target_include_directories(test_stats PRIVATE ${AUD_PX})

