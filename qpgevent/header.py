"""The header block of a message: raw values, order kept, names case-insensitive."""
import re
from typing import Iterator, List, Optional, Tuple

_NEW_LINE = re.compile(r"\n(?![ \t])")
_FIELD = re.compile(r"([!-9;-~]+):([ \t]*)")


class ParsedValue(str):
    """A value as received; ``lead`` is the whitespace that followed the colon.

    Writing it back with that whitespace keeps the header byte-for-byte as
    received, which DKIM ``simple`` canonicalization depends on.
    """

    lead = " "


class Header:
    """Message headers as ``(name, raw value)`` pairs; folded values are kept as received."""

    def __init__(self, fields: Optional[List[Tuple[str, str]]] = None) -> None:
        self.fields: List[Tuple[str, str]] = fields or []

    @classmethod
    def parse(cls, text: str) -> "Header":
        """Parse a header block (LF or CRLF line endings), as the ``email`` package's compat32 policy reads it.

        Values are kept as received (folding included); the whitespace after
        each colon is kept beside them.  A line that is neither ``name:`` nor a
        continuation ends the block.  Written out by hand: the block is parsed
        for every message, and the ``email`` parser costs ten times as much.
        """
        fields: List[Tuple[str, str]] = []
        name = value = lead = None
        for line in text.replace("\r\n", "\n").split("\n"):
            if line[:1] in (" ", "\t") and line:
                if name is None:
                    break  # a continuation with nothing to continue
                value += "\n" + line
                continue
            if name is not None:
                fields.append((name, _parsed(value, lead)))
                name = None
            match = _FIELD.match(line)
            if match is None:
                break
            name, lead = match.group(1, 2)
            value = line[match.end():]
        if name is not None:
            fields.append((name, _parsed(value, lead)))
        return cls(fields)

    def get(self, name: str, index: int = 0) -> Optional[str]:
        """Value of the ``index``-th field called ``name``, or None."""
        values = self.get_all(name)
        return values[index] if -len(values) <= index < len(values) else None

    def get_all(self, name: str) -> List[str]:
        key = name.lower()
        return [value for field, value in self.fields if field.lower() == key]

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def names(self) -> List[str]:
        """Distinct field names in order of first appearance."""
        seen, out = set(), []
        for field, _ in self.fields:
            if field.lower() not in seen:
                seen.add(field.lower())
                out.append(field)
        return out

    def add(self, name: str, value: str, index: Optional[int] = None) -> None:
        """Append a field, or insert it at ``index`` (0 prepends, as for Received)."""
        value = _folded(value)
        if index is None:
            self.fields.append((name, value))
        else:
            self.fields.insert(index, (name, value))

    def delete(self, name: str, index: Optional[int] = None) -> None:
        """Remove every field called ``name``, or only its ``index``-th occurrence."""
        key = name.lower()
        positions = [i for i, (field, _) in enumerate(self.fields) if field.lower() == key]
        if index is not None:
            positions = positions[index:index + 1] if -len(positions) <= index < len(positions) else []
        for i in reversed(positions):
            del self.fields[i]

    def replace(self, name: str, value: str, index: int = 0) -> None:
        """Set the ``index``-th ``name`` field to ``value``, adding it if absent."""
        key = name.lower()
        positions = [i for i, (field, _) in enumerate(self.fields) if field.lower() == key]
        if -len(positions) <= index < len(positions):
            self.fields[positions[index]] = (self.fields[positions[index]][0], _folded(value))
        else:
            self.add(name, value)

    def rename(self, old: str, new: str) -> None:
        key = old.lower()
        self.fields = [(new if field.lower() == key else field, value) for field, value in self.fields]

    def as_string(self) -> str:
        """The header block with LF line endings (no blank separator line)."""
        return "".join("%s:%s%s\n" % (name, getattr(value, "lead", " "), value.replace("\r\n", "\n"))
                       for name, value in self.fields)

    def as_bytes(self) -> bytes:
        return self.as_string().encode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, name: str) -> bool:
        return self.count(name) > 0


def _folded(value: str) -> str:
    """A value a plugin gives, made safe: every line break starts a continuation line.

    Client text copied into a header (a HELO name, a user name) can then
    never add a header line of its own.
    """
    value = value.rstrip("\r\n").replace("\r\n", "\n").replace("\r", "\n")
    return _NEW_LINE.sub("\n ", value)


def _parsed(value: str, lead: str) -> ParsedValue:
    parsed = ParsedValue(value)
    parsed.lead = lead
    return parsed
