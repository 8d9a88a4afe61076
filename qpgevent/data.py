"""Receiving the message: line endings, dot-unstuffing, header split, size and line limits.

Pure bytes in, spool writes out: no sockets, so every split of the stream is testable.

DATA (RFC 5321 4.5.2): only ``CRLF . CRLF`` ends the data, and the first dot of
a line that starts with one is removed.  A bare CR or LF anywhere is either
refused (``reject``: the session answers and hangs up, so nothing after it can
be read as commands or as a second message) or turned into an ordinary line
break (``normalize``), never into an end of data.

BDAT (RFC 3030): the chunks are octet-counted, so nothing in them ends the
message and no dot is added or removed; a text message is read in
``normalize`` mode, and the body of a ``BODY=BINARYMIME`` message (from the
blank line after its header block) is stored exactly as it arrives.

Lines may be of any length unless a limit (``max_line_length``) is set: a line
still open after ``PIECE`` octets is stored in pieces as it arrives, so the
spool keeps it whole and memory stays bounded.
"""
import re
from typing import Callable, List

from .header import Header

_HEADER_LINE = re.compile(rb"[!-9;-~]+:|[ \t]")  # field name then ':', or a continuation
# A whole header block of plain CRLF lines up to the blank line: fields whose
# name does not start with a dot (no unstuffing), continuations, no bare CR/LF.
_PLAIN_HEADER_BLOCK = re.compile(rb"(?:[!-\-/-9;-~][!-9;-~]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+\r\n")
MAX_HEADER_BYTES = 256 * 1024  # a header line that would take the block past this starts the body
PIECE = 64 * 1024  # without a line limit, a line still open after this many octets is stored in pieces
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")


def _has_long_line(lines: bytes, limit: int) -> bool:
    """A line of ``lines`` reaches ``limit`` octets before its LF (0: no limit); a split is far cheaper than a regex."""
    return bool(limit) and len(lines) >= limit and max(map(len, lines.split(b"\n"))) >= limit


class DataReceiver:
    """Consumes the message bytes: those that follow ``354`` until the end-of-data line, or BDAT chunks.

    ``max_line`` is the strict line limit in octets with the CRLF, the
    transparency dot not counted (RFC 5321 4.5.3.1.6); 0 accepts any length.
    ``dots`` is False for BDAT: no dot transparency, no end-of-data line.
    """

    def __init__(self, transaction, max_size: int = 0, max_line: int = 0, bare_newline: str = "reject",
                 dots: bool = True) -> None:
        self.transaction = transaction
        self.max_size = max_size
        self.normalize = bare_newline == "normalize"
        self.dots = dots
        self.binary = transaction.binary  # BINARYMIME: the body is stored exactly as received
        self.size = 0
        self.in_header = True
        self.header_lines: List[bytes] = []
        self.header_bytes = 0
        self.headers_ready = False
        self.done = False
        self.too_big = False
        self.line_too_long = False
        self.bare_newline = False
        self._mid_line = False  # inside an overlong line whose start was dropped (strict limit only)
        self._after_crlf = True  # the next byte starts a CRLF-delimited line
        self.line_limit = max_line

    @property
    def rejected(self) -> bool:
        return self.too_big or self.line_too_long or self.bare_newline

    def feed(self, buf: bytearray, start: int) -> int:
        """Take complete lines of ``buf`` from ``start``; return where the unread part begins.

        Stops right after the header block with ``headers_ready`` set, so the
        session can run ``data_headers_end`` before the body is stored.
        """
        if self._mid_line:
            newline = buf.find(b"\n", start)
            if newline < 0:
                return max(start, len(buf) - 1)
            self._after_crlf = buf[newline - 1:newline] == b"\r"
            start, self._mid_line = newline + 1, False
        if self.dots and self._after_crlf and buf[start:start + 3] == b".\r\n":
            self._finish_header()
            self.done = True
            return start + 3
        if self.in_header:
            return self._feed_header(buf, start)
        if self.binary:
            if start < len(buf):
                self._store(bytes(buf[start:]))
            return len(buf)
        end = buf.find(b"\r\n.\r\n", start) if self.dots else -1
        if end >= 0:
            block_end, resume = end + 2, end + 5
        else:
            block_end = buf.rfind(b"\n", start) + 1
            if block_end <= start:
                return self._partial(buf, start)
            resume = block_end
        block = self._clean(bytes(buf[start:block_end]))
        if block is None:
            return len(buf)
        self._store(block)
        self.done = end >= 0
        return resume

    def finish(self) -> None:
        """The data has ended without an end-of-data line (BDAT LAST)."""
        self._finish_header()
        self.done = True

    def _feed_header(self, buf: bytearray, start: int) -> int:
        if self._after_crlf and not self.header_lines:
            position = self._whole_header(buf, start)
            if position is not None:
                return position
        while True:
            if self.dots and self._after_crlf and buf[start:start + 3] == b".\r\n":
                return start  # end of data: feed() takes it
            newline = buf.find(b"\n", start)
            if newline < 0:
                if self.line_limit or self.header_bytes + len(buf) - start <= MAX_HEADER_BYTES:
                    return self._partial(buf, start)
                self._end_header()  # a header line this long is body text: stored whole, in pieces
                return start
            raw = bytes(buf[start:newline + 1])
            after_crlf = self._after_crlf
            line = self._clean(raw)
            if line is None:
                return len(buf)
            if line == b"\n" or not self._is_header_line(line) or self.header_bytes + len(line) > MAX_HEADER_BYTES:
                self._after_crlf = after_crlf
                self._end_header(separator=line != b"\n")
                return start  # the line is read again as the first body line
            self.header_lines.append(line)
            self.header_bytes += len(line)
            self._store(line)
            start = newline + 1

    def _end_header(self, separator: bool = True) -> None:
        """The header block is over; ``separator``: the next line is not the blank line, so add one.

        Without it a queue writing header + body would turn the first body line into a broken header.
        """
        self._finish_header()
        if separator and not self.rejected:
            self.transaction.body_write(b"\r\n" if self.binary else b"\n")

    def _whole_header(self, buf: bytearray, start: int):
        """The common case in one step: the whole block has arrived and needs no care; None otherwise.

        Stores it as the line-by-line path would and returns where its blank line starts.
        """
        end = buf.find(b"\r\n\r\n", start)
        if end < 0 or end + 4 - start > MAX_HEADER_BYTES:
            return None
        match = _PLAIN_HEADER_BLOCK.match(buf, start)
        if match is None or match.end() != end + 4:
            return None
        block = bytes(buf[start:end + 2])
        if _has_long_line(block, self.line_limit):
            return None  # the line-by-line path says which and answers for it
        block = block.replace(b"\r\n", b"\n")
        self.header_lines.append(block)
        self.header_bytes += len(block)
        self._store(block)
        self._finish_header()
        return end + 2

    def _is_header_line(self, line: bytes) -> bool:
        """``Name:`` or, after one, a folded continuation (a leading one would be dropped by the parser)."""
        return bool(_HEADER_LINE.match(line)) and (bool(self.header_lines) or line[:1] not in b" \t")

    def _clean(self, raw: bytes):
        """Check and convert complete raw lines (or a piece of one): CRLF to LF, dots unstuffed; None if refused."""
        crlf = raw.count(b"\r\n")
        bare = crlf != raw.count(b"\n") or crlf != raw.count(b"\r")
        if bare and not self.normalize:
            self.bare_newline = self.done = True
            return None
        if self.dots:
            # RFC 5321 4.5.2: drop the first dot of every line that starts with one.
            if raw[:1] == b"." and self._after_crlf:
                raw = raw[1:]
            raw = raw.replace(b"\r\n.", b"\r\n")
        # RFC 5321 4.5.3.1.6: the length is that of the line without its transparency dot.
        if _has_long_line(raw, self.line_limit):
            self.line_too_long = True
        self._after_crlf = raw.endswith(b"\r\n")
        if not bare:
            # every CR starts a CRLF: deleting them all is CRLF to LF, at a third of replace()'s cost
            return raw.translate(None, b"\r")
        # A bare CR kept in the spool would reach the next hop as CR, where it
        # might end a line (and the data: ``\r.\r\n``); store it as a line break.
        return _ANY_NEWLINE.sub(b"\n", raw)

    def _partial(self, buf: bytearray, start: int) -> int:
        """No complete line yet: keep it while short, then store it in pieces (or drop it over a strict limit)."""
        length = len(buf) - start
        if self.line_limit:
            if length <= self.line_limit:
                return start
            self.line_too_long = True
            self._mid_line = True
            return len(buf) - 1  # keep a trailing CR that a LF may complete
        if length <= PIECE or self.in_header:
            return start  # a header line is kept whole: _feed_header bounds it by MAX_HEADER_BYTES
        cut = len(buf) - 1 if buf[-1] == 13 else len(buf)  # a trailing CR may start the line's CRLF
        piece = self._clean(bytes(buf[start:cut]))
        if piece is None:
            return len(buf)
        self._store(piece)
        return cut

    def _finish_header(self) -> None:
        if not self.in_header:
            return
        self.in_header = False
        self.headers_ready = True
        text = b"".join(self.header_lines).decode("utf-8", "surrogateescape")
        self.transaction.header = Header.parse(text) if text else Header()
        self.transaction.set_body_start()

    def _store(self, data: bytes) -> None:
        self.size += len(data)
        if self.max_size and self.size > self.max_size:
            self.too_big = True
        if not self.rejected:
            self.transaction.body_write(data)


class ChunkReceiver:
    """BDAT (RFC 3030) chunks, read by a DataReceiver without dot transparency.

    Chunks are octet-counted, so nothing in them can end the message early, and
    no dot is added or removed.  A text message is read in ``normalize`` mode:
    a bare CR or LF becomes a line break in the spool, never a CR that a later
    hop could misread.  ``headers_end`` is called once the header block is in.
    """

    def __init__(self, transaction, max_size: int, max_line: int, headers_end: Callable[[], None]) -> None:
        self.receiver = DataReceiver(transaction, max_size, max_line, "normalize", dots=False)
        self._headers_end = headers_end
        self._buffer = bytearray()  # the start of a line that has not ended yet

    def feed(self, data: bytes) -> None:
        """Chunk octets, as they arrive."""
        buf, receiver = self._buffer, self.receiver
        buf += data
        position = 0
        while position < len(buf):
            before = (position, receiver.in_header)
            position = receiver.feed(buf, position)
            self._headers_ready()
            if (position, receiver.in_header) == before:
                break
        del buf[:position]

    def finish(self) -> None:
        """The LAST chunk is in: a text line left open gets its CRLF, and the message ends."""
        if self._buffer and not self._buffer.endswith(b"\n"):
            self.feed(b"\r\n")
        self.receiver.finish()
        self._headers_ready()

    def over_size(self) -> bool:
        """The message is over ``databytes`` already (and marked too big), counting the open line held here:
        it will be stored too."""
        receiver = self.receiver
        if receiver.max_size and receiver.size + len(self._buffer) > receiver.max_size:
            receiver.too_big = True
        return receiver.too_big

    def _headers_ready(self) -> None:
        if self.receiver.headers_ready:
            self.receiver.headers_ready = False
            self._headers_end()
