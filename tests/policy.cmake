# policy/: token grammar, routes and paths, decisions (tables only, no I/O).
fence_test(test_chars SOURCES policy/test_chars.c LIBS fencepolicy)
fence_test(test_token SOURCES policy/test_token.c LIBS fencepolicy)
fence_test(test_route SOURCES policy/test_route.c LIBS fencepolicy)
fence_test(test_decide SOURCES policy/test_decide.c LIBS fencepolicy)
fence_test(test_target SOURCES policy/test_target.c LIBS fencepolicy)
fence_test(test_uri SOURCES policy/test_uri.c LIBS fencepolicy)
fence_test(test_errfmt SOURCES policy/test_errfmt.c LIBS fencepolicy)
