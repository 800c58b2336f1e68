#!/usr/bin/python3
"""bench/dbworkers.py [BUILD_DIR] — how many DB workers (VEIL_DB_WORKERS) veild wants.

veild (mock mode) on SQLite and on a throwaway PostgreSQL, with 1, 2, 4 and 8
workers; 8 clients, each a user of its own, for a few seconds each of writes
(POST /api/v1/chat/sessions: one INSERT after two reads) and of reads (GET
/api/v1/chat/sessions: two SELECTs). Printed: requests per second and latency p50 /
p99 per shape. Figures within one run, never a pass/fail; everything is stopped at
the end. About two minutes.
"""
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
os.environ.setdefault("VEIL_BIN", BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD))
os.environ.setdefault("VEIL_SRC", ROOT)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from veiltest import Postgres, Stack, TempDir, call, dev_token  # noqa: E402

CLIENTS, SECONDS, WORKERS = 8, 3.0, (1, 2, 4, 8)


def drive(url, tokens, method, path, body):
    lat, stop = [], time.monotonic() + SECONDS
    lock = threading.Lock()

    def client(tok):
        mine = []
        while time.monotonic() < stop:
            t0 = time.monotonic()
            st, _, _ = call(url, method, path, tok, body)
            if st == 200:
                mine.append(time.monotonic() - t0)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0] * 99
    return len(lat) / SECONDS, statistics.median(lat) * 1000 if lat else 0, q[98] * 1000


def main():
    pg = Postgres()
    rows = []
    with TempDir() as tmp:
        stack = None
        try:
            pg.start()
            stack = Stack(tmp)
            for backend, db_url in (("sqlite", None), ("postgresql", pg.url)):
                for w in WORKERS:
                    stack.start_veild("mock", db_url, {"VEIL_DB_WORKERS": str(w), "VEIL_LOG_LEVEL": "info"})
                    tokens = [dev_token(tmp, f"{backend}-{w}-{i}") for i in range(CLIENTS)]
                    for t in tokens:
                        call(stack.url, "POST", "/api/v1/users/sync", t)
                    wr = drive(stack.url, tokens, "POST", "/api/v1/chat/sessions", {"name": "bench"})
                    rd = drive(stack.url, tokens, "GET", "/api/v1/chat/sessions?limit=20", None)
                    rows.append((backend, w, wr, rd))
        finally:
            if stack:
                stack.stop()
            pg.stop()
    print(f"veild, {CLIENTS} clients, {SECONDS:.0f} s per shape")
    print("| database | VEIL_DB_WORKERS | writes/s | write p50 / p99 (ms) | reads/s | read p50 / p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for backend, w, wr, rd in rows:
        print(f"| {backend} | {w} | {wr[0]:.0f} | {wr[1]:.1f} / {wr[2]:.1f} | {rd[0]:.0f} | {rd[1]:.1f} / {rd[2]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
