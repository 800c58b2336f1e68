"""`make run` (scripts/run-local) on a real terminal: the whole stack comes up and says
so in one "veil stack ready" line, and its logged-in client chats after verifying the
simulated NSM's attestation (its root, this veil-enclave's PCRs), and so does the web
page it links to (the dev token in the link's fragment); a Ctrl-C at that
terminal (SIGINT to the whole foreground process group, as a user's) stops it cleanly: exit 0, a "stopped" line, no
"a component exited", the components stopped in the reverse order of their start (so
veild never warns credentials_push_failed because the IMDS simulator went first), all
of them gone, no sanitizer report. Then the same with SIGTERM to the script alone.
The script runs on a pseudo-terminal with its state in a temp dir; every wait is
bounded, and whatever it started is killed at the end.
"""
import http.client
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, SANITIZER_MARKS, SRC, Checks, TempDir, expected_answer, free_port  # noqa: E402

START_S = 300  # first start: a test CA and Argon2id keys, maybe under ASan on a busy machine
STOP_S = 120
COMPONENTS = ["veil-bedrock-sim", "veil-imds-sim", "veil-proxy", "veil-enclave", "veild"]
LOGS = {"veil-bedrock-sim": "bedrock-sim.log", "veil-imds-sim": "imds-sim.log",
        "veil-proxy": "proxy.log", "veil-enclave": "enclave.log", "veild": "veild.log"}
STOP_EVENT = {"veil-bedrock-sim": "event=shutdown", "veil-imds-sim": "event=shutdown",
              "veil-proxy": "event=stopped", "veil-enclave": "event=stopped", "veild": "event=stopped"}


class RunLocal:
    """scripts/run-local on its own pseudo-terminal (it is the session leader's job)."""

    def __init__(self, run_dir, port):
        self.out = b""
        self.pids = {}
        env = dict(os.environ, VEIL_RUN_DIR=run_dir, VEIL_PORT=str(port))
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: nothing but exec
            try:
                os.chdir(SRC)
                os.execve("/bin/bash", ["bash", os.path.join(SRC, "scripts", "run-local"),
                                        os.path.abspath(BIN)], env)
            finally:
                os._exit(127)
        self.status = None

    def read_until(self, pattern, timeout):
        """Reads the terminal until pattern matches (True) or EOF/timeout (False)."""
        end = time.time() + timeout
        while not (pattern and re.search(pattern, self.out)):
            left = end - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not r:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                chunk = b""
            if not chunk:
                return False
            self.out += chunk
        return True

    def ready(self):
        if not self.read_until(rb"veil stack ready: (http://\S+)", START_S):
            return None
        for name, pid in re.findall(rb"^\s+(veil[-\w]*)\s+\S+ \(pid (\d+)\)", self.out, re.M):
            self.pids[name.decode()] = int(pid)
        return re.search(rb"veil stack ready: (http://\S+)", self.out).group(1).decode()

    def wait_exit(self, timeout):
        """Reads the terminal to its end; returns the exit code (None: still running)."""
        self.read_until(None, timeout)
        end = time.time() + timeout
        while self.status is None and time.time() < end:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(st)
            else:
                time.sleep(0.05)
        return self.status

    def text(self):
        return self.out.decode(errors="replace")

    def kill_all(self):
        """Whatever is still running: the script's session and every component."""
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.status = -9
        for pid in self.pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.close(self.fd)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_ts(path, needle):
    """The ts= of the last line holding needle, or None."""
    try:
        with open(path, errors="replace") as f:
            lines = [ln for ln in f if needle in ln]
    except OSError:
        return None
    m = re.match(r"ts=(\S+)", lines[-1]) if lines else None
    return m.group(1) if m else None


def check_client(C, run_dir, how):
    """The ready client chats, verifying the simulated NSM's attestation first: its root
    and the PCRs of this veil-enclave, as run-local stored them."""
    env = dict(os.environ, VEIL_CONFIG=os.path.join(run_dir, "cli", "config.json"))
    veil = os.path.join(os.path.abspath(BIN), "veil")
    r = subprocess.run([veil, "ask", "[[sim: chunks=2]] local"], env=env, capture_output=True, timeout=300)
    C.ok(r.returncode == 0 and r.stdout.decode().startswith(expected_answer("local", 2)),
         f"{how}: the ready client chats: {r.stdout!r} {r.stderr!r}")
    C.ok(b"note: verifying the enclave against a custom root (CN=veil simulated NSM root" in r.stderr,
         f"{how}: after verifying against the simulated NSM's root: {r.stderr!r}")
    with open(os.path.join(run_dir, "measurements.json")) as f:
        pcrs = json.load(f)["Measurements"]
    r = subprocess.run([veil, "keys", "status"], env=env, capture_output=True, timeout=120)
    C.ok(f"measurements: PCR0 {pcrs['PCR0']}, PCR1 {pcrs['PCR1']}, PCR2 {pcrs['PCR2']}\n" in r.stdout.decode(),
         f"{how}: with the simulator's measurements of this veil-enclave: {r.stdout!r}")


def check_page(C, rl, run_dir, port, how):
    """The web page's link carries the dev token in its fragment, and veild serves the
    page with the simulated NSM's root and this veil-enclave's measurements."""
    m = re.search(r"(http://127\.0\.0\.1:\d+)/app/#token=(\S+)", rl.text())
    with open(os.path.join(run_dir, "token")) as f:
        token = f.read().strip()
    C.ok(m is not None and m.group(1) == f"http://127.0.0.1:{port}" and m.group(2) == token,
         f"{how}: the web page's link with the dev token in its fragment")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/app/config.json")
    r = conn.getresponse()
    cfg = json.loads(r.read()) if r.status == 200 else {}
    conn.close()
    with open(os.path.join(run_dir, "measurements.json")) as f:
        pcrs = json.load(f)["Measurements"]
    a = cfg.get("attestation", {})
    C.eq((a.get("measurements") or {}).get("pcrs"), {str(i): pcrs[f"PCR{i}"] for i in range(3)},
         f"{how}: the page verifies this veil-enclave's simulated PCRs")
    C.eq(a.get("root", {}).get("source"), "VEIL_WEB_ATTESTATION_ROOT", f"{how}: against the simulated NSM's root")


def one_run(C, run_dir, how):
    port = free_port()
    rl = RunLocal(run_dir, port)
    try:
        url = rl.ready()
        if not C.ok(url is not None, f"{how}: the stack comes up and prints its ready line:\n{rl.text()[-3000:]}"):
            return
        C.eq(url, f"http://127.0.0.1:{port}", f"{how}: the ready line names veild's URL")
        C.eq(sorted(rl.pids), sorted(COMPONENTS), f"{how}: every component listed with its pid")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        C.eq(conn.getresponse().status, 200, f"{how}: veild answers /health")
        conn.close()
        check_client(C, run_dir, how)
        check_page(C, rl, run_dir, port, how)

        if how == "ctrl-c":
            os.write(rl.fd, b"\x03")  # the terminal sends SIGINT to its foreground group
        else:
            os.kill(rl.pid, signal.SIGTERM)
        code = rl.wait_exit(STOP_S)
        out = rl.text()
        C.eq(code, 0, f"{how}: run-local exits 0:\n{out[-2000:]}")
        C.ok(re.search(r"^stopped\b", out, re.M) is not None, f"{how}: a 'stopped' line:\n{out[-1000:]}")
        C.ok("a component exited" not in out and "exited by itself" not in out,
             f"{how}: a clean stop is not reported as a failure:\n{out[-1000:]}")
        C.ok(not [n for n, p in rl.pids.items() if alive(p)], f"{how}: every component is gone")
        logs = os.path.join(run_dir, "logs")
        with open(os.path.join(logs, "veild.log"), errors="replace") as f:
            veild_log = f.read()
        C.ok("credentials_push_failed" not in veild_log,
             f"{how}: veild never lost its IMDS during the stop:\n{veild_log[-2000:]}")
        # each one stopped before the next was signalled: the reverse of the start order
        stamps = [stop_ts(os.path.join(logs, LOGS[n]), STOP_EVENT[n]) for n in reversed(COMPONENTS)]
        C.ok(None not in stamps and stamps == sorted(stamps),
             f"{how}: stopped in reverse order (veild first, the Bedrock simulator last): "
             f"{list(zip(reversed(COMPONENTS), stamps))}")
        for n in COMPONENTS:
            with open(os.path.join(logs, LOGS[n]), errors="replace") as f:
                bad = [ln for ln in f if any(m in ln for m in SANITIZER_MARKS)]
            C.ok(not bad, f"{how}: no sanitizer report in {n}'s log: {bad[:3]}")
        C.ok(not os.path.exists(os.path.join(run_dir, "proxy.sock"))
             and not os.path.exists(os.path.join(run_dir, "enclave.sock")), f"{how}: sockets removed")
    finally:
        rl.kill_all()


def main():
    C = Checks()
    with TempDir() as tmp:
        run_dir = os.path.join(tmp, "run")
        one_run(C, run_dir, "ctrl-c")
        one_run(C, run_dir, "sigterm")  # the same state dir: a second start reuses it
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
