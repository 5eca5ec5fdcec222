/* The spare worker: see spare.h.
 *
 * The zygote stops reading the channel while a spare waits: the spare takes the next
 * order (text and descriptors) from fd 3 itself and says so on a pipe of its own, which
 * takes the fork (1-1.5 ms with Debian's extensions) off the first request's path. No
 * socket pair between them: the tenant's seccomp filter passes descriptors on fd 3 only.
 * The spare runs no tenant code before its order, is not a worker until then (the master
 * never hears of it), and dies with the zygote (PR_SET_PDEATHSIG). While it waits it
 * rehearses PHP's request start and end with no script (rehearse.c).
 */
#include "spare.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "rehearse.h"
#include "worker.h"

#define SPARES_LOST_MAX 3  /* then none: a spare that cannot live must not cost a fork a tick */

static struct {
    pid_t pid;
    int took;          /* the read end of its pipe */
    int delay_ms;      /* -1: none */
    int lost;          /* in a row, ended before their order */
    int refused;       /* the last fork failed */
    int rehearses;
} spare = {0, -1, -1, 0, 0, 0};

void spare_setup(int delay_ms)
{
    spare.delay_ms = delay_ms;
    spare.rehearses = delay_ms >= 0 && tfpm_rehearsal_safe();
}

int spare_delay(void)
{
    return spare.delay_ms;
}

int spare_waiting(void)
{
    return spare.pid != 0;
}

int spare_refused(void)
{
    return spare.refused;
}

void spare_retry(void)
{
    spare.refused = 0;
}

int spare_pipe(void)
{
    return spare.took;
}

/* The spare is no longer ours to wait for (it took an order, or it ended). */
static void forget(void)
{
    if (spare.took >= 0)
        close(spare.took);
    spare.pid = 0;
    spare.took = -1;
}

int spare_taken(void)
{
    char c;
    if (spare.took < 0)
        return 0;
    ssize_t n = read(spare.took, &c, 1);
    if (n == 1 && c == WIRE_SPARE_TOOK[0]) {
        forget();
        spare.lost = 0;
        return 1;
    }
    if (n == 0) {  /* the pipe's end without a word: its reaping tells the rest */
        close(spare.took);
        spare.took = -1;
    }
    return 0;
}

int spare_reaped(pid_t pid)
{
    if (pid != spare.pid)
        return -1;
    if (spare_taken())
        return 1;
    forget();  /* ended before its order: forked again later */
    if (++spare.lost == SPARES_LOST_MAX) {
        spare.delay_ms = -1;
        fprintf(stderr, "zygote: %d spare workers in a row ended before their order: "
                        "forking at each order from now on\n", SPARES_LOST_MAX);
    }
    return 0;
}

/* The spare's life before its order: take it from the channel, say so on `took`, then
 * become the worker it asks for. The channel's end or anything else ends the spare. */
static void wait_for_order(int took, pid_t zygote)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != zygote)
        _exit(0);
    if (spare.rehearses)
        tfpm_rehearse();
    int fds[ORDER_FDS], nfds = 0, got;
    unsigned long max_requests;
    do
        got = channel_order(&max_requests, fds, &nfds);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        _exit(0);
    if (write(took, WIRE_SPARE_TOOK, 1) != 1)
        _exit(0);  /* the zygote is gone: so is the master's order, with our end */
    close(took);
    prctl(PR_SET_PDEATHSIG, 0);  /* a worker now, as one forked at its order */
    tfpm_become_worker(max_requests, fds, nfds);
}

void spare_make(int sigfd)
{
    int took[2];
    if (pipe2(took, O_CLOEXEC | O_NONBLOCK)) {
        spare.refused = 1;
        return;
    }
    pid_t zygote = getpid(), pid = fork();
    if (pid == 0) {
        close(sigfd);  /* nothing of the zygote's signal handling stays */
        close(took[0]);
        wait_for_order(took[1], zygote);
    }
    close(took[1]);
    if (pid < 0) {  /* the pids limit, memory: the fork at the next order will say it; a
                     * retry each look would copy the zygote's memory map for nothing */
        close(took[0]);
        spare.refused = 1;
        return;
    }
    spare.pid = pid;
    spare.took = took[0];
}

void spare_drop(void)
{
    if (spare.pid <= 0)
        return;
    kill(spare.pid, SIGKILL);
    while (waitpid(spare.pid, NULL, 0) < 0 && errno == EINTR)
        ;
    forget();
}
