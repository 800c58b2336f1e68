#!/usr/bin/python3
"""Integration: veild never blocks its event loop on the database (issue K), on the
local stack (mock mode: veild with the in-process enclave core, the proxy, the
Bedrock simulator) and a throwaway PostgreSQL reached through a TCP relay the test
controls (veiltest.TcpProxy), which can freeze the database's traffic both ways.

- A frozen database: a chat stream that is running keeps receiving every chunk;
  a store route (the session list) waits on a DB worker; GET /health answers
  "not responding" and the enclave's health answers; once the database thaws, the
  stream ends with `stored` and `done` and the waiting request answers 200.
- VEIL_DB_QUEUE_MAX: with every worker stuck and the queue full, one more store
  request gets 503 with its detail and Retry-After; after the thaw all recover.
- VEIL_DB_STATEMENT_TIMEOUT_MS: a database frozen longer than the timeout gives the
  stuck request a 503 that says so; the worker connects again for the next one.
- SIGTERM with one job stuck on the frozen database and one waiting: both requests
  are answered, veild exits 0 (no sanitizer report).
- Two veilds started at the same moment on one fresh database (PostgreSQL, then
  SQLite) both come up, with every migration applied exactly once.
Waits are on events (log lines, answers) with generous bounds; nothing is timed.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (BIN, Checks, Postgres, Proc, SseStream, Stack, TcpProxy, TempDir, call,  # noqa: E402
                      dev_token, expected_answer, keypair, open_ep, wait_for)

SESSIONS = "/api/v1/chat/sessions"
QUEUE_FULL = "Too many requests are waiting for the database, please retry"
TIMED_OUT = "The database did not answer in time, please retry"
C = Checks()


def setup_user(url, token):
    st, _, _ = call(url, "POST", "/api/v1/users/sync", token)
    C.eq(st, 200, "user sync")
    body = {"public_key": keypair()[1], "encrypted_private_key": "ab" * 32, "iv": "11" * 16, "tag": "22" * 16,
            "salt": "33" * 32, "recovery_encrypted_private_key": "cd" * 32, "recovery_iv": "44" * 16,
            "recovery_tag": "55" * 16, "recovery_salt": "66" * 32}
    st, r, _ = call(url, "POST", "/api/v1/users/me/keys", token, body)
    C.eq(st, 201, f"key upload {r}")


class Background:
    """One request on a thread of its own; .result is (status, body, headers) once it answered."""

    def __init__(self, url, method, path, token):
        self.result = None
        self.t = threading.Thread(target=self._run, args=(url, method, path, token), daemon=True)
        self.t.start()

    def _run(self, url, method, path, token):
        try:
            st, body, r = call(url, method, path, token, timeout=120)
            self.result = (st, body, dict(r.getheaders()))
        except OSError as e:
            self.result = (None, str(e), {})

    def wait(self, timeout=90):
        self.t.join(timeout)
        return self.result


def log_count(proc, needle):
    return proc.text().count(needle)


def wait_log_more(proc, needle, before, more=1, timeout=30):
    return proc.wait_log(needle, timeout, count=before + more)


def start(stack, proxy_url, extra):
    env = {"VEIL_HEALTH_DB_WAIT_MS": "300"}
    env.update(extra)
    v = stack.start_veild("mock", proxy_url, env)
    return v, stack.url


# ---- the checks --------------------------------------------------------------------

def frozen_database(stack, proxy, url_db):
    """A running stream, /health and the enclave's health while the database is frozen."""
    veild, url = start(stack, url_db, {"VEIL_DB_STATEMENT_TIMEOUT_MS": "120000"})
    token = dev_token(stack.tmp, "user_frozen")
    setup_user(url, token)
    s = SseStream(url, token, "[[sim: chunks=20 interval-ms=100]] hello")
    C.eq(s.status, 200, "the stream starts")
    first = s.next()
    C.eq(first and first.get("type"), "session", "the session event comes first")
    chunks = []
    ev = s.next()
    C.eq(ev and ev.get("type"), "encrypted_chunk", "a first chunk")
    chunks.append(ev)

    proxy.freeze()
    try:
        started = log_count(veild, "event=db_job_start path=" + SESSIONS)
        waiting = Background(url, "GET", SESSIONS, token)
        C.ok(wait_log_more(veild, "event=db_job_start path=" + SESSIONS, started),
             "the session list runs on a DB worker (and waits there: the database is frozen)")
        # every chunk arrives while the database stays frozen: the loop relays them
        while len(chunks) < 20:
            ev = s.next()
            if not ev or ev.get("type") != "encrypted_chunk":
                break
            chunks.append(ev)
        C.eq(len(chunks), 20, "every chunk of the running stream arrives while the database is frozen")
        st, body, _ = call(url, "GET", "/health")
        C.eq((st, body), (503, {"status": "unhealthy", "database": "not responding"}),
             "GET /health answers while the database is frozen: not responding")
        st, body, _ = call(url, "GET", "/api/v1/chat/enclave/health", token)
        C.eq((st, body and body.get("status")), (200, "healthy"), "the enclave's health answers meanwhile")
        C.eq(waiting.result, None, "the session list still waits for the database")
    finally:
        proxy.thaw()

    ev = s.next()
    C.eq(ev and ev.get("type"), "stored", f"after the thaw the stream stores the messages ({ev})")
    C.eq(s.next(), {"type": "done"}, "and ends with done")
    s.close()
    answer = "".join(open_ep(s.tpriv, c["encrypted_content"], "enclave-to-client-transport").decode()
                     for c in chunks)
    C.eq(answer, expected_answer("hello", 20), "the relayed chunks are the whole answer")
    res = waiting.wait()
    C.eq(res and res[0], 200, "the waiting session list answers 200 after the thaw")
    sid = first.get("session_id")
    C.ok(res and sid in [x["id"] for x in res[1]["sessions"]], "and lists the new session")
    st, msgs, _ = call(url, "GET", f"{SESSIONS}/{sid}/messages", token)
    C.eq((st, len(msgs["messages"]) if st == 200 else None), (200, 2), "both messages are stored")
    C.ok(wait_for(lambda: call(url, "GET", "/health")[0] == 200, 30), "GET /health is healthy again")


def queue_limit(stack, proxy, url_db):
    """One worker, two places: the fourth store request gets 503; all recover after."""
    veild, url = start(stack, url_db, {"VEIL_DB_WORKERS": "1", "VEIL_DB_QUEUE_MAX": "2",
                                       "VEIL_DB_STATEMENT_TIMEOUT_MS": "120000"})
    token = dev_token(stack.tmp, "user_queue")
    setup_user(url, token)
    proxy.freeze()
    try:
        started = log_count(veild, "event=db_job_start path=" + SESSIONS)
        queued = log_count(veild, "event=db_job_queued path=" + SESSIONS)
        a = Background(url, "GET", SESSIONS, token)
        C.ok(wait_log_more(veild, "event=db_job_start path=" + SESSIONS, started), "the first request runs (stuck)")
        b = Background(url, "GET", SESSIONS, token)
        c = Background(url, "GET", SESSIONS, token)
        C.ok(wait_log_more(veild, "event=db_job_queued path=" + SESSIONS, queued, 3), "two more wait in the queue")
        st, body, r = call(url, "GET", SESSIONS, token)
        C.eq((st, body), (503, {"detail": QUEUE_FULL}), "one more gets 503: the queue is full")
        C.eq(r.getheader("Retry-After"), "1", "with Retry-After")
        C.ok(veild.wait_log("event=db_queue_full path=" + SESSIONS + " queued=2 limit=2", 10), "and a log line")
        st, body, _ = call(url, "GET", "/api/v1/chat/models")
        C.eq(st, 200, "a route without the store answers meanwhile")
        C.ok(a.result is None and b.result is None and c.result is None, "the three wait")
    finally:
        proxy.thaw()
    C.eq([x.wait()[0] for x in (a, b, c)], [200, 200, 200], "after the thaw the three answer 200")
    st, _, _ = call(url, "GET", SESSIONS, token)
    C.eq(st, 200, "and new requests are served")


def statement_timeout(stack, proxy, url_db):
    """A database frozen past the timeout: a clear 503, then a new connection."""
    veild, url = start(stack, url_db, {"VEIL_DB_WORKERS": "1", "VEIL_DB_STATEMENT_TIMEOUT_MS": "300"})
    token = dev_token(stack.tmp, "user_timeout")
    setup_user(url, token)
    proxy.freeze()
    try:
        st, body, r = call(url, "GET", SESSIONS, token, timeout=60)
        C.eq((st, body), (503, {"detail": TIMED_OUT}), "a frozen database past the timeout: 503 that says so")
        C.eq(r.getheader("Retry-After"), "1", "with Retry-After")
        C.ok(veild.wait_log("event=store_timeout op=sessions_list", 10), "logged as a timeout, not an error")
        C.ok("no answer within 1300 ms" in veild.text(), "the log says how long it waited")
        st, body, _ = call(url, "GET", SESSIONS, token, timeout=60)
        C.eq((st, body), (503, {"detail": TIMED_OUT}), "still frozen: reconnecting is bounded the same way")
    finally:
        proxy.thaw()
    st, body, _ = call(url, "GET", SESSIONS, token, timeout=60)
    C.eq(st, 200, f"after the thaw the worker connects again and answers ({body})")


def sigterm_with_jobs(stack, proxy, url_db):
    """SIGTERM with one job stuck on the frozen database and one waiting."""
    veild, url = start(stack, url_db, {"VEIL_DB_WORKERS": "1", "VEIL_DB_STATEMENT_TIMEOUT_MS": "300",
                                       "VEIL_DRAIN_SECONDS": "0"})
    token = dev_token(stack.tmp, "user_sigterm")
    setup_user(url, token)
    proxy.freeze()
    try:
        started = log_count(veild, "event=db_job_start path=" + SESSIONS)
        queued = log_count(veild, "event=db_job_queued path=" + SESSIONS)
        a = Background(url, "GET", SESSIONS, token)
        C.ok(wait_log_more(veild, "event=db_job_start path=" + SESSIONS, started), "one job runs (stuck)")
        b = Background(url, "GET", SESSIONS, token)
        C.ok(wait_log_more(veild, "event=db_job_queued path=" + SESSIONS, queued, 2), "one waits")
        code = veild.stop()
        C.eq(code, 0, "SIGTERM: veild exits 0 with a job running and one waiting")
        ra, rb = a.wait(), b.wait()
        C.eq(ra[:2], (503, {"detail": TIMED_OUT}), "the running job ends at its timeout and is answered")
        C.eq(rb[:2], (503, {"detail": "Service restarting, please retry"}), "the waiting one is cancelled: 503")
        C.eq(veild.sanitizer_reports(), [], "no sanitizer report (no leak, no race on the way out)")
    finally:
        proxy.thaw()
    stack.veild = None


def migrations_at_once(stack, pg):
    """Two veilds at the same moment on one fresh database: both up, migrations once."""
    pg.query("CREATE DATABASE veilmig")
    data = os.path.join(stack.tmp, "mig")
    for backend, db_url in (("postgresql", pg.url.rsplit("/", 1)[0] + "/veilmig"),
                            ("sqlite", "sqlite:" + os.path.join(data, "veil.db"))):
        env = stack.veild_env("mock", db_url, {"VEIL_DATA_DIR": data, "VEIL_LOG_LEVEL": "info"})
        # started back to back, before either is up: they migrate at the same moment
        procs = [Proc(f"mig-{backend}-{i}", [os.path.join(BIN, "veild")], env, stack.tmp) for i in range(2)]
        try:
            for p in procs:
                p.wait_listening(60)
            for p in procs:
                st, body, _ = call(f"http://127.0.0.1:{p.port}", "GET", "/health")
                C.eq((st, body and body.get("database")), (200, "connected"), f"{backend}: {p.name} is up and healthy")
            if backend == "postgresql":
                rows = [tuple(int(x) for x in r) for r in pg_rows(pg, "veilmig", MIGRATIONS_SQL)]
            else:
                import sqlite3
                with sqlite3.connect(db_url[len("sqlite:"):]) as db:
                    rows = db.execute(MIGRATIONS_SQL).fetchall()
            C.eq(rows, [(1, 1), (2, 1), (3, 1)], f"{backend}: every migration applied exactly once")
            for p in procs:
                C.ok("level=error" not in p.text(), f"{backend}: {p.name} logged no error")
        finally:
            codes = [p.stop() for p in procs]
        C.eq(codes, [0, 0], f"{backend}: both stop cleanly")
        C.eq([p.sanitizer_reports() for p in procs], [[], []], f"{backend}: no sanitizer report")


MIGRATIONS_SQL = "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version"


def pg_rows(pg, dbname, sql):
    import subprocess
    out = subprocess.run([f"{pg.bindir}/psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "-d", dbname,
                          "-X", "-A", "-t", "-F", "\x1f", "-c", sql],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return [tuple(line.split("\x1f")) for line in out.splitlines() if line]


def main():
    pg = Postgres()
    with TempDir() as tmp:
        stack = proxy = None
        try:
            pg.start()
            proxy = TcpProxy(pg.port)
            url_db = f"postgresql://{pg.user}@127.0.0.1:{proxy.port}/veiltest"
            stack = Stack(tmp)
            C.run("a frozen database does not stop the loop", frozen_database, stack, proxy, url_db)
            C.run("VEIL_DB_QUEUE_MAX", queue_limit, stack, proxy, url_db)
            C.run("VEIL_DB_STATEMENT_TIMEOUT_MS", statement_timeout, stack, proxy, url_db)
            C.run("SIGTERM with jobs in the pool", sigterm_with_jobs, stack, proxy, url_db)
            C.run("two veilds migrate one database at once", migrations_at_once, stack, pg)
        finally:
            if stack:
                stack.stop()
            if proxy:
                proxy.stop()
            pg.stop()
    C.finish()


if __name__ == "__main__":
    main()
