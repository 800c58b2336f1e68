# bench/lib.sh — sourced by bench/stack.sh, through.sh and workers.sh: the check that
# this build has the programs, a temp dir whose processes are all stopped on exit, and
# start(). The caller sets SELF (its name in messages) and BIN first.

# need_programs PROG...: each must be in $BIN
need_programs() {
    local p
    for p in "$@"; do
        [ -x "$BIN/$p" ] || { echo "$SELF: $BIN/$p is missing (build first)" >&2; exit 1; }
    done
}

# bench_tmp PREFIX: TMP, removed on exit after every started process is stopped (the
# last lines of each log shown on failure)
bench_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    pids=()
    trap cleanup INT TERM EXIT
}

# shellcheck disable=SC2317 # runs from the trap
cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] && [ -d "$TMP" ]; then
        for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $(basename "$f") (last lines)"; tail -5 "$f"; }; done >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}

# start NAME CMD...: runs CMD in the background, waits for `event=listening addr=...`;
# sets ADDR and PID.
start() {
    local name=$1; shift
    local log=$TMP/$name.log
    "$@" >"$log" 2>&1 &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 1 200); do
        ADDR=$(grep -o 'event=listening addr=[^ ]*' "$log" 2>/dev/null | head -1 | cut -d= -f3 || true)
        [ -n "$ADDR" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "$SELF: $name failed to start:" >&2
    cat "$log" >&2
    exit 1
}
