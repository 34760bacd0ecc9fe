# Audit log, log writer and metrics. The proxy's modules are compiled straight
# into these tests: they need neither libevent nor the rest of the proxy.
set(AUD_PX ${CMAKE_SOURCE_DIR}/proxy)

fence_test(test_logw SOURCES unit/test_logw.c ${AUD_PX}/px_logw.c
  LIBS Threads::Threads)
target_include_directories(test_logw PRIVATE ${AUD_PX})

fence_test(test_stats SOURCES unit/test_stats.c ${AUD_PX}/px_stats.c LIBS m)
target_include_directories(test_stats PRIVATE ${AUD_PX})

# The audit record escapes strings with pol_json_append_escaped() (policy/).
if(TARGET fencepolicy AND EXISTS ${CMAKE_SOURCE_DIR}/policy/pol_decide.c)
  fence_test(test_audit SOURCES unit/test_audit.c ${AUD_PX}/px_audit.c
    ${AUD_PX}/px_auditcli.c ${AUD_PX}/px_logw.c
    LIBS fencepolicy OpenSSL::Crypto Threads::Threads)
  target_include_directories(test_audit PRIVATE ${AUD_PX})
endif()
