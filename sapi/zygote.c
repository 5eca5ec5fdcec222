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
 * no order for MS milliseconds. The zygote stops reading the channel while it waits: the
 * spare takes the next order (text and descriptors) from fd 3 itself and says so on a pipe
 * of its own, which takes the fork (1-1.5 ms: 540 mappings with Debian's extensions) off
 * the first request's path. (No socket pair between them: the tenant's seccomp filter lets
 * descriptors in on fd 3 only, and keeps fd 3 the channel in every process of the tenant;
 * tenantfpm/sandbox/seccomp.py. So the workers keep it open too: the master heeds the
 * zygote's own pid only, by the kernel's word.)
 * The spare runs no tenant code before its order, is not a worker until then (the master
 * never hears of it; its end is not reported), and dies with the zygote (PR_SET_PDEATHSIG).
 * While it waits it rehearses PHP's request start and end with no script (rehearse.c), so
 * that its first request does not copy the zygote's pages the way a fresh worker's does.
 */
#include "tfpm.h"

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
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 5
_Static_assert(MAX_FDS <= TFPM_MAX_FDS, "tfpm_receive() holds TFPM_MAX_FDS");

static int say(const char *fmt, long a, long b)
{
    char msg[WIRE_MAX_MESSAGE];
    int n = snprintf(msg, sizeof msg, fmt, a, b);
    if (n <= 0 || (size_t)n >= sizeof msg)
        return -1;
    return send(CONTROL_FD, msg, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* The spare, if any: its pid and the read end of its pipe ("t": it took an order). */
static struct {
    pid_t pid;
    int took;
} spare = {0, -1};
static int spare_delay_ms = -1;  /* -s: how long without an order before forking one; -1: none */
static int spares_lost;  /* in a row, ended before their order */
static int spare_refused;  /* the last spare's fork failed: none until the next order */
static int spare_rehearses;  /* runs PHP's request start and end while it waits: rehearse.c */
#define SPARES_LOST_MAX 3  /* then none: a spare that cannot live must not cost a fork a tick */

/* The spare is no longer ours to wait for (it took an order, or it ended). */
static void spare_forget(void)
{
    if (spare.took >= 0)
        close(spare.took);
    spare.pid = 0;
    spare.took = -1;
}

/* Whether the spare took an order: then it is a worker, ours to report, and forgotten
 * here. Does not wait. At the pipe's end without a word its reaping tells the rest. */
static int spare_taken(void)
{
    char c;
    if (spare.took < 0)
        return 0;
    ssize_t n = read(spare.took, &c, 1);
    if (n == 1 && c == WIRE_SPARE_TOOK[0]) {
        spare_forget();
        spares_lost = 0;
        return 1;
    }
    if (n == 0) {
        close(spare.took);
        spare.took = -1;
    }
    return 0;
}

/* End the spare and reap it here, so its end is never reported. */
static void spare_end(void)
{
    kill(spare.pid, SIGKILL);
    while (waitpid(spare.pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* A spare ended before its order (killed, or it could not set itself up). */
static void spare_lost(void)
{
    spare_forget();
    if (++spares_lost == SPARES_LOST_MAX) {
        spare_delay_ms = -1;
        fprintf(stderr, "zygote: %d spare workers in a row ended before their order: "
                        "forking at each order from now on\n", SPARES_LOST_MAX);
    }
}

ssize_t tfpm_receive(int fd, void *buf, size_t size, int *fds, int max_fds, int *nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * TFPM_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, size};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    *nfds = 0;
    if (n < 0)
        return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int got;
                memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
                if (*nfds < max_fds)
                    fds[(*nfds)++] = got;
                else
                    close(got);
            }
        }
    }
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}

/* A fork order on `fd`: its text and the descriptors that came with it; 0 at the end of
 * the channel, -1 on an error (EMSGSIZE: longer than any order). */
static int receive(int fd, char *text, size_t size, int *fds, int *nfds)
{
    ssize_t n = tfpm_receive(fd, text, size - 1, fds, MAX_FDS, nfds);
    if (n > 0)
        text[n] = 0;
    return n > 0 ? 1 : (int)n;
}

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void become_worker(unsigned long max_requests, int *fds, int nfds)
{
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(fds[1], STDOUT_FILENO) < 0 || dup2(fds[2], STDERR_FILENO) < 0)
        _exit(70);
    close(fds[1]);
    close(fds[2]);
    tfpm_host_pid_hello(fds[0]);  /* the answer is read lazily: hostpid.c */
    struct sb_slot *board = nfds > 3 ? sb_attach(fds[3]) : NULL;
    tfpm.access_fd = nfds > 4 ? fds[4] : -1;
    if (nfds > 3)
        close(fds[3]);
    tfpm_worker(board, max_requests);
}

/* Whether `text` and its `nfds` descriptors are an order from our master (else ignored). */
static int parse_order(const char *text, int nfds, unsigned long *max_requests)
{
    return sscanf(text, WIRE_FORK, max_requests) == 1 && nfds >= WIRE_FORK_FDS;
}

/* In a fresh child: what the tenant's code must not hold. */
static void leave_zygote(int sigfd)
{
    close(sigfd);
    /* fd 3, the channel, stays: the seccomp filter pins it (see the top of this file) */
}

/* The spare's life before its order: take it from the channel, say so on `took`, then
 * become the worker it asks for. The channel's end or anything else ends the spare. */
static void spare_wait(int took, pid_t zygote)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != zygote)
        _exit(0);
    if (spare_rehearses)
        tfpm_rehearse();
    char text[128];
    int fds[MAX_FDS], nfds = 0, got;
    unsigned long max_requests;
    do
        got = receive(CONTROL_FD, text, sizeof text, fds, &nfds);
    while (got < 0 && errno == EINTR);
    if (got <= 0 || !parse_order(text, nfds, &max_requests))
        _exit(0);
    if (write(took, WIRE_SPARE_TOOK, 1) != 1)
        _exit(0);  /* the zygote is gone: so is the master's order, with our end */
    close(took);
    prctl(PR_SET_PDEATHSIG, 0);  /* a worker now, as one forked at its order */
    become_worker(max_requests, fds, nfds);
}

static void spare_make(int sigfd)
{
    int took[2];
    if (pipe2(took, O_CLOEXEC | O_NONBLOCK)) {
        spare_refused = 1;
        return;
    }
    pid_t zygote = getpid(), pid = fork();
    if (pid == 0) {
        leave_zygote(sigfd);
        close(took[0]);
        spare_wait(took[1], zygote);
    }
    close(took[1]);
    if (pid < 0) {  /* the pids limit, memory: the fork at the next order will say it; a
                     * retry each look would copy the zygote's memory map for nothing */
        close(took[0]);
        spare_refused = 1;
        return;
    }
    spare.pid = pid;
    spare.took = took[0];
}

/* No more forks: the spare is not wanted. */
static void spare_drop(void)
{
    if (spare.pid <= 0)
        return;
    spare_end();
    spare_forget();
}

static int order(int sigfd, int *children)
{
    char text[128];
    int fds[MAX_FDS], nfds = 0;
    int got = receive(CONTROL_FD, text, sizeof text, fds, &nfds);
    if (got <= 0)  /* a message too long for an order is none: ignored, as before */
        return got < 0 && (errno == EINTR || errno == EMSGSIZE) ? 1 : got;
    unsigned long max_requests;
    if (!parse_order(text, nfds, &max_requests)) {
        close_all(fds, nfds);
        return 1;  /* not an order from our master: ignored */
    }
    pid_t pid = fork();
    if (pid == 0) {
        leave_zygote(sigfd);
        become_worker(max_requests, fds, nfds);
    }
    if (pid > 0)
        (*children)++;
    close_all(fds, nfds);  /* a failed fork: the master sees its worker's channel end */
    return 1;
}

static void reap(int *children)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == spare.pid) {
            if (spare_taken()) {  /* a worker already: its end is reported */
                say(WIRE_EXIT, pid, status);
                continue;
            }
            spare_lost();  /* ended before its order: forked again later */
            continue;
        }
        (*children)--;
        say(WIRE_EXIT, pid, status);
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
    if (argc > 1 && strcmp(argv[1], "-W") == 0)
        return tfpm_warm_main(argc, argv);
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
    spare_rehearses = spare_delay_ms >= 0 && tfpm_rehearsal_safe();

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigaddset(&chld, SIGTERM);
    sigaddset(&chld, SIGQUIT);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0 || say(WIRE_READY, 0, 0))
        return 1;
    int children = 0, open_channel = 1;
    long next_spare = now_ms() + spare_delay_ms;
    while (open_channel || children > 0) {
        /* while a spare waits, the order is its to take */
        struct pollfd p[3] = {{.fd = sigfd, .events = POLLIN},
                              {.fd = open_channel && spare.pid == 0 ? CONTROL_FD : -1,
                               .events = POLLIN},
                              {.fd = spare.took, .events = POLLIN}};
        int timeout = -1;
        if (spare_delay_ms >= 0 && open_channel && spare.pid == 0 && !spare_refused) {
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
            next_spare = now_ms() + spare_delay_ms;
            spare_refused = 0;
        }
        if (p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (order(sigfd, &children) <= 0)
                open_channel = 0;
            next_spare = now_ms() + spare_delay_ms;
            spare_refused = 0;
        }
        if (!open_channel) {
            children += spare_taken();
            spare_drop();
        }
    }
    return 0;
}
