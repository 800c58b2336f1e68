#!/usr/bin/env bash
# The deploy kit (deploy/) checked as far as a machine without Nitro hardware,
# Docker or AWS can check it:
#   - every shell script parses (bash -n) and passes shellcheck when installed;
#   - the systemd units pass `systemd-analyze verify` (paths rewritten to the built
#     programs) and keep their hardening; their exposure score stays low;
#   - the real veil-proxy starts with deploy/allowlist.yaml and the unit's own
#     flags, allows exactly Bedrock:443 and refuses everything else;
#   - deploy/iam-policy.json parses, grants only the two invoke actions, on the US
#     inference profiles and their foundation models, for every model of models.c;
#   - the Dockerfile's shape (stages, exec-form ENTRYPOINT naming veil-enclave with
#     --ca-file, packages of scripts/install-deps, no --debug-mode);
#   - run-enclave.sh against a fake nitro-cli that records its arguments: sizing,
#     CID, debug mode refused without the explicit opt-in, stop/status/supervise;
#   - the image contents: build-rootfs.sh's tree holds exactly the binary, the
#     libraries ldd lists, the loader and the CA bundle, and veil-enclave runs in it
#     under chroot with the ENTRYPOINT's flags (key pair, CA bundle loaded);
#   - deploy/veild.env.example names every variable veild reads, with production
#     values and no secrets.
# Env: VEIL_BIN (build dir with veil-enclave, veil-proxy), VEIL_SRC (repo root).
set -uo pipefail

SRC=${VEIL_SRC:?set VEIL_SRC to the repository root}
BIN=${VEIL_BIN:?set VEIL_BIN to the build directory}
D=$SRC/deploy
PY=python3
[[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
T=$(mktemp -d)
pids=()
mounted=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    rm -rf --one-file-system "$T"
}
trap cleanup EXIT

passes=0; fails=0; skips=0
ok()   { passes=$((passes + 1)); }
bad()  { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
skip() { echo "SKIP: $*"; skips=$((skips + 1)); }
# check DESC CMD...: one check, passes iff CMD succeeds
check() { local d=$1; shift; if "$@"; then ok; else bad "$d"; fi; }
# pycheck: a python snippet printing "ok ..." / "FAIL ..." lines, one per check
pycheck() {
    local out line
    out=$("$PY" - "$@" 2>&1)
    while IFS= read -r line; do
        case $line in
            ok\ *) ok ;;
            FAIL\ *) bad "${line#FAIL }" ;;
            "") ;;
            *) bad "python: $line" ;;
        esac
    done <<< "$out"
}
# wait_for FILE PATTERN [TRIES]: until FILE contains PATTERN (grep -E), 50 ms apart.
# The default (30 s) is generous on purpose: the machine may be loaded.
wait_for() {
    local i
    for ((i = 0; i < ${3:-600}; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# stops PID with SIGTERM; true iff it exits 0 (within 30 s, then it is killed)
term_ok() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 1
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    wait "$pid"
}

scripts=()
while IFS= read -r f; do scripts+=("$f"); done < <(find "$D" -name '*.sh' | sort)
scripts+=("$SRC/tests/integration/test_deploy.sh")

###############################################################################
# 1. shell scripts
for f in "${scripts[@]}"; do
    check "bash -n ${f#"$SRC"/}" bash -n "$f"
done
for f in "$D/run-enclave.sh" "$D/enclave/build-rootfs.sh"; do
    check "${f#"$SRC"/} is executable" test -x "$f"
done
if command -v shellcheck >/dev/null 2>&1; then
    for f in "${scripts[@]}"; do
        if out=$(shellcheck "$f" 2>&1); then ok; else bad "shellcheck ${f#"$SRC"/}:"$'\n'"$out"; fi
    done
else
    echo "NOTE: shellcheck not installed; skipping the lint of ${#scripts[@]} scripts"
    skip "shellcheck"
fi

###############################################################################
# 2. systemd units
units=(veil-enclave.service veil-proxy.service veild.service)
for u in "${units[@]}"; do
    check "$u exists" test -f "$D/systemd/$u"
done
# every unit: the hardening of the brief, and no way into debug mode
for u in "${units[@]}"; do
    f=$D/systemd/$u
    for kv in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
              CapabilityBoundingSet= MemoryDenyWriteExecute=yes LockPersonality=yes \
              RestrictRealtime=yes RestrictNamespaces=yes ProtectKernelTunables=yes \
              ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes \
              SystemCallFilter=@system-service Restart=on-failure DynamicUser=yes; do
        check "$u: $kv" grep -qx "$kv" "$f"
    done
    check "$u: no --debug outside comments" bash -c "! grep -v '^[[:space:]]*#' '$f' | grep -q -- '--debug'"
done
check "veil-proxy: AF_VSOCK allowed" grep -qx 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK' "$D/systemd/veil-proxy.service"
check "veild: AF_VSOCK allowed" grep -qx 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_VSOCK' "$D/systemd/veild.service"
check "veil-proxy: ExecStart" grep -qx 'ExecStart=/usr/local/bin/veil-proxy --listen vsock:ANY:8443 --allowlist /etc/veil/allowlist.yaml' "$D/systemd/veil-proxy.service"
check "veild: EnvironmentFile" grep -qx 'EnvironmentFile=/etc/veil/veild.env' "$D/systemd/veild.service"
check "veild: StateDirectory" grep -qx 'StateDirectory=veil' "$D/systemd/veild.service"
check "veil-enclave: after the allocator" grep -qx 'After=nitro-enclaves-allocator.service' "$D/systemd/veil-enclave.service"
check "veil-enclave: requires the allocator" grep -qx 'Requires=nitro-enclaves-allocator.service' "$D/systemd/veil-enclave.service"
check "veil-enclave: supervise mode" grep -qx 'ExecStart=/usr/local/lib/veil/run-enclave.sh supervise' "$D/systemd/veil-enclave.service"
check "veil-enclave: terminates on stop" grep -qx 'ExecStopPost=/usr/local/lib/veil/run-enclave.sh stop' "$D/systemd/veil-enclave.service"

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify needs the ExecStart binaries: point the units at the built programs,
    # a stub veild (it may not be built) and a stub allocator unit
    mkdir -p "$T/units" "$T/stub"
    printf '#!/bin/sh\nexit 0\n' > "$T/stub/veild"
    chmod +x "$T/stub/veild"
    for u in "${units[@]}"; do
        sed -e "s|/usr/local/bin/veil-proxy|$BIN/veil-proxy|g" \
            -e "s|/usr/local/bin/veild|$T/stub/veild|g" \
            -e "s|/usr/local/lib/veil/run-enclave.sh|$D/run-enclave.sh|g" \
            "$D/systemd/$u" > "$T/units/$u"
    done
    printf '[Unit]\nDescription=stub allocator\n[Service]\nType=oneshot\nExecStart=/bin/true\n' \
        > "$T/units/nitro-enclaves-allocator.service"
    # parse warnings (unknown keys, bad values) do not change the exit status: any
    # output at all is a failure
    out=$(cd "$T/units" && systemd-analyze verify --man=no "${units[@]}" 2>&1)
    rc=$?
    if [[ $rc == 0 && -z $out ]]; then ok; else bad "systemd-analyze verify (rc=$rc):"$'\n'"$out"; fi
    for u in "${units[@]}"; do
        if out=$(cd "$T/units" && systemd-analyze security --offline=true "$u" 2>/dev/null); then
            score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<< "$out")
            if [[ -n $score ]] && awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then ok
            else bad "$u: systemd-analyze security exposure '$score' > 3.0"; fi
        else
            echo "NOTE: systemd-analyze security --offline unsupported here; $u not scored"
            skip "exposure score of $u"
        fi
    done
else
    echo "NOTE: systemd-analyze not installed; the units are not verified"
    skip "systemd-analyze verify"
fi

###############################################################################
# 3. the allowlist, read by the real veil-proxy with the unit's own flags
read -ra proxy_cmd <<< "$(sed -n 's/^ExecStart=//p' "$D/systemd/veil-proxy.service")"
for i in "${!proxy_cmd[@]}"; do
    case ${proxy_cmd[$i]} in
        /usr/local/bin/veil-proxy) proxy_cmd[i]=$BIN/veil-proxy ;;
        vsock:ANY:8443) proxy_cmd[i]=unix:$T/p.sock ;;
        /etc/veil/allowlist.yaml) proxy_cmd[i]=$D/allowlist.yaml ;;
    esac
done
# the allowed name is pinned to 127.0.0.1 so no DNS is needed: its CONNECT gets
# past the allowlist and fails (or succeeds) at the TCP connect, never 403
"${proxy_cmd[@]}" --resolve bedrock-runtime.us-east-1.amazonaws.com:443:127.0.0.1 \
    --connect-timeout 3 > "$T/proxy.log" 2>&1 &
ppid=$!
pids+=("$ppid")
if wait_for "$T/proxy.log" 'event=listening'; then
    ok
    check "allowlist: one entry, bedrock-runtime.us-east-1:443" \
        test "$(grep -c 'event=allow ' "$T/proxy.log")" = 1
    check "allowlist: the entry" grep -q 'event=allow host=bedrock-runtime.us-east-1.amazonaws.com port=443' "$T/proxy.log"
    pycheck "$T/p.sock" <<'PY'
import socket, sys
def status(req):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sys.argv[1])
    s.sendall(req)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b"\r\n")[0].decode(errors="replace")
cases = [
    ("other host", b"CONNECT evil.example.com:443 HTTP/1.1\r\nHost: evil.example.com:443\r\n\r\n", "403"),
    ("other port", b"CONNECT bedrock-runtime.us-east-1.amazonaws.com:80 HTTP/1.1\r\n\r\n", "403"),
    ("other region", b"CONNECT bedrock-runtime.us-west-2.amazonaws.com:443 HTTP/1.1\r\n\r\n", "403"),
    ("IMDS", b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n", "403"),
]
for name, req, want in cases:
    got = status(req)
    print(("ok " if got.split(" ")[1:2] == [want] else "FAIL ") + f"allowlist refuses {name}: {got}")
got = status(b"CONNECT bedrock-runtime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n\r\n")
code = got.split(" ")[1] if " " in got else got
print(("ok " if code in ("200", "502") else "FAIL ") + f"allowlist passes bedrock-runtime.us-east-1:443 (200 or 502 expected): {got}")
PY
    check "veil-proxy exits 0 on SIGTERM" term_ok "$ppid"
else
    bad "veil-proxy did not start with deploy/allowlist.yaml:"$'\n'"$(cat "$T/proxy.log")"
    kill "$ppid" 2>/dev/null
fi
# a broken allowlist is a startup error (the check above is not vacuous)
{ cat "$D/allowlist.yaml"; echo "- {address: example.com, port: https}"; } > "$T/bad.yaml"
if timeout 60 "$BIN/veil-proxy" --listen "unix:$T/bad.sock" --allowlist "$T/bad.yaml" > "$T/bad.log" 2>&1; then
    bad "veil-proxy accepted a broken allowlist"
else
    check "a broken allowlist names its line" grep -q 'bad.yaml' "$T/bad.log"
fi

###############################################################################
# 4. the IAM policy
check "iam-policy.json parses" "$PY" -m json.tool "$D/iam-policy.json" /dev/null
pycheck "$D/iam-policy.json" "$SRC/src/server/http/models.c" <<'PY'
import json, re, sys
pol = json.load(open(sys.argv[1]))
ids = re.findall(r'\{\s*"([a-z]{2}\.[^"]+)"\s*,', open(sys.argv[2]).read())
def res(s):
    r = s.get("Resource", [])
    return [r] if isinstance(r, str) else r
def acts(s):
    a = s.get("Action", [])
    return sorted([a] if isinstance(a, str) else a)
print(("ok " if len(ids) == 11 else "FAIL ") + f"models.c lists 11 model ids ({len(ids)})")
print(("ok " if pol.get("Version") == "2012-10-17" else "FAIL ") + "policy Version 2012-10-17")
st = pol.get("Statement", [])
print(("ok " if st and all(s.get("Effect") == "Allow" for s in st) else "FAIL ") + "only Allow statements")
want = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
print(("ok " if st and all(acts(s) == want for s in st) else "FAIL ") + "actions: exactly InvokeModel + InvokeModelWithResponseStream")
allr = [r for s in st for r in res(s)]
print(("ok " if allr and all(r not in ("*", "arn:aws:bedrock:*") for r in allr) else "FAIL ") + "no wildcard resource")
prof_re = re.compile(r"^arn:aws:bedrock:\*:ACCOUNT_ID:inference-profile/us\.[a-z0-9.:-]+$")
fm_re = re.compile(r"^arn:aws:bedrock:\*::foundation-model/[a-z0-9.:-]+$")
bad = [r for r in allr if not (prof_re.match(r) or fm_re.match(r))]
print(("ok " if not bad else "FAIL ") + f"every resource is a profile or foundation-model ARN {bad}")
for i in ids:
    p = f"arn:aws:bedrock:*:ACCOUNT_ID:inference-profile/{i}"
    f = f"arn:aws:bedrock:*::foundation-model/{i.split('.', 1)[1]}"
    print(("ok " if p in allr else "FAIL ") + f"policy: inference profile of {i}")
    print(("ok " if f in allr else "FAIL ") + f"policy: foundation model of {i}")
named = {re.sub(r"^us\.", "", r.rsplit("/", 1)[1]) for r in allr}
extra = named - {i.split(".", 1)[1] for i in ids}
print(("ok " if not extra else "FAIL ") + f"no model beyond models.c: {sorted(extra)}")
fm_st = [s for s in st if any(fm_re.match(r) for r in res(s))]
cond_ok = all("bedrock:InferenceProfileArn" in json.dumps(s.get("Condition", {})) for s in fm_st)
print(("ok " if fm_st and cond_ok else "FAIL ") + "foundation models only through the inference profiles (Condition)")
PY

###############################################################################
# 5. the Dockerfile's shape
DF=$D/enclave/Dockerfile
mapfile -t froms < <(grep -iE '^[[:space:]]*FROM[[:space:]]' "$DF")
check "Dockerfile: two stages" test "${#froms[@]}" = 2
check "Dockerfile: builder is Debian 12, named build" bash -c "[[ '${froms[0]:-}' =~ ^FROM\ debian:12[-a-z]*(@sha256:[0-9a-f]{64})?\ AS\ build$ ]]"
check "Dockerfile: runtime is FROM scratch" test "${froms[1]:-}" = "FROM scratch"
check "Dockerfile: no --debug-mode outside comments" bash -c "! grep -v '^[[:space:]]*#' '$DF' | grep -q -- '--debug'"
check "Dockerfile: runtime tree copied from the builder" grep -qx 'COPY --from=build /rootfs/ /' "$DF"
check "Dockerfile: tree assembled by build-rootfs.sh" grep -q 'deploy/enclave/build-rootfs.sh /build /rootfs' "$DF"
ENTRY=$(grep -E '^ENTRYPOINT' "$DF" | tail -1 | sed 's/^ENTRYPOINT[[:space:]]*//')
pycheck "$ENTRY" <<'PY'
import json, sys
try:
    e = json.loads(sys.argv[1])
except ValueError:
    e = None
print(("ok " if isinstance(e, list) and all(isinstance(x, str) for x in e) else "FAIL ") + f"ENTRYPOINT is exec form (JSON array): {sys.argv[1]}")
e = e if isinstance(e, list) else [""]
print(("ok " if e[0] == "/usr/local/bin/veil-enclave" else "FAIL ") + "ENTRYPOINT runs /usr/local/bin/veil-enclave")
ok = "--ca-file" in e and e.index("--ca-file") + 1 < len(e) and e[e.index("--ca-file") + 1] == "/etc/ssl/certs/ca-certificates.crt"
print(("ok " if ok else "FAIL ") + "ENTRYPOINT passes --ca-file /etc/ssl/certs/ca-certificates.crt")
print(("ok " if not any(a.startswith(("--listen", "--proxy")) for a in e) else "FAIL ") + "ENTRYPOINT keeps the vsock defaults")
PY
# the builder installs what scripts/install-deps installs for building
deps=$(sed -n '/^PKGS="/,/"$/p' "$SRC/scripts/install-deps" | tr -d '"' | sed 's/^PKGS=//' | tr -s ' \n' '\n')
for p in $deps; do
    case $p in *-dev|build-essential|cmake|ninja-build|pkg-config|ca-certificates)
        check "Dockerfile installs $p (as scripts/install-deps)" grep -qE "(^|[[:space:]])$p([[:space:]]|\\\\|$)" "$DF" ;;
    esac
done
while read -r srcpath; do
    check "Dockerfile COPY source $srcpath exists" test -e "$SRC/$srcpath"
done < <(grep -E '^COPY ' "$DF" | grep -v -- '--from' | awk '{ for (i = 2; i < NF; i++) print $i }')

###############################################################################
# 6. run-enclave.sh with a fake nitro-cli
FAKE=$T/fakebin
mkdir -p "$FAKE" "$T/nitro"
export FAKE_NITRO_DIR=$T/nitro
cat > "$FAKE/nitro-cli" <<'EOF'
#!/usr/bin/env bash
# fake nitro-cli: records its arguments; one enclave's state in $FAKE_NITRO_DIR/state
d=$FAKE_NITRO_DIR
printf '%s\n' "$*" >> "$d/calls"
id=i-0123456789abcdef0-enc0123456789abcdef
case $1 in
run-enclave)
    shift
    name=unnamed flags=NONE cid=17
    while [[ $# -gt 0 ]]; do
        case $1 in
            --enclave-name) name=$2; shift ;;
            --enclave-cid) cid=$2; shift ;;
            --debug-mode) flags=DEBUG_MODE ;;
        esac
        shift
    done
    flags=${FAKE_FLAGS:-$flags}
    echo "$name $id $cid RUNNING $flags" > "$d/state"
    echo "Start allocating memory..."
    printf '{\n  "EnclaveName": "%s",\n  "EnclaveID": "%s",\n  "ProcessID": 4242,\n  "EnclaveCID": %s,\n  "NumberOfCPUs": 2,\n  "CPUIDs": [\n    1,\n    3\n  ],\n  "MemoryMiB": 1024\n}\n' "$name" "$id" "$cid" ;;
describe-enclaves)
    if [[ -s $d/state ]]; then
        read -r n i c s f < "$d/state"
        if [[ -n ${FAKE_COMPACT:-} ]]; then
            printf '[{"EnclaveName":"%s","EnclaveID":"%s","ProcessID":4242,"EnclaveCID":%s,"NumberOfCPUs":2,"CPUIDs":[1,3],"MemoryMiB":1024,"State":"%s","Flags":"%s"}]\n' "$n" "$i" "$c" "$s" "$f"
        else
            printf '[\n  {\n    "EnclaveName": "%s",\n    "EnclaveID": "%s",\n    "ProcessID": 4242,\n    "EnclaveCID": %s,\n    "NumberOfCPUs": 2,\n    "CPUIDs": [\n      1,\n      3\n    ],\n    "MemoryMiB": 1024,\n    "State": "%s",\n    "Flags": "%s",\n    "Measurements": {\n      "HashAlgorithm": "Sha384 { ... }",\n      "PCR0": "00",\n      "PCR1": "11",\n      "PCR2": "22"\n    }\n  }\n]\n' "$n" "$i" "$c" "$s" "$f"
        fi
    else
        echo "[]"
    fi ;;
terminate-enclave)
    rm -f "$d/state"
    printf 'Successfully terminated enclave %s.\n{\n  "EnclaveID": "%s",\n  "Terminated": true\n}\n' "$3" "$3" ;;
*)
    echo "fake nitro-cli: unsupported: $*" >&2
    exit 3 ;;
esac
EOF
chmod +x "$FAKE/nitro-cli"
: > "$T/fake.eif"
RUN=$D/run-enclave.sh
reset_fake() { rm -f "$T/nitro/calls" "$T/nitro/state"; touch "$T/nitro/calls"; }
# run_enclave ARGS...: runs the script with the fake first on PATH; sets rc, out, err
run_enclave() {
    rc=0
    env PATH="$FAKE:$PATH" VEIL_EIF="$T/fake.eif" "$RUN" "$@" > "$T/re.out" 2> "$T/re.err" || rc=$?
    out=$(cat "$T/re.out"); err=$(cat "$T/re.err")
}
run_line() { grep '^run-enclave' "$T/nitro/calls" || true; }
# env -u: the opt-in must not leak in from the caller's environment
unset VEIL_ALLOW_DEBUG_ENCLAVE ENCLAVE_CID VEIL_ENCLAVE_CPUS VEIL_ENCLAVE_MEMORY_MIB VEIL_ENCLAVE_NAME

# nitro-cli missing: a clear error
if env PATH=/usr/bin:/bin bash -c 'command -v nitro-cli' >/dev/null 2>&1; then
    skip "nitro-cli is installed on this machine: the missing-CLI message is not tested"
else
    rc=0; env PATH=/usr/bin:/bin VEIL_EIF="$T/fake.eif" "$RUN" start > /dev/null 2> "$T/re.err" || rc=$?
    check "run-enclave: nitro-cli missing -> exit 1" test "$rc" = 1
    check "run-enclave: nitro-cli missing -> says so" grep -q 'nitro-cli not found' "$T/re.err"
fi

reset_fake
run_enclave start
line=$(run_line)
check "run-enclave start: exit 0 ($err)" test "$rc" = 0
check "run-enclave start: runs nitro-cli run-enclave" test -n "$line"
check "run-enclave start: 2 vCPUs, 1024 MiB by default" bash -c "[[ '$line' == *'--cpu-count 2 --memory 1024'* ]]"
check "run-enclave start: the EIF and the name" bash -c "[[ '$line' == *'--enclave-name veil --eif-path $T/fake.eif'* ]]"
check "run-enclave start: no --debug-mode" bash -c "[[ '$line' != *--debug-mode* ]]"
check "run-enclave start: no CID unless asked" bash -c "[[ '$line' != *--enclave-cid* ]]"
check "run-enclave start: prints nitro-cli's JSON" grep -q '"EnclaveCID": 17' "$T/re.out"

run_enclave start
check "run-enclave start twice: exit 0" test "$rc" = 0
check "run-enclave start twice: runs nitro-cli once" test "$(grep -c '^run-enclave' "$T/nitro/calls")" = 1
check "run-enclave start twice: says already running" grep -q 'already running' "$T/re.err"

run_enclave status
check "run-enclave status: running -> exit 0" test "$rc" = 0
check "run-enclave status: prints the enclave" test "$out" = "veil i-0123456789abcdef0-enc0123456789abcdef 17 RUNNING NONE"
FAKE_COMPACT=1 run_enclave status
check "run-enclave status: compact JSON parses too" test "$out" = "veil i-0123456789abcdef0-enc0123456789abcdef 17 RUNNING NONE"

run_enclave stop
check "run-enclave stop: exit 0" test "$rc" = 0
check "run-enclave stop: terminates by id" grep -qx 'terminate-enclave --enclave-id i-0123456789abcdef0-enc0123456789abcdef' "$T/nitro/calls"
check "run-enclave stop: enclave gone" test ! -e "$T/nitro/state"
run_enclave stop
check "run-enclave stop when stopped: exit 0" test "$rc" = 0
run_enclave status
check "run-enclave status: stopped -> exit 1" test "$rc" = 1

reset_fake
run_enclave --cpus 4 --memory 2048 --cid 16 start
line=$(run_line)
check "run-enclave sizing flags" bash -c "[[ '$line' == *'--cpu-count 4 --memory 2048 --enclave-cid 16'* ]]"
reset_fake
ENCLAVE_CID=20 VEIL_ENCLAVE_CPUS=6 VEIL_ENCLAVE_MEMORY_MIB=3072 run_enclave
line=$(run_line)
check "run-enclave sizing from the environment (default command start)" \
    bash -c "[[ '$line' == *'--cpu-count 6 --memory 3072 --enclave-cid 20'* ]]"

for bad_args in "--cid 3" "--cid 0" "--cid 4294967295" "--cpus 0" "--cpus two" "--memory 32" "--name a/b" "--bogus" "start stop"; do
    reset_fake
    # shellcheck disable=SC2086
    run_enclave $bad_args
    check "run-enclave $bad_args: refused with exit 2" test "$rc" = 2
    check "run-enclave $bad_args: nitro-cli not run" test ! -s "$T/nitro/calls"
done
reset_fake
rc=0; env PATH="$FAKE:$PATH" VEIL_EIF="$T/missing.eif" "$RUN" start > /dev/null 2> "$T/re.err" || rc=$?
check "run-enclave: missing EIF -> exit 1" test "$rc" = 1
check "run-enclave: missing EIF -> named" grep -q 'missing.eif' "$T/re.err"
check "run-enclave: missing EIF -> nothing started" test -z "$(run_line)"

# debug mode: only with --debug AND VEIL_ALLOW_DEBUG_ENCLAVE=yes (defect §10.17)
reset_fake
run_enclave --debug-mode start
check "run-enclave --debug-mode without opt-in: exit 2" test "$rc" = 2
check "run-enclave --debug-mode without opt-in: explains" grep -q 'refusing' "$T/re.err"
check "run-enclave --debug-mode without opt-in: nitro-cli never run" test ! -s "$T/nitro/calls"
reset_fake
run_enclave --debug start
check "run-enclave --debug without opt-in: exit 2" test "$rc" = 2
check "run-enclave --debug without opt-in: nitro-cli never run" test ! -s "$T/nitro/calls"
reset_fake
VEIL_ALLOW_DEBUG_ENCLAVE=no run_enclave --debug start
check "run-enclave --debug with VEIL_ALLOW_DEBUG_ENCLAVE=no: exit 2" test "$rc" = 2
reset_fake
VEIL_ALLOW_DEBUG_ENCLAVE=yes run_enclave start
line=$(run_line)
check "opt-in variable alone does not enable debug mode" bash -c "[[ -n '$line' && '$line' != *--debug-mode* ]]"
reset_fake
VEIL_ALLOW_DEBUG_ENCLAVE=yes run_enclave --debug start
line=$(run_line)
check "run-enclave --debug with opt-in: exit 0" test "$rc" = 0
check "run-enclave --debug with opt-in: --debug-mode passed" bash -c "[[ '$line' == *--debug-mode* ]]"
check "run-enclave --debug with opt-in: loud warning" grep -q 'WARNING: the veil enclave is starting in DEBUG MODE' "$T/re.err"
check "run-enclave --debug with opt-in: warning names the console" grep -q 'can read its console' "$T/re.err"
# a production start that comes up in debug mode anyway is torn down
reset_fake
FAKE_FLAGS=DEBUG_MODE run_enclave start
check "run-enclave: enclave reporting DEBUG_MODE in production -> exit 1" test "$rc" = 1
check "run-enclave: ... and it is terminated" grep -q '^terminate-enclave' "$T/nitro/calls"

# supervise: exits 1 when the enclave dies (systemd restarts it), 0 on SIGTERM
reset_fake
: > "$T/sup.err" # here, not in the background job: wait_for must not see an old line
env PATH="$FAKE:$PATH" VEIL_EIF="$T/fake.eif" "$RUN" --interval 0.1 supervise > /dev/null 2>> "$T/sup.err" &
spid=$!
pids+=("$spid")
# the enclave dies only once start has seen it listed: nitro-cli's run-enclave call
# alone comes before that check, and a state file removed in between made start
# itself fail ("not listed after run-enclave") on a loaded machine
if wait_for "$T/sup.err" "enclave 'veil' started:"; then
    rm -f "$T/nitro/state"   # the enclave dies
    rc=0
    for ((i = 0; i < 600; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$spid" 2>/dev/null && kill -KILL "$spid"
    wait "$spid" || rc=$?
    check "supervise: enclave gone -> exit 1 (rc=$rc)" test "$rc" = 1
    check "supervise: says the enclave is gone" grep -q 'is gone' "$T/sup.err"
else
    bad "supervise did not start the enclave: $(cat "$T/sup.err")"
fi
reset_fake
: > "$T/sup.err" # here, not in the background job: wait_for must not see an old line
env PATH="$FAKE:$PATH" VEIL_EIF="$T/fake.eif" "$RUN" --interval 0.1 supervise > /dev/null 2>> "$T/sup.err" &
spid=$!
pids+=("$spid")
if wait_for "$T/sup.err" "enclave 'veil' started:"; then
    check "supervise: SIGTERM -> exit 0" term_ok "$spid"
    check "supervise: SIGTERM terminates the enclave" grep -q '^terminate-enclave --enclave-id' "$T/nitro/calls"
    check "supervise: enclave gone after stop" test ! -e "$T/nitro/state"
else
    bad "supervise did not start the enclave: $(cat "$T/sup.err")"
fi
run_enclave --help
check "run-enclave --help: exit 0" test "$rc" = 0
check "run-enclave --help: explains the sizing" grep -q '81 us' "$T/re.out"

###############################################################################
# 7. the image contents, assembled without Docker
RB=$D/enclave/build-rootfs.sh
R=$T/rootfs
if "$RB" "$BIN" "$R" > "$T/rootfs.log" 2>&1; then
    ok
    check "rootfs: veil-enclave" test -x "$R/usr/local/bin/veil-enclave"
    check "rootfs: CA bundle" grep -q 'BEGIN CERTIFICATE' "$R/etc/ssl/certs/ca-certificates.crt"
    for m in dev proc sys run tmp; do
        check "rootfs: /$m mount point" test -d "$R/$m"
    done
    check "rootfs: no shell" test ! -e "$R/bin/sh"
    # exactly: the binary, the CA bundle and what ldd lists (the loader included)
    expected=$( { echo /usr/local/bin/veil-enclave; echo /etc/ssl/certs/ca-certificates.crt
                  ldd "$BIN/veil-enclave" | sed -nE 's|.*=> (/[^ ]+) \(.*|\1|p; s|^[[:space:]]*(/[^ ]+) \(.*|\1|p'; } | LC_ALL=C sort -u)
    actual=$(cd "$R" && find . -type f -o -type l | sed 's|^\.||' | LC_ALL=C sort)
    if [[ $expected == "$actual" ]]; then ok; else bad "rootfs files differ from binary + ldd + CA:"$'\n'"$(diff <(echo "$expected") <(echo "$actual"))"; fi
    check "rootfs: the ELF loader is there" test -n "$(ldd "$BIN/veil-enclave" | sed -nE 's|^[[:space:]]*(/[^ ]+) \(.*|\1|p')"
    # the enclave's init mounts /proc before it starts veil-enclave; do the same
    # (sanitizer builds need it: LeakSanitizer reads /proc/self/task at exit)
    sanitized=false
    grep -qa -e __asan_init -e __ubsan_handle "$BIN/veil-enclave" && sanitized=true
    chroot_ok=false
    if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
        chroot_ok=true
        if mount -t proc proc "$R/proc" 2>/dev/null; then
            mounted+=("$R/proc")
        elif $sanitized; then
            chroot_ok=false
        fi
    fi
    if $chroot_ok; then
        out=$(chroot "$R" /usr/local/bin/veil-enclave --help 2>&1)
        check "chroot rootfs veil-enclave --help (the tree is complete)" test $? = 0
        check "chroot --help output" grep -q 'Usage: veil-enclave' <<< "$out"
        # the ENTRYPOINT as nitro-cli runs it, with a unix socket instead of vsock:
        # loads the CA bundle, makes the key pair, serves GET_PUBLIC_KEY
        mapfile -t entry < <("$PY" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$ENTRY")
        chroot "$R" "${entry[@]}" --listen unix:/tmp/e.sock --proxy none --nsm none > "$T/enclave.log" 2>&1 &
        epid=$!
        pids+=("$epid")
        if wait_for "$T/enclave.log" 'event=listening'; then
            ok
            pycheck "$R/tmp/e.sock" <<'PY'
import json, re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b'{"command":"GET_PUBLIC_KEY"}\n')
buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(4096)
    if not c:
        break
    buf += c
r = json.loads(buf)
print(("ok " if r.get("status") == "success" and re.fullmatch("[0-9a-f]{64}", r.get("public_key", "")) else "FAIL ") + f"enclave in the rootfs answers GET_PUBLIC_KEY: {buf[:120]!r}")
PY
            check "enclave in the rootfs exits 0 on SIGTERM" term_ok "$epid"
        else
            bad "veil-enclave did not start in the rootfs with the ENTRYPOINT flags:"$'\n'"$(cat "$T/enclave.log")"
        fi
    elif $sanitized; then
        skip "sanitizer build and /proc cannot be mounted in the rootfs: chroot not tried"
    else
        skip "not root: chroot into the rootfs not tried"
    fi
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null; done
    mounted=()
else
    bad "build-rootfs.sh failed:"$'\n'"$(cat "$T/rootfs.log")"
fi
rc=0; "$RB" "$BIN" "$R" > /dev/null 2> "$T/rb.err" || rc=$?
check "build-rootfs.sh refuses a non-empty OUT_DIR" test "$rc" = 1
rc=0; "$RB" > /dev/null 2>&1 || rc=$?
check "build-rootfs.sh without arguments: usage, exit 2" test "$rc" = 2

###############################################################################
# 8. veild.env.example: every variable veild reads, production values, no secrets
pycheck "$D/veild.env.example" "$SRC/src/server/veild_main.c" "$SRC/src/server/settings.c" "$D/systemd/veil-enclave.service" <<'PY'
import re, sys
env_text = open(sys.argv[1]).read()
main = open(sys.argv[2]).read()
settings = open(sys.argv[3]).read()
unit = open(sys.argv[4]).read()
names = set()
m = re.search(r"static void usage\(FILE \*f\)\s*\{(.*?)\n\}", main, re.S)
for line in (m.group(1) if m else "").splitlines():
    lm = re.match(r'\s*"  ((?:[A-Z][A-Z0-9_]+,? ?)+)', line)
    if lm:
        names.update(re.findall(r"[A-Z][A-Z0-9_]+", lm.group(1)))
names.update(re.findall(r'(?:COPY\([a-z_]+,|config_(?:str|long|bool)\()\s*"([A-Z][A-Z0-9_]+)"', settings))
names.update(re.findall(r'config_(?:str|long|bool)\(\s*"([A-Z][A-Z0-9_]+)"', main))
print(("ok " if len(names) >= 30 else "FAIL ") + f"found veild's variables ({len(names)})")
active = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", env_text, re.M))
mentioned = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", env_text, re.M))
for n in sorted(names):
    print(("ok " if n in mentioned else "FAIL ") + f"veild.env.example sets or documents {n}")
want = {
    "ENCLAVE_MODE": "nitro", "ENCLAVE_CREDENTIAL_REFRESH_SECONDS": "2700",
    "VEIL_LISTEN": "tcp:127.0.0.1:8000", "AWS_REGION": "us-east-1",
}
for k, v in want.items():
    print(("ok " if active.get(k) == v else "FAIL ") + f"veild.env.example: {k}={v} (got {active.get(k)})")
print(("ok " if active.get("DATABASE_URL", "").startswith("postgresql://") else "FAIL ") + "DATABASE_URL is postgresql://")
print(("ok " if re.fullmatch(r"https://[^/]+\.clerk\.accounts\.dev", active.get("CLERK_ISSUER", "")) else "FAIL ") + "CLERK_ISSUER placeholder")
print(("ok " if active.get("CLERK_WEBHOOK_SECRET", "").startswith("whsec_") else "FAIL ") + "CLERK_WEBHOOK_SECRET placeholder")
print(("ok " if active.get("CORS_ORIGINS", "").startswith("https://") else "FAIL ") + "CORS_ORIGINS set to an https origin")
cid = re.search(r"^Environment=ENCLAVE_CID=(\d+)$", unit, re.M)
print(("ok " if cid and active.get("ENCLAVE_CID") == cid.group(1) else "FAIL ") + "ENCLAVE_CID matches veil-enclave.service")
secretish = [r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"whsec_[A-Za-z0-9+/]{24,}={0,2}\b", r"sk_(live|test)_[A-Za-z0-9]{10,}"]
hits = [p for p in secretish if re.search(p, env_text)]
print(("ok " if not hits else "FAIL ") + f"no secret-looking value {hits}")
for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    print(("ok " if k not in active else "FAIL ") + f"{k} is not set (the instance role is used)")
print(("ok " if all(not l.startswith("export ") for l in env_text.splitlines()) else "FAIL ") + "EnvironmentFile syntax: no export")
PY

###############################################################################
# 9. the README covers what an operator needs
RM=$D/README.md
for w in 'PCR0' 'PCR1' 'PCR2' 'PCR3' 'PCR4' 'PCR8' 'attestation' '/api/v1/chat/enclave/health' \
         'nitro-enclaves-allocator' 'allocator.yaml' 'HttpPutResponseHopLimit' 'EnclaveOptions' \
         'ENCLAVE_MODE=mock' 'nitro-cli build-enclave' 'iam-policy.json' 'SET_CREDENTIALS'; do
    check "README mentions $w" grep -q -- "$w" "$RM"
done
while read -r p; do
    check "README's $p exists" test -e "$SRC/$p"
done < <(grep -oE 'deploy/[A-Za-z0-9_./-]+[A-Za-z0-9_]' "$RM" | sort -u)

echo "$passes passed, $fails failed, $skips skipped"
[[ $fails == 0 ]]
