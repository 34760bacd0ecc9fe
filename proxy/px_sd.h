/* px_sd: systemd socket activation, parsed by hand (the protocol is two
 * environment variables): the listening sockets a service manager passed
 * (LISTEN_PID is this process, LISTEN_FDS = n, descriptors 3 .. 3+n-1).
 * With them, `systemctl restart` queues connections in the kernel while the
 * proxy is down instead of refusing them. Start-up only. */
#ifndef PX_SD_H
#define PX_SD_H

#include <stddef.h>

/* The first passed descriptor if it is a listening stream socket (set
 * close-on-exec), -1 when none was passed; -2 with a message in err when
 * one was passed but is not usable. Unsets LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES, so children do not take them for their own. */
int px_sd_listen_fd(char *err, size_t errlen);

#endif
