#!/usr/bin/env bash
# bench/workers.sh [BUILD_DIR] — veil-enclave with one event loop, then two (issue K:
# the enclave uses every vCPU), under the same load.
#
#   veil-bedrock-sim -> veil-proxy -> veil-enclave --workers W <- veil-load
#
# The load: format-1 streams (an ephemeral X25519 key, HKDF and AES-GCM per chunk: the
# enclave's CPU per chunk is the floor the wire imposes), BENCH_WORKERS_STREAMS at
# once, 200 unpaced chunks of 40 bytes each, for BENCH_WORKERS_SECONDS. W = 1 and W = 2
# in turn, BENCH_WORKERS_ROUNDS times (medians are printed: other work on the machine
# moves single runs).
#
# The issue's figure is for load that comes from elsewhere; here the load generator
# shares the enclave's two cores. So that it takes as little of them as it can,
# veil-load opens one chunk in BENCH_WORKERS_OPEN_EVERY (16; every chunk is still
# counted and each stream's stored answer opened and checked) and, with the simulator
# and the proxy, is pinned with `taskset -c` to the last CPU (BENCH_WORKERS_PIN_LOAD;
# "none": not pinned); the enclave is not pinned. Printed per run: chunks/s (wall),
# the enclave's CPU-seconds (/proc/<pid>/stat utime + stime, every thread), the cores
# it used (CPU-s / wall-s), chunks per enclave CPU-second, each process's CPU per
# chunk and each worker thread's CPU; then the medians and the ratios 2 workers / 1.
# Figures only: the exit status is non-zero only when a stream failed or the stack
# did not start. Bounded: about 45 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) BIN=$BUILD ;; *) BIN=$ROOT/$BUILD ;; esac
SECONDS_PER_RUN=${BENCH_WORKERS_SECONDS:-8}
ROUNDS=${BENCH_WORKERS_ROUNDS:-2}
STREAMS=${BENCH_WORKERS_STREAMS:-32}
OPEN_EVERY=${BENCH_WORKERS_OPEN_EVERY:-16}
NCPU=$(nproc)
PIN=${BENCH_WORKERS_PIN_LOAD:-$((NCPU - 1))}
HOST=bedrock-runtime.us-east-1.amazonaws.com
AKID=AKIDBENCHWORKERS
SECRET=bench-workers-secret
TOKEN=bench-workers-session-token

SELF=bench/workers.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_programs veil-bedrock-sim veil-proxy veil-enclave veil-load
LOADPIN=()
if [ "$PIN" != none ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
    LOADPIN=(taskset -c "$PIN")
else
    PIN=none
fi

bench_tmp veil-bench-workers

stop_last() { # stops the process start() began last
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    unset 'pids[${#pids[@]}-1]'
}

where="pinned to CPU $PIN"
[ "$PIN" = none ] && where="not pinned"
echo "== bench/workers.sh: veil-enclave --workers 1, then 2, under the same load ($NCPU cores;" \
     "load generator, simulator and proxy $where; other work on this machine shows in the figures)"
"$ROOT/scripts/make-test-ca" "$TMP/ca" "$HOST" localhost
start bedrock-sim "${LOADPIN[@]}" "$BIN/veil-bedrock-sim" --listen tcp:127.0.0.1:0 --cert "$TMP/ca/server.pem" \
    --key "$TMP/ca/server.key" --access-key-id "$AKID" --secret-access-key "$SECRET" --session-token "$TOKEN"
SIM_PORT=${ADDR##*:}
SIM_PID=$PID
start proxy "${LOADPIN[@]}" "$BIN/veil-proxy" --listen "unix:$TMP/proxy.sock" --allow "$HOST:$SIM_PORT" \
    --resolve "$HOST:$SIM_PORT:127.0.0.1"
PROXY_PID=$PID
CREDS=(--access-key-id "$AKID" --secret-access-key "$SECRET" --session-token "$TOKEN")

kvget() { local v; v=$(grep -m1 "^$2=" "$TMP/$1.kv" 2>/dev/null | cut -d= -f2-); echo "${v:--}"; }
status=0
# cpu PID: its CPU-seconds so far (utime + stime of every thread, /proc/PID/stat)
cpu() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
# threads PID: "NAME CPU-SECONDS" for each of its threads (veil-enclave names its workers veil-worker-N)
threads() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(cat "$t/comm")" "$(cpu "${t#/proc/}")"
    done 2>/dev/null | sort
}
# one W for one round: a fresh enclave, the credentials, the load; figures in $TMP/wW-R.kv
run() {
    local w=$1 r=$2 name="w$1-$2"
    start "enclave-$name" "$BIN/veil-enclave" --workers "$w" --listen "unix:$TMP/enclave.sock" \
        --proxy "unix:$TMP/proxy.sock" --bedrock-endpoint "$HOST:$SIM_PORT" --ca-file "$TMP/ca/ca.pem" \
        --max-streams 2048 --nsm none
    local epid=$PID
    "${LOADPIN[@]}" "$BIN/veil-load" --enclave "unix:$TMP/enclave.sock" --set-credentials "${CREDS[@]}" \
        --total 0 > /dev/null
    local s0 p0
    s0=$(cpu "$SIM_PID"); p0=$(cpu "$PROXY_PID")
    threads "$epid" > "$TMP/$name.threads0"
    if ! "${LOADPIN[@]}" "$BIN/veil-load" --enclave "unix:$TMP/enclave.sock" --enclave-pid "$epid" \
            --streams "$STREAMS" --duration "$SECONDS_PER_RUN" --chunks 200 --chunk-size 40 --stream-format 1 \
            --open-every "$OPEN_EVERY" \
            --label "$name" --kv "$TMP/$name.kv" > "$TMP/$name.out" 2>&1; then
        status=1
        echo "bench/workers.sh: veil-load reported failures for $name" >&2
        tail -5 "$TMP/$name.out" >&2
    fi
    threads "$epid" > "$TMP/$name.threads1"
    echo "sim_cpu_s=$(awk -v a="$s0" -v b="$(cpu "$SIM_PID")" 'BEGIN { printf "%.3f", b - a }')" >> "$TMP/$name.kv"
    echo "proxy_cpu_s=$(awk -v a="$p0" -v b="$(cpu "$PROXY_PID")" 'BEGIN { printf "%.3f", b - a }')" >> "$TMP/$name.kv"
    stop_last
    rm -f "$TMP/enclave.sock"
    awk -v n="$name" -v c="$(kvget "$name" chunks)" -v w="$(kvget "$name" wall_s)" -v e="$(kvget "$name" enclave_cpu_s)" \
        -v l="$(kvget "$name" veil_load_cpu_s)" -v s="$(kvget "$name" sim_cpu_s)" -v p="$(kvget "$name" proxy_cpu_s)" \
        'BEGIN { if (w + 0 <= 0 || e + 0 <= 0) { printf "  %-6s no figures\n", n; exit }
                 printf "  %-6s %8d chunks in %5.2f s: %6.0f chunks/s, enclave %5.2f CPU-s (%.2f cores, %5.0f chunks per CPU-s);" \
                        " per chunk: enclave %3.0f µs, veil-load %3.0f, sim %3.0f, proxy %3.0f\n",
                        n, c, w, c / w, e, e / w, c / e, e * 1e6 / c, l * 1e6 / c, s * 1e6 / c, p * 1e6 / c }'
    # each worker's share of the enclave's CPU: both loops take streams
    join "$TMP/$name.threads0" "$TMP/$name.threads1" 2>/dev/null | awk '$1 ~ /^veil-worker/ {
        split($1, a, "-"); printf "%s worker %s %.2f CPU-s", (n++ ? "," : "         "), a[3], $3 - $2 }
        END { if (n) print "" }'
}
for r in $(seq 1 "$ROUNDS"); do
    run 1 "$r"
    run 2 "$r"
done

# med W KEY: the median over the rounds of W's figure (chunks/s, cpu, per_cpu, cores)
fig() { # fig NAME WHAT
    local c w e
    c=$(kvget "$1" chunks); w=$(kvget "$1" wall_s); e=$(kvget "$1" enclave_cpu_s)
    awk -v c="$c" -v w="$w" -v e="$e" -v k="$2" 'BEGIN {
        if (c == "-" || w + 0 <= 0 || e + 0 <= 0) { print "-"; exit }
        if (k == "cps") printf "%.0f\n", c / w; else if (k == "cpu") printf "%.2f\n", e;
        else if (k == "cores") printf "%.2f\n", e / w; else printf "%.0f\n", c / e }'
}
med() {
    for r in $(seq 1 "$ROUNDS"); do fig "w$1-$r" "$2"; done | grep -v '^-$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
echo
echo "== summary: format 1, $STREAMS streams at once, 200 unpaced chunks each, ${SECONDS_PER_RUN} s per run," \
     "medians of $ROUNDS rounds"
fmt='%-36s %12s %12s %8s\n'
printf "$fmt" "" "1 worker" "2 workers" "2w/1w"
for k in "cps:chunks/s (wall)" "cpu:enclave CPU-seconds" "cores:enclave cores in use (CPU-s/wall-s)" \
         "per:chunks per enclave CPU-second"; do
    a=$(med 1 "${k%%:*}"); b=$(med 2 "${k%%:*}")
    printf "$fmt" "${k#*:}" "$a" "$b" "$(ratio "$b" "$a")"
done
echo "(one worker can use at most one core; the wall ratio is bounded by the cores left once the load"
echo " generator, the simulator and the proxy, on the same machine, had theirs: see README, Performance)"
exit "$status"
