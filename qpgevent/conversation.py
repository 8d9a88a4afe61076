"""Drives one Session over a transport: greet, read with a deadline, feed, and end it.

The session (``qpgevent.smtp``) only turns bytes into replies; every wait on
the client is here: the read timeouts (``timeout``, ``timeoutsmtpd``,
``max_session_seconds``) and a stop asked for by the server, which the
session's own greenlet carries out while it waits for the client or once its
hook has returned, never in the middle of one.
"""
import time
from typing import Any, Optional, Tuple

DEFAULT_TIMEOUT = 300.0


class ShuttingDown(ConnectionAbortedError):
    """Raised in a session's greenlet that waits for its client while the server stops.

    An OSError, so that a write it interrupts ends the session like any failed write.
    """


def _seconds(value: Optional[str], default: float) -> float:
    try:
        return float(value or default)
    except ValueError:
        return default


class Conversation:
    """One client's conversation: runs in that client's greenlet until the session is closed."""

    def __init__(self, session: Any, transport: Any) -> None:
        self.session = session
        self.transport = transport
        self.stopping = False
        self._timeouts: Optional[Tuple[float, float]] = None  # (commands, data) seconds
        self._deadline: Optional[float] = None  # time.monotonic() when max_session_seconds ends the session

    def run(self, early: bytes = b"", **pre_connection: Any) -> None:
        """Serve the whole conversation; ``early`` is what the client sent before it (after a PROXY header).

        ``pre_connection`` (``max_conn_ip``, ``child_addrs``) goes to the pre-connection hook.
        """
        session = self.session
        session.start(**pre_connection)
        del pre_connection  # not kept for the session's lifetime
        if early and not session.closed:
            session.feed(early)
        recv = self.transport.recv
        while not session.closed:
            if self.stopping:  # set while a hook ran: its reply is out, now the 421
                session.shutdown()
                break
            try:
                data = recv(65536, self.read_timeout(session.in_data()))
            except ShuttingDown:
                session.shutdown()
                break
            except TimeoutError:
                session.timeout(self._deadline is not None and time.monotonic() >= self._deadline)
                break
            except OSError:
                data = b""
            if not data:
                session.eof()
                break
            session.feed(data)
        session.disconnect()  # the end-of-session hooks run once, also when a failed write closed the session

    def read_timeout(self, in_data: bool) -> float:
        """Seconds to wait for the client: ``timeoutsmtpd`` (else ``timeout``) for commands, ``timeout`` in DATA/BDAT.

        Never past ``max_session_seconds`` (counted from the first read; 0 or
        absent: no limit), which bounds a client that sends just enough, just
        in time, to keep its slot for ever.  The config is read once per session.
        """
        if self._timeouts is None:
            session = self.session
            data = _seconds(session.config("timeout"), DEFAULT_TIMEOUT)
            self._timeouts = (_seconds(session.config("timeoutsmtpd"), data), data)
            limit = _seconds(session.config("max_session_seconds"), 0.0)
            if limit > 0:
                self._deadline = time.monotonic() + limit
        timeout = self._timeouts[1 if in_data else 0]
        if self._deadline is not None:
            timeout = max(min(timeout, self._deadline - time.monotonic()), 0.001)
        return timeout

    def stop(self) -> None:
        """End the session with ``421``: at once if it waits for its client (to read or to write), else
        once the command or hook it is in has finished and its reply is out.  Call from any greenlet."""
        self.stopping = True
        interrupt = getattr(self.transport, "interrupt", None)
        if interrupt is not None:
            interrupt(ShuttingDown("the server is stopping"))
