"""loadcheck: turn clients away while the machine is overloaded.

At ``connect``, when the 1-minute load average is above ``max_load`` the
client is refused for now and disconnected::

    450 4.3.2 Server load too high, please try again later.

(RFC 3463 X.3.2: system not accepting network messages.)  The load is
measured at most once every ``cache_time`` seconds per server process.

Arguments (qpsmtpd's, as pairs)::

    loadcheck [max_load LOAD] [cache_time SECONDS] [loadavg PATH] [uptime PATH] [loglevel N]

``max_load``: the highest load at which clients are still served (default
7; fractions allowed).  ``cache_time``: how long a measured load is reused
(default 10; 0 measures at every connection).  ``loadavg`` (ours): read the
load from the first word of this file (``/proc/loadavg`` has that form)
instead of the system's ``getloadavg()``.  ``uptime``: accepted so that
qpsmtpd lines keep working, and not used: ``getloadavg()`` (qpsmtpd's first
choice, through BSD::getloadavg) is always there, so there is no need to run
``uptime``.

If the load cannot be read (the ``loadavg`` file vanished), the client is
served and the failure logged: an unreadable gauge is no reason to refuse
mail.  A ``loadavg`` file that cannot be read at start-up stops the server.

Differences from qpsmtpd: the ``loadavg`` argument, and ``uptime`` unused
(see above).

Config files: none.
"""
import os
import time

from qpgevent import DECLINED, DENYSOFT, LOGDEBUG, LOGERROR, LOGINFO, arguments

MESSAGE = "Server load too high, please try again later."

ARGUMENTS = {
    "max_load": arguments.number(default=7, minimum=0),
    "cache_time": arguments.number(default=10, minimum=0),
    "loadavg": arguments.text(),
    "uptime": arguments.text(),
}


def register(self, qp, *args):
    self.measured = None  # (monotonic time, load): a per-process cache, the same for every session
    if self.options.loadavg:
        try:
            read_load(self)
        except (OSError, ValueError) as exc:
            raise ValueError("loadavg %s: %s; name a file whose first word is the load (such as /proc/loadavg)"
                             % (self.options.loadavg, exc)) from None


def read_load(self):
    """The 1-minute load average now; OSError or ValueError when it cannot be read."""
    if not self.options.loadavg:
        return os.getloadavg()[0]
    with open(self.options.loadavg) as source:
        words = source.read(200).split()
    if not words:
        raise ValueError("the file is empty")
    return float(words[0])


def current_load(self):
    now = time.monotonic()
    if self.measured is None or now - self.measured[0] >= self.options.cache_time:
        self.measured = (now, read_load(self))
        self.log(LOGDEBUG, "measured load %.2f" % self.measured[1])
    return self.measured[1]


def hook_connect(self, transaction):
    try:
        load = current_load(self)
    except (OSError, ValueError) as exc:
        self.log(LOGERROR, "skip, cannot read the load average: %s" % exc)
        return DECLINED
    if load > self.options.max_load:
        self.log(LOGERROR, "fail, load %.2f is above %s" % (load, self.options.max_load))
        return DENYSOFT, "4.3.2 " + MESSAGE
    self.log(LOGINFO, "pass, load %.2f" % load)
    return DECLINED
