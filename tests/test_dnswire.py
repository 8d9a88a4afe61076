"""qpgevent/dnswire.py against dnspython as the model of RFC 1035: queries it reads, responses it builds."""
import io
import ipaddress
import struct

import dns.flags
import dns.ipv6
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpgevent import dnswire

settings.register_profile("dnswire", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("dnswire")

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
host_label = st.text(LETTERS, min_size=1, max_size=63)
host_names = st.lists(host_label, min_size=1, max_size=6).map(".".join).filter(lambda n: len(n) < 254)
binary_names = st.lists(st.binary(min_size=1, max_size=20), max_size=4).map(
    lambda labels: dns.name.Name(tuple(labels) + (b"",)))
rdtypes = st.sampled_from(sorted(dnswire.TYPE_CODES))
ttls = st.integers(0, 2 ** 31 - 1)


@PROFILE
@given(host_names, rdtypes, st.integers(0, 65535), st.booleans())
def test_a_query_reads_back_with_its_id_question_and_rd(name, rdtype, qid, trailing_dot):
    wire = dnswire.make_query(qid, dnswire.question(dnswire.encode_name(name + "." * trailing_dot), rdtype))
    query = dns.message.from_wire(wire)
    assert query.id == qid and query.flags == dns.flags.RD and query.edns == 0 and query.payload == 1232
    assert [(q.name, q.rdtype, q.rdclass) for q in query.question] == [
        (dns.name.from_text(name), dns.rdatatype.from_text(rdtype), dns.rdataclass.IN)]


def test_a_query_without_edns_has_no_additional_record():
    wire = dnswire.make_query(7, dnswire.question(dnswire.encode_name("host.test"), "MX"), edns=False)
    query = dns.message.from_wire(wire)
    assert query.id == 7 and query.edns == -1 and query.question[0].name == dns.name.from_text("host.test")


@pytest.mark.parametrize("name", ["a..test", ".test", "x" * 64 + ".test", ".".join(["x" * 63] * 4) + ".y"])
def test_a_malformed_name_is_refused_like_dnspython_refuses_it(name):
    with pytest.raises(dns.name.NameTooLong if len(name) > 255 else (dns.name.EmptyLabel, dns.name.LabelTooLong)):
        dns.name.from_text(name)
    with pytest.raises(ValueError):
        dnswire.encode_name(name)


@PROFILE
@given(binary_names)
def test_names_read_as_dnspython_writes_them(name):
    assert dnswire.name_text(name.to_wire()) == name.to_text(omit_final_dot=True)


@PROFILE
@given(st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x2001, 0xDB8]) | st.integers(0, 0xFFFF), min_size=8,
                max_size=8))
def test_ipv6_text_is_dnspython_s(chunks):
    address = b"".join(c.to_bytes(2, "big") for c in chunks)
    assert dnswire.ipv6_text(address) == dns.ipv6.inet_ntoa(address)


def _rdata(rdtype, draw):
    """One random record of ``rdtype`` as dnspython rdata."""
    if rdtype == "A":
        return dns.rdata.from_text("IN", "A", str(ipaddress.IPv4Address(draw(st.binary(min_size=4, max_size=4)))))
    if rdtype == "AAAA":
        return dns.rdata.from_text("IN", "AAAA", str(ipaddress.IPv6Address(draw(st.binary(min_size=16, max_size=16)))))
    if rdtype == "TXT":
        strings = draw(st.lists(st.binary(max_size=80), min_size=1, max_size=4))
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
    target = draw(binary_names | host_names.map(dns.name.from_text))
    if rdtype == "MX":
        return dns.rdata.from_text("IN", "MX", "%d %s" % (draw(st.integers(0, 65535)), target.to_text()))
    return dns.rdata.from_text("IN", "PTR", target.to_text())


@st.composite
def responses(draw):
    """A response built by dnspython: a CNAME chain, maybe the asked records, maybe an SOA, other records."""
    qname = dns.name.from_text(draw(host_names))
    rdtype = draw(rdtypes)
    query = dns.message.make_query(qname, rdtype, id=draw(st.integers(0, 65535)))
    response = dns.message.make_response(query)
    owner = dns.name.from_text(qname.to_text().swapcase()) if draw(st.booleans()) else qname
    for _ in range(draw(st.integers(0, 3))):
        target = dns.name.from_text(draw(host_names))
        response.answer.append(dns.rrset.from_rdata(owner, draw(ttls), dns.rdata.from_text("IN", "CNAME",
                                                                                             target.to_text())))
        owner = target
    nxdomain = draw(st.booleans())
    if not nxdomain and draw(st.booleans()):
        records = [_rdata(rdtype, draw) for _ in range(draw(st.integers(1, 4)))]
        response.answer.append(dns.rrset.from_rdata_list(owner, draw(ttls), records))
    if draw(st.booleans()):  # an unrelated record of the asked type, never to be taken
        other = dns.name.from_text("other=" + draw(host_label)[:50] + ".invalid")
        response.answer.append(dns.rrset.from_rdata(other, 60, _rdata(rdtype, draw)))
    if draw(st.booleans()):
        zone = owner.parent() if len(owner) > 2 and draw(st.booleans()) else owner
        soa = dns.rdata.from_text("IN", "SOA", "ns.%s hostmaster.%s 1 3600 600 86400 %d" % (
            zone.to_text(), zone.to_text(), draw(ttls)))
        response.authority.append(dns.rrset.from_rdata(zone, draw(ttls), soa))
    if nxdomain:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return query, response


def _model(wire):
    """What dnspython reads in ``wire``: rcode, the records as qpgevent.dns.Result has them, and the TTL."""
    message = dns.message.from_wire(wire)
    chain = message.resolve_chaining()
    if chain.answer is None:
        has_soa = any(rrset.rdtype == dns.rdatatype.SOA and chain.canonical_name.is_subdomain(rrset.name)
                      for rrset in message.authority)
        # dnspython keeps an answer without SOA for 300 s; RFC 2308 5 says not to cache it (0).
        return message.rcode(), (), chain.minimum_ttl if has_soa else 0
    records = []
    for rdata in chain.answer:
        if rdata.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            records.append(rdata.address)
        elif rdata.rdtype == dns.rdatatype.MX:
            records.append((rdata.preference, rdata.exchange.to_text(omit_final_dot=True)))
        elif rdata.rdtype == dns.rdatatype.TXT:
            records.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        else:
            records.append(rdata.target.to_text(omit_final_dot=True))
    return message.rcode(), tuple(records), chain.minimum_ttl


@PROFILE
@given(responses(), st.booleans())
def test_a_response_reads_as_dnspython_reads_it(exchange, compress):
    query, response = exchange
    wire = response.to_wire() if compress else _uncompressed(response)
    asked = dnswire.question(query.question[0].name.to_wire(), dns.rdatatype.to_text(query.question[0].rdtype))
    assert dnswire.answers(wire, query.id, asked)
    assert not dnswire.answers(wire, query.id ^ 1, asked)
    try:
        rcode, records, ttl = _model(wire)
    except dns.message.ChainTooLong:  # a CNAME loop: both refuse the response
        with pytest.raises(dnswire.ParseError):
            dnswire.parse(wire, asked)
    else:
        assert dnswire.parse(wire, asked) == dnswire.Response(rcode, False, records, ttl)


def _uncompressed(message):
    """``message`` in wire form with every name written out (dnspython always compresses)."""
    body = io.BytesIO()
    counts = [len(message.question)]
    for rrset in message.question:
        body.write(rrset.name.to_wire() + struct.pack("!HH", rrset.rdtype, rrset.rdclass))
    for section in (message.answer, message.authority, message.additional):
        counts.append(sum(rrset.to_wire(body, None) for rrset in section))
    return struct.pack("!HHHHHH", message.id, message.flags | message.rcode(), *counts) + body.getvalue()


def test_a_truncated_response_says_so():
    query = dns.message.make_query("big.test", "TXT", id=99)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    asked = dnswire.question(dnswire.encode_name("big.test"), "TXT")
    assert dnswire.parse(response.to_wire(), asked) == dnswire.Response(0, True)


def test_a_cname_loop_is_a_parse_error():
    query = dns.message.make_query("a.test", "A", id=1)
    response = dns.message.make_response(query)
    for owner, target in (("a.test.", "b.test."), ("b.test.", "a.test.")):
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME", target))
    with pytest.raises(dnswire.ParseError):
        dnswire.parse(response.to_wire(), dnswire.question(dnswire.encode_name("a.test"), "A"))


@PROFILE
@given(responses(), st.data())
def test_cut_or_damaged_responses_are_parse_errors_never_other_exceptions(exchange, data):
    query, response = exchange
    wire = bytearray(response.to_wire())
    asked = dnswire.question(query.question[0].name.to_wire(), dns.rdatatype.to_text(query.question[0].rdtype))
    wire = wire[:data.draw(st.integers(0, len(wire)))]
    for _ in range(data.draw(st.integers(0, 4))):
        if len(wire) > 12:
            wire[data.draw(st.integers(12, len(wire) - 1))] = data.draw(st.integers(0, 255))
    _read(bytes(wire), query.id, asked)


def test_a_pointer_back_into_its_own_name_is_a_parse_error_not_a_loop():
    """A label, then a pointer to that label: backwards, but a loop; it once grew a name until memory ran out."""
    asked = dnswire.question(dnswire.encode_name("host.test"), "A")
    header = (7).to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    looping = len(header) + len(asked)  # the answer's owner name: "a", then a pointer back to itself
    wire = header + asked + b"\x01a" + bytes([0xC0 | looping >> 8, looping & 0xFF]) + b"\x00\x01\x00\x01" + bytes(10)
    assert dnswire.answers(wire, 7, asked)
    with pytest.raises(dnswire.ParseError):
        dnswire.parse(wire, asked)


@PROFILE
@given(st.binary(max_size=600), st.integers(0, 65535))
def test_garbage_is_a_parse_error_never_another_exception(wire, qid):
    asked = dnswire.question(dnswire.encode_name("host.test"), "A")
    _read(wire, qid, asked)
    framed = qid.to_bytes(2, "big") + b"\x81\x80\x00\x01" + wire[:6].ljust(6, b"\0") + asked + wire[6:]
    assert dnswire.answers(framed, qid, asked)
    _read(framed, qid, asked)


def _read(wire, qid, asked):
    if dnswire.answers(wire, qid, asked):
        try:
            dnswire.parse(wire, asked)
        except dnswire.ParseError:
            pass
