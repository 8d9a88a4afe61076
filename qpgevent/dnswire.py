"""DNS messages on the wire (RFC 1035) for the resolver's single questions: build a query, read its response.

Pure (no sockets, no gevent) and lean: the resolver asks a dozen questions
per message, and dnspython's general message objects cost several times
what these few byte operations do.

A query carries an EDNS0 OPT record (RFC 6891) offering 1232-octet UDP
answers: DKIM keys and long SPF records then fit in one UDP exchange
instead of a truncated answer and a TCP retry, and 1232 octets avoids IP
fragmentation (the DNS flag day 2020 value).
"""
import struct
from typing import Any, List, NamedTuple, Tuple

TYPE_CODES = {"A": 1, "AAAA": 28, "MX": 15, "TXT": 16, "PTR": 12}
NOERROR, FORMERR, NXDOMAIN = 0, 1, 3
CLASS_IN = 1
CNAME, SOA = 5, 6
MAX_CHAIN = 16  # CNAMEs followed inside one answer: fewer than this, as dnspython allows
EDNS_UDP_SIZE = 1232
# The header after the id: RD set; one question, one additional record (the OPT).
_QUERY_HEADER = struct.pack("!HHHHH", 0x0100, 1, 0, 0, 1)
# OPT: the root as owner, type 41, the UDP size in the class field, version 0 and no flags, no options.
_OPT = b"\x00" + struct.pack("!HHIH", 41, EDNS_UDP_SIZE, 0, 0)
# Label octets that dnspython writes as they are; any other is escaped in the text form.
_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
_RR = struct.Struct("!HHIH")


class ParseError(ValueError):
    """Not a well-formed response: the resolver counts that server as failed."""


class Response(NamedTuple):
    """What the resolver needs of a response.

    ``records`` are those of the asked type for the asked name (after the
    answer's CNAME chain), decoded as qpgevent.dns.Result documents them;
    ``ttl`` is the least TTL of the CNAMEs and that rrset, or without records
    the negative TTL (RFC 2308 5: the SOA's TTL capped by its MINIMUM; 0
    without an SOA: such an answer is not cached).
    """

    rcode: int
    truncated: bool
    records: Tuple[Any, ...] = ()
    ttl: int = 0


def encode_name(name: str) -> bytes:
    """An ASCII host name (trailing dot optional) in wire form; ValueError for an empty or too long label or name."""
    name = name[:-1] if name.endswith(".") else name
    if not name:
        return b"\x00"
    wire = bytearray()
    for label in name.encode("ascii").split(b"."):
        if not 0 < len(label) < 64:
            raise ValueError("empty or over 63 octets label in %r" % name)
        wire.append(len(label))
        wire += label
    wire.append(0)
    if len(wire) > 255:
        raise ValueError("name over 255 octets: %r" % name)
    return bytes(wire)


def question(qname: bytes, rdtype: str) -> bytes:
    """The question section for ``qname`` (wire form) and ``rdtype`` (a TYPE_CODES key) in class IN."""
    return qname + struct.pack("!HH", TYPE_CODES[rdtype], CLASS_IN)


def make_query(qid: int, asked: bytes, edns: bool = True) -> bytes:
    """A recursive query with id ``qid`` for the ``asked`` question section; over TCP without the length prefix."""
    if edns:
        return struct.pack("!H", qid) + _QUERY_HEADER + asked + _OPT
    return struct.pack("!H", qid) + _QUERY_HEADER[:-2] + b"\x00\x00" + asked


def answers(wire: bytes, qid: int, asked: bytes) -> bool:
    """True if ``wire`` is a response to our query: our id, QR set, and our question (names compared caselessly).

    Anything else is to be ignored, not failed on (RFC 5452: a spoofing attempt or a late answer).
    """
    return (len(wire) >= 12 + len(asked) and wire[0] == qid >> 8 and wire[1] == qid & 0xFF and wire[2] & 0x80
            and wire[4:6] == b"\x00\x01" and wire[12:12 + len(asked)].lower() == asked.lower())


def parse(wire: bytes, asked: bytes) -> Response:
    """Read a response that ``answers`` our question ``asked``; ParseError if it is malformed."""
    try:
        return _parse(wire, asked)
    except (IndexError, struct.error) as exc:
        raise ParseError("truncated or malformed message: %s" % exc) from None


def _parse(wire: bytes, asked: bytes) -> Response:
    flags, qdcount, ancount, nscount = struct.unpack_from("!HHHH", wire, 2)
    rcode = flags & 0x0F
    if flags & 0x0200:  # TC: the rest is not worth reading, the question goes over TCP
        return Response(rcode, True)
    if qdcount != 1:
        raise ParseError("%d questions" % qdcount)
    qtype = struct.unpack_from("!H", asked, len(asked) - 4)[0]
    offset = 12 + len(asked)
    answer, offset = _records(wire, offset, ancount)
    target = asked[:-4].lower()
    ttl = None
    for _ in range(MAX_CHAIN):
        rrset = [rr for rr in answer if rr[1] == qtype and rr[0] == target]
        if rrset and rcode == NXDOMAIN:
            raise ParseError("NXDOMAIN with an answer")
        if rrset:
            ttl = min([rr[2] for rr in rrset] + ([ttl] if ttl is not None else []))
            return Response(rcode, False, _decode(wire, qtype, rrset), ttl)
        cnames = [rr for rr in answer if rr[1] == CNAME and rr[0] == target]
        if not cnames:
            break
        # A name has one CNAME at most: of several (a broken server) the last holds, as in dnspython.
        ttl = min([rr[2] for rr in cnames] + ([ttl] if ttl is not None else []))
        cname = cnames[-1]
        target, end = _name(wire, cname[3])
        if end != cname[3] + cname[4]:
            raise ParseError("CNAME data of the wrong length")
        target = target.lower()
    else:
        raise ParseError("CNAME chain longer than %d" % MAX_CHAIN)
    authority, _ = _records(wire, offset, nscount)
    negative = _negative_ttl(wire, target, authority)
    return Response(rcode, False, (), negative if ttl is None else min(ttl, negative))


def _records(wire: bytes, offset: int, count: int) -> Tuple[List[Tuple[bytes, int, int, int, int]], int]:
    """``count`` records of class IN from ``offset``: (owner lowercased, type, ttl, data offset, data length)."""
    records = []
    for _ in range(count):
        owner, offset = _name(wire, offset)
        rrtype, rrclass, ttl, length = _RR.unpack_from(wire, offset)
        offset += 10
        if offset + length > len(wire):
            raise ParseError("record data beyond the message")
        if rrclass == CLASS_IN:
            records.append((owner.lower(), rrtype, ttl, offset, length))
        offset += length
    return records, offset


def _name(wire: bytes, offset: int) -> Tuple[bytes, int]:
    """The name at ``offset`` in uncompressed wire form, and the offset after it where it is written.

    A compression pointer must point before the start of the labels it ends
    (the name's own start, or the last pointer's target), as dnspython
    requires too: every jump then lands lower than the one before, so no
    chain of pointers loops.  Labels past 255 octets stop the reading at once.
    """
    labels = []
    end = None
    floor = offset  # where the labels being read began
    size = 0
    while True:
        length = wire[offset]
        if length >= 0xC0:
            pointer = (length & 0x3F) << 8 | wire[offset + 1]
            if pointer >= floor:
                raise ParseError("compression pointer not backwards")
            if end is None:
                end = offset + 2
            offset = floor = pointer
        elif length > 63:
            raise ParseError("unknown label type")
        elif length == 0:
            name = b"".join(labels) + b"\x00"
            if len(name) > 255:
                raise ParseError("name over 255 octets")
            return name, offset + 1 if end is None else end
        else:
            label = wire[offset:offset + length + 1]
            if len(label) <= length:
                raise ParseError("label beyond the message")
            labels.append(label)
            size += length + 1
            if size > 255:
                raise ParseError("name over 255 octets")
            offset += length + 1


def name_text(name: bytes) -> str:
    """A wire-form name as text without the trailing dot (the root is "."), special octets escaped as dnspython does."""
    labels = []
    offset = 0
    while name[offset]:
        label = name[offset + 1:offset + 1 + name[offset]]
        offset += 1 + name[offset]
        if label.translate(None, _PLAIN):
            label = "".join(chr(c) if c in _PLAIN else "\\" + chr(c) if c > 0x20 and c < 0x7F else "\\%03d" % c
                            for c in label).encode("ascii")
        labels.append(label)
    return b".".join(labels).decode("ascii") if labels else "."


def _decode(wire: bytes, qtype: int, rrset: List[Tuple[bytes, int, int, int, int]]) -> Tuple[Any, ...]:
    """The rrset's records, duplicates dropped (an rrset is a set), in the order received."""
    records = {}
    for _, _, _, offset, length in rrset:
        data = wire[offset:offset + length]
        if qtype == 1:
            if length != 4:
                raise ParseError("A record of %d octets" % length)
            record: Any = "%d.%d.%d.%d" % tuple(data)
            key: Any = record
        elif qtype == 28:
            if length != 16:
                raise ParseError("AAAA record of %d octets" % length)
            record = key = ipv6_text(data)
        elif qtype == 16:
            strings = []
            at = 0
            while at < length:
                strings.append(data[at + 1:at + 1 + data[at]])
                at += 1 + data[at]
            if at != length:
                raise ParseError("TXT string beyond its record")
            record, key = b"".join(strings).decode("utf-8", "replace"), data
        else:  # MX or PTR: a name, after a preference for MX
            start = offset + 2 if qtype == 15 else offset
            if start > offset + length:
                raise ParseError("MX record too short")
            name, end = _name(wire, start)
            if end != offset + length:
                raise ParseError("record data of the wrong length")
            record = name_text(name)
            key = name.lower()
            if qtype == 15:
                preference = struct.unpack_from("!H", data)[0]
                record, key = (preference, record), (preference, key)
        records.setdefault(key, record)
    return tuple(records.values())


def _negative_ttl(wire: bytes, target: bytes, authority: List[Tuple[bytes, int, int, int, int]]) -> int:
    """min(TTL, MINIMUM) of the SOA owning ``target``'s zone (the deepest of its ancestors in authority); 0 without."""
    soas = {rr[0]: rr for rr in authority if rr[1] == SOA}
    offset = 0
    while soas:
        rr = soas.get(target[offset:])
        if rr is not None:
            _, at = _name(wire, rr[3])
            _, at = _name(wire, at)
            if at + 20 != rr[3] + rr[4]:
                raise ParseError("SOA record of the wrong length")
            return min(rr[2], struct.unpack_from("!I", wire, at + 16)[0])
        if not target[offset]:
            break
        offset += 1 + target[offset]
    return 0


def ipv6_text(address: bytes) -> str:
    """16 octets as IPv6 text the way dnspython writes it (the longest zero run as ::, ::a.b.c.d forms)."""
    chunks = struct.unpack("!8H", address)
    best_start, best_len, start = 0, 0, None
    for i, chunk in enumerate(chunks + (1,)):  # the sentinel closes a trailing run
        if chunk == 0 and start is None:
            start = i
        elif chunk and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    if best_len > 1:
        if best_start == 0 and (best_len == 6 or best_len == 5 and chunks[5] == 0xFFFF):
            return ("::" if best_len == 6 else "::ffff:") + "%d.%d.%d.%d" % tuple(address[12:])
        return (":".join("%x" % c for c in chunks[:best_start]) + "::"
                + ":".join("%x" % c for c in chunks[best_start + best_len:]))
    return ":".join("%x" % c for c in chunks)
