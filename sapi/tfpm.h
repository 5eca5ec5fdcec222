/* What the zygote, the worker loop and the SAPI callbacks share. */
#ifndef TFPM_H
#define TFPM_H

#include <sys/types.h>

#include "accesslog.h"
#include "fcgi.h"
#include "scoreboard.h"

/* What the linker may bind from outside: everything else is hidden in the engine-hosted
 * build (tenantfpm-php.so, -fvisibility=hidden), so no name of ours can be taken for one
 * of the PHP binary's, nor one of its for ours. */
#define TFPM_EXPORT __attribute__((visibility("default")))

#define TFPM_SAPI_NAME "fpm-fcgi"  /* opcache's list and apps' PHP_SAPI checks: as FPM */
#define CONTROL_FD WIRE_CHANNEL_FD  /* the zygote's channel to the master */

/* Settings the master gave the zygote (argv), the same for all its workers. */
struct tfpm_settings {
    const char *ini_path;
    const char **admin_keys;   /* [ini] keys the script and the web server cannot change */
    int n_admin_keys;
    int head_timeout_ms;       /* a connection must send its request head within this */
    const char *limit_extensions;  /* space-separated, FPM's security.limit_extensions */
    const char *pool;          /* the tenant's name, for access.log's %n */
    long master_pid;           /* access.log's %P */
    int access_fd;             /* the worker's access.log; -1: none */
};
extern struct tfpm_settings tfpm;

/* zygote.c: the zygote's main, whichever program carries it (main.c, engine.c) */
int tfpm_main(int argc, char **argv);

/* zygote.c: one message on `fd` and the descriptors that came with it (close-on-exec; past
 * `max_fds` closed): its length, 0 at the end of the channel, -1 with errno (EMSGSIZE: the
 * message or its descriptors did not fit, and none are kept). */
#define TFPM_MAX_FDS 12
ssize_t tfpm_receive(int fd, void *buf, size_t size, int *fds, int max_fds, int *nfds);

/* warm.c: a zygote started before its tenant is known (-W); ends in tfpm_main */
int tfpm_warm_main(int argc, char **argv);

/* sapi.c */
int tfpm_php_startup(void);
void tfpm_lock_admin_keys(void);
/* Run one request read from `r`, answering on its connection; the HTTP status. */
int tfpm_serve(struct fcgi_request *r, struct sb_slot *board);

/* rehearse.c: whether a spare may run PHP's request start and end with no request (only
 * PHP's own extensions loaded, no session.auto_start, no output_handler), and doing it */
int tfpm_rehearsal_safe(void);
void tfpm_rehearse(void);

/* hostpid.c: the worker's hello on its channel to the master; the wait for the answer
 * (TENANTFPM_WORKER_PID), done once where the environment is first read; the hooks that
 * do it (after PHP's startup) */
#define TFPM_HOST_PID_ENV WIRE_HOST_PID_ENV
void tfpm_host_pid_hello(int fd);
void tfpm_host_pid_await(void);
void tfpm_host_pid_hook(void);

/* worker.c: serve connections from fd 0 until max_requests, a stop signal or an error. */
void tfpm_worker(struct sb_slot *board, unsigned long max_requests)
    __attribute__((noreturn));

#endif
