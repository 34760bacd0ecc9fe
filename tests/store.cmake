# store/: the token store (both backends) and its kill -9 durability test with
# its helper program.
fence_test(test_store SOURCES store/test_store.c LIBS fencestore fencetestsupport PkgConfig::LMDB TIMEOUT 120)

add_executable(store_crasher store/store_crasher.c)
target_link_libraries(store_crasher PRIVATE fencestore)
fence_target(store_crasher)

fence_test(test_store_crash SOURCES store/test_store_crash.c LIBS fencestore fencetestsupport TIMEOUT 180)
add_dependencies(test_store_crash store_crasher)
target_compile_definitions(test_store_crash PRIVATE
  STORE_CRASHER="$<TARGET_FILE:store_crasher>")

# Store faults through the real binary: corruption cases, the operator floor,
# a full max_size, a full tmpfs (needs root, as CI runs), and I/O errors
# injected by an LD_PRELOAD shim built here.
add_library(fence_fault_shim SHARED store/fault_shim.c)
target_compile_options(fence_fault_shim PRIVATE -Wall -Wextra -Werror)
target_compile_definitions(fence_fault_shim PRIVATE _GNU_SOURCE)
target_link_libraries(fence_fault_shim PRIVATE dl)
set_target_properties(fence_fault_shim PROPERTIES
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests OUTPUT_NAME fence_fault_shim)
fence_test(test_store_faults SOURCES store/test_store_faults.c LIBS fencetestsupport TIMEOUT 180)
add_dependencies(test_store_faults fence_fault_shim fenceproxy)

# The etcd token store against real etcd members (one, and three with the
# leader killed under load).
fence_test(test_store_etcd SOURCES store/test_store_etcd.c LIBS fencestore fencetestsupport TIMEOUT 180)

# The listing (st_store_list) on the memory, file and etcd backends.
fence_test(test_store_list SOURCES store/test_store_list.c LIBS fencestore fencetestsupport TIMEOUT 180)
