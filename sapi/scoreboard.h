/* A worker's slot in the scoreboard, shared with the master (tenantfpm/pyworker/scoreboard.py
 * is the other side and the reference for this layout: same page, same seqlock).
 *
 * The master creates a sealed memfd per worker and passes it at fork; the worker maps it
 * and is its only writer. A sequence number, odd while a write is under way, lets the
 * master (which preads, never maps) detect a torn copy. The master checks every field:
 * this page is the tenant's to scribble on.
 */
#ifndef TFPM_SCOREBOARD_H
#define TFPM_SCOREBOARD_H

#include <stddef.h>
#include <stdint.h>

enum { SB_STARTING, SB_IDLE, SB_READING, SB_RUNNING, SB_EXITING };

struct __attribute__((packed)) sb_numbers {
    uint8_t state;
    uint8_t pad[7];
    uint64_t requests;        /* completed */
    uint64_t accepted;        /* connections accepted */
    double request_start;     /* CLOCK_MONOTONIC seconds when the current/last request began */
    int64_t content_length;   /* -1: none */
    double last_duration;     /* seconds; -1: none yet */
    double last_cpu;          /* CPU seconds of the last request */
    double last_cpu_percent;
    uint64_t last_memory;     /* peak memory of the last request, bytes */
    uint16_t last_status;
};

struct sb_slot {  /* members after seq have alignment 1: no padding */
    uint64_t seq;
    struct sb_numbers n;
    char method[64];
    char uri[1024];
    char script[1024];
    char fatal[512];
};

_Static_assert(sizeof(struct sb_numbers) == 74, "layout shared with scoreboard.py");
_Static_assert(offsetof(struct sb_slot, method) == 82 && offsetof(struct sb_slot, fatal) == 82 + 64 + 2048,
               "layout shared with scoreboard.py");

/* Map the page on fd; NULL when there is none (the worker then runs without one). */
struct sb_slot *sb_attach(int fd);
/* Publish numbers (and the texts when `texts`): seq odd, write, seq even. */
void sb_begin(struct sb_slot *s);
void sb_end(struct sb_slot *s);
void sb_text(char *dst, unsigned size, const char *src, unsigned long len);
double sb_now(void);

#endif
