"""systemd: the notify protocol (READY, RELOADING, STOPPING, WATCHDOG) and socket activation, as systemd sees them.

The tests play systemd's side: an AF_UNIX datagram socket named by
``NOTIFY_SOCKET`` collects what bin/qpsmtpd-server says, and a listening socket
handed over as fd 3 with ``LISTEN_FDS``/``LISTEN_PID`` stands in for a
``.socket`` unit.  ``systemd-analyze verify`` checks the shipped unit files.
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from qpgevent.systemd import Notifier, inherited_sockets
from qpgevent.testing import LiveServer, ROOT, read_reply, wait_for, write_config

pytestmark = pytest.mark.timeout(60)

SERVER = [sys.executable, str(ROOT / "bin" / "qpsmtpd-server")]
WATCHDOG_USEC = 400000  # WATCHDOG=1 due every 0.2 s


class NotifySocket:
    """systemd's end of sd_notify: collects the datagrams, each parsed into {NAME: value}."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages = []

    def receive(self, seconds: float):
        """The next message, or None if none comes within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        message = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.messages.append(message)
        return message

    def expect(self, name: str, seconds: float = 15.0, skip=("WATCHDOG",)):
        """The next message other than those in ``skip``; it must set ``name``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message is not None and not any(key in message for key in skip):
                assert name in message, "expected %s=, got %r (all: %r)" % (name, message, self.messages)
                return message
        raise AssertionError("no %s= within %ss; got %r" % (name, seconds, self.messages))

    def watchdogs(self, seconds: float) -> int:
        """How many WATCHDOG=1 come in the next ``seconds``."""
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.receive(max(0.01, deadline - time.monotonic()))
            count += bool(message and message.get("WATCHDOG") == "1")
        return count

    def drain(self) -> None:
        """Forget what was sent so far (WATCHDOG=1 from before a worker froze)."""
        while self.receive(0.01) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify():
    sock = NotifySocket("@qpgevent-test-%d-%s" % (os.getpid(), uuid.uuid4().hex))
    yield sock
    sock.close()


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config", {
        "me": "mx.test", "rcpthosts": "example.com", "spool_dir": str(tmp_path / "spool"), "loglevel": "6",
        "plugins": ["rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]})


def start_in_background(server: LiveServer) -> threading.Thread:
    """Start ``server`` without waiting for it here: the test watches the notify socket meanwhile."""
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    return thread


def greets(address, seconds: float = 2.0) -> bool:
    with socket.create_connection(address, timeout=seconds) as sock:
        return read_reply(sock, seconds).code == 220


def send_mail(address) -> None:
    with smtplib.SMTP(*address, timeout=10) as client:
        client.sendmail("a@sender.test", ["b@example.com"], "Subject: systemd\r\n\r\nbody\r\n")


def test_single_process_ready_reload_stop(config, notify):
    """One process: READY=1 once it serves (MAINPID, STATUS), RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on TERM."""
    server = LiveServer(config, env={"NOTIFY_SOCKET": notify.address})
    thread = start_in_background(server)
    try:
        ready = notify.expect("READY")
        assert greets(server.address), "READY=1 came before the server answered"
        assert ready["READY"] == "1" and ready["MAINPID"] == str(server.process.pid)
        assert "port %d" % server.port in ready["STATUS"]
        thread.join(15)

        os.kill(server.process.pid, signal.SIGHUP)
        reloading = notify.expect("RELOADING")
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reloading["RELOADING"] == "1" and 0 < now - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        assert "reloaded" in notify.expect("READY")["STATUS"]
        send_mail(server.address)

        server.process.send_signal(signal.SIGTERM)
        assert notify.expect("STOPPING")["STOPPING"] == "1"
        assert server.process.wait(15) == 0
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_refused_reload_ends_with_ready(config, notify, workers):
    """A broken config on SIGHUP: RELOADING=1, then READY=1 saying the reload was refused (not left reloading)."""
    with LiveServer(config, args=["--workers", workers], env={"NOTIFY_SOCKET": notify.address}) as server:
        notify.expect("READY")
        (config / "plugins").write_text("no_such_plugin\n")
        server.process.send_signal(signal.SIGHUP)
        notify.expect("RELOADING")
        assert "refused" in notify.expect("READY")["STATUS"]
        send_mail(server.address)


def test_single_process_watchdog(config, notify):
    """With WATCHDOG_USEC, WATCHDOG=1 comes every WATCHDOG_USEC/2 for as long as the event loop runs."""
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with LiveServer(config, env=env):
        notify.expect("READY")
        assert notify.watchdogs(2.0) >= 6  # every 0.2 s: about 10


def test_no_watchdog_for_another_pid(config, notify):
    """WATCHDOG_PID naming another process (a parent's watchdog) is not ours: no WATCHDOG=1."""
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"}
    with LiveServer(config, env=env):
        notify.expect("READY")
        assert notify.watchdogs(1.0) == 0


def serving_workers(server: LiveServer):
    return set(map(int, re.findall(r"worker (\d+) serving", server.log)))


def test_workers_ready_reload_watchdog_and_stuck_worker(config, notify):
    """--workers 2: READY=1 once both workers serve, READY=1 after a reload once the new ones serve;
    WATCHDOG=1 stops while a worker is frozen (SIGSTOP: no heartbeat) and resumes when it runs again."""
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    server = LiveServer(config, args=["--workers", "2"], env=env)
    thread = start_in_background(server)
    try:
        ready = notify.expect("READY")
        assert len(serving_workers(server)) == 2, "READY=1 before the workers served:\n" + server.log
        assert ready["MAINPID"] == str(server.process.pid) and "2 workers" in ready["STATUS"]
        thread.join(15)
        assert notify.watchdogs(1.0) >= 3

        first = serving_workers(server)
        server.process.send_signal(signal.SIGHUP)
        notify.expect("RELOADING")
        assert "reloaded" in notify.expect("READY")["STATUS"]
        assert len(serving_workers(server) - first) == 2, "READY=1 before the new workers served"
        assert wait_for(lambda: "worker %d stopped" % max(first) in server.log, 15)

        worker = max(serving_workers(server) - first)
        os.kill(worker, signal.SIGSTOP)
        try:
            # Its last heartbeat ages past 3 s; after that nothing more comes.
            assert wait_for(lambda: "withholding WATCHDOG=1" in server.log, 10), server.log
            notify.drain()
            assert notify.watchdogs(1.5) == 0
        finally:
            os.kill(worker, signal.SIGCONT)
        assert wait_for(lambda: notify.watchdogs(0.5) > 0, 10)
        send_mail(server.address)

        server.process.send_signal(signal.SIGTERM)
        assert notify.expect("STOPPING")["STOPPING"] == "1"
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    """NOTIFY_SOCKET unset: nothing to send to, and saying so is not an error."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready("serving") is False


def test_send_failure_is_logged_once(tmp_path):
    """A notify socket that is gone: the sends fail quietly, and the failure is logged once."""
    logged = []
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000000"},
                                         log=logged.append)
    assert notifier.watchdog_interval == 0.5
    assert notifier.ready("serving") is False
    assert notifier.watchdog() is False and notifier.stopping("bye") is False
    assert len(logged) == 1 and "cannot notify systemd" in logged[0]


def test_notify_socket_variables_are_not_inherited():
    """The variables are taken out of the environment: a program a plugin runs does not see them."""
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5", "LISTEN_FDS": "1", "LISTEN_PID": "1", "PATH": "/bin"}
    Notifier.from_environment(environ)
    assert inherited_sockets(environ) == []  # LISTEN_PID 1 is not us
    assert environ == {"PATH": "/bin"}


# What systemd does between fork and exec: the socket to fd 3, LISTEN_PID and
# LISTEN_FDS naming this very process (the pid survives the exec).
LAUNCH = """import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


def launched(fd: int):
    """The command prefix that starts the daemon with ``fd`` passed as systemd passes a socket."""
    return [sys.executable, "-c", LAUNCH, str(fd), *SERVER]


def activated(config, listener: socket.socket, args=()) -> LiveServer:
    """The daemon started as systemd starts it, ``listener`` its one socket; its own -l is ignored."""
    server = LiveServer(config, args=args, pass_fds=[listener.fileno()], program=launched(listener.fileno()))
    server.port = listener.getsockname()[1]  # where LiveServer waits for the greeting
    return server


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation(config, listener, workers):
    """LISTEN_FDS: the daemon serves on the socket it was given and binds nothing itself, with or without workers.

    Our socket holds the port the daemon's own -l names: binding it would fail
    ("cannot listen"), so mail getting through shows the passed socket is used.
    """
    with activated(config, listener, args=["--workers", workers]) as server:
        send_mail(server.address)
        assert "LISTEN_FDS" in server.log and "-l and --smtps-listen are ignored" in server.log
    assert list((config.parent / "Maildir" / "new").iterdir())


def test_socket_activation_for_another_pid_is_ignored(config):
    """LISTEN_PID of another process: those descriptors are not ours; the daemon binds its -l address."""
    with LiveServer(config, env={"LISTEN_FDS": "1", "LISTEN_PID": "1"}) as server:
        send_mail(server.address)


def test_socket_activation_refuses_a_socket_that_does_not_listen(config):
    """fd 3 not a listening TCP socket (a unit with Accept=yes, or ListenDatagram): exit 78 naming the fix."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = subprocess.run([*launched(theirs.fileno()), "--config-dir", str(config)],
                                pass_fds=[theirs.fileno()], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert "descriptor 3 is not a listening TCP socket" in result.stderr and "Accept=no" in result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_unit_files_verify(tmp_path):
    """contrib/qpgevent.service and .socket pass systemd-analyze verify (ExecStart pointed at this checkout)."""
    for name in ("qpgevent.service", "qpgevent.socket"):
        text = (ROOT / "contrib" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/qpgevent/bin/", str(ROOT / "bin") + "/"))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "qpgevent.service"),
                             str(tmp_path / "qpgevent.socket")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "qpgevent" not in result.stderr, result.stderr  # no warning about our units either
    service = (ROOT / "contrib" / "qpgevent.service").read_text()
    for setting in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=",
                    "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n"):
        assert setting in service


def test_socket_named_smtps_needs_tls(config, listener):
    """FileDescriptorName=smtps (LISTEN_FDNAMES) makes an implicit-TLS listener: without the tls plugin, exit 78."""
    result = subprocess.run([*launched(listener.fileno()), "--config-dir", str(config)], pass_fds=[listener.fileno()],
                            env=dict(os.environ, LISTEN_FDNAMES="smtps"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "needs the tls plugin" in result.stderr, result.stderr


def test_operations_guide_shows_the_shipped_units():
    """docs/operations.md quotes contrib/'s unit files as they are, not an older copy."""
    guide = (ROOT / "docs" / "operations.md").read_text().split("## Running under systemd", 1)[1]
    for name in ("qpgevent.service", "qpgevent.socket"):
        assert "```ini\n" + (ROOT / "contrib" / name).read_text() + "```" in guide, name
