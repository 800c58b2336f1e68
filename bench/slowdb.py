#!/usr/bin/python3
"""bench/slowdb.py [BUILD_DIR] — what a slow database costs a chat stream that runs.

veild (mock mode: the in-process enclave core, veil-proxy, the Bedrock simulator)
on a throwaway PostgreSQL, reached directly and then through a relay that holds
every packet 200 ms each way (tests/integration/veiltest.TcpProxy). In each run a
client streams chats of 40 chunks paced 50 ms apart by the simulator while four
other clients of the same veild ask for their session list as fast as they are
answered (every one a round trip to the database on a DB worker). Printed: the gap
between chunks as the streaming client sees it, and what the slow database adds to
it; the store requests' own latency beside it. Figures within one run, never a
pass/fail on time; the exit status is non-zero only when a stream failed.
Everything is stopped at the end (and on failure); about a minute.
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
from veiltest import Postgres, SseStream, Stack, TcpProxy, TempDir, call, dev_token, keypair  # noqa: E402

CHUNKS, INTERVAL_MS, STREAMS, LOADERS, DELAY_MS = 40, 50, 3, 4, 200


def user(url, tmp, name):
    token = dev_token(tmp, name)
    call(url, "POST", "/api/v1/users/sync", token)
    body = {"public_key": keypair()[1], "encrypted_private_key": "ab" * 32, "iv": "11" * 16, "tag": "22" * 16,
            "salt": "33" * 32, "recovery_encrypted_private_key": "cd" * 32, "recovery_iv": "44" * 16,
            "recovery_tag": "55" * 16, "recovery_salt": "66" * 32}
    call(url, "POST", "/api/v1/users/me/keys", token, body)
    return token


def one_run(stack, db_url, label):
    stack.start_veild("mock", db_url, {"VEIL_LOG_LEVEL": "info"})
    url = stack.url
    token = user(url, stack.tmp, f"streamer-{label}")
    loaders = [user(url, stack.tmp, f"loader-{label}-{i}") for i in range(LOADERS)]
    stop = threading.Event()
    latencies = []

    def load(tok):
        while not stop.is_set():
            t0 = time.monotonic()
            st, _, _ = call(url, "GET", "/api/v1/chat/sessions", tok)
            if st == 200:
                latencies.append(time.monotonic() - t0)

    threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in loaders]
    for t in threads:
        t.start()
    gaps, failed = [], 0
    try:
        for _ in range(STREAMS):
            s = SseStream(url, token, f"[[sim: chunks={CHUNKS} interval-ms={INTERVAL_MS}]] bench")
            last, n, end = None, 0, None
            while True:
                ev = s.next()
                if ev is None:
                    break
                if ev.get("type") == "encrypted_chunk":
                    now = time.monotonic()
                    if last is not None:
                        gaps.append(now - last)
                    last, n = now, n + 1
                elif ev.get("type") in ("done", "error"):
                    end = ev["type"]
                    break
            s.close()
            failed += n != CHUNKS or end != "done"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    return gaps, latencies, failed


def ms(x):
    return f"{x * 1000:.1f}"


def main():
    pg = Postgres()
    failed = 0
    with TempDir() as tmp:
        stack = proxy = None
        try:
            pg.start()
            proxy = TcpProxy(pg.port, delay_ms=DELAY_MS)
            stack = Stack(tmp)
            direct = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/veiltest"
            slow = f"postgresql://{pg.user}@127.0.0.1:{proxy.port}/veiltest"
            rows = []
            for label, db_url in (("direct", direct), (f"{DELAY_MS} ms each way", slow)):
                gaps, lat, f = one_run(stack, db_url, label.split()[0])
                failed += f
                rows.append((label, gaps, lat, f))
        finally:
            if stack:
                stack.stop()
            if proxy:
                proxy.stop()
            pg.stop()
    print(f"veild on PostgreSQL: {STREAMS} streams of {CHUNKS} chunks paced {INTERVAL_MS} ms, "
          f"{LOADERS} clients listing sessions meanwhile")
    print("| database | gap between chunks mean / p99 / max (ms) | session list p50 (ms) | lists served | "
          "streams complete |")
    print("|---|---|---|---|---|")
    for label, gaps, lat, f in rows:
        shape = "no two chunks arrived"
        if len(gaps) > 1:
            q = statistics.quantiles(gaps, n=100)
            shape = f"{ms(statistics.mean(gaps))} / {ms(q[98])} / {ms(max(gaps))}"
        print(f"| {label} | {shape} | {ms(statistics.median(lat)) if lat else '-'} | {len(lat)} | "
              f"{STREAMS - f} of {STREAMS} |")
    if all(len(r[1]) > 1 for r in rows):
        a, b = statistics.mean(rows[0][1]), statistics.mean(rows[1][1])
        print(f"added delay between chunks with a {DELAY_MS} ms database: {ms(b - a)} ms (mean gap ratio {b / a:.3f})")
    else:
        print(f"added delay between chunks with a {DELAY_MS} ms database: not measurable, streams failed")
    if failed:
        print(f"{failed} stream(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
