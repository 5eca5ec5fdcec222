/* A request's bookkeeping: see request.h. The slot is the master's only view of the
 * request (it checks every figure: wire/scoreboard.py), the access line the tenant's. */
#include "request.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hostpid.h"
#include "tfpm.h"

static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void request_state(struct sb_slot *b, int state)
{
    if (!b)
        return;
    sb_begin(b);
    b->n.state = (uint8_t)state;
    sb_end(b);
}

void request_accepted(struct sb_slot *b)
{
    if (!b)
        return;
    sb_begin(b);
    b->n.accepted++;
    sb_end(b);
}

static unsigned long len_of(const char *s)
{
    return s ? strlen(s) : 0;
}

void request_begin(struct sb_slot *b, struct request_clock *c, const char *method,
                   const char *uri, const char *script, const char *content_length)
{
    c->cpu0 = cpu_seconds();
    c->t0 = sb_now();
    c->started = time(NULL);
    if (!b)
        return;
    sb_begin(b);
    b->n.state = SB_RUNNING;
    b->n.request_start = c->t0;
    long long cl = content_length && *content_length ? atoll(content_length) : 0;
    b->n.content_length = cl < 0 ? 0 : cl;
    sb_text(b->method, sizeof b->method, method, len_of(method));
    sb_text(b->uri, sizeof b->uri, uri, len_of(uri));
    sb_text(b->script, sizeof b->script, script, len_of(script));
    sb_end(b);
}

void request_end(struct sb_slot *b, const struct request_clock *c, int status, size_t peak)
{
    if (!b)
        return;
    double took = sb_now() - c->t0, cpu = cpu_seconds() - c->cpu0;
    sb_begin(b);
    b->n.requests++;
    b->n.last_duration = took;
    b->n.last_cpu = cpu;
    b->n.last_cpu_percent = took > 0 ? 100.0 * cpu / took : 0.0;
    b->n.last_memory = peak;
    b->n.last_status = (uint16_t)(status > 0 && status < 1000 ? status : 0);
    sb_end(b);
}

void request_log(struct access_entry *e, const struct request_clock *c, int status,
                 size_t peak)
{
    if (tfpm.access_fd < 0)
        return;
    tfpm_host_pid_await();  /* the response is out; the line names the host pid */
    e->status = status;
    e->started = c->started;
    e->duration = sb_now() - c->t0;
    e->cpu = cpu_seconds() - c->cpu0;
    e->memory = peak;
    const char *host_pid = getenv(WIRE_HOST_PID_ENV);
    e->pid = host_pid ? atol(host_pid) : (long)getpid();
    e->ppid = tfpm.master_pid;
    access_write(tfpm.access_fd, tfpm.pool, e);
}
