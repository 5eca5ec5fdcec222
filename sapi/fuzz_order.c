/* libFuzzer target for the warm PHP's order parser (order.c): whatever bytes arrive, the
 * parse reads and writes nothing out of bounds (AddressSanitizer) and hits no undefined
 * behaviour (UBSan); a parse that succeeds leaves every string NUL-terminated and every
 * count within its array. The order comes from the spawn server, root's, but a parser is
 * cheaper to prove than to trust. */
#include "order.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char buf[ORDER_MAX_SIZE];
static char arena[ORDER_MAX_SIZE * 2];
static struct order o;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > sizeof buf)
        return 0;
    memcpy(buf, data, size);  /* the parse may point into it, as into warm.c's */
    if (order_parse(buf, size, arena, &o))
        return 0;
    size_t sum = strlen(o.cwd) + strlen(o.hostname) + strlen(o.new_root);
    for (int i = 0; i < o.argc; i++)
        sum += strlen(o.argv[i]);
    for (int i = 0; i < o.envc; i++)
        sum += strlen(o.envp[i]);
    for (int i = 0; i < o.ncgroups; i++)
        sum += strlen(o.cgroups[i]);
    for (int i = 0; i < o.nsteps; i++)
        sum += strlen(o.steps[i].op) + strlen(o.steps[i].target) + strlen(o.steps[i].kind);
    if (o.argv[o.argc] || o.envp[o.envc] || sum > sizeof arena)
        abort();
    return 0;
}
