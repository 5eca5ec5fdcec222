/* The zygote as a program of its own, linked against Debian's libphp8.2-embed (the
 * `libphp` engine; engine.c carries the same zygote into the php-cgi binary instead). */
#include "warm.h"
#include "zygote.h"

int main(int argc, char **argv)
{
    return tfpm_entry(argc, argv, tfpm_main);
}
