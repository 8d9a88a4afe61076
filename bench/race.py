#!/usr/bin/env python3
"""The filter-chain race (issue 11): qpgevent's sample chain against peers running their equivalents, interleaved.

    bench/race.py [--reps 3] [--sizes "1024 102400"] [--conc 100] [--msgs "1024:1000 102400:500"]
                  [--peers "qpsmtpd-prefork qpsmtpd-forkserver haraka haraka-x2"] [--workers 2]

One DNS server (tests/dnsserver.py, in this process, its CPU reported apart) answers from the
zones of bench/filters.py; every server gets the same DKIM-signed message files and the same
``smtp-source -F`` load (one connection per message).  Server CPU over each process tree from /proc.

- ``filters-1p`` / ``filters-wN``: qpgevent with bench/filters.py's CHAIN (``start_servers``;
  the bare ``core-*`` rows come along as a floor);
- ``qpsmtpd-prefork`` / ``qpsmtpd-forkserver``: Debian qpsmtpd 0.94 (the copies of its
  binaries that ``../shared/bench/peers/run_peers.sh --install-only`` makes, which honour -H),
  ``config/plugins``: fcrdns, dnsbl, rhsbl, helo, resolvable_fromhost, sender_permitted_from,
  dkim, dmarc, headers, bogus_bounce, virus/klez_filter, karma, naughty, rcpt_ok,
  queue_discard.  Net::DNS reads ``RES_NAMESERVERS`` and ``RES_OPTIONS=port:N`` from the
  environment, so every resolver it makes (plugins, Mail::SPF, Mail::DKIM, Mail::DMARC) asks
  the local server on its own port;
- ``haraka`` / ``haraka-x2``: Haraka 3.3.4 from npm (run_peers.sh's install), nodes 0 and 2:
  fcrdns, dns-list, helo.checks, spf, dkim (verify), headers, rcpt_to.in_host_list,
  queue/discard (karma + redis are wired but off: see HARAKA_PLUGINS); a first plugin ``bench_dns`` points node's dns
  module (callbacks and promises) at the local server.

Needs root (run_peers.sh's install, user switching).  PEERS_RUN_DIR as for run_peers.sh
(default $TMPDIR/qpgevent-peers).  Writes bench/results/race-<stamp>.{md,jsonl}.
"""
import argparse
import json
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import filters  # noqa: E402
from filters import (CHAIN, DOMAIN, DNSServer, cpu_ms, failures, log, signed_messages,  # noqa: E402
                     start_servers, zones)

RUN = Path(os.environ.get("PEERS_RUN_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "qpgevent-peers")

QPSMTPD_PLUGINS = ["bench_dns", "fcrdns", "dnsbl", "rhsbl", "helo policy strict reject 0", "resolvable_fromhost",
                   "sender_permitted_from", "dkim", "dmarc", "headers require From,Date", "bogus_bounce log",
                   "virus/klez_filter", "karma", "naughty", "rcpt_ok", "queue_discard"]
# karma (+ redis) is left out: with it Haraka 3.3.4 fell to ~10 msgs/s here, waiting on something
# not found in the time (not the tarpit, which is off below); add "redis", "karma" back to try again
HARAKA_PLUGINS = ["bench_dns", "fcrdns", "dns-list", "helo.checks", "spf", "dkim", "headers",
                  "rcpt_to.in_host_list", "queue/discard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    """A peer server started here: name, address, process (its tree is measured), log_path."""

    def __init__(self, name: str, command: List[str], cwd: Path, env: dict, port: int, log_path: Path) -> None:
        self.name, self.address, self.log_path = name, ("127.0.0.1", port), log_path
        with open(log_path, "ab") as out:
            self.process = subprocess.Popen(command, cwd=str(cwd), env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("%s exited: %s" % (name, log_path.read_text()[-500:]))
            try:
                with socket.create_connection(self.address, timeout=2) as probe:
                    probe.settimeout(10)
                    if probe.recv(100).startswith(b"220"):
                        break
            except OSError:
                pass
            time.sleep(0.25)
        else:
            self.stop()
            raise RuntimeError("%s did not greet on %d" % (name, port))

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()

    def problems(self) -> List[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if any(w in line.lower() for w in ("error", "fail", "deny", "reject", "crit"))][:5]


def qpsmtpd(work: Path, kind: str, dns_port: int) -> Peer:
    """Debian qpsmtpd 0.94 (prefork or forkserver) with the chain, Net::DNS pointed at the local server."""
    base = work / kind
    config = base / "config"
    (base / "spool").mkdir(parents=True)
    config.mkdir()
    (base / "plugins").mkdir()
    (base / "plugins" / "bench_dns").write_text(BENCH_DNS_PL)
    files = {"plugins": "\n".join("bench_dns %d" % dns_port if p == "bench_dns" else p for p in QPSMTPD_PLUGINS),
             "rcpthosts": "example.com", "me": "bench.localhost", "loglevel": "4",
             "plugin_dirs": "%s\n%s\n/usr/share/qpsmtpd/plugins" % (base / "plugins", RUN / "qpsmtpd" / "plugins"),
             "spool_dir": str(base / "spool"), "dnsbl_zones": "dnsbl-one.bench\ndnsbl-two.bench",
             "rhsbl_zones": "rhsbl.bench"}
    for name, text in files.items():
        (config / name).write_text(text + "\n")
    shutil.chown(base / "spool", "qpsmtpd", "qpsmtpd")
    shutil.chown(base, "qpsmtpd", "qpsmtpd")  # cwd: 0.94's karma ignores db_dir and ends up with '.'
    os.chmod(base / "spool", 0o700)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    port = free_port()
    if kind == "qpsmtpd-prefork":
        command = [str(RUN / "qpsmtpd/bin/qpsmtpd-prefork"), "--listen-address", "127.0.0.1", "--port", str(port),
                   "--children", "200", "--idle-children", "20", "--max-from-ip", "0", "--user", "qpsmtpd"]
    else:
        command = [str(RUN / "qpsmtpd/bin/qpsmtpd-forkserver"), "-l", "127.0.0.1", "-p", str(port), "-c", "1100",
                   "-u", "qpsmtpd"]
    return Peer(kind, command, base, {"QPSMTPD_CONFIG": str(config)}, port, base / "server.log")


BENCH_DNS_PL = """# -*- perl -*-
# bench_dns PORT -- benchmark-only: every Net::DNS::Resolver made from now on (plugins, Mail::SPF,
# Mail::DKIM, Mail::DMARC) asks the race's DNS server on 127.0.0.1:PORT.  $RES_NAMESERVERS and
# $RES_OPTIONS=port:N would do it too, but under perl -T they are tainted and Net::DNS dies on send.
use Net::DNS;

sub register {
    my ($self, $qp, $port) = @_;
    ($port) = ($port =~ /^(\\d+)$/) or die "bench_dns: no port";
    Net::DNS::Resolver->new;    # the first new() reads resolv.conf into the defaults: after it, ours
    Net::DNS::Resolver->nameservers('127.0.0.1');
    Net::DNS::Resolver->port($port);
}
"""


BENCH_DNS_JS = """// bench_dns -- benchmark-only: node's dns module (callbacks and promises) asks the race's DNS server,
// and the load's 127.0.0.1 is not 'private': else dns-list, fcrdns, spf and helo.checks skip their work
const dns = require('dns')
exports.register = function () {
    dns.setServers(['127.0.0.1:%(port)d'])
    dns.promises.setServers(['127.0.0.1:%(port)d'])
}
exports.hook_connect_init = function (next, connection) {
    connection.remote.is_private = false
    next()
}
"""


def haraka(work: Path, name: str, dns_port: int, redis_port: int = 6379) -> Peer:
    """Haraka 3 (run_peers.sh's npm install), nodes 0 or 2, with its equivalents of the chain."""
    home = work / name
    package = RUN / "haraka-pkg"
    subprocess.run(["node", "node_modules/Haraka/bin/haraka", "-i", str(home)], cwd=str(package),
                   capture_output=True, check=True)
    port = free_port()
    config, plugins = home / "config", home / "plugins"
    (plugins / "bench_dns.js").write_text(BENCH_DNS_JS % {"port": dns_port})
    writes = {
        "plugins": "\n".join(HARAKA_PLUGINS),
        "host_list": "example.com", "me": "bench.localhost",
        "log.ini": "[main]\nlevel=warn\ntimestamps=false\n",
        "smtp.ini": "listen=127.0.0.1:%d\nnodes=%d\n" % (port, 2 if name.endswith("x2") else 0),
        "dns-list.ini": "[main]\nzones=dnsbl-one.bench,dnsbl-two.bench,rhsbl.bench\nsearch=all\nperiodic_checks=0\n"
                        "[dnsbl-one.bench]\ntype=block\n[dnsbl-two.bench]\ntype=block\n"
                        "[rhsbl.bench]\ntype=block\n",
        "dkim.ini": "[verify]\nenabled=true\n[sign]\nenabled=false\n",
        "redis.ini": "[server]\nhost=127.0.0.1\nport=%d\n" % redis_port,
    }
    # karma: the plugin's own karma.ini, scoring and recording but never refusing nor tarpitting
    # (the qpgevent and qpsmtpd chains refuse nothing either); redis on 127.0.0.1:6379
    stock = (package / "node_modules/haraka-plugin-karma/config/karma.ini").read_text()
    stock = stock.replace("[tarpit]\ndelay=1", "[tarpit_off]\ndelay=0").replace("\nnegative=-8", "\nnegative=-1000")
    writes["karma.ini"] = stock
    for file, text in writes.items():
        (config / file).write_text(text + "\n")
    command = ["node", "node_modules/Haraka/bin/haraka", "-c", str(home)]
    return Peer(name, command, package, {"YES_REALLY_DO_DISCARD": "1"}, port, work / (name + ".log"))


def accepted(server, message: Path) -> str:
    """One message over smtplib, as smtp-source sends it; '' when accepted, else why not."""
    try:
        with smtplib.SMTP(*server.address, local_hostname="mx." + DOMAIN, timeout=60) as smtp:
            smtp.sendmail("bench@" + DOMAIN, ["b@example.com"], message.read_bytes().replace(b"\n", b"\r\n"))
        return ""
    except (smtplib.SMTPException, OSError) as e:
        return "%s: %s" % (type(e).__name__, e)


def report(runs: List[dict]) -> str:
    ok = [r for r in runs if r["rc"] == 0]
    names = list(dict.fromkeys(r["server"] for r in runs))
    sizes = sorted({r["size"] for r in runs})
    med = {}
    lines = ["| server | size | reps | CPU ms/msg median | range | msgs/s median | DNS server CPU ms/msg | DNS questions/msg |",
             "|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        for name in names:
            rs = [r for r in ok if r["server"] == name and r["size"] == size]
            if rs:
                ms = [cpu_ms(r) for r in rs]
                med[name, size] = (statistics.median(ms), statistics.median(r["rate"] for r in rs))
                lines.append("| %s | %d KB | %d | %.3f | %.3f-%.3f | %.0f | %.3f | %.1f |" % (
                    name, size // 1024, len(rs), med[name, size][0], min(ms), max(ms), med[name, size][1],
                    statistics.median(1000 * r["dns_cpu"] / r["msgs"] for r in rs),
                    statistics.median(r["dns_q"] / r["msgs"] for r in rs)))
    lines += ["", "Ratios (qpgevent chain against each peer; CPU: peer ms/msg over ours, so >1 means we use less):",
              "", "| ours | peer | size | CPU ms/msg peer/ours | msgs/s ours/peer |", "|---|---|---|---|---|"]
    ours = [n for n in names if n.startswith("filters-")]
    for size in sizes:
        for mine in ours:
            for peer in (n for n in names if not n.startswith(("filters-", "core-"))):
                if (mine, size) in med and (peer, size) in med:
                    lines.append("| %s | %s | %d KB | %.1f | %.1f |" % (
                        mine, peer, size // 1024, med[peer, size][0] / med[mine, size][0],
                        med[mine, size][1] / med[peer, size][1]))
    return "\n".join(lines + failures(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="1024 102400")
    parser.add_argument("--conc", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--msgs", default="1024:1000 102400:500", help="SIZE:N messages per run")
    parser.add_argument("--peers", default="qpsmtpd-prefork qpsmtpd-forkserver haraka haraka-x2")
    parser.add_argument("--no-core", action="store_true", help="leave out the bare core rows")
    args = parser.parse_args()
    if not (RUN / "qpsmtpd/bin/qpsmtpd-prefork").exists() or not (RUN / "haraka-pkg").exists():
        raise SystemExit("run ../shared/bench/peers/run_peers.sh --install-only first (PEERS_RUN_DIR=%s)" % RUN)
    sizes = [int(x) for x in args.sizes.split()]
    counts = {int(s): int(n) for s, n in (x.split(":") for x in args.msgs.split())}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / ("race-" + stamp)
    work = Path(tempfile.mkdtemp(prefix="qpgevent-race."))
    os.chmod(work, 0o755)
    messages, public = signed_messages(sizes, work)
    for m in messages.values():
        os.chmod(m, 0o644)
    dns = DNSServer(zones(public))
    servers, missing, redis = [], [], None
    try:
        servers = start_servers(work, dns.port, args.workers)
        if args.no_core:
            for server in [s for s in servers if s.name.startswith("core-")]:
                server.stop()
                servers.remove(server)
        for peer in args.peers.split():
            try:
                if peer.startswith("qpsmtpd"):
                    servers.append(qpsmtpd(work, peer, dns.port))
                elif peer.startswith("haraka"):
                    if redis is None and "karma" in HARAKA_PLUGINS:
                        # haraka-plugin-karma 2 asks 127.0.0.1:6379 whatever redis.ini says
                        redis_port = 6379
                        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                                  "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                                 start_new_session=True)
                        time.sleep(0.5)
                    servers.append(haraka(work, peer, dns.port))
                else:
                    missing.append("%s: unknown peer" % peer)
                    continue
                log("started %s on %s:%d PID %d" % (peer, *servers[-1].address, servers[-1].process.pid))
            except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
                missing.append("%s: did not start: %s" % (peer, str(e)[-300:]))
                log(missing[-1])
        checked = []
        for server in servers:  # every server must accept the signed messages: a refusal is no race
            why = [accepted(server, messages[size]) for size in sizes]
            why = "; ".join(w for w in why if w)
            if why:
                missing.append("%s: refused the signed message: %s" % (server.name, why[:300]))
                log(missing[-1])
                continue
            for size in sizes:
                run = filters.load(server, messages[size], 10, 30)
                if run["rc"]:
                    why = "warm-up failed: %s" % run["err"][:200]
                    break
            if why:
                missing.append("%s: %s" % (server.name, why))
                log(missing[-1])
                continue
            checked.append(server)
        queries0 = sum(dns.queries.values())
        runs = []
        with open(str(out) + ".jsonl", "w") as jsonl:
            for rep in range(args.reps):
                order = checked[rep % len(checked):] + checked[:rep % len(checked)]
                if rep % 2:
                    order.reverse()
                for size in sizes:
                    for server in order:
                        q0 = sum(dns.queries.values())
                        run = filters.load(server, messages[size], args.conc, counts.get(size, 1000))
                        run.update(rep=rep, size=size, dns_q=sum(dns.queries.values()) - q0)
                        runs.append(run)
                        jsonl.write(json.dumps(run) + "\n")
                        jsonl.flush()
                        log("rep %d %-18s %6d B: %d msgs %.2f s rc=%d %.3f ms/msg" % (
                            rep, server.name, size, run["msgs"], run["wall"], run["rc"], cpu_ms(run)))
                        time.sleep(0.5)
        total = sum(r["msgs"] for r in runs)
        text = ["# bench/race.py %s" % stamp, "", "    " + " ".join(["bench/race.py", *sys.argv[1:]]), "",
                "- commit `%s`; %d CPUs; %s" % (
                    subprocess.run(["git", "-C", str(HERE.parent), "log", "--oneline", "-1"], capture_output=True,
                                   text=True).stdout.strip(), os.cpu_count(), open("/proc/loadavg").read().strip()),
                "- qpgevent chain: `%s`" % " | ".join(CHAIN),
                "- qpsmtpd 0.94 chain: `%s`" % " | ".join(QPSMTPD_PLUGINS),
                "- Haraka chain: `%s`" % " | ".join(HARAKA_PLUGINS),
                "- DNS questions answered during the measured runs: %d (%.1f per message)" % (
                    sum(dns.queries.values()) - queries0, (sum(dns.queries.values()) - queries0) / max(1, total)),
                "", report(runs), ""]
        if missing:
            text += ["## Missing", ""] + ["- " + m for m in missing] + [""]
        for server in checked:
            text += ["- %s log: %s" % (server.name, line[:200]) for line in server.problems()[:3]]
        Path(str(out) + ".md").write_text("\n".join(text) + "\n")
        print("\n".join(text))
        log("results: %s.{md,jsonl}" % out)
    finally:
        for server in servers:
            server.stop()
        if redis is not None:
            redis.terminate()
            redis.wait()
        dns.close()


if __name__ == "__main__":
    main()
