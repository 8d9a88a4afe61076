"""Test helpers for the core and for plugin authors.

``TestSession`` runs a real session in memory (no sockets)::

    smtpd = make_smtpd(tmp_path, plugins=["rcpt_ok", "queue/maildir ./mail"], config={"me": "mx.test"})
    s = TestSession(smtpd)
    assert s.command("EHLO client.test")[0].code == 250

``LiveServer`` runs ``bin/qpsmtpd-server`` on a free loopback port for
end-to-end tests with smtplib or swaks.
"""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from .connection import Connection
from .plugin import Plugin
from .constants import OK
from .smtp import Session
from .smtpd import Smtpd
from .transport import MemoryTransport

ROOT = Path(__file__).resolve().parent.parent
_REPLY_LINE = re.compile(rb"(\d{3})([ -])(.*)")


class Reply(NamedTuple):
    """One SMTP reply as the client sees it."""

    code: int
    lines: List[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def status(self) -> Optional[str]:
        """The RFC 3463 enhanced status code of the first line, if any."""
        found = re.match(r"([245]\.\d{1,3}\.\d{1,3}) ", self.lines[0] + " ")
        return found.group(1) if found else None

    def __str__(self) -> str:
        last = len(self.lines) - 1
        return "\n".join("%d%s%s" % (self.code, " " if i == last else "-", line) for i, line in enumerate(self.lines))


def parse_replies(raw: bytes) -> List[Reply]:
    """Split what the server wrote into replies; raises ValueError on a malformed line."""
    replies, lines = [], []
    for line in raw.split(b"\r\n")[:-1]:
        match = _REPLY_LINE.fullmatch(line)
        if not match:
            raise ValueError("malformed reply line %r" % line)
        lines.append(match.group(3).decode("utf-8", "surrogateescape"))
        if match.group(2) == b" ":
            replies.append(Reply(int(match.group(1)), lines))
            lines = []
    if lines or not raw.endswith(b"\r\n") and raw:
        raise ValueError("unterminated reply %r" % raw)
    return replies


def read_reply(sock: socket.socket, timeout: float = 10.0) -> Reply:
    """Read one whole reply (every line of it) from a client socket."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] != b" ":
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection after %r" % data)
        data += chunk
    return parse_replies(data)[0]


class RawClient:
    """A byte-level SMTP client for tests: whole replies, what arrived beyond them kept; can switch to TLS.

    Unlike smtplib it sends exactly the bytes it is given and shows exactly
    what the server answered, in order, however it was split.
    """

    def __init__(self, address: tuple, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply:
        """The next complete reply; what follows it stays in ``buffer``."""
        while True:
            end = 0
            for line in self.buffer.split(b"\r\n")[:-1]:
                end += len(line) + 2
                if line[3:4] == b" ":
                    raw, self.buffer = self.buffer[:end], self.buffer[end:]
                    return parse_replies(raw)[0]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server; unread: %r" % self.buffer)
            self.buffer += chunk

    def command(self, line: str) -> Reply:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def start_tls(self, context: Any, server_hostname: str = "127.0.0.1") -> None:
        """Wrap the socket in TLS; the server must have sent nothing after its 220 (CVE-2011-0411 in reverse)."""
        assert self.buffer == b"", "server sent more after its 220: %r" % self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def read_to_eof(self, timeout: Optional[float] = None) -> bytes:
        """Every byte not read yet, up to the server's close or reset; raises if it stays open past ``timeout``."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        data, self.buffer = self.buffer, b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except ConnectionResetError:
            return data  # the server closed with our unread bytes in its buffer

    def replies_until_closed(self) -> List[Reply]:
        """Every reply up to the server's close (or reset); raises if one is malformed."""
        return parse_replies(self.read_to_eof())

    def close(self) -> None:
        self.sock.close()


def end_process(process: Optional[subprocess.Popen], timeout: float = 10.0) -> None:
    """Stop a child process that may still run: SIGTERM, then SIGKILL if it outlasts ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate: Callable[[], Any], seconds: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``seconds`` have passed; returns its last verdict."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class QueueCapture:
    """A queue plugin stand-in: ``mock_hook("queue", capture)`` keeps what a real queue would write.

    ``messages`` holds header and body as ``message_blocks()`` gives them (LF
    line ends; a BINARYMIME message exactly as received) without the core's
    Received line (kept apart in ``received``), ``envelopes`` the sender,
    recipients and DSN data,
    ``spooled`` whether the message had gone to a spool file.
    """

    def __init__(self) -> None:
        self.messages: List[bytes] = []
        self.received: List[str] = []
        self.envelopes: List[tuple] = []
        self.spooled: List[bool] = []

    def __call__(self, plugin: Any, transaction: Any) -> int:
        # The core's Received is the first one; our Authentication-Results and the data_post
        # plugins' fields (X-HELO, ...) may have been prepended above it.
        received = transaction.header.get_all("Received")
        assert received, "the core's Received line is missing"
        self.received.append(received[0])
        transaction.header.delete("Received", 0)
        self.messages.append(b"".join(transaction.message_blocks()))
        self.envelopes.append((transaction.sender, list(transaction.recipients), dict(transaction.dsn),
                               [dict(r.notes.get("dsn", {})) for r in transaction.recipients]))
        self.spooled.append(transaction.body_fh is not None)
        return OK


def capturing_session(tmp_path: Union[str, Path], plugins: Sequence[str], config: Optional[Dict[str, Any]] = None,
                      remote_ip: str = "127.0.0.1") -> Tuple["TestSession", QueueCapture]:
    """A TestSession on a fresh daemon whose queue is a QueueCapture: (session, capture)."""
    session = TestSession(make_smtpd(tmp_path, plugins=plugins, config=config), remote_ip=remote_ip)
    capture = QueueCapture()
    session.mock_hook("queue", capture)
    return session, capture


def accept_all(plugin: Any, transaction: Any, *args: Any, **params: Any) -> int:
    """A hook function that says OK to everything (e.g. every recipient)."""
    return OK


# The published 2023 SMTP smuggling variants (CVE-2023-51765 class): line ends that some
# servers take for the end of DATA.  Only CRLF.CRLF may end a message.
SMUGGLING_VECTORS = {
    "lf.lf": b"\n.\n",
    "lf.crlf": b"\n.\r\n",
    "cr.crlf": b"\r.\r\n",
    "crlf.cr": b"\r\n.\r",
    "crlf.lf": b"\r\n.\n",
    "lf.cr": b"\n.\r",
    "bare-cr": b"\r",
    "bare-lf": b"\n",
}


def write_config(directory: Union[str, Path], values: Dict[str, Union[str, Sequence[str]]]) -> Path:
    """Write config files: ``{"me": "mx.test", "rcpthosts": ["a.test", "b.test"]}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        lines = [value] if isinstance(value, str) else list(value)
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join("%s\n" % line for line in lines))
    return directory


def make_smtpd(tmp_path: Union[str, Path], plugins: Sequence[str] = (), config: Optional[Dict[str, Any]] = None) -> Smtpd:
    """A daemon with its own config dir under ``tmp_path`` holding ``plugins`` and ``config``."""
    values = {"me": "mx.test", "spool_dir": str(Path(tmp_path) / "spool"), "plugins": list(plugins)}
    values.update(config or {})
    return Smtpd(write_config(Path(tmp_path) / "config", values))


class TestSession:
    """An in-memory session: send commands, get back every reply each one caused."""

    __test__ = False  # not a pytest test class

    def __init__(self, smtpd: Smtpd, remote_ip: str = "127.0.0.1", remote_host: str = "localhost",
                 local_port: int = 25, greet: bool = True, sock: Optional[socket.socket] = None) -> None:
        self.smtpd = smtpd
        self.transport = MemoryTransport()
        connection = Connection(remote_ip, 40000, "127.0.0.1", local_port, remote_host=remote_host)
        self.session = Session(smtpd, self.transport, connection)
        self.session.socket = sock  # for plugins that select() on the client socket
        self.logged: List[tuple] = []
        self.greeting: List[Reply] = []
        if greet:
            self.start()

    def start(self, **pre_connection: Any) -> List[Reply]:
        """Run pre-connection (with these keywords, e.g. ``max_conn_ip``) and connect; returns the greeting."""
        self.session.start(**pre_connection)
        self.greeting = self._take()
        return self.greeting

    @property
    def transaction(self):
        return self.session.transaction

    @property
    def connection(self) -> Connection:
        """The session's connection: XCLIENT replaces it."""
        return self.session.connection

    @property
    def closed(self) -> bool:
        return self.session.closed

    def _take(self) -> List[Reply]:
        return parse_replies(self.transport.take())

    def send(self, data: Union[bytes, str]) -> List[Reply]:
        """Feed raw bytes as the client would send them; return the replies they caused."""
        self.session.feed(data if isinstance(data, bytes) else data.encode("utf-8"))
        return self._take()

    def command(self, line: str) -> List[Reply]:
        """Send one command line (CRLF added)."""
        return self.send(line + "\r\n")

    def data(self, message: Union[str, bytes]) -> List[Reply]:
        """DATA, then ``message`` (LF or CRLF lines, dot-stuffed here), then the final dot.

        Returns the replies after the 354, or the refusal of DATA itself.
        """
        first = self.command("DATA")
        if not first or first[-1].code != 354:
            return first
        return self.send(encode_message(message))

    def send_message(self, sender: str, recipients: Iterable[str], message: Union[str, bytes],
                     helo: str = "client.test") -> List[Reply]:
        """EHLO (if needed), MAIL, RCPT..., DATA; returns every reply."""
        replies = []
        if not self.connection.hello:
            replies += self.command("EHLO %s" % helo)
        replies += self.command("MAIL FROM:<%s>" % sender)
        for recipient in recipients:
            replies += self.command("RCPT TO:<%s>" % recipient)
        return replies + self.data(message)

    def eof(self) -> List[Reply]:
        self.session.eof()
        return self._take()

    def timeout(self) -> List[Reply]:
        self.session.timeout()
        return self._take()

    def mock_hook(self, hook: str, function: Callable, name: str = "___MockHook___") -> None:
        """Run ``function(self_plugin, transaction, *args)`` first for ``hook``.

        Mocks are registered on the daemon, so they apply to every session of
        this ``smtpd``: build a fresh one per test (``make_smtpd``).
        """
        mock = Plugin(name, None, [], self.smtpd, "<mock>")  # so the function can use self.qp, self.log, ...
        self.smtpd.registry.register(hook, mock, function, prepend=True)

    def unmock_hook(self, hook: str, name: str = "___MockHook___") -> None:
        callbacks = self.smtpd.registry.callbacks.get(hook, [])
        self.smtpd.registry.callbacks[hook] = [cb for cb in callbacks if cb.plugin.name != name]
        if not self.smtpd.registry.callbacks[hook]:
            del self.smtpd.registry.callbacks[hook]

    def mock_config(self, **values: Any) -> None:
        """Answer ``config(name)`` from ``values`` before the files (``max_rcpt=3``)."""
        def config_hook(plugin, transaction, name):
            if name in values:
                value = values[name]
                return (OK, *(value if isinstance(value, (list, tuple)) else [value]))
            return None
        self.mock_hook("config", config_hook, name="___MockConfig___")

    def capture_log(self) -> List[tuple]:
        """Record every log line as ``(level, hook, plugin, message)`` in ``self.logged``."""
        def logging_hook(plugin, transaction, level, hook, plugin_name, message):
            self.logged.append((level, hook, plugin_name, message))
            return OK
        self.mock_hook("logging", logging_hook, name="___MockLog___")
        self.smtpd.log_threshold = 7
        return self.logged


def encode_message(message: Union[str, bytes]) -> bytes:
    """A message as DATA bytes: CRLF line ends, leading dots doubled, ``.`` line at the end."""
    if isinstance(message, str):
        message = message.encode("utf-8")
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LiveServer:
    """``bin/qpsmtpd-server`` on a free loopback port, for tests with real clients.

    Use as a context manager; ``stderr`` holds what the server printed once it has stopped.
    """

    def __init__(self, config_dir: Union[str, Path, None], args: Sequence[str] = (), host: str = "127.0.0.1",
                 env: Optional[Dict[str, str]] = None, cwd: Union[str, Path, None] = None,
                 program: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> None:
        """``config_dir`` None: the server's own default; ``program``: another daemon command (an installed one);
        ``pass_fds``: descriptors the daemon inherits (a listening socket, as systemd passes one)."""
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self.program = list(program) or [sys.executable, str(ROOT / "bin" / "qpsmtpd-server")]
        self._log_path = (self.config_dir.parent if self.config_dir else Path(cwd or ".")) / "server-%d.log"
        self.host = host
        self.port = free_port(host)
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.pass_fds = tuple(pass_fds)
        self.process: Optional[subprocess.Popen] = None
        self.stderr = ""

    @property
    def address(self) -> tuple:
        return self.host, self.port

    def start(self, wait: float = 15.0, tries: int = 3) -> "LiveServer":
        """Start and wait until it accepts; a port taken meanwhile by someone else is retried."""
        for attempt in range(tries):
            try:
                return self._start(wait)
            except RuntimeError:
                if "cannot listen" not in self.stderr or attempt == tries - 1:
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start(self, wait: float) -> "LiveServer":
        listen = "[%s]" % self.host if ":" in self.host else self.host
        config = ["--config-dir", str(self.config_dir)] if self.config_dir else []
        command = [*self.program, *config, "-l", "%s:%d" % (listen, self.port), "-H", *self.args]
        env = dict(os.environ, **(self.env or {}))
        self._log = open(str(self._log_path) % self.port, "w+")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, cwd=self.cwd, pass_fds=self.pass_fds)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError("server exited with %s:\n%s" % (self.process.returncode, self.stderr))
            if self._answers(deadline - time.monotonic()):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not listen within %ss:\n%s" % (wait, self.stderr))

    def _answers(self, seconds: float) -> bool:
        """True once a connection gets a first reply line: the socket is bound before the
        config is loaded, so a mere connect would count a server that is about to fail.

        The probe starts with ``PROXY UNKNOWN`` so that a server trusting loopback
        as a proxy (``proxy_hosts``) answers too; any other server greets first.
        """
        try:
            with socket.create_connection(self.address, timeout=max(seconds, 0.1)) as probe:
                probe.sendall(b"PROXY UNKNOWN\r\n")
                return probe.recv(1) != b""
        except OSError:
            return False

    @property
    def log(self) -> str:
        """What the server has printed so far."""
        return Path(str(self._log_path) % self.port).read_text()

    def stop(self, timeout: float = 15.0) -> int:
        end_process(self.process, timeout)
        if not self._log.closed:
            self._log.seek(0)
            self.stderr = self._log.read()
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RedisServer:
    """A throw-away ``redis-server`` on a free 127.0.0.1 port, keeping nothing on disk."""

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(self._answers, 10):
            self.stop()
            raise RuntimeError("redis-server did not answer on port %d within 10 s" % self.port)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        end_process(self.process)
