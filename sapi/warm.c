/* The warm PHP: a zygote started before anyone knows its tenant.
 *
 * Why: a tenant's first start paid for PHP's exec and the loading of its libraries and
 * extensions (gd alone brings 56 shared libraries, each relocated in full: Debian links
 * them with BIND_NOW): 28-35 ms of the 50-60 ms from `tenantfpm add` to the first
 * response (docs/performance.md). None of that depends on the tenant.
 *
 * How: the spawn server (tenantfpm/sandbox/spawner.py) keeps one process ready, cloned as
 * a sandboxed zygote is (the master's child, PID 1 of a PID namespace of its own, root,
 * in the master's mount namespace) and exec'd with `-W [-P EXTENSION]...`. Here it loads
 * the extensions the distribution's conf.d names, with the flags PHP's own dlopen() uses
 * (so PHP's load of the same path at its startup finds them loaded), says "ready" on fd 3
 * and waits, running nothing else. The order that comes (warm.py encodes it) is a
 * tenant's plan: its cgroups, network namespace, hostname, the steps of its root,
 * rlimits, identity, seccomp filter, descriptors, environment and the zygote's argv.
 * This file carries it out as sandbox/spawn.py's _child() carries a plan out before it
 * execs, step for step and in the same order, then runs the zygote's main: PHP's module
 * startup happens only now, with the tenant's php.ini, as the tenant's user.
 *
 * Each warm process is a fresh exec (its own address-space layout and stack canary, as a
 * cold start has) and serves one tenant: nothing is shared between tenants. The order
 * comes from the spawn server (root) over a socket pair no one else holds; it is parsed
 * whole, with every length bounded, before any of it is carried out. A failed step is
 * reported on the error pipe as "step: reason", the text the master shows for a failed
 * exec, and the process ends.
 */
#include "warm.h"

#include "channel.h"
#include "order.h"
#include "tfpm.h"
#include "zygote.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "main/build-defs.h"  /* PHP_EXTENSION_DIR: where PHP resolves `extension=gd.so` */

#define ORDER_FD WIRE_CHANNEL_FD
#define MAX_FDS (4 + ORDER_MAX_PASS_FDS)  /* errpipe, listen, stdout, stderr, the pass fds */
_Static_assert(MAX_FDS <= TFPM_MAX_FDS, "tfpm_receive() holds TFPM_MAX_FDS");
#define MAX_PRELOAD 128

static const char *new_root;
static int errpipe = -1;

/* The step that failed and why, to the master, in the words sandbox/spawn.py uses: an
 * os call's "reason: path", a mount's or openat2's "what: reason"; then the end. */
static void __attribute__((noreturn)) report(const char *step, const char *what, int what_first)
{
    char msg[512];
    const char *why = errno == ELOOP ? "a symlink on the way" : strerror(errno);
    int n = !what ? snprintf(msg, sizeof msg, "%s: %s", step, why)
            : what_first ? snprintf(msg, sizeof msg, "%s: %s: %s", step, what, why)
                         : snprintf(msg, sizeof msg, "%s: %s: %s", step, why, what);
    if (errpipe >= 0 && n > 0)
        (void)!write(errpipe, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(127);
}

static void __attribute__((noreturn)) fail(const char *step, const char *path)
{
    report(step, path, 0);
}

static void __attribute__((noreturn)) fail_sys(const char *step, const char *what)
{
    report(step, what, 1);
}

/* --- the rest of the root (rootfs.build's steps, the same semantics) ------------------ */

static void inside(const char *target, char *out, size_t size)
{
    while (*target == '/')
        target++;
    if ((size_t)snprintf(out, size, "%s/%s", new_root, target) >= size) {
        errno = ENAMETOOLONG;
        fail("filesystem", target);
    }
}

static void mkdir_p(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(path, 0755) && errno != EEXIST)
            fail("filesystem", path);
        *p = '/';
    }
    if (mkdir(path, 0755) && errno != EEXIST)
        fail("filesystem", path);
}

static int open2(int dirfd, const char *path, int flags, unsigned long long resolve)
{
    struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC), .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

static void fd_path(int fd, char *out, size_t size)
{
    snprintf(out, size, "/proc/self/fd/%d", fd);
}

/* mount --bind by descriptors, no symlink allowed anywhere on either side: the tenant's
 * tree can hold links (rootfs._bind_nofollow says why). */
static void bind_nofollow(const struct step *s)
{
    const unsigned long long strict = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
    int src = open2(AT_FDCWD, s->source, O_PATH, RESOLVE_NO_SYMLINKS);
    if (src < 0)
        fail_sys("filesystem", s->source);
    int dir = open(new_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        fail("filesystem", new_root);
    char name[4096];
    if (snprintf(name, sizeof name, "%s", s->target) >= (int)sizeof name) {
        errno = ENAMETOOLONG;
        fail("filesystem", s->target);
    }
    char *part = name, *slash;
    while (*part == '/')
        part++;
    while ((slash = strchr(part, '/'))) {  /* each parent made if missing, never a link */
        *slash = 0;
        if (*part) {
            if (mkdirat(dir, part, 0755) && errno != EEXIST)
                fail("filesystem", s->target);
            int next = open2(dir, part, O_RDONLY | O_DIRECTORY, strict);
            if (next < 0)
                fail_sys("filesystem", part);
            close(dir);
            dir = next;
        }
        part = slash + 1;
    }
    if (!*part) {
        errno = EINVAL;
        fail("filesystem", s->target);
    }
    if (strcmp(s->kind, "file") == 0) {
        int f = openat(dir, part, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (f >= 0)
            close(f);
        else if (errno != EEXIST)
            fail("filesystem", s->target);
    } else if (mkdirat(dir, part, 0755) && errno != EEXIST) {
        fail("filesystem", s->target);
    }
    char a[64], b[64];
    int tgt = open2(dir, part, O_PATH, strict);
    if (tgt < 0)
        fail_sys("filesystem", part);
    fd_path(src, a, sizeof a);
    fd_path(tgt, b, sizeof b);
    if (mount(a, b, NULL, MS_BIND | MS_REC, NULL))
        fail_sys("filesystem", s->target);
    close(tgt);
    int top = open2(dir, part, O_PATH, strict);  /* the mount now on that name */
    if (top < 0)
        fail_sys("filesystem", part);
    fd_path(top, b, sizeof b);
    if (mount(NULL, b, NULL, MS_REMOUNT | MS_BIND | s->flags, NULL))
        fail_sys("filesystem", s->target);
    close(top);
    close(dir);
    close(src);
}

static void run_step(const struct step *s)
{
    char t[4096];
    inside(s->target, t, sizeof t);
    if (strcmp(s->op, "mkdir") == 0) {
        mkdir_p(t);
    } else if (strcmp(s->op, "touch") == 0) {
        char *slash = strrchr(t, '/');
        *slash = 0;
        mkdir_p(t);
        *slash = '/';
        int f = open(t, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (f < 0)
            fail("filesystem", s->target);
        close(f);
    } else if (strcmp(s->op, "symlink") == 0) {
        if (!s->source || symlink(s->source, t))
            fail("filesystem", s->target);
    } else if (strcmp(s->op, "write") == 0) {
        const char *c = s->content ? s->content : "";
        size_t len = strlen(c);
        int f = open(t, O_CREAT | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (f < 0 || write(f, c, len) != (ssize_t)len)
            fail("filesystem", s->target);
        close(f);
    } else if (strcmp(s->op, "mount") == 0) {
        if (mount(s->source, t, s->fstype, s->flags, s->data))
            fail_sys("filesystem", t);
    } else if (strcmp(s->op, "bind") == 0 && s->nofollow) {
        if (!s->source)
            fail("filesystem", s->target);
        bind_nofollow(s);
    } else if (strcmp(s->op, "bind") == 0) {
        if (!s->source || mount(s->source, t, NULL, MS_BIND | MS_REC, NULL)
            || mount(NULL, t, NULL, MS_REMOUNT | MS_BIND | s->flags, NULL))
            fail_sys("filesystem", t);
    } else if (strcmp(s->op, "pivot") == 0) {
        if (chdir(new_root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH)
            || chdir("/"))
            fail_sys("filesystem", "pivot_root");
    } else if (strcmp(s->op, "seal") == 0) {
        if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | s->flags, NULL))
            fail_sys("filesystem", "/");
    } else {
        errno = EINVAL;
        fail("filesystem", s->op);
    }
}

/* --- descriptors, identity, the rest ------------------------------------------------- */

/* errpipe, listen, [stdout, stderr], pass fds... as received, onto 0, 1, 2, 3... as
 * sandbox/spawn.py places them; everything else closed (the order's socket too). */
static void place_fds(const struct order *o, int *fds, int nfds)
{
    int want = 2 + (o->caught ? 2 : 0) + o->npass;
    if (nfds != want) {
        errno = EBADF;
        fail("fds", "the order's descriptors");
    }
    int first_free = 3 + o->npass;
    errpipe = fcntl(fds[0], F_DUPFD_CLOEXEC, first_free);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (errpipe < 0 || devnull < 0)
        _exit(127);
    int moved[MAX_FDS];
    for (int i = 1; i < nfds; i++)
        if ((moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, first_free)) < 0)
            fail("fds", NULL);
    int out = o->caught ? moved[2] : devnull, err = o->caught ? moved[3] : devnull;
    int first_pass = o->caught ? 4 : 2;
    if (dup2(moved[1], 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        fail("fds", NULL);
    for (int i = 0; i < o->npass; i++)
        if (dup2(moved[first_pass + i], 3 + i) < 0)
            fail("fds", NULL);
    if (errpipe > first_free)
        syscall(SYS_close_range, first_free, errpipe - 1, 0);
    syscall(SYS_close_range, errpipe + 1, ~0U, 0);
}

static void write_file(const char *path, const char *text)
{
    int f = open(path, O_WRONLY | O_CLOEXEC);
    if (f < 0 || write(f, text, strlen(text)) != (ssize_t)strlen(text))
        fail("cgroup", path);
    close(f);
}

static void identity(const struct order *o)
{
    gid_t g = (gid_t)o->gid;
    if (setgroups(1, &g) || setresgid(g, g, g) || setresuid((uid_t)o->uid, (uid_t)o->uid,
                                                            (uid_t)o->uid))
        fail("setuid", NULL);
    if (getuid() != (uid_t)o->uid || geteuid() != (uid_t)o->uid || getgid() != g) {
        errno = EPERM;
        fail("setuid", "identity did not change");
    }
}

/* Carry the order out, in sandbox/spawn.py's order for what the warm start left. */
static void confine(const struct order *o, int *fds, int nfds)
{
    place_fds(o, fds, nfds);
    for (int i = 0; i < o->ncgroups; i++)
        write_file(o->cgroups[i], "0");
    struct sched_param none = {0};
    if (sched_setscheduler(0, o->policy, &none))
        fail("scheduling policy", NULL);
    if (o->netns) {
        int ns = open(o->netns, O_RDONLY | O_CLOEXEC);
        if (ns < 0 || setns(ns, CLONE_NEWNET))
            fail_sys("network namespace", o->netns);
        close(ns);
    }
    /* namespaces.enter_worker_namespaces: the cgroup one after the join, so the tenant's
     * cgroup is its root */
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)
        || sethostname(o->hostname, strlen(o->hostname)))
        fail("namespaces", NULL);
    new_root = o->new_root;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))  /* nothing leaks out */
        fail_sys("filesystem", "/");
    for (int i = 0; i < o->nsteps; i++)
        run_step(&o->steps[i]);
    struct rlimit core = {o->core_dumps ? RLIM_INFINITY : 0, o->core_dumps ? RLIM_INFINITY : 0};
    struct rlimit nofile = {o->nofile_soft, o->nofile_hard};
    if ((o->has_nofile && setrlimit(RLIMIT_NOFILE, &nofile)) || setrlimit(RLIMIT_CORE, &core))
        fail("rlimits", NULL);
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
            fail("capabilities", NULL);
    identity(o);
    /* what the exec after setuid gives a cold start: the change of identity made the
     * process undumpable, and so its /proc root's (hidepid=2 would hide the tenant's own
     * zygote and workers from it, and no core would be written) */
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
        fail("setuid", "dumpable");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        fail("no_new_privs", NULL);
    static struct sock_filter filter[ORDER_MAX_FILTER];
    if (!o->seccomp) {
        errno = EINVAL;
        fail("seccomp", "no filter in the order");
    }
    memcpy(filter, o->seccomp, o->seccomp_len);  /* order_parse() bounded it to the array */
    struct sock_fprog prog = {.len = (unsigned short)(o->seccomp_len / sizeof *filter),
                              .filter = filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0))
        fail("seccomp", NULL);
    /* after setuid, which clears it; a master that died before this broke the pipe */
    struct pollfd p = {.fd = errpipe, .events = POLLOUT};
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || (poll(&p, 1, 0) == 1 && (p.revents & POLLERR))) {
        errno = ESRCH;
        fail("pdeathsig", "the master is gone");
    }
    if (chdir(o->cwd))
        fail("chdir", o->cwd);
}

/* ps and /proc/PID/cmdline show the zygote's own argv, as after a cold start's exec: the
 * order's, written over the warm process's (longer: its -P list), the rest zeroed. */
static void retitle(char **old_argv, int old_argc, char **argv)
{
    char *area = old_argv[0];
    char *end = old_argv[old_argc - 1] + strlen(old_argv[old_argc - 1]) + 1;
    size_t room = (size_t)(end - area), at = 0;
    for (int i = 0; argv[i] && at < room; i++) {
        size_t len = strlen(argv[i]) + 1;
        if (len > room - at)
            len = room - at;
        memcpy(area + at, argv[i], len);
        at += len;
    }
    memset(area + at, 0, room - at);
    area[room - 1] = 0;
}

/* The libraries PHP's startup will load: loaded now, while no tenant waits. */
static void preload(const char **names, int n)
{
    for (int i = 0; i < n; i++) {
        char path[4096];
        if (strchr(names[i], '/'))
            snprintf(path, sizeof path, "%s", names[i]);
        else
            snprintf(path, sizeof path, "%s/%s", PHP_EXTENSION_DIR, names[i]);
        /* DL_LOAD's flags (Zend/zend_portability.h); a failure is PHP's to report later */
        (void)dlopen(path, RTLD_LAZY | RTLD_GLOBAL | RTLD_DEEPBIND);
    }
}

int tfpm_warm_main(int argc, char **argv)
{
    static const char *names[MAX_PRELOAD];
    int n = 0;
    if (argc < 2 || strcmp(argv[1], "-W") != 0)
        return 64;
    for (int i = 2; i + 1 < argc && n < MAX_PRELOAD; i += 2)
        if (strcmp(argv[i], "-P") == 0)
            names[n++] = argv[i + 1];
    preload(names, n);
    if (send(ORDER_FD, WIRE_READY, sizeof WIRE_READY - 1, MSG_NOSIGNAL) != sizeof WIRE_READY - 1)
        return 0;
    static unsigned char buf[ORDER_MAX_SIZE];
    static char arena[ORDER_MAX_SIZE * 2];
    static struct order o;
    int fds[MAX_FDS], nfds = 0;
    ssize_t got;
    do
        got = tfpm_receive(ORDER_FD, buf, sizeof buf, fds, MAX_FDS, &nfds);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return 0;  /* the spawn server closed its end: not wanted any more */
    if (nfds > 0)
        errpipe = fds[0];
    if (order_parse(buf, (size_t)got, arena, &o) || (o.argc > 1 && strcmp(o.argv[1], "-W") == 0)) {
        errno = EINVAL;
        fail("order", "malformed");
    }
    confine(&o, fds, nfds);
    retitle(argv, argc, o.argv);
    close(errpipe);  /* what exec would have closed: the start went through */
    errpipe = -1;
    extern char **environ;
    environ = o.envp;
    unsetenv("LD_PRELOAD");  /* as engine.c at a cold start: loaded, and no one else's */
    optind = 1;
    return tfpm_main(o.argc, o.argv);
}
