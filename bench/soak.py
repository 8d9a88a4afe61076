#!/usr/bin/env python3
"""Soak: many messages through ``qpsmtpd-server --workers 2`` with a few plugins; zero errors, flat memory.

Starts ``bin/qpsmtpd-server --workers 2 -H -c 5000`` on a free loopback port
with the plugins ``hosts_allow``, ``count_unrecognized_commands 4``,
``relay``, ``rcpt_ok`` and ``queue/discard`` (rcpthosts example.com,
loglevel 2), then pushes ``--messages`` messages through it with Postfix's
``smtp-source`` (one connection per message unless ``--reuse``), in rounds of
``--round`` messages.  Meanwhile it samples, every ``--sample-every``
seconds, the RSS of the server's whole process tree (master and workers,
``VmRSS`` from /proc) and its CPU time (utime + stime).

It reports the messages sent, the errors, msgs/s, the RSS once the first
``--warmup`` share of the messages is through and at the end, and whether
the end stayed within ``--max-growth`` of the warm-up value.  An error is a
message smtp-source did not complete, or a warning/fatal line it printed
(per round the larger of the two counts, so one rejected message counts
once); a worker the master had to replace, or a traceback in the server
log, is reported as a server problem and fails the run too.

    bench/soak.py                          # 200,000 messages, 1 KB, 50 sessions
    bench/soak.py --messages 20000 --sessions 20
    bench/soak.py --reuse                  # smtp-source -d: many messages per connection

Exit status: 0 when every message went through without an error, no server
problem was seen and memory stayed flat; 1 otherwise; 2 when ``--max-seconds``
ran out before every message was sent (the summary says how far it got).
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from procfs import CLOCK_TICKS, cpu_ticks, process_tree, rss_kb
from server import ROOT, BenchServer

PLUGINS = ["hosts_allow", "count_unrecognized_commands 4", "relay", "rcpt_ok", "queue/discard"]


class Sampler(threading.Thread):
    """RSS and CPU of the server tree every few seconds, tagged with how many messages were through."""

    def __init__(self, root, every):
        super().__init__(daemon=True)
        self.root = root
        self.every = every
        self.sent = 0  # updated by the driver
        self.samples = []  # (seconds, messages sent, total RSS kB, {pid: RSS kB})
        self.ticks = {}  # pid -> the highest CPU ticks seen: a replaced worker still counts
        self.pids_seen = set()
        self.started = time.monotonic()
        self.halt = threading.Event()

    def sample(self):
        pids = process_tree(self.root)
        self.pids_seen.update(pids)
        rss = {pid: rss_kb(pid) for pid in pids}
        for pid in pids:
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self.ticks[pid] = max(ticks, self.ticks.get(pid, 0))
        entry = (time.monotonic() - self.started, self.sent, sum(rss.values()), rss)
        self.samples.append(entry)
        return entry

    def cpu_seconds(self):
        return sum(self.ticks.values()) / CLOCK_TICKS

    def run(self):
        while not self.halt.wait(self.every):
            self.sample()


def run_round(port, count, options, sampler, deadline):
    """One smtp-source run: (messages completed, error count, diagnostic lines, seconds)."""
    command = [options.smtp_source, "-A", "-c", "-l", str(options.size), "-m", str(count), "-s", str(options.sessions),
               "-f", "a@b.test", "-t", "u@example.com", "-M", "client.test", "127.0.0.1:%d" % port]
    if options.reuse:
        command.insert(1, "-d")
    base = sampler.sent
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    diagnostics = []
    drain = threading.Thread(target=lambda: diagnostics.extend(process.stderr.read().decode(errors="replace")
                                                                .splitlines()), daemon=True)
    drain.start()
    done, tail = 0, b""
    stopped_early = False
    while True:
        if time.monotonic() > deadline and not stopped_early:
            process.kill()  # out of time: what got through so far still counts
            stopped_early = True
        chunk = process.stdout.read1(4096)
        if not chunk:
            break
        tail = (tail + chunk)[-64:]
        numbers = re.findall(rb"(\d+)[\r\n]", tail)
        if numbers:
            done = int(numbers[-1])
            sampler.sent = base + done
    process.wait()
    drain.join(5)
    diagnostics = [line for line in diagnostics if "warning:" in line or "fatal:" in line]
    shortfall = 0 if stopped_early else count - done
    if process.returncode and not stopped_early:
        diagnostics.append("smtp-source exited with status %d" % process.returncode)
    return done, max(shortfall, len(diagnostics)), diagnostics, time.monotonic() - started, stopped_early


def pick_warmup(samples, target):
    """The first sample with at least ``target`` messages through (None if the run never got there)."""
    for sample in samples:
        if sample[1] >= target:
            return sample
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200000, help="messages to send (default 200000)")
    parser.add_argument("--round", type=int, default=10000, help="messages per smtp-source run (default 10000)")
    parser.add_argument("--sessions", type=int, default=50, help="parallel smtp-source sessions (default 50)")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes (default 1024)")
    parser.add_argument("--reuse", action="store_true", help="smtp-source -d: many messages per connection")
    parser.add_argument("--workers", default="2", help="server --workers (default 2)")
    parser.add_argument("--limit", type=int, default=5000, help="server -c (default 5000)")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between memory samples (default 2)")
    parser.add_argument("--warmup", type=float, default=0.10, help="share of the messages that is warm-up (default 0.10)")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (default 0.10)")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long (default 900)")
    parser.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (config, server log)")
    options = parser.parse_args(argv)
    if not os.access(options.smtp_source, os.X_OK):
        raise SystemExit("smtp-source not found: apt-get install postfix (only the binary is used), or --smtp-source")

    began = time.monotonic()
    deadline = began + options.max_seconds
    workdir = Path(tempfile.mkdtemp(prefix="qpgevent-soak-"))
    server = BenchServer(workdir, PLUGINS, {"rcpthosts": ["example.com"], "loglevel": "2", "me": "soak.localhost"},
                         ["--workers", options.workers, "-H", "-c", str(options.limit)])
    # SIGTERM (a timeout wrapper, a CI cancel) must still stop the server: turn it into an exception
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        command = server.start(settle=1.0)  # every worker up, so the tree is complete for the first sample
        sampler = Sampler(server.process.pid, options.sample_every)
        first = sampler.sample()
        workers_at_start = set(first[3]) - {server.process.pid}
        cpu_start = sampler.cpu_seconds()
        sampler.start()
        sent = attempted = errors = 0
        error_lines = []
        busy = 0.0
        rounds = 0
        timed_out = False
        while attempted < options.messages:
            if time.monotonic() > deadline:
                timed_out = True
                break
            count = min(options.round, options.messages - attempted)
            attempted += count
            done, round_errors, lines, seconds, stopped = run_round(server.port, count, options, sampler, deadline)
            rounds += 1
            sent += done
            sampler.sent = sent
            errors += round_errors
            error_lines.extend(lines[:20 - len(error_lines)] if len(error_lines) < 20 else [])
            busy += seconds
            print("round %d: %d messages in %.1f s (%.0f/s), %d errors; total %d, server RSS %d kB"
                  % (rounds, done, seconds, done / seconds if seconds else 0, round_errors, sent,
                     sampler.samples[-1][2]), flush=True)
            if stopped:
                attempted -= count - done  # the rest was never tried
                timed_out = True
                break
        sampler.halt.set()
        sampler.join()
        time.sleep(options.sample_every)  # let the last sessions end before the final sample
        last = sampler.sample()
        cpu = sampler.cpu_seconds() - cpu_start
        workers_at_end = set(last[3]) - {server.process.pid}
        problems = server.problems(also=("killed",))  # read before the stop
        replaced = sorted(workers_at_start - workers_at_end)
        alive = server.process.poll() is None
    finally:
        server.stop()
    wall = time.monotonic() - began

    warm = pick_warmup(sampler.samples, options.warmup * options.messages)
    after_warm = [s for s in sampler.samples if warm is not None and s[0] >= warm[0]]
    peak = max(after_warm, key=lambda s: s[2]) if after_warm else None
    growth = (last[2] - warm[2]) / warm[2] if warm else None
    flat = growth is not None and growth <= options.max_growth
    rate = sent / busy if busy else 0.0
    cpu_per_message = cpu / sent if sent else 0.0

    print()
    print("## Soak: %d messages through qpgevent --workers %s" % (sent, options.workers))
    print()
    print("Server: `%s`  " % " ".join(command[1:]).replace(str(ROOT) + "/", ""))
    print("Plugins: %s; rcpthosts example.com; loglevel 2  " % ", ".join("`%s`" % p for p in PLUGINS))
    print("Client: `smtp-source -A -c%s -l %d -s %d -m <round> ...`, %d round(s) of up to %d%s"
          % (" -d" if options.reuse else "", options.size, options.sessions, rounds, options.round,
             "" if options.reuse else ", one connection per message"))
    print()
    print("| measure | value |")
    print("|---|---|")
    print("| messages completed / attempted / asked | %d / %d / %d%s |"
          % (sent, attempted, options.messages, " (stopped by --max-seconds)" if timed_out else ""))
    print("| errors | %d |" % errors)
    print("| msgs/s (while sending) | %.0f |" % rate)
    print("| wall time | %.0f s |" % wall)
    if warm:
        print("| RSS after warm-up (%d msgs, t=%.0f s) | %d kB |" % (warm[1], warm[0], warm[2]))
        print("| RSS peak after warm-up | %d kB (at %d msgs) |" % (peak[2], peak[1]))
    else:
        print("| RSS after warm-up | never reached %d%% of the messages |" % (options.warmup * 100))
    print("| RSS at the end | %d kB (%s) |" % (last[2], ", ".join("pid %d: %d" % kv for kv in sorted(last[3].items()))))
    print("| RSS growth after warm-up | %s (limit %d%%): %s |"
          % ("%+.1f%%" % (growth * 100) if growth is not None else "n/a", options.max_growth * 100,
             "flat" if flat else "NOT flat"))
    print("| server CPU | %.1f s, %.0f us per message |" % (cpu, cpu_per_message * 1e6))
    print("| workers replaced | %s |" % (", ".join(map(str, replaced)) or "none"))
    print("| server still running at the end | %s |" % ("yes" if alive else "NO"))
    if error_lines:
        print("\nFirst error lines from smtp-source:\n")
        for line in error_lines:
            print("    " + line)
    if problems:
        print("\nServer problems in its log (%s):\n" % server.log_path)
        for line in problems[:20]:
            print("    " + line)
    ok = errors == 0 and flat and not problems and not replaced and alive
    print("\nResult: %s" % ("PASS" if ok and not timed_out else "FAIL" if not ok else
                            "INCOMPLETE (out of time after %d of %d messages)" % (sent, options.messages)))
    if options.keep or not ok:
        print("Work directory kept: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        return 1
    return 2 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
