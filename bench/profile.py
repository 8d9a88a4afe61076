#!/usr/bin/env python3
"""Where one qpgevent process spends its CPU under smtp-source load (py-spy).

Starts a one-process qpgevent (rcpt_ok + queue/discard, nothing logged per
message), drives it with Postfix's ``smtp-source`` (one new connection per
message), samples it with ``py-spy record --format raw`` and prints the
functions that take the most CPU: by own time (the frame on top of the stack)
and by inclusive time (anywhere on the stack), as a share of the samples in
which the process was running.

    bench/profile.py [--conc 100] [--size 1024] [--secs 15] [--top 25] [--svg flame.svg]
    bench/profile.py --server 127.0.0.1:2600 --pid 1234     # a server you started
    bench/profile.py ... --message signed.eml --sender a@example.org --helo mx.example.org

Needs py-spy (``pip install py-spy``) and root (ptrace).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from many_sessions import start_server  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def short(path):
    """``qpgevent/smtp.py`` rather than the whole site-packages path."""
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    # any checkout, also bench/ab.py's temporary worktrees
    start = max(path.rfind("/qpgevent/"), path.rfind("/plugins/"))
    return path[start + 1:] if start >= 0 else path


def parse_raw(text):
    """Collapsed stacks (``frame;frame;... count``) -> list of ([(func, file)], count)."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame.strip())
            if match:
                frames.append((match["func"], short(match["file"])))
            else:
                frames.append((frame.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def summarise(stacks, top):
    total = sum(count for _, count in stacks)
    own, inclusive, files = collections.Counter(), collections.Counter(), collections.Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[frames[-1]] += count
        files[frames[-1][1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = ["%d samples while running" % total, "", "Own time (top of stack):"]
    for (func, path), count in own.most_common(top):
        lines.append("  %5.1f%%  %s:%s" % (100 * count / total, path, func))
    lines += ["", "Own time by file:"]
    for path, count in files.most_common(top):
        lines.append("  %5.1f%%  %s" % (100 * count / total, path))
    lines += ["", "Inclusive time (anywhere on the stack), qpgevent and plugins:"]
    ours = [(frame, count) for frame, count in inclusive.most_common()
            if frame[1].startswith(("qpgevent/", "plugins/"))]
    for (func, path), count in ours[:top]:
        lines.append("  %5.1f%%  %s:%s" % (100 * count / total, path, func))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conc", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--secs", type=int, default=15, help="seconds of sampling")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--svg", help="also record a flame graph here (a second sampling window)")
    parser.add_argument("--raw", help="keep the collapsed stacks here")
    parser.add_argument("--message", help="send this file (smtp-source -F) instead of --size bytes")
    parser.add_argument("--sender", default="a@example.com", help="MAIL FROM address")
    parser.add_argument("--helo", help="HELO name (smtp-source -M)")
    parser.add_argument("--server", metavar="HOST:PORT")
    parser.add_argument("--pid", type=int)
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("py-spy is not installed: python3 -m pip install py-spy")
    if args.server and not args.pid:
        parser.error("--server needs --pid")

    with tempfile.TemporaryDirectory(prefix="qpgevent-profile.") as tmp:
        server = None
        if args.server:
            host, _, port = args.server.rpartition(":")
            pid = args.pid
        else:
            server = start_server(Path(tmp), 2000)
            (host, port), pid = server.address, server.process.pid
        # enough messages for the sampling windows; stopped as soon as they end
        windows = 2 if args.svg else 1
        message = ["-F", args.message] if args.message else ["-l", str(args.size)]
        helo = ["-M", args.helo] if args.helo else []
        load = subprocess.Popen(["smtp-source", "-s", str(args.conc), "-m", "10000000", *message, *helo,
                                 "-f", args.sender, "-t", "b@example.com", "%s:%s" % (host, port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)  # past the start-up burst
            raw = Path(args.raw or Path(tmp) / "stacks.txt")
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(args.secs), "--rate", str(args.rate),
                            "--nonblocking", "--format", "raw", "-o", str(raw)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=args.secs + 60)
            busy = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            if windows == 2:
                subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(args.secs), "--rate",
                                str(args.rate), "--nonblocking", "-o", args.svg], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.secs + 60)
        finally:
            load.terminate()
            load.wait()
            if server is not None:
                server.stop()
        print("qpgevent PID %d under smtp-source -s %d -l %d: server busy %.0f%% of one core"
              % (pid, args.conc, args.size, 100 * busy))
        print(summarise(parse_raw(raw.read_text()), args.top))
        if args.svg:
            print("\nflame graph: %s" % args.svg)


if __name__ == "__main__":
    main()
