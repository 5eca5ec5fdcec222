/* The spare's rehearsal (rehearse.c). */
#ifndef TFPM_REHEARSE_H
#define TFPM_REHEARSE_H

/* Whether a spare may run PHP's request start and end with no request (only PHP's own
 * extensions loaded, no session.auto_start, no output_handler), and doing it. */
int tfpm_rehearsal_safe(void);
void tfpm_rehearse(void);

#endif
