"""An NSD authoritative server (Debian's ``nsd``) on a loopback address, answering from zone texts, for bench/race.py.

    server = NSD(work / "nsd", {"example.org.": zone_text([...])}, "127.0.0.153")
    server.questions()   # questions answered so far, by type (nsd-control stats_noreset)
    server.cpu()         # CPU seconds of its process tree so far
    server.close()

A C server costs the peers' load little CPU, where tests/dnsserver.py (a Python
thread per question) would take a good share of a 2-core machine away from a
peer that asks 18 questions per message.
"""
import subprocess
import time
from pathlib import Path
from collections import Counter
from typing import Dict, Optional

from procfs import tree_cpu_seconds
from qpgevent.testing import end_process


class NSD:
    """``nsd -d`` on ``host``:``port`` with ``zones`` ({origin: zone file text}), its files under ``directory``."""

    def __init__(self, directory: Path, zones: Dict[str, str], host: str, port: int = 53) -> None:
        directory.mkdir(parents=True)
        self.conf = directory / "nsd.conf"
        lines = ["server:", "  ip-address: %s@%d" % (host, port), "  username: \"\"", "  database: \"\"",
                 "  zonesdir: \"%s\"" % directory, "  zonelistfile: \"%s/zone.list\"" % directory,
                 "  xfrdfile: \"%s/xfrd.state\"" % directory, "  pidfile: \"%s/nsd.pid\"" % directory,
                 "  logfile: \"%s/nsd.log\"" % directory, "  server-count: 1", "  verbosity: 0",
                 # response rate limiting off: at its 200 answers/s per client, a peer asking 20 questions a
                 # message would see dropped answers and wait out its resolver's timeouts
                 "  rrl-ratelimit: 0", "  rrl-whitelist-ratelimit: 0",
                 "remote-control:", "  control-enable: yes", "  control-interface: \"%s/nsd.ctl\"" % directory]
        for n, (origin, text) in enumerate(zones.items()):
            (directory / ("zone%d" % n)).write_text("$ORIGIN %s\n%s" % (origin, text))
            lines += ["zone:", "  name: \"%s\"" % origin, "  zonefile: \"zone%d\"" % n]
        self.conf.write_text("\n".join(lines) + "\n")
        check = subprocess.run(["nsd-checkconf", str(self.conf)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError("nsd-checkconf: %s" % (check.stdout + check.stderr))
        self.process = subprocess.Popen(["nsd", "-d", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 15
        while self.questions() is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("nsd did not start: %s" % (directory / "nsd.log").read_text(errors="replace"))
            time.sleep(0.1)

    def questions(self) -> Optional[Counter]:
        """Questions answered so far by type ("A", "TXT", ...; "all" for every one), None while unreachable."""
        run = subprocess.run(["nsd-control", "-c", str(self.conf), "stats_noreset"], capture_output=True, text=True,
                             timeout=10)
        counts = Counter()
        for line in run.stdout.splitlines():
            name, _, value = line.partition("=")
            if name == "num.queries":
                counts["all"] = int(value)
            elif name.startswith("num.type."):
                counts[name[len("num.type."):]] = int(value)
        return counts if "all" in counts else None

    def cpu(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def close(self) -> None:
        end_process(self.process)
