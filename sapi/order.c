/* The warm PHP's order, parsed whole before any of it is carried out (warm.c): every
 * length bounded by what is left of the message, every count by its array. */
#include "order.h"

#include <errno.h>
#include <stddef.h>
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

/* How a record's value lands in the order: the parse is this table and one case per kind,
 * so a new field is a row (its tag and bound come from wire.h). */
enum how {
    STRING,       /* a const char * */
    PATH,         /* ... that starts with '/' */
    LIST,         /* one more element of an array, `count` its length, at most `max` */
    PAIR,         /* ... a "KEY=value" one */
    ID,           /* a long >= 0 */
    NUMBER,       /* an int in 0..max */
    FLAG,         /* an int, 0 or 1 */
    LIMITS,       /* "soft hard" RLIMIT_NOFILE */
    STEP,         /* a new step: its op */
    STEP_STRING,  /* a string field of the step just named */
    STEP_NUMBER,  /* an unsigned long of it (flags) */
    STEP_FLAG,    /* an int set to 1 by the record's presence (nofollow) */
};

struct field {
    unsigned char tag;
    enum how how;
    size_t at, count;
    long max;
};

#define O(m) offsetof(struct order, m)
#define S(m) offsetof(struct step, m)
static const struct field FIELDS[] = {
    {ORDER_ARGV, LIST, O(argv), O(argc), ORDER_MAX_ARGS},
    {ORDER_ENV, PAIR, O(envp), O(envc), ORDER_MAX_ENV},
    {ORDER_CGROUP, LIST, O(cgroups), O(ncgroups), ORDER_MAX_CGROUPS},
    {ORDER_CWD, STRING, O(cwd), 0, 0},
    {ORDER_HOSTNAME, STRING, O(hostname), 0, 0},
    {ORDER_NETNS, STRING, O(netns), 0, 0},
    {ORDER_NEW_ROOT, PATH, O(new_root), 0, 0},
    {ORDER_UID, ID, O(uid), 0, 0},
    {ORDER_GID, ID, O(gid), 0, 0},
    {ORDER_NOFILE, LIMITS, 0, 0, 0},
    {ORDER_CORE_DUMPS, FLAG, O(core_dumps), 0, 1},
    {ORDER_CAUGHT, FLAG, O(caught), 0, 1},
    {ORDER_POLICY, NUMBER, O(policy), 0, 1 << 16},
    {ORDER_PASS_FDS, NUMBER, O(npass), 0, ORDER_MAX_PASS_FDS},
    {ORDER_STEP, STEP, 0, 0, ORDER_MAX_STEPS},
    {ORDER_STEP_TARGET, STEP_STRING, S(target), 0, 0},
    {ORDER_STEP_SOURCE, STEP_STRING, S(source), 0, 0},
    {ORDER_STEP_FSTYPE, STEP_STRING, S(fstype), 0, 0},
    {ORDER_STEP_DATA, STEP_STRING, S(data), 0, 0},
    {ORDER_STEP_CONTENT, STEP_STRING, S(content), 0, 0},
    {ORDER_STEP_KIND, STEP_STRING, S(kind), 0, 0},
    {ORDER_STEP_FLAGS, STEP_NUMBER, S(flags), 0, 0},
    {ORDER_STEP_NOFOLLOW, STEP_FLAG, S(nofollow), 0, 0},
};

static const struct field *field_of(unsigned char tag)
{
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        if (FIELDS[i].tag == tag)
            return &FIELDS[i];
    return NULL;
}

/* One string value `s` into `o` as `f` says; -1 if it does not fit the field. */
static int place(const struct field *f, char *s, struct order *o, struct step **st)
{
    char *base = (char *)o;
    long num = 0;
    switch (f->how) {
    case PATH:
        if (s[0] != '/')
            return -1;
        /* fall through */
    case STRING:
        *(const char **)(base + f->at) = s;
        return 0;
    case PAIR:
        if (!strchr(s, '='))
            return -1;
        /* fall through */
    case LIST: {
        int *count = (int *)(base + f->count);
        if (*count >= f->max)
            return -1;
        ((char **)(base + f->at))[(*count)++] = s;
        return 0;
    }
    case ID:
        if (number(s, &num) || num < 0)
            return -1;
        *(long *)(base + f->at) = num;
        return 0;
    case NUMBER:
    case FLAG:
        if (number(s, &num) || num < 0 || num > f->max)
            return -1;
        *(int *)(base + f->at) = (int)num;
        return 0;
    case LIMITS:
        if (sscanf(s, "%lu %lu", &o->nofile_soft, &o->nofile_hard) != 2)
            return -1;
        o->has_nofile = 1;
        return 0;
    case STEP:
        if (o->nsteps >= f->max)
            return -1;
        *st = &o->steps[o->nsteps++];
        (*st)->op = s;
        (*st)->kind = "dir";
        return 0;
    default:  /* the fields of the step just named */
        if (!*st)
            return -1;
        base = (char *)*st;
        if (f->how == STEP_STRING) {
            *(const char **)(base + f->at) = s;
        } else if (f->how == STEP_FLAG) {
            *(int *)(base + f->at) = 1;
        } else {
            if (number(s, &num) || num < 0)
                return -1;
            *(unsigned long *)(base + f->at) = (unsigned long)num;
        }
        return 0;
    }
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
        const struct field *f = field_of(tag);
        if (!f || memchr(v, 0, len))
            return -1;  /* every other value is a C string */
        char *s = arena;
        memcpy(s, v, len);
        s[len] = 0;
        arena += len + 1;
        if (place(f, s, o, &st))
            return -1;
    }
    for (int i = 0; i < o->nsteps; i++)
        if (!o->steps[i].target)
            return -1;
    o->argv[o->argc] = NULL;
    o->envp[o->envc] = NULL;
    return o->argc > 0 && o->cwd && o->hostname && o->new_root && o->uid >= 0 && o->gid >= 0
           ? 0 : -1;
}
