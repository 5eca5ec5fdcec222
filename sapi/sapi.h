/* PHP's side (sapi.c): the engine started, and one request run. */
#ifndef TFPM_SAPI_H
#define TFPM_SAPI_H

#include "fcgi.h"
#include "scoreboard.h"

int tfpm_php_startup(void);
void tfpm_lock_admin_keys(void);
/* Run one request read from `r`, answering on its connection; the HTTP status. */
int tfpm_serve(struct fcgi_request *r, struct sb_slot *board);

#endif
