"""earlytalker: catch clients that talk before the SMTP greeting.

RFC 5321 3.1 has the client wait for the 220 greeting.  Much spam software
does not: it pipelines the whole conversation at once.  This plugin holds the
greeting back and watches the client's socket; a client that sends anything
in that time is an early talker.

Arguments (qpsmtpd's, as pairs)::

    earlytalker [wait SECONDS] [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect]
                [check-at CONNECT|DATA] [defer-reject 0|1] [action deny|denysoft|log] [loglevel N]

``wait SECONDS``
    How long to hold the greeting back (default 1; fractions allowed).  Keep
    it short: some MTAs give up on a greeting after 30 seconds or less.
``reject 1`` (default)
    Refuse an early talker with the server's connection refusal (``554
    5.7.1 Connecting host started transmitting before SMTP greeting``; with
    ``reject_type temp`` a 4.7.1 one) and disconnect.
``reject 0``
    Let it in; only log it and set the connection note ``earlytalker``.
``reject naughty``
    Let it in and leave the rejection to the ``naughty`` plugin.
``check-at CONNECT|DATA``
    When to watch; may be given twice for both (default CONNECT).  At DATA
    the 354 is held back the same way and an early talker gets ``554 5.7.1
    Client started transmitting before the DATA go-ahead`` (the transaction
    is reset; qpsmtpd reused the greeting text here).
``defer-reject 1``
    Greet an early talker anyway but refuse its every MAIL command, so the
    refusal lands where the client logs it.
``action deny|denysoft|log``
    qpsmtpd's older spelling, still accepted: ``deny`` is ``reject 1``,
    ``denysoft`` is ``reject 1`` with ``reject_type temp``, ``log`` is
    ``reject 0``.  ``reject`` and ``reject_type``, when given, win.

Every early talker loses a point of the connection note ``karma``.  Relay
clients are never checked (list ``relay`` first).  A session without a
socket (in-memory tests, inetd on a pipe) is let through unchecked.

The wait is ``select.select`` on the client socket; under gevent it holds up
only this session.  At DATA only bytes still in the socket count: a client
that put the message in the same packet as its DATA command is not caught
there (the core has already read those bytes).

Config files: none.
"""
import select

from qpgevent import DECLINED, LOGINFO, arguments

_CHECK_POINTS = ("CONNECT", "DATA")
_MESSAGE = "Connecting host started transmitting before SMTP greeting"
_DATA_MESSAGE = "Client started transmitting before the DATA go-ahead"
_ACTIONS = {"deny": ("1", None), "denysoft": ("1", "temp"), "log": ("0", None)}


ARGUMENTS = {
    "wait": arguments.number(default=1, minimum=0),
    "check-at": arguments.choice(*_CHECK_POINTS, repeat=True),
    "defer-reject": arguments.flag(),
    "action": arguments.choice(*_ACTIONS),
}


def register(self, qp, *args):
    options = self.options
    if options.action:
        legacy_action(self, options.action)
    self.wait = options.wait
    if qp.plugin_timeout and self.wait >= qp.plugin_timeout:
        raise ValueError("wait %s would outlast plugin_timeout (%ss); wait less or raise plugin_timeout"
                         % (self.wait, qp.plugin_timeout))
    self.check_at = set(options.check_at or ["CONNECT"])
    self.defer_reject = options.defer_reject
    if self.defer_reject:
        self.register_hook("mail", "refuse_deferred")


def legacy_action(self, action):
    """qpsmtpd's old ``action`` argument, as ``reject`` and ``reject_type`` (which win when given too)."""
    reject, reject_type = _ACTIONS[action]
    if self.reject is None:
        self.reject = reject
    if self.reject_type is None and reject_type:
        self.reject_type = reject_type


def hook_connect(self, transaction):
    if "CONNECT" not in self.check_at or self.is_immune():
        return DECLINED
    return check(self, self.defer_reject, _MESSAGE, "before we said hello")


def hook_data(self, transaction):
    if "DATA" not in self.check_at or self.is_immune():
        return DECLINED
    return check(self, False, _DATA_MESSAGE, "before our 354")


def check(self, defer, message, when):
    sock = self.qp.socket
    if sock is None:
        return DECLINED
    readable, _, _ = select.select([sock], [], [], self.wait)
    ip = self.qp.connection.remote_ip or "remote host"
    if not readable:
        self.log(LOGINFO, "pass, %s said nothing spontaneous" % ip)
        return DECLINED
    self.qp.connection.notes["earlytalker"] = True
    self.adjust_karma(-1)
    if defer:
        self.log(LOGINFO, "fail, deferred, %s started talking %s" % (ip, when))
        return DECLINED
    return self.get_reject(message, "%s started talking %s" % (ip, when))


def refuse_deferred(self, transaction, sender, **params):
    if not self.qp.connection.notes.get("earlytalker"):
        return DECLINED
    return self.get_reject(_MESSAGE, "refusing MAIL from an early talker")
