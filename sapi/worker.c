/* One worker: accept on the tenant's socket (fd 0), serve, repeat (fpm_main.c's loop).
 *
 * A stop request (SIGTERM or SIGQUIT from the master: retire, reload, stop) is blocked
 * while a request runs, so the request finishes untouched (PHP-FPM's children let it cut
 * a sleep() short); it is taken between requests, where the worker exits.
 */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fcgi.h"
#include "hostpid.h"
#include "request.h"
#include "sapi.h"
#include "scoreboard.h"
#include "tfpm.h"

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

/* A stop arrived while serving: do not wait for the next request on a kept connection. */
static int sigpending_stop(const sigset_t *stops)
{
    sigset_t pending;
    if (sigpending(&pending))
        return 0;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGQUIT) == 1 ||
           (sigismember(stops, SIGTERM) && stopping);
}

/* Serve connections from fd 0 until max_requests, a stop signal or an error. */
static void __attribute__((noreturn)) serve(struct sb_slot *board, unsigned long max_requests)
{
    struct sigaction sa = {.sa_handler = on_stop};  /* no SA_RESTART: accept() returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigset_t stops, none;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGQUIT);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    struct fcgi_request r = {.fd = -1};
    unsigned long served = 0;
    while (!stopping && (!max_requests || served < max_requests)) {
        request_state(board, SB_IDLE);
        int c = accept4(0, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            break;  /* the socket is gone or unusable: let the master replace us */
        }
        sigprocmask(SIG_BLOCK, &stops, NULL);
        request_accepted(board);
        r.fd = c;
        fcgi_conn_start(&r);
        do {
            request_state(board, SB_READING);
            fcgi_request_reset(&r);
            r.fd = c;
            r.read_timeout_ms = tfpm.head_timeout_ms;
            if (fcgi_read_request(&r))
                break;
            tfpm_serve(&r, board);
            served++;
            /* a body the script did not read stays in the stream: skip it, so that a kept
             * connection's next request starts at a record boundary and a closed one is not
             * reset with unread data (which can cost the web server the response, as in
             * FPM's fcgi_close); the web server has learnt of the end already (tfpm_serve
             * shut our side of a connection it does not keep) */
            char skip[4096];
            while (!r.aborted && fcgi_read_stdin(&r, skip, sizeof skip) > 0)
                ;
        } while (r.keep_conn && !r.aborted && (!max_requests || served < max_requests) &&
                 !sigpending_stop(&stops));
        close(c);
        sigprocmask(SIG_UNBLOCK, &stops, NULL);  /* a pending stop is taken here */
    }
    request_state(board, SB_EXITING);
    fcgi_request_free(&r);
    _exit(0);
}

void tfpm_become_worker(unsigned long max_requests, int *fds, int nfds)
{
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(fds[1], STDOUT_FILENO) < 0 || dup2(fds[2], STDERR_FILENO) < 0)
        _exit(70);
    close(fds[1]);
    close(fds[2]);
    tfpm_host_pid_hello(fds[0]);  /* the answer is read lazily: hostpid.c */
    struct sb_slot *board = nfds > 3 ? sb_attach(fds[3]) : NULL;
    tfpm.access_fd = nfds > 4 ? fds[4] : -1;
    if (nfds > 3)
        close(fds[3]);
    serve(board, max_requests);
}
