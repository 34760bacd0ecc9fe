# Fencing (issue 4) through the real proxy binary.
fence_test(test_fence SOURCES fence/test_fence.c LIBS fencetestsupport TIMEOUT 300)
fence_test(test_crash SOURCES fence/test_crash.c LIBS fencetestsupport Threads::Threads TIMEOUT 300)
fence_test(test_admin SOURCES fence/test_admin.c LIBS fencetestsupport TIMEOUT 120)
fence_test(test_reload SOURCES fence/test_reload.c LIBS fencetestsupport Threads::Threads
  TIMEOUT 120)
fence_test(test_socket_activation SOURCES fence/test_socket_activation.c
  LIBS fencetestsupport Threads::Threads TIMEOUT 120)
fence_test(test_status_page SOURCES fence/test_status_page.c LIBS fencetestsupport TIMEOUT 180)
fence_test(test_preempt SOURCES fence/test_preempt.c LIBS fencetestsupport TIMEOUT 120)
fence_test(test_destination SOURCES fence/test_destination.c LIBS fencetestsupport Threads::Threads
  TIMEOUT 120)
# The audit trail on a full tmpfs and with its directory removed (S7; root).
fence_test(test_audit_faults SOURCES fence/test_audit_faults.c LIBS fencetestsupport TIMEOUT 180)
# The admin listener and descriptor limits under abuse (issue 19).
fence_test(test_admin_limits SOURCES fence/test_admin_limits.c LIBS fencetestsupport TIMEOUT 180)
# Three proxies on one etcd token store (issue 14).
fence_test(test_etcd_proxies SOURCES fence/test_etcd_proxies.c LIBS fencetestsupport TIMEOUT 120)
foreach(t test_fence test_crash test_admin test_audit_faults test_admin_limits test_destination
    test_preempt test_reload test_socket_activation test_status_page test_etcd_proxies)
  add_dependencies(${t} fenceproxy)
endforeach()
# The fencing suites once more over TLS listeners (see tests/proxy.cmake).
foreach(t test_fence test_preempt test_admin)
  fence_test_tls(${t})
endforeach()
