# End-to-end tests (issue 7): real redis-server, nginx WebDAV and fenceproxy,
# with `fencelock run` around curl as the clients. They run the fenceproxy and
# fencelock binaries of this build tree.
if(TARGET fencetestsupport AND TARGET fenceproxy AND TARGET fencelock)
  fence_test(test_paused_holder
    SOURCES e2e/test_paused_holder.c e2e/e2e_fixture.c
    LIBS fencetestsupport
    TIMEOUT 120)
  fence_test(test_contention
    SOURCES e2e/test_contention.c e2e/e2e_fixture.c
    LIBS fencetestsupport
    TIMEOUT 180)
  add_dependencies(test_paused_holder fenceproxy fencelock)
  add_dependencies(test_contention fenceproxy fencelock)
endif()
