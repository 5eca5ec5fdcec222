/* A worker's slot in the scoreboard, shared with the master (its layout is
 * tenantfpm/wire/scoreboard.py's, generated into wire.h; the master reads it there).
 *
 * The master creates a sealed memfd per worker and passes it at fork; the worker maps it
 * and is its only writer. A sequence number, odd while a write is under way, lets the
 * master (which preads, never maps) detect a torn copy. The master checks every field:
 * this page is the tenant's to scribble on.
 */
#ifndef TFPM_SCOREBOARD_H
#define TFPM_SCOREBOARD_H

#include "wire.h"  /* struct sb_slot, the SB_ states */

/* Map the page on fd; NULL when there is none (the worker then runs without one). */
struct sb_slot *sb_attach(int fd);
/* Publish numbers (and the texts when `texts`): seq odd, write, seq even. */
void sb_begin(struct sb_slot *s);
void sb_end(struct sb_slot *s);
void sb_text(char *dst, unsigned size, const char *src, unsigned long len);
double sb_now(void);

#endif
