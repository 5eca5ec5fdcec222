/* The spare worker (spare.c): a child forked ahead, which takes the next fork order from
 * the channel itself. pyworker/zygote.py's Spare is its twin. */
#ifndef TFPM_SPARE_H
#define TFPM_SPARE_H

#include <sys/types.h>

/* -s DELAY_MS: fork one once the zygote has had no order for that long; -1: never. Called
 * after PHP's startup (whether the spare may rehearse depends on what it loaded). */
void spare_setup(int delay_ms);
/* The delay, or -1 when spares are off (not asked for, or given up after losing some). */
int spare_delay(void);
/* Whether a spare is waiting for an order (the zygote leaves the channel to it then). */
int spare_waiting(void);
/* Whether the last spare's fork failed: none until the next order. */
int spare_refused(void);
void spare_retry(void);
/* The read end of its pipe (it says WIRE_SPARE_TOOK there when it took an order); -1. */
int spare_pipe(void);
void spare_make(int sigfd);
/* Whether the spare took an order (then it is a worker, and forgotten here). No wait. */
int spare_taken(void);
/* `pid` was reaped: -1 if it is not the spare; 1 if it was a worker already (its end is
 * the master's to hear), 0 if it ended before its order (never reported). */
int spare_reaped(pid_t pid);
/* No more forks: the spare is ended and reaped here. */
void spare_drop(void);

#endif
