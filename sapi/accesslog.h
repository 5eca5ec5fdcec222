/* PHP-FPM's access.format (fpm_log.c), written by each worker for each request. */
#ifndef TFPM_ACCESSLOG_H
#define TFPM_ACCESSLOG_H

#include <stddef.h>
#include <time.h>

#include "wire.h"  /* the codes, and how many %{Name}o */


struct access_entry {
    const char *(*param)(const char *name);  /* a FastCGI param of the request, or NULL */
    int status;
    time_t started;
    double duration, cpu;    /* seconds */
    size_t memory;           /* bytes */
    long pid, ppid;
    /* the response headers the format names (%{Name}o), captured before PHP frees them */
    const char *header_values[WIRE_ACCESS_MAX_HEADERS];
};

/* Check and keep the format: 0, or -1 with a message in `err` (an unknown %-code). */
int access_compile(const char *format, char *err, size_t errlen);
/* The header names the format asks for (%{Name}o), in order; their count. */
int access_headers(const char *names[WIRE_ACCESS_MAX_HEADERS]);
/* One line, written with a single write() (the fd is O_APPEND, shared by all workers). */
void access_write(int fd, const char *pool, const struct access_entry *e);

#endif
