"""badmailfrom: listed envelope senders (address, @host, pattern) are refused with the line's reason."""
import smtplib

import pytest

from qpgevent import LOGWARN
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

BADMAILFROM = [
    "# qpsmtpd's sample, and the three forms",
    "badmailexample@microsoft.com",
    "@www.yahoo.com  yahoo never sends from www",
    r"^streamsendbouncer@.*\.mailengine1\.com$    Your right-hand side VERP doesn't fool me",
    r"^admin.*\.ppoonn400\.com$",
    "@Bücher.example",
]
CONFIG = {"rcpthosts": ["example.com"], "badmailfrom": BADMAILFROM}
DEFAULT = "550 5.7.1 Your envelope sender is in my badmailfrom list"


def mail(smtpd, sender, ip="192.0.2.9"):
    ts = TestSession(smtpd, remote_ip=ip)
    ts.command("EHLO client.test")
    return ts, str(ts.command("MAIL FROM:<%s>" % sender)[0])


@pytest.mark.parametrize("sender, reply", [
    ("badmailexample@microsoft.com", DEFAULT),                         # a whole address
    ("BadMailExample@Microsoft.COM", DEFAULT),                         # ... in any case
    ("someone@www.yahoo.com", "550 5.7.1 yahoo never sends from www"),  # @host, with its reason
    ("someone@yahoo.com", None),                                        # ... that host only
    ("streamsendbouncer@x.mailengine1.com", "550 5.7.1 Your right-hand side VERP doesn't fool me"),  # pattern
    ("streamsendbouncer@mailengine1.com.evil.test", None),              # ... anchored
    ("admin7@mail.ppoonn400.com", DEFAULT),                             # pattern without a reason
    ("u@xn--bcher-kva.example", DEFAULT),                               # @host in either IDNA form
    ("friend@sender.test", None),
])
def test_entry_forms(smtpd_factory, sender, reply):
    """Each form of badmailfrom line refuses what it lists and nothing else."""
    ts, answer = mail(smtpd_factory(["badmailfrom", "rcpt_ok"], CONFIG), sender)
    assert answer == (reply or "250 2.1.0 <%s>, sender OK - how exciting to get mail from you!" % sender)


def test_listed_sender_loses_karma(smtpd_factory):
    """As in qpsmtpd, a listed sender costs the connection a point of karma."""
    ts, answer = mail(smtpd_factory(["badmailfrom", "rcpt_ok"], CONFIG), "badmailexample@microsoft.com")
    assert ts.connection.notes["karma"] == -1


def test_null_sender_and_relay_clients_are_not_checked(smtpd_factory):
    """<> is never listed; a relay client is immune."""
    smtpd = smtpd_factory(["relay", "badmailfrom", "rcpt_ok"], dict(CONFIG, relayclients=["192.0.2.7"]))
    assert mail(smtpd, "")[1].startswith("250 ")
    assert mail(smtpd, "badmailexample@microsoft.com", ip="192.0.2.7")[1].startswith("250 ")


def test_reject_naughty_defers_the_refusal(smtpd_factory):
    """qpsmtpd's sample line `badmailfrom reject naughty`: MAIL passes, the reason waits in the naughty note."""
    ts, answer = mail(smtpd_factory(["badmailfrom reject naughty", "rcpt_ok"], CONFIG), "x@www.yahoo.com")
    assert answer.startswith("250 ")
    assert ts.connection.notes["naughty"] == "(badmailfrom) yahoo never sends from www"


def test_reject_0_only_logs(smtpd_factory):
    """reject 0: the listed sender is accepted and the failure logged."""
    ts = TestSession(smtpd_factory(["badmailfrom reject 0", "rcpt_ok"], CONFIG))
    logged = ts.capture_log()
    ts.command("HELO client.test")
    assert ts.command("MAIL FROM:<x@www.yahoo.com>")[0].code == 250
    assert any("fail, tolerated" in m for _, _, plugin, m in logged if plugin == "badmailfrom")


def test_reject_type_temp(smtpd_factory):
    """reject_type temp turns the refusal into a 450 with a 4.x.x status."""
    _, answer = mail(smtpd_factory(["badmailfrom reject_type temp", "rcpt_ok"], CONFIG), "x@www.yahoo.com")
    assert answer == "450 4.7.1 yahoo never sends from www"


@pytest.mark.parametrize("whitelist_config", [
    {"whitelisthosts": ["192.0.2.0/24"]},          # whitelisthost note: badmailfrom is immune
    {"whitelistsenders": ["www.yahoo.com"]},        # OK at mail: badmailfrom is not asked
])
def test_whitelist_before_badmailfrom_exempts(smtpd_factory, whitelist_config):
    """A whitelisted host (from 192.0.2.9) or sender (from anywhere) passes badmailfrom listed after it."""
    smtpd = smtpd_factory(["whitelist", "badmailfrom", "rcpt_ok"], dict(CONFIG, **whitelist_config))
    assert mail(smtpd, "x@www.yahoo.com", ip="192.0.2.9")[1].startswith("250 ")
    from_elsewhere = mail(smtpd, "x@www.yahoo.com", ip="203.0.113.5")[1]
    assert from_elsewhere.startswith("250 " if "whitelistsenders" in whitelist_config else "550 ")


@pytest.mark.parametrize("line, complaint", [
    ("^bad(@example.com$", "not a valid regular expression"),
    ("example.com", "neither an address, an @host nor a pattern"),
])
def test_bad_lines_stop_the_start_up_naming_file_and_line(smtpd_factory, tmp_path, line, complaint):
    """An invalid pattern or a line of no form is a start-up error with the file, the line and the fix."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["badmailfrom"], dict(CONFIG, badmailfrom=["ok@example.net", "# comment", line]))
    message = str(caught.value)
    assert "%s:3:" % (tmp_path / "config" / "badmailfrom") in message
    assert complaint in message


def test_file_is_read_again_and_a_bad_new_line_is_skipped(smtpd_factory, tmp_path):
    """An edit takes effect without a restart; a broken line added meanwhile is logged, the others still work."""
    smtpd = smtpd_factory(["badmailfrom", "rcpt_ok"], CONFIG)
    assert mail(smtpd, "new@spam.test")[1].startswith("250 ")
    (tmp_path / "config" / "badmailfrom").write_text("^broken(\n@spam.test gone\n")
    smtpd.config.reload()
    ts = TestSession(smtpd)
    logged = ts.capture_log()
    ts.command("HELO client.test")
    assert str(ts.command("MAIL FROM:<new@spam.test>")[0]) == "550 5.7.1 gone"
    assert any(level == LOGWARN and "broken(" in m for level, _, _, m in logged)


def test_live_listed_sender_is_refused(live_server, tmp_path):
    """Over a real socket: the listed sender gets 550 5.7.1 with its reason, another's mail is queued."""
    server = live_server(plugins=["badmailfrom", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                         config={"badmailfrom": BADMAILFROM})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("x@www.yahoo.com") == (550, b"5.7.1 yahoo never sends from www")
        client.rset()
        client.sendmail("friend@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1
