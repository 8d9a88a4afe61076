"""A test milter: a real socket server speaking the milter protocol (the milter side), answering from a script.

opendkim (the real milter the tests also run) only ever adds headers and
rejects; this one covers the other actions: change, insert and delete a
header, replace the body, add and delete recipients, change the sender,
quarantine, discard, reply codes, skip and progress.  Its framing is written
here from the protocol description, independently of qpgevent/milter.py.

``TestMilter(replies={"R": [b"c", (b"r", b"")]}, eom=[(b"h", b"X-A\\0b\\0")])``:
``replies`` maps a command letter to the replies for its successive calls
(the last one repeats; a reply is a letter or a ``(letter, data)`` pair, or
``None`` for never answering); ``eom`` are the actions sent before the
final reply to end of message (``eom_final``, default continue).
Every connection's packets are recorded in ``sessions`` as ``(command, data)``.
"""
import socket
import struct
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple


def packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


class TestMilter:
    """A milter on a free 127.0.0.1 port; ``port``, ``sessions``, ``close()``."""

    __test__ = False

    def __init__(self, replies: Optional[Dict[str, Sequence]] = None, eom: Sequence[Tuple[bytes, bytes]] = (),
                 eom_final: object = b"c", actions: int = 0xFF, protocol: int = 0) -> None:
        self.replies = {key.encode(): list(value) for key, value in (replies or {}).items()}
        self.eom = list(eom)
        self.eom_final = eom_final
        self.actions = actions
        self.protocol = protocol
        self.sessions: List[List[Tuple[bytes, bytes]]] = []
        self.offered: Optional[Tuple[int, int, int]] = None
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record: List[Tuple[bytes, bytes]] = []
        self.sessions.append(record)
        calls: Dict[bytes, int] = {}
        conn.settimeout(30)
        try:
            while True:
                head = self._read(conn, 4)
                if head is None:
                    return
                (length,) = struct.unpack(">I", head)
                body = self._read(conn, length)
                command, data = body[:1], body[1:]
                record.append((command, data))
                if command == b"O":
                    self.offered = struct.unpack(">III", data[:12])
                    conn.sendall(packet(b"O", struct.pack(">III", 6, self.actions, self.protocol)))
                elif command in (b"D", b"A"):
                    continue  # macros and abort get no reply
                elif command == b"Q":
                    return
                elif command == b"E":
                    for letter, payload in self.eom:
                        conn.sendall(packet(letter, payload))
                    self._answer(conn, self.eom_final)
                else:
                    script = self.replies.get(command) or [b"c"]
                    turn = calls.get(command, 0)
                    calls[command] = turn + 1
                    self._answer(conn, script[min(turn, len(script) - 1)])
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, reply: object) -> None:
        if reply is None:
            self._stop.wait(60)  # a milter that never answers
            return
        letter, payload = (reply, b"") if isinstance(reply, bytes) else reply
        conn.sendall(packet(letter, payload))

    @staticmethod
    def _read(conn: socket.socket, size: int) -> Optional[bytes]:
        data = b""
        while len(data) < size:
            part = conn.recv(size - len(data))
            if not part:
                return None
            data += part
        return data

    def commands(self, session: int = -1) -> List[bytes]:
        return [command for command, _ in self.sessions[session]]

    def wait_for(self, command: bytes, timeout: float = 5) -> None:
        """Until the last session has sent ``command`` (its packets arrive in another thread)."""
        deadline = time.monotonic() + timeout
        while command not in self.commands():
            assert time.monotonic() < deadline, "no %r from the MTA within %ss" % (command, timeout)
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
