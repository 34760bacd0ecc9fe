/* fault_shim: an LD_PRELOAD library for the store's fault tests. While the
 * file named by FENCE_FAULT_FLAG exists, the calls named in FENCE_FAULT_OPS
 * ("write", "fsync" or "write,fsync") fail with EIO when their descriptor is
 * a file called data.mdb (LMDB's data file); everything else passes through
 * to the next definition (libc). The flag is a file so that a test turns the
 * fault on and off in a running process. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

int fsync(int fd);
int fdatasync(int fd);
ssize_t write(int fd, const void *buf, size_t n);
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t writev(int fd, const struct iovec *iov, int cnt);
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off);

/* Whether op should fail on fd now. */
static int inject(const char *op, int fd)
{
    const char *flag = getenv("FENCE_FAULT_FLAG"), *ops = getenv("FENCE_FAULT_OPS");
    char link[64], target[PATH_MAX];
    ssize_t n;

    if (flag == NULL || ops == NULL || strstr(ops, op) == NULL || access(flag, F_OK) != 0)
        return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    n = (ssize_t)strlen(target);
    return n >= 9 && strcmp(target + n - 9, "/data.mdb") == 0;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int fsync(int fd)
{
    if (inject("fsync", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(fsync)(fd);
}

int fdatasync(int fd)
{
    if (inject("fsync", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(fdatasync)(fd);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (inject("write", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (inject("write", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    if (inject("write", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (inject("write", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(writev)(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (inject("write", fd)) {
        errno = EIO;
        return -1;
    }
    return NEXT(pwritev)(fd, iov, cnt, off);
}
