#!/usr/bin/env python3
"""CPU per command of the state store's Redis client, under gevent's monkey-patching as the server runs it.

    PYTHONPATH=CHECKOUT bench/redis_client.py [--pairs 20000] [--url redis://127.0.0.1:PORT/0]

Runs ``--pairs`` GET+SET pairs (warm: one pair first) through ``qpgevent.state``
of whichever checkout PYTHONPATH names, against ``--url`` or a throw-away
redis-server on 127.0.0.1 (the Debian package's ``redis-server``), and prints
this process's CPU time per command, user and system (the server's CPU is not
counted).  Compare two checkouts by running it once with each.  The "floor"
line is the same commands as constant bytes on one bare socket: the system
calls and gevent's waits that no client can save.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
from typing import Callable, Tuple  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from qpgevent.state import open_store  # noqa: E402
from qpgevent.testing import RedisServer  # noqa: E402


def cpu_per_call(function: Callable[[], object], calls: int) -> Tuple[float, float]:
    """Microseconds of this process's user and system CPU per call of ``function``."""
    function()  # warm: connected, code paths run once
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        function()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) / calls * 1e6, (after.ru_stime - before.ru_stime) / calls * 1e6


def measure(url: str, pairs: int) -> None:
    store = open_store(url)

    def pair() -> None:
        store.get("bench")
        store.set("bench", "value", 60)
    parts = urlsplit(url)
    bare = socket.create_connection((parts.hostname, parts.port), timeout=2)
    bare.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def raw_pair() -> None:
        bare.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nbench\r\n")
        bare.recv(65536)
        bare.sendall(b"*5\r\n$3\r\nSET\r\n$5\r\nbench\r\n$5\r\nvalue\r\n$2\r\nPX\r\n$5\r\n60000\r\n")
        bare.recv(65536)
    for name, function in (("client", pair), ("floor", raw_pair)):
        user, system = cpu_per_call(function, pairs)
        print("%-6s %5.1f us CPU per command (user %.1f, system %.1f)" % (name, (user + system) / 2, user / 2, system / 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--url", help="a running Redis (default: start one)")
    options = parser.parse_args()
    if options.url:
        measure(options.url, options.pairs)
        return
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory).start()
        try:
            measure(server.url, options.pairs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
