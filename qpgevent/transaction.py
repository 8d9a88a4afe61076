"""One mail transaction: envelope, headers, notes and the spooled message."""
import io
import itertools
import os
import shutil
import tempfile
import time
from typing import IO, Iterator, List, Optional, Union

from .address import Address
from .header import Header

_ids = itertools.count(1)


class Transaction:
    """Lives from MAIL (or the greeting) to the end of DATA, RSET or the disconnect.

    The message (headers, blank line, body) is kept with LF line endings, in
    memory up to ``size_threshold`` bytes and in a private spool file beyond.
    A ``binary`` transaction (``BODY=BINARYMIME``) keeps its body, from the
    blank line after the header block on, exactly as received: CRLF line
    ends and every lone CR or LF as the client sent it.
    """

    def __init__(self, connection_id: str = "0", spool_dir: Optional[str] = None, size_threshold: int = 10000) -> None:
        self.id = "%s.%d" % (connection_id, next(_ids))
        self.started = time.time()
        self.sender: Optional[Address] = None
        self.recipients: List[Address] = []
        self.header: Optional[Header] = None
        self.notes: dict = {}
        self.binary = False  # BODY=BINARYMIME: the body is the client's exact octets (set at the first BDAT)
        self.dsn: dict = {}  # RFC 3461 RET and ENVID from MAIL; NOTIFY/ORCPT are in recipient.notes["dsn"]
        self.spool_dir = spool_dir
        self.size_threshold = size_threshold
        self.data_size = 0
        self.body_start = 0
        self._memory: Optional[bytearray] = bytearray()
        self._spool: Optional[IO[bytes]] = None
        self._read_pos = 0
        self._temp_paths: List[str] = []

    # -- envelope -----------------------------------------------------------
    def add_recipient(self, address: Address) -> None:
        self.recipients.append(address)

    def remove_recipient(self, address: Union[Address, str]) -> None:
        self.recipients = [r for r in self.recipients if r != address]

    # -- body storage ---------------------------------------------------------
    def body_write(self, data: Union[str, bytes]) -> None:
        """Append to the message; text is stored as UTF-8."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if self._memory is not None:
            self._memory += data
            if len(self._memory) >= self.size_threshold and self.spool_dir is not None:
                self._spool_to_disk()
        else:
            self._spool.seek(0, io.SEEK_END)
            self._spool.write(data)
        self.data_size += len(data)

    def body_truncate(self) -> None:
        """Cut the message back to the end of its header block, for a filter that replaces the body.

        The blank separator line goes too: ``body_write`` the separator, then the new body.
        """
        if self._memory is not None:
            del self._memory[self.body_start:]
        else:
            self._spool.truncate(self.body_start)
        self.data_size = self.body_start

    def _spool_to_disk(self) -> None:
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="%s." % self.id, dir=self.spool_dir)  # mode 0600
        self._spool = os.fdopen(fd, "w+b")
        self._spool.write(self._memory)
        self._memory = None
        self._spool_path = path
        self._temp_paths.append(path)

    def set_body_start(self) -> None:
        """Mark the end of the header block: the body starts here."""
        self.body_start = self.data_size

    @property
    def body_length(self) -> int:
        """Bytes from the body start (the blank separator line included) to the end."""
        return self.data_size - self.body_start

    @property
    def body_fh(self) -> Optional[IO[bytes]]:
        """The open spool file, or None while the message is still in memory."""
        return self._spool

    def body_filename(self) -> str:
        """Path of the spool file with the whole message, spooling it to disk if needed."""
        if self._spool is None:
            if self.spool_dir is None:
                self.spool_dir = tempfile.gettempdir()
            self._spool_to_disk()
        self._spool.flush()
        return self._spool_path

    def body_blocks(self, start: Optional[int] = None, size: int = 65536) -> Iterator[bytes]:
        """The message from ``start`` (default: the body start) in blocks of bytes."""
        position = self.body_start if start is None else start
        if self._memory is not None:
            view = bytes(self._memory)
            for offset in range(position, len(view), size):
                yield view[offset:offset + size]
            return
        while True:
            self._spool.seek(position)
            block = self._spool.read(size)
            if not block:
                return
            position += len(block)
            yield block

    def body_as_bytes(self) -> bytes:
        return b"".join(self.body_blocks())

    def body_as_string(self) -> str:
        """The body (from the blank separator line on) as text."""
        return self.body_as_bytes().decode("utf-8", "surrogateescape")

    def body_resetpos(self) -> None:
        self._read_pos = self.body_start

    def body_getline(self) -> Optional[str]:
        """The next body line (with its LF), or None at the end; ``body_resetpos`` rewinds.

        Lines end at LF only: in a ``binary`` body they keep their CR, and a lone CR ends nothing.
        """
        if self._memory is not None:
            end = self._memory.find(b"\n", self._read_pos)
            end = len(self._memory) if end < 0 else end + 1
            line = bytes(self._memory[self._read_pos:end])
        else:
            self._spool.seek(self._read_pos)
            line = self._spool.readline()
        if not line:
            return None
        self._read_pos += len(line)
        return line.decode("utf-8", "surrogateescape")

    def body_lines(self) -> Iterator[str]:
        """Iterate over the body lines (with their LFs), starting at the blank separator."""
        position = self.body_start
        for line in io.BytesIO(b"".join(self.body_blocks(position))):
            yield line.decode("utf-8", "surrogateescape")

    __iter__ = body_lines

    def message_blocks(self, crlf: bool = False) -> Iterator[bytes]:
        """Header then body as bytes, ready for a queue: LF line ends, or CRLF with ``crlf``.

        A ``binary`` message always comes out exactly as received: header
        lines end in CRLF and the body's octets are untouched.
        """
        head = self.header.as_bytes() if self.header is not None else b""
        if self.binary:
            yield head.replace(b"\n", b"\r\n")
            yield from self.body_blocks()
            return
        blocks = itertools.chain((head,), self.body_blocks())
        if not crlf:
            yield from blocks
            return
        for block in blocks:
            yield block.replace(b"\n", b"\r\n")

    # -- scratch space --------------------------------------------------------
    def temp_file(self) -> str:
        """A fresh private file name in the spool dir, removed with the transaction."""
        os.makedirs(self.spool_dir or tempfile.gettempdir(), mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="%s.tmp." % self.id, dir=self.spool_dir)
        os.close(fd)
        self._temp_paths.append(path)
        return path

    def temp_dir(self) -> str:
        """A fresh private directory (0700), removed with the transaction."""
        path = tempfile.mkdtemp(prefix="%s.dir." % self.id, dir=self.spool_dir)
        self._temp_paths.append(path)
        return path

    def close(self) -> None:
        """Release the spool file and scratch space; the transaction is over."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._memory = bytearray()
        for path in self._temp_paths:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self._temp_paths = []


class PendingTransaction:
    """A hook's ``transaction`` while the session has none (before MAIL): the real one is made on first use.

    Plugins written for qpsmtpd may touch ``transaction`` in any hook; most
    never do before MAIL, and then an idle session holds no Transaction.
    """

    __slots__ = ("_session",)

    def __init__(self, session: "object") -> None:
        object.__setattr__(self, "_session", session)

    @property
    def made(self) -> Optional[Transaction]:
        """The session's transaction if something has made it meanwhile, else None."""
        return self._session.made_transaction

    def __getattr__(self, name: str) -> object:
        return getattr(self._session.transaction, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._session.transaction, name, value)

    def __repr__(self) -> str:
        return "<transaction not made yet of %r>" % (self._session,)
