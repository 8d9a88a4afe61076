"""A client of Postfix's ``cleanup`` service: how Postfix's own smtpd and pickup put a message into its queue.

The protocol, from Postfix's source (src/global/rec_type.h, cleanup_user.h,
mail_proto.h, src/util/attr_print0.c, record.c, src/cleanup/cleanup.c):

1. Connect to the ``public/cleanup`` unix socket (or a TCP ``inet`` cleanup).
2. cleanup sends attributes, each ``name NUL value NUL``, ending with a lone
   ``NUL``: ``queue_id`` (and, from Postfix 3.9, ``protocol`` first).
3. The client sends its ``flags`` attribute the same way (CLEANUP_FLAG_*).
4. The client sends records: one type byte, the data length in 7-bit groups
   (lowest first, the high bit set on every byte but the last), the data.
   The envelope (``T`` time, ``A`` name=value attributes, ``S`` sender, ``R``
   recipients), ``M`` (start of the message), the content one line per
   ``N`` record (a long line as ``L`` records, then an ``N`` for its end),
   ``X`` (end of content) and ``E`` (end).
5. cleanup writes the queue file, fsyncs it and answers ``status`` (0 or
   CLEANUP_STAT_* bits) and ``reason``.  Status 0 means the file is in the
   ``incoming`` queue: the message is Postfix's.

This module imports no gevent: it is plain blocking socket code, cooperative
under the server's monkey-patching.  Every socket wait is bounded by ``timeout``.
"""
import re
import socket
import time
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from . import sockets

# CLEANUP_FLAG_* (src/global/cleanup_user.h); the names are those of qpsmtpd's plugin arguments.
FLAGS: Dict[str, int] = {
    "FLAG_NONE": 0,
    "FLAG_BOUNCE": 1 << 0,
    "FLAG_FILTER": 1 << 1,
    "FLAG_HOLD": 1 << 2,
    "FLAG_DISCARD": 1 << 3,
    "FLAG_BCC_OK": 1 << 4,
    "FLAG_MAP_OK": 1 << 5,
    "FLAG_MILTER": 1 << 6,
}
FLAGS["FLAG_FILTER_ALL"] = FLAGS["FLAG_FILTER"] | FLAGS["FLAG_MILTER"]
FLAGS["FLAG_MASK_EXTERNAL"] = FLAGS["FLAG_FILTER_ALL"] | FLAGS["FLAG_BCC_OK"] | FLAGS["FLAG_MAP_OK"]
FLAGS["FLAG_MASK_INTERNAL"] = FLAGS["FLAG_MAP_OK"]
FLAG_SMTPUTF8 = 1 << 8  # set per message, when the client sent MAIL ... SMTPUTF8

# CLEANUP_STAT_* bits, with the reply Postfix's own smtpd gives for each (src/global/cleanup_strerror.c).
# Temporary ones first: when a temporary and a permanent bit are both set, the message was not
# examined whole, so the permanent verdict is not final (qpsmtpd checks them in this order too).
TEMPORARY: List[Tuple[int, str]] = [
    (1 << 8, "4.7.1 service unavailable"),       # DEFER
    (1 << 7, "4.3.0 queue file write error"),    # PROXY
    (1 << 0, "4.3.0 internal protocol error"),   # BAD
    (1 << 1, "4.3.0 queue file write error"),    # WRITE
]
PERMANENT: List[Tuple[int, str]] = [
    (1 << 6, "5.1.0 no recipients specified"),   # RCPT
    (1 << 4, "5.4.0 too many hops"),             # HOPS
    (1 << 2, "5.3.4 message file too big"),      # SIZE
    (1 << 3, "5.7.1 message content rejected"),  # CONT
    (1 << 9, "5.7.1 service denied"),            # NOPERM
]

# Record types (src/global/rec_type.h).
REC_TIME, REC_ATTR, REC_FROM, REC_RCPT = b"T", b"A", b"S", b"R"
REC_MESG, REC_CONT, REC_NORM, REC_XTRA, REC_END = b"M", b"L", b"N", b"X", b"E"

LINE_CHUNK = 2048         # a longer line goes as L records of this size, as Postfix's smtpd splits at line_length_limit
SEND_BUFFER = 64 * 1024   # records are written in batches of about this size
MAX_ATTRIBUTE = 64 * 1024  # a cleanup reply longer than this is not one
DSN_RET = {"FULL": 1, "HDRS": 2}                                   # DSN_RET_* (src/global/dsn_mask.h)
DSN_NOTIFY = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}  # DSN_NOTIFY_*
_STATUS_CODE = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")


class CleanupError(Exception):
    """cleanup could not be reached, broke the protocol, or did not answer in time."""


def record(kind: bytes, data: bytes) -> bytes:
    """One record: type byte, length in 7-bit groups (lowest first, high bit = more), data."""
    length = len(data)
    encoded = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            encoded.append(byte | 0x80)
        else:
            encoded.append(byte)
            return kind + bytes(encoded) + data


def attributes(pairs: Iterable[Tuple[str, str]]) -> bytes:
    """Attributes in attr_print0 form: ``name NUL value NUL`` each, then a lone NUL."""
    return b"".join(b"%s\0%s\0" % (name.encode(), value.encode()) for name, value in pairs) + b"\0"


def content_records(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The message (LF line ends) as N records, one a line, a long line split into L records first."""
    pending = b""
    for block in blocks:
        pending += block
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            yield from _line_records(pending[start:end])
            start = end + 1
        pending = pending[start:]
        while len(pending) > LINE_CHUNK:  # an endless line must not pile up in memory
            yield record(REC_CONT, pending[:LINE_CHUNK])
            pending = pending[LINE_CHUNK:]
    if pending:
        yield from _line_records(pending)


def _line_records(line: bytes) -> Iterator[bytes]:
    while len(line) > LINE_CHUNK:
        yield record(REC_CONT, line[:LINE_CHUNK])
        line = line[LINE_CHUNK:]
    yield record(REC_NORM, line)


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext to text: ``+HH`` is the octet HH."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda match: chr(int(match.group(1), 16)), text)


def envelope_records(sender: str, recipients: Iterable[Tuple[str, dict]], dsn: Optional[dict] = None,
                     arrival: Optional[float] = None) -> bytes:
    """Time, rewrite context, DSN settings, sender and recipients, as Postfix's smtpd sends them.

    ``recipients`` are ``(address, dsn)`` pairs, ``dsn`` as the core keeps it (``notify``, ``orcpt``).
    """
    when = time.time() if arrival is None else arrival
    out = [record(REC_TIME, b"%d %d" % (int(when), int(when % 1 * 1e6))),
           # "remote": cleanup leaves the headers of mail from outside alone (no @myorigin appended)
           record(REC_ATTR, b"rewrite_context=remote")]
    dsn = dsn or {}
    if "envid" in dsn:
        out.append(_attr_record("envelope_id", xtext_decode(dsn["envid"])))
    if "ret" in dsn:
        out.append(_attr_record("ret_flags", str(DSN_RET[dsn["ret"]])))
    out.append(record(REC_FROM, _encode(sender)))
    for address, settings in recipients:
        if "notify" in settings:
            out.append(_attr_record("notify_flags", str(sum(DSN_NOTIFY[word] for word in settings["notify"]))))
        if "orcpt" in settings:
            kind, _, original = settings["orcpt"].partition(";")
            out.append(_attr_record("dsn_orig_rcpt", "%s;%s" % (kind, xtext_decode(original))))
        out.append(record(REC_RCPT, _encode(address)))
    return b"".join(out)


def _attr_record(name: str, value: str) -> bytes:
    return record(REC_ATTR, _encode("%s=%s" % (name, value)))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def verdict(status: int, reason: str) -> Tuple[str, str]:
    """``("ok"|"temporary"|"permanent"|"unknown", reply text with an enhanced status code)`` for a status."""
    if status == 0:
        return "ok", ""
    for kind, table in (("temporary", TEMPORARY), ("permanent", PERMANENT)):
        for bit, default in table:
            if status & bit:
                return kind, _reply_text(reason, default)
    return "unknown", _reply_text(reason, "4.3.0 queue file write error")


def _reply_text(reason: str, default: str) -> str:
    """cleanup's reason when it has one whose status class fits the verdict, else the default text."""
    reason = " ".join(reason.split())  # no CR/LF may reach the client
    if not reason:
        return default
    match = _STATUS_CODE.match(reason)
    if match and match.group(1) == default[0]:
        return reason
    if match:
        reason = reason[match.end():].lstrip()
    return "%s %s" % (default.split(" ", 1)[0], reason or default.split(" ", 1)[1])


class AttributeReader:
    """Reads attr_print0 attribute lists from a socket, NUL-terminated names and values."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _field(self) -> bytes:
        while b"\0" not in self.buffer:
            if len(self.buffer) > MAX_ATTRIBUTE:
                raise CleanupError("cleanup sent an attribute longer than %d bytes" % MAX_ATTRIBUTE)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CleanupError("cleanup closed the connection")
            self.buffer += chunk
        field, _, self.buffer = self.buffer.partition(b"\0")
        return field

    def read(self) -> Dict[str, str]:
        """One attribute list: every ``name``/``value`` up to the empty name that ends it."""
        values: Dict[str, str] = {}
        while True:
            name = self._field()
            if not name:
                return values
            values[name.decode("ascii", "replace")] = self._field().decode("utf-8", "replace")


def inject(addresses: List[str], flags: int, envelope: bytes, content: Iterable[bytes],
           timeout: float) -> Tuple[str, int, str]:
    """Hand one message to the first cleanup of ``addresses`` that answers; ``(queue_id, status, reason)``.

    ``content`` is the message in blocks (LF line ends).  Raises CleanupError
    (or OSError, socket.timeout) when no cleanup takes part to the end.
    """
    sock = None
    failures = []
    for address in addresses:
        try:
            sock = sockets.connect(address, timeout)
            break
        except (OSError, ValueError) as exc:
            failures.append("%s: %s" % (address, exc))
    if sock is None:
        raise CleanupError("no cleanup service answers (%s)" % "; ".join(failures))
    with sock:
        reader = AttributeReader(sock)
        queue_id = reader.read().get("queue_id")
        if not queue_id:
            raise CleanupError("cleanup sent no queue_id")
        pending = bytearray(attributes([("flags", str(flags))]) + envelope + record(REC_MESG, b""))
        for data in content_records(content):
            pending += data
            if len(pending) >= SEND_BUFFER:
                sock.sendall(pending)
                pending.clear()
        pending += record(REC_XTRA, b"") + record(REC_END, b"")
        sock.sendall(pending)
        answer = reader.read()
    try:
        status = int(answer["status"])
    except (KeyError, ValueError):
        raise CleanupError("cleanup sent no status (%r)" % answer) from None
    return queue_id, status, answer.get("reason", "")
