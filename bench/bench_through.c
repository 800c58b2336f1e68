/* bench_through — veild's own figures as a build/bench_* program, so that `make bench`
 * runs them: executes bench/through.sh on this build's programs (the sims, veil-proxy,
 * veil-enclave, veild, veil, veil-load). Figures only. */
#include "bench_script.h"

int main(int argc, char **argv)
{
    return bench_script_main(argc, argv, "bench_through", VEIL_SOURCE_DIR "/bench/through.sh",
                             "the whole local stack with veild in nitro mode, and veil-load --through against it:\n"
                             "the time to first chunk veild adds, veild's CPU per relayed chunk, and the most\n"
                             "idle SSE streams one veild holds with its RSS per stream (HOLD_STREAMS, default\n"
                             "10000). About two minutes; BENCH_TIME_LIMIT caps each load run (default 60 s).\n");
}
