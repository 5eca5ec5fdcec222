/* The FastCGI responder's wire format: records in, records out (FastCGI 1.0).
 *
 * Everything read here comes from the web server's side of a socket any local
 * client may connect to, so every length is checked against what was actually
 * received before it is used. No multiplexing (FCGI_MPXS_CONNS = 0), as PHP-FPM.
 */
#ifndef TFPM_FCGI_H
#define TFPM_FCGI_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"  /* the protocol's numbers and our bounds: FCGI_* */

struct fcgi_header {
    uint8_t type;
    uint16_t id;
    uint16_t content_len;
    uint8_t padding_len;
};

/* One name/value pair, pointing into the params buffer (not NUL-terminated there). */
struct fcgi_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* 0 and the header, or -1: not version 1. */
int fcgi_header_parse(const uint8_t raw[FCGI_HEADER_LEN], struct fcgi_header *h);
void fcgi_header_make(uint8_t raw[FCGI_HEADER_LEN], uint8_t type, uint16_t id,
                      uint16_t content_len, uint8_t padding_len);

/* Decode a complete FCGI_PARAMS stream into at most `max` pairs: the count, or -1 when a
 * length runs past the end of the buffer or there are more than `max` pairs. */
int fcgi_params_parse(const uint8_t *buf, size_t len, struct fcgi_param *out, int max);

/* Encode one pair (for FCGI_GET_VALUES_RESULT): bytes written, or 0 if it does not fit. */
size_t fcgi_param_encode(uint8_t *out, size_t room, const char *name, const char *value);

/* A connection being read: the request's params so far, its id and flags. */
struct fcgi_request {
    int fd;
    uint16_t id;             /* 0: no FCGI_BEGIN_REQUEST yet */
    int keep_conn;
    int params_done;
    int stdin_done;
    int aborted;
    uint8_t *params;         /* the raw PARAMS stream, malloc'd, grows to FCGI_PARAMS_MAX */
    size_t params_len, params_cap;
    struct fcgi_param *pairs;
    int npairs;
    /* the current FCGI_STDIN record's unread bytes and padding */
    size_t stdin_left;
    size_t stdin_pad;
    int read_timeout_ms;     /* the whole request head must arrive within it; <= 0: none */
};

/* A new connection on r->fd: forget what was buffered from the previous one. */
void fcgi_conn_start(struct fcgi_request *r);

/* Read records until the request's params are complete. 0: ready to run; -1: the
 * connection closed, timed out or sent something malformed (drop it). */
int fcgi_read_request(struct fcgi_request *r);

/* Up to `n` bytes of the request body (FCGI_STDIN); 0 at its end; -1 on error. */
long fcgi_read_stdin(struct fcgi_request *r, char *buf, size_t n);

/* The value of a param, or NULL. `len` gets its length when not NULL. */
const char *fcgi_getparam(const struct fcgi_request *r, const char *name, size_t *len);

void fcgi_request_reset(struct fcgi_request *r);
void fcgi_request_free(struct fcgi_request *r);

/* Output: buffered FCGI_STDOUT / FCGI_STDERR records for the current request. */
struct fcgi_out {
    int fd;
    uint16_t id;
    int failed;              /* the peer went away: discard the rest */
    uint8_t type;            /* the stream of the record being filled */
    size_t len;
    uint8_t buf[FCGI_HEADER_LEN + 16384];
};

void fcgi_out_init(struct fcgi_out *o, int fd, uint16_t id);
int fcgi_write(struct fcgi_out *o, uint8_t type, const char *data, size_t len);
int fcgi_flush(struct fcgi_out *o);
/* Close the streams and send FCGI_END_REQUEST. */
int fcgi_end(struct fcgi_out *o, uint32_t app_status);

/* write() all of it, retrying on EINTR; -1 on any other error. */
int fcgi_write_all(int fd, const void *buf, size_t len);

#endif
