/* The zygote: PHP started once, workers forked on the master's word (zygote.c). */
#ifndef TFPM_ZYGOTE_H
#define TFPM_ZYGOTE_H

/* The zygote's main, whichever program carries it (main.c, engine.c, warm.c). */
int tfpm_main(int argc, char **argv);

#endif
