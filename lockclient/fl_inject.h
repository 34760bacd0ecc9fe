/* fl_inject: the token injector of `fencelock run NAME --http-proxy`. A small
 * forward HTTP/1.1 proxy on 127.0.0.1 that adds `Fencing-Token: T` (replacing
 * any the client sent) to every request it forwards, for programs that cannot
 * add a header themselves (aws-cli, s3cmd's multipart parts). Plain HTTP only:
 * CONNECT (HTTPS) is refused with 501, since no header can be added inside
 * TLS. Once lost() says the lock is gone, requests are answered 503 and
 * nothing more is sent upstream. One accept thread plus one thread per client
 * connection (at most FL_INJECT_MAX_CONNS), each waiting in poll() in short
 * slices so that every wait is bounded and the stop is prompt. */
#ifndef FL_INJECT_H
#define FL_INJECT_H

#include <stddef.h>
#include <stdint.h>

#define FL_INJECT_MAX_CONNS 64

struct fl_inject;

/* Nonzero once the lock is lost (for good). Called from the injector's
 * threads, so it must be thread-safe (fl_watchdog_lost is). */
typedef int (*fl_inject_lost_fn)(void *arg);

/* Listens on 127.0.0.1:port (0: the kernel picks one) and starts serving.
 * token goes into every forwarded request; name (copied) appears in the
 * injector's own refusals; lost(arg) is asked before each request and
 * while a request body streams. Returns NULL with a message in err on
 * failure. Stop with fl_inject_stop(). */
struct fl_inject *fl_inject_start(int port, uint64_t token, const char *name, fl_inject_lost_fn lost,
                                  void *arg, char *err, size_t errlen);

/* The port it listens on. */
int fl_inject_port(const struct fl_inject *inj);

/* Closes the listener and every connection (a request under way is cut),
 * joins all threads, frees, NULLs *inj. Returns within about a second.
 * Accepts NULL. */
void fl_inject_stop(struct fl_inject **inj);

#endif
