# The strict HTTP/1.1 parser (issue 3): tables, fed whole and byte by byte.
fence_test(test_http1 SOURCES unit/test_http1.c LIBS fenceproxycore)
