"""hosts_allow: per-address connection limit and the hosts_allow rules, before the greeting."""
import socket

import pytest

from qpgevent import replies as R
from qpgevent.errors import ConfigError
from qpgevent.limits import ConnectionLimits
from qpgevent.testing import TestSession, read_reply

RULES = [
    "192.0.2.7        DECLINED",
    "192.0.2.0/24     DENY Sorry, known spam only source",
    "2001:db8::/32    DENYSOFT Too busy for you today",
    "198.51.100.0/24  DENY_DISCONNECT",
    "203.0.113.5      OK",
]


def connect(smtpd, ip, **pre_connection):
    """A session from ``ip`` started with the given pre-connection facts; returns it and its first replies."""
    ts = TestSession(smtpd, remote_ip=ip, greet=False)
    ts.session.start(**pre_connection)
    return ts, ts._take()



def test_over_the_servers_limit_gets_451(smtpd_factory):
    """With max_conn_ip 2 from the server, a third session from one address gets 451 4.7.1 and is closed."""
    smtpd = smtpd_factory(["hosts_allow"])
    ip = "192.0.2.50"
    ts, replies = connect(smtpd, ip, max_conn_ip=2, child_addrs=[ip, "192.0.2.51", ip, ip])
    assert [(r.code, r.status) for r in replies] == [(451, "4.7.1")]
    assert replies[0].text == "4.7.1 Sorry, too many connections from 192.0.2.50, try again later"
    assert ts.closed


def test_at_the_limit_is_greeted(smtpd_factory):
    """Exactly max_conn_ip sessions from one address (this one included) are allowed."""
    smtpd = smtpd_factory(["hosts_allow"])
    ip = "192.0.2.50"
    ts, replies = connect(smtpd, ip, max_conn_ip=2, child_addrs=[ip, "192.0.2.51", "192.0.2.51", ip])
    assert [r.code for r in replies] == [220]
    assert not ts.closed


def test_limit_counted_from_the_servers_per_address_count(smtpd_factory):
    """The server passes its per-address session count (no list of every session): the limit holds the same."""
    smtpd = smtpd_factory(["hosts_allow"])
    limits = ConnectionLimits(0, 0)
    ip = "192.0.2.50"
    for address in (ip, "192.0.2.51", ip):
        limits.enter(address)
    _, replies = connect(smtpd, ip, max_conn_ip=2, child_addrs=limits.addresses)
    assert [r.code for r in replies] == [220]
    limits.enter(ip)
    _, replies = connect(smtpd, ip, max_conn_ip=2, child_addrs=limits.addresses)
    assert [(r.code, r.status) for r in replies] == [(451, "4.7.1")]


def test_no_limit_without_max_conn_ip(smtpd_factory):
    """A server limit of 0 and no argument means no limit."""
    smtpd = smtpd_factory(["hosts_allow"])
    ip = "192.0.2.50"
    _, replies = connect(smtpd, ip, max_conn_ip=0, child_addrs=[ip] * 50)
    assert [r.code for r in replies] == [220]


@pytest.mark.parametrize("argument, server_limit, sessions, code", [
    ("max_conn_ip 1", 5, 2, 451),   # lower than the server's
    ("max_conn_ip 3", 1, 3, 220),   # higher than the server's
    ("max_conn_ip 0", 1, 9, 220),   # switched off
])
def test_argument_overrides_the_server_limit(smtpd_factory, argument, server_limit, sessions, code):
    """The plugin's max_conn_ip argument replaces the server's -m value, qpsmtpd style."""
    smtpd = smtpd_factory(["hosts_allow " + argument])
    ip = "2001:db8:1::9"
    _, replies = connect(smtpd, ip, max_conn_ip=server_limit, child_addrs=[ip] * sessions)
    assert replies[0].code == code


@pytest.mark.parametrize("ip, code, text", [
    ("192.0.2.8", R.PRECONNECT_DENY.code, "5.7.1 Sorry, known spam only source"),
    ("2001:db8:77::1", 451, "4.7.1 Too busy for you today"),
    ("198.51.100.200", R.PRECONNECT_DENY.code, "5.7.1 Sorry, service not available for you"),
    ("::ffff:192.0.2.9", R.PRECONNECT_DENY.code, "5.7.1 Sorry, known spam only source"),
    ("192.0.2.7", 220, None),       # DECLINED above the /24 DENY: first match wins
    ("203.0.113.5", 220, None),
    ("203.0.113.6", 220, None),
    ("2001:db9::1", 220, None),
])
def test_rules_first_match_decides(smtpd_factory, ip, code, text):
    """hosts_allow rules match IPv4 and IPv6 networks; the first match decides; DENY* refuse with the message."""
    smtpd = smtpd_factory(["hosts_allow"], config={"hosts_allow": RULES})
    ts, replies = connect(smtpd, ip, max_conn_ip=0, child_addrs=[ip])
    assert [r.code for r in replies] == [code]
    if text is not None:
        assert replies[0].text == text
        assert ts.closed


def test_ok_rule_skips_the_limit_but_declined_does_not(smtpd_factory):
    """An OK host may exceed max_conn_ip; a DECLINED host is exempt from later rules, not from the limit."""
    smtpd = smtpd_factory(["hosts_allow max_conn_ip 1"], config={"hosts_allow": RULES})
    _, replies = connect(smtpd, "203.0.113.5", child_addrs=["203.0.113.5"] * 4)
    assert [r.code for r in replies] == [220]
    _, replies = connect(smtpd, "192.0.2.7", child_addrs=["192.0.2.7"] * 2)
    assert [r.code for r in replies] == [451]


def test_rules_are_read_at_each_connection(smtpd_factory):
    """Rules come through config at connect time; a line gone bad at run time is logged and skipped."""
    smtpd = smtpd_factory(["hosts_allow"])
    ts = TestSession(smtpd, remote_ip="192.0.2.8", greet=False)
    ts.mock_config(hosts_allow=["192.0.2.0/33 DENY", "192.0.2.0/24 DENYSOFT come back later"])
    log = ts.capture_log()
    ts.session.start(child_addrs=["192.0.2.8"])
    assert [str(r) for r in ts._take()] == ["451 4.7.1 come back later"]
    assert any("bad hosts_allow line" in message and "192.0.2.0/33" in message for _, _, _, message in log)


@pytest.mark.parametrize("line, complaint", [
    ("192.0.2.0/24", "CONSTANT"),
    ("192.0.2.1/24 DENY", "host bits set; did you mean 192.0.2.0/24?"),
    ("192.0.2.0/24 REJECT go away", "unknown constant 'REJECT'"),
    ("mail.example.com DENY", "does not appear to be an IPv4 or IPv6"),
    ("2001:db8::/129 DENY", "2001:db8::/129"),
])
def test_bad_line_stops_the_start_up(smtpd_factory, line, complaint):
    """A hosts_allow line that does not parse is a start-up error naming the file, the line and the problem."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["hosts_allow"], config={"hosts_allow": ["192.0.2.7 OK", line]})
    message = str(caught.value)
    assert "hosts_allow:2:" in message
    assert complaint in message


@pytest.mark.parametrize("arguments", ["max_conn_ip many", "max_conn_ip", "max_from_ip 3"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    """A bad or unknown argument is a start-up error."""
    with pytest.raises(ConfigError):
        smtpd_factory(["hosts_allow " + arguments])


def test_live_third_connection_is_refused(live_server, tmp_path):
    """End to end with -m 0 and max_conn_ip 2: two held connections are greeted, the third gets 451 4.7.1."""
    server = live_server(plugins=["hosts_allow max_conn_ip 2", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                         args=["-m", "0"])
    held = [socket.create_connection(server.address, timeout=5) for _ in range(2)]
    try:
        assert [read_reply(s).code for s in held] == [220, 220]
        with socket.create_connection(server.address, timeout=5) as third:
            reply = read_reply(third)
            assert str(reply) == "451 4.7.1 Sorry, too many connections from 127.0.0.1, try again later"
            assert third.recv(100) == b""
    finally:
        for s in held:
            s.close()
