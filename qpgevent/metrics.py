"""Prometheus metrics for ``qpsmtpd-server --metrics ADDR:PORT`` (prometheus-client).

Off unless ``enable`` has run: until then nothing imports prometheus_client,
every function below returns at once, and the hottest callers (each plugin
call, each reply) test ``on`` first so that they do not even call.

Every process counts for itself into files of a private directory (the
library's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), so with
``--workers N`` the workers forked after ``enable`` count too; the process
that called ``enable`` (the master, or the single process of ``--workers 1``)
answers ``GET /metrics`` by adding up those files.  The master tells us about
each worker it reaps (``process_dead``) so that a dead worker's open
connections stop counting; its counters stay in the sums.

The metrics:

=========================================  ======================================================
``qpgevent_connections_open``              gauge: sessions being served now
``qpgevent_connections_total``             connections accepted (those refused below included)
``qpgevent_connections_refused_total``     refused by a limit; ``reason``: ``limit_connections``
                                           (``-c``) or ``max_from_ip`` (``-m``)
``qpgevent_messages_total``                answers that decide a message or one of its recipients:
                                           ``outcome`` (``accepted`` 2xx, ``deferred`` 4xx,
                                           ``rejected`` 5xx), ``code`` (the reply code), ``stage``
                                           (``mail``, ``rcpt``, ``data``, ``data_post`` for the end
                                           of the data, ``queue``) and ``plugin`` (the one that
                                           answered, or failed; ``core`` when no plugin decided)
``qpgevent_received_bytes_total``          size of the messages received in full with DATA or BDAT
                                           (as stored: dots unstuffed, one byte per line end)
``qpgevent_tls_sessions_total``            TLS handshakes completed (STARTTLS or smtps); ``version``
``qpgevent_auth_total``                    AUTH attempts; ``result``: ``success``, ``failure``, or
                                           ``tempfail`` (a checker failed or said DENYSOFT)
``qpgevent_plugin_seconds``                histogram of each plugin call, by ``hook`` and ``plugin``
``qpgevent_state_unavailable_total``      calls to the state store (config/storage) that failed, by
                                           ``plugin``; karma and greylisting then let the client through
=========================================  ======================================================

Only refusals count at ``mail`` and ``rcpt`` (a 250 there accepts nothing
yet); ``accepted`` comes from the end of the data or the queue.  A plugin
that answers itself and returns DONE is counted with the code it sent.

.. caution:: The endpoint runs in a native thread with plain blocking sockets
   (never gevent's): the master sleeps in an unpatched ``select`` that no
   greenlet would ever interrupt.  A forked child closes its copies of the
   endpoint's sockets at once (``os.register_at_fork``).
"""
import _socket
import atexit
import errno
import os
import shutil
import signal
import tempfile
from time import perf_counter
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from . import replies as R
from .constants import DECLINED, DONE, OK
from .errors import ConfigError

on = False  # True once ``enable`` ran in this process or in the one that forked it

REQUEST_TIMEOUT = 5.0  # seconds a scraper has to send its request
MAX_REQUEST = 16384
PLUGIN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0, 60.0)

# Hooks whose answer decides a message or a recipient, and the stage each one reports.
STAGE_OF_HOOK = {"mail": "mail", "rcpt": "rcpt", "data": "data", "data_headers_end": "data_post",
                 "data_post": "data_post", "queue_pre": "queue", "queue": "queue"}
OUTCOME_OF_CLASS = {2: "accepted", 4: "deferred", 5: "rejected"}


class Counted(NamedTuple):
    """How a core reply counts: its stage when no plugin decided it, and the hooks whose plugins may have."""

    stage: Optional[str]
    hooks: Tuple[str, ...]


# The replies that answer for a message or a recipient.  Equal replies are one
# key (QUEUE_DENY is DATA_POST_DENY), so their entries must say the same; the
# stage then comes from the hook that decided.
COUNTED = {
    R.MAIL_DENY: Counted("mail", ("mail",)),
    R.MAIL_DENYSOFT: Counted("mail", ("mail",)),
    R.MAIL_DENYSOFT_DISCONNECT: Counted("mail", ("mail",)),
    R.MAIL_TOO_BIG: Counted("mail", ()),
    R.RCPT_DENY: Counted("rcpt", ("rcpt",)),
    R.RCPT_DENYSOFT: Counted("rcpt", ("rcpt",)),
    R.RCPT_DENY_DISCONNECT: Counted("rcpt", ("rcpt",)),
    R.RCPT_DENYSOFT_DISCONNECT: Counted("rcpt", ("rcpt",)),
    R.RCPT_UNDECIDED: Counted("rcpt", ()),
    R.RCPT_TOO_MANY: Counted("rcpt", ()),
    R.DATA_DENY: Counted("data", ("data", "data_headers_end")),
    R.DATA_DENYSOFT: Counted("data", ("data",)),
    R.DATA_HEADERS_DENYSOFT: Counted("data_post", ("data_headers_end",)),
    R.DATA_TOO_BIG: Counted("data_post", ()),
    R.DATA_LINE_TOO_LONG: Counted("data_post", ()),
    R.DATA_POST_DENY: Counted(None, ("data_post", "queue")),
    R.DATA_POST_DENYSOFT: Counted(None, ("data_post", "queue")),
    R.QUEUE_DENY: Counted(None, ("data_post", "queue")),
    R.QUEUE_DENYSOFT: Counted(None, ("data_post", "queue")),
    R.QUEUE_OK: Counted("queue", ("queue",)),
    R.QUEUE_DECLINED: Counted("queue", ("queue_pre", "queue")),
    R.PLUGIN_FAILED: Counted(None, tuple(STAGE_OF_HOOK)),  # counts only after a plugin of those hooks failed
}
REFUSAL_REASONS = {R.TOO_MANY_CONNECTIONS: "limit_connections", R.TOO_MANY_FROM_IP: "max_from_ip"}


class Decision(NamedTuple):
    """The last plugin of a deciding hook that answered (or failed) in a session."""

    hook: str
    plugin: str
    failed: bool


class Metrics:
    """The metric objects, and caches of their labelled children (``labels()`` is slow)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram
        self.connections_open = Gauge("qpgevent_connections_open", "Sessions being served now.",
                                      multiprocess_mode="livesum", registry=None)
        self.connections = Counter("qpgevent_connections_total", "Connections accepted, refused ones included.",
                                   registry=None)
        self.refused = Counter("qpgevent_connections_refused_total", "Connections refused by a connection limit.",
                               ["reason"], registry=None)
        self.messages = Counter("qpgevent_messages_total",
                                "Replies that accept, defer or reject a message or a recipient.",
                                ["outcome", "code", "stage", "plugin"], registry=None)
        self.received = Counter("qpgevent_received_bytes_total", "Bytes of messages received in full (DATA, BDAT).",
                                registry=None)
        self.tls = Counter("qpgevent_tls_sessions_total", "TLS handshakes completed.", ["version"], registry=None)
        self.auth = Counter("qpgevent_auth_total", "AUTH attempts by result.", ["result"], registry=None)
        self.plugin_seconds = Histogram("qpgevent_plugin_seconds", "Time spent in each plugin call.",
                                        ["hook", "plugin"], buckets=PLUGIN_BUCKETS, registry=None)
        self.state_unavailable = Counter("qpgevent_state_unavailable_total",
                                         "State store calls that failed (Redis down or slow, sqlite locked).",
                                         ["plugin"], registry=None)
        self.children: Dict[tuple, Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found


_metrics: Optional[Metrics] = None


class Endpoint:
    """The HTTP side: the listening socket, and the scraper being answered."""

    def __init__(self, listener: Any, directory: str) -> None:
        self.listener = listener
        self.client: Any = None
        self.directory = directory
        self.owner = os.getpid()

    def close_in_child(self) -> None:
        """After a fork: the child must not hold the port, nor a scraper's connection, open."""
        for sock in (self.listener, self.client):
            if sock is not None:
                sock.close()
        self.listener = self.client = None


_endpoint: Optional[Endpoint] = None


# -- start-up ------------------------------------------------------------------------
def bind(host: str, port: int) -> Any:
    """Listen for scrapers (before privileges are dropped); ConfigError if the address is taken."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError("--metrics: cannot listen on %s port %d: %s" % (host, port, exc.strerror)) from None
    return sock


def enable(listener: Any) -> None:
    """Start counting in this process (and the ones it forks) and serve ``/metrics`` on ``listener``.

    Call it once, in the process that will stay up (after ``--detach`` and
    after privileges were dropped: the files must be the running user's), and
    before the workers are forked.
    """
    global on, _metrics, _endpoint
    directory = tempfile.mkdtemp(prefix="qpgevent-metrics-")
    # The library picks its storage when first imported: the variable must come first.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    _metrics = Metrics()
    _endpoint = Endpoint(listener, directory)
    os.register_at_fork(after_in_child=_endpoint.close_in_child)
    atexit.register(_remove_directory, _endpoint)
    collector = MultiProcessCollector(None, path=directory)
    _start_thread(_serve, _endpoint, lambda: generate_latest(collector), CONTENT_TYPE_LATEST)
    on = True


def _remove_directory(endpoint: Endpoint) -> None:
    if os.getpid() == endpoint.owner:
        shutil.rmtree(endpoint.directory, ignore_errors=True)


def _start_thread(function: Any, *args: Any) -> None:
    """A native thread with every signal blocked: signals stay with the main thread, which expects them."""
    from gevent import monkey  # only with --metrics: the session's modules import no gevent
    start = monkey.get_original("_thread", "start_new_thread")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        start(function, args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


# -- the endpoint ------------------------------------------------------------------------
def _serve(endpoint: Endpoint, exposition: Callable[[], bytes], content_type: str) -> None:
    """Answer scrapers one at a time, for as long as the process lives."""
    from gevent import monkey
    sleep = monkey.get_original("time", "sleep")  # this thread has no gevent hub to sleep in
    while endpoint.listener is not None:
        try:
            fd, _ = endpoint.listener._accept()
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                return
            sleep(0.1)  # out of descriptors, say: try again soon, without spinning
            continue
        client = endpoint.client = _socket.socket(fileno=fd)
        try:
            client.settimeout(REQUEST_TIMEOUT)
            client.sendall(_answer(_read_request(client), exposition, content_type))
        except OSError:
            pass
        finally:
            client.close()  # before forgetting it: a fork in between must find it closed, not leak it
            endpoint.client = None


def _read_request(client: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < MAX_REQUEST:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _answer(request: bytes, exposition: Callable[[], bytes], content_type: str) -> bytes:
    """The HTTP/1.0 response to one request: the metrics for GET (or HEAD) of ``/metrics`` or ``/``."""
    words = request.split(b"\r\n", 1)[0].split()
    method = words[0] if words else b""
    path = words[1].split(b"?", 1)[0] if len(words) > 1 else b""
    if method not in (b"GET", b"HEAD"):
        status, body, content_type = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
    elif path not in (b"/metrics", b"/"):
        status, body, content_type = "404 Not Found", b"GET /metrics\n", "text/plain"
    else:
        try:
            status, body = "200 OK", exposition()
        except Exception as exc:  # a damaged file in the directory, say: say so, and stay up for the next scrape
            status, body, content_type = "500 Internal Server Error", ("%r\n" % exc).encode(), "text/plain"
    head = "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        status, content_type, len(body))
    return head.encode("ascii") + (b"" if method == b"HEAD" else body)


# -- what the core reports -----------------------------------------------------------------
def connection_accepted() -> None:
    if _metrics is not None:
        _metrics.connections.inc()


def connection_refused(reply: R.Reply) -> None:
    """A connection limit said ``reply`` (421) to a client."""
    if _metrics is not None:
        _metrics.child(_metrics.refused, REFUSAL_REASONS.get(reply, "other")).inc()


def session_opened() -> None:
    if _metrics is not None:
        _metrics.connections_open.inc()


def session_closed() -> None:
    if _metrics is not None:
        _metrics.connections_open.dec()


def data_received(size: int) -> None:
    if _metrics is not None:
        _metrics.received.inc(size)


def tls_started(version: Optional[str]) -> None:
    if _metrics is not None:
        _metrics.child(_metrics.tls, version or "unknown").inc()


def auth_result(result: str) -> None:
    """``success``, ``failure`` or ``tempfail``."""
    if _metrics is not None:
        _metrics.child(_metrics.auth, result).inc()


def process_dead(pid: int) -> None:
    """The master reaped worker ``pid``: its open connections are closed now."""
    if _metrics is not None and _endpoint is not None:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid, _endpoint.directory)


def state_unavailable(plugin: str) -> None:
    """``plugin`` could not use the state store (and went on without it)."""
    if _metrics is not None:
        _metrics.child(_metrics.state_unavailable, plugin).inc()


def plugin_called(hook: str, plugin: str, started: float) -> None:
    """A plugin call that began at ``perf_counter()`` = ``started`` has ended (or failed)."""
    if _metrics is not None:
        _metrics.child(_metrics.plugin_seconds, hook, plugin).observe(perf_counter() - started)


def hook_answered(session: Any, hook: str, result: Any) -> None:
    """``HookRegistry.run`` has ``result`` (a HookResult) for ``hook``: remember who decided."""
    if _metrics is None or hook not in STAGE_OF_HOOK or result.rc in (DECLINED, 0):
        return
    if result.rc == DONE:
        # The plugin queued its own answer: count its code, the reply will not pass through ``replied``.
        queued = getattr(session, "_out", None)
        if queued and queued[-1][:3].isdigit():
            _count(STAGE_OF_HOOK[hook], int(queued[-1][:3]), result.plugin)
    elif result.rc != OK or hook == "queue":
        # Elsewhere OK only lets the message go on (queue_pre OK, say): the answer comes from a later hook.
        session.metrics_decision = Decision(hook, result.plugin, False)


def plugin_failed(session: Any, hook: str, plugin: str) -> None:
    """A plugin of ``hook`` failed: the session answers 451 for it."""
    if _metrics is not None and hook in STAGE_OF_HOOK and session is not None:
        session.metrics_decision = Decision(hook, plugin, True)


def replied(session: Any, reply: R.Reply) -> None:
    """The session sends the registry reply ``reply``; count it if it decides a message or a recipient."""
    counted = COUNTED.get(reply)
    if counted is None or _metrics is None:
        return
    decision = getattr(session, "metrics_decision", None)
    session.metrics_decision = None
    if decision is not None and decision.hook in counted.hooks and decision.failed == (reply == R.PLUGIN_FAILED):
        _count(STAGE_OF_HOOK[decision.hook], reply.code, decision.plugin)
    elif counted.stage is not None:
        _count(counted.stage, reply.code, "core")


def _count(stage: str, code: int, plugin: str) -> None:
    outcome = OUTCOME_OF_CLASS.get(code // 100)
    if outcome is None or (outcome == "accepted" and stage not in ("data_post", "queue")):
        return
    _metrics.child(_metrics.messages, outcome, str(code), stage, plugin).inc()
