"""dns_whitelist_soft: clients a DNS whitelist lists get the whitelisthost note, and other filters spare them."""
import smtplib
import time

import pytest

from qpgevent.testing import TestSession, make_smtpd

ORIGIN = "whitelist-test.example"
WL_ZONE, A_ZONE, BL_ZONE = "txt." + ORIGIN, "plain." + ORIGIN, "bl." + ORIGIN
ZONE = [
    "7.2.0.192.txt 300 IN A 127.0.0.2", '7.2.0.192.txt 300 IN TXT "trusted partner"',
    "9.0.0.127.txt 300 IN A 127.0.0.2", '9.0.0.127.txt 300 IN TXT "trusted partner"',
    "%s.plain 300 IN A 127.0.0.2" % ".".join(reversed("20010db8000000000000000000000005")),
    # a blocklist that lists the whitelisted clients too
    "7.2.0.192.bl 300 IN A 127.0.0.2", "9.0.0.127.bl 300 IN A 127.0.0.2", "8.2.0.192.bl 300 IN A 127.0.0.2",
]


@pytest.fixture(scope="module")
def dns(dns_server):
    dns_server.add_zone(ORIGIN + ".", ZONE)
    return dns_server


def config_for(dns, **extra):
    return {"rcpthosts": ["example.com"], "whitelist_zones": [WL_ZONE, A_ZONE + " trailing words are ignored"],
            "dnsbl_zones": BL_ZONE, "dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1", **extra}


def make(tmp_path, dns, **extra):
    return make_smtpd(tmp_path, plugins=["dns_whitelist_soft", "dnsbl", "rcpt_ok"], config=config_for(dns, **extra))


def rcpt(ts):
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:<a@sender.test>")[0].code == 250
    return ts.command("RCPT TO:<user@example.com>")[0]


def test_whitelisted_client_gets_the_note_and_passes_the_blocklist(tmp_path, dns):
    ts = TestSession(make(tmp_path, dns), remote_ip="192.0.2.7")
    assert ts.connection.notes["whitelisthost"] == "trusted partner"
    assert rcpt(ts).code == 250
    assert "dnsbl" not in ts.connection.notes  # is_immune() at connect: not even looked up


def test_a_record_alone_whitelists_an_ipv6_client(tmp_path, dns):
    ts = TestSession(make(tmp_path, dns), remote_ip="2001:db8::5")
    assert ts.connection.notes["whitelisthost"] == "listed in " + A_ZONE


def test_other_clients_are_not_whitelisted(tmp_path, dns):
    ts = TestSession(make(tmp_path, dns), remote_ip="192.0.2.8")
    assert "whitelisthost" not in ts.connection.notes
    assert rcpt(ts).code == 550


def test_timeout_and_servfail_whitelists_whitelist_nobody_within_the_timeout(tmp_path, dns):
    dns.servfail.update({"7.2.0.192.wl.broken.test"})
    smtpd = make(tmp_path, dns, whitelist_zones=["wl.timeout.test", "wl.broken.test"], dns_timeout="0.5")
    started = time.monotonic()
    ts = TestSession(smtpd, remote_ip="192.0.2.7")
    assert time.monotonic() - started < 2
    assert "whitelisthost" not in ts.connection.notes
    assert rcpt(ts).code == 550


def test_live_whitelisted_client_delivers(live_server, tmp_path, dns):
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["dns_whitelist_soft", "dnsbl", "rcpt_ok", "queue/maildir %s" % maildir],
                         config=config_for(dns))
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.9", 0)) as client:
        assert client.sendmail("a@sender.test", ["user@example.com"], "Subject: hi\r\n\r\nhi\r\n") == {}
    assert len(list((maildir / "new").iterdir())) == 1
    assert "whitelisted by %s: trusted partner" % WL_ZONE in server.log
