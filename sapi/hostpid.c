/* The worker's host pid: asked for at once, waited for only where something reads it.
 *
 * A worker lives in its tenant's PID namespace, so only the master can tell it its pid on
 * the host (for TENANTFPM_WORKER_PID and access.log's %p): the worker says "hello" on its
 * own channel, and the kernel attaches its credentials for the master to read. Waiting
 * for the answer before the first accept() put a round trip through the master's loop
 * (0.2-0.4 ms) into every ondemand first request. So the answer is read where the
 * environment is first read instead:
 *   - PHP's own readers: getenv() (through the SAPI's getenv), getenv() with no name,
 *     $_SERVER and $_ENV (through php_import_environment_variables);
 *   - every way PHP code starts a process (proc_open, exec, system, popen, mail,
 *     pcntl_fork and pcntl_exec in any extension end in one of the libc calls below,
 *     which this program defines over libc's, exported from the engine-hosted build so
 *     the PHP binary's calls reach them too): the child inherits the environment;
 *   - the end of each request, before its access.log line, when there is an access.log.
 * The first of them waits (HELLO_WAIT_MS at most); the others find it done. A worker with
 * no access.log whose scripts read no environment never waits: under recycling load a
 * fresh worker waited for the master after its first request, a median 0 but 2.6 ms at
 * p90 and 9.3 ms at most, idle while requests queued (docs/performance.md).
 */
#include "hostpid.h"

#include "tfpm.h"

#include <dlfcn.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "php.h"
#include "php_variables.h"

#define HELLO_WAIT_MS 5000

static int chan = -1;
static void (*import_environment)(zval *array);

void tfpm_host_pid_hello(int fd)
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, WIRE_HELLO, (long)getpid());
    if (n <= 0 || send(fd, msg, (size_t)n, MSG_NOSIGNAL) != n)
        _exit(71);
    chan = fd;
}

void tfpm_host_pid_await(void)
{
    if (chan < 0)
        return;
    int fd = chan;
    chan = -1;
    char msg[64];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, HELLO_WAIT_MS) == 1) {
        int n = (int)recv(fd, msg, sizeof msg - 1, 0);
        long host = 0;
        if (n > 0) {
            msg[n] = 0;
            if (sscanf(msg, WIRE_PID, &host) == 1 && host > 0) {
                char v[24];
                snprintf(v, sizeof v, "%ld", host);
                setenv(WIRE_HOST_PID_ENV, v, 1);
            }
        }
    }
    close(fd);
}

static void import_environment_awaited(zval *array)
{
    tfpm_host_pid_await();
    import_environment(array);
}

void tfpm_host_pid_hook(void)
{
    import_environment = php_import_environment_variables;
    php_import_environment_variables = import_environment_awaited;
}

/* libc's process starters, each waiting first. real_: the definition this one covers
 * (dlsym(RTLD_NEXT): libc's, or a sanitizer's). An environment passed as `environ`, read
 * before the wait, is passed as it is after it (setenv may have moved it). */
#define REAL(name) \
    static __typeof__(name) *real_; \
    if (!real_) \
        real_ = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static char *const *awaited_env(char *const envp[])
{
    int was_environ = envp == environ;
    tfpm_host_pid_await();
    return was_environ ? environ : envp;
}

TFPM_EXPORT pid_t fork(void)
{
    REAL(fork);
    tfpm_host_pid_await();
    return real_();
}

TFPM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    REAL(posix_spawn);
    return real_(pid, path, fa, attr, argv, awaited_env(envp));
}

TFPM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    REAL(posix_spawnp);
    return real_(pid, file, fa, attr, argv, awaited_env(envp));
}

TFPM_EXPORT FILE *popen(const char *command, const char *type)
{
    REAL(popen);
    tfpm_host_pid_await();
    return real_(command, type);
}

TFPM_EXPORT int system(const char *command)
{
    REAL(system);
    tfpm_host_pid_await();
    return real_(command);
}

TFPM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    REAL(execve);
    return real_(path, argv, awaited_env(envp));
}

TFPM_EXPORT int execv(const char *path, char *const argv[])
{
    REAL(execv);
    tfpm_host_pid_await();
    return real_(path, argv);
}

TFPM_EXPORT int execvp(const char *file, char *const argv[])
{
    REAL(execvp);
    tfpm_host_pid_await();
    return real_(file, argv);
}
