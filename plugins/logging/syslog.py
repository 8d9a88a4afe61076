"""logging/syslog: send log lines to the syslog daemon.

Arguments (as in qpsmtpd, all optional, in pairs)::

    logging/syslog [loglevel LEVEL] [priority P] [ident NAME] [facility F] [logsock TYPES] [socket WHERE]

For example::

    logging/syslog loglevel LOGINFO priority LOG_NOTICE
    logging/syslog facility local3 logsock udp socket 192.0.2.9:514

``loglevel``: the highest level sent, 0-7 or a name (``LOGINFO``); default
``LOGWARN``.  ``priority``: send every line at this syslog severity (``LOG_NOTICE``,
``notice`` or 0-7) instead of the one matching its level (LOGDEBUG is debug,
LOGINFO info ... LOGERROR err, LOGEMERG emerg).  ``ident``: the tag, default
``qpsmtpd`` (letters, digits, ``_-.``).  ``facility``: default ``mail``
(``LOG_MAIL``, ``local0`` ... ``local7``, ``daemon`` ...).  ``logsock``: ``unix``
(default: datagrams to a local socket) or ``udp`` (``inet`` is the same: UDP
datagrams to a syslog server); a comma list such as ``unix,udp`` uses the
first whose destination exists at start-up.  ``socket`` (our addition): where to
send, a socket path for ``unix`` (default ``/dev/log``) or ``HOST[:PORT]``
for ``udp`` (default ``127.0.0.1:514``).

Each line is one RFC 3164 datagram, ``<PRI>Mmm dd hh:mm:ss [host ]ident[pid]:
<connection id> (<hook>) <plugin>: <message>`` (the host name only over
UDP; the connection id only inside a session), cut at 8192 bytes.  The
datagrams are written by this plugin on a gevent socket, not through the C
``syslog()``, so a slow syslog daemon never stalls other sessions: a line
waits at most a second for room in the socket.

If the socket cannot be reached (no ``/dev/log`` at start-up, the daemon
stopped, its queue full) the line goes to stderr instead, with one notice
when that starts and one when syslog works again.  Logging never breaks a
session.

Config files: none.
"""
import errno
import os
import re
import socket as _stdlib_socket
import time

from gevent import socket
from gevent.lock import BoundedSemaphore

from qpgevent import DECLINED, LOGWARN, parse_log_level
from qpgevent.netlist import host_port
from qpgevent.smtpd import format_log_line, notice

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, **{"local%d" % n: 16 + n for n in range(8)},
}
SEVERITIES = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4, "notice": 5,
              "info": 6, "debug": 7}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_DATAGRAM = 8192
SEND_TIMEOUT = 1.0
_OPTIONS = ("loglevel", "priority", "ident", "facility", "logsock", "socket")


def register(self, qp, *args):
    if len(args) % 2:
        raise ValueError("arguments come in pairs, e.g. 'logging/syslog loglevel LOGINFO facility mail'")
    options = {}
    for key, value in zip(args[::2], args[1::2]):
        if key.lower() not in _OPTIONS:
            raise ValueError("unknown argument %r; the arguments are %s" % (key, ", ".join(_OPTIONS)))
        options[key.lower()] = value
    self.log_threshold = parse_log_level(options.get("loglevel", str(LOGWARN)))
    self.severity = parse_name(options["priority"], SEVERITIES, "priority") if "priority" in options else None
    self.facility = parse_name(options.get("facility", "mail"), FACILITIES, "facility")
    self.ident = options.get("ident", "qpsmtpd")
    if not re.fullmatch(r"[\w.-]+", self.ident):
        raise ValueError("ident %r may hold only letters, digits, '_', '-' and '.'" % self.ident)
    self.hostname = _stdlib_socket.gethostname().split(".")[0]
    self.family, self.address = choose_destination(options.get("logsock", "unix"), options.get("socket"))
    self.sock = None
    self.lock = BoundedSemaphore()  # one sender waits for room at a time; the others queue behind it
    self.failing = False
    if self.family == socket.AF_UNIX and not os.path.exists(self.address):
        self.failing = True
        notice("%s: %s does not exist (is a syslog daemon running?); logging to stderr until it does"
               % (self.name, self.address))


def parse_name(text, table, what):
    """``LOG_MAIL``, ``mail`` or a number, as the value in ``table``."""
    if text.isdigit() and int(text) in table.values():
        return int(text)
    name = text.lower()
    name = name[4:] if name.startswith("log_") else name
    if name not in table:
        raise ValueError("%s %r is unknown; use one of %s" % (what, text, ", ".join(sorted(table, key=table.get))))
    return table[name]


def choose_destination(logsock, where):
    """(address family, address) of the first usable socket type in ``logsock``."""
    kinds = [kind.strip().lower() for kind in logsock.split(",") if kind.strip()]
    if not kinds:
        raise ValueError("logsock is empty; use unix, udp or inet")
    for kind in kinds:
        if kind not in ("unix", "udp", "inet"):
            raise ValueError("logsock %r is not supported; use unix, udp or inet (or a comma list of them)" % kind)
    for kind in kinds[:-1]:
        if kind != "unix" or os.path.exists(where or "/dev/log"):
            break
    else:
        kind = kinds[-1]
    if kind == "unix":
        return socket.AF_UNIX, where or "/dev/log"
    return udp_address(where or "127.0.0.1:514")


def udp_address(where):
    """``HOST``, ``HOST:PORT``, ``[v6]`` or ``[v6]:PORT`` as (family, (host, port))."""
    try:
        host, port = host_port(where, 514)
    except ValueError:
        host = ""
    if not host:
        raise ValueError("socket %r for udp must be HOST, HOST:PORT or [IPv6]:PORT" % where)
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)


def hook_logging(self, transaction, level, hook, plugin, message):
    if level > self.log_threshold:
        return DECLINED
    session = self.qp
    connection = getattr(session, "connection", None)
    severity = level if self.severity is None else self.severity
    now = time.localtime()
    stamp = "%s %2d %s" % (MONTHS[now.tm_mon - 1], now.tm_mday, time.strftime("%H:%M:%S", now))
    host = "" if self.family == socket.AF_UNIX else self.hostname + " "
    words = [connection.id] if connection is not None else []
    if hook:
        words.append("(%s)" % hook)
    if plugin:
        words.append(plugin + ":")
    words.append(message)
    pri = self.facility * 8 + severity
    datagram = "<%d>%s %s%s[%d]: %s" % (pri, stamp, host, self.ident, os.getpid(), " ".join(words))
    try:
        with self.lock:
            send(self, datagram.encode("utf-8", "backslashreplace")[:MAX_DATAGRAM])
    except Exception as exc:  # OSError, or a wait for room from inside the event loop itself
        if not self.failing:
            self.failing = True
            notice("%s: cannot send to syslog at %s: %s; logging to stderr until it works again"
                   % (self.name, self.address, exc))
        notice(format_log_line(level, message, hook, plugin, session).rstrip("\n"))
        return DECLINED
    if self.failing:
        self.failing = False
        notice("%s: sending to syslog at %s again" % (self.name, self.address))
    return DECLINED


def send(self, data):
    """One datagram on a connected socket: connected, the wait for room in a full queue works."""
    if self.sock is None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
    # Once failing, do not wait for room: a hung daemon must not slow every session down.
    self.sock.settimeout(0.0 if self.failing else SEND_TIMEOUT)
    try:
        if self.sock.send(data) == 0:  # gevent's answer when the queue is still full after the wait
            raise BlockingIOError(errno.EAGAIN, "the syslog daemon's queue is full")
    except BaseException:
        self.sock.close()
        self.sock = None  # reconnect next time: the daemon may have restarted on a new socket
        raise


