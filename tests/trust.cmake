# Trust (issue 16): tokens verified with real lock backends (redis-server,
# etcd), the operator's reset through `fenceproxy tokens`, the authenticated
# admin API. Runs the fenceproxy binary of this build tree.
if(TARGET fenceproxy AND TARGET fencetestsupport)
  fence_test(test_verify SOURCES trust/test_verify.c
    LIBS fencetestsupport fencelock_lib TIMEOUT 240)
  add_dependencies(test_verify fenceproxy)
endif()
