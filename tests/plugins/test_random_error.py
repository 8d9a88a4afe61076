"""random_error: a share of sessions fails at random with 4xx; the randomness is the module's RANDOM."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession


class Fixed:
    """A stand-in for random.Random that gives the numbers a test wants, in order."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def random_module(smtpd):
    [plugin] = [p for p in smtpd.plugins if p.name == "random_error"]
    return plugin.module


def test_zero_and_negative_never_fail(smtpd_factory):
    """0 and a negative rate never fail, whatever the dice say."""
    for line in ("random_error 0", "random_error -5"):
        smtpd = smtpd_factory([line, "rcpt_ok", "queue/discard"], {"rcpthosts": ["example.com"]})
        random_module(smtpd).RANDOM = Fixed()  # a draw would raise IndexError
        ts = TestSession(smtpd)
        replies = ts.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")
        assert [r.code for r in replies] == [250, 250, 250, 250]


def test_failure_kinds(smtpd_factory):
    """A draw over the stage's chance fails: 3 in 5 DENYSOFT (4xx, session goes on), 2 in 5 with a disconnect."""
    smtpd = smtpd_factory(["random_error 50", "rcpt_ok"], {"rcpthosts": ["example.com"]})
    # 50% over six stages: each stage passes when the draw is below 0.5 ** (1/6) = 0.8909
    random_module(smtpd).RANDOM = Fixed(0.1, 0.95, 0.9, 0.1, 0.95, 0.1)
    ts = TestSession(smtpd)
    assert ts.greeting[0].code == 220                              # connect: 0.1 passes
    assert str(ts.command("EHLO client.test")[0]) == "450 4.7.1 random failure"   # 0.95 fails, 0.9: DENYSOFT
    assert not ts.closed
    assert ts.command("HELO client.test")[0].code == 250           # 0.1 passes
    [reply] = ts.command("MAIL FROM:<a@sender.test>")              # 0.95 fails, 0.1: with a disconnect
    assert reply.code == 421 and reply.text == "4.7.1 random failure"
    assert ts.closed


def test_note_changes_the_rate(smtpd_factory):
    """Another plugin may rewrite the connection note random_fail_%: from 0 (never) to 100 (always) at HELO."""
    smtpd = smtpd_factory(["random_error 0", "rcpt_ok"], {"rcpthosts": ["example.com"]})
    random_module(smtpd).RANDOM = Fixed(0.5, 0.9)
    ts = TestSession(smtpd)
    assert ts.greeting[0].code == 220
    ts.mock_hook("helo", lambda plugin, transaction, *a: plugin.qp.connection.notes.update({"random_fail_%": 100}))
    assert str(ts.command("HELO client.test")[0]) == "450 4.7.1 random failure"


def test_seeded_rate_is_about_right(smtpd_factory):
    """With a seeded RANDOM, 20% gives about 20 failed sessions in 100 (each through every stage)."""
    smtpd = smtpd_factory(["random_error 20", "rcpt_ok", "queue/discard"], {"rcpthosts": ["example.com"]})
    random_module(smtpd).RANDOM.seed(9)
    failed = 0
    for _ in range(400):
        ts = TestSession(smtpd)
        replies = ts.greeting + ts.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")
        failed += any(r.code >= 400 for r in replies)
    assert 50 <= failed <= 110   # 80 expected


@pytest.mark.parametrize("line", ["random_error 101", "random_error often"])
def test_bad_argument_stops_the_start_up(smtpd_factory, line):
    """The rate is a number of at most 100."""
    with pytest.raises(ConfigError, match="percent takes a number at most 100"):
        smtpd_factory([line])


def test_live_failure_is_a_4xx(live_server):
    """Over a real socket, at 100%: the client is refused with a 4xx at connect, never a 5xx."""
    server = live_server(plugins=["random_error 100", "rcpt_ok", "queue/discard"])
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP(*server.address, timeout=10)
    assert caught.value.smtp_code == 450
