"""sender_permitted_from: SPF results from the test DNS server, reject levels 1-6, Received-SPF and A-R."""
import smtplib
import time

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd

ZONE = "spf-test.example."
CLIENT = "192.0.2.7"  # the address the records below permit or not
RECORDS = [
    'pass 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    'fail 300 IN TXT "v=spf1 ip4:198.51.100.1 -all"',
    'softfail 300 IN TXT "v=spf1 ip4:198.51.100.1 ~all"',
    'neutral 300 IN TXT "v=spf1 ?all"',
    "none 300 IN A 192.0.2.1",
    'permerror 300 IN TXT "v=spf1 ip4:192.0.2.0/24 nosuchmechanism -all"',
    'temperror 300 IN TXT "v=spf1 include:broken.spf-test.example -all"',
    'slow 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
    'helo 300 IN TXT "v=spf1 a -all"', "helo 300 IN A 192.0.2.7",
    'live 300 IN TXT "v=spf1 ip4:127.0.0.5 -all"',
    'ipv6 300 IN TXT "v=spf1 ip6:2001:db8::/32 -all"',
]
RESULTS = ["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
MESSAGE = "From: a@spf-test.example\nSubject: spf\n\nhello\n"


@pytest.fixture(scope="module")
def spf_dns(dns_server):
    dns_server.add_zone(ZONE, RECORDS)
    dns_server.servfail.add("broken.spf-test.example")
    dns_server.delay["slow.spf-test.example"] = 3.0
    return dns_server


def dns_config(server, **extra):
    return dict({"dns_servers": "127.0.0.1:%d" % server.port, "dns_timeout": "1", "rcpthosts": ["example.com"]},
                **extra)


class Stored:
    """A queue stand-in: keeps each message's bytes and a copy of its transaction notes."""

    def __init__(self):
        self.messages, self.notes = [], []

    def __call__(self, plugin, transaction):
        from qpgevent import OK
        self.messages.append(b"".join(transaction.message_blocks()).decode())
        self.notes.append(dict(transaction.notes))
        return OK


def session(tmp_path, spf_dns, line="sender_permitted_from", remote_ip=CLIENT, plugins=(), **config):
    smtpd = make_smtpd(tmp_path, plugins=[*plugins, line, "rcpt_ok"], config=dns_config(spf_dns, **config))
    test = TestSession(smtpd, remote_ip=remote_ip)
    test.stored = Stored()
    test.mock_hook("queue", test.stored)
    return test


def header_block(message):
    return message.split("\n\n", 1)[0]


@pytest.mark.parametrize("result", RESULTS)
def test_each_result_is_noted_and_annotated(tmp_path, spf_dns, result):
    """At level 1 every result is accepted, with Received-SPF, spf= in A-R and the dmarc_spf note."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 1")
    replies = test.send_message("user@%s.spf-test.example" % result, ["u@example.com"], MESSAGE)
    assert replies[-1].code == 250, replies
    [message], [notes] = test.stored.messages, test.stored.notes
    domain = "%s.spf-test.example" % result
    assert notes["dmarc_spf"] == {"domain": domain, "scope": "mfrom", "result": result}
    assert ("Authentication-Results: mx.test; spf=%s smtp.mailfrom=%s\n" % (result, domain)) in message
    first = header_block(message).split("\n")[0]
    assert first.startswith("Received-SPF: %s (mx.test: " % result)
    assert "identity=mailfrom" in header_block(message)
    assert ("spf_pass_host" in notes) == (result == "pass")


def test_received_spf_fields_follow_rfc7208(tmp_path, spf_dns):
    """Received-SPF carries client-ip, envelope-from, helo and receiver, above our Received line."""
    test = session(tmp_path, spf_dns)
    test.send_message("user@pass.spf-test.example", ["u@example.com"], MESSAGE, helo="client.test")
    headers = header_block(test.stored.messages[0])
    value = headers.split("Received-SPF: ", 1)[1].split("\nAuthentication-Results", 1)[0]
    assert value.startswith("pass (mx.test: domain of pass.spf-test.example designates 192.0.2.7 as permitted sender)")
    for field in ("client-ip=192.0.2.7;", 'envelope-from="user@pass.spf-test.example";', "helo=client.test;",
                  "receiver=mx.test;", "identity=mailfrom"):
        assert field in " ".join(value.split())
    assert headers.index("Received-SPF:") < headers.index("\nReceived:")


# (level, sender's result) -> MAIL reply code and enhanced status; what is not listed is accepted (250).
REFUSALS = {
    (2, "fail"): (450, "4.7.23"), (2, "temperror"): (450, "4.7.24"),
    (3, "fail"): (550, "5.7.23"), (3, "softfail"): (450, "4.7.23"), (3, "temperror"): (450, "4.7.24"),
    (4, "fail"): (550, "5.7.23"), (4, "softfail"): (550, "5.7.23"), (4, "permerror"): (450, "4.7.24"),
    (4, "temperror"): (450, "4.7.24"),
    (5, "fail"): (550, "5.7.23"), (5, "softfail"): (550, "5.7.23"), (5, "neutral"): (550, "5.7.23"),
    (5, "permerror"): (450, "4.7.24"), (5, "temperror"): (450, "4.7.24"),
    (6, "fail"): (550, "5.7.23"), (6, "softfail"): (550, "5.7.23"), (6, "neutral"): (550, "5.7.23"),
    (6, "none"): (550, "5.7.1"), (6, "permerror"): (550, "5.7.24"), (6, "temperror"): (450, "4.7.24"),
}


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 5, 6])
def test_reject_levels(tmp_path, spf_dns, level):
    """Each level refuses, defers or accepts each result at MAIL as qpsmtpd's plugin does."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject %d" % level)
    test.command("EHLO client.test")
    for result in RESULTS:
        [reply] = test.command("MAIL FROM:<user@%s.spf-test.example>" % result)
        assert (reply.code, reply.status) == REFUSALS.get((level, result), (250, "2.1.0")), (level, result, reply)
        test.command("RSET")


def test_fail_reply_text(tmp_path, spf_dns):
    """The refusal of a forgery says why, as qpsmtpd's does."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 3")
    test.command("EHLO client.test")
    [reply] = test.command("MAIL FROM:<user@fail.spf-test.example>")
    assert reply.text == ("5.7.23 SPF - forgery: domain of fail.spf-test.example does not designate 192.0.2.7 "
                          "as permitted sender (#5.7.23)")


def test_reject_type_temp_defers_what_would_be_refused(tmp_path, spf_dns):
    """reject_type temp turns a 5xx into a 4xx."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 3 reject_type temp")
    test.command("EHLO client.test")
    [reply] = test.command("MAIL FROM:<user@fail.spf-test.example>")
    assert (reply.code, reply.status) == (450, "4.7.23")


def test_temperror_is_never_permanent(tmp_path, spf_dns):
    """Even with reject_type perm at level 6, a SERVFAIL gives a 4xx."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 6 reject_type perm")
    test.command("EHLO client.test")
    [reply] = test.command("MAIL FROM:<user@temperror.spf-test.example>")
    assert reply.code == 450


def test_slow_dns_is_a_temperror_within_dns_timeout(tmp_path, spf_dns):
    """A record that answers after 3 s, with dns_timeout 0.5: temperror, deferred, soon."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 2", dns_timeout="0.5")
    test.command("EHLO client.test")
    started = time.monotonic()
    [reply] = test.command("MAIL FROM:<user@slow.spf-test.example>")
    assert time.monotonic() - started < 2.5
    assert (reply.code, reply.status) == (450, "4.7.24")
    assert test.transaction.notes["dmarc_spf"]["result"] == "temperror"


@pytest.mark.parametrize("remote_ip, result", [("2001:db8::7", "pass"), ("2001:db9::7", "fail"), (CLIENT, "fail")])
def test_ipv6_clients(tmp_path, spf_dns, remote_ip, result):
    """An IPv6 client is matched against ip6: mechanisms."""
    test = session(tmp_path, spf_dns, remote_ip=remote_ip)
    test.command("EHLO client.test")
    test.command("MAIL FROM:<user@ipv6.spf-test.example>")
    assert test.transaction.notes["dmarc_spf"]["result"] == result


def test_null_sender_is_checked_by_helo(tmp_path, spf_dns):
    """A bounce is checked by its HELO name (RFC 7208 2.4): scope helo, smtp.helo in A-R."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 3")
    replies = test.send_message("", ["u@example.com"], MESSAGE, helo="helo.spf-test.example")
    assert replies[-1].code == 250
    [message], [notes] = test.stored.messages, test.stored.notes
    assert notes["dmarc_spf"] == {"domain": "helo.spf-test.example", "scope": "helo", "result": "pass"}
    assert "spf=pass smtp.helo=helo.spf-test.example" in message
    assert "identity=helo" in header_block(message)


def test_null_sender_from_a_forbidden_helo_is_refused(tmp_path, spf_dns):
    """The HELO identity's fail is refused like a sender's."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 3", remote_ip="192.0.2.99")
    test.command("HELO helo.spf-test.example")
    [reply] = test.command("MAIL FROM:<>")
    assert reply.code == 550


def test_null_sender_with_an_address_literal_helo_is_none(tmp_path, spf_dns):
    """No host name to check: result none, nothing looked up, no Received-SPF."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 5")
    replies = test.send_message("", ["u@example.com"], MESSAGE, helo="[192.0.2.7]")
    assert replies[-1].code == 250
    assert test.stored.notes[0]["dmarc_spf"] == {"domain": "[192.0.2.7]", "scope": "helo", "result": "none"}
    assert "Received-SPF" not in test.stored.messages[0]


def test_relay_client_is_not_checked(tmp_path, spf_dns):
    """A relay client's mail is not checked, even from a failing domain; dmarc_spf says pass."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 3", plugins=["relay"], relayclients=CLIENT)
    replies = test.send_message("user@fail.spf-test.example", ["u@example.com"], MESSAGE)
    assert replies[-1].code == 250
    [message], [notes] = test.stored.messages, test.stored.notes
    assert notes["dmarc_spf"] == {"domain": "fail.spf-test.example", "scope": "mfrom", "result": "pass"}
    assert "Received-SPF" not in message and "spf=" not in message


def test_results_belong_to_their_message(tmp_path, spf_dns):
    """A second message on the connection carries its own SPF result only."""
    test = session(tmp_path, spf_dns, "sender_permitted_from reject 1")
    test.send_message("user@pass.spf-test.example", ["u@example.com"], MESSAGE)
    test.send_message("user@neutral.spf-test.example", ["u@example.com"], MESSAGE)
    second = test.stored.messages[1]
    assert "spf=neutral" in second and "spf=pass" not in second and second.count("Received-SPF") == 1


def test_spfbehavior_config_sets_the_level(tmp_path, spf_dns):
    """Without a reject argument, config spfbehavior gives the level (qpsmtpd's)."""
    test = session(tmp_path, spf_dns, spfbehavior="3")
    test.command("EHLO client.test")
    assert test.command("MAIL FROM:<user@fail.spf-test.example>")[0].code == 550


def test_spf_deny_is_the_old_name_of_reject_3_and_4(tmp_path, spf_dns):
    """spf_deny 2 is reject 4: softfail refused."""
    test = session(tmp_path, spf_dns, "sender_permitted_from spf_deny 2")
    test.command("EHLO client.test")
    assert test.command("MAIL FROM:<user@softfail.spf-test.example>")[0].code == 550


@pytest.mark.parametrize("line, config, words", [
    ("sender_permitted_from reject 7", {}, ["reject takes a whole number", "at most 6"]),
    ("sender_permitted_from reject strict", {}, ["reject takes a whole number", "'strict'"]),
    ("sender_permitted_from", {"spfbehavior": "lots"}, ["spfbehavior must be a level from 0 to 6"]),
])
def test_bad_settings_stop_the_start(tmp_path, spf_dns, line, config, words):
    """A bad level stops the start-up, naming what is wrong."""
    with pytest.raises(ConfigError) as caught:
        make_smtpd(tmp_path, plugins=[line], config=config)
    for word in words:
        assert word in str(caught.value)


def test_live_pass_and_fail_by_client_address(live_server, tmp_path, spf_dns):
    """Over real sockets: 127.0.0.5 passes (headers in the stored message), 127.0.0.6 is refused at MAIL."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["sender_permitted_from reject 3", "rcpt_ok", "queue/maildir %s" % maildir],
                         config=dns_config(spf_dns))
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.5", 0)) as client:
        client.sendmail("user@live.spf-test.example", ["u@example.com"], MESSAGE.replace("\n", "\r\n"))
    [path] = (maildir / "new").iterdir()
    stored = path.read_text()
    assert "\nReceived-SPF: pass (mx.test: domain of live.spf-test.example designates 127.0.0.5" in stored
    assert "spf=pass smtp.mailfrom=live.spf-test.example" in stored
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.6", 0)) as client:
        client.ehlo("client.test")
        code, text = client.mail("user@live.spf-test.example")
    assert (code, text.split()[0]) == (550, b"5.7.23")


def test_live_check_ends_before_plugin_timeout(live_server, tmp_path, spf_dns):
    """Slow DNS past plugin_timeout: the check gives up first (temperror), so level 1 still accepts the mail."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["sender_permitted_from reject 1", "rcpt_ok", "queue/maildir %s" % maildir],
                         config=dns_config(spf_dns, dns_timeout="5", plugin_timeout="2"))
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.7", 0)) as client:
        client.sendmail("user@slow.spf-test.example", ["u@example.com"], MESSAGE.replace("\n", "\r\n"))
    assert time.monotonic() - started < 5
    [path] = (maildir / "new").iterdir()
    assert "\nReceived-SPF: temperror" in path.read_text()
