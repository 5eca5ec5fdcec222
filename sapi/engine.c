/* The zygote inside Debian's php-cgi binary (the `php-cgi` engine): the same SAPI, with
 * PHP's engine from that executable instead of from libphp8.2.so.
 *
 * Why: Debian links libphp8.2.so without -Bsymbolic, so the library calls about 1,500 of
 * its own functions through the PLT and reaches executor_globals and compiler_globals
 * through the GOT; a WordPress request took 3-6% more CPU on it than on php-fpm8.2, a PIE
 * build of the same source whose calls and loads are direct (docs/performance.md).
 * php-cgi8.2 is such a PIE build too, and like every PHP binary it exports the engine's
 * symbols for the extensions it loads.
 *
 * How: the master execs the php-cgi binary with this library (tenantfpm-php.so) in
 * LD_PRELOAD. The loader binds the library's references to PHP (sapi_startup,
 * php_execute_script, executor_globals...) to the executable's definitions. The program's
 * start code calls __libc_start_main with php-cgi's main; this library defines that
 * function over libc's and hands libc the zygote's main instead: php-cgi's own main never
 * runs. Before that, LD_PRELOAD leaves the environment (a process a script starts loads
 * nothing of ours) and the process takes the zygote's name, as ps and top show it.
 */
#include "tfpm.h"
#include "warm.h"
#include "zygote.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef int (*main_fn)(int, char **, char **);
typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void),
                        void (*)(void), void *);

static int zygote_main(int argc, char **argv, char **envp)
{
    (void)envp;
    return tfpm_entry(argc, argv, tfpm_main);
}

TFPM_EXPORT int __libc_start_main(main_fn program_main, int argc, char **argv,
                                  void (*init)(void), void (*fini)(void),
                                  void (*rtld_fini)(void), void *stack_end)
{
    (void)program_main;
    start_fn libc_start = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    if (!libc_start) {
        static const char msg[] = "tenantfpm-php.so: libc's __libc_start_main not found\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(70);
    }
    unsetenv("LD_PRELOAD");
    prctl(PR_SET_NAME, "tenantfpm-php");
    return libc_start(zygote_main, argc, argv, init, fini, rtld_fini, stack_end);
}
