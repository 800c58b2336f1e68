#!/usr/bin/python3
"""The `veil` client as a person uses it, on the full local stack (nitro mode):
login, keys init / unlock / lock / recover, ask (live and --json), chat from stdin,
history, sessions, models, a wrong passcode, and an organization: the admin creates
the org key and distributes it, a member chats in the org context and reads the
org's history with the org key, while the admin can read it too.
Also what a newcomer walking the README meets, with the exact texts: a server
that is down, chat before keys, a bad option on every verb, the complete model
list in the --model error, `keys status` saying whether the key is unlocked
here and what the client verifies of the enclave, and the aligned `veil --help`.
Every client is logged in with the simulated NSM's root and measurements, so each
chat here verifies a real (simulated) attestation first; test_cli_attest has the attacks.
"""
import hashlib
import json
import os
import re
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, Checks, Stack, TempDir, call, dev_token, expected_answer, free_port, run  # noqa: E402

C = Checks()


def veil(cfg, args, env=None, stdin=None):
    e = {"VEIL_CONFIG": cfg}
    e.update(env or {})
    return run([os.path.join(BIN, "veil")] + args, env=e, input=stdin, check=False)


def out(r):
    return r.stdout.decode()


def sim_trust(tmp):
    """The simulated NSM's measurements for this veil-enclave, and the two lines `keys
    status` shows for them and the simulator's root (computed here, not by the client)."""
    meas = os.path.join(tmp, "measurements.json")
    r = veil(os.path.join(tmp, "none.json"), ["attest", "sim-measurements", os.path.join(BIN, "veil-enclave")])
    C.eq(r.returncode, 0, f"sim-measurements ({r.stderr.decode()})")
    with open(meas, "wb") as f:
        f.write(r.stdout)
    pcrs = json.loads(r.stdout)["Measurements"]
    der = ssl.PEM_cert_to_DER_cert(open(os.path.join(tmp, "nsm", "root.pem")).read())
    root = (f"a custom root (CN=veil simulated NSM root,O=veil SIMULATED NSM (not AWS), SHA-256 "
            f"{hashlib.sha256(der).hexdigest()})")
    lines = (f"attestation root: {root}, for a simulated NSM only\n"
             f"measurements: PCR0 {pcrs['PCR0']}, PCR1 {pcrs['PCR1']}, PCR2 {pcrs['PCR2']}\n")
    return lines, root


def note(verb, root):
    """What chat and ask say on stderr when they verify against a custom root."""
    return (f"veil {verb}: note: verifying the enclave against {root} from `veil login --attestation-root`, not the "
            "pinned AWS Nitro root: a simulated NSM, not a Nitro Enclave\n")


def login(stack, tmp, name, token):
    cfg = os.path.join(tmp, name, "config.json")  # one directory each: the key cache sits next to the config
    r = veil(cfg, ["login", "--server", stack.url, "--token", "-",
                   "--measurements", os.path.join(tmp, "measurements.json"),
                   "--attestation-root", os.path.join(tmp, "nsm", "root.pem")], stdin=token.encode())
    C.eq(r.returncode, 0, f"{name}: login ({r.stderr.decode()})")
    C.eq(os.stat(cfg).st_mode & 0o777, 0o600, f"{name}: config file mode 0600")
    return cfg


VERBS = ["keygen", "seal", "open", "dev-token", "login", "keys", "chat", "ask", "history", "sessions", "models", "org",
         "attest"]


def check_usage(tmp):
    """No server needed: --help and option errors."""
    r = veil(os.path.join(tmp, "none.json"), ["--help"])
    rows = [l for l in out(r).splitlines() if l.startswith("  ")]
    C.eq([l.split()[0] for l in rows], VERBS, "--help lists every verb")
    cols = {len(l) - len(l[2:].split(" ", 1)[1].lstrip()) for l in rows}
    C.eq(len(cols), 1, f"--help: every summary starts in the same column: {rows}")
    C.ok("  dev-token  mint a local RS256 test token (Clerk-shaped) for veild" in rows, f"--help: the dev-token row {rows}")
    for v in VERBS:
        r = veil(os.path.join(tmp, "none.json"), [v, "--bogus"])
        C.eq((r.returncode, r.stderr.decode()), (2, f"veil {v}: unknown option '--bogus'\nTry 'veil {v} --help'.\n"),
             f"{v} --bogus")
    for args, msg in ((["ask", "--model"], "option '--model' needs an argument"),
                      (["keys", "--no-cache=yes", "status"], "option '--no-cache' takes no argument"),
                      (["seal", "-z"], "unknown option '-z'"),
                      (["open", "-k"], "option '-k' needs an argument")):
        r = veil(os.path.join(tmp, "none.json"), args)
        C.eq((r.returncode, r.stderr.decode()), (2, f"veil {args[0]}: {msg}\nTry 'veil {args[0]} --help'.\n"),
             " ".join(args))


def check_server_down(tmp):
    url = f"http://127.0.0.1:{free_port()}"
    env = {"VEIL_SERVER": url, "VEIL_TOKEN": "t"}
    msg = f"cannot reach the veil server at {url}: connection refused (is veild running? `make run` starts the local stack)"
    for verb in (["keys", "status"], ["models"], ["chat"]):
        r = veil(os.path.join(tmp, "none.json"), verb, env, stdin=b"hello\n")
        C.eq((r.returncode, r.stderr.decode()), (1, f"veil {verb[0]}: {msg}\n"), f"{verb[0]} with the server down")
    r = veil(os.path.join(tmp, "none.json"), ["login", "--server", url, "--token", "t"])
    C.eq((r.returncode, r.stderr.decode()), (1, f"veil login: {msg}\n"), "login with the server down")


def main():
    with TempDir() as tmp:
        check_usage(tmp)
        check_server_down(tmp)
        stack = Stack(tmp)
        try:
            stack.start_enclave()
            stack.start_veild("nitro", extra={"VEIL_ATTEST_USER_RATE": "1000"})  # many chats in a row
            trust, root = sim_trust(tmp)
            alice = login(stack, tmp, "alice", dev_token(tmp, "user_alice"))
            pc = {"VEIL_PASSCODE": "alice-passcode"}

            r = veil(alice, ["models"])
            C.ok(r.returncode == 0 and "us.meta.llama3-1-8b-instruct-v1:0" in out(r), "models")
            r = veil(alice, ["ask", "hello"], pc)
            C.ok(r.returncode == 1 and "veil keys init" in r.stderr.decode(), f"ask before keys: {r.stderr}")
            # chat checks the server and the keys before its banner, not at the first message
            r = veil(alice, ["chat"], pc, stdin=b"hello\n")
            C.eq((r.returncode, r.stderr.decode()), (1, "veil chat: no encryption keys yet: run `veil keys init` first\n"),
                 "chat before keys: no banner, the reason")
            r = veil(alice, ["keys", "init"], pc)
            C.eq(r.returncode, 0, f"keys init ({r.stderr.decode()})")
            code = re.search(r"(\d{4}-\d{4}-\d{4}-\d{4}-\d{4})", out(r))
            pub = call(stack.url, "GET", "/api/v1/users/me/encryption-status", dev_token(tmp, "user_alice"))[1]["public_key"]
            r = veil(alice, ["keys", "status"])
            C.eq((r.returncode, out(r)), (0, f"has_encryption_keys: yes\npublic_key: {pub}\nunlocked here: no\n" + trust),
                 "keys status: not unlocked here; the root and PCRs chat verifies")
            # the --model error names every model, none cut off
            ids = [m["id"] for m in call(stack.url, "GET", "/api/v1/chat/models", dev_token(tmp, "user_alice"))[1]]
            r = veil(alice, ["ask", "--model", "gpt-nope", "hi"], pc)
            C.eq((r.returncode, r.stderr.decode()),
                 (1, note("ask", root) + "veil ask: Invalid model. Available models: [" + ", ".join(f"'{i}'" for i in ids)
                  + "] (HTTP 400)\n"),
                 "ask --model: the complete list")
            C.eq(len(ids), 11, "the eleven models")
            C.ok(code is not None, "keys init prints the recovery code")
            r = veil(alice, ["keys", "init"], pc)
            C.ok(r.returncode == 1 and "already has keys" in r.stderr.decode(), "keys init twice is refused")

            # ask: live output, then --json
            r = veil(alice, ["ask", "--model", "us.meta.llama3-1-8b-instruct-v1:0", "[[sim: chunks=5]] live"], pc)
            C.ok(r.returncode == 0 and out(r).startswith(expected_answer("live", 5)), f"ask live: {out(r)!r}")
            r = veil(alice, ["ask", "--json", "[[sim: chunks=3]] scripted"], pc)
            j = json.loads(out(r))
            C.eq(j["answer"], expected_answer("scripted", 3), "ask --json answer")
            C.eq(j["output_tokens"], 3, "ask --json tokens")
            sid = j["session_id"]

            # continue the session from stdin with chat, then read it back
            r = veil(alice, ["chat", "--session", sid], pc, stdin=b"[[sim: chunks=2]] second turn\n\n")
            C.ok(r.returncode == 0 and expected_answer("second turn", 2) in out(r), f"chat: {out(r)!r}")
            r = veil(alice, ["history", "--json", sid], pc)
            turns = json.loads(out(r))
            C.eq([t["role"] for t in turns], ["user", "assistant"] * 2, "history roles")
            C.eq({t["status"] for t in turns}, {"verified"}, "history: both exchanges verified")
            C.eq(turns[3]["text"], expected_answer("second turn", 2), "history decrypts the answer")
            r = veil(alice, ["sessions"])
            C.ok(sid in out(r), "sessions lists the conversation")

            # unlock caches the key (mode 0600); lock removes it; a wrong passcode fails clearly
            r = veil(alice, ["keys", "unlock"], pc)
            key_file = os.path.join(tmp, "alice", "private_key")
            C.ok(r.returncode == 0 and os.stat(key_file).st_mode & 0o777 == 0o600, "unlock caches the key 0600")
            r = veil(alice, ["keys", "status"])
            C.eq(out(r), f"has_encryption_keys: yes\npublic_key: {pub}\nunlocked here: yes\n" + trust,
                 "keys status: unlocked here")
            r = veil(alice, ["history", sid])  # no passcode needed now
            C.ok(r.returncode == 0 and "second turn" in out(r), "history with the cached key")
            veil(alice, ["keys", "lock"])
            C.ok(not os.path.exists(key_file), "lock removes the cached key")
            C.ok(out(veil(alice, ["keys", "status"])).endswith("unlocked here: no\n" + trust), "keys status after lock")
            r = veil(alice, ["history", sid], {"VEIL_PASSCODE": "not-it"})
            C.ok(r.returncode == 1 and "wrong passcode" in r.stderr.decode(), "a wrong passcode is refused")

            # recover with the code: same key pair, old history still readable under the new passcode
            r = veil(alice, ["keys", "recover"], {"VEIL_RECOVERY_CODE": code.group(1), "VEIL_PASSCODE": "new-pass-2"})
            C.eq(r.returncode, 0, f"recover ({r.stderr.decode()})")
            r = veil(alice, ["history", sid], {"VEIL_PASSCODE": "new-pass-2"})
            C.ok(r.returncode == 0 and "second turn" in out(r), "history after recovery")

            # an organization: admin creates and distributes the org key; a member chats in it
            admin_tok = dev_token(tmp, "user_admin", org="org_acme", role="admin")
            member_tok = dev_token(tmp, "user_bob", org="org_acme", role="member")
            admin = login(stack, tmp, "admin", admin_tok)
            bob = login(stack, tmp, "bob", member_tok)
            for tok in (admin_tok, member_tok):
                st, r2, _ = call(stack.url, "POST", "/api/v1/organizations/sync", tok,
                                 {"org_id": "org_acme", "name": "Acme"})
                C.eq(st, 200, f"org sync {r2}")
            apc, bpc = {"VEIL_PASSCODE": "admin-passcode"}, {"VEIL_PASSCODE": "bob-passcode"}
            C.eq(veil(admin, ["keys", "init"], apc).returncode, 0, "admin keys")
            C.eq(veil(bob, ["keys", "init"], bpc).returncode, 0, "member keys")
            r = veil(bob, ["ask", "too early"], bpc)
            # the storage key is the org's, opened by the member: none yet, nothing sent
            C.eq((r.returncode, r.stderr.decode().splitlines()[-1]),
                 (1, "veil ask: the organization key has not been distributed to you yet"),
                 f"member before the org key: {r.stderr}")
            r = veil(admin, ["org", "keys-init"], dict(apc, VEIL_ORG_PASSCODE="org-passcode"))
            C.eq(r.returncode, 0, f"org keys-init ({r.stderr.decode()})")
            r = veil(admin, ["org", "distribute"], apc)
            C.ok(r.returncode == 0 and "user_bob" in out(r), f"org distribute: {out(r)} {r.stderr.decode()}")
            r = veil(bob, ["ask", "--json", "[[sim: chunks=2]] org secret"], bpc)
            C.eq(r.returncode, 0, f"member asks in the org ({r.stderr.decode()})")
            osid = json.loads(out(r))["session_id"]
            r = veil(bob, ["history", osid], bpc)
            C.ok(r.returncode == 0 and "org secret" in out(r) and "[exchange" not in out(r),
                 f"the member reads the org history, its chain verified with the org key: {r.stderr!r}")
            # stored under the org key: the member's personal key alone cannot open it
            st, msgs, _ = call(stack.url, "GET", f"/api/v1/chat/sessions/{osid}/messages", member_tok)
            C.eq(len(msgs["messages"]), 2, "two stored messages in the org session")
        finally:
            for name, code_ in stack.stop().items():
                C.ok(code_ == 0, f"{name} exited cleanly ({code_})")
            for name, p in stack.procs.items():
                C.ok(p.sanitizer_clean(), f"{name}: no sanitizer report")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
