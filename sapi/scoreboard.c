/* The worker's side of the scoreboard: see scoreboard.h. */
#include "scoreboard.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>

struct sb_slot *sb_attach(int fd)
{
    void *p = mmap(NULL, sizeof(struct sb_slot), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct sb_slot *s = p;
    sb_begin(s);  /* "nothing yet", as wire/scoreboard.py's Slot() says it */
    s->n.state = SB_STARTING;
    s->n.content_length = -1;
    s->n.last_duration = s->n.last_cpu = s->n.last_cpu_percent = -1.0;
    sb_end(s);
    return s;
}

void sb_begin(struct sb_slot *s)
{
    uint64_t *seq = (uint64_t *)(void *)s;
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void sb_end(struct sb_slot *s)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t *seq = (uint64_t *)(void *)s;
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
}

void sb_text(char *dst, unsigned size, const char *src, unsigned long len)
{
    if (!src)
        len = 0;
    if (len >= size)
        len = size - 1;
    if (len)
        memcpy(dst, src, len);
    memset(dst + len, 0, size - len);
}

double sb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
