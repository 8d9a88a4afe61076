"""Receiving the DATA stream: line endings, dot-unstuffing, header split, size and line limits.

Pure bytes in, spool writes out: no sockets, so every split of the stream is testable.
Only ``CRLF . CRLF`` ends the data.  A bare CR or LF anywhere is either refused
(``reject``: the session answers and hangs up, so nothing after it can be read
as commands or as a second message) or turned into an ordinary line break
(``normalize``), never into an end of data.
"""
import re
from typing import List

from .header import Header

_HEADER_LINE = re.compile(rb"[!-9;-~]+:|[ \t]")  # field name then ':', or a continuation
# A whole header block of plain CRLF lines up to the blank line: fields whose
# name does not start with a dot (no unstuffing), continuations, no bare CR/LF.
_PLAIN_HEADER_BLOCK = re.compile(rb"(?:[!-\-/-9;-~][!-9;-~]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+\r\n")
MAX_HEADER_BYTES = 256 * 1024
HARD_LINE_LIMIT = 1024 * 1024  # the most a partial line may occupy when no limit is configured
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")


def _has_long_line(raw: bytes, limit: int) -> bool:
    """A line of ``raw`` reaches ``limit`` octets before its LF (0: no limit); a split is far cheaper than a regex."""
    return bool(limit) and len(raw) >= limit and max(map(len, raw.split(b"\n"))) >= limit


class DataReceiver:
    """Consumes the bytes that follow ``354`` until the end-of-data line."""

    def __init__(self, transaction, max_size: int = 0, max_line: int = 1000, bare_newline: str = "reject") -> None:
        self.transaction = transaction
        self.max_size = max_size
        self.normalize = bare_newline == "normalize"
        self.size = 0
        self.in_header = True
        self.header_lines: List[bytes] = []
        self.header_bytes = 0
        self.headers_ready = False
        self.done = False
        self.too_big = False
        self.line_too_long = False
        self.bare_newline = False
        self._mid_line = False  # inside an overlong line whose start was dropped
        self._after_crlf = True  # the next byte starts a CRLF-delimited line
        self._max_line = max_line
        self.line_limit = max_line if max_line else HARD_LINE_LIMIT  # what a line may occupy, in octets

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
        if self._after_crlf and buf[start:start + 3] == b".\r\n":
            self._finish_header()
            self.done = True
            return start + 3
        if self.in_header:
            return self._feed_header(buf, start)
        end = buf.find(b"\r\n.\r\n", start)
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
            if self._after_crlf and buf[start:start + 3] == b".\r\n":
                return start  # end of data: feed() takes it
            newline = buf.find(b"\n", start)
            if newline < 0:
                return self._partial(buf, start)
            raw = bytes(buf[start:newline + 1])
            after_crlf = self._after_crlf
            line = self._clean(raw)
            if line is None:
                return len(buf)
            if line == b"\n" or not self._is_header_line(line) or self.header_bytes > MAX_HEADER_BYTES:
                self._after_crlf = after_crlf
                self._finish_header()
                if line != b"\n" and not self.rejected:
                    # No blank line after the headers: add one, or a queue writing
                    # header + body would turn the first body line into a broken header.
                    self.transaction.body_write(b"\n")
                return start  # the line is read again as the first body line
            self.header_lines.append(line)
            self.header_bytes += len(line)
            self._store(line)
            start = newline + 1

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
        if _has_long_line(block, self._max_line):
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
        """Check and convert complete raw lines: CRLF to LF, dots unstuffed; None if refused."""
        crlf = raw.count(b"\r\n")
        bare = crlf != raw.count(b"\n") or crlf != raw.count(b"\r")
        if bare and not self.normalize:
            self.bare_newline = self.done = True
            return None
        if _has_long_line(raw, self._max_line):
            self.line_too_long = True
        # RFC 5321 4.5.2: drop the first dot of every line that starts with one.
        if raw[:1] == b"." and self._after_crlf:
            raw = raw[1:]
        raw = raw.replace(b"\r\n.", b"\r\n")
        self._after_crlf = raw.endswith(b"\r\n")
        if not bare:
            return raw.replace(b"\r\n", b"\n")
        # A bare CR kept in the spool would reach the next hop as CR, where it
        # might end a line (and the data: ``\r.\r\n``); store it as a line break.
        return _ANY_NEWLINE.sub(b"\n", raw)

    def _partial(self, buf: bytearray, start: int) -> int:
        """No complete line yet: keep it, unless it is already longer than any line may be."""
        if len(buf) - start <= self.line_limit:
            return start
        self.line_too_long = True
        self._mid_line = True
        return len(buf) - 1  # keep a trailing CR that a LF may complete

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
    """BDAT (RFC 3030) chunks, passed to a DataReceiver as the line stream DATA would carry.

    Chunks are octet-counted, so nothing in them can end the message early.
    They are cut at line ends, dot-stuffed (the receiver unstuffs) and read
    in ``normalize`` mode: a bare CR or LF becomes a line break in the spool,
    never a CR that a later hop could misread.
    """

    def __init__(self, receiver: DataReceiver) -> None:
        self.receiver = receiver
        receiver.normalize = True
        self._pending = bytearray()
        self._line_start = True  # the next byte starts a line after CRLF

    def lines(self, data: bytes, last: bool) -> bytes:
        """Complete lines of the chunk stream so far (all of it when ``last``), dot-stuffed."""
        pending = self._pending
        pending += data
        cut = len(pending) if last else pending.rfind(b"\n") + 1
        if last and pending and not pending.endswith(b"\n"):
            pending += b"\r\n"
            cut = len(pending)
        if not cut and len(pending) > self.receiver.line_limit:
            self.receiver.line_too_long = True  # a line longer than any may be; keep memory bounded
            cut = len(pending)
        piece = bytes(pending[:cut])
        del pending[:cut]
        if not piece:
            return b""
        stuffed = piece.replace(b"\r\n.", b"\r\n..")
        if self._line_start and piece[:1] == b".":
            stuffed = b"." + stuffed
        self._line_start = piece.endswith(b"\r\n")
        return stuffed
