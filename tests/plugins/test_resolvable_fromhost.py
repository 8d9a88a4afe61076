"""resolvable_fromhost: the MAIL FROM domain must have a usable MX, or else an A/AAAA record; DNS failures are 4xx."""
import smtplib
import time

import pytest

from qpgevent.testing import TestSession, make_smtpd

ORIGIN = "rfh-test.example."
RECORDS = [
    "mx 300 IN MX 10 mail.rfh-test.example.", "mail 300 IN A 198.18.75.1",
    "mx6 300 IN MX 10 mail6.rfh-test.example.", "mail6 300 IN AAAA 2001:db8:feed:2::1",
    "secondmx 300 IN MX 10 lo.rfh-test.example.", "secondmx 300 IN MX 20 mail.rfh-test.example.",
    "aonly 300 IN A 198.18.75.2",
    "v6only 300 IN AAAA 2001:db8:feed:2::2",
    "badmx 300 IN MX 10 lo.rfh-test.example.", "lo 300 IN A 127.0.0.1",
    "badmx 300 IN A 198.18.75.3",  # not tried: its MX decides, as in qpsmtpd
    "nullmx 300 IN MX 0 .",
    "danglingmx 300 IN MX 10 gone.rfh-test.example.",
    "private 300 IN A 10.1.2.3",
    "txtonly 300 IN TXT \"v=spf1 -all\"",
    "slowmx 300 IN MX 10 host.timeout.test.",
    "brokenmx 300 IN MX 10 broken.test.",
]
INVALID = ["127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "169.254.0.0/16", "10.0.0.0/8"]  # qpsmtpd's sample
REFUSED = "450 4.1.8 FQDN required in the envelope sender (#5.1.8)"
TEMPORARY = "450 4.4.3 Temporary address resolution failure (#4.4.3)"


@pytest.fixture(scope="module")
def zones(dns_server):
    dns_server.add_zone(ORIGIN, RECORDS)
    return dns_server


@pytest.fixture
def session(zones, tmp_path):
    """``session("reject 0")`` -> a greeted session after EHLO, resolvable_fromhost with those arguments."""
    def factory(args="", before=(), config=None):
        values = {"dns_servers": "127.0.0.1:%d" % zones.port, "dns_timeout": "0.5",
                  "invalid_resolvable_fromhost": INVALID, "rcpthosts": "example.com", **(config or {})}
        smtpd = make_smtpd(tmp_path / str(len(list(tmp_path.iterdir()))),
                           plugins=[*before, ("resolvable_fromhost " + args).strip(), "rcpt_ok"], config=values)
        ts = TestSession(smtpd, remote_ip="198.18.75.100")
        ts.command("EHLO client.test")
        return ts
    return factory


def mail(ts, sender):
    [reply] = ts.command("MAIL FROM:<%s>" % sender)
    return reply


@pytest.mark.parametrize("domain, note", [
    ("mx.rfh-test.example", "mx"),
    ("mx6.rfh-test.example", "mx"),  # an MX host with only an AAAA record
    ("secondmx.rfh-test.example", "mx"),  # the first MX host is invalid, the second is fine
    ("aonly.rfh-test.example", "a"),
    ("v6only.rfh-test.example", "a"),
    ("[198.18.75.9]", "ip"),
    ("[IPv6:2001:db8::9]", "ip"),
])
def test_resolvable_domains_pass(session, domain, note):
    ts = session()
    assert mail(ts, "a@" + domain).code == 250
    assert ts.transaction.notes["resolvable_fromhost"] == note
    assert ts.transaction.notes["resolvable_fromhost_host"] == domain


@pytest.mark.parametrize("domain, note", [
    ("badmx.rfh-test.example", "invalid MX for badmx.rfh-test.example"),  # MX on 127.0.0.1
    ("nullmx.rfh-test.example", "invalid MX for nullmx.rfh-test.example"),  # RFC 7505 null MX
    ("danglingmx.rfh-test.example", "invalid MX for danglingmx.rfh-test.example"),
    ("private.rfh-test.example", "private.rfh-test.example has only invalid addresses (10.1.2.3)"),
    ("txtonly.rfh-test.example", "no MX, A or AAAA for txtonly.rfh-test.example"),
    ("nowhere.rfh-test.example", "no MX, A or AAAA for nowhere.rfh-test.example"),
])
def test_unresolvable_domains_are_refused_temporarily_by_default(session, domain, note):
    """reject 1 with qpsmtpd's default reject_type temp: 450 4.1.8; the note says why; karma -1."""
    ts = session()
    assert str(mail(ts, "a@" + domain)) == REFUSED
    assert ts.connection.notes["karma"] == -1
    assert ts.session.made_transaction.notes["resolvable_fromhost"] == note


def test_invalid_networks_come_from_the_config(session):
    """Without invalid_resolvable_fromhost an MX on 127.0.0.1 counts."""
    ts = session(config={"invalid_resolvable_fromhost": []})
    assert mail(ts, "a@badmx.rfh-test.example").code == 250


def test_reject_type_perm(session):
    assert str(mail(session("reject_type perm"), "a@nowhere.rfh-test.example")) == \
        "550 5.1.8 FQDN required in the envelope sender (#5.1.8)"


def test_reject_0_as_in_the_sample_config(session):
    """`resolvable_fromhost reject 0`: logged, noted, mail goes on."""
    ts = session("reject 0")
    assert mail(ts, "a@nowhere.rfh-test.example").code == 250
    assert ts.transaction.notes["resolvable_fromhost"] == "no MX, A or AAAA for nowhere.rfh-test.example"


def test_reject_naughty(session):
    ts = session("reject naughty")
    assert mail(ts, "a@nowhere.rfh-test.example").code == 250
    assert ts.connection.notes["naughty"] == "(resolvable_fromhost) FQDN required in the envelope sender (#5.1.8)"


@pytest.mark.parametrize("domain", ["timeout.test", "broken.test", "slowmx.rfh-test.example",
                                    "brokenmx.rfh-test.example"])
@pytest.mark.parametrize("args", ["", "reject_type perm", "reject naughty"])
def test_dns_failures_are_temporary_whatever_the_reject_type(session, domain, args):
    """A timeout or SERVFAIL (for the domain or its MX host) is 450 4.4.3, within the DNS bound; never 5xx."""
    ts = session(args)
    started = time.monotonic()
    assert str(mail(ts, "a@" + domain)) == TEMPORARY
    assert time.monotonic() - started < 2.5
    assert ts.session.made_transaction.notes["resolvable_fromhost"] == "temperror"


def test_dns_failure_with_reject_0_lets_mail_in(session):
    assert mail(session("reject 0"), "a@timeout.test").code == 250


def test_null_sender_and_relay_clients_are_not_checked(session, zones):
    ts = session()
    assert mail(ts, "").code == 250
    assert ts.transaction.notes["resolvable_fromhost"] == "null"
    asked = zones.count("nowhere.rfh-test.example", "MX")
    relay = session(before=["relay"], config={"relayclients": "198.18.75.100"})
    assert mail(relay, "a@nowhere.rfh-test.example").code == 250
    assert zones.count("nowhere.rfh-test.example", "MX") == asked


def test_live_unresolvable_sender_is_refused(live_server, zones, tmp_path):
    """Over a real socket: MAIL from a domain with no records gets 450 4.1.8; a resolvable one is delivered."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["resolvable_fromhost", "rcpt_ok", "queue/maildir %s" % maildir],
                         config={"dns_servers": "127.0.0.1:%d" % zones.port, "dns_timeout": "1"})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("a@nowhere.rfh-test.example") == (450, REFUSED[4:].encode())
        client.rset()
        client.sendmail("a@mx.rfh-test.example", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    assert len(list((maildir / "new").iterdir())) == 1
