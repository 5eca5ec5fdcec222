/* The tenant's zygote: PHP started once, workers forked on the master's word.
 *
 * It runs inside the tenant's sandbox (exec'd there by the master as the tenant's user),
 * does PHP's module startup (opcache's shared segment is created here, so the tenant's
 * workers share one opcode cache and no other tenant ever sees it), then serves its
 * control channel on fd 3, a SOCK_SEQPACKET socket to the master:
 *
 *   zygote -> master  "ready"                      module startup done
 *                     "exit <pid> <wait status>"   a worker ended (pid in the tenant's
 *                                                  PID namespace)
 *   master -> zygote  "fork <max_requests>"        + SCM_RIGHTS: the worker's own channel,
 *                                                  stdout, stderr, and optionally its
 *                                                  scoreboard page and the access log
 *
 * and on the worker's own channel (a socket pair per worker, made by the master):
 *
 *   worker -> master  "hello <pid>"                the kernel attaches the sender's
 *                                                  credentials: the master learns the
 *                                                  worker's host pid from the kernel
 *   master -> worker  "pid <host pid>"             for logs that name it (the variable
 *                                                  TENANTFPM_WORKER_PID, as exec'd workers)
 *
 * The master keeps every decision (how many, when, which to retire); the zygote forks and
 * reports, nothing more. It holds no tenant request state: only the master's messages.
 * When the channel closes it forks no more and exits once its last worker has.
 *
 * With -s MS (the master asks for it where a fork answers a waiting request: ondemand and
 * dynamic pools) the zygote keeps one spare: a child forked ahead, once the zygote has had
 * no order for MS milliseconds, which takes the next order itself (spare.c). The zygote
 * stops reading the channel while it waits. Workers keep fd 3 open: the tenant's seccomp
 * filter passes descriptors on fd 3 only and keeps fd 3 the channel in every process of
 * the tenant (tenantfpm/sandbox/seccomp.py); the master heeds the zygote's own pid only,
 * by the kernel's word. The messages' forms: tenantfpm/wire/zygote.py (channel.c).
 */
#include "zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "channel.h"
#include "sapi.h"
#include "spare.h"
#include "tfpm.h"
#include "worker.h"

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One order from the channel: a worker forked for it. 1 on, 0 at the channel's end. */
static int order(int sigfd, int *children)
{
    int fds[ORDER_FDS], nfds = 0;
    unsigned long max_requests;
    int got = channel_order(&max_requests, fds, &nfds);
    if (got <= 0)  /* a message too long for an order, or not one, is ignored */
        return got < 0 && (errno == EINTR || errno == EMSGSIZE || errno == EBADMSG) ? 1 : got;
    pid_t pid = fork();
    if (pid == 0) {
        close(sigfd);  /* nothing of the zygote's signal handling stays; fd 3 does: the
                        * seccomp filter pins it (see the top of this file) */
        tfpm_become_worker(max_requests, fds, nfds);
    }
    if (pid > 0)
        (*children)++;
    for (int i = 0; i < nfds; i++)  /* a failed fork: the master sees its worker's channel end */
        close(fds[i]);
    return 1;
}

static void reap(int *children)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int was_spare = spare_reaped(pid);
        if (was_spare == 0)
            continue;  /* ended before its order: never a worker, never reported */
        if (was_spare < 0)
            (*children)--;
        channel_say(WIRE_EXIT, pid, status);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: tenantfpm-php -c PHP_INI [-a ADMIN_KEY]... [-t HEAD_TIMEOUT_MS] "
                    "[-x EXTENSIONS] [-s SPARE_DELAY_MS] [-l ACCESS_FORMAT -n POOL -m MASTER_PID]\n(started by the tenantfpm master with its channel on "
                    "fd 3 and the tenant's socket on fd 0)\n");
    exit(64);
}

int tfpm_main(int argc, char **argv)
{
    static const char *keys[256];
    int opt;
    tfpm.head_timeout_ms = 30000;
    tfpm.limit_extensions = ".php .phar";
    tfpm.admin_keys = keys;
    tfpm.access_fd = -1;
    tfpm.pool = "";
    const char *access_format = NULL;
    int spare_delay_ms = -1;
    while ((opt = getopt(argc, argv, "c:a:t:x:s:l:n:m:")) != -1) {
        switch (opt) {
        case 'c': tfpm.ini_path = optarg; break;
        case 'a':
            if (tfpm.n_admin_keys < 256)
                keys[tfpm.n_admin_keys++] = optarg;
            break;
        case 't': tfpm.head_timeout_ms = atoi(optarg); break;
        case 'x': tfpm.limit_extensions = optarg; break;
        case 's': spare_delay_ms = atoi(optarg); break;
        case 'l': access_format = optarg; break;
        case 'n': tfpm.pool = optarg; break;
        case 'm': tfpm.master_pid = atol(optarg); break;
        default: usage();
        }
    }
    if (!tfpm.ini_path || fcntl(CONTROL_FD, F_GETFD) < 0)
        usage();
    /* No other process of the tenant may take this zygote's descriptors (its channel to
     * the master) or its workers' (the web server's connections, fork order pipes), nor
     * write their memory: pidfd_getfd and /proc/PID/mem want a dumpable target, and the
     * tenant's seccomp filter refuses making it dumpable again. The workers inherit it.
     * A tenant given core dumps (RLIMIT_CORE above 0, `limits.core_dumps`) stays
     * dumpable: no core is written otherwise (docs/security.md). */
    struct rlimit core;
    if (getrlimit(RLIMIT_CORE, &core) || (core.rlim_cur == 0 && prctl(PR_SET_DUMPABLE, 0))) {
        perror("tenantfpm-php: dumpable");
        return 1;
    }
    char err[128];
    if (access_format && access_compile(access_format, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    if (tfpm_php_startup()) {
        fprintf(stderr, "PHP startup failed\n");
        return 1;
    }
    tfpm_lock_admin_keys();
    spare_setup(spare_delay_ms);

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigaddset(&chld, SIGTERM);
    sigaddset(&chld, SIGQUIT);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0 || channel_say(WIRE_READY, 0, 0))
        return 1;
    int children = 0, open_channel = 1;
    long next_spare = now_ms() + spare_delay();
    while (open_channel || children > 0) {
        /* while a spare waits, the order is its to take */
        struct pollfd p[3] = {{.fd = sigfd, .events = POLLIN},
                              {.fd = open_channel && !spare_waiting() ? CONTROL_FD : -1,
                               .events = POLLIN},
                              {.fd = spare_pipe(), .events = POLLIN}};
        int timeout = -1;
        if (spare_delay() >= 0 && open_channel && !spare_waiting() && !spare_refused()) {
            long wait = next_spare - now_ms();
            timeout = wait > 0 ? (int)wait : 0;
        }
        int ready = poll(p, 3, timeout);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (ready == 0) {  /* no order for a while: fork the next one ahead */
            spare_make(sigfd);
            continue;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGQUIT)
                    open_channel = 0;  /* stop forking; the master signals the workers */
            }
            reap(&children);
        }
        if (p[2].revents && spare_taken()) {
            children++;
            next_spare = now_ms() + spare_delay();
            spare_retry();
        }
        if (p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (order(sigfd, &children) <= 0)
                open_channel = 0;
            next_spare = now_ms() + spare_delay();
            spare_retry();
        }
        if (!open_channel) {
            children += spare_taken();
            spare_drop();
        }
    }
    return 0;
}
