/* The zygote's channel to the master: see channel.h. The master is the only peer, but its
 * messages are parsed as strictly as if it were not. */
#include "channel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

int channel_say(const char *fmt, long a, long b)
{
    char msg[WIRE_MAX_MESSAGE];
    int n = snprintf(msg, sizeof msg, fmt, a, b);
    if (n <= 0 || (size_t)n >= sizeof msg)
        return -1;
    return send(CONTROL_FD, msg, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

int channel_order(unsigned long *max_requests, int *fds, int *nfds)
{
    char text[WIRE_MAX_MESSAGE];
    ssize_t n = tfpm_receive(CONTROL_FD, text, sizeof text - 1, fds, ORDER_FDS, nfds);
    if (n <= 0)
        return (int)n;
    text[n] = 0;
    if (sscanf(text, WIRE_FORK, max_requests) == 1 && *nfds >= WIRE_FORK_FDS)
        return 1;
    for (int i = 0; i < *nfds; i++)
        close(fds[i]);
    *nfds = 0;
    errno = EBADMSG;  /* not an order from our master */
    return -1;
}
