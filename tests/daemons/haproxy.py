"""A private HAProxy for tests: TCP mode, PROXY v2 to the backends, an SMTP health check, a stats socket.

``HAProxy(base, servers={"a": ("127.0.0.1", 2525), ...})`` writes
``base/haproxy.cfg`` and runs ``haproxy -f base/haproxy.cfg -db`` (foreground,
no daemon, no /etc file read).  It listens only on 127.0.0.1, on free ports:

* ``ports["mx"]``: the frontend that balances over every server, round robin;
* ``ports[name]``: one frontend per server that reaches that server only
  (through HAProxy all the same), so that a test can choose the instance.

The servers are checked with ``option smtpchk`` every 500 ms (down after 2
failed checks, up after 2 good ones).  ``status(name)`` reads the server's
state (``UP``, ``DOWN``, ...) from the stats socket's ``show stat``.
"""
import csv
import socket
import subprocess
from pathlib import Path
from typing import Dict, Optional, Tuple

from qpgevent.testing import end_process, free_port, wait_for

# Client and server timeouts longer than qpgevent's own, so that qpgevent says the last word.
CONFIG = """\
global
    stats socket {base}/stats.sock mode 600 level admin
    nbthread 1

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    # a connection refused by a dead server is tried once more, on another server
    retries 1
    option redispatch

frontend mx
    bind 127.0.0.1:{mx_port}
    default_backend mx

backend mx
    balance roundrobin
    option smtpchk EHLO lb.test
    default-server send-proxy-v2 check inter 500ms fall 2 rise 2
{servers}
{pinned}"""

SERVER = "    server {name} {host}:{port}\n"

# A server that tracks mx's: one health check per instance, whichever frontend is used.
PINNED = """\
frontend via_{name}
    bind 127.0.0.1:{port}
    default_backend only_{name}

backend only_{name}
    server {name} {host}:{server_port} send-proxy-v2 track mx/{name}

"""


class HAProxy:
    """``haproxy -db`` with the config above; ``start()`` waits for every frontend, ``stop()`` ends it."""

    def __init__(self, base: Path, servers: Dict[str, Tuple[str, int]]) -> None:
        self.base = Path(base)
        self.servers = dict(servers)
        self.ports = {"mx": free_port(), **{name: free_port() for name in self.servers}}
        self.process: Optional[subprocess.Popen] = None
        self.config_path = self.base / "haproxy.cfg"
        self.log_path = self.base / "haproxy.log"

    def address(self, frontend: str = "mx") -> Tuple[str, int]:
        return "127.0.0.1", self.ports[frontend]

    def write_config(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        servers = "".join(SERVER.format(name=name, host=host, port=port) for name, (host, port) in self.servers.items())
        pinned = "".join(PINNED.format(name=name, port=self.ports[name], host=host, server_port=port)
                         for name, (host, port) in self.servers.items())
        self.config_path.write_text(CONFIG.format(base=self.base, mx_port=self.ports["mx"], servers=servers,
                                                  pinned=pinned))
        return self.config_path

    def start(self, wait: float = 10.0) -> "HAProxy":
        self.write_config()
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True,
                               timeout=10)
        if check.returncode:
            raise RuntimeError("haproxy -c refused %s:\n%s%s" % (self.config_path, check.stdout, check.stderr))
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(["haproxy", "-f", str(self.config_path), "-db"], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_for(lambda: self.process.poll() is not None or self._listening(), wait) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("haproxy did not listen within %ss:\n%s" % (wait, self.log_path.read_text()))
        return self

    def _listening(self) -> bool:
        for port in self.ports.values():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return (self.base / "stats.sock").exists()

    def stats(self) -> Dict[Tuple[str, str], Dict[str, str]]:
        """``show stat`` as {(proxy, server): {field: value}}."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.base / "stats.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = data.decode().lstrip("# ").splitlines()
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(line for line in lines if line)}

    def status(self, server: str) -> str:
        """``UP``, ``DOWN``, ``UP 1/2`` (going down), ``DOWN 1/2`` (coming up), ... as the mx backend sees it."""
        return self.stats()[("mx", server)]["status"]

    def wait_status(self, server: str, wanted: str, seconds: float = 10.0) -> bool:
        return wait_for(lambda: self.status(server) == wanted, seconds, step=0.1)

    def stop(self) -> None:
        end_process(self.process)
