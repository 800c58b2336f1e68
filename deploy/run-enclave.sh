#!/usr/bin/env bash
# run-enclave.sh — start, watch and stop the veil enclave with nitro-cli.
#
#   run-enclave.sh [OPTIONS] [start]   start the enclave (nitro-cli run-enclave)
#   run-enclave.sh [OPTIONS] supervise start it, then watch it: exit 1 when it
#                                      stops; SIGTERM/SIGINT terminate it and exit 0
#                                      (ExecStart of deploy/systemd/veil-enclave.service)
#   run-enclave.sh [OPTIONS] stop      terminate it (nothing to do is not an error)
#   run-enclave.sh [OPTIONS] status    exit 0 iff it is running (prints its line)
#   run-enclave.sh describe            nitro-cli describe-enclaves
#
# Options (each has an environment default, so a systemd EnvironmentFile can set it):
#   --eif PATH       enclave image        VEIL_EIF (/usr/local/share/veil/veil-enclave.eif)
#   --cpus N         vCPUs                VEIL_ENCLAVE_CPUS (2)
#   --memory MIB     memory in MiB        VEIL_ENCLAVE_MEMORY_MIB (1024)
#   --cid N          vsock CID, >= 4      ENCLAVE_CID (unset: nitro-cli picks one;
#                                         veild then needs ENCLAVE_CID=0 discovery)
#   --name NAME      enclave name         VEIL_ENCLAVE_NAME (veil)
#   --interval SEC   supervise poll       VEIL_ENCLAVE_POLL_SECONDS (10)
#   --debug          debug mode; refused unless VEIL_ALLOW_DEBUG_ENCLAVE=yes too
#
# Sizing. A chat stream is I/O bound: the enclave waits for Bedrock's tokens and
# spends CPU only per chunk, about 81 us for the wire-compatible envelope (one
# X25519 + HKDF-SHA512 + AES-256-GCM per chunk) and a few us with stream format
# v2. One vCPU thus seals ~12,000 chunks/s; at ~50-100 chunks/s per stream that is
# well over 100 concurrent streams per vCPU, and veil-enclave serves them all on
# one event loop. 2 vCPUs (the minimum on x86 with hyper-threading: one full core)
# leave room for TLS handshakes to Bedrock. Memory: the enclave has no disk, so the
# kernel and the image (~15 MB) live in RAM; each request is bounded by
# --max-request (8 MiB), and TLS and stream state are tens of KiB; 1024 MiB holds
# the daemon's 1024-stream cap with room to spare. nitro-cli needs at least 64 MiB,
# and the allocator (/etc/nitro_enclaves/allocator.yaml) must reserve at least
# what is asked here.
#
# Debug mode (never in production). `nitro-cli run-enclave --debug-mode` lets the
# parent read the enclave console and makes every PCR of the attestation document
# zero: the enclave then proves nothing about what it runs. The original always ran
# that way (defect §10.17). This script adds --debug-mode only when given --debug
# AND VEIL_ALLOW_DEBUG_ENCLAVE=yes, prints a warning, and otherwise refuses; in
# normal mode it checks that nitro-cli reports Flags NONE and terminates the enclave
# if it does not.
#
# Exit status: 0 ok, 1 failure, 2 usage or refused.
set -euo pipefail

prog=run-enclave.sh
log() { echo "$prog: $*" >&2; }
die() { log "$*"; exit 1; }
usage_error() { log "$*"; log "see: $prog --help"; exit 2; }

EIF=${VEIL_EIF:-/usr/local/share/veil/veil-enclave.eif}
CPUS=${VEIL_ENCLAVE_CPUS:-2}
MEMORY=${VEIL_ENCLAVE_MEMORY_MIB:-1024}
CID=${ENCLAVE_CID:-}
NAME=${VEIL_ENCLAVE_NAME:-veil}
INTERVAL=${VEIL_ENCLAVE_POLL_SECONDS:-10}
DEBUG=false
CMD=

need_arg() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --eif)      need_arg "$@"; EIF=$2; shift 2 ;;
        --cpus)     need_arg "$@"; CPUS=$2; shift 2 ;;
        --memory)   need_arg "$@"; MEMORY=$2; shift 2 ;;
        --cid)      need_arg "$@"; CID=$2; shift 2 ;;
        --name)     need_arg "$@"; NAME=$2; shift 2 ;;
        --interval) need_arg "$@"; INTERVAL=$2; shift 2 ;;
        --debug|--debug-mode) DEBUG=true; shift ;;
        -h|--help)  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        start|supervise|stop|status|describe)
            [[ -z $CMD ]] || usage_error "one command at a time ($CMD, $1)"
            CMD=$1; shift ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done
CMD=${CMD:-start}

is_uint() { [[ $1 =~ ^[1-9][0-9]{0,9}$ ]]; }
if ! is_uint "$CPUS"; then
    usage_error "--cpus must be a whole number >= 1 (got '$CPUS')"
fi
if ! is_uint "$MEMORY" || ((MEMORY < 64)); then
    usage_error "--memory must be MiB >= 64 (got '$MEMORY')"
fi
# CIDs 0-2 are reserved, 3 is the parent, 0xFFFFFFFF is VMADDR_CID_ANY
if [[ -n $CID ]] && { ! is_uint "$CID" || ((CID < 4 || CID > 4294967294)); }; then
    usage_error "--cid must be in [4, 4294967294] (got '$CID'; 3 is the parent)"
fi
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "--name: letters, digits, '.', '_' and '-' only"
[[ $INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--interval must be seconds (got '$INTERVAL')"

if $DEBUG; then
    case ${VEIL_ALLOW_DEBUG_ENCLAVE:-} in
        yes|1|true) ;;
        *) log "refusing to start the enclave in debug mode."
           log "In debug mode the parent instance can read the enclave console and the"
           log "attestation PCRs are all zeros (defect §10.17). For a development"
           log "instance that never sees real users, pass --debug AND set"
           log "VEIL_ALLOW_DEBUG_ENCLAVE=yes."
           exit 2 ;;
    esac
fi

if ! command -v nitro-cli >/dev/null 2>&1; then
    die "nitro-cli not found on PATH. Install the AWS Nitro Enclaves CLI on the parent
instance (Amazon Linux 2023: sudo dnf install aws-nitro-enclaves-cli; see
deploy/README.md), add this user to the 'ne' group, and enable
nitro-enclaves-allocator.service."
fi

# enclaves: one line per enclave, "NAME ID CID STATE FLAGS", from describe-enclaves.
# The JSON is flattened to one token per line first, so pretty-printed and compact
# output parse alike; nested objects (Measurements, CPUIDs) are skipped.
enclaves() {
    local json
    json=$(nitro-cli describe-enclaves) || return 1
    printf '%s\n' "$json" | tr -d '\n\r' | sed -e 's/[{}]/\n&\n/g' -e 's/,/\n/g' -e 's/\[/\n[\n/g' -e 's/\]/\n]\n/g' |
        awk '
        function val(s) { sub(/^[^:]*:[ \t]*/, "", s); gsub(/^"|"[ \t]*$/, "", s); gsub(/[ \t]/, "", s); return s }
        function key(s) { sub(/^[ \t]*"/, "", s); sub(/".*/, "", s); return s }
        /^[ \t]*\{[ \t]*$/ { depth++; if (depth == 1) { n = id = cid = st = fl = "-" } next }
        /^[ \t]*\}[ \t]*$/ { if (depth == 1) print n, id, cid, st, fl; depth--; next }
        depth == 1 && /^[ \t]*"[A-Za-z]+"[ \t]*:/ {
            k = key($0); v = val($0)
            if (k == "EnclaveName") n = v; else if (k == "EnclaveID") id = v
            else if (k == "EnclaveCID") cid = v; else if (k == "State") st = v
            else if (k == "Flags") fl = v
        }'
}

# ours: the line of our enclave, or nothing
ours() { enclaves | awk -v n="$NAME" '$1 == n { print; exit }'; }

terminate() {
    local line id
    line=$(ours) || die "nitro-cli describe-enclaves failed"
    if [[ -z $line ]]; then
        log "enclave '$NAME' is not running"
        return 0
    fi
    read -r _ id _ _ _ <<< "$line"
    log "terminating enclave '$NAME' ($id)"
    nitro-cli terminate-enclave --enclave-id "$id" >&2
}

debug_warning() {
    cat >&2 <<'EOF'
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! WARNING: the veil enclave is starting in DEBUG MODE.
!!! The parent instance can read its console (nitro-cli console), and its
!!! attestation document carries all-zero PCRs: it proves nothing about the
!!! code it runs. veil logs no plaintext, but a debug enclave must never serve
!!! real users. Production: drop --debug (defect §10.17).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
}

# flags_ok FLAGS: the mode nitro-cli reports is the mode we asked for
flags_ok() {
    if $DEBUG; then [[ $1 != NONE ]]; else [[ $1 == NONE ]]; fi
}

start() {
    local line state flags
    line=$(ours) || die "nitro-cli describe-enclaves failed"
    if [[ -n $line ]]; then
        read -r _ _ _ state flags <<< "$line"
        if [[ $state == RUNNING ]] && flags_ok "$flags"; then
            log "enclave '$NAME' is already running: $line"
            return 0
        fi
        die "an enclave named '$NAME' exists in state $state with flags $flags; stop it first ($prog stop)"
    fi
    [[ -r $EIF ]] || die "$EIF: enclave image not found (build it: see deploy/README.md, or pass --eif)"

    local args=(run-enclave --enclave-name "$NAME" --eif-path "$EIF"
                --cpu-count "$CPUS" --memory "$MEMORY")
    [[ -n $CID ]] && args+=(--enclave-cid "$CID")
    if $DEBUG; then
        debug_warning
        args+=(--debug-mode)
    fi
    ((CPUS % 2 == 0)) || log "note: on x86 instances with hyper-threading, nitro-cli wants an even --cpus"
    log "nitro-cli ${args[*]}"
    nitro-cli "${args[@]}" || die "nitro-cli run-enclave failed (is the allocator reserving ${CPUS} vCPUs and ${MEMORY} MiB? see /etc/nitro_enclaves/allocator.yaml)"

    line=$(ours) || die "nitro-cli describe-enclaves failed after start"
    [[ -n $line ]] || die "enclave '$NAME' is not listed after run-enclave"
    read -r _ _ _ state flags <<< "$line"
    if ! flags_ok "$flags"; then
        log "enclave '$NAME' reports Flags $flags, not the mode asked for: terminating it"
        terminate || true
        exit 1
    fi
    log "enclave '$NAME' started: $line"
}

sleeper=
supervise() {
    on_signal() {
        log "stopping"
        # the sleeper may have ended already: under set -e a failing kill here would
        # exit 1 without terminating the enclave
        if [[ -n $sleeper ]]; then kill "$sleeper" 2>/dev/null || true; fi
        terminate || true
        exit 0
    }
    trap on_signal TERM INT
    start
    local line state
    while :; do
        sleep "$INTERVAL" &
        sleeper=$!
        wait "$sleeper" || true
        sleeper=
        if ! line=$(ours); then
            log "nitro-cli describe-enclaves failed; retrying"
            continue
        fi
        state=-
        [[ -n $line ]] && read -r _ _ _ state _ <<< "$line"
        if [[ $state != RUNNING ]]; then
            log "enclave '$NAME' is gone (state $state): exiting so that systemd restarts it"
            # a half-dead enclave (e.g. TERMINATING) must not block the restart
            [[ -n $line ]] && { terminate || true; }
            exit 1
        fi
    done
}

case $CMD in
    start)     start ;;
    supervise) supervise ;;
    stop)      terminate ;;
    status)
        line=$(ours) || die "nitro-cli describe-enclaves failed"
        [[ -n $line ]] || { log "enclave '$NAME' is not running"; exit 1; }
        echo "$line"
        read -r _ _ _ state _ <<< "$line"
        [[ $state == RUNNING ]] ;;
    describe)  nitro-cli describe-enclaves ;;
esac
