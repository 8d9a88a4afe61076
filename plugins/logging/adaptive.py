"""logging/adaptive: log a refused message in detail, an accepted one briefly.

The lines of each session are held back and written to stderr in pieces,
one per transaction: a piece runs from a MAIL command to the next one (or
to the end of the session), so it holds the replies and the summary line
logged after the message too; the lines before the first MAIL (connect,
EHLO) go with the first piece.  (The core's ``dispatching MAIL`` debug
line, logged before any hook runs, goes with the piece before.)

A piece in which some plugin refused something (a ``DENY`` or ``DENYSOFT``
answer: the ``deny`` hook) is written with every line up to the ``reject``
level, as the core writes them; any other piece only up to the ``accept``
level, each line marked with ``prefix`` after the process id::

    4242 ` 6632...a 9 LOGINFO (rcpt) rcpt_ok: pass, example.com is in rcpthosts

so that a log splitter (multilog, a grep) can send accepted mail's lines to
a file of their own.  Lines logged outside any session (start-up) are
written at once, up to the higher of the two levels.

Arguments (qpsmtpd's, as pairs)::

    logging/adaptive [accept LEVEL] [reject LEVEL] [prefix TEXT]

``accept``: the highest level written for accepted mail (default
``LOGERROR``, 3).  ``reject``: the highest level written when something was
refused (default ``LOGWARN``, 4; set it high, ``LOGDEBUG``, to see why a
message was refused).  Levels are 0-7 or names (``LOGINFO``, ``INFO``).
``prefix``: the mark of accepted-mail lines (default a backquote).

A piece holds at most 2000 lines; beyond that the oldest are dropped and
the piece says how many.  Other logging plugins listed with this one still
get every line as it is logged.  A refusal a plugin answers itself
(``DONE`` after ``self.qp.respond``, as ``loop`` does) is not seen.

Differences from qpsmtpd: there every line up to ``reject`` was written at
once and an accepted transaction's lines again, prefixed, when it ended;
and its "refused" flag, kept on the plugin, was never cleared, so after the
first refusal in a process no line was marked again.  Here each line is
written once, when its piece ends, and the flag is per piece.  (``reject``
here is a level, not the generic ``reject`` argument.)

Config files: none.
"""
import sys
from collections import deque

from qpgevent import DECLINED, LOGERROR, LOGWARN, arguments, parse_log_level
from qpgevent.smtpd import format_log_line

MAX_LINES = 2000
_LEVEL = "a log level (0-7 or a name such as LOGINFO)"
_LINES = "logging/adaptive lines"
_REFUSED = "logging/adaptive refused"
_MAIL_SEEN = "logging/adaptive mail seen"

ARGUMENTS = {
    "accept": arguments.Argument(parse_log_level, _LEVEL, default=LOGERROR),
    "reject": arguments.Argument(parse_log_level, _LEVEL, default=LOGWARN),
    "prefix": arguments.text(default="`"),
}


def register(self, qp, *args):
    self.log_threshold = max(self.options.accept, self.options.reject)


def hook_logging(self, transaction, level, hook, plugin, message):
    if level > self.log_threshold:
        return DECLINED
    session = self.qp
    line = format_log_line(level, message, hook, plugin, session)
    connection = getattr(session, "connection", None)
    if connection is None:
        write(line)
        return DECLINED
    lines = connection.notes.get(_LINES)
    if lines is None:
        lines = connection.notes[_LINES] = deque(maxlen=MAX_LINES)
        connection.notes[_LINES + " dropped"] = 0
    if len(lines) == lines.maxlen:
        connection.notes[_LINES + " dropped"] += 1
    lines.append((level, line))
    return DECLINED


def hook_deny(self, transaction, plugin, code, message):
    self.qp.connection.notes[_REFUSED] = True
    return DECLINED


def hook_mail_parse(self, transaction, line):
    """A MAIL command ends the previous transaction's piece (the first MAIL only marks the session)."""
    notes = self.qp.connection.notes
    if notes.get(_MAIL_SEEN):
        flush(self)
    notes[_MAIL_SEEN] = True
    return DECLINED


def hook_post_connection(self, transaction):
    flush(self)
    return DECLINED


def flush(self):
    """Write the held lines of this session, as its outcome so far asks, and start a new piece."""
    notes = self.qp.connection.notes
    lines = notes.pop(_LINES, ())
    dropped = notes.pop(_LINES + " dropped", 0)
    refused = notes.pop(_REFUSED, False)
    threshold = self.options.reject if refused else self.options.accept
    chosen = [line if refused else marked(self, line) for level, line in lines if level <= threshold]
    if dropped and chosen:
        chosen.insert(0, "(logging/adaptive: %d earlier lines of this piece were dropped)\n" % dropped)
    if chosen:
        write("".join(chosen))


def marked(self, line):
    """``line`` with the accepted-mail prefix after its process id."""
    pid, rest = line.split(" ", 1)
    return "%s %s %s" % (pid, self.options.prefix, rest)


def write(text):
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # logging never breaks a session
