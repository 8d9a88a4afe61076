"""rhsbl: senders whose domain a right-hand-side blocklist lists are refused at MAIL."""
import smtplib
import time

import pytest

from qpgevent.testing import TestSession, make_smtpd

ORIGIN = "rhsbl-test.example"
TXT_ZONE, MSG_ZONE, SERVFAIL_ZONE = "txt." + ORIGIN, "msg." + ORIGIN, "sf." + ORIGIN
ZONE = [
    "spammer.test.txt 300 IN A 127.0.0.2", '*.spammer.test.txt 300 IN A 127.0.0.2',
    'spammer.test.txt 300 IN TXT "is listed as a spam source"',
    "nobounce.test.msg 300 IN A 127.0.0.2",
]


@pytest.fixture(scope="module")
def dns(dns_server):
    dns_server.add_zone(ORIGIN + ".", ZONE)
    dns_server.servfail.add("spammer.test." + SERVFAIL_ZONE)
    return dns_server


def make(tmp_path, dns, zones=(TXT_ZONE, MSG_ZONE + " does not accept bounces"), args="", **extra):
    config = {"rcpthosts": ["example.com"], "rhsbl_zones": list(zones),
              "dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1", **extra}
    return make_smtpd(tmp_path, plugins=[("rhsbl " + args).strip(), "rcpt_ok"], config=config)


def mail(smtpd, sender, ip="192.0.2.7"):
    ts = TestSession(smtpd, remote_ip=ip)
    ts.command("EHLO client.test")
    return ts, ts.command("MAIL FROM:<%s>" % sender)[0]


def test_listed_sender_domain_is_refused_with_the_txt_reason(tmp_path, dns):
    ts, reply = mail(make(tmp_path, dns), "bob@Spammer.Test")
    assert (reply.code, reply.status) == (550, "5.7.1")
    assert reply.text.endswith("Mail from spammer.test rejected because it is listed as a spam source")
    assert ts.transaction.notes["rhsbl"] == "is listed as a spam source"


def test_zone_message_is_the_reason_for_an_a_only_list(tmp_path, dns):
    _, reply = mail(make(tmp_path, dns), "bob@nobounce.test")
    assert reply.code == 550
    assert reply.text.endswith("Mail from nobounce.test rejected because it does not accept bounces")
    assert dns.count("nobounce.test." + MSG_ZONE, "TXT") == 0


def test_clean_and_null_senders_pass(tmp_path, dns):
    smtpd = make(tmp_path, dns)
    assert mail(smtpd, "bob@clean.test")[1].code == 250
    before = dns.count("spammer.test." + TXT_ZONE, "A")
    assert mail(smtpd, "")[1].code == 250
    assert dns.count("spammer.test." + TXT_ZONE, "A") == before


def test_subdomain_is_looked_up_as_given(tmp_path, dns):
    _, reply = mail(make(tmp_path, dns), "bob@mail.spammer.test")
    assert reply.code == 550 and "Mail from mail.spammer.test rejected" in reply.text


def test_relay_client_is_immune(tmp_path, dns):
    smtpd = make_smtpd(tmp_path, plugins=["relay", "rhsbl", "rcpt_ok"],
                       config={"rhsbl_zones": TXT_ZONE, "relayclients": "192.0.2.7",
                               "dns_servers": "127.0.0.1:%d" % dns.port})
    assert mail(smtpd, "bob@spammer.test")[1].code == 250


def test_reject_0_and_naughty_do_not_refuse(tmp_path, dns):
    assert mail(make(tmp_path / "a", dns, args="reject 0"), "bob@spammer.test")[1].code == 250
    ts, reply = mail(make(tmp_path / "b", dns, args="reject naughty"), "bob@spammer.test")
    assert reply.code == 250
    assert ts.connection.notes["naughty"] == ("(rhsbl) Mail from spammer.test rejected because it is listed as a "
                                              "spam source")


def test_legacy_disconnect_word(tmp_path, dns):
    ts, reply = mail(make(tmp_path, dns, args="disconnect"), "bob@spammer.test")
    assert reply.code == 550
    assert ts.closed


def test_timeout_and_servfail_zones_do_not_block(tmp_path, dns):
    smtpd = make(tmp_path, dns, zones=["rhsbl.timeout.test", SERVFAIL_ZONE], dns_timeout="0.5")
    started = time.monotonic()
    assert mail(smtpd, "bob@spammer.test")[1].code == 250
    assert time.monotonic() - started < 2


def test_zones_are_looked_up_in_parallel(tmp_path, dns):
    smtpd = make(tmp_path, dns, zones=["r%d.slow.test listed %d" % (n, n) for n in range(5)], dns_timeout="3")
    started = time.monotonic()
    _, reply = mail(smtpd, "bob@any.test")
    assert 0.9 < time.monotonic() - started < 2.5
    assert reply.text.endswith("rejected because it listed 0")


def test_live_listed_sender_is_refused(live_server, dns):
    server = live_server(config={"rhsbl_zones": TXT_ZONE, "dns_servers": "127.0.0.1:%d" % dns.port},
                         plugins=["rhsbl", "rcpt_ok"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        code, text = client.mail("bob@spammer.test")
        assert code == 550 and b"rejected because it is listed as a spam source" in text
        assert client.mail("bob@clean.test")[0] == 250
