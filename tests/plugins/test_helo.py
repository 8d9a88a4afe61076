"""helo: the lenient, rfc and strict policies test by test, badhelo, X-HELO, reject handling, DNS failures.

Client addresses are 198.18.74.0/24 and 2001:db8:feed:1::/64 (reverse zones of our own);
names live under helo-test.example.
"""
import smtplib
import time

import pytest

from qpgevent.dns import reverse_name
from qpgevent.errors import ConfigError
from qpgevent.testing import QueueCapture, TestSession, make_smtpd

FORWARD = "helo-test.example."
V4_ZONE = "74.18.198.in-addr.arpa."
V6_ZONE = "0.0.0.0.1.0.0.0.d.e.e.f.8.b.d.0.1.0.0.2.ip6.arpa."  # 2001:db8:feed:1::/64
PTR = {
    "198.18.74.10": "mail.helo-test.example.",
    "198.18.74.11": "dyn-11.isp.example.",
    "198.18.74.12": "unrelated.elsewhere.example.",
    # 198.18.74.13: no PTR (NXDOMAIN); 198.18.74.14: SERVFAIL
    "2001:db8:feed:1::10": "v6.helo-test.example.",
}
SERVFAIL_PTR = "198.18.74.14"
RECORDS = [
    "mail 300 IN A 198.18.74.10",
    "pool 300 IN A 198.18.74.200",  # the /24 of 198.18.74.11
    "other 300 IN A 192.0.2.99",
    "mxonly 300 IN MX 10 mail.helo-test.example.",
    "v6 300 IN AAAA 2001:db8:feed:1::10",
]
GOOD = "198.18.74.10"
BADHELO = ["aol.com", "Yahoo.COM", r"bad(regex", r"^(mail|smtp)\.spam\.example$"]


@pytest.fixture(scope="module")
def zones(dns_server):
    dns_server.add_zone(FORWARD, RECORDS)
    for origin in (V4_ZONE, V6_ZONE):
        dns_server.add_zone(origin, ["%s 300 IN PTR %s" % (reverse_name(ip)[:-len(origin)], name)
                                     for ip, name in PTR.items() if reverse_name(ip).endswith("." + origin[:-1])])
    dns_server.servfail.add(reverse_name(SERVFAIL_PTR))
    yield dns_server
    dns_server.servfail.discard(reverse_name(SERVFAIL_PTR))


@pytest.fixture
def connect(zones, tmp_path):
    """``connect(ip, "policy rfc")`` -> a greeted TestSession from ``ip`` with helo (and its arguments) loaded."""
    def factory(ip, args="", before=(), config=None):
        values = {"dns_servers": "127.0.0.1:%d" % zones.port, "dns_timeout": "0.5", "rcpthosts": "example.com",
                  "badhelo": BADHELO, **(config or {})}
        smtpd = make_smtpd(tmp_path / ip.replace(":", "_"), plugins=[*before, ("helo " + args).strip(), "rcpt_ok"],
                           config=values)
        return TestSession(smtpd, remote_ip=ip)
    return factory


def helo(connect, ip, name, args="reject_type perm", verb="EHLO"):
    """The reply to ``verb name`` from ``ip`` (perm: the session stays open to look at)."""
    ts = connect(ip, args)
    [reply] = ts.command("%s %s" % (verb, name))[-1:]
    return ts, reply


@pytest.mark.parametrize("name, ip, text", [
    ("aol.com", GOOD, "I do not believe you are aol.com."),
    ("YAHOO.com", GOOD, "I do not believe you are YAHOO.com."),  # literal lines: any case
    ("smtp.spam.example", GOOD, "Your HELO hostname is not allowed"),  # a regex line
    ("localhost", GOOD, "You are not localhost"),
    ("[192.0.2.5]", GOOD, "Forged IPs not accepted here"),
    ("[IPv6:2001:db8::5]", GOOD, "Forged IPs not accepted here"),
    ("198.18.74.10", GOOD, "Plain IP is invalid HELO hostname (RFC 5321)"),
    ("2001:db8::1", GOOD, "Plain IP is invalid HELO hostname (RFC 5321)"),
])
def test_lenient_failures(connect, name, ip, text):
    """Each lenient test refuses with its own reason (550 5.7.1) and costs a point of karma."""
    ts, reply = helo(connect, ip, name)
    assert str(reply) == "550 5.7.1 " + text
    assert ts.connection.notes["karma"] == -1


@pytest.mark.parametrize("name, ip", [
    ("unqualified", GOOD),  # lenient does no FQDN test ...
    ("client.anywhere.example", GOOD),  # ... and no DNS
    ("localhost", "127.0.0.1"),
    ("[198.18.74.10]", GOOD),
    ("[IPv6:2001:db8:feed:1::10]", "2001:db8:feed:1::10"),
])
def test_lenient_passes(connect, name, ip):
    ts, reply = helo(connect, ip, name)
    assert reply.code == 250
    assert "karma" not in ts.connection.notes


def test_negated_badhelo_pattern(connect):
    """A line starting with ! refuses the names its pattern does not match: !\\. refuses names without a dot."""
    ts = connect(GOOD, "reject_type perm", config={"badhelo": [r"!\."]})
    assert str(ts.command("EHLO unqualified")[0]) == "550 5.7.1 Your HELO hostname is not allowed"
    assert ts.command("EHLO client.anywhere.example")[0].code == 250


def test_badhelo_regex_is_searched_in_the_lower_cased_name(connect):
    """A pattern is a regular expression; a bad one is skipped with a log line, the next lines still count."""
    ts = connect(GOOD, "reject_type perm")
    log = ts.capture_log()
    assert ts.command("EHLO MAIL.Spam.Example")[0].text == "5.7.1 Your HELO hostname is not allowed"
    assert any("bad(regex" in line[3] and "no valid regular expression" in line[3] for line in log)


@pytest.mark.parametrize("name, ip, text", [
    ("no-dots", GOOD, "HELO name is not fully qualified. Read RFC 5321"),
    ("under_score.helo-test.example", GOOD, "HELO name contains invalid FQDN characters. Read RFC 1035"),
    ("nowhere.helo-test.example", GOOD, "HELO hostname does not exist"),
    ("mxonly.helo-test.example", GOOD, "HELO hostname did not resolve"),
    ("mail.helo-test.example", "198.18.74.13", "no rDNS for 198.18.74.13"),
])
def test_rfc_failures(connect, name, ip, text):
    """policy rfc adds is_not_fqdn, no_forward_dns and no_reverse_dns."""
    config_args = "policy rfc reject_type perm"
    ts = connect(ip, config_args, config={"badhelo": ["aol.com"]})
    [reply] = ts.command("EHLO " + name)
    assert str(reply) == "550 5.7.1 " + text


@pytest.mark.parametrize("name, ip", [
    ("mail.helo-test.example", GOOD),
    ("other.helo-test.example", "198.18.74.12"),  # resolves, though not to the client: rfc does not mind
    ("v6.helo-test.example", "2001:db8:feed:1::10"),  # AAAA only (qpsmtpd asked for A only)
    ("[198.18.74.11]", "198.18.74.11"),
])
def test_rfc_passes(connect, name, ip):
    ts, reply = helo(connect, ip, name, args="policy rfc reject_type perm")
    assert reply.code == 250


@pytest.mark.parametrize("name, ip, forward, reverse", [
    ("mail.helo-test.example", GOOD, True, True),  # the name is the address's, and its PTR
    ("pool.helo-test.example", "198.18.74.11", True, None),  # same /24
    ("v6.helo-test.example", "2001:db8:feed:1::10", True, True),
    ("anything.elsewhere.example", "198.18.74.12", None, True),  # PTR in the same two last labels ...
])
def test_strict_matching_dns(connect, name, ip, forward, reverse, zones):
    """policy strict: a forward or a reverse match is enough; both give karma +1."""
    if name.startswith("anything"):
        zones.add_zone("elsewhere.example.", ["anything 300 IN A 192.0.2.77"])  # ... which resolves elsewhere
    ts, reply = helo(connect, ip, name, args="policy strict reject_type perm")
    assert reply.code == 250, reply
    notes = ts.connection.notes
    assert (notes.get("helo_forward_match"), notes.get("helo_reverse_match")) == (forward, reverse)
    assert notes.get("karma", 0) == (1 if forward and reverse else 0)


def test_strict_refuses_no_matching_dns_and_literals(connect):
    """policy strict: a name that matches neither way, and any address literal, are refused."""
    _, reply = helo(connect, "198.18.74.12", "other.helo-test.example", args="policy strict reject_type perm")
    assert str(reply) == "550 5.7.1 That HELO hostname fails FCrDNS"
    _, reply = helo(connect, "198.18.74.11", "[198.18.74.11]", args="policy strict reject_type perm")
    assert str(reply) == "550 5.7.1 RFC 5321 allows an address literal, but we do not"


def test_default_reject_type_refuses_and_disconnects(connect):
    """As qpsmtpd: reject 1 with reject_type disconnect by default refuses the HELO itself and hangs up."""
    ts = connect(GOOD)
    assert [str(r) for r in ts.command("HELO aol.com")] == ["550 5.7.1 I do not believe you are aol.com."]
    assert ts.closed


def test_reject_temp(connect):
    ts = connect(GOOD, "reject_type temp")
    assert [str(r) for r in ts.command("EHLO aol.com")] == ["450 4.7.1 I do not believe you are aol.com."]
    assert not ts.closed


def test_reject_0_as_in_the_sample_config(connect):
    """`helo policy strict reject 0`: every failure is only logged and costs karma; mail goes on."""
    ts = connect("198.18.74.13", "policy strict reject 0")
    assert ts.command("EHLO nowhere.helo-test.example")[0].code == 250
    assert ts.connection.notes["karma"] == -1
    assert ts.command("MAIL FROM:<a@sender.test>")[0].code == 250


def test_reject_naughty_stores_the_refusal(connect):
    ts = connect(GOOD, "reject naughty")
    assert ts.command("EHLO aol.com")[0].code == 250
    assert ts.connection.notes["naughty"] == "(helo) I do not believe you are aol.com."


def test_relay_clients_are_not_checked(connect):
    ts = connect(GOOD, before=["relay"], config={"relayclients": GOOD})
    assert ts.command("EHLO aol.com")[0].code == 250


def test_dns_failure_of_the_reverse_lookup_is_a_temporary_refusal(connect):
    """SERVFAIL for the client's PTR: 450 4.7.1 (and a hang-up with the default disconnect), never a 5xx."""
    _, reply = helo(connect, SERVFAIL_PTR, "mail.helo-test.example", args="policy rfc reject_type perm")
    assert str(reply) == "450 4.7.1 error getting reverse DNS for %s" % SERVFAIL_PTR
    ts = connect(SERVFAIL_PTR, "policy rfc")
    [reply] = ts.command("EHLO mail.helo-test.example")
    assert (reply.code, reply.status) == (450, "4.7.1")
    assert ts.closed


def test_forward_timeout_passes_rfc_and_is_temporary_in_strict(connect):
    """A name whose lookup times out passes no_forward_dns (as qpsmtpd), but strict cannot match it: 450, in time."""
    started = time.monotonic()
    _, reply = helo(connect, "198.18.74.12", "host.timeout.test", args="policy rfc reject_type perm")
    assert reply.code == 250
    _, reply = helo(connect, "198.18.74.12", "host.timeout.test", args="policy strict reject_type perm")
    assert (reply.code, reply.status) == (450, "4.7.1")
    assert time.monotonic() - started < 3
    _, reply = helo(connect, "198.18.74.12", "host.timeout.test", args="policy strict reject 0")
    assert reply.code == 250


def test_second_ehlo_is_checked_afresh(connect):
    """Notes of an earlier EHLO (before a STARTTLS) do not carry over to the next name."""
    ts = connect(GOOD, "policy strict reject 0")
    ts.command("EHLO mail.helo-test.example")
    assert ts.connection.notes["helo_forward_match"]
    ts.session.connection.hello = None  # as after STARTTLS
    ts.command("EHLO other.helo-test.example")
    assert "helo_forward_match" not in ts.connection.notes


def test_x_helo_header_replaces_the_clients(connect):
    """X-HELO with the name the client gave is the first header; one the client sent is dropped."""
    ts = connect(GOOD, "reject 0")
    capture = QueueCapture()
    ts.mock_hook("queue", capture)
    replies = ts.send_message("a@sender.test", ["u@example.com"], "X-HELO: forged\nSubject: hi\n\nhello\n",
                              helo="mail.helo-test.example")
    assert replies[-1].code == 250
    assert capture.messages[0].startswith(b"X-HELO: mail.helo-test.example\n")
    assert b"forged" not in capture.messages[0]


def test_bad_policy_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="policy takes one of lenient, rfc, strict"):
        make_smtpd(tmp_path, plugins=["helo policy paranoid"])


def test_live_badhelo_is_refused_and_x_helo_is_stored(live_server, zones, tmp_path):
    """Over a real socket: a badhelo name gets 550 and the connection closes; a good one's mail carries X-HELO."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["helo", "rcpt_ok", "queue/maildir %s" % maildir],
                         config={"badhelo": ["aol.com"], "dns_servers": "127.0.0.1:%d" % zones.port})
    with smtplib.SMTP(*server.address, local_hostname="aol.com", timeout=10) as client:
        code, message = client.ehlo()
        assert (code, message) == (550, b"5.7.1 I do not believe you are aol.com.")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    with smtplib.SMTP(*server.address, local_hostname="client.example", timeout=10) as client:
        client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    [path] = (maildir / "new").iterdir()
    assert "\nX-HELO: client.example\n" in path.read_text()
