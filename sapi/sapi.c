/* The SAPI: PHP's callbacks for one FastCGI request, and running it (fpm_main.c's part).
 *
 * PHP calls back here for output, headers, the request body, cookies and $_SERVER; the
 * request's params are the web server's (FastCGI PARAMS), checked by the codec for length
 * and copied NUL-terminated before PHP sees them.
 */
#include "sapi.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <main/php.h>
#include <main/SAPI.h>
#include <main/php_main.h>
#include <main/php_variables.h>
#include <main/php_output.h>
#include <main/php_ini.h>
#include <main/http_status_codes.h>
#include <ext/standard/head.h>
#include <Zend/zend_ini.h>

#include "hostpid.h"
#include "request.h"
#include "tfpm.h"

struct tfpm_settings tfpm;

/* The request being served, NULL between requests. */
struct req {
    struct fcgi_request *r;
    struct fcgi_out out;
    char *strings;           /* names and values, NUL-terminated, one block */
    char **names, **values;
    int n;
    char *script;            /* the script to run (SCRIPT_FILENAME, resolved) */
    const char *path_info;   /* the part of SCRIPT_FILENAME past the script, if split */
    int finished;            /* fastcgi_finish_request() was called */
};
static struct req *cur;

/* A php.ini setting no extension registers (FPM's own cgi.* and fcgi.* keys). */
static zend_long ini_flag(const char *name, zend_long fallback)
{
    zend_long v;
    return cfg_get_long(name, &v) == SUCCESS ? v : fallback;
}

static const char *param(const char *name)
{
    for (int i = 0; cur && i < cur->n; i++)
        if (!strcmp(cur->names[i], name))
            return cur->values[i];
    return NULL;
}

/* --- callbacks ------------------------------------------------------- */

static size_t ub_write(const char *str, size_t len)
{
    if (!cur || cur->finished)
        return len;  /* after fastcgi_finish_request(): nobody listens */
    if (fcgi_write(&cur->out, FCGI_STDOUT, str, len)) {
        php_handle_aborted_connection();
        return 0;
    }
    return len;
}

static void flush(void *server_context)
{
    (void)server_context;
    if (cur && !cur->finished && fcgi_flush(&cur->out))
        php_handle_aborted_connection();
}

static const char *reason(int code)
{
    for (size_t i = 0; i < http_status_map_len; i++)
        if (http_status_map[i].code == code)
            return http_status_map[i].str;
    return "Unknown";
}

static int send_headers(sapi_headers_struct *h)
{
    char line[1024];
    int code = h->http_response_code ? h->http_response_code : 200;
    int status_sent = 0;
    if (code != 200) {
        const char *sp = h->http_status_line ? strchr(h->http_status_line, ' ') : NULL;
        int n = sp ? snprintf(line, sizeof line, "Status:%s\r\n", sp)
                   : snprintf(line, sizeof line, "Status: %d %s\r\n", code, reason(code));
        if (n > 0 && (size_t)n < sizeof line)
            ub_write(line, (size_t)n);
        status_sent = 1;
    }
    zend_llist_position pos;
    for (sapi_header_struct *s = zend_llist_get_first_ex(&h->headers, &pos); s;
         s = zend_llist_get_next_ex(&h->headers, &pos)) {
        if (status_sent && s->header_len > 7 && !strncasecmp(s->header, "Status:", 7))
            continue;
        ub_write(s->header, s->header_len);
        ub_write("\r\n", 2);
    }
    ub_write("\r\n", 2);
    return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t read_post(char *buf, size_t n)
{
    size_t got = 0;
    while (cur && got < n) {
        long k = fcgi_read_stdin(cur->r, buf + got, n - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    return got;
}

static char *read_cookies(void)
{
    return (char *)param("HTTP_COOKIE");
}

static char *tfpm_getenv(const char *name, size_t len)
{
    if (len == sizeof WIRE_HOST_PID_ENV - 1 && !memcmp(name, WIRE_HOST_PID_ENV, len))
        tfpm_host_pid_await();  /* not a param: libc's getenv() reads it next */
    for (int i = 0; cur && i < cur->n; i++)
        if (strlen(cur->names[i]) == len && !memcmp(cur->names[i], name, len))
            return cur->values[i];
    return NULL;
}

static void register_variables(zval *track)
{
    php_import_environment_variables(track);
    for (int i = 0; cur && i < cur->n; i++) {
        size_t vlen = strlen(cur->values[i]), nlen;
        if (!cur->names[i][0])
            continue;
        char *value = cur->values[i];
        if (sapi_module.input_filter(PARSE_SERVER, cur->names[i], &value, vlen, &nlen))
            php_register_variable_safe(cur->names[i], value, nlen, track);
    }
    if (cur && cur->path_info) {
        size_t nlen;
        char *v = (char *)cur->path_info;
        if (sapi_module.input_filter(PARSE_SERVER, "PATH_INFO", &v, strlen(v), &nlen))
            php_register_variable_safe("PATH_INFO", v, nlen, track);
    }
    if (cur && cur->script) {
        size_t nlen;
        char *v = cur->script;
        if (sapi_module.input_filter(PARSE_SERVER, "SCRIPT_FILENAME", &v, strlen(v), &nlen))
            php_register_variable_safe("SCRIPT_FILENAME", v, nlen, track);
    }
    const char *self = param("SCRIPT_NAME");
    if (self) {
        size_t nlen;
        char *v = (char *)self;
        if (sapi_module.input_filter(PARSE_SERVER, "PHP_SELF", &v, strlen(v), &nlen))
            php_register_variable_safe("PHP_SELF", v, nlen, track);
    }
}

/* PHP's own messages (errors, error_log()) when no error_log file is set: to stderr, which
 * the master writes to the tenant's error.log as FPM does with catch_workers_output, and,
 * with fcgi.logging (on by default), to the web server as FastCGI stderr. */
static void log_message(const char *message, int syslog_type)
{
    (void)syslog_type;
    char line[8192];
    int n = snprintf(line, sizeof line, "NOTICE: PHP message: %s\n", message);
    if (n > 0)
        (void)fcgi_write_all(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n
                                                                         : sizeof line - 1);
    if (cur && !cur->finished && ini_flag("fcgi.logging", 1)) {
        n = snprintf(line, sizeof line, "PHP message: %s\n", message);
        if (n > 0)
            fcgi_write(&cur->out, FCGI_STDERR, line, (size_t)n < sizeof line ? (size_t)n
                                                                              : sizeof line - 1);
    }
}

static int startup(sapi_module_struct *m)
{
    return php_module_startup(m, NULL);
}

/* --- fastcgi_finish_request() and friends ------------------------------- */

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_finish, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()
ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_headers, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()

/* The response is complete: what is buffered and END_REQUEST, then, unless the web server
 * asked to keep the connection, the end of our side of it. nginx without fastcgi_keep_conn
 * (its default, and Debian's snippet for PHP-FPM) answers its client at that end, not at
 * END_REQUEST: without it, a response after fastcgi_finish_request() waited for the script,
 * and every response for what the worker does after it (FPM's fcgi_close() shuts down there
 * too). The rest of an unread body is skipped after the script (worker.c). */
static void respond_end(struct req *q, uint32_t app_status)
{
    fcgi_end(&q->out, app_status);
    if (!q->r->keep_conn)
        shutdown(q->r->fd, SHUT_WR);
}

/* The response is complete for the web server; the script goes on (FPM's semantics). */
static ZEND_FUNCTION(fastcgi_finish_request)
{
    ZEND_PARSE_PARAMETERS_NONE();
    if (!cur || cur->finished)
        RETURN_FALSE;
    php_output_end_all();
    php_header();
    respond_end(cur, 0);
    cur->finished = 1;
    RETURN_TRUE;
}

/* The request's HTTP headers by their names (FPM and Apache offer it). */
static ZEND_FUNCTION(getallheaders)
{
    ZEND_PARSE_PARAMETERS_NONE();
    array_init(return_value);
    for (int i = 0; cur && i < cur->n; i++) {
        const char *k = cur->names[i];
        char name[256];
        size_t j = 0;
        if (!strncmp(k, "HTTP_", 5)) {
            k += 5;
        } else if (strcmp(k, "CONTENT_TYPE") && strcmp(k, "CONTENT_LENGTH")) {
            continue;
        }
        int upper = 1;
        for (; *k && j < sizeof name - 1; k++, j++) {
            if (*k == '_') {
                name[j] = '-';
                upper = 1;
            } else {
                name[j] = upper ? *k : (char)tolower((unsigned char)*k);
                upper = 0;
            }
        }
        name[j] = 0;
        add_assoc_string_ex(return_value, name, j, cur->values[i]);
    }
}

static const zend_function_entry functions[] = {
    ZEND_FE(fastcgi_finish_request, arginfo_finish)
    ZEND_FE(getallheaders, arginfo_headers)
    ZEND_FALIAS(apache_request_headers, getallheaders, arginfo_headers)
    ZEND_FE_END
};

static sapi_module_struct module = {
    .name = TFPM_SAPI_NAME,
    .pretty_name = "tenantfpm FastCGI (FPM-compatible)",
    .startup = startup,
    .shutdown = php_module_shutdown_wrapper,
    .ub_write = ub_write,
    .flush = flush,
    .getenv = tfpm_getenv,
    .sapi_error = php_error,
    .send_headers = send_headers,
    .read_post = read_post,
    .read_cookies = read_cookies,
    .register_server_variables = register_variables,
    .log_message = log_message,
    .php_ini_ignore_cwd = 1,
};

/* "8.2.36" and "8.2.12": the same minor release, whose ABI PHP keeps for extensions (and
 * this SAPI) across its patch releases. The engine is the program's (php-cgi) or
 * libphp8.2.so's: either may be upgraded apart from the headers this was built with. */
static int same_minor(const char *engine, const char *built)
{
    const char *dot = strchr(built, '.');
    dot = dot ? strchr(dot + 1, '.') : NULL;
    size_t n = dot ? (size_t)(dot - built) + 1 : strlen(built) + 1;
    return engine && strncmp(engine, built, n) == 0;
}

int tfpm_php_startup(void)
{
    sapi_startup(&module);
    module.php_ini_path_override = (char *)tfpm.ini_path;
    module.additional_functions = functions;
    /* the values FPM hard-codes for its children (fpm_php_init_child) */
    module.ini_entries = NULL;
    if (module.startup(&module) == FAILURE)
        return -1;
    if (!same_minor(zend_get_module_version("Core"), PHP_VERSION)) {
        fprintf(stderr, "the PHP engine is %s; this SAPI was built for PHP %s: rebuild it "
                        "(make sapi) against this PHP's headers\n",
                zend_get_module_version("Core"), PHP_VERSION);
        return -1;
    }
    tfpm_host_pid_hook();
    return 0;
}

/* The tenant's [ini] keys: only the php.ini may set them (SPEC: the admin's). */
void tfpm_lock_admin_keys(void)
{
    for (int i = 0; i < tfpm.n_admin_keys; i++) {
        zend_ini_entry *e = zend_hash_str_find_ptr(EG(ini_directives), tfpm.admin_keys[i],
                                                   strlen(tfpm.admin_keys[i]));
        if (e)
            e->modifiable = ZEND_INI_SYSTEM;
    }
}

static int is_admin_key(const char *key, size_t len)
{
    for (int i = 0; i < tfpm.n_admin_keys; i++)
        if (strlen(tfpm.admin_keys[i]) == len && !memcmp(tfpm.admin_keys[i], key, len))
            return 1;
    return 0;
}

/* PHP_VALUE / PHP_ADMIN_VALUE: "key=value" lines, as FPM applies them, for this request
 * only (restored at its end), never over the tenant's [ini]. */
static void apply_ini_param(const char *text, int mode)
{
    char *copy = estrdup(text);
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        char *k = line, *ke = eq, *v = eq + 1, *ve = v + strlen(v);
        while (*k == ' ' || *k == '\t')
            k++;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        while (*v == ' ' || *v == '\t')
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
            ve--;
        if (ve - v >= 2 && *v == '"' && ve[-1] == '"')
            v++, ve--;
        if (ke == k || is_admin_key(k, (size_t)(ke - k)))
            continue;
        zend_string *name = zend_string_init(k, (size_t)(ke - k), 0);
        zend_alter_ini_entry_chars(name, v, (size_t)(ve - v), mode, PHP_INI_STAGE_HTACCESS);
        zend_string_release(name);
    }
    efree(copy);
}

/* --- one request ------------------------------------------------------- */

static int copy_params(struct req *q)
{
    struct fcgi_request *r = q->r;
    size_t need = 0;
    for (int i = 0; i < r->npairs; i++)
        need += r->pairs[i].name_len + r->pairs[i].value_len + 2;
    q->strings = malloc(need ? need : 1);
    q->names = malloc(sizeof(char *) * (size_t)(r->npairs ? r->npairs : 1));
    q->values = malloc(sizeof(char *) * (size_t)(r->npairs ? r->npairs : 1));
    if (!q->strings || !q->names || !q->values)
        return -1;
    char *p = q->strings;
    for (int i = 0; i < r->npairs; i++) {
        q->names[i] = p;
        memcpy(p, r->pairs[i].name, r->pairs[i].name_len);
        p += r->pairs[i].name_len;
        *p++ = 0;
        q->values[i] = p;
        memcpy(p, r->pairs[i].value, r->pairs[i].value_len);
        p += r->pairs[i].value_len;
        *p++ = 0;
    }
    q->n = r->npairs;
    return 0;
}

/* SCRIPT_FILENAME as the web server sent it, made a file: Apache's mod_proxy_fcgi sends
 * "proxy:fcgi://host/path"; with cgi.fix_pathinfo a trailing "/extra" that is no file is
 * split off as PATH_INFO. NULL: no such script. A path longer than PATH_MAX names no file
 * (and would cost a stat() per slash), and the walk goes backwards once, a run of slashes
 * one step: the cost is linear in the path, whatever a client sends. */
static char *resolve_script(struct req *q)
{
    const char *s = param("SCRIPT_FILENAME");
    if (!s || !*s)
        return NULL;
    if (!strncmp(s, "proxy:fcgi://", 13)) {
        s = strchr(s + 13, '/');
        if (!s)
            return NULL;
    }
    if (strlen(s) >= PATH_MAX)
        return NULL;
    char *path = strdup(s);
    if (!path)
        return NULL;
    char *query = strchr(path, '?');  /* mod_proxy_fcgi may append the query */
    if (query && !strncmp(s, "proxy:", 6))
        *query = 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
        return path;
    if (!ini_flag("cgi.fix_pathinfo", 1)) {
        free(path);
        return NULL;
    }
    char *end = path + strlen(path);
    while (end > path) {
        while (end > path && end[-1] != '/')  /* back to the slash before this component */
            end--;
        while (end > path + 1 && end[-2] == '/')  /* a run of slashes is one cut */
            end--;
        if (end <= path + 1)
            break;
        end[-1] = 0;
        end--;
        if (stat(path, &st) == 0) {
            if (!S_ISREG(st.st_mode))
                break;
            if (!param("PATH_INFO"))
                q->path_info = s + strlen(path);  /* s: the same path, not cut */
            return path;
        }
    }
    free(path);
    return NULL;
}

static int extension_allowed(const char *path)
{
    const char *list = tfpm.limit_extensions;
    if (!list || !*list)
        return 1;
    size_t plen = strlen(path);
    while (*list) {
        while (*list == ' ')
            list++;
        size_t n = strcspn(list, " ");
        if (n && plen >= n && !memcmp(path + plen - n, list, n))
            return 1;
        list += n;
    }
    return 0;
}

/* What PHP is told of the request before its startup, and the web server's ini values. */
static void set_request_info(struct req *q, const char *method)
{
    SG(server_context) = q;
    SG(request_info).request_method = method;
    SG(request_info).query_string = (char *)param("QUERY_STRING");
    SG(request_info).request_uri = (char *)param("SCRIPT_NAME");
    SG(request_info).content_type = param("CONTENT_TYPE");
    const char *cl = param("CONTENT_LENGTH");
    SG(request_info).content_length = cl && *cl ? atoll(cl) : 0;
    if (SG(request_info).content_length < 0)
        SG(request_info).content_length = 0;
    SG(request_info).path_translated = q->script;
    SG(request_info).auth_user = SG(request_info).auth_password = NULL;
    SG(request_info).auth_digest = NULL;
    SG(sapi_headers).http_response_code = 200;
    const char *ini = param("PHP_VALUE");
    if (ini)
        apply_ini_param(ini, ZEND_INI_USER);
    ini = param("PHP_ADMIN_VALUE");
    if (ini)
        apply_ini_param(ini, ZEND_INI_SYSTEM);
}

/* The script, or FPM's answers when there is none or it may not run. */
static void run_script(struct req *q)
{
    if (!q->script) {
        const char *sf = param("SCRIPT_FILENAME");
        zend_try {
            SG(sapi_headers).http_response_code = 404;
            PUTS("File not found.\n");
        } zend_end_try();
        char line[1200];
        int n = snprintf(line, sizeof line, "Primary script unknown%s%.1024s\n",
                         sf ? ": " : "", sf ? sf : "");
        fcgi_write(&q->out, FCGI_STDERR, line, n > 0 ? (size_t)n : 0);
    } else if (!extension_allowed(q->script)) {
        zend_try {
            SG(sapi_headers).http_response_code = 403;
            PUTS("Access denied.\n");
        } zend_end_try();
    } else {
        zend_file_handle fh;
        zend_stream_init_filename(&fh, q->script);
        fh.primary_script = 1;
        php_execute_script(&fh);
        zend_destroy_file_handle(&fh);
    }
}

/* The response headers access.format names, copied before PHP frees them. */
static void capture_headers(struct access_entry *e)
{
    static char values[WIRE_ACCESS_MAX_HEADERS][256];
    const char *names[WIRE_ACCESS_MAX_HEADERS];
    int n = access_headers(names);
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        e->header_values[i] = NULL;
        zend_llist_position pos;
        for (sapi_header_struct *h = zend_llist_get_first_ex(&SG(sapi_headers).headers, &pos);
             h; h = zend_llist_get_next_ex(&SG(sapi_headers).headers, &pos)) {
            if (h->header_len > nl && h->header[nl] == ':' &&
                !strncasecmp(h->header, names[i], nl)) {
                const char *v = h->header + nl + 1;
                while (*v == ' ')
                    v++;
                snprintf(values[i], sizeof values[i], "%s", v);
                e->header_values[i] = values[i];
                break;
            }
        }
    }
}

int tfpm_serve(struct fcgi_request *r, struct sb_slot *board)
{
    struct req q = {.r = r};
    struct request_clock clock;
    int status = 500;
    size_t peak = 0;
    fcgi_out_init(&q.out, r->fd, r->id);
    if (copy_params(&q)) {
        request_begin(board, &clock, NULL, NULL, NULL, NULL);
        respond_end(&q, 1);
        goto out;
    }
    cur = &q;
    q.script = resolve_script(&q);
    const char *method = param("REQUEST_METHOD");
    request_begin(board, &clock, method, param("REQUEST_URI"), q.script,
                  param("CONTENT_LENGTH"));

    set_request_info(&q, method);
    if (php_request_startup() == FAILURE) {
        respond_end(&q, 1);
        goto out;
    }
    const char *auth = param("HTTP_AUTHORIZATION");
    if (auth)
        php_handle_auth_data(auth);
    run_script(&q);
    status = SG(sapi_headers).http_response_code;
    peak = zend_memory_peak_usage(1);
    struct access_entry entry = {.param = param};
    if (tfpm.access_fd >= 0)
        capture_headers(&entry);
    php_request_shutdown(NULL);
    if (!q.finished)
        respond_end(&q, 0);
    request_log(&entry, &clock, status, peak);
out:
    request_end(board, &clock, status, peak);
    SG(server_context) = NULL;
    cur = NULL;
    free(q.script);
    free(q.strings);
    free(q.names);
    free(q.values);
    return status;
}
