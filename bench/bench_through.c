/* bench_through — veild's own figures as a build/bench_* program, so that `make bench`
 * runs them: executes bench/through.sh on this build's programs (the sims, veil-proxy,
 * veil-enclave, veild, veil, veil-load). Figures only. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef VEIL_SOURCE_DIR
#error "VEIL_SOURCE_DIR must be defined (bench/bench.cmake does)"
#endif
#ifndef VEIL_BINARY_DIR
#error "VEIL_BINARY_DIR must be defined (bench/bench.cmake does)"
#endif

#define THROUGH_SCRIPT VEIL_SOURCE_DIR "/bench/through.sh"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: bench_through\n\n"
               "Runs " THROUGH_SCRIPT " on the programs in " VEIL_BINARY_DIR ":\n"
               "the whole local stack with veild in nitro mode, and veil-load --through against it:\n"
               "the time to first chunk veild adds, veild's CPU per relayed chunk, and the most\n"
               "idle SSE streams one veild holds with its RSS per stream (HOLD_STREAMS, default\n"
               "10000). About two minutes; BENCH_TIME_LIMIT caps each load run (default 60 s).\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "bench_through: no arguments expected (try --help)\n");
        return 2;
    }
    fflush(stdout);
    execlp("bash", "bash", THROUGH_SCRIPT, VEIL_BINARY_DIR, (char *)NULL);
    perror("bench_through: bash");
    return 1;
}
