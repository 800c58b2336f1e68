/* bench_workers — issue K's figure as a build/bench_* program, so that `make bench`
 * runs it: executes bench/workers.sh on this build's programs (veil-enclave with
 * --workers 1, then 2, under the same veil-load). Figures only. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef VEIL_SOURCE_DIR
#error "VEIL_SOURCE_DIR must be defined (bench/bench.cmake does)"
#endif
#ifndef VEIL_BINARY_DIR
#error "VEIL_BINARY_DIR must be defined (bench/bench.cmake does)"
#endif

#define WORKERS_SCRIPT VEIL_SOURCE_DIR "/bench/workers.sh"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        printf("Usage: bench_workers\n\n"
               "Runs " WORKERS_SCRIPT " on the programs in " VEIL_BINARY_DIR ":\n"
               "veil-bedrock-sim and veil-proxy, then veil-enclave with --workers 1 and with\n"
               "--workers 2 in turn under the same format-1 load from veil-load (pinned with\n"
               "taskset to the last CPU, as are the simulator and the proxy), and prints chunks/s,\n"
               "the enclave's CPU-seconds, chunks per enclave CPU-second and the ratios 2w/1w.\n"
               "About 45 s; BENCH_WORKERS_SECONDS (8), BENCH_WORKERS_ROUNDS (2),\n"
               "BENCH_WORKERS_STREAMS (32), BENCH_WORKERS_OPEN_EVERY (16),\n"
               "BENCH_WORKERS_PIN_LOAD (the last CPU; none: no pinning).\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "bench_workers: no arguments expected (try --help)\n");
        return 2;
    }
    fflush(stdout);
    execlp("bash", "bash", WORKERS_SCRIPT, VEIL_BINARY_DIR, (char *)NULL);
    perror("bench_workers: bash");
    return 1;
}
