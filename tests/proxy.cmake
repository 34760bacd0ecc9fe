# Proxy integration tests: raw bytes over sockets against the real fenceproxy
# binary of this build tree (found through FENCE_BUILD_DIR), with a recording
# upstream in the test process. Each file shares the small pxt fixture.
if(TARGET fenceproxy AND TARGET fencetestsupport)
  foreach(t framing headers keepalive streaming expect timeouts shutdown abort limits redirect)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/proxy/test_${t}.c)
      fence_test(test_proxy_${t} SOURCES proxy/test_${t}.c proxy/pxt.c
        LIBS fencetestsupport TIMEOUT 120)
      add_dependencies(test_proxy_${t} fenceproxy)
    endif()
  endforeach()
endif()
