"""logging/file: append log lines to a file, or pipe them into a program.

Arguments (as in qpsmtpd)::

    logging/file [loglevel LEVEL] [reopen] [nosplit] [tsformat FORMAT] PATH
    logging/file [loglevel LEVEL] [reopen] [nosplit] [tsformat FORMAT] |COMMAND [ARG ...]

For example::

    logging/file loglevel LOGINFO /var/log/qpsmtpd/qpsmtpd.log
    logging/file /var/log/qpsmtpd/qpsmtpd.log.%Y-%m-%d
    logging/file loglevel LOGCRIT reopen |/usr/local/sbin/page-sysadmin
    logging/file:1 loglevel LOGDEBUG tsformat %FT%T /var/log/qpsmtpd/debug.log

``loglevel`` is the highest level written, 0-7 or a name (``LOGINFO``,
``INFO``); default ``LOGWARN`` (4).  ``tsformat`` is the strftime format of
the timestamp that starts every line (default ``%a %b %d %H:%M:%S %Y``; it
cannot contain spaces).  A line reads::

    <timestamp> <pid> <connection id> <LEVEL> (<hook>) <plugin>: <message>

(the connection id only inside a session; continuation lines of a
multi-line message are indented).

``PATH`` is created if missing and appended to; relative paths are taken
from the directory the server was started in, and its directory must exist
at start-up.  strftime escapes in it are expanded for every line and a new
file is opened whenever the name changes (``%Y-%m-%d``: one file a day);
``%i`` is the connection id (``parent`` outside sessions), giving one file
per connection; write ``%%`` for a literal ``%``.  ``|COMMAND`` (run by
``/bin/sh``, escapes expanded the same way) gets the lines on its standard
input; if it exits it is started again for the next line.

``reopen``: each connection opens its own output at its first line and
closes it when the connection ends (with a ``|COMMAND``: one run of the
program per connection that logs something, e.g. a pager for ``LOGCRIT``).
``nosplit``: the same, and the file name is chosen once per connection, so
a session that spans midnight stays in one file.

Rotation: the file is reopened by name, at most once a second, as soon as
it has been moved away or replaced (a new inode), so ``logrotate`` needs
neither ``copytruncate`` nor a signal.  For an immediate reopen, the module
function ``reopen()`` marks every output of this plugin to be reopened at
its next line; the server calls it on SIGUSR1 for each loaded plugin module
that has one.

A failure to write never reaches the SMTP session: the line is lost, one
notice goes to stderr, and opening is retried at most once a second until
it works again.

Config files: none.
"""
import os
import re
import subprocess
import time
import weakref

from gevent.lock import BoundedSemaphore

from qpgevent import DECLINED, LOGWARN, parse_log_level
from qpgevent.smtpd import format_log_line, notice

RETRY_SECONDS = 1.0
CHECK_SECONDS = 1.0
_outputs = weakref.WeakSet()


def reopen():
    """Make every output of this plugin reopen its file or program at its next line (SIGUSR1)."""
    for output in list(_outputs):
        output.stale = True


class Output:
    """One destination: a file opened for appending, or a program's standard input."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.name = None
        self.handle = None
        self.process = None
        self.identity = None
        self.checked = 0.0
        self.stale = False
        self.failing = False
        self.retry_at = 0.0
        self.lock = BoundedSemaphore()  # a full pipe makes a writer wait: the others queue behind it
        _outputs.add(self)

    def write(self, name, data):
        """Write ``data`` to ``name``, opening or reopening first when needed; raises OSError or ValueError."""
        if self.handle is not None and (self.stale or name != self.name or self.moved()):
            self.close()
        if self.handle is None:
            self.open(name)
        self.handle.write(data)
        self.handle.flush()

    def moved(self):
        """True when the file at our name is no longer the one we have open (checked once a second)."""
        now = time.monotonic()
        if self.pipe or now - self.checked < CHECK_SECONDS:
            return False
        self.checked = now
        try:
            info = os.stat(self.name)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self.identity

    def open(self, name):
        if self.pipe:
            self.process = subprocess.Popen(name, shell=True, stdin=subprocess.PIPE)
            self.handle = self.process.stdin
        else:
            self.handle = open(name, "ab")
            info = os.fstat(self.handle.fileno())
            self.identity = (info.st_dev, info.st_ino)
        self.name = name
        self.stale = False
        self.checked = time.monotonic()

    def close(self):
        handle, process = self.handle, self.process
        self.handle = self.process = None
        if handle is not None:
            try:
                handle.close()
            except (OSError, ValueError):
                pass
        if process is not None:
            process.poll()  # reaps it if it has already exited


def register(self, qp, *args):
    self.log_threshold = LOGWARN
    self.tsformat = "%a %b %d %H:%M:%S %Y"
    reopen_each, self.nosplit = False, False
    args = list(args)
    while args:
        word = args[0].lower()
        if word in ("loglevel", "tsformat"):
            if len(args) < 2:
                raise ValueError("%s needs a value, e.g. 'logging/file loglevel LOGINFO /var/log/qpsmtpd.log'" % word)
            if word == "loglevel":
                self.log_threshold = parse_log_level(args[1])
            else:
                self.tsformat = args[1]
            del args[:2]
        elif word in ("reopen", "nosplit"):
            reopen_each = True
            self.nosplit = self.nosplit or word == "nosplit"
            del args[:1]
        else:
            break
    target = " ".join(args)
    self.pipe = target.startswith("|")
    self.target = target[1:].strip() if self.pipe else os.path.abspath(target) if target else ""
    if not self.target:
        raise ValueError("no PATH or |COMMAND given; write e.g. 'logging/file loglevel LOGINFO /var/log/qpsmtpd.log'")
    self.per_connection = reopen_each or "%i" in self.target
    if not self.pipe:
        directory = os.path.dirname(expand(self, None))
        if not os.path.isdir(directory):
            raise ValueError("directory %s does not exist; create it or fix the path" % directory)
    self.output = Output(self.pipe)


def expand(self, connection):
    """The file name or command for a line logged now by ``connection`` (None: outside sessions)."""
    target = self.target
    if "%" not in target:
        return target
    session_id = connection.id if connection is not None else "parent"
    return time.strftime(re.sub("%.", lambda m: session_id if m.group() == "%i" else m.group(), target))


def output_for(self, connection):
    if connection is None or not self.per_connection:
        return self.output
    key = "%s output" % self.name
    output = connection.notes.get(key)
    if output is None:
        output = connection.notes[key] = Output(self.pipe)
    return output


def hook_logging(self, transaction, level, hook, plugin, message):
    if level > self.log_threshold:
        return DECLINED
    session = self.qp
    connection = getattr(session, "connection", None)
    output = output_for(self, connection)
    if self.nosplit and output is not self.output and output.name is not None:
        name = output.name
    else:
        name = expand(self, connection)
    line = "%s %s" % (time.strftime(self.tsformat), format_log_line(level, message, hook, plugin, session))
    emit(self, output, name, line.encode("utf-8", "backslashreplace"))
    return DECLINED


def emit(self, output, name, data):
    """Write one line; on failure try a fresh open once, then drop lines and retry once a second."""
    now = time.monotonic()
    if output.failing and now < output.retry_at:
        return
    try:
        with output.lock:
            try:
                output.write(name, data)
            except (OSError, ValueError):
                output.close()  # a handle closed or gone stale under us: one fresh open
                output.write(name, data)
    except (OSError, ValueError) as exc:
        output.close()
        output.retry_at = now + RETRY_SECONDS
        if not output.failing:
            output.failing = True
            notice("%s: cannot write to %s%s: %s; log lines are lost until it works again"
                   % (self.name, "|" if self.pipe else "", name, exc))
        return
    if output.failing:
        output.failing = False
        notice("%s: writing to %s%s again" % (self.name, "|" if self.pipe else "", name))


def hook_post_connection(self, transaction):
    output = self.qp.connection.notes.pop("%s output" % self.name, None)
    if output is not None:
        output.close()
    return DECLINED
