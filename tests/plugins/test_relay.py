"""relay: who may relay, from relayclients, norelayclients and RELAYCLIENT."""
import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

CONFIG = {
    "rcpthosts": ["example.com"],
    "relayclients": [
        "192.0.2.7",
        "198.51.100.0/24",
        "2001:db8:1::/48",
        "2001:db8:2::5",
        "10.1.",
        "FDDA:B13D:",
        "2001:db8:9:0:",
        "not-an-address",
        "203.0.113.9   # the office printer",
    ],
    "norelayclients": ["198.51.100.66", "10.1.2."],
}
PLUGINS = ["relay", "rcpt_ok"]
DENIED = "550 5.7.1 Relaying denied (#5.7.1)"


def session(smtpd, ip, env=None):
    ts = TestSession(smtpd, remote_ip=ip, greet=False)
    ts.session.env.update(env or {})
    ts.session.start()
    assert [r.code for r in ts._take()] == [220]
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:<a@sender.test>")[0].code == 250
    return ts


def foreign_rcpt(ts):
    return [str(r) for r in ts.command("RCPT TO:<someone@elsewhere.test>")]


@pytest.mark.parametrize("ip, may_relay", [
    ("192.0.2.7", True),            # single IPv4 address
    ("192.0.2.8", False),
    ("198.51.100.1", True),         # IPv4 CIDR
    ("198.51.101.1", False),
    ("2001:db8:1:ffff::1", True),   # IPv6 CIDR
    ("2001:db8:3::1", False),
    ("2001:db8:2::5", True),        # single IPv6 address
    ("2001:db8:2::6", False),
    ("10.1.200.3", True),           # dotted prefix
    ("10.10.1.1", False),           # ... matches whole octets only
    ("fdda:b13d::9", True),         # IPv6 prefix, written in upper case
    ("2001:db8:9::1", True),        # IPv6 prefix matches the ::-compressed client address
    ("2001:db8:9:1::1", False),
    ("203.0.113.9", True),          # entry with a comment after it
    ("::ffff:192.0.2.7", True),     # IPv4-mapped IPv6 client
])
def test_relayclients_forms(smtpd_factory, ip, may_relay):
    """IPs, IPv4 and IPv6 CIDRs and dotted prefixes in relayclients let a client send to any domain."""
    ts = session(smtpd_factory(PLUGINS, CONFIG), ip)
    if may_relay:
        assert foreign_rcpt(ts) == ["250 2.1.5 <someone@elsewhere.test>, recipient ok"]
    else:
        assert foreign_rcpt(ts) == [DENIED]
    assert ts.connection.relay_client is may_relay


@pytest.mark.parametrize("ip", ["198.51.100.66", "10.1.2.3"])
def test_norelayclients_vetoes(smtpd_factory, ip):
    """An address in norelayclients (IP or prefix) may not relay even though relayclients covers it."""
    ts = session(smtpd_factory(PLUGINS, CONFIG), ip)
    assert foreign_rcpt(ts) == [DENIED]
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250  # still a normal client for our domains


def test_relayclient_variable_grants_relaying(smtpd_factory):
    """RELAYCLIENT in the session environment (even empty, as tcpserver sets it) grants relaying."""
    smtpd = smtpd_factory(PLUGINS, CONFIG)
    assert foreign_rcpt(session(smtpd, "203.0.113.50", env={"RELAYCLIENT": ""}))[0].startswith("250 ")
    assert foreign_rcpt(session(smtpd, "203.0.113.50")) == [DENIED]


def test_norelayclients_beats_relayclient_variable(smtpd_factory):
    """norelayclients wins over RELAYCLIENT too."""
    ts = session(smtpd_factory(PLUGINS, CONFIG), "198.51.100.66", env={"RELAYCLIENT": ""})
    assert foreign_rcpt(ts) == [DENIED]


def test_relay_only_refuses_every_recipient_of_others(smtpd_factory):
    """relay only 1: a client that may not relay is refused even for our own domains (qpsmtpd's text);
    relay clients pass."""
    smtpd = smtpd_factory(["relay only 1", "rcpt_ok"], CONFIG)
    outsider = session(smtpd, "203.0.113.50")
    assert [str(r) for r in outsider.command("RCPT TO:<u@example.com>")] == ["550 5.7.1 relaying denied"]
    insider = session(smtpd, "192.0.2.7")
    assert insider.command("RCPT TO:<u@example.com>")[0].code == 250
    assert foreign_rcpt(insider)[0].startswith("250 ")


def test_relay_only_0_is_the_default(smtpd_factory):
    """relay only 0 behaves like plain relay: outsiders may still send to our domains."""
    ts = session(smtpd_factory(["relay only 0", "rcpt_ok"], CONFIG), "203.0.113.50")
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250


@pytest.mark.parametrize("arguments", ["only", "only yes", "sometimes 1"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    """Malformed or unknown arguments are a start-up error."""
    with pytest.raises(ConfigError):
        smtpd_factory(["relay " + arguments])
