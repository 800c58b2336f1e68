/* bench_stack — the full-stack benchmark as a build/bench_* program, so that
 * `make bench` runs it: executes bench/stack.sh on this build's programs
 * (veil-bedrock-sim, veil-proxy, veil-enclave, veil-load). Figures only. */
#include "bench_script.h"

int main(int argc, char **argv)
{
    return bench_script_main(argc, argv, "bench_stack", VEIL_SOURCE_DIR "/bench/stack.sh",
                             "veil-bedrock-sim, veil-proxy and veil-enclave on temp sockets, veil-load\n"
                             "against them (several load shapes; the same short streams on a second\n"
                             "veil-enclave without its upstream pool, and the TTFC of each against direct\n"
                             "calls to the simulator), then summary tables. About 40 s; BENCH_TIME_LIMIT\n"
                             "caps each load run (default 20 s).\n");
}
