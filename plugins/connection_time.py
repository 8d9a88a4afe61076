"""connection_time: log how long each connection lasted.

The clock starts at the first hook of a session (``pre-connection``, or
``connect`` should a server flavour skip the former) and stops at the last
(``post-connection``), which logs the duration at LOGINFO::

    (post-connection) connection_time: 4.213 s.

Arguments (qpsmtpd's)::

    connection_time [LEVEL]
    connection_time [loglevel LEVEL]

``LEVEL``: the level of this plugin's lines: a number 0-7 or a name
(``LOGNOTICE``) sets it, ``+N``/``-N`` shifts it (``+1``: less logging).

Differences from qpsmtpd: the start time is kept per connection (qpsmtpd
kept it on the plugin, shared by every session of a process), and the
clock is monotonic, so a change of the system time does not skew it.

Config files: none.
"""
import time

from qpgevent import DECLINED, LOGDEBUG, LOGERROR, LOGINFO, arguments
from qpgevent.plugin import parse_loglevel

# The generic loglevel, which may also come as a bare word.
ARGUMENTS = {"loglevel": arguments.Argument(parse_loglevel, "a log level: 0-7, a name such as LOGINFO, or +N/-N")}
POSITIONAL = ["loglevel"]
_NOTE = "connection_time start"


def register(self, qp, *args):
    if self.options.loglevel is not None:  # `connection_time 4` sets it as `loglevel 4` does
        self.loglevel_adjust = self.options.loglevel
    self.register_hook("pre-connection", "start_clock")
    self.register_hook("connect", "start_clock")


def start_clock(self, transaction, **params):
    notes = self.qp.connection.notes
    if _NOTE not in notes:
        notes[_NOTE] = time.monotonic()
        self.log(LOGDEBUG, "started at %.3f" % time.time())
    return DECLINED


def hook_post_connection(self, transaction):
    started = self.qp.connection.notes.get(_NOTE)
    if started is None:
        self.log(LOGERROR, "start time not set: the session ended before pre-connection and connect ran")
        return DECLINED
    self.log(LOGINFO, "%.3f s." % (time.monotonic() - started))
    return DECLINED
