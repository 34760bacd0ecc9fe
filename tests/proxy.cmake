# proxy/ unit tests against the proxy's modules: the strict HTTP/1.1 parser
# (tables, fed whole and byte by byte), config, logs, log writer, metrics,
# audit log, the fencing gate on its own, head rewriting and the connection
# state table.
fence_test(test_http1 SOURCES proxy/test_http1.c LIBS fenceproxycore)
fence_test(test_config SOURCES proxy/test_config.c LIBS fenceproxycore)
fence_test(test_log SOURCES proxy/test_log.c LIBS fenceproxycore)
fence_test(test_logw SOURCES proxy/test_logw.c LIBS fenceproxycore fencetestsupport)
fence_test(test_stats SOURCES proxy/test_stats.c LIBS fenceproxycore)
fence_test(test_audit SOURCES proxy/test_audit.c LIBS fenceproxycore fencetestsupport)
fence_test(test_fence_gate SOURCES proxy/test_fence_gate.c LIBS fenceproxycore)
fence_test(test_rewrite SOURCES proxy/test_rewrite.c LIBS fenceproxycore)
fence_test(test_conn_state SOURCES proxy/test_conn_state.c LIBS fenceproxycore)

# Proxy integration tests: raw bytes over sockets against the real fenceproxy
# binary of this build tree (found through FENCE_BUILD_DIR), with a recording
# upstream in the test process. Each file shares the small pxt fixture.
if(TARGET fenceproxy AND TARGET fencetestsupport)
  foreach(t framing headers keepalive streaming expect timeouts shutdown abort limits redirect
      fidelity tls)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/proxy/test_${t}.c)
      fence_test(test_proxy_${t} SOURCES proxy/test_${t}.c proxy/pxt.c
        LIBS fencetestsupport Threads::Threads TIMEOUT 120)
      add_dependencies(test_proxy_${t} fenceproxy)
    endif()
  endforeach()
endif()

# The same proxy suites once more over TLS (FENCE_TEST_TLS=1: the ts_proxy
# fixture gives the proxy a [tls] section and ts_connect() speaks TLS).
# timeouts expects a failed handshake where plaintext gets its 503 (over
# max_connections); limits holds its memory bounds over TLS too.
foreach(t framing headers keepalive streaming expect abort fidelity redirect timeouts limits)
  fence_test_tls(test_proxy_${t})
endforeach()
