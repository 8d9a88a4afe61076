#!/usr/bin/env python3
"""Tables, ratios and a chart from one ``bench/run`` result file.

    bench/report.py bench/results/20261125-160000.jsonl [--out-dir bench/results] [--no-chart]

Prints, and writes to ``<out-dir>/<stamp>.md``:

* one table with messages/s and server CPU milliseconds per message (medians
  of the repetitions) for every server and case;
* for every qpgevent row, its ratio to every peer: throughput (ours / peer,
  above 1 = we are faster) and CPU efficiency (peer's CPU ms per message /
  ours, above 1 = we spend less CPU on a message);
* memory per idle session at each session count that was measured;
* the 10,000-session check (``<stamp>.many.json``, from bench/many_sessions.py);
* the bar of issue 4, each line marked met or not.

and draws ``<out-dir>/<stamp>.png`` (matplotlib): msgs/s and CPU ms per
message per case, one bar per server.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

PEERS = ["haraka", "haraka-x2", "aiosmtpd", "qpsmtpd-prefork", "qpsmtpd-forkserver", "postfix-smtpd", "smtp-sink"]
LABELS = {
    "haraka": "Haraka x1", "haraka-x2": "Haraka x2", "aiosmtpd": "aiosmtpd",
    "qpsmtpd-prefork": "qpsmtpd prefork", "qpsmtpd-forkserver": "qpsmtpd forkserver",
    "postfix-smtpd": "Postfix smtpd", "smtp-sink": "smtp-sink (C)",
}


def load(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def case_name(size, conc):
    return "%s c=%d" % ("%dKB" % (size // 1024) if size >= 1024 else "%dB" % size, conc)


def label(server):
    return LABELS.get(server, server)


def ours(server):
    return server.startswith("qpgevent")


class Results:
    """Medians per (server, size, concurrency) and the idle-session records."""

    def __init__(self, records):
        loads = [r for r in records if r.get("kind") == "load"]
        self.servers = []
        for r in records:
            name = r.get("server")
            if name and name not in self.servers:
                self.servers.append(name)
        # ours first, then the peers in a fixed order
        self.servers.sort(key=lambda s: (not ours(s), PEERS.index(s) if s in PEERS else -1))
        self.sizes = sorted({r["size"] for r in loads})
        self.concs = sorted({r["conc"] for r in loads})
        self.cases = [(size, conc) for size in self.sizes for conc in self.concs]
        self.rate, self.cpu, self.fails = {}, {}, {}
        for server in self.servers:
            for case in self.cases:
                runs = [r for r in loads if r["server"] == server and (r["size"], r["conc"]) == case]
                good = [r for r in runs if r.get("rc") == 0 and r.get("rate")]
                key = (server, case)
                self.fails[key] = len(runs) - len(good)
                if good:
                    self.rate[key] = statistics.median(r["rate"] for r in good)
                    cpu = [1000 * r["server_cpu"] / r["msgs"] for r in good if "server_cpu" in r]
                    if cpu:
                        self.cpu[key] = statistics.median(cpu)
        calib_failed = {(r["server"], (r["size"], r["conc"])) for r in records if r.get("kind") == "calib-fail"}
        for key in calib_failed:
            self.fails[key] = self.fails.get(key, 0) + 1
        self.idle = [r for r in records if r.get("kind") == "idle"]
        self.load_servers = [s for s in self.servers if any((s, c) in self.rate or self.fails.get((s, c))
                                                             for c in self.cases)]

    def ratio(self, ours_name, peer, case):
        """(throughput ours/peer, CPU efficiency peer/ours), None where unknown."""
        a, b = self.rate.get((ours_name, case)), self.rate.get((peer, case))
        speed = a / b if a and b else None
        a, b = self.cpu.get((ours_name, case)), self.cpu.get((peer, case))
        efficiency = b / a if a and b else None
        return speed, efficiency


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return lines


def fmt_ratio(value):
    return "x%.2f" % value if value is not None else "-"


def throughput_table(res):
    header = ["server"] + [case_name(*c) for c in res.cases]
    rows = []
    for server in res.load_servers:
        row = ["**%s**" % server if ours(server) else label(server)]
        for case in res.cases:
            rate, cpu = res.rate.get((server, case)), res.cpu.get((server, case))
            if rate is None:
                row.append("FAIL" if res.fails.get((server, case)) else "-")
                continue
            cell = "%.0f / %s" % (rate, "%.2f" % cpu if cpu is not None else "?")
            if res.fails.get((server, case)):
                cell += " (%d fail)" % res.fails[(server, case)]
            row.append(cell)
        rows.append(row)
    return markdown_table(header, rows)


def ratio_tables(res):
    lines = []
    peers = [p for p in res.load_servers if not ours(p)]
    for mine in [s for s in res.load_servers if ours(s)]:
        lines.append("")
        lines.append("**%s** against each peer: throughput ratio / CPU-efficiency ratio" % mine)
        lines.append("")
        rows = []
        for peer in peers:
            row = [label(peer)]
            for case in res.cases:
                speed, efficiency = res.ratio(mine, peer, case)
                row.append("-" if speed is None and efficiency is None
                           else "%s / %s" % (fmt_ratio(speed), fmt_ratio(efficiency)))
            rows.append(row)
        lines.extend(markdown_table(["vs"] + [case_name(*c) for c in res.cases], rows))
    return lines


def idle_table(res):
    rows = []
    for r in sorted(res.idle, key=lambda r: (r["n_target"], res.servers.index(r["server"]))):
        rows.append([("**%s**" % r["server"]) if ours(r["server"]) else label(r["server"]),
                     r["n_target"], "%d/%d" % (r.get("greeted", 0), r["n_target"]), r.get("open_s", "?"),
                     r.get("rss_per_conn_kb", "?"), r.get("pss_per_conn_kb", "?"),
                     "%.1f" % (r["during_rss_kb"] / 1024) if "during_rss_kb" in r else "?"])
    return markdown_table(["server", "sessions", "greeted", "open s", "RSS KB/session", "PSS KB/session",
                           "RSS MB held"], rows)


def many_lines(many):
    if not many:
        return []
    per = many.get("pss_per_session_kb")
    return [
        "%d concurrent sessions against one qpgevent process: %d greeted in %s s, then with all of them open "
        "%d of %d messages accepted (250) in %s s; %d QUITs answered.  Server RSS %.1f MB before, %.1f MB with "
        "every session held (%s KB RSS, %s KB PSS per session), %.1f MB at the peak of the transactions.  "
        "Result: **%s**." % (
            many["sessions"], many["greeted"], many["greet_s"], many["accepted"], many["sessions"],
            many["transactions_s"], many["quit_ok"], many["rss_before_kb"] / 1024, many["rss_held_kb"] / 1024,
            many.get("rss_per_session_kb", "?"), per if per is not None else "?", many["rss_peak_kb"] / 1024,
            "OK" if many["ok"] else "FAILED"),
    ]


def bar_checks(res, many):
    """Issue 4's bar: (description, measured, met?) for each line we have data for."""
    checks = []
    multi = [s for s in res.load_servers if ours(s) and "-w" in s and "maildir" not in s]
    single = "qpgevent" if "qpgevent" in res.load_servers else None

    def need(mine, peer, case, at_least):
        speed, _ = res.ratio(mine, peer, case)
        if speed is None:
            return
        checks.append(("%s %s: >= x%.2f %s" % (mine, case_name(*case), at_least, label(peer)),
                       fmt_ratio(speed), speed >= at_least))

    for mine in multi:
        for peer, at_least in (("haraka-x2", 1.4), ("aiosmtpd", 2.0), ("qpsmtpd-prefork", 6.0), ("smtp-sink", 0.35)):
            need(mine, peer, (1024, 100), at_least)
        for peer, at_least in (("haraka-x2", 1.2), ("aiosmtpd", 3.0)):
            need(mine, peer, (102400, 100), at_least)
    if single:
        for peer in ("aiosmtpd", "haraka"):
            speeds = [res.ratio(single, peer, case)[0] for case in res.cases]
            speeds = [s for s in speeds if s is not None]
            if speeds:
                checks.append(("qpgevent (one process) ahead of %s in every case" % label(peer),
                               "lowest %s" % fmt_ratio(min(speeds)), min(speeds) > 1.0))
    for r in res.idle:
        # below 1,000 sessions the figure is mostly allocator noise
        if ours(r["server"]) and "pss_per_conn_kb" in r and r["n_target"] >= 1000:
            all_greeted = r.get("greeted") == r["n_target"]
            measured = "%s KB PSS" % r["pss_per_conn_kb"]
            if not all_greeted:
                measured += " (only %d of %d greeted)" % (r.get("greeted", 0), r["n_target"])
            checks.append(("%s idle session at %d: <= 12 KB" % (r["server"], r["n_target"]),
                           measured, all_greeted and r["pss_per_conn_kb"] <= 12))
    if many:
        checks.append(("%d sessions in one process, all greeted and all able to send" % many["sessions"],
                       "%d greeted, %d accepted" % (many["greeted"], many["accepted"]), bool(many["ok"])))
    return checks


def chart(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (bench/run installs it)", file=sys.stderr)
        return False
    servers = res.load_servers
    cases = res.cases
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9, 1.6 * len(cases) + 6), 9), sharex=True)
    width = 0.8 / max(1, len(servers))
    peer_colors = ["#8c8c8c", "#b0b0b0", "#6f9fd8", "#d8a06f", "#c27a7a", "#9bc27a", "#555555"]
    our_colors = ["#d62728", "#ff7f0e", "#9467bd", "#e377c2"]
    colors = {}
    for server in servers:
        pool = our_colors if ours(server) else peer_colors
        colors[server] = pool[sum(1 for s in colors if ours(s) == ours(server)) % len(pool)]
    for i, server in enumerate(servers):
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(cases))]
        rates = [res.rate.get((server, c), 0) for c in cases]
        cpus = [res.cpu.get((server, c), 0) for c in cases]
        top.bar(xs, rates, width, label=label(server), color=colors[server],
                edgecolor="black" if ours(server) else "none", linewidth=0.6)
        bottom.bar(xs, cpus, width, color=colors[server], edgecolor="black" if ours(server) else "none",
                   linewidth=0.6)
    top.set_ylabel("messages / s (higher is better)")
    top.set_title("SMTP servers on one 2-core machine, new connection per message (smtp-source)")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.grid(axis="y", alpha=0.3)
    bottom.set_ylabel("server CPU ms / message (lower is better)")
    bottom.set_yscale("log")
    bottom.grid(axis="y", alpha=0.3, which="both")
    bottom.set_xticks(range(len(cases)))
    bottom.set_xticklabels([case_name(*c) for c in cases])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_header(jsonl):
    """The run's date and parameters, from the log beside the results."""
    log = jsonl.with_suffix(".log")
    if not log.exists():
        return []
    return [line.rstrip() for line in log.read_text().splitlines()[:3] if line.startswith("# ")]


def report(jsonl, out_dir, draw=True):
    res = Results(load(jsonl))
    stamp = jsonl.stem[len("peers-"):] if jsonl.stem.startswith("peers-") else jsonl.stem
    many_path = jsonl.with_name(jsonl.stem + ".many.json")
    many = json.loads(many_path.read_text()) if many_path.exists() else None
    lines = ["# qpgevent against its peers, run %s" % stamp, ""]
    header = run_header(jsonl)
    if header:
        lines += ["```"] + [h[2:] for h in header] + ["```", ""]
    if res.cases:
        lines += ["## Messages per second / server CPU ms per message (medians; new connection per message)", ""]
        lines += throughput_table(res)
    if res.cases and any(not ours(s) for s in res.load_servers):
        lines += ["", "## Ratios", "",
                  "Each cell: throughput ratio (our msgs/s / peer msgs/s; above x1 we are faster) / "
                  "CPU-efficiency ratio (peer CPU ms per message / ours; above x1 we use less CPU)."]
        lines += ratio_tables(res)
    if res.idle:
        lines += ["", "## Memory per idle session (greeting read, then held)", ""]
        lines += idle_table(res)
    if many:
        lines += ["", "## Concurrent sessions in one process (bench/many_sessions.py)", ""] + many_lines(many)
    checks = bar_checks(res, many)
    if checks:
        lines += ["", "## The bar of issue 4", ""]
        lines += markdown_table(["target", "measured", "met"],
                                [[d, m, "yes" if ok else "**no**"] for d, m, ok in checks])
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / ("%s.png" % stamp)
    if draw and res.cases and chart(res, png):
        lines += ["", "![chart](%s)" % png.name]
    text = "\n".join(lines) + "\n"
    (out_dir / ("%s.md" % stamp)).write_text(text)
    return text, out_dir / ("%s.md" % stamp)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a .jsonl written by bench/run (or by run_peers.sh)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args()
    text, path = report(args.results, args.out_dir, draw=not args.no_chart)
    print(text)
    print("written: %s" % path)


if __name__ == "__main__":
    main()
