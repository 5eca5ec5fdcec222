/* What every file of the SAPI shares: the settings the master gave the zygote, and the
 * names the engine-hosted build may export. Each file declares its own functions in its
 * own header (zygote.h, warm.h, sapi.h, worker.h, ...). */
#ifndef TFPM_H
#define TFPM_H

#include "wire.h"

/* What the linker may bind from outside: everything else is hidden in the engine-hosted
 * build (tenantfpm-php.so, -fvisibility=hidden), so no name of ours can be taken for one
 * of the PHP binary's, nor one of its for ours. */
#define TFPM_EXPORT __attribute__((visibility("default")))

#define TFPM_SAPI_NAME "fpm-fcgi"  /* opcache's list and apps' PHP_SAPI checks: as FPM */

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

#endif
