#!/usr/bin/env python3
"""N concurrent SMTP sessions against one qpgevent process: all greeted, all able to send.

Opens ``--sessions`` connections from one gevent client and reads every
greeting; only when all of them are open and greeted does each send a short
transaction (EHLO, MAIL, RCPT, DATA, a 300-byte message); only when every
message has its answer do they all say QUIT.  So at both steps every session
is open at the same time, in a single server process.

Reports how many sessions were greeted and how many messages were accepted,
the time each step took, and the server's RSS and PSS (from /proc) before,
with every session held, and at the busiest point of the transactions.

    bench/many_sessions.py                       # starts its own server (rcpt_ok, queue/discard)
    bench/many_sessions.py --sessions 1000
    bench/many_sessions.py --server 127.0.0.1:2600 --pid 1234

Exit status 0 only when every session was greeted and every message got 250.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.lock import Semaphore

from server import BenchServer, read_code

MESSAGE = (b"From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: many sessions\r\n\r\n"
           + b"hello from one of many concurrent sessions\r\n" * 5 + b".\r\n")


def memory(pid):
    """(RSS kB, PSS kB) of one process."""
    rss = pss = 0
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        with open("/proc/%d/smaps_rollup" % pid) as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def start_server(workdir, sessions):
    """A one-process qpgevent with the discard queue on a free port, started and greeting."""
    server = BenchServer(workdir, ["rcpt_ok", "queue/discard"],
                         {"rcpthosts": ["example.com"], "me": "bench.localhost", "loglevel": "4"},
                         ["-H", "-c", str(sessions + 100)])
    server.start()
    return server


class Client:
    """The sessions, their shared counters and the two barriers."""

    def __init__(self, address, sessions, timeout):
        self.address = address
        self.sessions = sessions
        self.timeout = timeout
        self.connecting = Semaphore(500)  # keeps SYNs within the listen backlog
        self.greeted = self.not_greeted = 0
        self.accepted = self.refused = 0
        self.quit_ok = 0
        self.errors = {}
        self.all_greeted = Event()
        self.all_answered = Event()
        self.go = Event()  # set once the memory of the held sessions has been read
        self.greeted_at = self.answered_at = None

    def _count(self, counter):
        setattr(self, counter, getattr(self, counter) + 1)
        if self.greeted + self.not_greeted == self.sessions:
            self.greeted_at = time.monotonic()
            self.all_greeted.set()

    def _answered(self, counter):
        setattr(self, counter, getattr(self, counter) + 1)
        if self.accepted + self.refused == self.greeted:
            self.answered_at = time.monotonic()
            self.all_answered.set()

    def _error(self, where, exc):
        key = "%s: %s" % (where, type(exc).__name__)
        self.errors[key] = self.errors.get(key, 0) + 1

    def session(self):
        try:
            with self.connecting:
                sock = gsocket.create_connection(self.address, timeout=self.timeout)
            reader = sock.makefile("rb")
            code = read_code(reader)
        except (OSError, ValueError) as exc:
            self._error("greeting", exc)
            self._count("not_greeted")
            return
        self._count("greeted" if code == 220 else "not_greeted")
        if code != 220:
            sock.close()
            return
        self.go.wait()
        try:
            sock.settimeout(self.timeout)
            code = None
            for command, expect in ((b"EHLO client.example\r\n", 250), (b"MAIL FROM:<a@example.com>\r\n", 250),
                                    (b"RCPT TO:<b@example.com>\r\n", 250), (b"DATA\r\n", 354), (MESSAGE, 250)):
                sock.sendall(command)
                code = read_code(reader)
                if code != expect:
                    break
            self._answered("accepted" if code == 250 else "refused")
        except (OSError, ValueError) as exc:
            self._error("transaction", exc)
            self._answered("refused")
            sock.close()
            return
        self.all_answered.wait()
        try:
            sock.sendall(b"QUIT\r\n")
            if read_code(reader) == 221:
                self.quit_ok += 1
        except (OSError, ValueError) as exc:
            self._error("quit", exc)
        finally:
            sock.close()


def sample_peak(pid, peak, stop):
    """Keep the highest RSS (and its PSS) seen until ``stop`` is set."""
    while not stop.is_set():
        now = memory(pid)
        if now[0] > peak[0]:
            peak[:] = now
        stop.wait(0.2)


def run(address, pid, sessions, timeout):
    client = Client(address, sessions, timeout)
    result = {"sessions": sessions, "server_pid": pid}
    result["rss_before_kb"], result["pss_before_kb"] = memory(pid)
    started = time.monotonic()
    greenlets = [gevent.spawn(client.session) for _ in range(sessions)]
    client.all_greeted.wait(timeout * 3)  # after a timeout the greeted ones go on; the report shows the rest
    result["greet_s"] = round((client.greeted_at or time.monotonic()) - started, 2)
    gevent.sleep(1.0)  # let the server settle before reading its memory
    result["rss_held_kb"], result["pss_held_kb"] = memory(pid)
    result["greeted"], result["not_greeted"] = client.greeted, client.not_greeted
    if client.greeted:
        result["rss_per_session_kb"] = round((result["rss_held_kb"] - result["rss_before_kb"]) / client.greeted, 1)
        result["pss_per_session_kb"] = round((result["pss_held_kb"] - result["pss_before_kb"]) / client.greeted, 1)
    peak, stop = list(memory(pid)), Event()
    sampler = gevent.spawn(sample_peak, pid, peak, stop)
    go_at = time.monotonic()
    client.go.set()
    if client.greeted:
        client.all_answered.wait(timeout * 3)
    client.all_answered.set()
    result["transactions_s"] = round((client.answered_at or time.monotonic()) - go_at, 2)
    stop.set()
    sampler.join()
    result["rss_peak_kb"], result["pss_peak_kb"] = peak
    result["accepted"], result["refused"] = client.accepted, client.refused
    gevent.joinall(greenlets, timeout=timeout)
    result["quit_ok"] = client.quit_ok
    result["errors"] = client.errors
    result["ok"] = client.greeted == sessions and client.accepted == sessions
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--server", metavar="HOST:PORT", help="use this running server (default: start one)")
    parser.add_argument("--pid", type=int, help="PID of --server, for its memory")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each step may take per session")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    if args.server and not args.pid:
        parser.error("--server needs --pid")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.sessions + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit("need %d open files, the hard limit is %d" % (want, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    server = None
    with tempfile.TemporaryDirectory(prefix="qpgevent-many.") as tmp:
        try:
            if args.server:
                host, _, port = args.server.rpartition(":")
                address, pid = (host, int(port)), args.pid
            else:
                server = start_server(Path(tmp), args.sessions)
                address, pid = server.address, server.process.pid
            result = run(address, pid, args.sessions, args.timeout)
        finally:
            if server is not None:
                server.stop()
    print("%(sessions)d sessions, one server process (PID %(server_pid)d)" % result)
    print("  greeted          %(greeted)d (not greeted %(not_greeted)d) in %(greet_s)s s" % result)
    print("  accepted (250)   %(accepted)d (refused or failed %(refused)d) in %(transactions_s)s s, "
          "all sessions open; QUIT answered %(quit_ok)d" % result)
    print("  server RSS MB    before %.1f, all held %.1f, peak %.1f"
          % (result["rss_before_kb"] / 1024, result["rss_held_kb"] / 1024, result["rss_peak_kb"] / 1024))
    if "rss_per_session_kb" in result:
        print("  per held session RSS %(rss_per_session_kb)s KB, PSS %(pss_per_session_kb)s KB" % result)
    if result["errors"]:
        print("  errors           %s" % json.dumps(result["errors"]))
    print("  result           %s" % ("OK" if result["ok"] else "FAILED"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
