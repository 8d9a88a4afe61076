"""parse_addr_withhelo: HELO clients are held to RFC 821 (no MAIL/RCPT parameters); EHLO clients are not."""
import smtplib

import pytest

from qpgevent.testing import TestSession

PLUGINS = ["parse_addr_withhelo", "rcpt_ok"]
CONFIG = {"rcpthosts": ["example.com"]}


def session(smtpd_factory, greeting):
    ts = TestSession(smtpd_factory(PLUGINS, CONFIG))
    assert ts.command("%s client.test" % greeting)[0].code == 250
    return ts


@pytest.mark.parametrize("line, reply", [
    ("MAIL FROM:<a@sender.test>", "250 2.1.0 <a@sender.test>, sender OK - how exciting to get mail from you!"),
    ("MAIL FROM: <a@sender.test>", "250 2.1.0 <a@sender.test>, sender OK - how exciting to get mail from you!"),
    ("MAIL FROM:a@sender.test", "250 2.1.0 <a@sender.test>, sender OK - how exciting to get mail from you!"),
    ("MAIL FROM:", "250 2.1.0 <>, sender OK - how exciting to get mail from you!"),
    ("MAIL FROM:<a@sender.test> SIZE=100", "501 5.5.4 No parameters allowed in MAIL"),
    ("MAIL FROM:a@sender.test BODY=8BITMIME", "501 5.5.4 No parameters allowed in MAIL"),
    ("MAIL FROM:nobody", "501 5.5.4 Could not parse your MAIL FROM command"),
    ("MAIL <a@sender.test>", "501 5.5.4 Syntax error in command"),
])
def test_helo_mail(smtpd_factory, line, reply):
    """After HELO, MAIL takes RFC 821 forms only."""
    assert str(session(smtpd_factory, "HELO").command(line)[0]) == reply


@pytest.mark.parametrize("line, reply", [
    ("RCPT TO:<u@example.com>", "250 2.1.5 <u@example.com>, recipient ok"),
    ("RCPT TO:u@example.com", "250 2.1.5 <u@example.com>, recipient ok"),
    ("RCPT TO:postmaster", "250 2.1.5 <postmaster>, recipient ok"),
    ("RCPT TO:<u@example.com> NOTIFY=NEVER", "501 5.5.4 No parameters allowed in RCPT"),
    ("RCPT TO:someone", "501 5.5.4 Could not parse your RCPT TO command"),
    ("RCPT FROM:<u@example.com>", "501 5.5.4 Syntax error in command"),
])
def test_helo_rcpt(smtpd_factory, line, reply):
    """After HELO, RCPT takes RFC 821 forms only (and postmaster without brackets)."""
    ts = session(smtpd_factory, "HELO")
    ts.command("MAIL FROM:<a@sender.test>")
    assert str(ts.command(line)[0]) == reply


def test_ehlo_clients_keep_their_parameters(smtpd_factory):
    """After EHLO the usual ESMTP parser runs: parameters are fine."""
    ts = session(smtpd_factory, "EHLO")
    assert ts.command("MAIL FROM:<a@sender.test> SIZE=100")[0].code == 250


def test_live_helo_client_with_parameters(live_server):
    """Over a real socket: smtplib after HELO sending SIZE is refused 501 5.5.4, without it accepted."""
    server = live_server(plugins=PLUGINS + ["queue/discard"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.helo("client.test")
        assert client.docmd("MAIL", "FROM:<a@sender.test> SIZE=10") == (501, b"5.5.4 No parameters allowed in MAIL")
        assert client.mail("a@sender.test")[0] == 250
        assert client.rcpt("u@example.com")[0] == 250
