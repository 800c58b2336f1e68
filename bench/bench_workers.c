/* bench_workers — issue K's figure as a build/bench_* program, so that `make bench`
 * runs it: executes bench/workers.sh on this build's programs (veil-enclave with
 * --workers 1, then 2, under the same veil-load). Figures only. */
#include "bench_script.h"

int main(int argc, char **argv)
{
    return bench_script_main(argc, argv, "bench_workers", VEIL_SOURCE_DIR "/bench/workers.sh",
                             "veil-bedrock-sim and veil-proxy, then veil-enclave with --workers 1 and with\n"
                             "--workers 2 in turn under the same format-1 load from veil-load (pinned with\n"
                             "taskset to the last CPU, as are the simulator and the proxy), and prints chunks/s,\n"
                             "the enclave's CPU-seconds, chunks per enclave CPU-second and the ratios 2w/1w.\n"
                             "About 45 s; BENCH_WORKERS_SECONDS (8), BENCH_WORKERS_ROUNDS (2),\n"
                             "BENCH_WORKERS_STREAMS (32), BENCH_WORKERS_OPEN_EVERY (16),\n"
                             "BENCH_WORKERS_PIN_LOAD (the last CPU; none: no pinning).\n");
}
