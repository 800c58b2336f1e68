#!/usr/bin/env bash
# The veil CLI's crypto verbs as a user runs them: keygen | seal | open for every
# context, and a clear one-line error with a non-zero status for each misuse.
set -euo pipefail
VEIL="$VEIL_BIN/veil"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok()   { passes=$((passes + 1)); }
bad()  { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
field() { sed -E "s/.*\"$1\": \"([0-9a-f]+)\".*/\1/"; }

keys=$("$VEIL" keygen)
PUB=$(echo "$keys" | field public_key)
PRIV=$(echo "$keys" | field private_key)
[[ ${#PUB} == 64 && ${#PRIV} == 64 ]] && ok || bad "keygen output: $keys"
[[ "$keys" =~ ^\{\"public_key\":\ \"[0-9a-f]{64}\",\ \"private_key\":\ \"[0-9a-f]{64}\"\}$ ]] && ok || bad "keygen shape"

contexts=(client-to-enclave-transport enclave-to-client-transport user-message-storage
          assistant-message-storage org-key-distribution recovery-key-encryption test-context)
printf 'line one\nline two \xe2\x9c\x93\n\x00binary\xff' > "$T/msg"
for ctx in "${contexts[@]}"; do
    "$VEIL" seal --to "$PUB" --context "$ctx" < "$T/msg" > "$T/ep.json"
    "$VEIL" open --key "$PRIV" --context "$ctx" < "$T/ep.json" > "$T/out"
    cmp -s "$T/msg" "$T/out" && ok || bad "round trip $ctx"
    # every other context fails
    for other in "${contexts[@]}"; do
        [[ $other == "$ctx" ]] && continue
        if "$VEIL" open --key "$PRIV" --context "$other" < "$T/ep.json" >/dev/null 2>"$T/err"; then
            bad "$ctx opened as $other"
        else ok; fi
    done
done

# the EP has exactly the five fields with the right hex lengths
"$VEIL" seal --to "$PUB" --context test-context < "$T/msg" > "$T/ep.json"
python3 - "$T/ep.json" <<'PY' && ok || bad "EP JSON shape"
import json, sys, re
ep = json.load(open(sys.argv[1]))
assert list(ep) == ["ephemeral_public_key", "iv", "ciphertext", "auth_tag", "hkdf_salt"], list(ep)
for k, n in [("ephemeral_public_key", 64), ("iv", 32), ("auth_tag", 32), ("hkdf_salt", 64)]:
    assert re.fullmatch("[0-9a-f]{%d}" % n, ep[k]), k
assert re.fullmatch("[0-9a-f]*", ep["ciphertext"])
PY

# key file
echo "$PRIV" > "$T/key"
"$VEIL" open --key-file "$T/key" --context test-context < "$T/ep.json" | cmp -s - "$T/msg" && ok || bad "key file"

# empty plaintext round-trips
: > "$T/empty"
"$VEIL" seal --to "$PUB" --context test-context < "$T/empty" | "$VEIL" open --key "$PRIV" --context test-context > "$T/out"
[[ ! -s "$T/out" ]] && ok || bad "empty plaintext"

# misuse: non-zero status and exactly one line on stderr naming the problem
expect_fail() {
    local want_code=$1 pattern=$2; shift 2
    local code=0
    "$@" > "$T/out" 2> "$T/err" < "${STDIN:-/dev/null}" || code=$?
    if [[ $code == 0 ]]; then bad "should fail: $*"; return; fi
    if [[ $want_code != any && $code != "$want_code" ]]; then bad "exit $code, want $want_code: $*"; return; fi
    if [[ $(wc -l < "$T/err") != 1 ]]; then bad "stderr not one line: $(cat "$T/err")"; return; fi
    grep -q -- "$pattern" "$T/err" && ok || bad "stderr '$(cat "$T/err")' lacks '$pattern'"
}
OTHER=$("$VEIL" keygen | field private_key)
STDIN="$T/ep.json" expect_fail 1 "wrong key" "$VEIL" open --key "$OTHER" --context test-context
STDIN="$T/ep.json" expect_fail 2 "unknown context" "$VEIL" open --key "$PRIV" --context nope
STDIN="$T/ep.json" expect_fail 2 "64 hex" "$VEIL" open --key abcd --context test-context
STDIN="$T/ep.json" expect_fail 2 "missing --context" "$VEIL" open --key "$PRIV"
expect_fail 2 "64 hex" "$VEIL" seal --to "${PUB:0:63}" --context test-context
expect_fail 2 "missing --to" "$VEIL" seal --context test-context
expect_fail 2 "unknown verb" "$VEIL" frobnicate
echo '{"ephemeral_public_key": "00"}' > "$T/badep"
STDIN="$T/badep" expect_fail 1 "ephemeral_public_key" "$VEIL" open --key "$PRIV" --context test-context
echo 'not json' > "$T/badep"
STDIN="$T/badep" expect_fail 1 "JSON object" "$VEIL" open --key "$PRIV" --context test-context
python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); e["iv"]=e["iv"][:30]; print(json.dumps(e))' "$T/ep.json" > "$T/badep"
STDIN="$T/badep" expect_fail 1 "iv must be 16 bytes" "$VEIL" open --key "$PRIV" --context test-context
python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); e["auth_tag"]="0"*32; print(json.dumps(e))' "$T/ep.json" > "$T/badep"
STDIN="$T/badep" expect_fail 1 "tampered" "$VEIL" open --key "$PRIV" --context test-context
python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); e["hkdf_salt"]=e["hkdf_salt"][:62]+" a"; print(json.dumps(e))' "$T/ep.json" > "$T/badep"
STDIN="$T/badep" expect_fail 1 "hex" "$VEIL" open --key "$PRIV" --context test-context

# --help on the program and on each verb
for v in "" keygen seal open; do
    if "$VEIL" $v --help > "$T/help" 2>&1 && grep -q "Usage: veil" "$T/help"; then ok; else bad "--help $v"; fi
done

echo "$passes passed, $fails failed"
[[ $fails == 0 ]]
