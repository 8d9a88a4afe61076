"""rcpt_regexp: the first matching pattern or address answers the recipient with its code and message."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

RULES = [
    "# rcpt_regexp - config for rcpt_regexp plugin (qpsmtpd's POD example, then more)",
    "me@myhost.org           OK       Accepting mail",
    r"/^user\d+@doma\.in$/   OK       Accepting mail",
    "info@myhost.com         DENY     User not found.",
    "/^unused@.*/            DENY",
    "/^busy@/                DENYSOFT Try later (#4.2.1)",
    "/^policy@/              DENY     5.7.1 Not for you",
    "/^(abuse|postmaster)@/  DECLINED",
]
CONFIG = {"rcpthosts": ["myhost.org", "myhost.com"], "rcpt_regexp": RULES}


def rcpt(smtpd, recipient):
    ts = TestSession(smtpd)
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    return str(ts.command("RCPT TO:<%s>" % recipient)[0])


@pytest.mark.parametrize("recipient, reply", [
    ("me@myhost.org", "250 2.1.5 Accepting mail"),               # address, OK
    ("ME@MyHost.org", "250 2.1.5 Accepting mail"),               # ... any case
    ("User42@Doma.in", "250 2.1.5 Accepting mail"),              # pattern, OK (not one of our domains)
    ("info@myhost.com", "550 5.1.1 User not found."),            # address, DENY with a message
    ("unused@myhost.com", "550 5.1.1 No such user."),            # DENY without one
    ("busy@myhost.com", "450 4.2.1 Try later (#4.2.1)"),         # DENYSOFT, the line's own status
    ("policy@myhost.com", "550 5.7.1 Not for you"),
    ("abuse@myhost.com", "250 2.1.5 <abuse@myhost.com>, recipient ok"),  # DECLINED: rcpt_ok decides
    ("other@myhost.org", "250 2.1.5 <other@myhost.org>, recipient ok"),  # no rule: rcpt_ok decides
])
def test_rules(smtpd_factory, recipient, reply):
    """Addresses and /patterns/ with each code give qpsmtpd's answers, with enhanced codes."""
    assert rcpt(smtpd_factory(["rcpt_regexp", "rcpt_ok"], CONFIG), recipient) == reply


@pytest.mark.parametrize("line, complaint", [
    ("/^broken(/ DENY", "not a valid regular expression"),
    ("someone@myhost.org", "no return code"),
    ("someone@myhost.org MAYBE", "'MAYBE' is not a return code"),
    ("someone@myhost.org DONE", "'DONE' is not a return code"),
])
def test_bad_lines_stop_the_start_up(smtpd_factory, tmp_path, line, complaint):
    """A bad pattern, a missing or unknown code (DONE included) is a start-up error with file and line."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["rcpt_regexp"], dict(CONFIG, rcpt_regexp=RULES[:2] + [line]))
    assert "%s:3:" % (tmp_path / "config" / "rcpt_regexp") in str(caught.value)
    assert complaint in str(caught.value)


def test_live_rules(live_server):
    """Over a real socket: an OK rule accepts, a DENY rule refuses 5.1.1."""
    server = live_server(plugins=["rcpt_regexp", "rcpt_ok", "queue/discard"], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        assert client.rcpt("user7@doma.in") == (250, b"2.1.5 Accepting mail")
        assert client.rcpt("info@myhost.com") == (550, b"5.1.1 User not found.")
