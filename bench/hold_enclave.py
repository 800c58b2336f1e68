#!/usr/bin/python3
"""bench/hold_enclave.py unix:PATH — a stand-in for veil-enclave that holds chats
idle, for measuring veild alone with more streams than veil-enclave serves at once
(its connection cap is 4,096).

It speaks the enclave protocol's control commands as a healthy enclave answers them
(GET_PUBLIC_KEY with a real X25519 key, HEALTH with credentials, SET_CREDENTIALS) and
takes every CHAT_STREAM without answering it, until veild closes the connection. So a
format-1 stream through veild is held with veild's side as it is for a model that has
not answered yet: the client's connection, veild's request and the enclave connection.
Benchmarks only: it decrypts nothing and never answers a chat. One asyncio loop;
logs `event=listening addr=...` once ready, exits on SIGTERM.
"""
import asyncio
import json
import os
import resource
import signal
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

PUB = X25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw).hex()
held = 0


def answer(req):
    cmd = str(req.get("command", "")).upper()
    base = {"status": "success", "command": cmd, "source": "nitro-enclave-bedrock"}
    if cmd == "GET_PUBLIC_KEY":
        return dict(base, public_key=PUB, region="us-east-1")
    if cmd == "HEALTH":
        return dict(base, enclave="running", has_credentials=True, region="us-east-1", public_key=PUB,
                    uptime_seconds=1, active_streams=held, max_streams=1 << 20, credentials_expiration=None,
                    credentials_expired=False, max_request=8 << 20, nsm="none")
    if cmd == "SET_CREDENTIALS":
        return dict(base, has_credentials=True, expiration=None)
    return {"status": "error", "error": f"Unknown command: {cmd}"}


async def serve(reader, writer):
    global held
    holding = False
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.strip():
                continue
            req = json.loads(line)
            if str(req.get("command", "")).upper() == "CHAT_STREAM":
                holding = True
                held += 1
                await reader.read()  # until veild goes away
                break
            writer.write(json.dumps(answer(req)).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        if holding:
            held -= 1
        writer.close()


async def main(path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if os.path.exists(path):
        os.unlink(path)
    srv = await asyncio.start_unix_server(serve, path=path, backlog=4096)
    print(f"level=info prog=hold-enclave event=listening addr=unix:{path}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    srv.close()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].startswith("unix:"):
        print("usage: hold_enclave.py unix:PATH", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1][5:]))
