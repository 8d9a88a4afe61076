"""queue/qmail-queue: hand each message to qmail's ``qmail-queue`` (or a program of the same interface).

Arguments::

    queue/qmail-queue [PATH] [timeout SECONDS]

``PATH`` is the program (default ``$QMAIL/bin/qmail-queue``, ``$QMAIL``
defaulting to ``/var/qmail``).  ``$QMAILQUEUE`` in the server's environment
wins over both, as in qpsmtpd; one set for the session (tcpserver's rules
file, ``self.qp.env``) wins for that session, as qmail-smtpd allows, so a
filter such as qmail-scanner or simscan can be put in front for some
clients only.  ``timeout`` (default 60 seconds) bounds the whole hand-off:
past it the program is killed and the client gets ``451``.

The protocol is qmail-queue(8)'s: the message on descriptor 0, LF line
ends, our headers first; then on descriptor 1 the envelope,
``F<sender>\\0``, ``T<recipient>\\0`` for each recipient and a final
``\\0``.  The exit code decides:

* ``0``: queued, ``250 Queued! <time> qp <pid> <Message-Id>`` as qpsmtpd;
* ``11`` to ``40``, permanent (qmail-queue(8): "exit codes between 11 and
  40 indicate permanent errors"): ``552`` with the documented meaning, e.g.
  ``5.1.3 Address too long (#11)``;
* any other code, a signal, a program that cannot start or a timeout:
  ``451`` with the meaning (``4.3.0 Write error; e.g., disk full (#53)``),
  and the client keeps the message.

Differences from qpsmtpd: qpsmtpd declines (``451``) on every non-zero
exit code, ``Unable to queue message (N)``; we follow the man page, which
makes 11-40 permanent, and say what the code means.  qpsmtpd waits for the
program without a limit; we kill it after ``timeout``.  The program's
standard error is logged.  DSN parameters are not passed on (qmail has no
place for them).

Config files: none.
"""
import os
import time

from qpgevent import DECLINED, DENY, LOGERROR, LOGINFO, OK, arguments
from qpgevent.program import ProgramTimeout, run

ARGUMENTS = {
    "path": arguments.text(),
    "timeout": arguments.number(default=60, minimum=0.1),
}
POSITIONAL = ["path"]

# qmail-queue(8), EXIT CODES, with an RFC 3463 status for each.
MEANINGS = {
    11: ("5.1.3", "Address too long"),
    31: ("5.3.0", "Mail server permanently refuses to send the message to any recipients"),
    51: ("4.3.0", "Out of memory"),
    52: ("4.4.7", "Timeout"),
    53: ("4.3.0", "Write error; e.g., disk full"),
    54: ("4.3.0", "Unable to read the message or envelope"),
    55: ("4.3.5", "Unable to read a configuration file"),
    56: ("4.4.0", "Problem making a network connection from this host"),
    61: ("4.3.0", "Problem with the qmail home directory"),
    62: ("4.3.0", "Problem with the queue directory"),
    63: ("4.3.0", "Problem with queue/pid"),
    64: ("4.3.0", "Problem with queue/mess"),
    65: ("4.3.0", "Problem with queue/intd"),
    66: ("4.3.0", "Problem with queue/todo"),
    71: ("4.3.0", "Mail server temporarily refuses to send the message to any recipients"),
    72: ("4.4.1", "Connection to mail server timed out"),
    73: ("4.4.1", "Connection to mail server rejected"),
    74: ("4.4.2", "Connection to mail server succeeded, but communication failed"),
    81: ("4.3.0", "Internal bug; e.g., segmentation fault"),
    91: ("4.3.0", "Envelope format error"),
}


def register(self, qp, *args):
    self.program = os.environ.get("QMAILQUEUE") or self.options.path or \
        os.path.join(os.environ.get("QMAIL", "/var/qmail"), "bin", "qmail-queue")


def envelope(transaction) -> bytes:
    """qmail-queue's envelope: ``F<sender>\\0``, ``T<recipient>\\0`` each, then ``\\0``."""
    parts = [b"F" + _bytes(transaction.sender.address)]
    parts += [b"T" + _bytes(recipient.address) for recipient in transaction.recipients]
    return b"".join(part + b"\0" for part in parts) + b"\0"


def _bytes(address) -> bytes:
    return (address or "").encode("utf-8", "surrogateescape")


def meaning(status: int):
    """(hook code, the client's text) for a non-zero exit ``status`` (negative: killed by that signal)."""
    if status < 0:
        return DECLINED, "4.3.0 qmail-queue was killed by signal %d" % -status
    permanent = 11 <= status <= 40
    enhanced, text = MEANINGS.get(status, ("5.3.0" if permanent else "4.3.0", "Unable to queue message"))
    return (DENY if permanent else DECLINED), "%s %s (#%d)" % (enhanced, text, status)


def hook_queue(self, transaction):
    program = self.qp.env.get("QMAILQUEUE") or self.program
    with open(transaction.temp_file(), "w+b") as output:
        try:
            outcome = run([program], transaction.message_blocks(), output, self.options.timeout,
                          fd1=[envelope(transaction)])
        except (OSError, ProgramTimeout) as exc:
            self.log(LOGERROR, "fail, %s: %s" % (program, exc))
            return DECLINED, "4.3.0 Unable to queue message, try again later"
        output.seek(0)
        said = output.read(2000).decode("utf-8", "replace").strip()
    if said:
        self.log(LOGINFO if outcome.status == 0 else LOGERROR, "%s said: %s" % (program, said))
    if outcome.status != 0:
        code, text = meaning(outcome.status)
        self.log(LOGERROR, "fail, %s exited with %d: %s" % (program, outcome.status, text))
        return code, text
    message_id = (transaction.header.get("Message-Id") or "").split("\n")[0].strip() if transaction.header else ""
    if not (message_id.startswith("<") and message_id.endswith(">")):
        message_id = "<%s>" % message_id
    self.log(LOGINFO, "pass, %s (pid %d) took the message" % (program, outcome.pid))
    return OK, "Queued! %d qp %d %s" % (time.time(), outcome.pid, message_id)
