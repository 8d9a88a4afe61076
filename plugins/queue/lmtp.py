"""queue/lmtp: hand each message to an LMTP server (RFC 2033): Dovecot, Cyrus, ...

Arguments::

    queue/lmtp [DESTINATION] [timeout SECONDS] [lhlo NAME]

``DESTINATION`` is ``host:port`` (``[::1]:24`` for IPv6; a host alone means
port 24) or the absolute path of a unix socket (``/run/dovecot/lmtp``);
default ``127.0.0.1:24``.  ``timeout`` (default 30 seconds) bounds each wait
for the server: connecting, each reply, each write.  ``lhlo`` is the name we
give in LHLO (default: config ``me``).  Examples::

    queue/lmtp /var/run/dovecot/lmtp
    queue/lmtp 127.0.0.1:24 timeout 60

The message goes on as received (our trace headers included), with the
client's sender and every recipient, ``BODY=8BITMIME`` and ``SMTPUTF8``
when the client asked for them and the server offers them.  A message the
server cannot take as it is (``SMTPUTF8`` not offered, a ``BINARYMIME``
body, which needs ``BDAT`` and ``BINARYMIME``) is refused with ``5.6.x``.

What our client is told.  LMTP answers each recipient at RCPT, then once
per accepted recipient after the message (RFC 2033 4.2); SMTP gives our
client one reply for the whole message, and qpgevent has no outbound queue
that could send a bounce (a DSN) for some recipients and accept the rest,
as RFC 2033 4.2 expects of an SMTP-to-LMTP gateway and as Haraka does
through its outbound queue.  So the rule is: never lose a recipient
silently, prefer a duplicate to a loss.

* Every recipient accepted after the message: ``250 Queued! ID`` with the
  server's queue id (the first word after the recipient in its reply).
* A recipient refused at RCPT: the message is not sent to anyone (the
  server has not seen it yet).  If any refusal is temporary the client
  gets ``451`` with the server's reason and retries later; if every
  refusal is permanent it gets ``552`` with the server's enhanced code and
  reason (``5.1.1 <nobody@example.com> User doesn't exist``), and its
  bounce tells the sender, naming the refused recipient.  Refuse unknown
  users at our RCPT, one by one, with a ``rcpt`` plugin in front (for
  example ``rcpt_map``) to spare the others.
* Some recipients refused after the message (quota, a failing mailbox):
  the others already have it.  A temporary refusal gives ``451`` whose text
  names who has it already: they may get it twice when the client retries.
  Only permanent refusals give ``552``, naming the recipients that did get
  it.  Every recipient refused: ``451`` or ``552`` as at RCPT.
* The server unreachable, silent past ``timeout``, or talking nonsense:
  ``451 4.4.1``/``4.4.2``.  If that happens after the final dot, the server
  may have delivered already: a retry may duplicate it (RFC 1047).

qpsmtpd has no LMTP plugin; this one is our own.  DSN parameters are not
passed on (LMTP servers deliver; they do not send notices), so DSN is not
advertised because of it.

Config files: ``me`` (the LHLO name).
"""
import re
import socket
from typing import List, Optional, Tuple

from qpgevent import DECLINED, DENY, LOGDEBUG, LOGERROR, LOGINFO, OK, arguments
from qpgevent.dotstuff import stuffed

ARGUMENTS = {
    "destination": arguments.text(default="127.0.0.1:24"),
    "timeout": arguments.number(default=30, minimum=0.1),
    "lhlo": arguments.text(),
}
POSITIONAL = ["destination"]

_MAX_LINE = 4096
_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}\s+")
_ADDRESS = re.compile(r"<[^>]*>\s*")
_REPLY_LINE = re.compile(rb"[2-5]\d\d(?:[ -]|\r?\n)")


class LMTPError(Exception):
    """The conversation with the server broke; ``status`` is the enhanced code for our 451."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status


class Reply:
    """One reply of the server: code, enhanced status (or None) and text (lines joined)."""

    def __init__(self, code: int, lines: List[str]) -> None:
        self.code = code
        self.lines = [line.strip() for line in lines]
        text = " ".join(self.lines)
        match = _STATUS.match(text)
        self.status = match.group(0).strip() if match else None
        self.text = text[match.end():] if match else text

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return not 500 <= self.code < 600

    def __str__(self) -> str:
        return "%d %s%s" % (self.code, self.status + " " if self.status else "", self.text)


def register(self, qp, *args):
    self.destination = parse_destination(self.options.destination)


def parse_destination(text: str) -> Tuple[int, object]:
    """(address family, address) of ``/path``, ``host:port``, ``[v6]:port`` or ``host``."""
    if text.startswith("/"):
        return socket.AF_UNIX, text
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]/]+)(?::(\d+))?", text)
    if not match:
        raise ValueError("destination %r is neither host:port, [IPv6]:port nor an absolute socket path; "
                         "write e.g. 'queue/lmtp 127.0.0.1:24' or 'queue/lmtp /run/dovecot/lmtp'" % text)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or 24)
    if not 0 < port < 65536:
        raise ValueError("port %d in %r is out of range (1-65535)" % (port, text))
    return socket.AF_INET, (host, port)


class Connection:
    """An LMTP conversation over one socket, every wait bounded by ``timeout``."""

    def __init__(self, destination: Tuple[int, object], timeout: float) -> None:
        family, address = destination
        try:
            if family == socket.AF_UNIX:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(address)
            else:
                self.sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise LMTPError("4.4.1", "cannot connect to the LMTP server: %s" % exc) from exc
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise LMTPError("4.4.2", "lost the LMTP server while writing: %s" % exc) from exc

    def command(self, line: str) -> Reply:
        self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return self.reply()

    def reply(self) -> Reply:
        lines = []
        while True:
            try:
                raw = self.file.readline(_MAX_LINE)
            except OSError as exc:  # socket.timeout included
                raise LMTPError("4.4.2", "no answer from the LMTP server: %s" % exc) from exc
            if not raw.endswith(b"\n") or not _REPLY_LINE.match(raw):
                raise LMTPError("4.4.2", "the LMTP server gave no valid reply: %r" % raw[:100])
            lines.append(raw[4:].decode("utf-8", "replace"))
            if raw[3:4] != b"-":
                return Reply(int(raw[:3]), lines)


def mail_parameters(transaction, extensions: List[str]) -> Tuple[str, Optional[str]]:
    """(the MAIL parameters to pass on, or None and why the server cannot take this message)."""
    params = transaction.notes.get("mail_parameters", {})
    passed = []
    if transaction.binary:
        return "", "5.6.3 the mailbox server cannot take a BINARYMIME message"
    if str(params.get("body", "")).upper() == "8BITMIME" and "8BITMIME" in extensions:
        passed.append("BODY=8BITMIME")
    if "smtputf8" in params:
        if "SMTPUTF8" not in extensions:
            return "", "5.6.7 the mailbox server does not take internationalised addresses (SMTPUTF8)"
        passed.append("SMTPUTF8")
    return "".join(" " + p for p in passed), None


def refusal(self, refused: List[Tuple[str, Reply]], delivered: List[str]):
    """The one reply for the whole message when the server refused ``refused`` (see the docstring)."""
    temporary = [(address, reply) for address, reply in refused if reply.temporary]
    address, reply = (temporary or refused)[0]
    text = reply.text if address in reply.text else "<%s> %s" % (address, reply.text)
    if len(refused) > 1:
        text += " (and %d more refused)" % (len(refused) - 1)
    if delivered:
        text += "; already delivered to %s" % ", ".join("<%s>" % a for a in delivered)
        if temporary:
            text += ", who may get it twice when you retry"
    self.log(LOGERROR, "fail, LMTP server refused %s" % ", ".join("<%s>: %s" % (a, r) for a, r in refused))
    if temporary:
        return DECLINED, "%s %s" % (_status(reply, "4.3.0", "4"), text)
    return DENY, "%s %s" % (_status(reply, "5.0.0", "5"), text)


def _status(reply: Reply, default: str, klass: str) -> str:
    """The server's enhanced status when it has the right class, else ``default``."""
    return reply.status if reply.status and reply.status.startswith(klass) else default


def say_goodbye(conn: Connection) -> None:
    """Say goodbye; the outcome is known by now, so a server that hangs up first changes nothing."""
    try:
        conn.command("QUIT")
    except LMTPError:
        pass


def deliver(self, conn: Connection, transaction):
    """Run one LMTP transaction; the hook's result."""
    greeting = conn.reply()
    if greeting.code != 220:  # busy or misconfigured: never a reason to bounce the mail
        raise LMTPError("4.4.2", "the LMTP server will not talk: %s" % greeting)
    lhlo = conn.command("LHLO %s" % (self.options.lhlo or self.qp.me or "localhost"))
    if lhlo.code != 250:
        raise LMTPError("4.4.2", "the LMTP server refused LHLO: %s" % lhlo)
    extensions = [line.split()[0].upper() for line in lhlo.lines[1:] if line.split()]
    params, problem = mail_parameters(transaction, extensions)
    if problem:
        say_goodbye(conn)
        self.log(LOGERROR, "fail, %s" % problem)
        return DENY, problem
    mail = conn.command("MAIL FROM:%s%s" % (transaction.sender.format(), params))
    if not mail.ok:
        say_goodbye(conn)
        return refusal(self, [(r.address, mail) for r in transaction.recipients], [])
    accepted, refused = [], []
    for recipient in transaction.recipients:
        reply = conn.command("RCPT TO:%s" % recipient.format())
        if reply.ok:
            accepted.append(recipient.address)
        else:
            refused.append((recipient.address, reply))
    if refused:
        say_goodbye(conn)
        return refusal(self, refused, [])
    data = conn.command("DATA")
    if data.code != 354:
        say_goodbye(conn)
        return refusal(self, [(a, data) for a in accepted], [])
    for block in stuffed(transaction.message_blocks(crlf=True)):
        conn.send(block)
    delivered, ids = [], []
    for address in accepted:
        reply = conn.reply()
        if reply.ok:
            delivered.append(address)
            ids.append(_ADDRESS.sub("", reply.text, count=1).split(" ")[0])
        else:
            refused.append((address, reply))
    say_goodbye(conn)
    if refused:
        return refusal(self, refused, delivered)
    self.log(LOGINFO, "pass, LMTP server took the message for %d recipient(s) as %s" % (len(delivered), ", ".join(ids)))
    return OK, "Queued! %s" % ids[0]


def hook_queue(self, transaction):
    try:
        conn = Connection(self.destination, self.options.timeout)
    except LMTPError as exc:
        self.log(LOGERROR, "fail, %s" % exc)
        return DECLINED, "%s %s, try again later" % (exc.status, exc)
    try:
        return deliver(self, conn, transaction)
    except LMTPError as exc:
        self.log(LOGERROR, "fail, %s" % exc)
        return DECLINED, "%s %s, try again later" % (exc.status, exc)
    finally:
        conn.close()
        self.log(LOGDEBUG, "closed the LMTP connection")
