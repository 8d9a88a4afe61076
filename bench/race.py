#!/usr/bin/env python3
"""The filter-chain race (issue 11): qpgevent's sample chain against peers running their equivalents, interleaved.

    bench/race.py [--reps 3] [--sizes "1024 102400"] [--conc 100] [--msgs "1024:1000 102400:500"]
                  [--peers "qpsmtpd-prefork qpsmtpd-forkserver haraka haraka-x2 postfix"] [--workers 2]
                  [--profile SECS]

The script runs itself again in network and mount namespaces of its own (``unshare -n -m``):
nothing it does can reach past the namespace's loopback device.  There the load's connections
to 127.0.0.x leave from 198.18.0.1 (RFC 2544's benchmarking range, added to that loopback), so
no server takes the load for a local client and skips a check; /etc/resolv.conf names only the
race's DNS server on 127.0.0.153:53 (NSD, bench/nsd.py, its CPU and questions reported apart);
/etc/hosts is empty, so even libc's reverse lookups (Postfix) ask it.  Every server and every
daemon it asks resolves through its stock resolver.  The zones are bench/filters.py's; every server gets the same DKIM-signed message files
and the same ``smtp-source -F`` load (one connection per message).  Server CPU: /proc over each
process tree, reaped children included.  Redis (karma's store, for qpgevent and Haraka) is
counted apart: its commands and CPU per message.

- ``filters-1p`` / ``filters-wN``: qpgevent with bench/filters.py's CHAIN plus ``karma`` on Redis
  (``config/storage``); the bare ``core-*`` rows come along as a floor.
- ``filters-1p-ttl0`` / ``filters-wN-ttl0``: the same, asking a second DNS server (127.0.0.154) whose answers have TTL 0,
  so qpgevent's resolver cache cannot help: what a server sees when every message comes from a new
  client and sender domain.
- ``qpsmtpd-prefork`` / ``qpsmtpd-forkserver``: Debian qpsmtpd 0.94 (the copies of its binaries
  that ``../shared/bench/peers/run_peers.sh --install-only`` makes, which honour -H), with the
  same plugins in ``config/plugins`` (QPSMTPD_PLUGINS).
- ``haraka`` / ``haraka-x2``: Haraka 3.3.4 from npm (run_peers.sh's install), nodes 0 and 2, with
  its equivalents (HARAKA_PLUGINS), karma on the same Redis.
- ``postfix``: a private Postfix 3.7 instance (queue on disk, then ``discard:``) with
  reject_unknown_client_hostname, reject_rbl_client, reject_rhsbl_sender, the HELO and sender
  domain checks, Debian's SPF policy service (``policyd-spf``, spawned) and OpenDKIM as a
  verifying milter, started in Postfix's process tree so that its CPU is Postfix's.

Needs root (the namespaces, port 53, run_peers.sh's install, user switching).  PEERS_RUN_DIR as
for run_peers.sh (default $TMPDIR/qpgevent-peers).  Writes bench/results/race-<stamp>.{md,jsonl}.
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
from collections import Counter
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import filters  # noqa: E402
from ab import PEERS, rotation, write_results  # noqa: E402
from filters import CHAIN, DOMAIN, cpu_ms, failures, log, signed_messages, start_server, zones  # noqa: E402
from nsd import NSD  # noqa: E402
from qpgevent.testing import end_process  # noqa: E402

RUN = Path(os.environ.get("PEERS_RUN_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "qpgevent-peers")
DNS_HOST, DNS_HOST_TTL0 = "127.0.0.153", "127.0.0.154"
CLIENT = "198.18.0.1"  # RFC 2544's benchmarking range, on the private namespace's loopback device only
IN_NAMESPACE = "QPGEVENT_RACE_NAMESPACE"

# qpgevent's chain: filters.CHAIN with karma before naughty, as in qpsmtpd's sample config
QPGEVENT_CHAIN = CHAIN[:CHAIN.index("naughty")] + ["karma"] + CHAIN[CHAIN.index("naughty"):]
QPSMTPD_PLUGINS = ["fcrdns", "dnsbl", "rhsbl", "helo policy strict reject 0", "resolvable_fromhost",
                   "sender_permitted_from", "dkim", "dmarc", "headers require From,Date", "bogus_bounce log",
                   "virus/klez_filter", "karma", "naughty", "rcpt_ok", "queue_discard"]
HARAKA_PLUGINS = ["bench_not_private", "redis", "karma", "fcrdns", "dns-list", "helo.checks", "spf", "dkim",
                  "headers", "rcpt_to.in_host_list", "queue/discard"]
# what the race runs, by the Debian package that has it (qpsmtpd's dmarc also needs libmail-dmarc-perl)
TOOLS = {"nsd": "nsd", "nsd-control": "nsd", "policyd-spf": "postfix-policyd-spf-python", "opendkim": "opendkim",
         "redis-server": "redis-server", "redis-cli": "redis-tools", "smtp-source": "postfix", "unshare": "util-linux",
         "ip": "iproute2", "node": "nodejs"}
POSTFIX_RESTRICTIONS = {
    "smtpd_peername_lookup": "yes",
    "mynetworks": "127.0.0.254/32",  # not the load's 127.0.0.1: no client is exempt from the checks
    "smtpd_helo_required": "yes",
    "smtpd_client_restrictions": "reject_unknown_client_hostname, reject_rbl_client dnsbl-one.bench, "
                                 "reject_rbl_client dnsbl-two.bench",
    "smtpd_helo_restrictions": "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname, "
                               "reject_unknown_helo_hostname",
    "smtpd_sender_restrictions": "reject_non_fqdn_sender, reject_unknown_sender_domain, reject_rhsbl_sender rhsbl.bench",
    "smtpd_relay_restrictions": "reject_unauth_destination",
    "smtpd_recipient_restrictions": "check_policy_service unix:private/policyd-spf",
    "policyd-spf_time_limit": "3600",
    "milter_default_action": "tempfail",
    # all the load comes from one address: no per-client limit, as for the others (qpsmtpd --max-from-ip 0)
    "smtpd_client_connection_count_limit": "0",
    # between its runs Postfix sits idle for minutes: a postlogd restarted after max_idle (100 s) deadlocked
    # here on its own log socket, and every daemon with it; an hour keeps the whole race on one postlogd
    "max_idle": "3600s",
}


def enter_private_network(argv: List[str]) -> None:
    """Run this script again in its own network and mount namespaces (see the module docstring)."""
    if os.environ.get(IN_NAMESPACE) != "1":
        os.execvpe("unshare", ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, *argv],
                   {**os.environ, IN_NAMESPACE: "1"})
    for command in (["link", "set", "lo", "up"], ["addr", "add", CLIENT + "/32", "dev", "lo"],
                    # connections to 127.0.0.x now leave from CLIENT: the load is not a loopback client
                    *(["route", "replace", "local", net, "dev", "lo", "table", "local", "proto", "kernel", "scope",
                       "host", "src", CLIENT] for net in ("127.0.0.0/8", "127.0.0.1"))):
        subprocess.run(["ip", *command], check=True)
    etc = Path(tempfile.mkdtemp(prefix="qpgevent-race-etc."))
    (etc / "resolv.conf").write_text("nameserver %s\noptions timeout:5 attempts:2\n" % DNS_HOST)
    # no line at all: glibc answers 127.0.0.1 from a '::1' line too, and the load's reverse lookups must ask DNS
    (etc / "hosts").write_text("# bench/race.py: every name and address is looked up in the race's DNS\n")
    for name in ("resolv.conf", "hosts"):
        os.chmod(etc / name, 0o644)
        subprocess.run(["mount", "--bind", str(etc / name), "/etc/" + name], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    """A peer server started here: name, address, process (its tree is measured), log_path.

    ``stop_command``: run first at stop, for a server whose daemons leave the process group (Postfix's
    master and OpenDKIM call setsid).
    """

    def __init__(self, name: str, command: List[str], cwd: Path, env: dict, port: int, log_path: Path,
                 stop_command: Optional[List[str]] = None) -> None:
        self.name, self.address, self.log_path, self.stop_command = name, ("127.0.0.1", port), log_path, stop_command
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
        if self.stop_command:
            subprocess.run(self.stop_command, capture_output=True, timeout=60)
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
                if any(w in line.lower() for w in ("error", "fail", "deny", "reject", "crit", "warn"))][:5]


def qpsmtpd(work: Path, kind: str) -> Peer:
    """Debian qpsmtpd 0.94 (prefork or forkserver) with the chain; Net::DNS reads the namespace's resolv.conf."""
    base = work / kind
    config = base / "config"
    (base / "spool").mkdir(parents=True)
    config.mkdir()
    files = {"plugins": "\n".join(QPSMTPD_PLUGINS), "rcpthosts": "example.com", "me": "bench.localhost",
             "loglevel": "4", "plugin_dirs": "%s\n/usr/share/qpsmtpd/plugins" % (RUN / "qpsmtpd" / "plugins"),
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


BENCH_NOT_PRIVATE_JS = """// bench_not_private -- benchmark-only: the load comes from 127.0.0.1, which Haraka calls
// 'private'; dns-list, fcrdns, spf, helo.checks and karma skip private clients, so say it is not
exports.hook_connect_init = function (next, connection) {
    connection.remote.is_private = false
    next()
}
"""


def haraka(work: Path, name: str, redis_port: int) -> Peer:
    """Haraka 3 (run_peers.sh's npm install), nodes 0 or 2, with its equivalents of the chain."""
    home = work / name
    package = RUN / "haraka-pkg"
    subprocess.run(["node", "node_modules/Haraka/bin/haraka", "-i", str(home)], cwd=str(package),
                   capture_output=True, check=True)
    port = free_port()
    config, plugins = home / "config", home / "plugins"
    (plugins / "bench_not_private.js").write_text(BENCH_NOT_PRIVATE_JS)
    redis = "[server]\nhost=127.0.0.1\nport=%d\n[pubsub]\nhost=127.0.0.1\nport=%d\n" % (redis_port, redis_port)
    writes = {
        "plugins": "\n".join(HARAKA_PLUGINS),
        "host_list": "example.com", "me": "bench.localhost",
        "log.ini": "[main]\nlevel=warn\ntimestamps=false\n",
        "smtp.ini": "listen=127.0.0.1:%d\nnodes=%d\n" % (port, 2 if name.endswith("x2") else 0),
        # periodic_checks: the zones are tested (RFC 5782 test points) at start-up and enabled only then
        "dns-list.ini": "[main]\nzones=dnsbl-one.bench,dnsbl-two.bench\nsearch=all\nperiodic_checks=30\n"
                        "[dnsbl-one.bench]\ntype=block\n[dnsbl-two.bench]\ntype=block\n",
        "dkim.ini": "[verify]\nenabled=true\n[sign]\nenabled=false\n",
        "redis.ini": redis,
    }
    # karma: the plugin's own karma.ini, scoring and recording in Redis but never refusing nor
    # tarpitting (the qpgevent and qpsmtpd chains refuse nothing either)
    stock = (package / "node_modules/haraka-plugin-karma/config/karma.ini").read_text()
    stock = stock.replace("[tarpit]\ndelay=1", "[tarpit_off]\ndelay=0").replace("\nnegative=-8", "\nnegative=-1000")
    writes["karma.ini"] = stock.replace("[redis]\n", "[redis]\nhost=127.0.0.1\nport=%d\n" % redis_port, 1)
    for file, text in writes.items():
        (config / file).write_text(text + "\n")
    command = ["node", "node_modules/Haraka/bin/haraka", "-c", str(home)]
    return Peer(name, command, package, {"YES_REALLY_DO_DISCARD": "1"}, port, work / (name + ".log"))


def postfix(work: Path) -> Peer:
    """A private Postfix instance with the chain's equivalents; OpenDKIM runs in its process tree."""
    base = work / "postfix"
    etc, spool, data = base / "etc", base / "spool", base / "data"
    for d in (etc, spool, data):
        d.mkdir(parents=True)
    shutil.chown(data, "postfix")
    conf = PEERS / "conf" / "postfix"  # run_peers.sh's instance: queue on disk, then discard
    port, milter_port = free_port(), free_port()
    main_cf = (conf / "main.cf").read_text().replace("@RUN@/postfix", str(base))
    # later lines win in main.cf: the chain's settings override the plain peer's
    settings = {**POSTFIX_RESTRICTIONS, "smtpd_milters": "inet:127.0.0.1:%d" % milter_port}
    (etc / "main.cf").write_text(main_cf + "\n# bench/race.py: the chain\n" +
                                 "".join("%s = %s\n" % kv for kv in settings.items()))
    master = (conf / "master.cf").read_text().replace("127.0.0.1:2531 inet", "127.0.0.1:%d inet" % port)
    spf_conf = base / "policyd-spf.conf"
    spf_conf.write_text("debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n"
                        "PermError_reject = False\nTempError_Defer = False\n"
                        "skip_addresses = 192.0.2.255/32\n")  # the stock file skips 127.0.0.0/8: the load's
    master += ("policyd-spf unix - n n - 0 spawn\n  user=nobody argv=/usr/bin/policyd-spf %s\n" % spf_conf)
    (etc / "master.cf").write_text(master)
    shutil.copy("/etc/postfix/dynamicmaps.cf", etc / "dynamicmaps.cf")
    dkim_conf = base / "opendkim.conf"
    dkim_conf.write_text("Socket inet:%d@127.0.0.1\nPidFile %s\nSyslog no\nMode v\nNameservers %s\n"
                         "On-NoSignature accept\nOn-BadSignature reject\nUserID opendkim\n"
                         % (milter_port, base / "opendkim.pid", DNS_HOST))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    # opendkim first, then exec postfix start-fg: opendkim becomes a child of Postfix's master
    command = ["sh", "-c", 'opendkim -f -x "$1" & exec postfix -c "$2" start-fg', "sh", str(dkim_conf), str(etc)]
    return Peer("postfix", command, base, {}, port, base / "maillog", stop_command=[
        "sh", "-c", 'postfix -c "$1" stop; kill $(cat "$2")', "sh", str(etc), str(base / "opendkim.pid")])


class Redis:
    """redis-server on a free loopback port (karma's store), with its command count and CPU."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no",
                                         # its clients come from CLIENT, which protected mode would turn away
                                         "--protected-mode", "no"],
                                        stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while self.info() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def info(self) -> Optional[Dict[str, float]]:
        """Commands processed so far and CPU seconds (user + sys, main thread and children)."""
        try:
            out = subprocess.run(["redis-cli", "-p", str(self.port), "info", "all"], capture_output=True, text=True,
                                 timeout=5).stdout
        except subprocess.TimeoutExpired:
            return None
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        if "total_commands_processed" not in fields:
            return None
        return {"commands": float(fields["total_commands_processed"]),
                "cpu": sum(float(fields[k]) for k in ("used_cpu_sys", "used_cpu_user"))}

    def stop(self) -> None:
        end_process(self.process)


def questions(dns_servers: List[NSD]) -> Counter:
    """Questions the race's DNS servers answered so far, by type ("all" for every one)."""
    return sum((d.questions() for d in dns_servers), Counter())


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
    lines = ["| server | size | reps | CPU ms/msg median | range | msgs/s median | DNS server CPU ms/msg "
             "| DNS questions/msg | Redis commands/msg | Redis CPU ms/msg | questions/msg by type |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        for name in names:
            rs = [r for r in ok if r["server"] == name and r["size"] == size]
            if rs:
                ms = [cpu_ms(r) for r in rs]
                med[name, size] = (statistics.median(ms), statistics.median(r["rate"] for r in rs))
                lines.append("| %s | %d KB | %d | %.3f | %.3f-%.3f | %.0f | %.3f | %.1f | %.1f | %.3f | %s |" % (
                    name, size // 1024, len(rs), med[name, size][0], min(ms), max(ms), med[name, size][1],
                    statistics.median(1000 * r["dns_cpu"] / r["msgs"] for r in rs),
                    statistics.median(r["dns_q"] / r["msgs"] for r in rs),
                    statistics.median(r["redis_commands"] / r["msgs"] for r in rs),
                    statistics.median(1000 * r["redis_cpu"] / r["msgs"] for r in rs),
                    ", ".join("%s %.1f" % (t, statistics.median(r["dns_types"].get(t, 0) / r["msgs"] for r in rs))
                              for t in sorted({t for r in rs for t in r["dns_types"]} - {"all"}))))
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


def start_qpgevent(work: Path, workers: int, redis: Redis, core: bool) -> list:
    """The qpgevent rows, 1 process and ``workers`` workers each: (core,) filters, and filters-*-ttl0."""
    storage = "redis://127.0.0.1:%d/0" % redis.port
    servers = []
    for n in [0, workers] if workers else [0]:
        variant = "w%d" % n if n else "1p"
        if core:
            servers.append(start_server(work, "core-" + variant, ["rcpt_ok", "queue/discard"], DNS_HOST + ":53", n))
        servers.append(start_server(work, "filters-" + variant, QPGEVENT_CHAIN, DNS_HOST + ":53", n, storage=storage))
        servers.append(start_server(work, "filters-%s-ttl0" % variant, QPGEVENT_CHAIN, DNS_HOST_TTL0 + ":53", n,
                                    storage=storage))
    return servers


def start_peer(work: Path, peer: str, redis: Redis):
    if peer.startswith("qpsmtpd"):
        return qpsmtpd(work, peer)
    if peer.startswith("haraka"):
        return haraka(work, peer, redis.port)
    if peer == "postfix":
        return postfix(work)
    raise RuntimeError("unknown peer")


def checked_servers(servers: list, messages: Dict[int, Path], sizes: List[int], missing: List[str]) -> list:
    """The servers that accept the signed messages and a short warm-up load: a refusal is no race."""
    checked = []
    for server in servers:
        why = "; ".join(w for w in (accepted(server, messages[size]) for size in sizes) if w)
        if not why:
            for size in sizes:
                run = filters.load(server, messages[size], 10, 30)
                if run["rc"]:
                    why = "warm-up failed: %s" % run["err"][:200]
                    break
        if why:
            missing.append("%s: %s" % (server.name, why[:300]))
            log(missing[-1])
        else:
            checked.append(server)
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="1024 102400")
    parser.add_argument("--conc", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--msgs", default="1024:1000 102400:500", help="SIZE:N messages per run")
    parser.add_argument("--peers", default="qpsmtpd-prefork qpsmtpd-forkserver haraka haraka-x2 postfix")
    parser.add_argument("--no-core", action="store_true", help="leave out the bare core rows")
    parser.add_argument("--no-ours", action="store_true", help="peers only (to try a peer's set-up)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories and logs afterwards")
    parser.add_argument("--profile", type=float, default=0, metavar="SECS",
                        help="afterwards, py-spy seconds on filters-1p and filters-1p-ttl0")
    args = parser.parse_args()
    if not (RUN / "qpsmtpd/bin/qpsmtpd-prefork").exists() or not (RUN / "haraka-pkg").exists():
        raise SystemExit("run ../shared/bench/peers/run_peers.sh --install-only first (PEERS_RUN_DIR=%s)" % RUN)
    absent = {tool: package for tool, package in TOOLS.items() if shutil.which(tool) is None}
    if not Path("/usr/share/perl5/Mail/DMARC.pm").exists():
        absent["Mail::DMARC"] = "libmail-dmarc-perl"
    if absent:
        raise SystemExit("missing %s: apt-get install %s" % (", ".join(absent), " ".join(sorted(set(absent.values())))))
    enter_private_network([str(Path(__file__).resolve()), *sys.argv[1:]])
    sizes, counts, stamp, out, work = filters.run_setup(args, "race")
    os.chmod(work, 0o755)
    messages, public = signed_messages(sizes, work)
    for m in messages.values():
        os.chmod(m, 0o644)
    servers, missing, dns_servers, redis = [], [], [], None
    try:
        dns_servers = [NSD(work / "nsd", zones(public, client=CLIENT), DNS_HOST),
                       NSD(work / "nsd-ttl0", zones(public, ttl=0, client=CLIENT), DNS_HOST_TTL0)]
        redis = Redis()
        if not args.no_ours:
            servers = start_qpgevent(work, args.workers, redis, not args.no_core)
        for peer in args.peers.split():
            try:
                servers.append(start_peer(work, peer, redis))
                log("started %s on %s:%d PID %d" % (peer, *servers[-1].address, servers[-1].process.pid))
            except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
                missing.append("%s: did not start: %s" % (peer, str(e)[-300:]))
                log(missing[-1])
        checked = checked_servers(servers, messages, sizes, missing)
        asked0 = questions(dns_servers)
        runs = []
        with open(str(out) + ".jsonl", "w") as jsonl:
            for rep in range(args.reps):
                for size in sizes:
                    for server in rotation(checked, rep):
                        q0, d0, r0 = questions(dns_servers), sum(d.cpu() for d in dns_servers), redis.info()
                        run = filters.load(server, messages[size], args.conc, counts.get(size, 1000))
                        r1 = redis.info()
                        asked = questions(dns_servers) - q0
                        run.update(rep=rep, size=size, dns_q=asked["all"], dns_types=dict(asked),
                                   dns_cpu=sum(d.cpu() for d in dns_servers) - d0,
                                   redis_commands=r1["commands"] - r0["commands"] - 1,  # less our own INFO
                                   redis_cpu=r1["cpu"] - r0["cpu"])
                        runs.append(run)
                        jsonl.write(json.dumps(run) + "\n")
                        jsonl.flush()
                        log("rep %d %-18s %6d B: %d msgs %.2f s rc=%d %.3f ms/msg" % (
                            rep, server.name, size, run["msgs"], run["wall"], run["rc"], cpu_ms(run)))
                        time.sleep(0.5)
        total = sum(r["msgs"] for r in runs)
        asked = (questions(dns_servers) - asked0)["all"]
        text = ["# bench/race.py %s" % stamp, "", "    " + " ".join(["bench/race.py", *sys.argv[1:]]), "",
                "- commit `%s`; %d CPUs; %s" % (
                    subprocess.run(["git", "-C", str(HERE.parent), "log", "--oneline", "-1"], capture_output=True,
                                   text=True).stdout.strip(), os.cpu_count(), open("/proc/loadavg").read().strip()),
                "- qpgevent chain: `%s`" % " | ".join(QPGEVENT_CHAIN),
                "- qpsmtpd 0.94 chain: `%s`" % " | ".join(QPSMTPD_PLUGINS),
                "- Haraka chain: `%s`" % " | ".join(HARAKA_PLUGINS),
                "- Postfix: `%s`; smtpd_milters = OpenDKIM (verify)" % "; ".join(
                    "%s = %s" % kv for kv in POSTFIX_RESTRICTIONS.items()),
                "- DNS questions answered during the measured runs: %d (%.1f per message)" % (asked, asked / max(1, total)),
                "", report(runs), ""]
        if missing:
            text += ["## Missing", ""] + ["- " + m for m in missing] + [""]
        for server in checked:
            text += ["- %s log: %s" % (server.name, line[:200]) for line in server.problems()[:3]]
        if args.profile:
            for name in ("filters-1p", "filters-1p-ttl0"):
                server = next((s for s in checked if s.name == name), None)
                if server is not None:
                    text += ["", "## profile %s (1 KB, c=%d)" % (name, args.conc), "", "```",
                             filters.profile(server, messages[min(sizes)], args).rstrip(), "```"]
        write_results(out, text)
    finally:
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()
        for dns in dns_servers:
            dns.close()
        if args.keep:
            log("servers' files and logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
