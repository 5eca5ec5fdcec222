/* A request's bookkeeping (fpm_request.c's part): the scoreboard's stages and figures,
 * and the access.log entry, kept apart from running PHP (sapi.c). */
#ifndef TFPM_REQUEST_H
#define TFPM_REQUEST_H

#include <stddef.h>
#include <time.h>

#include "accesslog.h"
#include "scoreboard.h"

/* When a request began, by the three clocks its figures need. */
struct request_clock {
    double t0, cpu0;  /* CLOCK_MONOTONIC and CPU seconds */
    time_t started;   /* wall clock, for access.log's %t */
};

/* The worker's state in its slot (idle, reading, exiting); no slot, nothing. */
void request_state(struct sb_slot *b, int state);
/* A connection accepted. */
void request_accepted(struct sb_slot *b);
/* The request starts running: the clock starts, the slot shows what runs. */
void request_begin(struct sb_slot *b, struct request_clock *c, const char *method,
                   const char *uri, const char *script, const char *content_length);
/* It ended with `status`, its peak memory `peak`: the slot's figures. */
void request_end(struct sb_slot *b, const struct request_clock *c, int status, size_t peak);
/* Its access.log line (the entry's param and header_values already set), if the worker
 * keeps one. */
void request_log(struct access_entry *e, const struct request_clock *c, int status,
                 size_t peak);

#endif
