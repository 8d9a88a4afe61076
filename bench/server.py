"""The qpgevent server a bench script runs against: ``bin/qpsmtpd-server`` with its own config on a free port.

    server = BenchServer(workdir, ["rcpt_ok", "queue/discard"], {"me": "bench.localhost"}, ["-H"])
    command = server.start()    # returns once the server greets with 220
    ...                         # server.address, server.process.pid, server.workers()
    server.stop()               # SIGTERM to its whole process group, then SIGKILL to what is left

The config goes to ``workdir/config`` (``spool_dir`` is ``workdir/spool``
unless ``config`` says otherwise) and the server's output to
``workdir/server.log``.  The server runs in a process group of its own, so
that a stop reaches every worker, and so that a Ctrl-C meant for the script
reaches the server only through the script's own ``stop``.

It waits with ``time.sleep``: gevent's monkey-patching turns that into
``gevent.sleep``, so a script that patches before importing this module
(bench/slowloris.py) keeps its other greenlets running meanwhile.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from procfs import process_tree  # noqa: E402
from qpgevent.testing import free_port, write_config  # noqa: E402

# "killed" is left out: a stop kills the sessions that outlive --graceful-timeout
PROBLEM_WORDS = ("Traceback", "crashed", "died", "silent for")


class BenchServer:
    """``bin/qpsmtpd-server`` on 127.0.0.1, started and stopped as one process group."""

    def __init__(self, workdir, plugins, config, args, root=ROOT):
        """``root``: the checkout whose ``bin/qpsmtpd-server`` runs (bench/ab.py runs two)."""
        self.root = Path(root)
        self.workdir = Path(workdir)
        values = {"plugins": list(plugins), "spool_dir": str(self.workdir / "spool")}
        values.update(config)
        self.config_dir = write_config(self.workdir / "config", values)
        self.port = free_port()
        self.args = list(args)
        self.log_path = self.workdir / "server.log"
        self.process = None

    @property
    def address(self):
        return "127.0.0.1", self.port

    def start(self, wait=30.0, settle=0.0):
        """Start it and return its command line once it greets; then wait ``settle`` seconds more.

        A server with several workers greets as soon as one of them is up:
        ``settle`` gives the others time to come up too.  Exits the script
        (SystemExit with the server log) if the server dies or stays silent
        for ``wait`` seconds.
        """
        command = [sys.executable, str(self.root / "bin" / "qpsmtpd-server"), "--config-dir", str(self.config_dir),
                   "-l", "%s:%d" % self.address, *self.args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("server exited at start-up:\n" + self.log_path.read_text(errors="replace"))
            if self.greets():
                time.sleep(settle)
                return command
            time.sleep(0.1)
        self.stop()
        raise SystemExit("server did not greet within %g s:\n%s" % (wait, self.log_path.read_text(errors="replace")))

    def greets(self):
        """Whether a new connection gets a 220 greeting."""
        try:
            with socket.create_connection(self.address, timeout=2) as probe:
                return probe.recv(4).startswith(b"220")
        except OSError:
            return False

    def workers(self):
        """PIDs of the processes below the one started (none for a one-process server)."""
        return set(process_tree(self.process.pid)) - {self.process.pid}

    def stop(self, grace=15.0):
        """SIGTERM to the group, up to ``grace`` seconds for the server to exit, then SIGKILL to the group."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # stragglers too: a worker can outlive its master for a moment
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def problems(self, also=()):
        """Lines of the server log that say something went wrong inside the server.

        ``also`` adds words to look for, e.g. ``("killed",)`` when the log is
        read before the stop, where no session is killed for outliving it.
        """
        words = PROBLEM_WORDS + tuple(also)
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if any(word in line for word in words)]


def read_code(reader):
    """The code of one (possibly multi-line) SMTP reply from a socket file; ConnectionError if the server hung up."""
    while True:
        line = reader.readline(1024)
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])
