"""A clamd client: ``zINSTREAM`` and ``zVERSION`` of ClamAV's daemon (``man clamd``).

INSTREAM sends the data in chunks, each preceded by its length as 4 bytes
in network order, and a zero length to end; clamd answers ``stream: OK``,
``stream: NAME FOUND`` or ``... ERROR``.  The ``z`` form ends commands and
answers with a NUL byte.
"""
import struct
from typing import Iterable, Optional

from .scanning import ScanError, connect

DEFAULT_PORT = 3310
_MAX_REPLY = 64 * 1024


def instream(address: str, data: Iterable[bytes], timeout: float, chunk_size: int = 65536) -> Optional[str]:
    """The name of the virus clamd at ``address`` finds in ``data``, or None when clean; ScanError otherwise."""
    sock = connect(address, DEFAULT_PORT, timeout)
    try:
        try:
            sock.sendall(b"zINSTREAM\0")
            for block in data:
                for start in range(0, len(block), chunk_size):
                    piece = block[start:start + chunk_size]
                    sock.sendall(struct.pack(">I", len(piece)) + piece)
            sock.sendall(struct.pack(">I", 0))
        except OSError as exc:
            # clamd hangs up mid-stream when the data passes its StreamMaxLength; its reason is in the answer.
            answer = _answer(sock)
            raise ScanError("clamd at %s: %s" % (address, answer or exc)) from exc
        answer = _answer(sock)
    finally:
        sock.close()
    if answer.endswith(" FOUND"):
        return answer[:-len(" FOUND")].split(": ", 1)[-1]
    if answer.endswith(": OK"):
        return None
    raise ScanError("clamd at %s: %s" % (address, answer or "no answer"))


def version(address: str, timeout: float) -> str:
    """clamd's version line (``ClamAV 1.4.6/27000/...``); ScanError when it does not answer."""
    sock = connect(address, DEFAULT_PORT, timeout)
    try:
        sock.sendall(b"zVERSION\0")
        answer = _answer(sock)
    except OSError as exc:
        raise ScanError("clamd at %s: %s" % (address, exc)) from exc
    finally:
        sock.close()
    if not answer:
        raise ScanError("clamd at %s: no answer to VERSION" % address)
    return answer


def _answer(sock) -> str:
    """clamd's NUL-terminated answer ('' when it hung up without one)."""
    reply = b""
    try:
        while not reply.endswith(b"\0") and len(reply) < _MAX_REPLY:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    return reply.rstrip(b"\0").decode("utf-8", "replace").strip()
