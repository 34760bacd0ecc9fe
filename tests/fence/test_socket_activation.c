/* Restarts without refusing a connection: the test plays the service
 * manager, holding the listening socket and passing it to fenceproxy the way
 * systemd does (descriptor 3, LISTEN_FDS=1, LISTEN_PID the proxy's own pid).
 * A client loop runs while the proxy is stopped (SIGTERM, graceful) and a
 * new one started on the same socket: every connection is answered, none is
 * refused, both processes served. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ts_proc.h"
#include "ts_proxy.h"
#include "ts_upstream.h"

static struct ts_upstream *up;
static char *dir;
static char conf[1024], logpath[1100];
static int lfd = -1, port;
static pid_t pids[2];

/* Starts fenceproxy with the socket as descriptor 3 and the variables set
 * in the child, as systemd does. */
static pid_t start_activated(int n)
{
    const char *bin = ts_build_path("proxy/fenceproxy");
    pid_t pid;

    cr_assert(access(bin, X_OK) == 0, "no fenceproxy at %s", bin);
    snprintf(logpath, sizeof(logpath), "%s/proxy%d.log", dir, n);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char pidbuf[32];
        int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0 || dup2(lfd, 3) < 0)
            _exit(127);
        snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
        setenv("LISTEN_PID", pidbuf, 1);
        setenv("LISTEN_FDS", "1", 1);
        execl(bin, bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void setup(void)
{
    FILE *f;

    signal(SIGPIPE, SIG_IGN);
    up = ts_upstream_start();
    cr_assert_not_null(up);
    dir = ts_tempdir("sdact");
    cr_assert_not_null(dir);
    lfd = ts_listen(&port);
    cr_assert_geq(lfd, 0);
    cr_assert_eq(listen(lfd, 4096), 0); /* the manager's backlog */
    snprintf(conf, sizeof(conf), "%s/fenceproxy.conf", dir);
    f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "[proxy]\nlisten = 127.0.0.1:%d\nupstream = http://127.0.0.1:%d\nadmin_listen = off\n"
               "shutdown_grace = 5s\n[store]\nbackend = memory\n",
            port, ts_upstream_port(up));
    fclose(f);
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
        }
    if (lfd >= 0)
        close(lfd);
    ts_upstream_stop(&up);
    if (dir != NULL)
        ts_rmrf(dir);
}

TestSuite(socket_activation, .init = setup, .fini = teardown, .timeout = 60);

static atomic_int stop, ok, failed;

static void *client_loop(void *arg)
{
    const char get[] = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    while (!atomic_load(&stop)) {
        struct ts_resp r;
        if (ts_http_raw(port, get, sizeof(get) - 1, &r, 10000) == 200)
            atomic_fetch_add(&ok, 1);
        else
            atomic_fetch_add(&failed, 1);
        ts_resp_free(&r);
    }
    return NULL;
}

Test(socket_activation, a_restart_refuses_no_connection)
{
    pthread_t th[2];
    int st, before;
    char *log;

    pids[0] = start_activated(0);
    for (int i = 0; i < 100 && ts_upstream_count(up) == 0; i++) {
        struct ts_resp r;
        ts_http_raw(port, "GET /w HTTP/1.1\r\nHost: t\r\n\r\n", 28, &r, 1000);
        ts_resp_free(&r);
        ts_sleep_ms(20);
    }
    cr_assert_gt(ts_upstream_count(up), 0, "the first proxy does not answer");
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, client_loop, NULL), 0);
    ts_sleep_ms(500);
    before = atomic_load(&ok);
    /* the restart: stop (graceful), wait for the exit, start again */
    cr_assert_eq(kill(pids[0], SIGTERM), 0);
    cr_assert_eq(waitpid(pids[0], &st, 0), pids[0]);
    pids[0] = 0;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the first proxy did not stop cleanly");
    ts_sleep_ms(300); /* down: connections wait in the backlog */
    pids[1] = start_activated(1);
    ts_sleep_ms(1000);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_log_info("%d requests answered, %d failed, across the restart", atomic_load(&ok),
                atomic_load(&failed));
    cr_assert_eq(atomic_load(&failed), 0, "%d connections refused or unanswered",
                 atomic_load(&failed));
    cr_assert_gt(atomic_load(&ok), before + 10, "the second proxy served nothing");
    log = ts_read_file(logpath, NULL);
    cr_assert(log != NULL && strstr(log, "socket activation") != NULL, "log: %s", log);
    free(log);
}
