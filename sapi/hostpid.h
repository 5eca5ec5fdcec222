/* The worker's host pid (hostpid.c). */
#ifndef TFPM_HOSTPID_H
#define TFPM_HOSTPID_H

/* The worker's hello on its channel to the master; the wait for the answer
 * (WIRE_HOST_PID_ENV), done once where the environment is first read; the hooks that do
 * it (after PHP's startup). */
void tfpm_host_pid_hello(int fd);
void tfpm_host_pid_await(void);
void tfpm_host_pid_hook(void);

#endif
