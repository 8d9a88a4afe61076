"""logging/json: one JSON object per log line, for log collectors.

Arguments::

    logging/json [loglevel LEVEL] PATH
    logging/json [loglevel LEVEL] -

For example::

    logging/json loglevel LOGINFO /var/log/qpsmtpd/qpsmtpd.json
    logging/json -

``loglevel`` is the highest level written, 0-7 or a name (``LOGINFO``,
``INFO``); default ``LOGWARN`` (4).  ``-`` writes to standard error.
``PATH`` is created if missing and appended to (each line in one write, so
the workers of ``--workers N`` can share a file); relative paths are taken
from the directory the server was started in, and its directory must exist
at start-up.

Each line is an object with these keys::

    {"time": "2024-05-01T09:30:00.123Z", "level": "LOGINFO", "pid": 4242,
     "connection_id": "6632...", "transaction_id": "6632....3", "remote_ip": "192.0.2.7",
     "hook": "rcpt", "plugin": "rcpt_ok", "message": "pass, example.com is in rcpthosts"}

``time`` is UTC; ``level`` is the qpsmtpd name of the level.  Outside a
session (start-up, the master) ``connection_id``, ``transaction_id`` and
``remote_ip`` are null; ``hook`` and ``plugin`` are null for the core's own
lines.  A message of several lines stays one string, with ``\\n`` in it.

Rotation: the server calls the module function ``reopen()`` on SIGUSR1; the
file is then opened again by name at the next line.  A failure to write
never reaches the SMTP session: the line is lost, one notice goes to stderr,
and opening is retried at most once a second until it works again.

Config files: none.
"""
import json
import os
import sys
import time
import weakref

from qpgevent import DECLINED, LOGWARN, log_level, parse_log_level
from qpgevent.smtpd import notice

RETRY_SECONDS = 1.0
_outputs = weakref.WeakSet()


def reopen():
    """Make every file of this plugin be opened again at its next line (SIGUSR1, after logrotate)."""
    for output in list(_outputs):
        output.stale = True


class Output:
    """An append-only file, or standard error for ``-``."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.stale = False
        self.failing = False
        self.retry_at = 0.0
        _outputs.add(self)

    def write(self, data):
        """Write one whole line; raises OSError."""
        if self.path is None:
            sys.stderr.write(data.decode("ascii"))
            sys.stderr.flush()
            return
        if self.fd is not None and self.stale:
            self.close()
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self.stale = False
        os.write(self.fd, data)

    def close(self):
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def register(self, qp, *args):
    self.log_threshold = LOGWARN
    args = list(args)
    if args[:1] and args[0].lower() == "loglevel":
        if len(args) < 2:
            raise ValueError("loglevel needs a value, e.g. 'logging/json loglevel LOGINFO /var/log/qpsmtpd.json'")
        self.log_threshold = parse_log_level(args[1])
        del args[:2]
    if len(args) != 1:
        raise ValueError("give one PATH, or - for stderr, e.g. 'logging/json loglevel LOGINFO /var/log/qpsmtpd.json'"
                         + (", not %r" % " ".join(args) if args else ""))
    if args[0] == "-":
        self.output = Output(None)
        return
    path = os.path.abspath(args[0])
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError("directory %s does not exist; create it or fix the path" % os.path.dirname(path))
    self.output = Output(path)


def hook_logging(self, transaction, level, hook, plugin, message):
    if level > self.log_threshold:
        return DECLINED
    session = self.qp
    connection = getattr(session, "connection", None)
    now = time.time()
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000),
        "level": log_level(level) or str(level),
        "pid": os.getpid(),
        "connection_id": connection.id if connection is not None else None,
        "transaction_id": transaction.id if transaction is not None else None,
        "remote_ip": connection.remote_ip if connection is not None else None,
        "hook": hook or None,
        "plugin": plugin or None,
        "message": message,
    }
    emit(self, (json.dumps(record) + "\n").encode("ascii"))
    return DECLINED


def emit(self, data):
    """Write one line; on failure drop lines and try again once a second."""
    output = self.output
    now = time.monotonic()
    if output.failing and now < output.retry_at:
        return
    try:
        output.write(data)
    except (OSError, ValueError) as exc:
        output.close()
        output.retry_at = now + RETRY_SECONDS
        if not output.failing:
            output.failing = True
            notice("%s: cannot write to %s: %s; log lines are lost until it works again"
                   % (self.name, output.path or "stderr", exc))
        return
    if output.failing:
        output.failing = False
        notice("%s: writing to %s again" % (self.name, output.path or "stderr"))


