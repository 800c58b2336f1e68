/* bench_stack — the full-stack benchmark as a build/bench_* program, so that
 * `make bench` runs it: executes bench/stack.sh on this build's programs
 * (veil-bedrock-sim, veil-proxy, veil-enclave, veil-load). Figures only. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef VEIL_SOURCE_DIR
#error "VEIL_SOURCE_DIR must be defined (bench/bench.cmake does)"
#endif
#ifndef VEIL_BINARY_DIR
#error "VEIL_BINARY_DIR must be defined (bench/bench.cmake does)"
#endif

#define STACK_SCRIPT VEIL_SOURCE_DIR "/bench/stack.sh"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: bench_stack\n\n"
               "Runs " STACK_SCRIPT " on the programs in " VEIL_BINARY_DIR ":\n"
               "veil-bedrock-sim, veil-proxy and veil-enclave on temp sockets, veil-load\n"
               "against them (several load shapes; the same short streams on a second\n"
               "veil-enclave without its upstream pool, and the TTFC of each against direct\n"
               "calls to the simulator), then summary tables. About 40 s; BENCH_TIME_LIMIT\n"
               "caps each load run (default 20 s).\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "bench_stack: no arguments expected (try --help)\n");
        return 2;
    }
    fflush(stdout);
    execlp("bash", "bash", STACK_SCRIPT, VEIL_BINARY_DIR, (char *)NULL);
    perror("bench_stack: bash");
    return 1;
}
