"""queue/exim-bsmtp: hand each message to Exim as batched SMTP (``exim -bS``).

Arguments::

    queue/exim-bsmtp [BINARY] [options OPT,OPT,...] [timeout SECONDS]

``BINARY`` is Exim's program (default ``/usr/sbin/rsmtp``, which is
``exim -bS`` on Debian; qpsmtpd's ``exim_path PATH`` spelling works too).
``options`` are more command-line words for Exim, comma separated, e.g.
``options -odq`` to leave delivery to the queue runner, or ``options
-C,/etc/exim4/qpgevent.conf``.  ``timeout`` (default 60 seconds) bounds the
whole hand-off: past it Exim is killed and the client gets ``451``.
Examples::

    queue/exim-bsmtp
    queue/exim-bsmtp /usr/sbin/exim4 options -odq timeout 120

As qpsmtpd's plugin does, we send Exim ``HELO``, ``MAIL FROM``, a ``RCPT
TO`` per recipient, ``DATA``, the message (our headers first, LF line ends,
dots doubled) and ``QUIT`` on its standard input; the message is streamed
from the spool, not written to a temporary file first.  Exim answers
nothing when all is well and exits 0: ``250 Queued!``.  Otherwise it prints
the SMTP reply of the command it refused (from its ``acl_not_smtp``, say)
and exits non-zero: a ``5xx`` gives our client ``552`` with Exim's text, a
``4xx`` or no reply at all ``451``, and the client keeps the message.
Exim reports a ``defer`` of its ``acl_not_smtp`` as ``550`` followed by the
ACL's message: when that message starts with a ``4.x.x`` status we believe
the status and answer ``451``.  Exim's output is logged.

Exim honours the envelope sender only when we are one of its trusted users:
put the user qpgevent runs as in ``trusted_users`` (or run Exim from root),
or every message appears to come from that user.

Differences from qpsmtpd: its plugin answers 5xx to a 4xx from Exim too,
and waits for Exim without a limit; ours answers 451 and kills Exim after
``timeout``.  DSN parameters are not passed on.

Config files: ``me`` (the HELO name we give Exim).
"""
import os
import re

from qpgevent import DECLINED, DENY, LOGERROR, LOGINFO, OK, arguments
from qpgevent.dotstuff import stuffed
from qpgevent.program import ProgramTimeout, run

ARGUMENTS = {
    "exim_path": arguments.text(default="/usr/sbin/rsmtp"),
    "options": arguments.words(default=""),
    "timeout": arguments.number(default=60, minimum=0.1),
}
POSITIONAL = ["exim_path"]

_REPLY = re.compile(r"^([45])(\d\d)[ -](?:([45]\.\d{1,3}\.\d{1,3}) )?(.*)$", re.M)


def register(self, qp, *args):
    path = self.options.exim_path
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ValueError("%s is not an executable program; give Exim's path, e.g. "
                         "'queue/exim-bsmtp /usr/sbin/exim4'" % path)
    self.command = [path, "-bS", *self.options.options]


def batch(self, transaction):
    """The BSMTP input for this message, block by block."""
    lines = ["HELO %s" % (self.qp.me or "localhost"), "MAIL FROM:%s" % transaction.sender.format()]
    lines += ["RCPT TO:%s" % recipient.format() for recipient in transaction.recipients]
    lines.append("DATA")
    yield "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    yield from stuffed(transaction.message_blocks(), newline=b"\n")
    yield b"QUIT\n"


def refusal(said: str):
    """(hook code, text) from what Exim printed when it refused the batch."""
    match = _REPLY.search(said)
    if not match:
        return DECLINED, "4.3.0 Queuing failed, try again later"
    klass, _, status, text = match.groups()
    if status and status[0] == "4":
        klass = "4"  # Exim reports an ACL's "defer" as 550 with the ACL's text: a 4.x.x there means "later"
    status = status if status and status.startswith(klass) else "%s.3.0" % klass
    return (DENY if klass == "5" else DECLINED), "%s %s" % (status, text.strip())


def hook_queue(self, transaction):
    with open(transaction.temp_file(), "w+b") as output:
        try:
            outcome = run(self.command, batch(self, transaction), output, self.options.timeout)
        except (OSError, ProgramTimeout) as exc:
            self.log(LOGERROR, "fail, %s: %s" % (self.command[0], exc))
            return DECLINED, "4.3.0 Queuing failed, try again later"
        output.seek(0)
        said = output.read(4000).decode("utf-8", "replace").strip()
    if said:
        self.log(LOGINFO if outcome.status == 0 else LOGERROR, "exim said: %s" % said)
    if outcome.status != 0:
        # With one message per batch, only 0 means "taken"; a reply it printed says why not.
        self.log(LOGERROR, "fail, %s -bS exited with %d" % (self.command[0], outcome.status))
        return refusal(said)
    self.log(LOGINFO, "pass, exim took the message")
    return OK, "Queued!"
