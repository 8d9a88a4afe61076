#!/usr/bin/env python3
"""Slowloris: can a pool of slow clients starve well-behaved ones?

For each scenario (``--scenarios``, ``WORKERS:LIMIT`` pairs; ``default``
leaves ``-c`` at the server's default of 1000) it starts
``bin/qpsmtpd-server --workers WORKERS -H [-c LIMIT]`` on a free loopback
port and:

1. runs ``--good`` well-behaved clients for ``--duration`` seconds, each a
   loop of whole transactions over a raw socket (greeting, EHLO, MAIL, RCPT,
   DATA with 1 KB, QUIT): the baseline;
2. opens a pool of ``--pool`` slow clients and keeps it full: half are slow
   writers (read the greeting, then send one byte every ``--interval``
   seconds and never read again), half slow readers (read the greeting, send
   EHLO, then a NOOP every ``--interval`` seconds, and never read a reply,
   with a 4 KB receive buffer).  A pool client that is refused (421) or
   dropped reconnects after ``--retry`` seconds, as an attacker would;
3. with the pool held, runs the well-behaved clients again for
   ``--duration`` seconds;
4. drops the pool and checks that the server still serves.

It reports per scenario the pool clients held and refused, and for the good
clients the transactions that succeeded and the latency percentiles (from
connect to the reply to QUIT), before and under the pool.

A scenario is *sized* when every worker could hold the whole pool plus the
good clients (``LIMIT >= --pool + --good``: the kernel may hand all of them
to one worker).  A sized scenario passes when every good transaction under
the pool succeeds and its p95 latency is under ``--p95-limit`` seconds.  An
undersized one (the default ``-c 1000`` against 2,000 slow clients) shows the
risk an administrator sizes ``-c`` (and ``-m`` per address) against: once the
pool fills ``-c``, good clients are refused with 421.  It is reported, not
failed.

    bench/slowloris.py                                   # 1:5000, 2:5000, 1:default, 2:default
    bench/slowloris.py --scenarios 2:5000 --duration 10

All traffic stays on 127.0.0.1.  Exit status 1 if a sized scenario fails.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402  (the standard library must be patched first)
import itertools  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.lock import Semaphore  # noqa: E402

from procfs import tree_rss_kb  # noqa: E402
from server import BenchServer, read_code  # noqa: E402  (waits with time.sleep, patched above into gevent.sleep)

PLUGINS = ["hosts_allow", "count_unrecognized_commands 4", "relay", "rcpt_ok", "queue/discard"]
MESSAGE = (b"From: <good@client.test>\r\nTo: <u@example.com>\r\nSubject: well-behaved\r\n\r\n"
           + b"x" * 78 + b"\r\n") * 12 + b".\r\n"
STEPS = ((b"EHLO good.client.test\r\n", 250), (b"MAIL FROM:<good@client.test>\r\n", 250),
         (b"RCPT TO:<u@example.com>\r\n", 250), (b"DATA\r\n", 354), (MESSAGE, 250), (b"QUIT\r\n", 221))
SLOW_WRITER_BYTES = b"EHLO slow.writer.test\r\n" + b"NOOP\r\n" * 1000


class TransactionTimeout(Exception):
    pass


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def transaction(address, timeout):
    """One whole well-behaved transaction: ("ok" or what went wrong, seconds)."""
    started = time.monotonic()
    sock = None
    try:
        with gevent.Timeout(timeout, TransactionTimeout):
            sock = socket.create_connection(address)
            reader = sock.makefile("rb")
            code = read_code(reader)
            if code != 220:
                return "refused at greeting (%d)" % code, time.monotonic() - started
            for command, expected in STEPS:
                sock.sendall(command)
                code = read_code(reader)
                if code != expected:
                    verb = command.split()[0].decode() if command is not MESSAGE else "end of DATA"
                    return "%s answered %d" % (verb, code), time.monotonic() - started
        return "ok", time.monotonic() - started
    except TransactionTimeout:
        return "timed out after %g s" % timeout, time.monotonic() - started
    except (OSError, ValueError) as exc:
        return "%s" % type(exc).__name__, time.monotonic() - started
    finally:
        if sock is not None:
            sock.close()


def good_clients(address, clients, seconds, pause, timeout):
    """``clients`` loops of transactions for ``seconds``: {"latencies": [...ok...], "failures": {what: n}}."""
    result = {"latencies": [], "failures": {}}
    until = time.monotonic() + seconds

    def loop():
        while time.monotonic() < until:
            outcome, elapsed = transaction(address, timeout)
            if outcome == "ok":
                result["latencies"].append(elapsed)
            else:
                result["failures"][outcome] = result["failures"].get(outcome, 0) + 1
            gevent.sleep(pause)

    gevent.joinall([gevent.spawn(loop) for _ in range(clients)])
    return result


class SlowPool:
    """``size`` slow clients, each reconnecting when refused or dropped, until stopped."""

    def __init__(self, address, size, interval, retry):
        self.address = address
        self.size = size
        self.interval = interval
        self.retry = retry
        self.held = 0
        self.peak_held = 0
        self.refused = 0  # greeted with something other than 220
        self.failed = 0  # could not connect or read the greeting
        self.dropped = 0  # the server closed a held connection
        self.connecting = Semaphore(256)  # keeps the SYNs within the server's listen backlog
        self.greenlets = []

    def start(self):
        kinds = itertools.cycle([self.slow_writer, self.slow_reader])
        self.greenlets = [gevent.spawn(self.slot, next(kinds), i * self.interval / self.size)
                          for i in range(self.size)]

    def stop(self):
        gevent.killall(self.greenlets, timeout=10)

    def slot(self, hold, offset):
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader's window stays small
            holding = False
            try:
                with self.connecting:
                    sock.settimeout(15)
                    sock.connect(self.address)
                    greeting = sock.recv(512)
                if not greeting.startswith(b"220"):
                    self.refused += 1
                else:
                    self.held += 1
                    self.peak_held = max(self.peak_held, self.held)
                    holding = True
                    hold(sock, offset)
                    self.dropped += 1
            except OSError:
                if holding:
                    self.dropped += 1
                else:
                    self.failed += 1
            finally:
                if holding:
                    self.held -= 1
                sock.close()
            gevent.sleep(self.retry)

    def slow_writer(self, sock, offset):
        """One byte every ``interval`` seconds; replies are never read."""
        gevent.sleep(offset)
        for byte in itertools.cycle(SLOW_WRITER_BYTES):
            sock.send(bytes([byte]))
            gevent.sleep(self.interval)

    def slow_reader(self, sock, offset):
        """Commands that are never answered to anyone: no reply is ever read."""
        sock.sendall(b"EHLO slow.reader.test\r\n")
        gevent.sleep(offset)
        while True:
            sock.sendall(b"NOOP\r\n")
            gevent.sleep(self.interval)


def percentile(values, share):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered) + 0.5)) - 1))]


def label(limit):
    return "1000 (default)" if limit is None else str(limit)


def ms(value):
    return "-" if value is None else "%.0f" % (value * 1000)


def describe(run):
    ok = len(run["latencies"])
    total = ok + sum(run["failures"].values())
    lat = run["latencies"]
    return {"ok": ok, "total": total, "p50": percentile(lat, 0.50), "p95": percentile(lat, 0.95),
            "max": max(lat) if lat else None, "failures": run["failures"]}


def scenario(workers, limit, options):
    workdir = Path(tempfile.mkdtemp(prefix="qpgevent-slowloris-"))
    args = ["--workers", str(workers), "-H", "--graceful-timeout", "2"]
    if limit is not None:
        args += ["-c", str(limit)]
    server = BenchServer(workdir, PLUGINS, {"rcpthosts": ["example.com"], "loglevel": "3",
                                            "me": "slowloris.localhost"}, args)
    result = {"workers": workers, "limit": limit, "workdir": workdir}
    try:
        result["command"] = server.start(settle=1.0)  # the other workers too
        workers_at_start = server.workers()
        result["rss_idle_kb"] = tree_rss_kb(server.process.pid)
        good_clients(server.address, options.good, 1.0, options.pause, options.timeout)  # warm-up, not counted
        result["baseline"] = describe(good_clients(server.address, options.good, options.duration, options.pause,
                                                   options.timeout))
        pool = SlowPool(server.address, options.pool, options.interval, options.retry)
        started = time.monotonic()
        pool.start()
        while pool.held < options.pool and time.monotonic() - started < options.fill_timeout:
            gevent.sleep(0.2)
        result["fill_s"] = time.monotonic() - started
        result["held_at_fill"] = pool.held
        gevent.sleep(1.0)
        result["rss_pool_kb"] = tree_rss_kb(server.process.pid)
        refused_before = pool.refused
        result["attack"] = describe(good_clients(server.address, options.good, options.duration, options.pause,
                                                 options.timeout))
        result["pool"] = {"held_end": pool.held, "peak": pool.peak_held, "refused": pool.refused,
                          "refused_during": pool.refused - refused_before, "failed": pool.failed,
                          "dropped": pool.dropped}
        pool.stop()
        gevent.sleep(1.0)  # the server sees the pool's connections close
        result["after"] = describe(good_clients(server.address, options.good, 2.0, options.pause, options.timeout))
        result["workers_replaced"] = sorted(workers_at_start - server.workers())
        result["alive"] = server.process.poll() is None
    finally:
        server.stop(grace=10.0)
    result["problems"] = server.problems()
    effective = 1000 if limit is None else limit
    result["sized"] = effective >= options.pool + options.good
    attack = result["attack"]
    result["passed"] = (attack["ok"] == attack["total"] > 0 and attack["p95"] is not None
                        and attack["p95"] < options.p95_limit and result["after"]["ok"] == result["after"]["total"] > 0
                        and not result["workers_replaced"] and result["alive"] and not result["problems"])
    if result["passed"]:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def parse_scenarios(text):
    scenarios = []
    for item in text.split(","):
        workers, _, limit = item.strip().partition(":")
        scenarios.append((int(workers), None if limit in ("", "default") else int(limit)))
    return scenarios


def print_summary(results, options):
    print()
    print("## Slowloris: %d slow clients against well-behaved ones" % options.pool)
    print()
    print("Pool: half slow writers (one byte every %g s, never read), half slow readers (EHLO, then a NOOP every "
          "%g s, never read a reply); a refused or dropped one reconnects after %g s.  Good clients: %d loops of "
          "whole transactions (1 KB message), %g s before and %g s under the pool.  All on 127.0.0.1.  "
          "Latency in ms, connect to the reply to QUIT."
          % (options.interval, options.interval, options.retry, options.good, options.duration, options.duration))
    print()
    print("| server | pool held at end (peak) / pool refusals under load | server RSS idle -> with pool | "
          "good, baseline: ok/total p50/p95/max | good, under pool: ok/total p50/p95/max | good refused/failed "
          "under pool | after the pool | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        base, attack, after, pool = r["baseline"], r["attack"], r["after"], r["pool"]
        server = "--workers %d -c %s" % (r["workers"], label(r["limit"]))
        failures = ", ".join("%d %s" % (n, what) for what, n in sorted(attack["failures"].items())) or "none"
        if r["passed"]:
            verdict = "PASS" if r["sized"] else "no starvation"
        else:
            verdict = "FAIL" if r["sized"] else "good clients starved (undersized -c: expected)"
        print("| `%s` | %d (%d) / %d | %.0f -> %.0f MB | %d/%d %s/%s/%s | %d/%d %s/%s/%s | %s | %d/%d ok | %s |"
              % (server, pool["held_end"], pool["peak"], pool["refused_during"], r["rss_idle_kb"] / 1024,
                 r["rss_pool_kb"] / 1024, base["ok"], base["total"], ms(base["p50"]), ms(base["p95"]),
                 ms(base["max"]), attack["ok"], attack["total"], ms(attack["p50"]), ms(attack["p95"]),
                 ms(attack["max"]), failures, after["ok"], after["total"], verdict))
    print()
    for r in results:
        if r["problems"] or r["workers_replaced"] or not r["alive"]:
            print("Server problems with --workers %d -c %s: workers replaced %s, alive %s" %
                  (r["workers"], label(r["limit"]), r["workers_replaced"] or "none", r["alive"]))
            for line in r["problems"][:10]:
                print("    " + line)
        if not r["passed"]:
            print("Server log of --workers %d -c %s kept in %s" % (r["workers"], label(r["limit"]), r["workdir"]))
    print()
    print("Criterion for a sized server (-c >= pool + good clients, over all workers): every good transaction under the "
          "pool succeeds and p95 < %g s.  Undersized (-c below the pool): slow clients fill -c and good clients get "
          "421 -- size -c for the slow connections you must absorb, and set -m (per-address limit) when attackers "
          "come from few addresses (not used here: every client is 127.0.0.1)." % options.p95_limit)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="1:5000,2:5000,1:default,2:default",
                        help="WORKERS:LIMIT pairs, comma-separated; LIMIT 'default' omits -c (default: %(default)s)")
    parser.add_argument("--pool", type=int, default=2000, help="slow clients (default 2000)")
    parser.add_argument("--good", type=int, default=4, help="concurrent well-behaved client loops (default 4)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of good traffic per phase (default 20)")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds a good client waits between transactions")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a good transaction may take (default 10)")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between a slow client's sends (default 3)")
    parser.add_argument("--retry", type=float, default=1.0, help="seconds before a refused slow client retries")
    parser.add_argument("--fill-timeout", type=float, default=30.0, help="seconds to wait for the pool to fill")
    parser.add_argument("--p95-limit", type=float, default=1.0, help="p95 latency bound in seconds (default 1)")
    parser.add_argument("--max-seconds", type=float, default=900, help="start no scenario after this long")
    options = parser.parse_args(argv)
    files = raise_fd_limit()
    if files < options.pool + options.good + 64:
        raise SystemExit("only %d file descriptors allowed; the pool needs %d (raise the hard limit: ulimit -Hn)"
                         % (files, options.pool + options.good + 64))
    began = time.monotonic()
    results = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers are stopped on the way out
    for workers, limit in parse_scenarios(options.scenarios):
        if time.monotonic() - began > options.max_seconds:
            print("out of time (--max-seconds): skipping --workers %d -c %s" % (workers, label(limit)))
            continue
        print("scenario --workers %d -c %s ..." % (workers, label(limit)), flush=True)
        results.append(scenario(workers, limit, options))
        r = results[-1]
        print("  baseline %d/%d ok, under pool %d/%d ok (p95 %s ms), pool held %d" %
              (r["baseline"]["ok"], r["baseline"]["total"], r["attack"]["ok"], r["attack"]["total"],
               ms(r["attack"]["p95"]), r["pool"]["held_end"]), flush=True)
    print_summary(results, options)
    return 1 if any(r["sized"] and not r["passed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
