"""RESP2, the Redis protocol, as bytes in and values out: no sockets, so the state store's client is a thin loop.

A command is an array of bulk strings; a reply is a simple string (``+``,
given as bytes), an error (``-``, given as a ReplyError value: inside an
array, as EXEC's results, it is one element among others), an integer
(``:``), a bulk string (``$``, bytes, ``$-1`` is None) or an array (``*``,
a list, ``*-1`` is None; arrays nest).  Anything else is a ProtocolError.
"""
import re
from typing import Any, Iterable, Optional, Tuple, Union

MAX_BULK = 512 * 1024 * 1024  # Redis's own limit (proto-max-bulk-len): a longer one is garbage, not "wait for more"
MAX_DEPTH = 32  # arrays within arrays: far beyond any reply we ask for, well short of Python's recursion limit
_INTEGER = re.compile(rb"-?[0-9]{1,19}")  # RESP2 integers are signed 64-bit
_LENGTH = re.compile(rb"-1|[0-9]{1,19}")
_KINDS = (b"+", b"-", b":", b"$", b"*")

Part = Union[str, bytes, int]


class ProtocolError(Exception):
    """The bytes are not RESP2: the connection they came on cannot be trusted any more."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``): the server understood the command and refused it."""


def encode(command: Iterable[Part]) -> bytes:
    """``command`` (str, bytes or int parts) as a RESP2 array of bulk strings."""
    parts = []
    for part in command:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif isinstance(part, int) and not isinstance(part, bool):
            part = b"%d" % part
        elif not isinstance(part, bytes):
            raise TypeError("a Redis command part is str, bytes or int, not %r" % (part,))
        parts.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"*%d\r\n%s" % (len(parts), b"".join(parts))


def parse(buffer: bytes, start: int = 0) -> Optional[Tuple[Any, int]]:
    """The reply that begins at ``buffer[start]`` and the offset just past it; None while it is incomplete."""
    return _parse(buffer, start, 0)


def _parse(buffer: bytes, start: int, depth: int) -> Optional[Tuple[Any, int]]:
    kind = buffer[start:start + 1]
    if kind not in _KINDS:
        if not kind:
            return None
        raise ProtocolError("reply type %r" % kind)
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    line, after = buffer[start + 1:end], end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return _number(_INTEGER, line), after
    if kind == b"$":
        size = _number(_LENGTH, line)
        if size < 0:
            return None, after
        if size > MAX_BULK:
            raise ProtocolError("bulk string of %d bytes" % size)
        if len(buffer) < after + size + 2:
            return None
        if buffer[after + size:after + size + 2] != b"\r\n":
            raise ProtocolError("bulk string of %d bytes not followed by CRLF" % size)
        return buffer[after:after + size], after + size + 2
    count = _number(_LENGTH, line)  # kind == b"*"
    if count < 0:
        return None, after
    if depth >= MAX_DEPTH:
        raise ProtocolError("arrays nested more than %d deep" % MAX_DEPTH)
    items = []
    for _ in range(count):
        parsed = _parse(buffer, after, depth + 1)
        if parsed is None:
            return None
        item, after = parsed
        items.append(item)
    return items, after


def _number(pattern: "re.Pattern[bytes]", line: bytes) -> int:
    if not pattern.fullmatch(line):
        raise ProtocolError("%r is not a number" % line[:40])
    return int(line)
