# Storage tests (issue 15): real third-party clients (litmus, rclone,
# aws-cli, boto3) against real stores (Apache mod_dav, s3rver checking SigV4)
# directly and through fenceproxy, with `fencelock run --http-proxy` for the
# clients that cannot add a header. They run the fenceproxy and fencelock
# binaries of this build tree; a missing client or server fails the test
# with the package to install.
if(TARGET fencetestsupport AND TARGET fenceproxy AND TARGET fencelock)
  foreach(t test_litmus test_rclone test_s3)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/storage/${t}.c)
      fence_test(${t}
        SOURCES storage/${t}.c storage/sf_fixture.c
        LIBS fencetestsupport
        TIMEOUT 180)
      add_dependencies(${t} fenceproxy fencelock)
    endif()
  endforeach()
endif()
