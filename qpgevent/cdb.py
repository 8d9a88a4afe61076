"""Read D. J. Bernstein's constant databases (cdb), as qmail and qpsmtpd keep ``morercpthosts.cdb`` in.

The published format (https://cr.yp.to/cdb/cdb.txt): 256 pairs of
little-endian 32-bit numbers (position and slot count of a hash table),
then records ``klen dlen key data``, then the hash tables, whose slots hold
``hash position`` pairs.  The file is mapped into memory, so a large file
costs neither start-up time nor heap, and a lookup reads a few pages.
"""
import mmap
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Tuple

from .errors import ConfigError

_HEADER = 2048
_PAIR = struct.Struct("<LL")


def cdb_hash(key: bytes) -> int:
    """The cdb hash: h = ((h << 5) + h) ^ c, from 5381, in 32 bits."""
    h = 5381
    for byte in key:
        h = (((h << 5) + h) ^ byte) & 0xFFFFFFFF
    return h


class CdbFile(Mapping):
    """A cdb file as a read-only mapping of str to str (UTF-8; the first record of a key wins)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            if size < _HEADER:
                self._corrupt("shorter than the 2048-byte header")
            self._data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._tables = [_PAIR.unpack_from(self._data, 8 * i) for i in range(256)]
        for position, slots in self._tables:
            if position < _HEADER or position + 8 * slots > size:
                self._corrupt("a hash table points outside the file")
        # Records lie between the header and the first hash table.
        self._end = min(position for position, _ in self._tables)

    def _corrupt(self, why: str) -> None:
        raise ConfigError("not a cdb file (%s); rebuild it (qmail-newmrh, cdbmake) or replace it by a plain file "
                          "of the same name without .cdb, one entry a line (cdbdump < FILE lists the entries)"
                          % why, self.path)

    def _pair(self, offset: int) -> Tuple[int, int]:
        if offset + 8 > len(self._data):
            self._corrupt("a record runs past the end")
        return _PAIR.unpack_from(self._data, offset)

    def _record(self, position: int) -> Tuple[bytes, bytes, int]:
        """(key, data, position of the next record) of the record at ``position``."""
        klen, dlen = self._pair(position)
        start = position + 8
        if start + klen + dlen > len(self._data):
            self._corrupt("a record runs past the end")
        return self._data[start:start + klen], self._data[start + klen:start + klen + dlen], start + klen + dlen

    def __getitem__(self, key: str) -> str:
        wanted = key.encode("utf-8")
        h = cdb_hash(wanted)
        table, slots = self._tables[h & 0xFF]
        if slots:
            slot = (h >> 8) % slots
            for _ in range(slots):
                slot_hash, position = self._pair(table + 8 * slot)
                if position == 0:
                    break
                if slot_hash == h:
                    found, data, _ = self._record(position)
                    if found == wanted:
                        return data.decode("utf-8", "replace")
                slot = (slot + 1) % slots
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        position = _HEADER
        while position < self._end:
            key, _, position = self._record(position)
            if key not in seen:
                seen.add(key)
                yield key.decode("utf-8", "replace")

    def __len__(self) -> int:
        return sum(1 for _ in self)
