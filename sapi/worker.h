/* One worker (worker.c). */
#ifndef TFPM_WORKER_H
#define TFPM_WORKER_H

/* A child just forked (at an order, or a spare that took one): its descriptors from the
 * order (hello channel, stdout, stderr[, scoreboard page[, access.log]]) put in place,
 * then it serves. */
void tfpm_become_worker(unsigned long max_requests, int *fds, int nfds)
    __attribute__((noreturn));

#endif
