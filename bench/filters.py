#!/usr/bin/env python3
"""The filter chain's cost: qpsmtpd's sample filters against a local DNS server, beside the bare core, interleaved.

    bench/filters.py [--reps 5] [--sizes "1024 102400"] [--conc 100] [--workers 2|0]
                     [--msgs "1024:3000 102400:1500"] [--profile SECS]

Servers (each ``bin/qpsmtpd-server`` of this checkout, loglevel 4, ``-H``):

- ``core``: ``rcpt_ok`` + ``queue/discard``, the bare core;
- ``filters``: the sample config's filters that need no outside daemon: ``fcrdns``,
  ``dnsbl`` (two zones), ``rhsbl``, ``helo policy strict reject 0``, ``resolvable_fromhost``,
  ``sender_permitted_from``, ``dkim`` (verifying), ``dmarc``, ``headers``, ``bogus_bounce log``,
  ``virus/klez_filter``, ``naughty``, then ``rcpt_ok`` + ``queue/discard``;
- with ``--workers N`` the same two again with N workers.

Every message is a real one: From/To/Date/Message-ID headers, DKIM-signed
(rsa-sha256, relaxed/relaxed) by a key made for the run, from a domain whose
SPF and DMARC records pass for 127.0.0.1, sent with Postfix's ``smtp-source -F``
one connection per message.  tests/dnsserver.py answers on 127.0.0.1 from
zones this script writes (blocklists that list nothing, the sender's records,
PTR and A for 127.0.0.1), in this process: its CPU time is reported apart from
the servers'.  Server CPU comes from /proc over each server's process tree
(bench/procfs.py, reaped children included).  Writes bench/results/filters-<stamp>.{md,jsonl}.
"""
import argparse
import base64
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]
from ab import cpu_ms, log, rotation, write_results  # noqa: E402
from dnsserver import DNSServer, zone_text  # noqa: E402
from procfs import tree_cpu_seconds  # noqa: E402
from server import BenchServer  # noqa: E402

# a domain under a public suffix: Mail::DMARC (qpsmtpd's dmarc, in bench/race.py) refuses .test and .example;
# every resolver in the runs asks the local DNS server only, so the name never reaches the Internet
DOMAIN = "bench-sender.org"
CHAIN = ["fcrdns", "dnsbl", "rhsbl", "helo policy strict reject 0", "resolvable_fromhost",
         "sender_permitted_from", "dkim", "dmarc", "headers require From,Date", "bogus_bounce log",
         "virus/klez_filter", "naughty", "rcpt_ok", "queue/discard"]


TEST_POINT_IP = ["2.0.0.127 IN A 127.0.0.2", '2.0.0.127 IN TXT "RFC 5782 test point"']


def zones(public_key: str, ttl: int = 300, client: str = "127.0.0.1") -> Dict[str, str]:
    """Zone texts: the sender's domain, the ``client`` address's reverse name, and blocklists that list nothing but
    RFC 5782's test points (Haraka's dns-list disables a zone that does not list 127.0.0.2); every
    answer, negative ones too, may be cached ``ttl`` seconds."""
    return {origin: zone_text(records, ttl) for origin, records in {
        DOMAIN + ".": ["@ IN A %s" % client, "@ IN MX 10 mx.%s." % DOMAIN, "mx IN A %s" % client,
                       '@ IN TXT "v=spf1 ip4:%s -all"' % client, '_dmarc IN TXT "v=DMARC1; p=reject"',
                       # a 2048-bit key is longer than one TXT string (255 octets): several strings, joined
                       "bench._domainkey IN TXT %s" % " ".join(
                           '"%s"' % part for part in _chunks("v=DKIM1; k=rsa; p=" + public_key, 250))],
        ipaddress.ip_address(client).reverse_pointer + ".": ["@ IN PTR mx.%s." % DOMAIN],
        "dnsbl-one.bench.": TEST_POINT_IP, "dnsbl-two.bench.": TEST_POINT_IP,
        "rhsbl.bench.": ["test IN A 127.0.0.2"],
    }.items()}


def _chunks(text: str, size: int) -> List[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def signed_messages(sizes: List[int], work: Path) -> (Dict[int, Path], str):
    """One DKIM-signed message file per size (for smtp-source -F) and the public key for the zone."""
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    files = {}
    for size in sizes:
        head = ("From: Bench <bench@%s>\r\nTo: <b@example.com>\r\nSubject: filter chain\r\nDate: %s\r\n"
                "Message-ID: <%d@%s>\r\n\r\n" % (DOMAIN, formatdate(localtime=True), size, DOMAIN)).encode()
        line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
        body = line * max(1, (size - len(head)) // len(line))
        message = head + body
        signature = dkim.sign(message, b"bench", DOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"])
        files[size] = work / ("message-%d.eml" % size)
        # smtp-source ends each line of the file with CRLF itself
        files[size].write_bytes((signature + message).replace(b"\r\n", b"\n"))
    return files, public


def run_setup(args: argparse.Namespace, kind: str) -> tuple:
    """(sizes, {size: messages}, stamp, results path without suffix, work directory) of a ``kind`` run.

    Also turns SIGTERM into an exit, so that the caller's ``finally`` stops its servers.
    """
    sizes = [int(x) for x in args.sizes.split()]
    counts = {int(s): int(n) for s, n in (x.split(":") for x in args.msgs.split())}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return sizes, counts, stamp, HERE / "results" / ("%s-%s" % (kind, stamp)), Path(
        tempfile.mkdtemp(prefix="qpgevent-%s." % kind))


def start_server(work: Path, name: str, plugins: List[str], dns_server: str, workers: int = 0,
                 **config: object) -> BenchServer:
    """One qpgevent server called ``name`` (its directory under ``work``), asking ``dns_server`` (HOST:PORT)."""
    values = {"rcpthosts": "example.com", "me": "bench.localhost", "loglevel": "4", "dns_servers": dns_server,
              "dnsbl_zones": ["dnsbl-one.bench", "dnsbl-two.bench"], "rhsbl_zones": "rhsbl.bench", **config}
    extra = ["--workers", str(workers)] if workers else []
    server = BenchServer(work / name, plugins, values, ["-H", "-c", "20000", *extra])
    server.name = name
    server.start(settle=1.0 if workers else 0.0)
    log("started %s on %s:%d PID %d" % (name, *server.address, server.process.pid))
    return server


def start_servers(work: Path, dns_port: int, workers: int) -> List[BenchServer]:
    """core and filters, one process each, and with ``workers`` workers unless 0."""
    return [start_server(work, "%s-%s" % (kind, "w%d" % n if n else "1p"), plugins, "127.0.0.1:%d" % dns_port, n)
            for n in [0] + ([workers] if workers else [])
            for kind, plugins in (("core", ["rcpt_ok", "queue/discard"]), ("filters", CHAIN))]


def load(server: BenchServer, message: Path, conc: int, msgs: int) -> dict:
    """One smtp-source -F run; server CPU over its process tree, this process's CPU (the DNS server) apart."""
    command = ["smtp-source", "-s", str(conc), "-m", str(msgs), "-F", str(message), "-M", "mx.%s" % DOMAIN,
               "-f", "bench@%s" % DOMAIN, "-t", "b@example.com", "%s:%d" % server.address]
    cpu0, dns0, wall0 = tree_cpu_seconds(server.process.pid), time.process_time(), time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        rc, err = done.returncode, done.stderr.strip()[-300:]
    except subprocess.TimeoutExpired:
        rc, err = 124, "timeout"
    wall = time.monotonic() - wall0
    return {"server": server.name, "msgs": msgs, "conc": conc, "wall": wall, "rc": rc, "err": err,
            "server_cpu": tree_cpu_seconds(server.process.pid) - cpu0, "dns_cpu": time.process_time() - dns0,
            "rate": msgs / wall if rc == 0 else None}


def profile(server: BenchServer, message: Path, args: argparse.Namespace) -> str:
    """bench/profile.py (py-spy) on the filters server under this script's signed-message load."""
    run = subprocess.run([sys.executable, str(HERE / "profile.py"), "--server", "%s:%d" % server.address,
                          "--pid", str(server.process.pid), "--secs", str(int(args.profile)), "--top", "20",
                          "--conc", str(args.conc), "--message", str(message), "--sender", "bench@" + DOMAIN,
                          "--helo", "mx." + DOMAIN], capture_output=True, text=True, timeout=args.profile + 120)
    return run.stdout if run.returncode == 0 else "profile failed: " + run.stderr.strip()[-300:]


def report(runs: List[dict]) -> str:
    """Markdown: medians per server and size, then filters/core ratios."""
    ok = [r for r in runs if r["rc"] == 0]
    names = list(dict.fromkeys(r["server"] for r in ok))
    sizes = sorted({r["size"] for r in ok})
    pick = {(n, s): [r for r in ok if r["server"] == n and r["size"] == s] for n in names for s in sizes}
    lines = ["| server | size | reps | CPU ms/msg median | range | msgs/s median | DNS server CPU ms/msg |",
             "|---|---|---|---|---|---|---|"]
    for size in sizes:
        for name in names:
            rs = pick[(name, size)]
            if rs:
                ms = [cpu_ms(r) for r in rs]
                lines.append("| %s | %d KB | %d | %.3f | %.3f-%.3f | %.0f | %.3f |" % (
                    name, size // 1024, len(rs), statistics.median(ms), min(ms), max(ms),
                    statistics.median(r["rate"] for r in rs),
                    statistics.median(1000 * r["dns_cpu"] / r["msgs"] for r in rs)))
    lines += ["", "| pair | size | CPU ms/msg filters/core | msgs/s filters/core |", "|---|---|---|---|"]
    for core in (n for n in names if n.startswith("core-")):
        filters = "filters-" + core[5:]
        for size in sizes:
            a, b = pick[(core, size)], pick.get((filters, size), [])
            # a run too short for one clock tick of server CPU has no ratio (0 ms/msg)
            if a and b and statistics.median(map(cpu_ms, a)) > 0:
                lines.append("| %s / %s | %d KB | %.2f | %.2f |" % (
                    filters, core, size // 1024, statistics.median(map(cpu_ms, b)) / statistics.median(map(cpu_ms, a)),
                    statistics.median(r["rate"] for r in b) / statistics.median(r["rate"] for r in a)))
    return "\n".join(lines + failures(runs))


def failures(runs: List[dict]) -> List[str]:
    """Report lines naming every run that did not finish (none when all did)."""
    failed = [r for r in runs if r["rc"]]
    if not failed:
        return []
    return ["", "%d failed runs: " % len(failed) + "; ".join(
        "rep %d %s %d B rc=%d %s" % (r["rep"], r["server"], r["size"], r["rc"], r["err"][:80]) for r in failed)]


def main() -> None:
    """Parse the options, run core and filters interleaved, write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sizes", default="1024 102400")
    parser.add_argument("--conc", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="worker count of the multi-process rows (0: none)")
    parser.add_argument("--msgs", default="1024:3000 102400:1500", help="SIZE:N messages per run")
    parser.add_argument("--profile", type=float, default=0, metavar="SECS", help="py-spy seconds on filters-1p")
    args = parser.parse_args()
    sizes, counts, stamp, out, work = run_setup(args, "filters")
    servers: List[BenchServer] = []
    messages, public = signed_messages(sizes, work)
    dns = DNSServer(zones(public))
    try:
        servers = start_servers(work, dns.port, args.workers)
        for server in servers:  # warm-up, not recorded; a chain that refuses the message fails here
            for size in sizes:
                run = load(server, messages[size], 10, 50)
                if run["rc"]:
                    raise SystemExit("%s failed its warm-up: %s" % (server.name, run["err"]))
        refused = [s.name for s in servers if "deny" in s.log_path.read_text().lower()]
        if refused:
            raise SystemExit("messages were refused by %s: see their server.log" % ", ".join(refused))
        runs = []
        with open(str(out) + ".jsonl", "w") as jsonl:
            for rep in range(args.reps):
                for size in sizes:
                    for server in rotation(servers, rep):
                        run = load(server, messages[size], args.conc, counts.get(size, 2000))
                        run.update(rep=rep, size=size)
                        runs.append(run)
                        jsonl.write(json.dumps(run) + "\n")
                        log("rep %d %-12s %6d B: %d msgs %.2f s rc=%d %.3f ms/msg" % (
                            rep, server.name, size, run["msgs"], run["wall"], run["rc"], cpu_ms(run)))
                        time.sleep(0.5)
        text = ["# bench/filters.py %s" % stamp, "", "    " + " ".join(["bench/filters.py", *sys.argv[1:]]), "",
                "- commit `%s`; %d CPUs; filters: `%s`" % (
                    subprocess.run(["git", "-C", str(ROOT), "log", "--oneline", "-1"], capture_output=True,
                                   text=True).stdout.strip(), os.cpu_count(), " | ".join(CHAIN)),
                "- DNS questions answered: %d" % sum(dns.queries.values()), "", report(runs)]
        for server in servers:
            text += ["- %s server log: %s" % (server.name, line) for line in server.problems()[:5]]
        if args.profile:
            text += ["", "## profile filters-1p (1 KB, c=%d)" % args.conc, "", "```",
                     profile(next(s for s in servers if s.name == "filters-1p"), messages[min(sizes)], args).rstrip(),
                     "```"]
        write_results(out, text)
    finally:
        for server in servers:
            server.stop()
        dns.close()


if __name__ == "__main__":
    main()
