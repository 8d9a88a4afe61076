"""What the client's next bytes are: one input mode object per session at a time.

A session reads commands (``COMMAND``), the rest of a line too long to be
one (``SkipLine``), an answer in an AUTH exchange (``SaslAnswer``), message
data after ``354`` (``DataStream``) or the octets of a BDAT chunk
(``ChunkOctets``).  Each mode takes what it can from the session's buffer,
returns where the unread part starts, and hands over by setting
``session.mode``; no other state says which input is expected.
"""
from typing import Any

from . import replies as R
from .constants import LOGERROR
from .data import DataReceiver
from .errors import Disconnect
from .results import PluginFailure

MAX_AUTH_LINE = 12288  # RFC 4954 4: SASL responses may be this long; the longest line any mode waits for


class CommandMode:
    """Each CRLF-terminated line is a command."""

    in_data = False

    def feed(self, session: Any, buf: bytearray, position: int) -> int:
        newline = buf.find(b"\n", position)
        if newline < 0:
            if len(buf) - position > MAX_AUTH_LINE:
                # One reply for the line, however many reads its rest takes to arrive.
                session.reply(R.LINE_TOO_LONG)
                session.mode = SKIP_LINE
                return len(buf)
            return position
        self.line(session, bytes(buf[position:newline + 1]))
        return newline + 1

    def line(self, session: Any, raw: bytes) -> None:
        session.command_line(raw)


class SkipLine(CommandMode):
    """The rest of an overlong line, already answered: dropped up to its end."""

    def feed(self, session: Any, buf: bytearray, position: int) -> int:
        newline = buf.find(b"\n", position)
        if newline < 0:
            return len(buf)
        session.mode = COMMAND
        return newline + 1


class SaslAnswer(CommandMode):
    """The next line answers the challenge of an AUTH exchange (RFC 4954 4)."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange

    def line(self, session: Any, raw: bytes) -> None:
        session.mode = COMMAND  # the exchange sets a new SaslAnswer if it challenges again
        session.guarded("auth", session.sasl_answer, self.exchange, raw)


class DataStream:
    """The message after ``354``, up to ``CRLF.CRLF``."""

    in_data = True

    def __init__(self, receiver: DataReceiver) -> None:
        self.receiver = receiver

    def feed(self, session: Any, buf: bytearray, position: int) -> int:
        receiver = self.receiver
        while True:
            before = (position, receiver.in_header)
            position = receiver.feed(buf, position)
            if receiver.headers_ready:
                receiver.headers_ready = False
                session.headers_end()
            if receiver.bare_newline:
                session.mode = COMMAND
                session.reply(R.BARE_NEWLINE, where="the message data")
                session.log(LOGERROR, "bare CR or LF in DATA: possible SMTP smuggling, closing the connection")
                raise Disconnect
            if receiver.done:
                session.mode = COMMAND
                try:
                    session.end_of_data(receiver)
                except PluginFailure:
                    session.reply(R.PLUGIN_FAILED)
                    session.end_transaction()
                return position
            if (position, receiver.in_header) == before:
                return position  # waiting for the rest of a line


class ChunkOctets:
    """The octets of one BDAT chunk (RFC 3030): counted, never parsed for an end."""

    in_data = True

    def __init__(self, size: int, last: bool) -> None:
        self.size = size
        self.left = size
        self.last = last

    def feed(self, session: Any, buf: bytearray, position: int) -> int:
        take = min(len(buf) - position, self.left)
        if take:
            self.left -= take
            session.chunk_data(bytes(buf[position:position + take]))
        if not self.left:
            session.mode = COMMAND
            session.end_chunk(self)
        return position + take


COMMAND = CommandMode()
SKIP_LINE = SkipLine()
