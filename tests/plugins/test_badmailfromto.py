"""badmailfromto: a listed sender cannot write to the recipient it is paired with, who seems not to exist."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

PAIRS = ["stalker@example.net   victim@example.com", "@harass.example  Victim@Example.com  since 2024"]
CONFIG = {"rcpthosts": ["example.com"], "badmailfromto": PAIRS}


def replies(smtpd, sender, recipients):
    ts = TestSession(smtpd)
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<%s>" % sender)
    return ts, [str(ts.command("RCPT TO:<%s>" % r)[0]) for r in recipients]


@pytest.mark.parametrize("sender", ["stalker@example.net", "Stalker@EXAMPLE.net", "anyone@harass.example"])
def test_listed_pair_is_refused_other_recipients_pass(smtpd_factory, sender):
    """A listed sender (address or @host) is refused for its paired recipient only."""
    ts, answers = replies(smtpd_factory(["badmailfromto", "rcpt_ok"], CONFIG), sender,
                          ["victim@example.com", "friend@example.com"])
    assert answers == ["550 5.1.1 mail to victim@example.com not accepted here",
                       "250 2.1.5 <friend@example.com>, recipient ok"]
    assert ts.transaction.notes["badmailfromto"]


def test_other_senders_reach_the_recipient(smtpd_factory):
    """A sender not listed writes to the protected recipient as usual."""
    ts, answers = replies(smtpd_factory(["badmailfromto", "rcpt_ok"], CONFIG), "mum@example.org", ["victim@example.com"])
    assert answers[0].startswith("250 ")
    assert "badmailfromto" not in ts.transaction.notes


@pytest.mark.parametrize("line", ["lonely@example.net", "stalker@example.net @example.com", "example.net v@example.com"])
def test_bad_pairs_stop_the_start_up(smtpd_factory, tmp_path, line):
    """A line without a pair, or with an entry of no form, is a start-up error with file and line."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["badmailfromto"], dict(CONFIG, badmailfromto=[line]))
    assert "%s:1:" % (tmp_path / "config" / "badmailfromto") in str(caught.value)


def test_live_pair_is_refused(live_server):
    """Over a real socket: the pair is refused 550 5.1.1."""
    server = live_server(plugins=["badmailfromto", "rcpt_ok", "queue/discard"], config={"badmailfromto": PAIRS})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("stalker@example.net")
        assert client.rcpt("victim@example.com") == (550, b"5.1.1 mail to victim@example.com not accepted here")
