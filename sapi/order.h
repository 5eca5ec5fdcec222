/* The order a warm PHP gets (tenantfpm/sandbox/warm.py encodes it): records of a tag
 * byte, a little-endian u32 length and the value; tenantfpm/wire/order.py defines the
 * tags and bounds (ORDER_* in wire.h). */
#ifndef TFPM_ORDER_H
#define TFPM_ORDER_H

#include <stddef.h>

#include "wire.h"

struct step {
    const char *op, *target, *source, *fstype, *data, *content, *kind;
    unsigned long flags;
    int nofollow;
};

struct order {
    char *argv[ORDER_MAX_ARGS + 1];
    int argc;
    char *envp[ORDER_MAX_ENV + 1];
    int envc;
    const char *cwd, *hostname, *netns, *new_root;
    long uid, gid;
    int has_nofile;
    unsigned long nofile_soft, nofile_hard;
    int core_dumps, policy, caught, npass;
    const char *cgroups[ORDER_MAX_CGROUPS];
    int ncgroups;
    struct step steps[ORDER_MAX_STEPS];
    int nsteps;
    const unsigned char *seccomp;
    size_t seccomp_len;
};

/* Parse the `n` bytes of `buf` into `o`. Strings are copied NUL-terminated into `arena`,
 * which must hold 2 * n bytes; `o` points into it and into `buf`. -1 on anything
 * malformed (a length past the end, a NUL inside a string, an unknown tag, too many of
 * something, a field missing), and then nothing of `o` is to be used. */
int order_parse(const unsigned char *buf, size_t n, char *arena, struct order *o);

#endif
