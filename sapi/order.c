/* The warm PHP's order, parsed whole before any of it is carried out (warm.c): every
 * length bounded by what is left of the message, every count by its array. */
#include "order.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/filter.h>

static int number(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int order_parse(const unsigned char *buf, size_t n, char *arena, struct order *o)
{
    struct step *st = NULL;
    size_t at = 0;
    memset(o, 0, sizeof *o);
    o->uid = o->gid = -1;
    while (at < n) {
        if (n - at < 5)
            return -1;
        unsigned char tag = buf[at];
        uint32_t len = (uint32_t)buf[at + 1] | (uint32_t)buf[at + 2] << 8
                       | (uint32_t)buf[at + 3] << 16 | (uint32_t)buf[at + 4] << 24;
        at += 5;
        if (len > n - at)
            return -1;
        const unsigned char *v = buf + at;
        at += len;
        if (tag == ORDER_SECCOMP) {  /* the seccomp program: raw struct sock_filter entries */
            if (len == 0 || len % sizeof(struct sock_filter)
                || len / sizeof(struct sock_filter) > ORDER_MAX_FILTER)
                return -1;
            o->seccomp = v;
            o->seccomp_len = len;
            continue;
        }
        if (memchr(v, 0, len))
            return -1;  /* every other value is a C string */
        char *s = arena;
        memcpy(s, v, len);
        s[len] = 0;
        arena += len + 1;
        long num = 0;
        switch (tag) {
        case ORDER_ARGV:
            if (o->argc == ORDER_MAX_ARGS)
                return -1;
            o->argv[o->argc++] = s;
            break;
        case ORDER_ENV:
            if (o->envc == ORDER_MAX_ENV || !strchr(s, '='))
                return -1;
            o->envp[o->envc++] = s;
            break;
        case ORDER_CWD: o->cwd = s; break;
        case ORDER_HOSTNAME: o->hostname = s; break;
        case ORDER_NEW_ROOT: if (s[0] != '/') return -1; o->new_root = s; break;
        case ORDER_NETNS: o->netns = s; break;
        case ORDER_UID: if (number(s, &o->uid) || o->uid < 0) return -1; break;
        case ORDER_GID: if (number(s, &o->gid) || o->gid < 0) return -1; break;
        case ORDER_NOFILE:
            if (sscanf(s, "%lu %lu", &o->nofile_soft, &o->nofile_hard) != 2)
                return -1;
            o->has_nofile = 1;
            break;
        case ORDER_CORE_DUMPS: if (number(s, &num)) return -1; o->core_dumps = num != 0; break;
        case ORDER_POLICY: if (number(s, &num) || num < 0) return -1; o->policy = (int)num; break;
        case ORDER_CAUGHT: if (number(s, &num)) return -1; o->caught = num != 0; break;
        case ORDER_PASS_FDS:
            if (number(s, &num) || num < 0 || num > ORDER_MAX_PASS_FDS)
                return -1;
            o->npass = (int)num;
            break;
        case ORDER_CGROUP:
            if (o->ncgroups == ORDER_MAX_CGROUPS)
                return -1;
            o->cgroups[o->ncgroups++] = s;
            break;
        case ORDER_STEP:
            if (o->nsteps == ORDER_MAX_STEPS)
                return -1;
            st = &o->steps[o->nsteps++];
            st->op = s;
            st->kind = "dir";
            break;
        default:  /* the fields of the step just named */
            if (!st)
                return -1;
            switch (tag) {
            case ORDER_STEP_TARGET: st->target = s; break;
            case ORDER_STEP_SOURCE: st->source = s; break;
            case ORDER_STEP_FSTYPE: st->fstype = s; break;
            case ORDER_STEP_DATA: st->data = s; break;
            case ORDER_STEP_CONTENT: st->content = s; break;
            case ORDER_STEP_KIND: st->kind = s; break;
            case ORDER_STEP_NOFOLLOW: st->nofollow = 1; break;
            case ORDER_STEP_FLAGS:
                if (number(s, &num) || num < 0)
                    return -1;
                st->flags = (unsigned long)num;
                break;
            default: return -1;
            }
        }
    }
    for (int i = 0; i < o->nsteps; i++)
        if (!o->steps[i].target)
            return -1;
    o->argv[o->argc] = NULL;
    o->envp[o->envc] = NULL;
    return o->argc > 0 && o->cwd && o->hostname && o->new_root && o->uid >= 0 && o->gid >= 0
           ? 0 : -1;
}

