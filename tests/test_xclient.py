"""XCLIENT (Postfix's extension, https://www.postfix.org/XCLIENT_README.html), in-process sessions.

A proxy listed in ``config/xclient_hosts`` names the real client; the session
starts again for that client (connect hooks, 220, EHLO needed again).  The
real Postfix in front of us is in tests/test_xclient_postfix.py.
"""
import pytest

from qpgevent.testing import TestSession, make_smtpd
from qpgevent.command import decode_xtext
from qpgevent.xclient import parse_xclient

PROXY = "192.0.2.10"
# Records what the connect and helo hooks saw: the address and name they judge.
RECORDER = '''
from qpgevent.constants import DECLINED

SEEN = []

def hook_connect(self, transaction):
    c = self.qp.connection
    SEEN.append(("connect", c.remote_ip, c.remote_port, c.remote_host, c.local_ip, c.local_port, c.relay_client))
    return DECLINED

def hook_ehlo(self, transaction, host, *rest):
    SEEN.append(("ehlo", host, self.qp.connection.remote_ip))
    return DECLINED
'''


@pytest.fixture
def smtpd(tmp_path):
    plugin_dir = tmp_path / "test-plugins"
    plugin_dir.mkdir()
    (plugin_dir / "recorder.py").write_text(RECORDER)
    return make_smtpd(tmp_path, plugins=["recorder", "relay", "rcpt_ok", "queue/maildir %s" % (tmp_path / "md")],
                      config={"xclient_hosts": ["192.0.2.0/28", "2001:db8::/64"], "relayclients": ["198.51.100.7", PROXY],
                              "rcpthosts": ["example.com"], "plugin_dirs": [str(plugin_dir)]})


def seen(smtpd):
    [plugin] = [p for p in smtpd.plugins if p.name == "recorder"]
    return plugin.module.SEEN


def codes(replies):
    return [(r.code, r.status) if r.code != 220 else 220 for r in replies]


def test_ehlo_advertises_xclient_and_xforward_only_to_listed_hosts(smtpd):
    proxy = TestSession(smtpd, remote_ip=PROXY)
    lines = proxy.command("EHLO proxy.test")[-1].lines
    assert "XCLIENT NAME ADDR PORT PROTO HELO LOGIN" in lines and "XFORWARD NAME ADDR PORT PROTO HELO" in lines
    other = TestSession(smtpd, remote_ip="192.0.2.99")
    assert not [line for line in other.command("EHLO other.test")[-1].lines if line.startswith("X")]


def test_every_attribute_replaces_the_connection_and_connect_runs_again(smtpd):
    s = TestSession(smtpd, remote_ip=PROXY, remote_host="proxy.test")
    s.command("EHLO proxy.test")
    replies = s.command("XCLIENT NAME=mail.client.test ADDR=198.51.100.7 PORT=4711 PROTO=ESMTP HELO=helo.client.test "
                        "DESTADDR=203.0.113.5 DESTPORT=25")
    assert [r.code for r in replies] == [220]
    c = s.connection
    assert (c.remote_ip, c.remote_port, c.remote_host, c.local_ip, c.local_port) == \
        ("198.51.100.7", 4711, "mail.client.test", "203.0.113.5", 25)
    assert seen(smtpd)[-1] == ("connect", "198.51.100.7", 4711, "mail.client.test", "203.0.113.5", 25, False)
    assert c.relay_client  # relay's connect hook judged the client: it is in relayclients, the proxy is not
    assert c.notes["xclient"]["PROTO"] == "ESMTP"
    # EHLO again: the hooks see the client's HELO, not the proxy's name.
    assert s.command("EHLO proxy.test")[-1].code == 250
    assert seen(smtpd)[-1] == ("ehlo", "helo.client.test", "198.51.100.7")
    assert c.hello_host == "helo.client.test"


def test_a_client_outside_relayclients_loses_what_the_proxy_had(smtpd):
    """The proxy is in relayclients; the stranger it names is not, and does not relay."""
    s = TestSession(smtpd, remote_ip=PROXY)
    assert s.connection.relay_client
    s.command("XCLIENT ADDR=203.0.113.9")
    assert not s.connection.relay_client
    s.command("EHLO x.test")
    s.command("MAIL FROM:<a@b.test>")
    assert s.command("RCPT TO:<someone@elsewhere.test>")[-1].code == 550


def test_ehlo_is_needed_again_and_the_transaction_is_gone(smtpd):
    s = TestSession(smtpd, remote_ip=PROXY)
    s.command("EHLO proxy.test")
    s.command("XCLIENT ADDR=198.51.100.7")
    assert s.command("MAIL FROM:<a@b.test>")[-1].code == 503
    s.command("EHLO client.test")
    assert s.send_message("a@b.test", ["x@example.com"], "Subject: hi\n\nhi\n")[-1].code == 250


@pytest.mark.parametrize("verb", ["XCLIENT", "XFORWARD"])
def test_refused_from_an_unlisted_host(smtpd, verb):
    s = TestSession(smtpd, remote_ip="192.0.2.99")
    s.command("EHLO x.test")
    [reply] = s.command(verb + " ADDR=198.51.100.7")
    assert (reply.code, reply.status) == (550, "5.7.0")
    assert s.connection.remote_ip == "192.0.2.99"


@pytest.mark.parametrize("verb", ["XCLIENT", "XFORWARD"])
def test_refused_inside_a_transaction(smtpd, verb):
    s = TestSession(smtpd, remote_ip=PROXY)
    s.command("EHLO x.test")
    s.command("MAIL FROM:<a@b.test>")
    [reply] = s.command(verb + " ADDR=198.51.100.7")
    assert (reply.code, reply.status) == (503, "5.5.1")
    assert s.connection.remote_ip == PROXY and s.transaction.sender is not None


def test_ipv6_address_and_proxy(smtpd):
    s = TestSession(smtpd, remote_ip="2001:db8::25")
    assert "XCLIENT NAME ADDR PORT PROTO HELO LOGIN" in s.command("EHLO x.test")[-1].lines
    assert [r.code for r in s.command("XCLIENT ADDR=IPV6:2001:DB8:0:0::7 NAME=[UNAVAILABLE]")] == [220]
    assert (s.connection.remote_ip, s.connection.remote_host) == ("2001:db8::7", "[2001:db8::7]")
    assert seen(smtpd)[-1][1] == "2001:db8::7"


def test_attributes_over_several_commands_add_up_and_the_proxy_stays_trusted(smtpd):
    """Postfix splits long attribute lists; the second command comes from the proxy, not the client it named."""
    s = TestSession(smtpd, remote_ip=PROXY)
    s.command("XCLIENT NAME=client.test ADDR=203.0.113.9")
    assert [r.code for r in s.command("XCLIENT HELO=h.test LOGIN=alice")] == [220]
    c = s.connection
    assert (c.remote_ip, c.remote_host, c.notes["xclient"]["HELO"]) == ("203.0.113.9", "client.test", "h.test")
    assert s.session.auth_user == "alice" and c.relay_client  # LOGIN: the proxy authenticated the client


def test_unavailable_and_tempunavail(smtpd):
    s = TestSession(smtpd, remote_ip=PROXY, remote_host="proxy.test")
    s.command("XCLIENT NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE] HELO=[unavailable]")
    c = s.connection
    assert (c.remote_ip, c.remote_host, c.notes["xclient"]["NAME"]) == ("", "unknown", "[TEMPUNAVAIL]")
    s.command("EHLO proxy.test")
    assert c.hello_host == "proxy.test"  # no HELO known: the one said after XCLIENT


@pytest.mark.parametrize("line", ["ADDR=999.1.1.1", "ADDR=2001:db8::1", "ADDR=IPV6:192.0.2.1", "PORT=70000",
                                  "PROTO=SM-TP", "COLOR=blue", "NAME", "", "NAME=a+zz", "HELO=a+20b",
                                  "NAME=" + "a" * 256])
def test_bad_attributes_get_501_and_change_nothing(smtpd, line):
    s = TestSession(smtpd, remote_ip=PROXY)
    [reply] = s.command("XCLIENT " + line)
    assert (reply.code, reply.status) == (501, "5.5.4")
    assert s.connection.remote_ip == PROXY


def test_xtext_decoding():
    assert decode_xtext("a+2Bb+3Dc") == "a+b=c"
    assert decode_xtext("caf+C3+A9") == "caf\u00e9"
    assert parse_xclient("name=x+2Ey.test login=bob+40example.com") == {"NAME": "x.y.test", "LOGIN": "bob@example.com"}
    for bad in ("a+", "a+G0", "a=b", "+FF", "a b"):
        with pytest.raises(ValueError):
            decode_xtext(bad)


def test_xforward_renames_the_client_reruns_connect_and_helo_and_keeps_the_ehlo(smtpd):
    """What Postfix's smtpd_proxy_filter sends: EHLO (its own name), XFORWARD, then MAIL straight away."""
    s = TestSession(smtpd, remote_ip=PROXY)
    s.command("EHLO postfix.test")
    [reply] = s.command("XFORWARD NAME=[UNAVAILABLE] ADDR=198.51.100.7 PORT=4711 HELO=client.test PROTO=ESMTP "
                        "IDENT=4AbC SOURCE=REMOTE")
    assert (reply.code, reply.status) == (250, "2.0.0")
    c = s.connection
    assert (c.remote_ip, c.remote_port, c.remote_host, c.hello, c.hello_host) == \
        ("198.51.100.7", 4711, "[198.51.100.7]", "ehlo", "client.test")
    assert seen(smtpd)[-2:] == [("connect", "198.51.100.7", 4711, "[198.51.100.7]", "127.0.0.1", 25, False),
                                ("ehlo", "client.test", "198.51.100.7")]
    assert c.relay_client
    assert s.send_message("a@b.test", ["x@elsewhere.test"], "Subject: hi\n\nhi\n")[-1].code == 250


def test_xforward_with_bad_attributes(smtpd):
    s = TestSession(smtpd, remote_ip=PROXY)
    s.command("EHLO postfix.test")
    for line in ("LOGIN=alice", "ADDR=nowhere", "NAME"):
        [reply] = s.command("XFORWARD " + line)
        assert (reply.code, reply.status) == (501, "5.5.4")
    assert s.connection.remote_ip == PROXY
