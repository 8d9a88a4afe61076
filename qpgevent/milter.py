"""The MTA side of the milter protocol (libmilter's wire format, version 6): framing, negotiation, replies.

Every packet is a 4-byte big-endian length (command byte included), a
command byte and its data; strings are NUL-terminated.  The MTA sends one
command and reads replies until a final one (continue, accept, reject,
tempfail, reply code, discard, skip); at end of message the milter first
sends its modifications (add header, replace body, ...), then the final
reply.  ``progress`` replies restart the wait.  Blocking sockets with a
timeout on every wait: under gevent they pause only the calling session.
"""
import socket
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

VERSION = 6

# MTA -> milter commands
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"

# milter -> MTA replies: final ones end a command's exchange, the others are end-of-message actions
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

FINAL = {SMFIR_ACCEPT: "accept", SMFIR_CONTINUE: "continue", SMFIR_DISCARD: "discard", SMFIR_REJECT: "reject",
         SMFIR_TEMPFAIL: "tempfail", SMFIR_REPLYCODE: "replycode", SMFIR_SKIP: "skip",
         SMFIR_CONN_FAIL: "tempfail"}
ACTIONS = {SMFIR_ADDHEADER: "addheader", SMFIR_INSHEADER: "insheader", SMFIR_CHGHEADER: "chgheader",
           SMFIR_REPLBODY: "replbody", SMFIR_ADDRCPT: "addrcpt", SMFIR_ADDRCPT_PAR: "addrcpt",
           SMFIR_DELRCPT: "delrcpt", SMFIR_QUARANTINE: "quarantine", SMFIR_CHGFROM: "chgfrom"}

# SMFIF_*: what the milter may change; we offer all of them but the symbol list
SMFIF_ADDHDRS, SMFIF_CHGBODY, SMFIF_ADDRCPT, SMFIF_DELRCPT = 0x01, 0x02, 0x04, 0x08
SMFIF_CHGHDRS, SMFIF_QUARANTINE, SMFIF_CHGFROM, SMFIF_ADDRCPT_PAR = 0x10, 0x20, 0x40, 0x80
OFFERED_ACTIONS = 0xFF

# SMFIP_*: steps a milter skips (NO*), steps it sends no reply to (NR_*), and the SKIP and leading-space features
SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL, SMFIP_NORCPT = 0x01, 0x02, 0x04, 0x08
SMFIP_NOBODY, SMFIP_NOHDRS, SMFIP_NOEOH, SMFIP_NR_HDR = 0x10, 0x20, 0x40, 0x80
SMFIP_NOUNKNOWN, SMFIP_NODATA, SMFIP_SKIP, SMFIP_RCPT_REJ = 0x100, 0x200, 0x400, 0x800
SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL, SMFIP_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
SMFIP_NR_DATA, SMFIP_NR_UNKN, SMFIP_NR_EOH, SMFIP_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
SMFIP_HDR_LEADSPC = 0x100000
# RCPT_REJ is left out: rejected recipients never reach the milter (another plugin refused them first)
OFFERED_PROTOCOL = 0x1FFFFF & ~SMFIP_RCPT_REJ

# command -> (the flag that skips it, the flag that says the milter sends no reply to it)
STEP_FLAGS = {SMFIC_CONNECT: (SMFIP_NOCONNECT, SMFIP_NR_CONN), SMFIC_HELO: (SMFIP_NOHELO, SMFIP_NR_HELO),
              SMFIC_MAIL: (SMFIP_NOMAIL, SMFIP_NR_MAIL), SMFIC_RCPT: (SMFIP_NORCPT, SMFIP_NR_RCPT),
              SMFIC_DATA: (SMFIP_NODATA, SMFIP_NR_DATA), SMFIC_HEADER: (SMFIP_NOHDRS, SMFIP_NR_HDR),
              SMFIC_EOH: (SMFIP_NOEOH, SMFIP_NR_EOH), SMFIC_BODY: (SMFIP_NOBODY, SMFIP_NR_BODY)}

BODY_CHUNK = 65535  # libmilter's MILTER_CHUNK_SIZE: the largest body packet every milter accepts
_MAX_PACKET = 4 * 1024 * 1024  # what we read from a milter in one packet before calling it broken


class MilterError(Exception):
    """The milter cannot be reached, broke the protocol, or did not answer in time."""


@dataclass
class Reply:
    """A milter's answer to one command: the final ``action`` and, at end of message, its ``changes``.

    ``changes`` are ``(kind, values)`` in the order received; kinds are the values of ``ACTIONS``.
    ``text`` is a reply code's line (``554 5.7.1 go away``).
    """

    action: str
    text: str = ""
    changes: List[Tuple[str, tuple]] = field(default_factory=list)


CONTINUE = Reply("continue")


def nul(*words: str) -> bytes:
    """Words as NUL-terminated strings (UTF-8, undecodable octets kept)."""
    return b"".join(word.encode("utf-8", "surrogateescape") + b"\0" for word in words)


def split_nul(data: bytes) -> List[str]:
    """The NUL-terminated strings of ``data``."""
    words = data.split(b"\0")
    if words and words[-1] == b"":
        words.pop()
    return [word.decode("utf-8", "surrogateescape") for word in words]


def connect_data(hostname: str, ip: str, port: int) -> bytes:
    """SMFIC_CONNECT's data: host name, family, port and address (family ``U`` when there is no IP)."""
    if not ip:
        return nul(hostname) + b"U"
    family = b"6" if ":" in ip else b"4"
    return nul(hostname) + family + struct.pack("!H", port or 0) + nul(ip)


def parse_address(text: str) -> Tuple[str, object]:
    """A milter address as ``socket`` wants it: ``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:PATH``,
    ``HOST:PORT``, a bare port (on 127.0.0.1) or a path.  ValueError when it is none of these."""
    kind, _, rest = text.partition(":")
    if kind in ("inet", "inet6") and "@" in rest:
        port, _, host = rest.partition("@")
        return (socket.AF_INET6 if kind == "inet6" else socket.AF_INET), (host.strip("[]"), int(port))
    if kind in ("unix", "local") and rest:
        return socket.AF_UNIX, rest
    if text.startswith("/"):
        return socket.AF_UNIX, text
    if text.isdigit():
        return socket.AF_INET, ("127.0.0.1", int(text))
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        host = host.strip("[]")
        return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))
    raise ValueError("not a milter address: %r" % text)


class MilterClient:
    """One connection to a milter, negotiated; ``send`` runs one protocol step."""

    def __init__(self, address: Tuple[int, object], connect_timeout: float, command_timeout: float) -> None:
        family, where = address
        self.command_timeout = command_timeout
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(connect_timeout)
        try:
            self.sock.connect(where)
        except OSError as exc:
            self.sock.close()
            raise MilterError("cannot connect to %s: %s" % (where, exc)) from exc
        self.actions = 0
        self.protocol = 0
        self.version = 0

    def negotiate(self) -> None:
        """SMFIC_OPTNEG: offer version 6, every action and step flag we handle; keep what the milter takes."""
        self.write(SMFIC_OPTNEG, struct.pack("!III", VERSION, OFFERED_ACTIONS, OFFERED_PROTOCOL))
        command, data = self.read(self.command_timeout)
        if command != SMFIC_OPTNEG or len(data) < 12:
            raise MilterError("bad option negotiation reply %r" % command)
        self.version, actions, protocol = struct.unpack("!III", data[:12])
        if self.version < 2:
            raise MilterError("milter speaks protocol version %d; 2 or later needed" % self.version)
        if actions & ~OFFERED_ACTIONS or protocol & ~OFFERED_PROTOCOL:
            raise MilterError("milter wants actions 0x%x, protocol 0x%x beyond what we offer" % (actions, protocol))
        self.actions, self.protocol = actions, protocol

    def wants(self, command: bytes) -> bool:
        """False when the milter asked to skip this step."""
        skip = STEP_FLAGS.get(command, (0, 0))[0]
        return not self.protocol & skip

    def send(self, command: bytes, data: bytes = b"", macros: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None) -> Reply:
        """One step: its macros, the command, and the milter's reply (CONTINUE for a skipped or no-reply step)."""
        if not self.wants(command):
            return CONTINUE
        if macros:
            self.write(SMFIC_MACRO, command + nul(*(word for pair in macros.items() for word in pair)))
        self.write(command, data)
        if self.protocol & STEP_FLAGS.get(command, (0, 0))[1]:
            return CONTINUE
        return self.reply(timeout or self.command_timeout)

    def reply(self, timeout: float) -> Reply:
        """Read until a final reply; modifications before it are collected in order."""
        changes: List[Tuple[str, tuple]] = []
        while True:
            command, data = self.read(timeout)
            if command == SMFIR_PROGRESS:
                continue  # the milter is alive and working: wait again
            if command in FINAL:
                text = split_nul(data)[0] if command == SMFIR_REPLYCODE and data else ""
                return Reply(FINAL[command], text, changes)
            if command not in ACTIONS:
                raise MilterError("unknown reply %r" % command)
            changes.append((ACTIONS[command], _action_values(command, data)))

    def abort(self) -> None:
        """SMFIC_ABORT: forget the message in progress (no reply)."""
        self.write(SMFIC_ABORT)

    def close(self) -> None:
        """SMFIC_QUIT, then close; errors are of no interest any more."""
        try:
            self.sock.settimeout(1)
            self.write(SMFIC_QUIT)
        except (OSError, MilterError):
            pass
        self.sock.close()

    def write(self, command: bytes, data: bytes = b"") -> None:
        self.sock.settimeout(self.command_timeout)
        try:
            self.sock.sendall(struct.pack("!I", len(data) + 1) + command + data)
        except OSError as exc:
            raise MilterError("sending %r: %s" % (command, exc)) from exc

    def read(self, timeout: float) -> Tuple[bytes, bytes]:
        self.sock.settimeout(timeout)
        (length,) = struct.unpack("!I", self._exactly(4))
        if not 1 <= length <= _MAX_PACKET:
            raise MilterError("bad packet length %d" % length)
        packet = self._exactly(length)
        return packet[:1], packet[1:]

    def _exactly(self, size: int) -> bytes:
        parts = []
        while size:
            try:
                part = self.sock.recv(min(size, 65536))
            except socket.timeout as exc:
                raise MilterError("no answer within %ss" % self.sock.gettimeout()) from exc
            except OSError as exc:
                raise MilterError("reading: %s" % exc) from exc
            if not part:
                raise MilterError("the milter closed the connection")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)


def _action_values(command: bytes, data: bytes) -> tuple:
    """The arguments of one end-of-message action, decoded."""
    if command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        if len(data) < 4:
            raise MilterError("short %r reply" % command)
        (index,) = struct.unpack("!I", data[:4])
        words = split_nul(data[4:]) + ["", ""]
        return (index, words[0], words[1])
    if command == SMFIR_REPLBODY:
        return (data,)
    words = split_nul(data)
    if command == SMFIR_ADDHEADER:
        return tuple((words + ["", ""])[:2])
    return tuple(words) or ("",)
