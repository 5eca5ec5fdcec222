/* FastCGI codec: see fcgi.h. No PHP here, so it builds alone for the fuzzer. */
#include "fcgi.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define RECORD_MAX (FCGI_MAX_CONTENT + 255)

int fcgi_header_parse(const uint8_t raw[FCGI_HEADER_LEN], struct fcgi_header *h)
{
    if (raw[0] != FCGI_VERSION_1)
        return -1;
    h->type = raw[1];
    h->id = (uint16_t)(raw[2] << 8 | raw[3]);
    h->content_len = (uint16_t)(raw[4] << 8 | raw[5]);
    h->padding_len = raw[6];
    return 0;
}

void fcgi_header_make(uint8_t raw[FCGI_HEADER_LEN], uint8_t type, uint16_t id,
                      uint16_t content_len, uint8_t padding_len)
{
    raw[0] = FCGI_VERSION_1;
    raw[1] = type;
    raw[2] = (uint8_t)(id >> 8);
    raw[3] = (uint8_t)id;
    raw[4] = (uint8_t)(content_len >> 8);
    raw[5] = (uint8_t)content_len;
    raw[6] = padding_len;
    raw[7] = 0;
}

/* A name or value length: 1 byte below 128, else 4 bytes with the top bit set. */
static int length_at(const uint8_t *buf, size_t len, size_t *pos, size_t *out)
{
    if (*pos >= len)
        return -1;
    if (buf[*pos] < 0x80) {
        *out = buf[(*pos)++];
        return 0;
    }
    if (len - *pos < 4)
        return -1;
    *out = ((size_t)(buf[*pos] & 0x7f) << 24) | ((size_t)buf[*pos + 1] << 16) |
           ((size_t)buf[*pos + 2] << 8) | buf[*pos + 3];
    *pos += 4;
    return 0;
}

int fcgi_params_parse(const uint8_t *buf, size_t len, struct fcgi_param *out, int max)
{
    size_t pos = 0;
    int n = 0;
    while (pos < len) {
        size_t nl, vl;
        if (length_at(buf, len, &pos, &nl) || length_at(buf, len, &pos, &vl))
            return -1;
        if (nl > len - pos || vl > len - pos - nl || n >= max)
            return -1;
        out[n].name = (const char *)buf + pos;
        out[n].name_len = nl;
        out[n].value = (const char *)buf + pos + nl;
        out[n].value_len = vl;
        pos += nl + vl;
        n++;
    }
    return n;
}

static size_t put_length(uint8_t *out, size_t n)
{
    if (n < 0x80) {
        out[0] = (uint8_t)n;
        return 1;
    }
    out[0] = (uint8_t)(0x80 | (n >> 24));
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return 4;
}

size_t fcgi_param_encode(uint8_t *out, size_t room, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (nl > 0x7fffffff || vl > 0x7fffffff || room < 8 || nl + vl > room - 8)
        return 0;
    size_t pos = put_length(out, nl);
    pos += put_length(out + pos, vl);
    memcpy(out + pos, name, nl);
    memcpy(out + pos + nl, value, vl);
    return pos + nl + vl;
}

int fcgi_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* --- reading ---------------------------------------------------------- */

struct reader {
    uint8_t buf[8192];
    size_t pos, len;
};

static struct reader rd;  /* one connection at a time per process */

static void reader_reset(void)
{
    rd.pos = rd.len = 0;
}

static long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Exactly n bytes into dst (NULL: skip them), by `deadline` (CLOCK_MONOTONIC ms; 0: none):
 * one bound for the whole head, so a client trickling a byte at a time cannot hold the
 * worker longer than that. */
static int read_exact(struct fcgi_request *r, void *dst, size_t n, long deadline)
{
    uint8_t *d = dst;
    while (n) {
        if (rd.pos < rd.len) {
            size_t take = rd.len - rd.pos < n ? rd.len - rd.pos : n;
            if (d) {
                memcpy(d, rd.buf + rd.pos, take);
                d += take;
            }
            rd.pos += take;
            n -= take;
            continue;
        }
        if (deadline > 0) {
            long left = deadline - mono_ms();
            if (left <= 0)
                return -1;  /* the head did not arrive in time */
            struct pollfd p = {.fd = r->fd, .events = POLLIN};
            int rc = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
            if (rc < 0 && errno == EINTR)
                continue;
            if (rc <= 0)
                return -1;  /* the client sent nothing within the bound */
        }
        ssize_t got = read(r->fd, rd.buf, sizeof rd.buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        rd.pos = 0;
        rd.len = (size_t)got;
    }
    return 0;
}

static int read_header(struct fcgi_request *r, struct fcgi_header *h, long deadline)
{
    uint8_t raw[FCGI_HEADER_LEN];
    if (read_exact(r, raw, sizeof raw, deadline))
        return -1;
    return fcgi_header_parse(raw, h);
}

static int send_record(int fd, uint8_t type, uint16_t id, const uint8_t *body, uint16_t len)
{
    uint8_t head[FCGI_HEADER_LEN];
    fcgi_header_make(head, type, id, len, 0);
    struct iovec iov[2] = {{head, sizeof head}, {(void *)body, len}};
    ssize_t want = (ssize_t)(sizeof head + len);
    ssize_t n;
    do
        n = writev(fd, iov, 2);
    while (n < 0 && errno == EINTR);
    return n == want ? 0 : -1;
}

static int end_request(int fd, uint16_t id, uint32_t app_status, uint8_t protocol_status)
{
    uint8_t body[8] = {(uint8_t)(app_status >> 24), (uint8_t)(app_status >> 16),
                       (uint8_t)(app_status >> 8), (uint8_t)app_status, protocol_status,
                       0, 0, 0};
    return send_record(fd, FCGI_END_REQUEST, id, body, sizeof body);
}

/* FCGI_GET_VALUES: what this responder is (one connection, one request at a time). */
static int answer_get_values(struct fcgi_request *r, const uint8_t *content, size_t len)
{
    struct fcgi_param asked[16];
    int n = fcgi_params_parse(content, len, asked, 16);
    if (n < 0)
        return -1;
    uint8_t out[256];
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        const char *value = NULL, *name = NULL;
        if (asked[i].name_len == 14 && !memcmp(asked[i].name, "FCGI_MAX_CONNS", 14))
            name = "FCGI_MAX_CONNS", value = "1";
        else if (asked[i].name_len == 13 && !memcmp(asked[i].name, "FCGI_MAX_REQS", 13))
            name = "FCGI_MAX_REQS", value = "1";
        else if (asked[i].name_len == 15 && !memcmp(asked[i].name, "FCGI_MPXS_CONNS", 15))
            name = "FCGI_MPXS_CONNS", value = "0";
        if (name)
            pos += fcgi_param_encode(out + pos, sizeof out - pos, name, value);
    }
    return send_record(r->fd, FCGI_GET_VALUES_RESULT, 0, out, (uint16_t)pos);
}

static int append_params(struct fcgi_request *r, const uint8_t *data, size_t len)
{
    if (len > FCGI_PARAMS_MAX - r->params_len)
        return -1;
    if (r->params_len + len > r->params_cap) {
        size_t cap = r->params_cap ? r->params_cap : 4096;
        while (cap < r->params_len + len)
            cap *= 2;
        if (cap > FCGI_PARAMS_MAX)
            cap = FCGI_PARAMS_MAX;
        uint8_t *p = realloc(r->params, cap);
        if (!p)
            return -1;
        r->params = p;
        r->params_cap = cap;
    }
    memcpy(r->params + r->params_len, data, len);
    r->params_len += len;
    return 0;
}

void fcgi_conn_start(struct fcgi_request *r)
{
    (void)r;
    reader_reset();
}

int fcgi_read_request(struct fcgi_request *r)
{
    static uint8_t content[RECORD_MAX];
    long deadline = r->read_timeout_ms > 0 ? mono_ms() + r->read_timeout_ms : 0;
    while (!r->params_done) {
        struct fcgi_header h;
        if (read_header(r, &h, deadline))
            return -1;
        size_t total = (size_t)h.content_len + h.padding_len;
        if (read_exact(r, content, total, deadline))
            return -1;
        switch (h.type) {
        case FCGI_BEGIN_REQUEST:
            if (h.id == 0 || h.id == r->id || h.content_len < 8)
                return -1;
            if (r->id != 0) {  /* one request at a time, as the spec asks to say */
                if (end_request(r->fd, h.id, 0, FCGI_CANT_MPX_CONN))
                    return -1;
                break;
            }
            if ((content[0] << 8 | content[1]) != FCGI_RESPONDER) {
                if (end_request(r->fd, h.id, 0, FCGI_UNKNOWN_ROLE)
                    || !(content[2] & FCGI_KEEP_CONN))
                    return -1;
                break;
            }
            r->id = h.id;
            r->keep_conn = content[2] & FCGI_KEEP_CONN;
            break;
        case FCGI_PARAMS:
            if (r->id == 0 || h.id != r->id)
                break;  /* not the request being read */
            if (h.content_len == 0) {
                if (!r->pairs) {
                    r->pairs = calloc(FCGI_MAX_PARAMS, sizeof *r->pairs);
                    if (!r->pairs)
                        return -1;
                }
                r->npairs = fcgi_params_parse(r->params ? r->params : content, r->params_len,
                                              r->pairs, FCGI_MAX_PARAMS);
                if (r->npairs < 0)
                    return -1;
                r->params_done = 1;
            } else if (append_params(r, content, h.content_len)) {
                return -1;
            }
            break;
        case FCGI_GET_VALUES:
            if (h.id != 0 || answer_get_values(r, content, h.content_len))
                return -1;
            break;
        case FCGI_ABORT_REQUEST:  /* before it ran: it ends complete, the connection goes
                                   * on if it is kept */
            if (r->id && h.id == r->id) {
                int keep = r->keep_conn;
                if (end_request(r->fd, h.id, 0, FCGI_REQUEST_COMPLETE) || !keep)
                    return -1;
                fcgi_request_reset(r);
            }
            break;
        case FCGI_STDIN:
        case FCGI_DATA:
            if (r->id && h.id == r->id)
                return -1;  /* a body before the params ended */
            break;
        default:
            if (h.id == 0) {  /* a management record we do not know */
                uint8_t body[8] = {h.type};
                if (send_record(r->fd, FCGI_UNKNOWN_TYPE, 0, body, sizeof body))
                    return -1;
            }
            break;
        }
    }
    return 0;
}

long fcgi_read_stdin(struct fcgi_request *r, char *buf, size_t n)
{
    if (r->aborted)
        return -1;
    while (!r->stdin_done && r->stdin_left == 0) {
        if (r->stdin_pad && read_exact(r, NULL, r->stdin_pad, 0))
            goto broken;
        r->stdin_pad = 0;
        struct fcgi_header h;
        if (read_header(r, &h, 0))
            goto broken;
        if (h.type == FCGI_STDIN && h.id == r->id) {
            if (h.content_len == 0) {
                if (read_exact(r, NULL, h.padding_len, 0))
                    goto broken;
                r->stdin_done = 1;
            } else {
                r->stdin_left = h.content_len;
                r->stdin_pad = h.padding_len;
            }
        } else if (h.type == FCGI_ABORT_REQUEST && h.id == r->id) {
            goto broken;
        } else if (read_exact(r, NULL, (size_t)h.content_len + h.padding_len, 0)) {
            goto broken;  /* other records are skipped whole */
        }
    }
    if (r->stdin_done || n == 0)
        return 0;
    size_t take = n < r->stdin_left ? n : r->stdin_left;
    if (read_exact(r, buf, take, 0))
        goto broken;
    r->stdin_left -= take;
    return (long)take;
broken:
    r->aborted = 1;
    return -1;
}

const char *fcgi_getparam(const struct fcgi_request *r, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (int i = 0; i < r->npairs; i++) {
        if (r->pairs[i].name_len == nl && !memcmp(r->pairs[i].name, name, nl)) {
            if (len)
                *len = r->pairs[i].value_len;
            return r->pairs[i].value;
        }
    }
    return NULL;
}

void fcgi_request_reset(struct fcgi_request *r)
{
    r->id = 0;
    r->keep_conn = r->params_done = r->stdin_done = r->aborted = 0;
    r->params_len = 0;
    r->npairs = 0;
    r->stdin_left = r->stdin_pad = 0;
}

void fcgi_request_free(struct fcgi_request *r)
{
    free(r->params);
    free(r->pairs);
    r->params = NULL;
    r->pairs = NULL;
    r->params_cap = 0;
    fcgi_request_reset(r);
}

/* --- writing ---------------------------------------------------------- */

void fcgi_out_init(struct fcgi_out *o, int fd, uint16_t id)
{
    o->fd = fd;
    o->id = id;
    o->failed = 0;
    o->len = 0;
    o->type = 0;
}

int fcgi_flush(struct fcgi_out *o)
{
    if (o->len == 0 || o->failed) {
        o->len = 0;
        return o->failed ? -1 : 0;
    }
    fcgi_header_make(o->buf, o->type, o->id, (uint16_t)o->len, 0);
    if (fcgi_write_all(o->fd, o->buf, FCGI_HEADER_LEN + o->len))
        o->failed = 1;
    o->len = 0;
    return o->failed ? -1 : 0;
}

int fcgi_write(struct fcgi_out *o, uint8_t type, const char *data, size_t len)
{
    const size_t room = sizeof o->buf - FCGI_HEADER_LEN;
    if (o->failed)
        return -1;
    if (type != o->type && o->len && fcgi_flush(o))
        return -1;
    o->type = type;
    while (len) {
        if (o->len == 0 && len >= room) {  /* big writes skip the copy */
            uint8_t head[FCGI_HEADER_LEN];
            size_t chunk = len > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : len;
            fcgi_header_make(head, type, o->id, (uint16_t)chunk, 0);
            struct iovec iov[2] = {{head, sizeof head}, {(void *)data, chunk}};
            size_t want = sizeof head + chunk, done = 0;
            while (done < want) {
                ssize_t n = writev(o->fd, iov, 2);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0) {
                    o->failed = 1;
                    return -1;
                }
                done += (size_t)n;
                if (done < want) {  /* a short write: finish it plainly */
                    if (done < sizeof head) {
                        if (fcgi_write_all(o->fd, head + done, sizeof head - done)) {
                            o->failed = 1;
                            return -1;
                        }
                        done = sizeof head;
                    }
                    if (fcgi_write_all(o->fd, data + (done - sizeof head), want - done)) {
                        o->failed = 1;
                        return -1;
                    }
                    done = want;
                }
            }
            data += chunk;
            len -= chunk;
            continue;
        }
        size_t take = room - o->len < len ? room - o->len : len;
        memcpy(o->buf + FCGI_HEADER_LEN + o->len, data, take);
        o->len += take;
        data += take;
        len -= take;
        if (o->len == room && fcgi_flush(o))
            return -1;
    }
    return 0;
}

/* writev() all of it, retrying on EINTR and short writes; -1 on any other error. */
static int writev_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int fcgi_end(struct fcgi_out *o, uint32_t app_status)
{
    if (o->failed)
        return -1;
    uint8_t tail[2 * FCGI_HEADER_LEN + 8];
    fcgi_header_make(tail, FCGI_STDOUT, o->id, 0, 0);
    fcgi_header_make(tail + FCGI_HEADER_LEN, FCGI_END_REQUEST, o->id, 8, 0);
    uint8_t *body = tail + 2 * FCGI_HEADER_LEN;
    body[0] = (uint8_t)(app_status >> 24);
    body[1] = (uint8_t)(app_status >> 16);
    body[2] = (uint8_t)(app_status >> 8);
    body[3] = (uint8_t)app_status;
    body[4] = FCGI_REQUEST_COMPLETE;
    body[5] = body[6] = body[7] = 0;
    /* what is still buffered and the end of the request in one write: the web server
     * wakes once for the whole of a small response */
    struct iovec iov[2];
    int n = 0;
    if (o->len) {
        fcgi_header_make(o->buf, o->type, o->id, (uint16_t)o->len, 0);
        iov[n].iov_base = o->buf;
        iov[n++].iov_len = FCGI_HEADER_LEN + o->len;
        o->len = 0;
    }
    iov[n].iov_base = tail;
    iov[n++].iov_len = sizeof tail;
    if (writev_all(o->fd, iov, n))
        o->failed = 1;
    return o->failed ? -1 : 0;
}
