/* bench_script.h — what each build/bench_* program that runs a bench/ script shares:
 * --help, no arguments, then exec bash SCRIPT BUILD_DIR (so `make bench` runs it).
 * VEIL_SOURCE_DIR and VEIL_BINARY_DIR come from bench/bench.cmake. */
#ifndef VEIL_BENCH_SCRIPT_H
#define VEIL_BENCH_SCRIPT_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef VEIL_SOURCE_DIR
#error "VEIL_SOURCE_DIR must be defined (bench/bench.cmake does)"
#endif
#ifndef VEIL_BINARY_DIR
#error "VEIL_BINARY_DIR must be defined (bench/bench.cmake does)"
#endif

static int bench_script_main(int argc, char **argv, const char *name, const char *script, const char *help)
{
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: %s\n\nRuns %s on the programs in %s:\n%s", name, script, VEIL_BINARY_DIR, help);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "%s: no arguments expected (try --help)\n", name);
        return 2;
    }
    fflush(stdout);
    execlp("bash", "bash", script, VEIL_BINARY_DIR, (char *)NULL);
    fprintf(stderr, "%s: bash: ", name);
    perror(NULL);
    return 1;
}

#endif
