"""qpgevent.proxy: PROXY protocol v1/v2 headers parsed from the first bytes a client sends."""
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from qpgevent.proxy import (MAX_HEADER, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_SSL,
                            PP2_TYPE_UNIQUE_ID, ProxyError, ProxyInfo, crc32c, parse)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SMTP = b"EHLO client.example\r\nMAIL FROM:<a@b.test>\r\n"
# Hypothesis would otherwise write an example database into the work tree.
quick = settings(database=None, max_examples=150, deadline=None)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def v2(command: int, fam: int, block: bytes) -> bytes:
    return SIG + bytes([0x20 | command, fam]) + len(block).to_bytes(2, "big") + block


def v2_inet(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if a.version == 4 else 0x21
    return v2(1, fam, a.packed + b.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + tlvs)


def ssl_tlv(client: int, verify: int, sub: bytes) -> bytes:
    return tlv(PP2_TYPE_SSL, bytes([client]) + verify.to_bytes(4, "big") + sub)


def with_crc(header: bytes, corrupt: bool = False) -> bytes:
    """``header`` (ending in a zeroed CRC32C TLV) with the checksum filled in."""
    value = crc32c(header) ^ (1 if corrupt else 0)
    return header[:-4] + value.to_bytes(4, "big")


# -- version 1 ---------------------------------------------------------------

def test_v1_tcp4():
    """A v1 TCP4 line gives the client's and the proxy's IPv4 addresses and ports."""
    line = b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n"
    assert parse(line) == (ProxyInfo(version=1, local=False, family="TCP4", src_ip="192.0.2.1", src_port=56324,
                                     dst_ip="198.51.100.11", dst_port=25), len(line))


def test_v1_tcp6_is_normalised():
    """A v1 TCP6 line accepts upper-case, uncompressed groups and reports the compressed form."""
    line = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::25 65535 0\r\n"
    info, used = parse(line)
    assert (info.family, info.src_ip, info.dst_ip, info.src_port, info.dst_port) == \
        ("TCP6", "2001:db8::1", "2001:db8::25", 65535, 0)
    assert used == len(line) and not info.local and info.version == 1


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                  b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                                  b"PROXY UNKNOWN whatever the proxy liked \x01\xff\r\n"])
def test_v1_unknown_means_use_the_real_socket(line):
    """v1 UNKNOWN (short, worst-case 107-byte, or junk form) is local: no addresses, use the socket's."""
    assert parse(line) == (ProxyInfo(version=1, local=True, family="UNSPEC"), len(line))


def test_v1_longest_line_is_accepted():
    """The 107-byte worst case the spec names fits the limit exactly."""
    line = b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n"
    assert len(line) == 107
    assert parse(line + SMTP)[1] == 107


def test_v1_trailing_smtp_is_not_consumed():
    """Bytes after the CRLF are the client's SMTP and are left for the session."""
    line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    data = line + SMTP
    info, used = parse(data)
    assert info.src_ip == "192.0.2.1" and data[used:] == SMTP


@pytest.mark.parametrize("line", [b"PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n",
                                  b"PROXY TCP6 2001:db8::1 2001:db8::2 1024 587\r\n",
                                  b"PROXY UNKNOWN\r\n"])
def test_v1_split_at_every_byte(line):
    """Every proper prefix of a v1 line asks for more; the whole line (plus SMTP) gives one result."""
    expected = parse(line)
    for cut in range(len(line)):
        assert parse(line[:cut]) == (None, 0), cut
    assert parse(line + SMTP) == expected


# -- version 2 ---------------------------------------------------------------

def test_v2_proxy_tcp4():
    """v2 PROXY over TCP/IPv4 gives the packed addresses and network-order ports."""
    header = v2_inet("203.0.113.7", "192.0.2.25", 40000, 25)
    assert parse(header + SMTP) == (ProxyInfo(version=2, local=False, family="TCP4", src_ip="203.0.113.7",
                                              src_port=40000, dst_ip="192.0.2.25", dst_port=25), len(header))


def test_v2_proxy_tcp6():
    """v2 PROXY over TCP/IPv6 gives the compressed IPv6 addresses."""
    header = v2_inet("2001:db8::7", "2001:db8:1::25", 1, 465)
    info, used = parse(header)
    assert (info.family, info.src_ip, info.dst_ip, info.src_port, info.dst_port, used) == \
        ("TCP6", "2001:db8::7", "2001:db8:1::25", 1, 465, 16 + 36)


def test_v2_proxy_unix():
    """v2 PROXY over AF_UNIX gives the socket paths (NUL padding and junk after it dropped) and no ports."""
    src = b"/run/client.sock\x00junk".ljust(108, b"\x00")
    dst = b"\x00abstract".ljust(108, b"\x00")
    header = v2(1, 0x31, src + dst)
    info, used = parse(header + SMTP)
    assert (info.family, info.src_ip, info.dst_ip, info.src_port, info.dst_port, used) == \
        ("UNIX", "/run/client.sock", "@abstract", None, None, 16 + 216)


@pytest.mark.parametrize("fam", [0x00, 0x11, 0x21, 0x31, 0xff, 0x12])
def test_v2_local_skips_its_block(fam):
    """v2 LOCAL (a proxy health check) is local whatever its family byte, and its whole block is skipped."""
    header = v2(0, fam, b"\x01" * 40)
    assert parse(header + SMTP) == (ProxyInfo(version=2, local=True, family="UNSPEC"), 16 + 40)


@pytest.mark.parametrize("fam", [0x00, 0x01, 0x10, 0x20, 0x30])
def test_v2_proxy_unspec_falls_back_to_the_socket(fam):
    """v2 PROXY with an UNSPEC family or protocol is treated like v1 UNKNOWN: use the real socket."""
    header = v2(1, fam, b"\x00" * 12)
    assert parse(header) == (ProxyInfo(version=2, local=True, family="UNSPEC"), 28)


def test_v2_tlvs_are_kept_raw_and_ssl_is_decoded():
    """TLVs after the addresses come back raw by type; the SSL TLV also sets tls and tls_version; NOOP is dropped."""
    ssl = ssl_tlv(0x01 | 0x02, 0, tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example"))
    tlvs = tlv(PP2_TYPE_AUTHORITY, b"mx.example") + tlv(PP2_TYPE_NOOP, b"") + ssl + tlv(PP2_TYPE_NOOP, b"pad") \
        + tlv(PP2_TYPE_UNIQUE_ID, b"\x00\x01id") + tlv(0xE0, b"")
    header = v2_inet("192.0.2.1", "192.0.2.2", 1234, 25, tlvs)
    info, used = parse(header + SMTP)
    assert used == len(header)
    assert info.tlvs == {PP2_TYPE_AUTHORITY: b"mx.example", PP2_TYPE_SSL: ssl[3:],
                         PP2_TYPE_UNIQUE_ID: b"\x00\x01id", 0xE0: b""}
    assert info.tls and info.tls_version == "TLSv1.3"


def test_v2_ssl_tlv_without_the_ssl_flag():
    """An SSL TLV whose client flags lack PP2_CLIENT_SSL means the client did not use TLS."""
    info, _ = parse(v2_inet("192.0.2.1", "192.0.2.2", 1, 2, ssl_tlv(0x00, 1, b"")))
    assert not info.tls and info.tls_version is None


def test_v2_no_ssl_tlv_means_no_tls():
    """Without an SSL TLV, tls is False and tls_version None."""
    info, _ = parse(v2_inet("192.0.2.1", "192.0.2.2", 1, 2))
    assert (info.tls, info.tls_version, info.tlvs) == (False, None, {})


def test_crc32c_known_value():
    """crc32c matches the RFC 3720 check value for "123456789"."""
    assert crc32c(b"123456789") == 0xE3069283


def test_v2_crc32c_is_checked():
    """A correct CRC32C TLV is accepted; a wrong one rejects the header."""
    header = v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(PP2_TYPE_NOOP, b"x") + tlv(PP2_TYPE_CRC32C, b"\0" * 4))
    info, _ = parse(with_crc(header))
    assert PP2_TYPE_CRC32C in info.tlvs
    with pytest.raises(ProxyError, match="CRC32C checksum does not match"):
        parse(with_crc(header, corrupt=True))


@pytest.mark.parametrize("header", [v2_inet("192.0.2.1", "192.0.2.2", 1, 2),
                                    v2_inet("2001:db8::1", "2001:db8::2", 3, 4,
                                            tlv(PP2_TYPE_AUTHORITY, b"a") + ssl_tlv(1, 0, tlv(0x21, b"TLSv1.2"))),
                                    v2(0, 0, b""),
                                    v2(1, 0x31, b"/a".ljust(216, b"\x00"))])
def test_v2_split_at_every_byte(header):
    """Every proper prefix of a v2 header asks for more; the whole header (plus SMTP) gives one result."""
    expected = parse(header)
    for cut in range(len(header)):
        assert parse(header[:cut]) == (None, 0), cut
    assert parse(header + SMTP) == expected


def test_max_header_is_enough():
    """A v2 header at the block-size limit is exactly MAX_HEADER bytes and parses; one byte more is refused."""
    header = v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(0xE1, b"x" * (4096 - 12 - 3)))
    assert len(header) == MAX_HEADER
    assert parse(header + SMTP)[1] == MAX_HEADER
    with pytest.raises(ProxyError, match="exceeds the 4096-byte limit"):
        parse(v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(0xE1, b"x" * (4096 - 12 - 2))))


# -- invalid input -----------------------------------------------------------

INVALID = [
    ("smtp", b"EHLO x\r\n", "not a PROXY protocol header"),
    ("tls", b"\x16\x03\x01\x02\x00", "not a PROXY protocol header"),
    ("lowercase", b"proxy TCP4", "not a PROXY protocol header"),
    ("no-space", b"PROXYTCP4", "expected 'PROXY '"),
    ("v1-bad-proto", b"PROXY UDP4 ", "must be TCP4, TCP6 or UNKNOWN"),
    ("v1-bad-proto-early", b"PROXY TCP5", "must be TCP4, TCP6 or UNKNOWN"),
    ("v1-unknownx", b"PROXY UNKNOWNX\r\n", "must be TCP4, TCP6 or UNKNOWN"),
    ("v1-empty", b"PROXY \r\n", "must be TCP4, TCP6 or UNKNOWN"),
    ("v1-bare-lf", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "lone CR or LF"),
    ("v1-bare-cr", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX", "lone CR or LF"),
    ("v1-cr-cr-lf", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n", "lone CR or LF"),
    ("v1-unknown-bare-lf", b"PROXY UNKNOWN\n", "lone CR or LF"),
    ("v1-too-long", b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n", "no CRLF within 107 bytes"),
    ("v1-no-crlf", b"PROXY TCP4 " + b"1" * 200, "no CRLF within 107 bytes"),
    ("v1-few-fields", b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "needs 6 fields"),
    ("v1-many-fields", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n", "needs 6 fields"),
    ("v1-double-space", b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n", "needs 6 fields"),
    ("v1-trailing-space", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n", "needs 6 fields"),
    ("v1-non-ascii", b"PROXY TCP4 192.0.2.\xb9 192.0.2.2 1 2\r\n", "non-ASCII"),
    ("v1-bad-ipv4", b"PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n", "source address '192.0.2.256' is not an IP"),
    ("v1-ipv4-leading-zero", b"PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n", "is not an IP address"),
    ("v1-hostname", b"PROXY TCP4 192.0.2.1 mx.example 1 2\r\n", "destination address 'mx.example'"),
    ("v1-ipv6-zone", b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "is not an IP address"),
    ("v1-tcp4-with-ipv6", b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "does not match family TCP4"),
    ("v1-tcp6-with-ipv4", b"PROXY TCP6 2001:db8::1 192.0.2.2 1 2\r\n", "does not match family TCP6"),
    ("v1-port-too-big", b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", "source port '65536'"),
    ("v1-port-leading-zero", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 025\r\n", "destination port '025'"),
    ("v1-port-hex", b"PROXY TCP4 192.0.2.1 192.0.2.2 0x19 2\r\n", "not a decimal"),
    ("v1-port-sign", b"PROXY TCP4 192.0.2.1 192.0.2.2 +25 2\r\n", "not a decimal"),
    ("v1-port-unicode-digit", "PROXY TCP4 192.0.2.1 192.0.2.2 \u0663 2\r\n".encode(), "non-ASCII"),
    ("v2-bad-signature", SIG[:11] + b"X" + b"\x21\x11\x00\x0c", "bad v2 signature"),
    ("v2-bad-signature-early", b"\r\n\r\nX", "bad v2 signature"),
    ("v2-version-1", SIG + b"\x11", "version 1"),
    ("v2-version-3", SIG + b"\x31\x11\x00\x00", "only 2 exists"),
    ("v2-command-2", SIG + b"\x22", "command 0x2 is neither LOCAL"),
    ("v2-family-4", SIG + b"\x21\x41", "byte 0x41 is not defined"),
    ("v2-protocol-3", SIG + b"\x21\x13", "byte 0x13 is not defined"),
    ("v2-udp", SIG + b"\x21\x12", "datagram"),
    ("v2-unix-dgram", SIG + b"\x21\x32", "datagram"),
    ("v2-length-over-cap", SIG + b"\x21\x11\x10\x01", "4097 bytes exceeds the 4096-byte limit"),
    ("v2-length-max", SIG + b"\x20\x00\xff\xff", "exceeds the 4096-byte limit"),
    ("v2-tcp4-short", v2(1, 0x11, b"\x00" * 11), "TCP4 address block is 11 bytes, needs 12"),
    ("v2-tcp6-short", v2(1, 0x21, b"\x00" * 12), "TCP6 address block is 12 bytes, needs 36"),
    ("v2-unix-short", v2(1, 0x31, b"\x00" * 215), "UNIX address block is 215 bytes, needs 216"),
    ("v2-tlv-stub", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, b"\x02\x00"), "TLV truncated: 2 bytes left"),
    ("v2-tlv-short", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, b"\x02\x00\x05abc"), "TLV 0x02 truncated: says 5"),
    ("v2-tlv-twice", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(2, b"a") + tlv(2, b"b")), "0x02 appears twice"),
    ("v2-ssl-short", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(PP2_TYPE_SSL, b"\x01\x00\x00")),
     "SSL TLV is 3 bytes, needs at least 5"),
    ("v2-ssl-sub-short", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, ssl_tlv(1, 0, b"\x21\x00\x09TLS")),
     "SSL sub-TLV 0x21 truncated"),
    ("v2-crc-length", v2_inet("192.0.2.1", "192.0.2.2", 1, 2, tlv(PP2_TYPE_CRC32C, b"\x00" * 3)),
     "CRC32C TLV is 3 bytes, must be 4"),
]


@pytest.mark.parametrize("data, message", [(d, m) for _, d, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_headers_are_rejected(data, message):
    """Each malformed or unsupported header raises ProxyError naming what is wrong, as soon as it is certain."""
    with pytest.raises(ProxyError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse(data)


def test_empty_input_needs_more():
    """Nothing read yet is not an error: the caller waits."""
    assert parse(b"") == (None, 0)


def test_accepts_bytearray_and_memoryview():
    """A reader's bytearray or memoryview buffer parses the same as bytes."""
    line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n" + SMTP
    assert parse(bytearray(line)) == parse(memoryview(line)) == parse(line)


# -- properties --------------------------------------------------------------

def _check_outcome(data: bytes) -> None:
    try:
        info, used = parse(data)
    except ProxyError:
        return
    assert used <= len(data) and used <= MAX_HEADER
    assert (info is None) == (used == 0)


# Random bytes rarely start like a header, so half the cases get a valid-looking start.
_STARTS = st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN",
                           SIG, SIG + b"\x21", SIG + b"\x21\x11", SIG + b"\x21\x21\x00\x24",
                           SIG + b"\x21\x31\x00", SIG + b"\x20"])


@quick
@given(_STARTS, st.binary(max_size=300))
def test_random_bytes_only_raise_proxy_error(start, tail):
    """Arbitrary input either asks for more, parses, or raises ProxyError; never consumes more than it got."""
    _check_outcome(start + tail)


@quick
@given(st.sampled_from([b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", v2_inet("2001:db8::1", "::", 1, 2,
                                                                           ssl_tlv(1, 0, tlv(0x21, b"v")))]),
       st.data())
def test_mutated_headers_only_raise_proxy_error(header, data):
    """Any byte of a valid header changed to any value still only parses, waits, or raises ProxyError."""
    pos = data.draw(st.integers(0, len(header) - 1))
    mutated = header[:pos] + bytes([data.draw(st.integers(0, 255))]) + header[pos + 1:]
    _check_outcome(mutated + data.draw(st.binary(max_size=20)))


_PORTS = st.integers(0, 65535)


@quick
@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                 st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))),
       _PORTS, _PORTS, st.binary(max_size=40), st.booleans())
def test_v1_round_trip(addresses, sport, dport, tail, compressed):
    """A v1 line built from any same-family addresses and ports parses back to them, leaving the tail."""
    src, dst = addresses
    family = "TCP4" if src.version == 4 else "TCP6"
    text = (lambda a: str(a)) if compressed else (lambda a: getattr(a, "exploded"))
    line = ("PROXY %s %s %s %d %d\r\n" % (family, text(src), text(dst), sport, dport)).encode()
    assert len(line) <= 107
    info, used = parse(line + tail)
    assert used == len(line)
    assert info == ProxyInfo(version=1, local=False, family=family, src_ip=str(src), src_port=sport,
                             dst_ip=str(dst), dst_port=dport)


_TLVS = st.dictionaries(st.integers(0, 255).filter(lambda t: t not in (PP2_TYPE_NOOP, PP2_TYPE_SSL,
                                                                         PP2_TYPE_CRC32C)),
                        st.binary(max_size=30), max_size=5)


@quick
@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                 st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))),
       _PORTS, _PORTS, _TLVS, st.binary(max_size=40))
def test_v2_round_trip(addresses, sport, dport, tlvs, tail):
    """A v2 header built from any same-family addresses, ports and TLVs parses back to them, leaving the tail."""
    src, dst = addresses
    header = v2_inet(str(src), str(dst), sport, dport, b"".join(tlv(k, v) for k, v in tlvs.items()))
    info, used = parse(header + tail)
    assert used == len(header)
    assert info == ProxyInfo(version=2, local=False, family="TCP4" if src.version == 4 else "TCP6",
                             src_ip=str(src), src_port=sport, dst_ip=str(dst), dst_port=dport, tlvs=tlvs)
