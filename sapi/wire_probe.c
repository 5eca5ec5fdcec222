/* The C side of the wire, driven from tests/test_wire.py: each command runs one of the
 * codecs the SAPI uses (scoreboard.c, order.c, accesslog.c) on what the Python side made,
 * or makes what the Python side reads, so the two languages are checked against each
 * other and not only against their own tests.
 *
 *   wire-probe slot FILE STATE REQUESTS ACCEPTED START LENGTH DURATION CPU PCT MEMORY
 *                   STATUS METHOD URI SCRIPT FATAL
 *       publish those figures into the scoreboard page in FILE, as a worker does
 *   wire-probe order < ORDER
 *       parse an order and print what was understood, a line per field; exit 1 if refused
 *   wire-probe access FORMAT POOL STATUS STARTED DURATION CPU MEMORY PID PPID [NAME=VALUE...]
 *       one access.log line on stdout; a NAME of "o:Header" is a response header
 */
#include "accesslog.h"
#include "order.h"
#include "scoreboard.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int slot(char **a)
{
    int fd = open(a[0], O_RDWR);
    struct sb_slot *s = fd < 0 ? NULL : sb_attach(fd);
    if (!s)
        return 2;
    sb_begin(s);
    s->n.state = (uint8_t)atoi(a[1]);
    s->n.requests = strtoull(a[2], NULL, 10);
    s->n.accepted = strtoull(a[3], NULL, 10);
    s->n.request_start = strtod(a[4], NULL);
    s->n.content_length = strtoll(a[5], NULL, 10);
    s->n.last_duration = strtod(a[6], NULL);
    s->n.last_cpu = strtod(a[7], NULL);
    s->n.last_cpu_percent = strtod(a[8], NULL);
    s->n.last_memory = strtoull(a[9], NULL, 10);
    s->n.last_status = (uint16_t)atoi(a[10]);
    sb_text(s->method, sizeof s->method, a[11], strlen(a[11]));
    sb_text(s->uri, sizeof s->uri, a[12], strlen(a[12]));
    sb_text(s->script, sizeof s->script, a[13], strlen(a[13]));
    sb_text(s->fatal, sizeof s->fatal, a[14], strlen(a[14]));
    sb_end(s);
    return 0;
}

static unsigned char buf[ORDER_MAX_SIZE];
static char arena[ORDER_MAX_SIZE * 2];
static struct order o;

static const char *or_none(const char *s)
{
    return s ? s : "(none)";
}

static int order(void)
{
    size_t n = 0;
    ssize_t got;
    while (n < sizeof buf && (got = read(0, buf + n, sizeof buf - n)) > 0)
        n += (size_t)got;
    if (order_parse(buf, n, arena, &o))
        return 1;
    for (int i = 0; i < o.argc; i++)
        printf("argv %s\n", o.argv[i]);
    for (int i = 0; i < o.envc; i++)
        printf("env %s\n", o.envp[i]);
    printf("cwd %s\nhostname %s\nnew_root %s\nnetns %s\nuid %ld\ngid %ld\n", o.cwd,
           o.hostname, o.new_root, or_none(o.netns), o.uid, o.gid);
    if (o.has_nofile)
        printf("nofile %lu %lu\n", o.nofile_soft, o.nofile_hard);
    printf("core_dumps %d\npolicy %d\ncaught %d\npass_fds %d\nseccomp %zu\n", o.core_dumps,
           o.policy, o.caught, o.npass, o.seccomp_len);
    for (int i = 0; i < o.ncgroups; i++)
        printf("cgroup %s\n", o.cgroups[i]);
    for (int i = 0; i < o.nsteps; i++) {
        const struct step *s = &o.steps[i];
        printf("step %s %s source=%s fstype=%s data=%s content=%zu flags=%lu nofollow=%d "
               "kind=%s\n", s->op, s->target, or_none(s->source), or_none(s->fstype),
               or_none(s->data), s->content ? strlen(s->content) : 0, s->flags, s->nofollow,
               s->kind);
    }
    return 0;
}

static char **params;
static int nparams;

static const char *param(const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < nparams; i++)
        if (!strncmp(params[i], name, len) && params[i][len] == '=')
            return params[i] + len + 1;
    return NULL;
}

static int access_line(char **a, int n)
{
    char err[128];
    if (access_compile(a[0], err, sizeof err)) {
        printf("refused: %s\n", err);
        return 1;
    }
    params = a + 9;
    nparams = n - 9;
    struct access_entry e = {.param = param, .status = atoi(a[2]),
                             .started = (time_t)atol(a[3]), .duration = strtod(a[4], NULL),
                             .cpu = strtod(a[5], NULL), .memory = strtoull(a[6], NULL, 10),
                             .pid = atol(a[7]), .ppid = atol(a[8])};
    const char *names[WIRE_ACCESS_MAX_HEADERS];
    int h = access_headers(names);
    for (int i = 0; i < h; i++) {
        char key[160];
        snprintf(key, sizeof key, "o:%s", names[i]);
        e.header_values[i] = param(key);
    }
    fflush(stdout);
    access_write(1, a[1], &e);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 17 && !strcmp(argv[1], "slot"))
        return slot(argv + 2);
    if (argc == 2 && !strcmp(argv[1], "order"))
        return order();
    if (argc >= 11 && !strcmp(argv[1], "access"))
        return access_line(argv + 2, argc - 2);
    fprintf(stderr, "usage: see wire_probe.c\n");
    return 2;
}
