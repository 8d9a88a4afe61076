"""fcrdns: forward-confirmed reverse DNS at connect, against the test DNS server; iprev in Authentication-Results.

Client addresses are 198.18.73.0/24 and 2001:db8:feed::/64 (reverse zones of our own,
so no other test's zone can shadow them); names live under fcrdns-test.example.
"""
import socket
import time

import pytest

from qpgevent.dns import reverse_name
from qpgevent.errors import ConfigError
from qpgevent.testing import QueueCapture, TestSession, make_smtpd, read_reply

FORWARD = "fcrdns-test.example."
V4_ZONE = "73.18.198.in-addr.arpa."
V6_ZONE = "0.0.0.0.d.e.e.f.8.b.d.0.1.0.0.2.ip6.arpa."  # 2001:db8:feed::/64
PTR = {
    "198.18.73.10": ["good.fcrdns-test.example."],
    "198.18.73.11": ["other.fcrdns-test.example."],
    "198.18.73.12": ["near.fcrdns-test.example."],
    # 198.18.73.13: no PTR (NXDOMAIN)
    "198.18.73.14": ["slowptr.fcrdns-test.example."],  # its reverse name answers after 3 s
    "198.18.73.15": ["host.timeout.test."],  # the forward lookup times out
    "198.18.73.16": ["bad.fcrdns-test.example.", "good2.fcrdns-test.example."],
    "198.18.73.17": ["localhost."],
    # 198.18.73.18: SERVFAIL for the reverse name
    "2001:db8:feed::10": ["v6.fcrdns-test.example."],
    "2001:db8:feed::11": ["v6bad.fcrdns-test.example."],
}
SLOW_PTR, SERVFAIL_PTR = "198.18.73.14", "198.18.73.18"
A_RECORDS = [
    "good 300 IN A 198.18.73.10", "other 300 IN A 192.0.2.200", "near 300 IN A 198.18.73.99",
    "bad 300 IN A 10.0.0.1", "good2 300 IN A 198.18.73.16", "v6 300 IN AAAA 2001:db8:feed::10",
    "v6 300 IN A 198.18.73.10", "v6bad 300 IN AAAA 2001:db8:beef::1",
]
PLUGINS = ["rcpt_ok"]


@pytest.fixture(scope="module")
def zones(dns_server):
    """Our zones on the shared test DNS server, plus a slow and a failing reverse name."""
    dns_server.add_zone(FORWARD, A_RECORDS)
    for origin in (V4_ZONE, V6_ZONE):
        records = ["%s 300 IN PTR %s" % (reverse_name(ip)[:-len(origin)], name)
                   for ip, names in PTR.items() if reverse_name(ip).endswith("." + origin[:-1]) for name in names]
        dns_server.add_zone(origin, records)
    dns_server.delay[reverse_name(SLOW_PTR)] = 3.0
    dns_server.servfail.add(reverse_name(SERVFAIL_PTR))
    yield dns_server
    del dns_server.delay[reverse_name(SLOW_PTR)]
    dns_server.servfail.discard(reverse_name(SERVFAIL_PTR))


@pytest.fixture
def connect(zones, tmp_path):
    """``connect(ip, "reject 1")`` -> a TestSession from ``ip`` with fcrdns (and its arguments) loaded."""
    def factory(ip, args="", before=(), config=None):
        config = dict({"dns_servers": "127.0.0.1:%d" % zones.port, "dns_timeout": "0.5", "rcpthosts": "example.com"},
                      **(config or {}))
        smtpd = make_smtpd(tmp_path / ip.replace(":", "_"),
                           plugins=[*before, ("fcrdns " + args).strip()] + PLUGINS, config=config)
        return TestSession(smtpd, remote_ip=ip, remote_host="[%s]" % ip)
    return factory


def auth_results(ts):
    return ts.connection.notes.get("authentication_results")


@pytest.mark.parametrize("ip, result, note, karma", [
    ("198.18.73.10", "iprev=pass policy.iprev=198.18.73.10 (good.fcrdns-test.example)", "pass", 1),
    ("198.18.73.16", "iprev=pass policy.iprev=198.18.73.16 (good2.fcrdns-test.example)", "pass", 1),
    ("198.18.73.11", "iprev=fail policy.iprev=198.18.73.11 (other.fcrdns-test.example)", "fail", -1),
    ("198.18.73.12", "iprev=fail policy.iprev=198.18.73.12 (near.fcrdns-test.example)", "fail", 0),
    ("198.18.73.13", "iprev=permerror policy.iprev=198.18.73.13", "permerror", -1),
    ("198.18.73.17", "iprev=fail policy.iprev=198.18.73.17", "fail", -1),
    ("2001:db8:feed::10", 'iprev=pass policy.iprev="2001:db8:feed::10" (v6.fcrdns-test.example)', "pass", 1),
    ("2001:db8:feed::11", 'iprev=fail policy.iprev="2001:db8:feed::11" (v6bad.fcrdns-test.example)', "fail", -1),
])
def test_outcomes_notes_and_karma(connect, ip, result, note, karma):
    """Each outcome: one iprev result (RFC 8601 2.7.3), the fcrdns note and the karma; reject 0 lets all in."""
    ts = connect(ip)
    assert [r.code for r in ts.greeting] == [220]
    assert auth_results(ts) == result
    assert ts.connection.notes["fcrdns"] == note
    assert ts.connection.notes.get("karma", 0) == karma


def test_names_are_noted(connect):
    """The PTR names and the one that confirmed the address are connection notes."""
    ts = connect("198.18.73.16")
    assert sorted(ts.connection.notes["fcrdns_ptr"]) == ["bad.fcrdns-test.example", "good2.fcrdns-test.example"]
    assert ts.connection.notes["fcrdns_host"] == "good2.fcrdns-test.example"


@pytest.mark.parametrize("ip", [SLOW_PTR, SERVFAIL_PTR, "198.18.73.15"])
def test_dns_failures_are_temperror_within_the_timeout(connect, ip):
    """A slow reverse name, a SERVFAIL, or a forward lookup that times out: temperror, well within the bound."""
    started = time.monotonic()
    ts = connect(ip)
    assert time.monotonic() - started < 2.5
    assert [r.code for r in ts.greeting] == [220]
    assert auth_results(ts) == "iprev=temperror policy.iprev=%s" % ip
    assert ts.connection.notes["fcrdns"] == "temperror"
    assert "karma" not in ts.connection.notes


def test_reject_1_refuses_temporarily_by_default(connect):
    """reject 1: a client whose PTR name does not resolve back is refused at connect, by default with 4.7.25."""
    ts = connect("198.18.73.11", "reject 1")
    assert [str(r) for r in ts.greeting] == [
        "450 4.7.25 The reverse DNS of your address 198.18.73.11 does not resolve back to it (#5.7.25)"]
    assert ts.closed


def test_reject_perm_refuses_no_rdns_permanently(connect):
    """reject 1 reject_type perm: no PTR record is a 554 5.7.25."""
    ts = connect("198.18.73.13", "reject 1 reject_type perm")
    assert [str(r) for r in ts.greeting] == ["554 5.7.25 Your address 198.18.73.13 has no reverse DNS (#5.7.25)"]


@pytest.mark.parametrize("ip", [SERVFAIL_PTR, "198.18.73.15"])
def test_dns_failure_is_never_a_permanent_refusal(connect, ip):
    """reject 1 reject_type perm: a DNS failure still gets only a temporary refusal."""
    ts = connect(ip, "reject 1 reject_type perm")
    [reply] = ts.greeting
    assert (reply.code, reply.status) == (450, "4.7.25")
    assert "try again later" in reply.text


@pytest.mark.parametrize("ip", ["198.18.73.10", "198.18.73.12"])
def test_reject_1_lets_a_match_in(connect, ip):
    """An exact match, and (as qpsmtpd) an address in the same /24 as the PTR name's, are not refused."""
    assert [r.code for r in connect(ip, "reject 1").greeting] == [220]


def test_reject_naughty_defers_the_refusal(connect):
    """reject naughty: the session goes on; the refusal waits in the naughty note."""
    ts = connect("198.18.73.11", "reject naughty")
    assert [r.code for r in ts.greeting] == [220]
    assert "does not resolve back to it" in ts.connection.notes["naughty"]


def test_loopback_and_relay_clients_are_not_looked_up(connect, zones):
    """127.0.0.1 passes without a lookup (+1 karma); a relay client is not checked."""
    ts = connect("127.0.0.1")
    assert ts.connection.notes.get("karma") == 1
    assert auth_results(ts) is None
    asked = zones.count(reverse_name("198.18.73.11"), "PTR")
    relay = connect("198.18.73.11", "reject 1", before=["relay"], config={"relayclients": "198.18.73.11"})
    assert [r.code for r in relay.greeting] == [220]
    assert "fcrdns" not in relay.connection.notes
    assert zones.count(reverse_name("198.18.73.11"), "PTR") == asked


def test_unknown_argument_stops_start_up(zones, tmp_path):
    """A misspelt argument is a start-up error naming it."""
    with pytest.raises(ConfigError, match="rejekt"):
        make_smtpd(tmp_path, plugins=["fcrdns rejekt 1"])


def test_iprev_is_in_the_stored_message(connect):
    """The Authentication-Results of a message from a confirmed client holds the iprev result."""
    ts = connect("198.18.73.10")
    capture = QueueCapture()
    ts.mock_hook("queue", capture)
    replies = ts.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nhello\n")
    assert replies[-1].code == 250
    assert ("Authentication-Results: mx.test; iprev=pass policy.iprev=198.18.73.10 "
            "(good.fcrdns-test.example)\n").encode() in capture.messages[0]


def test_live_proxied_client_gets_iprev_in_the_stored_message(live_server, zones, tmp_path):
    """Over a real socket (the client address from a PROXY header): the message in the Maildir carries iprev=pass."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["fcrdns", "rcpt_ok", "queue/maildir %s" % maildir], args=["--no-rdns"],
                         config={"dns_servers": "127.0.0.1:%d" % zones.port, "dns_timeout": "1",
                                 "proxy_hosts": "127.0.0.1"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 198.18.73.10 192.0.2.1 40000 25\r\n")
        assert read_reply(sock).code == 220
        for line, code in [("EHLO client.test", 250), ("MAIL FROM:<a@sender.test>", 250),
                           ("RCPT TO:<u@example.com>", 250), ("DATA", 354),
                           ("Subject: hi\r\n\r\nhello\r\n.", 250), ("QUIT", 221)]:
            sock.sendall(line.encode() + b"\r\n")
            assert read_reply(sock).code == code, line
    [path] = (maildir / "new").iterdir()
    assert ("Authentication-Results: mx.test; iprev=pass policy.iprev=198.18.73.10 (good.fcrdns-test.example)\n"
            in path.read_text())
