"""badrcptto: listed recipients (address, @host, pattern) are refused, as if they did not exist by default."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

# qpsmtpd's config.sample/badrcptto, as it ships.
BADRCPTTO = [
    "######## entries used for testing ###",
    "bad@example.com",
    "@bad.example.com",
    "########    Example patterns   #######",
    "!       Sorry, bang paths not accepted here",
    "@.*@    Sorry, multiple at signs not accepted here",
    "%       Sorry, percent hack not accepted here ",
    r"^\S+-NOSPAM@example\.com$",
]
CONFIG = {"rcpthosts": ["example.com", "bad.example.com"], "badrcptto": BADRCPTTO}


def rcpt(smtpd, recipient, ip="192.0.2.9"):
    ts = TestSession(smtpd, remote_ip=ip)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    return ts, str(ts.command("RCPT TO:<%s>" % recipient)[0])


@pytest.mark.parametrize("recipient, reply", [
    ("bad@example.com", "550 5.1.1 mail to bad@example.com not accepted here"),
    ("BAD@Example.Com", "550 5.1.1 mail to bad@example.com not accepted here"),
    ("anyone@bad.example.com", "550 5.1.1 mail to @bad.example.com not accepted here"),
    ("a!b@example.com", "550 5.7.1 Sorry, bang paths not accepted here"),
    ('"a@b"@example.com', "550 5.7.1 Sorry, multiple at signs not accepted here"),
    ("a%b@example.com", "550 5.7.1 Sorry, percent hack not accepted here"),
    ("Joe-NoSpam@example.com", "550 5.1.1 mail to ^\\S+-NOSPAM@example\\.com$ not accepted here"),  # \S kept
    ("good@example.com", None),
])
def test_entry_forms(smtpd_factory, recipient, reply):
    """qpsmtpd's sample lines refuse what they list, each with its reason or 5.1.1."""
    ts, answer = rcpt(smtpd_factory(["badrcptto", "rcpt_ok"], CONFIG), recipient)
    assert answer == (reply or "250 2.1.5 <%s>, recipient ok" % recipient)


def test_listed_recipient_costs_two_karma(smtpd_factory):
    """As in qpsmtpd, a listed recipient costs two points of karma."""
    ts, _ = rcpt(smtpd_factory(["badrcptto", "rcpt_ok"], CONFIG), "bad@example.com")
    assert ts.connection.notes["karma"] == -2


def test_reject_naughty_defers(smtpd_factory):
    """reject naughty: the recipient is left to the next plugin, the reason stored for naughty."""
    ts, answer = rcpt(smtpd_factory(["badrcptto reject naughty", "rcpt_ok"], CONFIG), "bad@example.com")
    assert answer.startswith("250 ")
    assert "mail to bad@example.com not accepted here" in ts.connection.notes["naughty"]


def test_whitelisted_host_and_relay_client_are_immune(smtpd_factory):
    """A whitelisted host or a relay client is not checked; an ordinary client is."""
    config = dict(CONFIG, whitelisthosts=["192.0.2."], relayclients=["198.51.100.1"])
    smtpd = smtpd_factory(["relay", "whitelist", "badrcptto", "rcpt_ok"], config)
    assert rcpt(smtpd, "bad@example.com", ip="192.0.2.9")[1].startswith("250 ")
    assert rcpt(smtpd, "bad@example.com", ip="198.51.100.1")[1].startswith("250 ")
    assert rcpt(smtpd, "bad@example.com", ip="203.0.113.1")[1].startswith("550 5.1.1")


def test_invalid_pattern_stops_the_start_up(smtpd_factory, tmp_path):
    """An invalid pattern stops the start-up naming the file and line."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["badrcptto"], dict(CONFIG, badrcptto=["bad@example.com", "[unclosed  reason"]))
    assert "%s:2:" % (tmp_path / "config" / "badrcptto") in str(caught.value)


def test_live_listed_recipient_is_refused(live_server):
    """Over a real socket: a listed recipient gets 550 5.1.1, another 250."""
    server = live_server(plugins=["badrcptto", "rcpt_ok", "queue/discard"], config={"badrcptto": BADRCPTTO})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        assert client.rcpt("bad@example.com") == (550, b"5.1.1 mail to bad@example.com not accepted here")
        assert client.rcpt("good@example.com")[0] == 250
