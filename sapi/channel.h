/* The zygote's channel to the master, fd 3 (channel.c): messages in wire/zygote.py's
 * forms, fork orders with their descriptors. */
#ifndef TFPM_CHANNEL_H
#define TFPM_CHANNEL_H

#include <stddef.h>
#include <sys/types.h>

#include "wire.h"

#define CONTROL_FD WIRE_CHANNEL_FD
#define TFPM_MAX_FDS 12   /* descriptors one message may bring */
#define ORDER_FDS 5       /* a fork order's: channel, stdout, stderr, scoreboard, access */

/* One message on `fd` and the descriptors that came with it (close-on-exec; past `max_fds`
 * closed): its length, 0 at the end of the channel, -1 with errno (EMSGSIZE: the message
 * or its descriptors did not fit, and none are kept). */
ssize_t tfpm_receive(int fd, void *buf, size_t size, int *fds, int max_fds, int *nfds);

/* Tell the master (WIRE_READY, WIRE_EXIT with its two numbers): 0, or -1. */
int channel_say(const char *fmt, long a, long b);

/* The next fork order on the channel: 1 with its max_requests and descriptors (at most
 * ORDER_FDS), 0 at the channel's end, -1 on an error (errno; EMSGSIZE: too long for an
 * order); anything that is not an order (its descriptors closed) is -1 with EBADMSG. */
int channel_order(unsigned long *max_requests, int *fds, int *nfds);

#endif
