/* The spare's rehearsal: PHP's request start and end, run once with no request while the
 * spare waits for its order.
 *
 * A forked worker's first request writes to pages it still shares with the zygote (the
 * memory manager's heap, the engine's and extensions' per-request state), and each write
 * copies a page: about 160 faults with Debian's extensions, 40 left after a rehearsal. A
 * spare that rehearses pays for them before anybody waits (docs/performance.md: the
 * ondemand first request 2.65 -> 1.98 ms). It costs the idle spare the pages it wrote
 * (about 210 kB), which the worker would have written at its first request anyway.
 *
 * It runs no script, so none of the tenant's code (not even auto_prepend_file). What it
 * does run is every extension's request start and end, and only PHP's own extensions
 * (php-src's ext/, shipped with the engine) are known to do nothing there but set up
 * their memory: a third-party one may act (a debugger connecting to its client, an APM
 * agent opening a transaction), so with one loaded the spare does not rehearse. Nor with
 * session.auto_start (it would write a session) or an output_handler (a function the
 * script defines: the start would warn that it does not exist).
 */
#include "rehearse.h"

#include "tfpm.h"

#include <strings.h>

#include <main/php.h>
#include <main/SAPI.h>
#include <main/php_main.h>
#include <Zend/zend_extensions.h>
#include <Zend/zend_ini.h>

/* PHP 8.2's own extensions by their module names (php-src's ext/, less its test modules),
 * with the cgi-fcgi module of the php-cgi binary whose engine the SAPI may run in. */
static const char *const php_own[] = {
    "bcmath", "bz2", "calendar", "cgi-fcgi", "com_dotnet", "Core", "ctype", "curl", "date",
    "dba", "dom", "enchant", "exif", "FFI", "fileinfo", "filter", "ftp", "gd", "gettext",
    "gmp", "hash", "iconv", "imap", "intl", "json", "ldap", "libxml", "mbstring", "mysqli",
    "mysqlnd", "oci8", "odbc", "openssl", "pcntl", "pcre", "PDO", "pdo_dblib", "pdo_firebird",
    "pdo_mysql", "pdo_oci", "pdo_odbc", "pdo_pgsql", "pdo_sqlite", "pgsql", "Phar", "posix",
    "pspell", "random", "readline", "Reflection", "session", "shmop", "SimpleXML", "snmp",
    "soap", "sockets", "sodium", "SPL", "sqlite3", "standard", "sysvmsg", "sysvsem",
    "sysvshm", "tidy", "tokenizer", "xml", "xmlreader", "xmlwriter", "xsl", "Zend OPcache",
    "zip", "zlib",
};

static int is_php_own(const char *name)
{
    for (size_t i = 0; i < sizeof php_own / sizeof php_own[0]; i++)
        if (name && !strcasecmp(name, php_own[i]))
            return 1;
    return 0;
}

int tfpm_rehearsal_safe(void)
{
    zend_module_entry *m;
    ZEND_HASH_FOREACH_PTR(&module_registry, m) {
        if (!is_php_own(m->name))
            return 0;
    } ZEND_HASH_FOREACH_END();
    zend_llist_position pos;
    for (zend_extension *e = zend_llist_get_first_ex(&zend_extensions, &pos); e;
         e = zend_llist_get_next_ex(&zend_extensions, &pos))
        if (!is_php_own(e->name))
            return 0;
    const char *handler = zend_ini_string_ex("output_handler", sizeof "output_handler" - 1,
                                             0, NULL);
    return !zend_ini_long("session.auto_start", sizeof "session.auto_start" - 1, 0) &&
           !(handler && *handler);
}

void tfpm_rehearse(void)
{
    SG(server_context) = NULL;
    memset(&SG(request_info), 0, sizeof SG(request_info));
    SG(sapi_headers).http_response_code = 200;
    if (php_request_startup() == SUCCESS)
        php_request_shutdown(NULL);
}
