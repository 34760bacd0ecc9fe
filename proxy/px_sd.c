/* px_sd: see px_sd.h. */
#include "px_sd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3

/* A decimal number of the whole string, or -1. */
static long number(const char *s)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    return errno != 0 || *end != '\0' || v < 0 ? -1 : v;
}

int px_sd_listen_fd(char *err, size_t errlen)
{
    long pid = number(getenv("LISTEN_PID"));
    long n = number(getenv("LISTEN_FDS"));
    int fd = SD_LISTEN_FDS_START, type = 0, listening = 0, rc = -1;
    socklen_t len = sizeof(type);

    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (pid != (long)getpid() || n < 1)
        goto out; /* not for us */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
        snprintf(err, errlen, "socket activation: descriptor %d is not a stream socket", fd);
        rc = -2;
        goto out;
    }
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        snprintf(err, errlen, "socket activation: descriptor %d is not listening", fd);
        rc = -2;
        goto out;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* The event loop accepts until EAGAIN: the socket must not block. */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "socket activation: descriptor %d: %s", fd, strerror(errno));
        rc = -2;
        goto out;
    }
    rc = fd;
out:
    return rc;
}
