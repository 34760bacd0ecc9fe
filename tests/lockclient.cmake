# lockclient tests: libfencelock and the fencelock CLI against a real
# redis-server that each test starts on its own free loopback port.
fence_test(test_lock_lib
  SOURCES lockclient/test_lock_lib.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 180)
fence_test(test_lock_cli
  SOURCES lockclient/test_lock_cli.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 180)
# The CLI tests run the real binary from the build tree.
add_dependencies(test_lock_cli fencelock)
fence_test(test_etcd_client
  SOURCES lockclient/test_etcd_client.c
  LIBS fencetestsupport fenceetcd
  TIMEOUT 120)
fence_test(test_lock_etcd
  SOURCES lockclient/test_lock_etcd.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_lock_etcd fencelock)
# Redis killed with SIGKILL and restarted (no persistence; RDB snapshots
# only): tokens keep rising and never repeat.
fence_test(test_lock_restart
  SOURCES lockclient/test_lock_restart.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 60)
# The ZooKeeper backend against a real standalone server (one per binary).
fence_test(test_lock_zk
  SOURCES lockclient/test_lock_zk.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_lock_zk fencelock)
# The ZooKeeper backend against a real 3-server ensemble (leader killed).
fence_test(test_lock_zk3
  SOURCES lockclient/test_lock_zk3.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 150)
add_dependencies(test_lock_zk3 fencelock)
# etcds:// against a real etcd member with TLS and client certificate auth.
fence_test(test_etcd_tls
  SOURCES lockclient/test_etcd_tls.c
  LIBS fencetestsupport fencelock_lib fenceetcd
  TIMEOUT 120)
add_dependencies(test_etcd_tls fenceproxy)
# The Redlock backend against five real redis-servers per test.
fence_test(test_lock_redlock
  SOURCES lockclient/test_lock_redlock.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_lock_redlock fencelock)
# Leader election (elect, leader) on a real redis-server, etcd and ZooKeeper
# (started once for the binary), kills and pauses over rounds.
fence_test(test_lock_elect
  SOURCES lockclient/test_lock_elect.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_lock_elect fencelock)
# Read-write locks on a real redis-server, etcd and ZooKeeper (started once
# for the binary; library and CLI processes).
fence_test(test_lock_rw
  SOURCES lockclient/test_lock_rw.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib pthread
  TIMEOUT 120)
add_dependencies(test_lock_rw fencelock)
# Semaphores (slots NAME#i) on a real redis-server, etcd and ZooKeeper.
fence_test(test_lock_sem
  SOURCES lockclient/test_lock_sem.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_lock_sem fencelock)
# The patterns' token rules through the real fenceproxy (tokens from Redis, etcd
# and ZooKeeper, started once for the binary).
fence_test(test_lock_patterns_proxy
  SOURCES lockclient/test_lock_patterns_proxy.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
# The preempted holders run as processes of their own (fork and exec).
add_executable(fl_holder lockclient/fl_holder.c)
target_link_libraries(fl_holder PRIVATE fencetestsupport fencelock_lib)
target_include_directories(fl_holder PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
fence_target(fl_holder)
add_dependencies(test_lock_patterns_proxy fenceproxy fl_holder)
# The task-processing example (examples/taskqueue) with and without fenceproxy.
fence_test(test_example_taskqueue
  SOURCES lockclient/test_example_taskqueue.c lockclient/lock_fixture.c
  LIBS fencetestsupport fencelock_lib
  TIMEOUT 120)
add_dependencies(test_example_taskqueue fencelock fenceproxy)
target_compile_definitions(test_example_taskqueue PRIVATE
  FENCE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
