# policy/: token grammar, routes and paths, decisions, token store (both
# backends) and the store's kill -9 durability test with its helper program.
fence_test(test_token SOURCES unit/test_token.c LIBS fencepolicy)
fence_test(test_route SOURCES unit/test_route.c LIBS fencepolicy)
fence_test(test_decide SOURCES unit/test_decide.c LIBS fencepolicy)
fence_test(test_store SOURCES unit/test_store.c LIBS fencepolicy fencetestsupport TIMEOUT 120)

add_executable(store_crasher policy/store_crasher.c)
target_link_libraries(store_crasher PRIVATE fencepolicy)
fence_target(store_crasher)

fence_test(test_store_crash SOURCES policy/test_store_crash.c LIBS fencepolicy fencetestsupport TIMEOUT 180)
add_dependencies(test_store_crash store_crasher)
target_compile_definitions(test_store_crash PRIVATE
  STORE_CRASHER="$<TARGET_FILE:store_crasher>")
