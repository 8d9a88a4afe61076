"""examples/earlytalker: refuse clients that talk before they are greeted.

Arguments::

    examples/earlytalker [SECONDS]

RFC 5321 3.1 has the client wait for the greeting.  Much spam software does
not: it sends its commands at once.  This plugin holds the greeting back for
``SECONDS`` (default 1) and watches the socket; a client that sends anything
in that time gets ``554 5.5.1`` and is disconnected.  A patient client is
greeted as usual, one second later.

The wait is a plain ``select.select`` on ``self.qp.socket``: under gevent
it only holds up this one session.  Sessions without a socket (in-memory
tests, a pipe from inetd) are let through.

Config files: none.
"""
import select

from qpgevent import DECLINED, DENY_DISCONNECT, LOGINFO, LOGNOTICE


def register(self, qp, seconds="1", *extra):
    try:
        self.wait = float(seconds)
        if extra or self.wait <= 0:
            raise ValueError
    except ValueError:
        raise ValueError("takes one optional argument, the seconds to wait for the greeting (got %r)"
                         % " ".join((seconds, *extra))) from None
    self.register_hook("connect", "check_early")


def check_early(self, transaction):
    sock = self.qp.socket
    if sock is None:
        return DECLINED
    readable, _, _ = select.select([sock], [], [], self.wait)
    if not readable:
        self.log(LOGINFO, "pass, client waited for the greeting")
        return DECLINED
    self.log(LOGNOTICE, "fail, client talked before the greeting")
    return DENY_DISCONNECT, "You talked before I greeted you; goodbye (#5.5.1)"
