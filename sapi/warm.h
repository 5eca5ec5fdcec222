/* The warm PHP (warm.c): a zygote started before its tenant is known. */
#ifndef TFPM_WARM_H
#define TFPM_WARM_H

/* `-W`: load ahead, wait for the order, carry it out, then become the zygote (tfpm_main). */
int tfpm_warm_main(int argc, char **argv);

/* Which of the two a program's argv asks for. */
static inline int tfpm_entry(int argc, char **argv, int (*zygote)(int, char **))
{
    return argc > 1 && argv[1][0] == '-' && argv[1][1] == 'W' && !argv[1][2]
           ? tfpm_warm_main(argc, argv) : zygote(argc, argv);
}

#endif
