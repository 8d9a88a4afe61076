"""noop_counter: too many NOOPs in a row end the session; any other command starts the count again."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

STOP = "500 5.5.1 Stop wasting my time, too many consecutive NOOPs"


def noops(ts, count):
    return [str(ts.command("NOOP")[0]) for _ in range(count)]


@pytest.mark.parametrize("line, limit", [("noop_counter", 3), ("noop_counter 5", 5), ("noop_counter 1", 1)])
def test_limit(smtpd_factory, line, limit):
    """The NOOP that makes MAX in a row (default 3) is refused and the connection closed."""
    ts = TestSession(smtpd_factory([line]))
    assert noops(ts, limit) == ["250 2.0.0 OK"] * (limit - 1) + [STOP]
    assert ts.closed


@pytest.mark.parametrize("other", ["RSET", "HELO client.test", "HELP", "XYZZY", "VRFY someone"])
def test_other_commands_reset_the_count(smtpd_factory, other):
    """Any other command between NOOPs, even an unknown one, starts the count again."""
    ts = TestSession(smtpd_factory(["noop_counter 3"]))
    assert noops(ts, 2) == ["250 2.0.0 OK"] * 2
    ts.command(other)
    assert noops(ts, 2) == ["250 2.0.0 OK"] * 2
    assert not ts.closed


def test_counts_are_per_connection(smtpd_factory):
    """Two clients' NOOPs do not add up (qpsmtpd shared one count among all)."""
    smtpd = smtpd_factory(["noop_counter 3"])
    first, second = TestSession(smtpd), TestSession(smtpd)
    for _ in range(2):
        assert noops(first, 1) == noops(second, 1) == ["250 2.0.0 OK"]
    assert not first.closed and not second.closed


@pytest.mark.parametrize("line", ["noop_counter 0", "noop_counter many"])
def test_bad_argument_stops_the_start_up(smtpd_factory, line):
    """MAX must be a whole number of at least 1."""
    with pytest.raises(ConfigError, match="max takes a whole number at least 1"):
        smtpd_factory([line])


def test_live_client_is_disconnected(live_server):
    """Over a real socket: the third NOOP gets 500 5.5.1 and the server hangs up."""
    server = live_server(plugins=["noop_counter", "rcpt_ok", "queue/discard"])
    client = smtplib.SMTP(*server.address, timeout=10)
    client.ehlo("client.test")
    assert client.noop()[0] == client.noop()[0] == 250
    assert client.noop() == (500, b"5.5.1 Stop wasting my time, too many consecutive NOOPs")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()
