/* libFuzzer target for the FastCGI codec: whatever bytes a client sends, reading a request
 * and its body never reads or writes out of bounds (AddressSanitizer) nor hits undefined
 * behaviour (UBSan). The input is served from a memfd standing in for the connection;
 * answers (FCGI_GET_VALUES_RESULT, END_REQUEST for unknown roles) go to /dev/null. */
#include "fcgi.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int sink = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (sink < 0)
        sink = open("/dev/null", O_WRONLY);
    int fd = memfd_create("fuzz", 0);
    if (fd < 0)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    lseek(fd, 0, SEEK_SET);

    /* params alone, as a buffer */
    struct fcgi_param pairs[64];
    (void)fcgi_params_parse(data, size, pairs, 64);

    /* the connection: requests one after another, bodies read to their end */
    struct fcgi_request r = {.fd = fd};
    fcgi_conn_start(&r);
    for (int i = 0; i < 4; i++) {
        fcgi_request_reset(&r);
        r.fd = fd;
        if (fcgi_read_request(&r))
            break;
        for (int k = 0; k < r.npairs; k++) {
            volatile char c = 0;
            if (r.pairs[k].name_len)
                c ^= r.pairs[k].name[r.pairs[k].name_len - 1];
            if (r.pairs[k].value_len)
                c ^= r.pairs[k].value[r.pairs[k].value_len - 1];
            (void)c;
        }
        (void)fcgi_getparam(&r, "SCRIPT_FILENAME", NULL);
        char body[1000];
        while (fcgi_read_stdin(&r, body, sizeof body) > 0)
            ;
        /* and an answer, to the sink */
        struct fcgi_out o;
        fcgi_out_init(&o, sink, r.id);
        fcgi_write(&o, FCGI_STDOUT, (const char *)data, size);
        fcgi_end(&o, 0);
        if (!r.keep_conn)
            break;
    }
    fcgi_request_free(&r);
    close(fd);
    return 0;
}
