#!/usr/bin/env python3
"""Two commits of qpgevent in one interleaved run: server CPU ms per message, msgs/s, new/old ratios.

    bench/ab.py --old 879445a --new main [--reps 7] [--sizes "1024 102400"] [--conc 100]
                [--workers 2|0] [--loglevel-5] [--msgs "1024:6000 102400:2500"] [--profile SECS]

Checks out both refs of this repository as detached worktrees in a temporary
directory and starts each one's ``bin/qpsmtpd-server`` the way bench/run does
(rcpt_ok + queue/discard, loglevel 4, ``-H -c 20000``): one process, one with
``--workers N`` unless 0, and with ``--loglevel-5`` one process at loglevel 5.
Load comes from ``../shared/bench/peers/bench_peers.py`` (PEERS_DIR overrides):
Postfix's ``smtp-source``, one connection per message, server CPU from /proc
over the whole process tree.  Every server gets the same message count; the
order rotates each rep.  ``--profile`` adds bench/profile.py (py-spy) on both
one-process servers under 1 KB load.  Writes bench/results/ab-<stamp>.{md,jsonl};
stops every server and removes the worktrees at the end, also on error or Ctrl-C.

Needs ``smtp-source`` (Debian package postfix: ``apt-get install postfix``;
``bench/run`` installs it through ``run_peers.sh --install-only``) and, for
``--profile``, py-spy (``python3 -m pip install py-spy``) and root.
Everything listens and connects on 127.0.0.1 only.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from server import BenchServer  # noqa: E402

PEERS = Path(os.environ.get("PEERS_DIR") or ROOT.parent / "shared" / "bench" / "peers")
sys.path.insert(0, str(PEERS))
import bench_peers  # noqa: E402


def log(text: str) -> None:
    """Progress to stderr."""
    print("[bench/ab %s] %s" % (time.strftime("%H:%M:%S"), text), file=sys.stderr, flush=True)


def rotation(servers: list, rep: int) -> list:
    """The servers in repetition ``rep``'s order, for interleaved runs.

    Rotated each rep, so every server takes every slot; the whole cycle
    reversed every other time, so none keeps the same neighbour before it.
    """
    base = servers if rep // len(servers) % 2 == 0 else servers[::-1]
    return base[rep % len(servers):] + base[:rep % len(servers)]


def write_results(out: Path, text: list) -> None:
    """The report as ``<out>.md`` and on stdout (the runs are already in ``<out>.jsonl``)."""
    Path(str(out) + ".md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    log("results: %s.{md,jsonl}" % out)


def git(*args: str) -> str:
    """Run git in this repository; its stdout, stripped."""
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def cpu_ms(run: dict) -> float:
    """Server CPU milliseconds per message of one load run."""
    return 1000 * run["server_cpu"] / run["msgs"]


def start_servers(work: Path, trees: Dict[str, Path], args: argparse.Namespace) -> List[BenchServer]:
    """Both versions' servers (names like new-1p, old-w2), each started and answering."""
    variants = [("1p", 4, [])]
    if args.workers:
        variants.append(("w%d" % args.workers, 4, ["--workers", str(args.workers)]))
    if args.loglevel_5:
        variants.append(("1p-ll5", 5, []))
    servers = []
    for variant, level, extra in variants:
        for side, tree in trees.items():
            name = "%s-%s" % (side, variant)
            config = {"rcpthosts": "example.com", "me": "bench.localhost", "loglevel": str(level)}
            server = BenchServer(work / name, ["rcpt_ok", "queue/discard"], config, ["-H", "-c", "20000", *extra],
                                 root=tree)
            server.name = name
            servers.append(server)  # listed before start: a failed start is stopped too
            server.start(settle=1.0 if extra else 0.0)
            log("started %s on %s:%d PID %d" % (name, *server.address, server.process.pid))
    return servers


def load(server: BenchServer, conc: int, size: int, msgs: int) -> dict:
    """One smtp-source run against ``server`` (bench_peers.one_run); its record."""
    target = {"name": server.name, "host": "127.0.0.1", "port": server.port, "pid": server.process.pid}
    return bench_peers.one_run(target, conc, size, msgs, 120)


def report(runs: List[dict]) -> str:
    """Markdown: per-server medians and ranges, then new/old ratios per variant."""
    ok = [r for r in runs if r["rc"] == 0]
    names = list(dict.fromkeys(r["server"] for r in ok))
    keys = sorted({(r["size"], r["conc"]) for r in ok})
    pick = {(n, k): [r for r in ok if r["server"] == n and (r["size"], r["conc"]) == k] for n in names for k in keys}
    lines = ["| server | size | conc | reps | CPU ms/msg median | range | msgs/s median | range |",
             "|---|---|---|---|---|---|---|---|"]
    for size, conc in keys:
        for name in names:
            rs = pick[(name, (size, conc))]
            if rs:
                ms, rate = [cpu_ms(r) for r in rs], [r["rate"] for r in rs]
                lines.append("| %s | %d KB | %d | %d | %.3f | %.3f-%.3f | %.0f | %.0f-%.0f |" % (
                    name, size // 1024, conc, len(rs), statistics.median(ms), min(ms), max(ms),
                    statistics.median(rate), min(rate), max(rate)))
    lines += ["", "new/old: ratio of the medians; pooled = total CPU / total messages over the reps both ran;"
              " per-rep = the two runs of one rep. Below 1: new uses less CPU per message.", "",
              "| pair | size | conc | CPU/msg new/old (medians) | pooled | per-rep | msgs/s new/old |",
              "|---|---|---|---|---|---|---|"]
    for old in (n for n in names if n.startswith("old-")):
        new = "new-" + old[4:]
        for key in keys:
            a, b = pick[(old, key)], pick.get((new, key), [])
            same = [(x, y) for x in a for y in b if x["rep"] == y["rep"]]
            if not same:
                continue
            pooled = (sum(y["server_cpu"] for _, y in same) / sum(y["msgs"] for _, y in same)) / (
                sum(x["server_cpu"] for x, _ in same) / sum(x["msgs"] for x, _ in same))
            lines.append("| %s / %s | %d KB | %d | %.3f | %.3f | %s | %.3f |" % (
                new, old, key[0] // 1024, key[1],
                statistics.median(map(cpu_ms, b)) / statistics.median(map(cpu_ms, a)), pooled,
                ", ".join("%.2f" % (cpu_ms(y) / cpu_ms(x)) for x, y in same),
                statistics.median(r["rate"] for r in b) / statistics.median(r["rate"] for r in a)))
    failed = [r for r in runs if r["rc"] != 0]
    if failed:
        lines += ["", "%d failed runs: " % len(failed) + "; ".join(
            "rep %d %s %d B rc=%d %s" % (r["rep"], r["server"], r["size"], r["rc"], r["err"][:80]) for r in failed)]
    return "\n".join(lines)


def profile(server: BenchServer, secs: float) -> str:
    """bench/profile.py (py-spy) on a running server under 1 KB c=100 load; its summary."""
    run = subprocess.run([sys.executable, str(HERE / "profile.py"), "--server", "127.0.0.1:%d" % server.port,
                          "--pid", str(server.process.pid), "--secs", str(int(secs)), "--top", "15"],
                         capture_output=True, text=True, timeout=secs + 120)
    return run.stdout if run.returncode == 0 else "profile failed: " + run.stderr.strip()[-300:]


def main() -> None:
    """Parse the options, run both versions interleaved, write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="git ref of the baseline")
    parser.add_argument("--new", required=True, help="git ref to compare with it")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--sizes", default="1024 102400", help="message sizes in bytes")
    parser.add_argument("--conc", default="100", help="smtp-source sessions at once (several: a list)")
    parser.add_argument("--workers", type=int, default=2, help="worker count of the multi-process rows (0: none)")
    parser.add_argument("--loglevel-5", action="store_true", help="also one process each at loglevel 5")
    parser.add_argument("--msgs", default="1024:6000 102400:2500", help="SIZE:N messages per run (others: 3000)")
    parser.add_argument("--profile", type=float, default=0, metavar="SECS", help="py-spy seconds per server (0: none)")
    args = parser.parse_args()
    sizes, concs = [int(x) for x in args.sizes.split()], [int(x) for x in args.conc.split()]
    counts = {int(s): int(n) for s, n in (x.split(":") for x in args.msgs.split())}
    refs = {"old": git("rev-parse", "--verify", args.old + "^{commit}"),
            "new": git("rev-parse", "--verify", args.new + "^{commit}")}
    heads = {side: git("log", "--oneline", "-1", sha) for side, sha in refs.items()}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / ("ab-" + stamp)
    # SIGTERM ends the run like Ctrl-C: through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="qpgevent-ab."))
    trees: Dict[str, Path] = {}
    servers: List[BenchServer] = []
    try:
        for side, sha in refs.items():
            git("worktree", "add", "--detach", str(work / side), sha)
            trees[side] = work / side
            log("%s: %s" % (side, heads[side]))
        servers = start_servers(work, trees, args)
        for server in servers:  # warm-up, not recorded: imports, caches, the first accept burst
            for size in sizes:
                run = load(server, concs[0], size, 500)
                if run["rc"]:
                    raise SystemExit("%s failed its warm-up: %s" % (server.name, run["err"]))
        runs = []
        out.parent.mkdir(exist_ok=True)
        before = open("/proc/loadavg").read().split()[:3]
        with open(str(out) + ".jsonl", "w") as jsonl:
            for rep in range(args.reps):
                order = rotation(servers, rep)
                for size in sizes:
                    for conc in concs:
                        for server in order:
                            run = load(server, conc, size, counts.get(size, 3000))
                            run.update(kind="load", rep=rep, ref=refs[server.name[:3]])
                            runs.append(run)
                            jsonl.write(json.dumps(run) + "\n")
                            log("rep %d %-10s %6d B c=%d: %d msgs %.2f s rc=%d %.3f ms/msg" % (
                                rep, server.name, size, conc, run["msgs"], run["wall"], run["rc"], cpu_ms(run)))
                            time.sleep(0.5)  # let the last connections close before the next server's run
        after = open("/proc/loadavg").read().split()[:3]
        text = ["# bench/ab.py %s" % stamp, "", "    " + " ".join(["bench/ab.py", *sys.argv[1:]]), "",
                "- old: `%s`" % heads["old"], "- new: `%s`" % heads["new"],
                "- load average before %s, after %s; %d CPUs" % (" ".join(before), " ".join(after), os.cpu_count()),
                "", report(runs)]
        for server in servers:  # a traceback or a dead worker makes the figures suspect
            text += ["- %s server log: %s" % (server.name, line) for line in server.problems()[:5]]
        for name in ("new-1p", "old-1p") if args.profile else ():  # back to back, same conditions
            log("py-spy %g s on %s" % (args.profile, name))
            text += ["", "## profile %s" % name, "", "```", profile(next(s for s in servers if s.name == name),
                                                                     args.profile).rstrip(), "```"]
        write_results(out, text)
    finally:
        for server in servers:
            server.stop()
        for tree in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
