#!/usr/bin/env bash
# bench/through.sh [BUILD_DIR] — veild itself under load, as its clients reach it.
#
#   veil-bedrock-sim, veil-imds-sim  a local Bedrock (TLS) and IMDS (credentials)
#   veil-proxy, veil-enclave         the parent's CONNECT proxy and the enclave (unix sockets)
#   veild                            nitro mode, SQLite; dev tokens (CLERK_JWKS_FILE)
#   veil-load --through              users over HTTP/1.1 + SSE, every chunk decrypted and checked
#
# Figures: (a) the time to first chunk veild adds (through veild and straight to the
# enclave, in turn, in one run); (b) veild's CPU per relayed chunk (from
# /proc/<pid>/stat), split into per chunk and per stream by two answer lengths; (c) the
# most SSE streams one veild holds idle, and its RSS and descriptors per held stream:
# first through the whole chain (veil-enclave serves at most 4,096 connections), then
# veild alone against bench/hold_enclave.py, a stand-in enclave that holds chats without
# answering (HOLD_STREAMS, default 10000).
#
# veild runs with the per-user limits raised where the load needs it (said below): a
# user's streams at once (VEIL_USER_MAX_STREAMS) and requests per second
# (VEIL_USER_RATE/BURST). Figures only, no pass/fail on timing; the exit status is
# non-zero when the stack did not start or a stream failed where none should. Every
# process is stopped (trap). Bounded: each veil-load run by --time-limit; about two
# minutes in all.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) BIN=$BUILD ;; *) BIN=$ROOT/$BUILD ;; esac
LIMIT=${BENCH_TIME_LIMIT:-60}
HOLD_STREAMS=${HOLD_STREAMS:-10000}
HOLD_CHAIN=${HOLD_CHAIN:-4000}
HOST=bedrock-runtime.us-east-1.amazonaws.com
SEED=veil-bench-credential-seed
ISSUER=https://veil.dev.local

SELF=bench/through.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_programs veil-bedrock-sim veil-imds-sim veil-proxy veil-enclave veild veil veil-load

bench_tmp veil-through

# stop PID: SIGTERM, then wait (bounded)
stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_veild NAME ENCLAVE_ADDR VAR=VALUE...: veild in nitro mode on a fresh database
start_veild() {
    local name=$1 enclave=$2; shift 2
    start "$name" env ENCLAVE_MODE=nitro ENCLAVE_ADDR="$enclave" VEIL_LISTEN=tcp:127.0.0.1:0 \
        VEIL_DATA_DIR="$TMP/$name-data" CLERK_ISSUER=$ISSUER CLERK_JWKS_FILE="$TMP/jwks.json" \
        VEIL_IMDS_ENDPOINT="127.0.0.1:$IMDS_PORT" VEIL_LOG_LEVEL=info "$@" "$BIN/veild"
    VEILD_URL="http://${ADDR#tcp:}"
    VEILD_PID=$PID
    # ready for chats once it has pushed credentials to the enclave (bounded)
    for _ in $(seq 1 100); do grep -q event=credentials_pushed "$TMP/$name.log" && break; sleep 0.1; done
}

echo "== bench/through.sh: veil-load --through -> veild (nitro) -> veil-enclave -> veil-proxy -> veil-bedrock-sim"
echo "   ($(nproc) cores, $(grep -m1 MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}'),"\
     "descriptors: hard limit $(ulimit -Hn); other work on this machine shows up in the figures)"
"$ROOT/scripts/make-test-ca" "$TMP/ca" "$HOST" localhost >/dev/null
"$BIN/veil" dev-token --sub bench-bootstrap --key "$TMP/jwt.key" --jwks-out "$TMP/jwks.json" --issuer $ISSUER >/dev/null
start bedrock-sim "$BIN/veil-bedrock-sim" --listen tcp:127.0.0.1:0 --cert "$TMP/ca/server.pem" \
    --key "$TMP/ca/server.key" --credential-seed $SEED
SIM_PORT=${ADDR##*:}
start imds-sim "$BIN/veil-imds-sim" --listen tcp:127.0.0.1:0 --credential-seed $SEED
IMDS_PORT=${ADDR##*:}
start proxy "$BIN/veil-proxy" --listen "unix:$TMP/proxy.sock" --allow "$HOST:$SIM_PORT" \
    --resolve "$HOST:$SIM_PORT:127.0.0.1" --max-conns 10000
PROXY_PID=$PID
start enclave "$BIN/veil-enclave" --listen "unix:$TMP/enclave.sock" --proxy "unix:$TMP/proxy.sock" \
    --bedrock-endpoint "$HOST:$SIM_PORT" --ca-file "$TMP/ca/ca.pem" --max-streams 10000 --nsm "sim:$TMP/nsm"
ENCLAVE_PID=$PID
# the load runs: a user's streams as veild's default allows (4), its request rate raised
# from 20/s (a person) to what one load-generating user sends
start_veild veild "unix:$TMP/enclave.sock" VEIL_USER_RATE=500 VEIL_USER_BURST=1000

status=0
runs=()
# run NAME VEIL-LOAD-ARGS...: one configuration; its figures go to $TMP/NAME.kv
run() {
    local name=$1; shift
    echo
    echo "== $name"
    if ! "$BIN/veil-load" --through "$VEILD_URL" --dev-key "$TMP/jwt.key" --issuer $ISSUER \
        --time-limit "$LIMIT" --label "$name" --kv "$TMP/$name.kv" "$@"; then
        [ "${EXPECT_REFUSALS:-0}" = 1 ] || status=1
        echo "bench/through.sh: veil-load reported failures for $name" >&2
    fi
    runs+=("$name")
}
kvget() { local v; v=$(grep -m1 "^$2=" "$TMP/$1.kv" 2>/dev/null | cut -d= -f2-); echo "${v:--}"; }

LOADPIDS=(--veild-pid "$VEILD_PID" --enclave-pid "$ENCLAVE_PID" --proxy-pid "$PROXY_PID")
# (a) TTFC: one stream at a time, through veild and straight to the enclave in turn
run ttfc-f3 --enclave "unix:$TMP/enclave.sock" --baseline 40 --total 0 --chunks 20 --stream-format 3
run ttfc-f1 --enclave "unix:$TMP/enclave.sock" --baseline 40 --total 0 --chunks 20 --stream-format 1
# (b) veild CPU per relayed chunk: two answer lengths separate per chunk from per stream
run cpu-f3-200 "${LOADPIDS[@]}" --streams 20 --total 100 --chunks 200 --chunk-size 40 --stream-format 3
run cpu-f3-20 "${LOADPIDS[@]}" --streams 20 --total 500 --chunks 20 --chunk-size 40 --stream-format 3
run cpu-f1-200 "${LOADPIDS[@]}" --streams 20 --total 100 --chunks 200 --chunk-size 40 --stream-format 1
run load-f3-400 "${LOADPIDS[@]}" --streams 400 --total 2000 --chunks 50 --interval-ms 20 --chunk-size 40 \
    --stream-format 3
stop "$VEILD_PID"

# (c) held streams. Through the whole chain (a fresh veild; 100 streams per user), ...
start_veild veild-hold "unix:$TMP/enclave.sock" VEIL_USER_MAX_STREAMS=100 VEIL_USER_RATE=500 VEIL_USER_BURST=1000
run hold-chain --veild-pid "$VEILD_PID" --total 0 --hold "$HOLD_CHAIN" --streams-per-user 100 --hold-seconds 5 \
    --stream-format 3 --max-connecting 64
stop "$VEILD_PID"
# ... and veild alone: the stand-in enclave holds every chat (format 1: held at veild's
# session event); past veild's connection cap the rest are refused with 503
start hold-enclave python3 "$ROOT/bench/hold_enclave.py" "unix:$TMP/hold-enclave.sock"
start_veild veild-alone "unix:$TMP/hold-enclave.sock" VEIL_USER_MAX_STREAMS=100 VEIL_USER_RATE=500 \
    VEIL_USER_BURST=1000 AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench AWS_SESSION_TOKEN=bench
EXPECT_REFUSALS=1 run hold-veild --veild-pid "$VEILD_PID" --total 0 --hold "$HOLD_STREAMS" --streams-per-user 100 \
    --hold-seconds 16 --stream-format 1
cap=$(grep -o 'max_connections=[0-9]*' "$TMP/veild-alone.log" | head -1 | cut -d= -f2)

echo
echo "== summary ($(date -u +%Y-%m-%d), $(nproc) cores)"
printf '(a) TTFC veild adds, one stream at a time (p50 / p99, ms):\n'
for f in 3 1; do
    printf '    format %s: through veild %s / %s, straight to the enclave %s / %s: +%s / +%s ms\n' "$f" \
        "$(kvget ttfc-f$f baseline_through_ttfc_p50_ms)" "$(kvget ttfc-f$f baseline_through_ttfc_p99_ms)" \
        "$(kvget ttfc-f$f baseline_enclave_ttfc_p50_ms)" "$(kvget ttfc-f$f baseline_enclave_ttfc_p99_ms)" \
        "$(kvget ttfc-f$f ttfc_overhead_ms_p50)" "$(kvget ttfc-f$f ttfc_overhead_ms_p99)"
done
printf '(b) veild CPU per relayed chunk (all its work: auth, the store, SSE), µs:\n'
fmt='    %-12s %7s %7s %8s %10s %12s %12s\n'
printf "$fmt" run ok/all err chunks 'veild µs/ch' 'veild ms/str' 'enclave µs/ch'
for r in cpu-f3-200 cpu-f3-20 cpu-f1-200 load-f3-400; do
    printf "$fmt" "$r" "$(kvget "$r" streams_ok)/$(kvget "$r" streams)" "$(kvget "$r" errors)" "$(kvget "$r" chunks)" \
        "$(kvget "$r" veild_cpu_us_per_chunk)" "$(kvget "$r" veild_cpu_ms_per_stream)" \
        "$(kvget "$r" enclave_cpu_us_per_chunk)"
done
fit=$(awk -v a="$(kvget cpu-f3-200 veild_cpu_ms_per_stream)" -v na=200 \
          -v b="$(kvget cpu-f3-20 veild_cpu_ms_per_stream)" -v nb=20 \
    'BEGIN { if (a == "-" || b == "-") exit 1; c = (a - b) / (na - nb); f = b - nb * c;
             if (c <= 0 || f < 0) { printf "inconsistent (%.1f µs, %.2f ms): too noisy, run again", c * 1e3, f; exit 0 }
             printf "%.1f µs per chunk + %.2f ms per stream", c * 1e3, f }') || fit="n/a"
echo "    format 3 split (fit of cpu-f3-200 and cpu-f3-20): $fit"
printf '(c) held idle SSE streams:\n'
printf '    whole chain: %s of %s held, veild %s KiB RSS and %s descriptors per stream\n' \
    "$(kvget hold-chain hold_held)" "$(kvget hold-chain hold_requested)" \
    "$(kvget hold-chain hold_rss_kb_per_stream)" "$(kvget hold-chain hold_fds_per_stream)"
printf '    veild alone: %s of %s held (its connection cap here: %s), %s KiB RSS and %s descriptors per stream;\n' \
    "$(kvget hold-veild hold_held)" "$(kvget hold-veild hold_requested)" "${cap:--}" \
    "$(kvget hold-veild hold_rss_kb_per_stream)" "$(kvget hold-veild hold_fds_per_stream)"
printf '                 %s refused with 503 past the cap; RSS before %s KiB, holding %s KiB, after closing %s KiB\n' \
    "$(kvget hold-veild errors_http_503)" "$(kvget hold-veild hold_veild_rss_kb_before)" \
    "$(kvget hold-veild hold_veild_rss_kb_held)" "$(kvget hold-veild hold_veild_rss_kb_after)"
exit "$status"
