# store/: the token store (both backends) and its kill -9 durability test with
# its helper program.
fence_test(test_store SOURCES store/test_store.c LIBS fencestore fencetestsupport TIMEOUT 120)

add_executable(store_crasher store/store_crasher.c)
target_link_libraries(store_crasher PRIVATE fencestore)
fence_target(store_crasher)

fence_test(test_store_crash SOURCES store/test_store_crash.c LIBS fencestore fencetestsupport TIMEOUT 180)
add_dependencies(test_store_crash store_crasher)
target_compile_definitions(test_store_crash PRIVATE
  STORE_CRASHER="$<TARGET_FILE:store_crasher>")
