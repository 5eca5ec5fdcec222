/* access.log lines in PHP-FPM's access.format; see accesslog.h.
 *
 * The format is the admin's (checked by `tenantfpm check` and again here); the values are
 * the request's (any web client's: a User-Agent, a Basic auth user name), so every control
 * byte in them is written as \xNN: one request is one line, and no terminal escape
 * reaches whoever reads the log. A line is cut at the line buffer and never spans two
 * write()s. The descriptor is a pipe the master reads (tenantfpm/master/stdio.py), which
 * escapes again and writes access.log under the tenant's rate limit and size cap.
 */
#include "accesslog.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192
static const char *KNOWN = WIRE_ACCESS_CODES;
static const char *fmt;
static const char *header_names[WIRE_ACCESS_MAX_HEADERS];
static size_t header_lens[WIRE_ACCESS_MAX_HEADERS];
static int n_headers;

int access_compile(const char *format, char *err, size_t errlen)
{
    n_headers = 0;
    for (const char *p = format; *p; p++) {
        if (*p != '%')
            continue;
        const char *mod = NULL;
        size_t mod_len = 0;
        if (p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (!end)
                goto bad;
            mod = p + 2;
            mod_len = (size_t)(end - mod);
            p = end;
        }
        if (!p[1] || !strchr(KNOWN, p[1]))
            goto bad;
        p++;
        if (*p == 'o' && mod) {
            if (n_headers == WIRE_ACCESS_MAX_HEADERS) {
                snprintf(err, errlen, "access.format: more than %d %%{...}o", WIRE_ACCESS_MAX_HEADERS);
                return -1;
            }
            header_names[n_headers] = mod;
            header_lens[n_headers++] = mod_len;
        }
        continue;
bad:
        snprintf(err, errlen, "access.format: unknown code at '%.8s'", p);
        return -1;
    }
    fmt = format;
    return 0;
}

int access_headers(const char *names[WIRE_ACCESS_MAX_HEADERS])
{
    static char copies[WIRE_ACCESS_MAX_HEADERS][128];
    for (int i = 0; i < n_headers; i++) {
        size_t n = header_lens[i] < sizeof copies[i] ? header_lens[i] : sizeof copies[i] - 1;
        memcpy(copies[i], header_names[i], n);
        copies[i][n] = 0;
        names[i] = copies[i];
    }
    return n_headers;
}

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
};

/* the format's own text, as the admin wrote it */
static void put_raw(struct line *l, const char *s, size_t n)
{
    if (n > sizeof l->buf - 1 - l->len)
        n = sizeof l->buf - 1 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* a value: control characters (C0, DEL, and C1 in its UTF-8 form, U+0080-U+009F: a
 * terminal takes U+009B for CSI) as \xNN of their code point, as the python worker's
 * writer does; cut where the buffer ends */
static void put(struct line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!s)
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int c1 = c == 0xc2 && i + 1 < n && ((unsigned char)s[i + 1] & 0xe0) == 0x80;
        int control = c < 0x20 || c == 0x7f || c1;
        if ((control ? 4u : 1u) > sizeof l->buf - 1 - l->len)
            break;
        if (c1)
            c = (unsigned char)s[++i];
        if (control) {
            l->buf[l->len++] = '\\';
            l->buf[l->len++] = 'x';
            l->buf[l->len++] = hex[c >> 4];
            l->buf[l->len++] = hex[c & 15];
        } else {
            l->buf[l->len++] = (char)c;
        }
    }
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, s ? strlen(s) : 0);
}

static void putf(struct line *l, const char *f, double v)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, f, v);
    if (n > 0)
        put(l, tmp, (size_t)n);
}

static void putl(struct line *l, long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%ld", v);
    if (n > 0)
        put(l, tmp, (size_t)n);
}

static void put_time(struct line *l, const char *mod, size_t mod_len, time_t t)
{
    char f[128], out[256];
    struct tm tm;
    if (mod_len && mod_len < sizeof f) {
        memcpy(f, mod, mod_len);
        f[mod_len] = 0;
    } else {
        strcpy(f, "%d/%b/%Y:%H:%M:%S %z");
    }
    localtime_r(&t, &tm);
    size_t n = strftime(out, sizeof out, f, &tm);
    put(l, out, n);
}

static int mod_is(const char *mod, size_t len, const char *word)
{
    return len == strlen(word) && !strncmp(mod, word, len);
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

void access_write(int fd, const char *pool, const struct access_entry *e)
{
    struct line l = {.len = 0};
    int header = 0;
    if (!fmt || fd < 0)
        return;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_raw(&l, p, 1);
            continue;
        }
        const char *mod = "";
        size_t ml = 0;
        char name[128];
        if (p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            mod = p + 2;
            ml = (size_t)(end - mod);
            p = end;
        }
        size_t nl = ml < sizeof name ? ml : sizeof name - 1;
        memcpy(name, mod, nl);
        name[nl] = 0;
        const char *q = e->param("QUERY_STRING");
        switch (*++p) {
        case 'C': putf(&l, "%.2f", e->duration > 0 ? e->cpu / e->duration * 100.0 : 0.0); break;
        case 'd':
            if (mod_is(mod, ml, "microseconds") || mod_is(mod, ml, "micro"))
                putf(&l, "%.0f", e->duration * 1e6);
            else if (mod_is(mod, ml, "milliseconds") || mod_is(mod, ml, "mili") ||
                     mod_is(mod, ml, "milli"))
                putf(&l, "%.3f", e->duration * 1e3);
            else
                putf(&l, "%.3f", e->duration);
            break;
        case 'e': puts_(&l, or_dash(e->param(name))); break;
        case 'f': puts_(&l, or_dash(e->param("SCRIPT_FILENAME"))); break;
        case 'l': {
            const char *cl = e->param("CONTENT_LENGTH");
            puts_(&l, cl && *cl ? cl : "0");
            break;
        }
        case 'm': puts_(&l, or_dash(e->param("REQUEST_METHOD"))); break;
        case 'M': {
            size_t div = mod_is(mod, ml, "kilo") ? 1024 : mod_is(mod, ml, "mega") ? 1 << 20 : 1;
            putl(&l, (long)(e->memory / div));
            break;
        }
        case 'n': puts_(&l, pool); break;
        case 'o': puts_(&l, header < WIRE_ACCESS_MAX_HEADERS ? or_dash(e->header_values[header++])
                                                         : "-");
            break;
        case 'p': putl(&l, e->pid); break;
        case 'P': putl(&l, e->ppid); break;
        case 'q': puts_(&l, q ? q : ""); break;
        case 'Q': puts_(&l, q && *q ? "?" : ""); break;
        case 'r': {
            const char *u = e->param("REQUEST_URI");
            size_t n = u ? strcspn(u, "?") : 0;
            if (n)
                put(&l, u, n);
            else
                puts_(&l, "-");
            break;
        }
        case 'R': puts_(&l, or_dash(e->param("REMOTE_ADDR"))); break;
        case 's': putl(&l, e->status); break;
        case 't': put_time(&l, mod, ml, e->started); break;
        case 'T': put_time(&l, mod, ml, time(NULL)); break;
        case 'u': puts_(&l, e->param("REMOTE_USER")); break;
        case '%': put(&l, "%", 1); break;
        }
    }
    /* one line per request: the format's own newlines too (values have none left) */
    for (size_t i = 0; i < l.len; i++)
        if (l.buf[i] == '\n' || l.buf[i] == '\r')
            l.buf[i] = ' ';
    l.buf[l.len++] = '\n';
    ssize_t rc = write(fd, l.buf, l.len);
    (void)rc;
}
