"""logging/warn: write log lines to stderr, like the built-in logger.

Arguments (as in qpsmtpd)::

    logging/warn [LEVEL]

``LEVEL`` is the highest level written: a number 0-7 or a name (``LOGINFO``,
``INFO``); default ``LOGWARN`` (4).  ``logging/warn loglevel LEVEL`` is
accepted too.  Each line reads::

    <pid> <connection id> <LEVEL> (<hook>) <plugin>: <message>

(the connection id only inside a session).  List it in ``config/logging``;
other logging plugins still run after it.  If stderr cannot be written the
line is dropped: logging never breaks a session.

Config files: none.
"""
import sys

from qpgevent import DECLINED, LOGWARN, parse_log_level
from qpgevent.smtpd import format_log_line


def register(self, qp, *args):
    if args[:1] == ("loglevel",):
        args = args[1:]
    if len(args) > 1:
        raise ValueError("takes one argument, the log level (e.g. 'logging/warn LOGINFO'), not %r" % " ".join(args))
    self.log_threshold = parse_log_level(args[0]) if args else LOGWARN


def hook_logging(self, transaction, level, hook, plugin, message):
    if level > self.log_threshold:
        return DECLINED
    try:
        sys.stderr.write(format_log_line(level, message, hook, plugin, self.qp))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return DECLINED
