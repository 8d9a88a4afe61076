"""What a queue plugin that hands mail to another SMTP server needs beyond smtplib.

smtplib speaks the commands (and is cooperative under the server's gevent
monkey-patching).  This module adds streaming the message from the spool
(DATA, dot-stuffed by qpgevent.dotstuff, or BDAT for a binary message) so that a large
message is never built in memory, RFC 3461 xtext, the split of a reply into
enhanced status code and text, and a small per-process pool of idle
connections.
"""
import os
import re
import smtplib
import time
from typing import Dict, Hashable, Iterable, List, Optional, Tuple

from .dotstuff import stuffed

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\s+")


def xtext(value: str) -> str:
    """RFC 3461 section 4: ``+``, ``=`` and every octet outside ``!``..``~`` as ``+XX``."""
    return "".join("+%02X" % octet if octet < 33 or octet > 126 or octet in b"+=" else chr(octet)
                   for octet in value.encode("utf-8"))


def split_reply(code: int, text: bytes) -> Tuple[Optional[str], str]:
    """(enhanced status code of the same class or None, the rest) of a server's reply text, lines joined."""
    text_str = " ".join(text.decode("utf-8", "replace").split("\n"))
    match = _STATUS.match(text_str)
    if match and match.group(1) == str(code)[0]:
        return "%s.%s.%s" % match.groups(), text_str[match.end():]
    return None, text_str


def send_data(client: smtplib.SMTP, blocks: Iterable[bytes]) -> Tuple[int, bytes]:
    """DATA, then the message streamed block by block with dot-stuffing; the server's last reply.

    ``blocks`` must have CRLF line ends (``transaction.message_blocks(crlf=True)``).
    """
    code, text = client.docmd("DATA")
    if code != 354:
        return code, text
    for chunk in stuffed(blocks):
        client.send(chunk)
    return client.getreply()


def send_bdat(client: smtplib.SMTP, blocks: Iterable[bytes]) -> Tuple[int, bytes]:
    """The message as BDAT chunks (RFC 3030), octets untouched; the reply to the last chunk or the first failure."""
    for block in blocks:
        if block:
            client.send(b"BDAT %d\r\n" % len(block) + block)
            code, text = client.getreply()
            if code != 250:
                return code, text
    client.send(b"BDAT 0 LAST\r\n")
    return client.getreply()


def close(client: smtplib.SMTP) -> None:
    """Drop the connection without a word: it is dead, idle too long, or in an unknown state."""
    try:
        client.close()
    except OSError:
        pass


def quit(client: smtplib.SMTP, wait: float = 2.0) -> None:
    """QUIT politely, waiting at most ``wait`` seconds for the goodbye; the connection is closed either way."""
    try:
        client.sock.settimeout(wait)
        client.quit()
    except (smtplib.SMTPException, OSError, AttributeError):
        close(client)


class Pool:
    """Idle connections of one process, by key: at most ``size`` a key, each dropped after ``idle`` seconds unused.

    A connection is taken out while in use, so only one greenlet talks on it.
    A forked child starts with an empty pool: the sockets it inherited are
    the parent's.
    """

    def __init__(self, size: int, idle: float) -> None:
        self.size = size
        self.idle = idle
        self._pid = os.getpid()
        self._connections: Dict[Hashable, List[Tuple[float, smtplib.SMTP]]] = {}

    def take(self, key: Hashable) -> Optional[smtplib.SMTP]:
        """The most recently used idle connection for ``key`` that is not too old, or None."""
        self._expire()
        connections = self._connections.get(key)
        return connections.pop()[1] if connections else None

    def put(self, key: Hashable, client: smtplib.SMTP) -> None:
        """Keep ``client`` for the next message to ``key``, or drop it when the pool is full."""
        self._expire()
        connections = self._connections.setdefault(key, [])
        if len(connections) >= self.size:
            quit(client)
            return
        connections.append((time.monotonic(), client))

    def _expire(self) -> None:
        if os.getpid() != self._pid:
            self._pid, self._connections = os.getpid(), {}
            return
        oldest = time.monotonic() - self.idle
        for connections in self._connections.values():
            while connections and connections[0][0] < oldest:
                close(connections.pop(0)[1])
