#!/usr/bin/env python3
"""test_layers: the source tree keeps the layers ARCHITECTURE.md draws.

Reads every #include "..." under src/ and checks:
  - each folder includes only itself and the folders below it
    (common <- crypto <- net, auth, aws, attest <- enclave, proxy <- server, cli), so the
    folder graph has no cycle and no arrow up;
  - inside veild, the store and the HTTP engine include nothing else of the server, and
    the enclave link only veild's settings;
  - the CLI includes the enclave protocol and nothing else of the enclave;
  - the enclave protocol's command names, event keys and SSE event names are spelled in
    src/enclave/protocol.[ch] only;
  - a file over 600 lines says in its header comment why it stays whole ("Stays whole
    (~N lines): <why>").
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import Checks  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SRC = os.path.join(ROOT, "src")

# a folder may include the folders of a lower rank, and the others of its own rank only
# where SAME allows it (aws's Bedrock client rides net's HTTPS client)
RANK = {"common": 0, "crypto": 1, "net": 2, "auth": 2, "aws": 2, "attest": 2,
        "enclave": 3, "proxy": 3, "server": 4, "cli": 4}
SAME = {("aws", "net")}

# inside src/server: these include nothing of server/ outside themselves
SERVER_LEAVES = ("server/store/", "server/http/httpd.", "server/http/user_limits.")
# the enclave link sees only itself and veild's settings
SERVER_LINK = "server/link/"

PROTOCOL_STRINGS = ("GET_PUBLIC_KEY", "SET_CREDENTIALS", "HEALTH", "CHAT", "CHAT_STREAM",
                    "RUN_TESTS", "GET_ATTESTATION", "stream_key", "encrypted_chunk",
                    "encrypted_chunk_v2", "encrypted_chunk_v3", "thinking", "thinking_v2",
                    "thinking_v3", "is_final", "error_code", "stream_format",
                    "encrypted_request", "available_commands")
# (veild's GET /enclave/health has a "has_credentials" of its own: the REST API's, spec §4.2)
PROTOCOL_HOME = ("src/enclave/protocol.c", "src/enclave/protocol.h")

LINE_LIMIT = 600
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources():
    for d, _, files in os.walk(SRC):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                p = os.path.join(d, f)
                yield os.path.relpath(p, ROOT), open(p, encoding="utf-8").read()


def folder(path):
    """src/<folder>/... -> folder"""
    return path.split("/")[1]


def target(src_rel, inc):
    """the tree path an include names (a bare name is in the includer's folder)"""
    if "/" not in inc:
        return os.path.join(os.path.dirname(src_rel)[len("src/"):], inc)
    return inc


def check_ranks(C, files):
    arrows = {}
    for path, text in files:
        a = folder(path)
        for inc in INCLUDE.findall(text):
            b = target(path, inc).split("/")[0]
            if b != a:
                arrows.setdefault((a, b), []).append(f"{path} includes {inc}")
    C.ok(all(f in RANK for f in {folder(p) for p, _ in files}),
         "every folder under src has a rank (add new ones to RANK and ARCHITECTURE.md)")
    for (a, b), where in sorted(arrows.items()):
        ok = RANK.get(b, 99) < RANK.get(a, -1) or (a, b) in SAME
        C.ok(ok, f"{a} -> {b} goes up or sideways: {where[0]}")
    # no cycle between folders (implied by the ranks; checked on its own so that a SAME
    # entry cannot hide one)
    graph = {}
    for a, b in arrows:
        graph.setdefault(a, set()).add(b)
    seen, stack = set(), []

    def visit(n):
        if n in stack:
            return stack[stack.index(n):] + [n]
        if n in seen:
            return None
        seen.add(n)
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            cyc = visit(m)
            if cyc:
                return cyc
        stack.pop()
        return None

    cycle = None
    for n in sorted(graph):
        cycle = cycle or visit(n)
    C.ok(cycle is None, f"folder include cycle: {' -> '.join(cycle or [])}")
    return arrows


def check_server_leaves(C, files):
    for path, text in files:
        rel = path[len("src/"):]
        if not rel.startswith(SERVER_LEAVES):
            continue
        own = rel.split(".")[0] if not rel.startswith("server/store/") else "server/store/"
        for inc in INCLUDE.findall(text):
            t = target(path, inc)
            if t.startswith("server/") and not t.startswith(own):
                C.ok(False, f"{path} is below the rest of veild but includes {inc}")


def check_server_link(C, files):
    for path, text in files:
        if not path.startswith("src/" + SERVER_LINK):
            continue
        for inc in INCLUDE.findall(text):
            t = target(path, inc)
            if t.startswith("server/") and not t.startswith(SERVER_LINK):
                C.eq(t, "server/settings.h", f"{path}: the enclave link includes only itself and the settings")


def check_cli_protocol_only(C, files):
    """the CLI links the protocol library, not the enclave core"""
    for path, text in files:
        if folder(path) != "cli":
            continue
        for inc in INCLUDE.findall(text):
            if inc.startswith("enclave/"):
                C.eq(inc, "enclave/protocol.h", f"{path}: the CLI includes only the enclave protocol")


def check_protocol_strings(C, files):
    pat = re.compile(r'"(' + "|".join(PROTOCOL_STRINGS) + r')"')
    found = []
    for path, text in files:
        if path in PROTOCOL_HOME:
            continue
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for m in pat.finditer(code):
            found.append(f"{path}: \"{m.group(1)}\"")
    C.eq(found, [], "protocol strings spelled outside src/enclave/protocol.[ch]")


def check_sizes(C, files):
    for path, text in files:
        n = text.count("\n")
        if n <= LINE_LIMIT:
            continue
        head = text.split("*/", 1)[0] if text.lstrip().startswith("/*") else ""
        C.ok("Stays whole" in head,
             f"{path} has {n} lines and its header comment does not say why it stays whole")


def main():
    C = Checks()
    files = list(sources())
    C.ok(len(files) > 100, f"the source tree is read ({len(files)} files)")
    arrows = check_ranks(C, files)
    # the checker sees real arrows (it would pass vacuously on a broken include regex)
    C.ok(("server", "enclave") in arrows and ("crypto", "common") in arrows,
         "the include graph has the arrows the layers are made of")
    check_server_leaves(C, files)
    check_server_link(C, files)
    check_cli_protocol_only(C, files)
    check_protocol_strings(C, files)
    check_sizes(C, files)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
