"""A spamd client: the SPAMC/1.5 protocol of SpamAssassin's daemon (its ``spamd/PROTOCOL`` file).

A request is a command line, ``Content-length`` and ``User`` headers, a
blank line and the message; spamd answers ``SPAMD/1.1 0 EX_OK``, a ``Spam:
True ; 20.0 / 5.0`` line and, depending on the command, a body:

* ``CHECK``: nothing more;
* ``SYMBOLS``: the names of the rules that hit, comma-separated;
* ``REPORT``: the report text;
* ``HEADERS``: the message's header block as SpamAssassin would rewrite it
  (its ``X-Spam-*`` fields included), which is what the plugin uses.
"""
import re
from typing import Iterable, List, NamedTuple, Optional, Tuple

from .header import Header
from .scanning import ScanError, connect

DEFAULT_PORT = 783
COMMANDS = ("CHECK", "SYMBOLS", "REPORT", "HEADERS")
_MAX_REPLY = 4 * 1024 * 1024  # a HEADERS or REPORT answer is small; a daemon gone mad must not fill our memory
_STATUS = re.compile(r"SPAMD/[\d.]+ +(\d+) +(.*)")
_SPAM = re.compile(r"(True|False|Yes|No) *; *(-?[\d.]+) */ *(-?[\d.]+)", re.I)


class Verdict(NamedTuple):
    spam: bool
    score: float
    threshold: float
    body: str  # SYMBOLS: the rule names; REPORT: the report; HEADERS: the header block

    @property
    def symbols(self) -> List[str]:
        return [name.strip() for name in self.body.split(",") if name.strip()]

    def spam_headers(self) -> List[Tuple[str, str]]:
        """From a HEADERS answer: the ``X-Spam-*`` fields, in spamd's order and folding."""
        return [(name, value) for name, value in Header.parse(self.body) if name.lower().startswith("x-spam-")]


def request(address: str, command: str, message: Iterable[bytes], length: int, user: Optional[str],
            timeout: float) -> Verdict:
    """Send ``command`` with the message (``length`` bytes in blocks) to spamd at ``address``; ScanError if no verdict.

    ``timeout`` bounds each wait on the socket; the caller bounds the whole
    exchange (``scanning.bounded``).
    """
    if command not in COMMANDS:
        raise ValueError("spamd command %r is not one of %s" % (command, ", ".join(COMMANDS)))
    head = "%s SPAMC/1.5\r\nContent-length: %d\r\n" % (command, length)
    if user:
        head += "User: %s\r\n" % user
    sock = connect(address, DEFAULT_PORT, timeout)
    try:
        sock.sendall((head + "\r\n").encode("ascii"))
        for block in message:
            sock.sendall(block)
        sock.shutdown(1)  # spamd reads to Content-length; the half-close says so too, as spamc does
        reply = b""
        while len(reply) <= _MAX_REPLY:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except OSError as exc:
        raise ScanError("spamd at %s: %s" % (address, exc)) from exc
    finally:
        sock.close()
    return parse_reply(reply.decode("utf-8", "replace"))


def parse_reply(text: str) -> Verdict:
    """A spamd answer as a Verdict; ScanError for a refusal or an answer that is not spamd's."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = _STATUS.match(lines[0])
    if status is None:
        raise ScanError("not a spamd answer: %r" % lines[0][:200])
    if status.group(1) != "0":
        raise ScanError("spamd refused the request: %s %s" % status.groups())
    for line in lines[1:]:
        name, _, value = line.partition(":")
        spam = _SPAM.match(value.strip()) if name.strip().lower() == "spam" else None
        if spam:
            return Verdict(spam.group(1).lower() in ("true", "yes"), float(spam.group(2)), float(spam.group(3)), body)
    raise ScanError("spamd gave no Spam: line in %r" % head[:200])
