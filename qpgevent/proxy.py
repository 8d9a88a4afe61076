"""The HAProxy PROXY protocol (v1 text and v2 binary): who the client behind a proxy really is.

Pure bytes in, :class:`ProxyInfo` out; no sockets. The caller buffers what the
client sends first and calls :func:`parse` after each read until it returns a
result or raises. Only listeners configured to expect the header may call it:
the protocol must never be guessed, or any client could spoof its address.
"""
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

V1_PREFIX = b"PROXY "
# The v1 worst case, "PROXY UNKNOWN <ipv6> <ipv6> 65535 65535\r\n", is 107 bytes.
V1_MAX_LINE = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# The v2 length field allows 64 KiB; real headers are far smaller (UNIX addresses
# plus a few TLVs), so a bigger one is refused rather than buffered.
V2_MAX_BLOCK = 4096
MAX_HEADER = V2_FIXED + V2_MAX_BLOCK

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01

_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
# "0" alone is a port; any other leading zero could be read as octal.
_V1_PORT = re.compile(r"(?:0|[1-9][0-9]{0,4})\Z")
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM = 0x0, 0x1, 0x2
# family nibble -> (name, bytes of one address, has ports)
_V2_FAMILIES = {_AF_INET: ("TCP4", 4, True), _AF_INET6: ("TCP6", 16, True), _AF_UNIX: ("UNIX", 108, False)}


class ProxyError(ValueError):
    """A malformed or unsupported PROXY protocol header."""


@dataclass(frozen=True)
class ProxyInfo:
    """One parsed header; ``local`` means: ignore the addresses, use the real socket's."""

    version: int
    local: bool
    family: str
    src_ip: Optional[str] = None
    src_port: Optional[int] = None
    dst_ip: Optional[str] = None
    dst_port: Optional[int] = None
    tlvs: dict[int, bytes] = field(default_factory=dict)
    tls: bool = False
    tls_version: Optional[str] = None


def parse(data: bytes) -> tuple[Optional[ProxyInfo], int]:
    """``(None, 0)`` while ``data`` may still become a header, else ``(info, bytes consumed)``."""
    # Nothing a header can span lies past MAX_HEADER, and slicing also copies a
    # bytearray or memoryview into immutable bytes.
    data = bytes(data[:MAX_HEADER])
    if not data:
        return None, 0
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    raise ProxyError("not a PROXY protocol header: expected 'PROXY ' (v1) or the v2 signature, got %r"
                     % data[:16])


# -- version 1 ---------------------------------------------------------------

def _parse_v1(data: bytes) -> tuple[Optional[ProxyInfo], int]:
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        # Reject a hopeless prefix now rather than wait for 107 bytes or a timeout.
        _check_v1_start(data[:V1_MAX_LINE], complete=False)
        if len(data) >= V1_MAX_LINE:
            raise ProxyError("PROXY v1 line has no CRLF within %d bytes" % V1_MAX_LINE)
        return None, 0
    line = data[:end]
    _check_v1_start(line, complete=True)
    fields = line.split(b" ")
    consumed = end + 2
    if fields[1] == b"UNKNOWN":
        # The spec says to ignore whatever follows UNKNOWN up to the CRLF.
        return ProxyInfo(version=1, local=True, family="UNSPEC"), consumed
    if len(fields) != 6:
        raise ProxyError("PROXY v1 %s line needs 6 fields separated by single spaces, got %d: %r"
                         % (fields[1].decode(), len(fields), line))
    try:
        text = [f.decode("ascii") for f in fields[2:]]
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 line has non-ASCII bytes: %r" % line) from None
    family = fields[1].decode()
    src_ip = _v1_address(text[0], family, "source")
    dst_ip = _v1_address(text[1], family, "destination")
    src_port = _v1_port(text[2], "source")
    dst_port = _v1_port(text[3], "destination")
    return ProxyInfo(version=1, local=False, family=family, src_ip=src_ip, src_port=src_port,
                     dst_ip=dst_ip, dst_port=dst_port), consumed


def _check_v1_start(chunk: bytes, complete: bool) -> None:
    """Raise unless ``chunk`` (the line without its CRLF, or a prefix of it) can be a v1 header."""
    if not V1_PREFIX.startswith(chunk[:len(V1_PREFIX)]):
        raise ProxyError("not a PROXY protocol header: expected 'PROXY ', got %r" % chunk[:16])
    # A CR as the last byte read may be the first half of the CRLF still on its way.
    body = chunk if complete or not chunk.endswith(b"\r") else chunk[:-1]
    if b"\r" in body or b"\n" in body:
        raise ProxyError("PROXY v1 line must end with CRLF, found a lone CR or LF: %r" % chunk)
    rest = body[len(V1_PREFIX):]
    if not rest and not complete:
        return
    space = rest.find(b" ")
    token = rest if space < 0 else rest[:space]
    if complete or space >= 0:
        ok = token in _V1_PROTOCOLS
    else:
        ok = any(p.startswith(token) for p in _V1_PROTOCOLS)
    if not ok:
        raise ProxyError("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, got %r" % token[:16])


def _v1_address(text: str, family: str, which: str) -> str:
    # ipaddress alone would accept an IPv6 zone ("fe80::1%eth0"), which no proxy sends.
    try:
        if "%" in text:
            raise ValueError
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError("PROXY v1 %s address %r is not an IP address" % (which, text)) from None
    if (address.version == 4) != (family == "TCP4"):
        raise ProxyError("PROXY v1 %s address %r does not match family %s" % (which, text, family))
    return str(address)


def _v1_port(text: str, which: str) -> int:
    if not _V1_PORT.match(text) or int(text) > 65535:
        raise ProxyError("PROXY v1 %s port %r is not a decimal 0-65535 without leading zeros"
                         % (which, text))
    return int(text)


# -- version 2 ---------------------------------------------------------------

def _parse_v2(data: bytes) -> tuple[Optional[ProxyInfo], int]:
    if not V2_SIGNATURE.startswith(data[:len(V2_SIGNATURE)]):
        raise ProxyError("not a PROXY protocol header: bad v2 signature %r" % data[:12])
    if len(data) <= len(V2_SIGNATURE):
        return None, 0
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyError("PROXY v2 header has version %d in its version/command byte, only 2 exists"
                         % version)
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyError("PROXY v2 command 0x%x is neither LOCAL (0x0) nor PROXY (0x1)" % command)
    if len(data) < 14:
        return None, 0
    family = _v2_family(data[13]) if command == _V2_PROXY else None
    if len(data) < V2_FIXED:
        return None, 0
    length = int.from_bytes(data[14:16], "big")
    if length > V2_MAX_BLOCK:
        raise ProxyError("PROXY v2 address+TLV block of %d bytes exceeds the %d-byte limit"
                         % (length, V2_MAX_BLOCK))
    total = V2_FIXED + length
    if len(data) < total:
        return None, 0
    if family is None:
        # LOCAL (a health check) and UNSPEC: the spec says to skip the block unread.
        return ProxyInfo(version=2, local=True, family="UNSPEC"), total
    return _v2_proxy(data[:total], family), total


def _v2_family(byte: int) -> Optional[int]:
    """The address family nibble of a PROXY command, or None when the proxy sent UNSPEC."""
    family, protocol = byte >> 4, byte & 0x0F
    if family > _AF_UNIX or protocol > _PROTO_DGRAM:
        raise ProxyError("PROXY v2 family/protocol byte 0x%02x is not defined" % byte)
    if protocol == _PROTO_DGRAM:
        # SMTP only runs over a stream; a datagram header means a misconfigured proxy.
        raise ProxyError("PROXY v2 family/protocol byte 0x%02x is a datagram protocol, SMTP needs a stream"
                         % byte)
    if family == _AF_UNSPEC or protocol == _PROTO_UNSPEC:
        return None
    return family


def _v2_proxy(header: bytes, family: int) -> ProxyInfo:
    name, size, has_ports = _V2_FAMILIES[family]
    block = header[V2_FIXED:]
    needed = 2 * size + (4 if has_ports else 0)
    if len(block) < needed:
        raise ProxyError("PROXY v2 %s address block is %d bytes, needs %d" % (name, len(block), needed))
    src, dst = block[:size], block[size:2 * size]
    if has_ports:
        src_ip, dst_ip = str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))
        src_port = int.from_bytes(block[2 * size:2 * size + 2], "big")
        dst_port = int.from_bytes(block[2 * size + 2:needed], "big")
    else:
        src_ip, dst_ip = _unix_path(src), _unix_path(dst)
        src_port = dst_port = None
    tlvs = _parse_tlvs(block[needed:], "TLV")
    if PP2_TYPE_CRC32C in tlvs:
        _check_crc32c(header, needed, tlvs[PP2_TYPE_CRC32C])
    tls, tls_version = _ssl_info(tlvs.get(PP2_TYPE_SSL))
    return ProxyInfo(version=2, local=False, family=name, src_ip=src_ip, src_port=src_port,
                     dst_ip=dst_ip, dst_port=dst_port, tlvs=tlvs, tls=tls, tls_version=tls_version)


def _unix_path(raw: bytes) -> str:
    # A sun_path is NUL-terminated with junk allowed after; a leading NUL marks
    # a Linux abstract socket, shown with "@" as ss(8) does.
    if raw.startswith(b"\x00"):
        path = b"@" + raw[1:].rstrip(b"\x00")
    else:
        path = raw.split(b"\x00", 1)[0]
    return path.decode("utf-8", "backslashreplace")


def _parse_tlvs(data: bytes, what: str) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyError("PROXY v2 %s truncated: %d bytes left, a type and length need 3"
                             % (what, len(data) - pos))
        kind, length = data[pos], int.from_bytes(data[pos + 1:pos + 3], "big")
        end = pos + 3 + length
        if end > len(data):
            raise ProxyError("PROXY v2 %s 0x%02x truncated: says %d bytes, %d remain"
                             % (what, kind, length, len(data) - pos - 3))
        if kind in tlvs:
            # Two SSL or CRC32C TLVs would make "which one counts" ambiguous.
            raise ProxyError("PROXY v2 %s 0x%02x appears twice" % (what, kind))
        # NOOP is padding by definition; keeping it would only trip the duplicate check.
        if kind != PP2_TYPE_NOOP:
            tlvs[kind] = data[pos + 3:end]
        pos = end
    return tlvs


def _ssl_info(value: Optional[bytes]) -> tuple[bool, Optional[str]]:
    if value is None:
        return False, None
    if len(value) < 5:
        raise ProxyError("PROXY v2 SSL TLV is %d bytes, needs at least 5 (client flags and verify)"
                         % len(value))
    sub = _parse_tlvs(value[5:], "SSL sub-TLV")
    version = sub.get(PP2_SUBTYPE_SSL_VERSION)
    # The version string is informational; a stray non-ASCII byte is no reason to drop the client.
    return bool(value[0] & PP2_CLIENT_SSL), None if version is None else version.decode("ascii", "replace")


def _check_crc32c(header: bytes, tlv_start: int, checksum: bytes) -> None:
    if len(checksum) != 4:
        raise ProxyError("PROXY v2 CRC32C TLV is %d bytes, must be 4" % len(checksum))
    # Re-find the field's offset so it can be zeroed as the sender had it.
    pos = V2_FIXED + tlv_start
    while header[pos] != PP2_TYPE_CRC32C:
        pos += 3 + int.from_bytes(header[pos + 1:pos + 3], "big")
    zeroed = header[:pos + 3] + b"\x00\x00\x00\x00" + header[pos + 7:]
    if crc32c(zeroed) != int.from_bytes(checksum, "big"):
        raise ProxyError("PROXY v2 CRC32C checksum does not match the header")


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B) of ``data``, as the v2 CRC32C TLV carries it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
