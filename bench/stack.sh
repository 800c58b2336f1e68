#!/usr/bin/env bash
# bench/stack.sh [BUILD_DIR] — the real veil processes on this machine, under load.
#
#   veil-bedrock-sim  a local Bedrock (TLS, SigV4 with static test credentials)
#   veil-proxy        the parent's CONNECT proxy (unix socket)
#   veil-enclave      the enclave daemon (unix socket, TLS to the sim through the proxy),
#                     twice: with its upstream pool (the default) and without (max idle 0)
#   veil-load         the parent: CHAT_STREAM requests, every chunk decrypted and checked
#
# Runs a few load shapes, the same short streams on the enclave with and without its
# pool of kept-alive Bedrock connections, the direct-to-sim TTFC baseline in the same
# run as the enclave path, and prints summary tables. Figures only, no pass/fail on timing;
# the exit status is non-zero only when a stream failed or the stack did not start.
# Everything lives in a temp dir and is always stopped (trap). Bounded: about a
# minute or two at most (BENCH_TIME_LIMIT caps each veil-load run, default 20 s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) BIN=$BUILD ;; *) BIN=$ROOT/$BUILD ;; esac
LIMIT=${BENCH_TIME_LIMIT:-20}
HOST=bedrock-runtime.us-east-1.amazonaws.com
AKID=AKIDBENCHSTACK
SECRET=bench-stack-secret
TOKEN=bench-stack-session-token

SELF=bench/stack.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_programs veil-bedrock-sim veil-proxy veil-enclave veil-load

bench_tmp veil-bench

echo "== bench/stack.sh: veil-bedrock-sim -> veil-proxy -> veil-enclave <- veil-load ($(nproc) cores;" \
     "other work on this machine shows up in the figures)"
"$ROOT/scripts/make-test-ca" "$TMP/ca" "$HOST" localhost
start bedrock-sim "$BIN/veil-bedrock-sim" --listen tcp:127.0.0.1:0 --cert "$TMP/ca/server.pem" \
    --key "$TMP/ca/server.key" --access-key-id "$AKID" --secret-access-key "$SECRET" --session-token "$TOKEN"
SIM_PORT=${ADDR##*:}
start proxy "$BIN/veil-proxy" --listen "unix:$TMP/proxy.sock" --allow "$HOST:$SIM_PORT" \
    --resolve "$HOST:$SIM_PORT:127.0.0.1"
PROXY_PID=$PID
start enclave "$BIN/veil-enclave" --listen "unix:$TMP/enclave.sock" --proxy "unix:$TMP/proxy.sock" \
    --bedrock-endpoint "$HOST:$SIM_PORT" --ca-file "$TMP/ca/ca.pem" --max-streams 2048 --nsm "sim:$TMP/nsm"
ENCLAVE_PID=$PID
# the same enclave without kept-alive connections: CONNECT + TLS handshake per stream
start enclave-nopool "$BIN/veil-enclave" --listen "unix:$TMP/enclave-nopool.sock" --proxy "unix:$TMP/proxy.sock" \
    --bedrock-endpoint "$HOST:$SIM_PORT" --ca-file "$TMP/ca/ca.pem" --max-streams 2048 --nsm "sim:$TMP/nsm" \
    --upstream-pool-max-idle 0
NOPOOL_PID=$PID

CREDS=(--access-key-id "$AKID" --secret-access-key "$SECRET" --session-token "$TOKEN")
SIM=(--sim "tcp:127.0.0.1:$SIM_PORT" --ca-file "$TMP/ca/ca.pem" "${CREDS[@]}")
COMMON=(--proxy-pid "$PROXY_PID" --time-limit "$LIMIT" --chunk-size 40) # 40-byte deltas, as bench_crypto seals
ON=(--enclave "unix:$TMP/enclave.sock" --enclave-pid "$ENCLAVE_PID")
OFF=(--enclave "unix:$TMP/enclave-nopool.sock" --enclave-pid "$NOPOOL_PID")
for e in enclave enclave-nopool; do
    "$BIN/veil-load" --enclave "unix:$TMP/$e.sock" --set-credentials "${CREDS[@]}" --total 0 > /dev/null
done

kvget() { local v; v=$(grep -m1 "^$2=" "$TMP/$1.kv" 2>/dev/null | cut -d= -f2-); echo "${v:--}"; }
status=0
runs=()
# go NAME VEIL-LOAD-ARGS...: one configuration; its figures go to $TMP/NAME.kv
go() {
    local name=$1; shift
    echo
    echo "== $name"
    if ! "$BIN/veil-load" "${COMMON[@]}" --label "$name" --kv "$TMP/$name.kv" "$@"; then
        status=1
        echo "bench/stack.sh: veil-load reported failures for $name" >&2
    fi
}
# run NAME VEIL-LOAD-ARGS...: a load shape on the default enclave (pool on), in the summary table
run() { go "$1" "${ON[@]}" "${@:2}"; runs+=("$1"); }

run "1x200" --streams 1 --total 20 --chunks 200
run "50x100-max" --streams 50 --total 100 --chunks 100
run "100x50@20ms" --streams 100 --total 200 --chunks 50 --interval-ms 20
run "500x20@20ms" --streams 500 --total 500 --chunks 20 --interval-ms 20
# the same loads in stream format 3 (a bound request; one key agreement per stream)
run "1x200-v3" --streams 1 --total 20 --chunks 200 --stream-format 3
run "50x100-v3" --streams 50 --total 100 --chunks 100 --stream-format 3
run "500x20-v3" --streams 500 --total 500 --chunks 20 --interval-ms 20 --stream-format 3

# the upstream pool, on and off, in turn, ROUNDS times (the medians are printed: other
# work on the machine moves single runs). Short answers (2 chunks) make the per-stream
# setup the bulk of the enclave's CPU; 8 at once stay within the pool's 8 idle. TTFC:
# one stream at a time, in turn with direct calls to the sim that connect the same way
# (a new connection each beside pool off, a kept-alive one beside pool on).
ROUNDS=${BENCH_POOL_ROUNDS:-5}
echo
echo "== upstream pool on/off: $ROUNDS rounds (each run's output in the temp dir; one line each here)"
quiet() {
    local name=$1; shift
    if ! "$BIN/veil-load" "${COMMON[@]}" --label "$name" --kv "$TMP/$name.kv" "$@" > "$TMP/$name.out" 2>&1; then
        status=1
        echo "bench/stack.sh: veil-load reported failures for $name" >&2
        tail -5 "$TMP/$name.out" >&2
    fi
    printf '  %-16s cpu/stream %s ms  ttfc p50 %s ms  baseline p50 enclave %s / direct %s ms\n' "$name" \
        "$(kvget "$name" enclave_cpu_ms_per_stream)" "$(kvget "$name" load_ttfc_p50_ms)" \
        "$(kvget "$name" baseline_enclave_ttfc_p50_ms)" "$(kvget "$name" baseline_direct_ttfc_p50_ms)"
}
for r in $(seq 1 "$ROUNDS"); do
    for f in 3 1; do
        quiet "setup-f$f-off-$r" "${OFF[@]}" --streams 8 --total 600 --chunks 2 --stream-format $f
        quiet "setup-f$f-on-$r" "${ON[@]}" --streams 8 --total 600 --chunks 2 --stream-format $f
    done
    quiet "ttfc-off-$r" "${OFF[@]}" --streams 1 --total 0 --chunks 2 "${SIM[@]}" --baseline 200
    quiet "ttfc-on-$r" "${ON[@]}" --streams 1 --total 0 --chunks 2 "${SIM[@]}" --baseline 200 --direct-keep-alive
done

echo
echo "== summary (enclave path; CPU from /proc/<pid>/stat; pace = chunks/s per stream achieved;"
echo "   str/core = concurrent streams one enclave core sustains at that pace; @50/s = at 50 chunks/s)"
fmt='%-12s %7s %4s %9s %9s %7s %9s %9s %9s %9s %8s %7s\n'
printf "$fmt" config ok/all err streams/s chunks/s pace 'ttfc p50' 'ttfc p95' 'ttfc p99' 'cpu µs/ch' \
    str/core '@50/s'
for r in "${runs[@]}"; do
    pace=$(awk -v c="$(kvget "$r" chunks_per_s)" -v m="$(kvget "$r" mean_concurrency)" \
        'BEGIN { if (m + 0 > 0) printf "%.1f", c / m; else print "-" }')
    printf "$fmt" "$r" \
        "$(kvget "$r" streams_ok)/$(kvget "$r" streams)" "$(kvget "$r" errors)" \
        "$(kvget "$r" streams_per_s)" "$(kvget "$r" chunks_per_s)" "$pace" \
        "$(kvget "$r" load_ttfc_p50_ms)" "$(kvget "$r" load_ttfc_p95_ms)" "$(kvget "$r" load_ttfc_p99_ms)" \
        "$(kvget "$r" enclave_cpu_us_per_chunk)" "$(kvget "$r" streams_per_core)" \
        "$(kvget "$r" streams_per_core_at_50cps)"
done
echo "(ttfc in ms, from the parent's connect to the first encrypted chunk)"
echo

# enclave CPU per stream = fixed + chunks x marginal: a line through two runs of
# different answer lengths separates the per-chunk cost from the per-stream cost
fit=$(awk -v a="$(kvget 1x200 enclave_cpu_ms_per_stream)" -v na="$(kvget 1x200 chunks_per_stream)" \
          -v b="$(kvget 500x20@20ms enclave_cpu_ms_per_stream)" -v nb="$(kvget 500x20@20ms chunks_per_stream)" \
    'BEGIN { if (a == "-" || b == "-" || na == nb) exit 1;
             c = (a - b) / (na - nb); f = b - nb * c;
             if (c <= 0 || f < 0) { printf "inconsistent (%.1f µs, %.2f ms): too noisy, run again", c * 1e3, f; exit 0 }
             printf "%.1f µs per chunk + %.2f ms per stream", c * 1e3, f }') \
    || fit="n/a (no CPU figures)"
echo "Enclave CPU split (fit of 1x200 and 500x20@20ms): $fit"
echo "  (the per-chunk part is the seal that bench_crypto measures; the per-stream part is the"
echo "   parent's connection, SigV4, opening the request and sealing the two stored messages, and a"
echo "   CONNECT + TLS handshake only when no kept-alive connection to Bedrock is idle)"

# on / off figures; a missing one prints "-"
# med RUN KEY: the median of KEY over the rounds of RUN (RUN-1 .. RUN-ROUNDS)
med() {
    for r in $(seq 1 "$ROUNDS"); do kvget "$1-$r" "$2"; done | grep -v '^-$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.2f", a - b }'; }
# a goal: value <= limit
goal() { awk -v v="$1" -v l="$2" 'BEGIN { if (v == "-") print "n/a"; else if (v + 0 <= l) print "met"; else print "NOT met" }'; }
echo
echo "== upstream pool (veil-enclave --upstream-pool-max-idle 8, the default, against 0; same run;"
echo "   medians of $ROUNDS rounds)"
pfmt='%-44s %10s %10s %8s\n'
printf "$pfmt" "" "pool on" "pool off" "on/off"
for f in f3 f1; do
    on=$(med "setup-$f-on" enclave_cpu_ms_per_stream); off=$(med "setup-$f-off" enclave_cpu_ms_per_stream)
    printf "$pfmt" "enclave CPU per stream, format ${f#f}, 2 chunks (ms)" "$on" "$off" "$(ratio "$on" "$off")"
    printf "$pfmt" "  of which the upstream connection (off - on)" "" "$(minus "$off" "$on")" ""
    on=$(med "setup-$f-on" load_ttfc_p50_ms); off=$(med "setup-$f-off" load_ttfc_p50_ms)
    printf "$pfmt" "  TTFC p50 at 8 at once, format ${f#f} (ms)" "$on" "$off" "$(ratio "$on" "$off")"
done
for q in p50 p99; do
    eon=$(med ttfc-on "baseline_enclave_ttfc_${q}_ms"); eoff=$(med ttfc-off "baseline_enclave_ttfc_${q}_ms")
    don=$(med ttfc-on "baseline_direct_ttfc_${q}_ms"); doff=$(med ttfc-off "baseline_direct_ttfc_${q}_ms")
    printf "$pfmt" "TTFC $q, enclave path, one at a time (ms)" "$eon" "$eoff" "$(ratio "$eon" "$eoff")"
    printf "$pfmt" "TTFC $q, direct to the sim (ms)" "$don" "$doff" ""
    printf "$pfmt" "  added by veil-enclave + veil-proxy (ms)" "$(minus "$eon" "$don")" "$(minus "$eoff" "$doff")" ""
done
echo "(direct calls connect as the enclave does: kept alive beside pool on, a new TLS connection"
echo " beside pool off; a p99 difference is the difference of the two p99s)"
setup=$(med setup-f3-on enclave_cpu_ms_per_stream)
added=$(minus "$(med ttfc-on baseline_enclave_ttfc_p50_ms)" "$(med ttfc-on baseline_direct_ttfc_p50_ms)")
echo "Goals (issue K): enclave CPU per stream <= 0.3 ms: $setup ms, $(goal "$setup" 0.3);" \
     "TTFC added p50 <= 0.3 ms: $added ms, $(goal "${added#+}" 0.3)"
exit "$status"
