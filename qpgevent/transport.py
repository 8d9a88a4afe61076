"""Where a session's replies go: a socket, stdin/stdout, or memory (tests)."""
import os
import socket as _socket
import sys
import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

import gevent
from gevent import Timeout as _Timeout, select as _select


class IdleSweeper:
    """Ends reads and writes that waited too long, from one greenlet.

    Checking every waiting socket once a second costs less than arming a
    timer for every read of every session, and holds no timer per idle session.

    .. caution:: an exception may be thrown into a waiting greenlet only from
       the hub (gevent's rule: from any other greenlet the thrower is never
       scheduled again).  The sweeper therefore only schedules ``_expire`` on
       the hub's loop, which checks that the same wait is still going on.
    """

    def __init__(self, interval: float = 1.0, log: Optional[Callable[[str], None]] = None) -> None:
        self.interval = interval
        self.waiting: Dict[Any, Tuple[float, Any]] = {}  # transport: (deadline, waiting greenlet)
        self.log = log or (lambda message: sys.stderr.write(message + "\n"))
        self._greenlet: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.sweep(time.monotonic())
            except Exception:  # one bad round must not leave every later wait unbounded
                self.log("idle sweeper: " + traceback.format_exc())

    def sweep(self, now: float) -> None:
        """End every wait whose deadline has passed."""
        for transport, entry in list(self.waiting.items()):
            if entry[0] <= now:
                self._schedule(transport, entry, TimeoutError("no data for too long"))

    def interrupt(self, transport: Any, exc: BaseException) -> None:
        """Raise ``exc`` in whoever waits on ``transport`` now (if anyone)."""
        entry = self.waiting.get(transport)
        if entry is not None:
            self._schedule(transport, entry, exc)

    def _schedule(self, transport: Any, entry: Tuple[float, Any], exc: BaseException) -> None:
        gevent.get_hub().loop.run_callback(self._expire, transport, entry, exc)

    def _expire(self, transport: Any, entry: Tuple[float, Any], exc: BaseException) -> None:
        """Runs in the hub: throw ``exc`` into the waiter, unless that wait has ended meanwhile."""
        if self.waiting.get(transport) is entry:
            del self.waiting[transport]
            entry[1].throw(exc)


class SocketTransport:
    """A connected client socket; with a ``sweeper``, its waits are bounded by it instead of socket timers."""

    def __init__(self, sock: _socket.socket, sweeper: Optional[IdleSweeper] = None) -> None:
        self.socket = sock
        self.sweeper = sweeper
        self.timeout = 300.0  # the last read timeout also bounds a blocked write
        if sweeper is not None:
            sock.settimeout(None)
        # gevent's socket waits on its own read watcher; gevent >= 1.0 has had these two
        # names.  Without them (or once TLS buffers data the fd does not show) reads just try first.
        self._wait_first = hasattr(sock, "_wait") and hasattr(sock, "_read_event")
        self._drained = True  # the last read emptied the kernel's buffer: the next one would find nothing

    def write(self, data: bytes) -> None:
        """Send ``data``; TimeoutError when the client has not taken it all within ``timeout`` seconds."""
        if self._wait_first:
            # A plain gevent socket: one send() that never waits nearly always
            # takes a whole reply, with no deadline to arm.
            try:
                sent = self.socket.send(data, 0, 0.0)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        # What did not fit (or TLS, whose send may wait) goes under the session's deadline.
        self._watched(self.socket.sendall, data, self.timeout)

    def interrupt(self, exc: BaseException) -> None:
        """Raise ``exc`` in the session's greenlet if it is waiting for the client now (a stopping server)."""
        if self.sweeper is not None:
            self.sweeper.interrupt(self, exc)

    def _watched(self, call: Callable, arg: Any, timeout: Optional[float]) -> Any:
        """``call(arg)``, ended by TimeoutError when it waits longer than ``timeout`` seconds.

        A plain try/finally: this runs for every read, where a context manager costs a tenth of the time.
        """
        sweeper = self.sweeper
        if sweeper is None:
            self.socket.settimeout(timeout)
            try:
                return call(arg)
            except _socket.timeout:
                raise TimeoutError from None
        if self.socket.gettimeout() is not None:
            self.socket.settimeout(None)  # a TLS handshake left its own deadline on the socket
        sweeper.waiting[self] = (time.monotonic() + (timeout or 1e9), gevent.getcurrent())
        try:
            return call(arg)
        finally:
            sweeper.waiting.pop(self, None)

    def start_tls(self, context, timeout: float) -> None:
        """Turn the connection into TLS (server side); raises OSError/ssl.SSLError on failure."""
        self.socket = handshake(self.socket, context, timeout)
        self._wait_first = False  # TLS may hold decrypted data the socket does not show as readable

    def recv(self, size: int, timeout: Optional[float]) -> bytes:
        """Bytes from the client; b"" at its EOF; TimeoutError after ``timeout`` seconds of silence."""
        if timeout is not None:
            self.timeout = timeout
        return self._watched(self._read, size, timeout)

    def _read(self, size: int) -> bytes:
        """A read that, when the buffer was empty last time, waits before it tries.

        A client answers a reply only after it has read it, so a read right
        after one nearly always fails with EAGAIN: gevent would make that
        system call and raise and catch an exception (kept alive for all the
        time an idle session waits) before it waits.  Waiting first saves
        both: about a tenth of the server's CPU per small message.
        """
        sock = self.socket
        if self._drained and self._wait_first:
            sock._wait(sock._read_event)
        data = sock.recv(size)
        self._drained = len(data) < size
        return data

    def close(self) -> None:
        try:
            self.socket.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()


def handshake(sock: _socket.socket, context, timeout: float) -> _socket.socket:
    """The TLS-wrapped socket after a server-side handshake that must end within ``timeout`` seconds.

    The deadline covers the whole handshake, so a client trickling a byte at a
    time cannot hold the session open.  On failure the connection is closed
    (its state is unknown; nothing more can be said on it) and OSError
    (TimeoutError for the deadline) is raised.
    """
    sock.settimeout(timeout)
    wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        with _Timeout(timeout, TimeoutError("TLS handshake not finished within %g s" % timeout)):
            wrapped.do_handshake()
    except BaseException:  # a plugin timeout or a kill too: the half-done TLS socket must not leak
        wrapped.close()
        raise
    return wrapped


class StdioTransport:
    """inetd / tcpserver: the client is on file descriptors 0 and 1.

    Both are made non-blocking, so that every read and every write waits in
    ``select`` with a deadline: a client that stops reading cannot hold the
    process for ever.
    """

    def __init__(self, read_fd: int = 0, write_fd: int = 1) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.timeout = 300.0  # the last read timeout also bounds a blocked write
        self.tls: Optional[_socket.socket] = None
        self._made_nonblocking = []  # set back on close: a terminal is shared with the shell that started us
        for fd in {read_fd, write_fd}:
            try:
                if os.get_blocking(fd):
                    os.set_blocking(fd, False)
                    self._made_nonblocking.append(fd)
            except OSError:
                pass  # a closed descriptor: the first read or write says so
        try:
            self.socket: Optional[_socket.socket] = _socket.socket(fileno=os.dup(read_fd))
            self.socket.getsockname()
        except OSError:
            self.socket = None  # a pipe or a terminal, not a socket

    def start_tls(self, context, timeout: float) -> None:
        """TLS over the inetd socket; impossible on pipes."""
        if self.socket is None:
            raise OSError("standard input is not a socket: TLS is not possible")
        self.tls = self.socket = handshake(self.socket, context, timeout)

    def write(self, data: bytes) -> None:
        """Write all of ``data``; TimeoutError when the client has not taken it all within ``timeout`` seconds."""
        if self.tls is not None:
            self.tls.settimeout(self.timeout)
            try:
                self.tls.sendall(data)
            except _socket.timeout:
                raise TimeoutError from None
            return
        view = memoryview(data)
        deadline = None
        while view:
            try:
                view = view[os.write(self.write_fd, view):]
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                _, writable, _ = _select.select([], [self.write_fd], [], max(deadline - now, 0.0))
                if not writable:
                    raise TimeoutError("the client read no reply for %g s" % self.timeout) from None

    def recv(self, size: int, timeout: Optional[float]) -> bytes:
        if timeout is not None:
            self.timeout = timeout
        if self.tls is not None:
            self.tls.settimeout(timeout)
            try:
                return self.tls.recv(size)
            except _socket.timeout:
                raise TimeoutError from None
        while True:
            try:
                return os.read(self.read_fd, size)
            except BlockingIOError:
                readable, _, _ = _select.select([self.read_fd], [], [], timeout)
                if not readable:
                    raise TimeoutError from None

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        for fd in (self.read_fd, self.write_fd):
            try:
                if fd in self._made_nonblocking:
                    os.set_blocking(fd, True)
                os.close(fd)
            except OSError:
                pass


class MemoryTransport:
    """Collects what the session writes; for tests and for in-process use."""

    socket = None

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise BrokenPipeError("transport closed")
        self.written += data

    def start_tls(self, context, timeout: float) -> None:
        raise OSError("an in-memory session cannot do TLS")

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def close(self) -> None:
        self.closed = True
