"""dnsbl: clients listed in DNS blocklists are refused at RCPT, against the test DNS server."""
import smtplib
import time

import pytest

from qpgevent.testing import TestSession, make_smtpd

ORIGIN = "dnsbl-test.example"
V6_KEY = ".".join(reversed("20010db8000000000000000000000005"))  # 2001:db8::5 by nibbles
TXT_REASON = "Listed for spam, see https://dnsbl-test.example/lookup"
ZONE = [
    # txt: a list that publishes A and TXT
    "7.2.0.192.txt 300 IN A 127.0.0.2", '7.2.0.192.txt 300 IN TXT "%s"' % TXT_REASON,
    "%s.txt 300 IN A 127.0.0.2" % V6_KEY, '%s.txt 300 IN TXT "IPv6 listing"' % V6_KEY,
    "9.0.0.127.txt 300 IN A 127.0.0.2", '9.0.0.127.txt 300 IN TXT "%s"' % TXT_REASON,
    # alone: A records only, given a message in dnsbl_zones
    "7.2.0.192.alone 300 IN A 127.0.0.4",
    # errors: an error code (Spamhaus: query refused), not a listing
    "8.2.0.192.errors 300 IN A 127.255.255.254", '8.2.0.192.errors 300 IN TXT "open resolver"',
]
LISTED, CLEAN = "192.0.2.7", "192.0.2.8"
TXT_ZONE, ALONE_ZONE = "txt." + ORIGIN, "alone." + ORIGIN
SERVFAIL_ZONE = "sf." + ORIGIN


@pytest.fixture(scope="module")
def dns(dns_server):
    dns_server.add_zone(ORIGIN + ".", ZONE)
    for key in ("7.2.0.192", "8.2.0.192"):
        dns_server.servfail.add("%s.%s" % (key, SERVFAIL_ZONE))
    return dns_server


def config_for(dns, zones, **extra):
    values = {"rcpthosts": ["example.com"], "dnsbl_zones": zones,
              "dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1"}
    values.update(extra)
    return values


def make(tmp_path, dns, zones=(TXT_ZONE,), args="", **extra):
    return make_smtpd(tmp_path, plugins=[("dnsbl " + args).strip(), "rcpt_ok"],
                      config=config_for(dns, list(zones), **extra))


def session(smtpd, ip, env=None):
    ts = TestSession(smtpd, remote_ip=ip, greet=False)
    ts.session.env.update(env or {})
    ts.start()
    assert ts.greeting[0].code == 220
    assert ts.command("EHLO client.test")[-1].code == 250
    assert ts.command("MAIL FROM:<a@sender.test>")[0].code == 250
    return ts


def rcpt(ts, address="user@example.com"):
    return ts.command("RCPT TO:<%s>" % address)[0]


def test_listed_client_is_refused_at_rcpt_with_the_txt_reason(tmp_path, dns):
    """A client a zone lists gets 550 5.7.1 with the list's TXT record, and the dnsbl note and a karma point."""
    ts = session(make(tmp_path, dns), LISTED)
    reply = rcpt(ts)
    assert (reply.code, reply.status) == (550, "5.7.1")
    assert TXT_REASON in reply.text
    assert ts.connection.notes["dnsbl"] == TXT_REASON
    assert ts.connection.notes["karma"] == -1


def test_unlisted_client_passes(tmp_path, dns):
    ts = session(make(tmp_path, dns), CLEAN)
    assert rcpt(ts).code == 250
    assert "dnsbl" not in ts.connection.notes
    # RFC 5782: the A record is the listing; a client no zone lists costs no TXT question
    assert dns.count("8.2.0.192." + TXT_ZONE, "A") >= 1
    assert dns.count("8.2.0.192." + TXT_ZONE, "TXT") == 0


def test_zone_message_replaces_the_txt_and_names_the_ip(tmp_path, dns):
    """A zone:message line refuses with that message (%IP% filled in) from the A record alone."""
    smtpd = make(tmp_path, dns, zones=[ALONE_ZONE + ":Refused, see https://alone.example/?%IP%"])
    reply = rcpt(session(smtpd, LISTED))
    assert reply.code == 550
    assert reply.text.endswith("Refused, see https://alone.example/?192.0.2.7")
    assert dns.count("7.2.0.192." + ALONE_ZONE, "TXT") == 0  # the message needs no TXT


def test_a_only_list_without_message_blocks_by_name(tmp_path, dns):
    """A zone without a message that publishes no TXT still lists (qpsmtpd's 'Blocked by zone')."""
    reply = rcpt(session(make(tmp_path, dns, zones=[ALONE_ZONE]), LISTED))
    assert reply.code == 550 and reply.text.endswith("Blocked by %s" % ALONE_ZONE)


def test_rejectmsg_lines_come_before_the_reason(tmp_path, dns):
    smtpd = make(tmp_path, dns, dnsbl_rejectmsg="If this is wrong, write to your ISP.")
    reply = rcpt(session(smtpd, LISTED))
    assert reply.lines[-2:] == ["5.7.1 If this is wrong, write to your ISP.", "5.7.1 " + TXT_REASON]


def test_error_code_answer_is_not_a_listing(tmp_path, dns):
    """127.255.255.x (a list's error code) lists nobody, even with a TXT record."""
    assert rcpt(session(make(tmp_path, dns, zones=["errors." + ORIGIN]), "192.0.2.8")).code == 250


def test_ipv6_client_is_looked_up_by_nibbles(tmp_path, dns):
    reply = rcpt(session(make(tmp_path, dns), "2001:db8::5"))
    assert reply.code == 550 and reply.text.endswith("IPv6 listing")
    assert dns.count("%s.%s" % (V6_KEY, TXT_ZONE), "A") >= 1


@pytest.mark.parametrize("user", ["postmaster", "Abuse", "mailer-daemon", "root"])
def test_special_recipients_are_never_refused(tmp_path, dns, user):
    """Mail to postmaster, abuse, mailer-daemon and root gets through from a listed client; others do not."""
    ts = session(make(tmp_path, dns), LISTED)
    assert rcpt(ts, "%s@example.com" % user).code == 250
    assert rcpt(ts).code == 550


def test_dnsbl_allow_skips_the_lookups(tmp_path, dns):
    smtpd = make(tmp_path, dns, dnsbl_allow=["10.0.0.1", "192.0.2.0/28"])
    before = dns.count("7.2.0.192." + TXT_ZONE, "A")
    assert rcpt(session(smtpd, LISTED)).code == 250
    assert dns.count("7.2.0.192." + TXT_ZONE, "A") == before


def test_dnsbl_allow_prefix_form(tmp_path, dns):
    assert rcpt(session(make(tmp_path, dns, dnsbl_allow="192.0.2."), LISTED)).code == 250


def test_rblsmtpd_empty_means_not_checked(tmp_path, dns):
    assert rcpt(session(make(tmp_path, dns), LISTED, env={"RBLSMTPD": ""})).code == 250


def test_rblsmtpd_text_refuses_any_client_with_it(tmp_path, dns):
    reply = rcpt(session(make(tmp_path, dns), CLEAN, env={"RBLSMTPD": "You (%IP%) are not welcome"}))
    assert reply.code == 550 and reply.text.endswith("You (192.0.2.8) are not welcome")


def test_relay_clients_are_immune(tmp_path, dns):
    smtpd = make_smtpd(tmp_path, plugins=["relay", "dnsbl", "rcpt_ok"],
                       config=config_for(dns, [TXT_ZONE], relayclients=LISTED))
    assert rcpt(session(smtpd, LISTED), "someone@elsewhere.test").code == 250


def test_reject_0_only_logs(tmp_path, dns):
    ts = session(make(tmp_path, dns, args="reject 0"), LISTED)
    assert rcpt(ts).code == 250
    assert ts.connection.notes["dnsbl"] == TXT_REASON


def test_reject_type_temp(tmp_path, dns):
    reply = rcpt(session(make(tmp_path, dns, args="reject_type temp"), LISTED))
    assert (reply.code, reply.status) == (450, "4.7.1")


def test_reject_type_disconnect_hangs_up(tmp_path, dns):
    ts = session(make(tmp_path, dns, args="reject_type disconnect"), LISTED)
    assert rcpt(ts).code == 550
    assert ts.closed


def test_reject_naughty_leaves_the_refusal_in_the_note(tmp_path, dns):
    """With reject naughty nothing is refused here; the naughty note holds the refusal from connect on."""
    ts = session(make(tmp_path, dns, args="reject naughty"), LISTED)
    assert ts.connection.notes["naughty"] == "(dnsbl) " + TXT_REASON
    assert rcpt(ts).code == 250


def test_reject_naughty_postmaster_clears_the_note_and_the_next_recipient_restores_it(tmp_path, dns):
    ts = session(make(tmp_path, dns, args="reject naughty"), LISTED)
    assert rcpt(ts, "postmaster@example.com").code == 250
    assert not ts.connection.notes["naughty"]
    assert rcpt(ts).code == 250
    assert ts.connection.notes["naughty"] == "(dnsbl) " + TXT_REASON


def test_timeout_and_servfail_zones_do_not_block_and_are_bounded(tmp_path, dns):
    """A zone that does not answer in dns_timeout and one that answers SERVFAIL list nobody; it is logged."""
    smtpd = make(tmp_path, dns, zones=["dnsbl.timeout.test", SERVFAIL_ZONE], dns_timeout="0.5")
    started = time.monotonic()
    ts = TestSession(smtpd, remote_ip=LISTED, greet=False)
    logged = ts.capture_log()
    ts.start()
    assert time.monotonic() - started < 2
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert rcpt(ts).code == 250
    skips = [m for _, _, plugin, m in logged if plugin == "dnsbl" and m.startswith("skip,")]
    assert any("dnsbl.timeout.test" in m and "timeout" in m for m in skips), skips
    assert any(SERVFAIL_ZONE in m and "servfail" in m for m in skips), skips


def test_slow_zone_does_not_hide_another_zones_listing(tmp_path, dns):
    smtpd = make(tmp_path, dns, zones=["dnsbl.timeout.test", TXT_ZONE], dns_timeout="0.5")
    assert rcpt(session(smtpd, LISTED)).code == 550


def test_zones_are_looked_up_in_parallel(tmp_path, dns):
    """Five zones answering after 1 s each take about 1 s together, not 5; the first in config order wins."""
    zones = ["z%d.slow.test:listed in zone %d" % (n, n) for n in range(5)]
    smtpd = make(tmp_path, dns, zones=zones, dns_timeout="3")
    started = time.monotonic()
    ts = session(smtpd, "192.0.2.99")
    assert 0.9 < time.monotonic() - started < 2.5
    assert rcpt(ts).text.endswith("listed in zone 0")


def test_live_listed_client_refused_postmaster_reachable(live_server, tmp_path, dns):
    """Over a real socket from 127.0.0.9 (listed): 550 for a user, the message to postmaster is delivered."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["dnsbl", "rcpt_ok", "queue/maildir %s" % maildir],
                         config=config_for(dns, [TXT_ZONE]))
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.9", 0)) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        code, text = client.rcpt("user@example.com")
        assert code == 550 and TXT_REASON.encode() in text
        assert client.rcpt("postmaster@example.com")[0] == 250
        assert client.data(b"Subject: delist me\r\n\r\nplease\r\n")[0] == 250
    assert len(list((maildir / "new").iterdir())) == 1
    with smtplib.SMTP(*server.address, timeout=10) as client:  # 127.0.0.1 is not listed
        assert client.sendmail("a@sender.test", ["user@example.com"], "Subject: hi\r\n\r\nhi\r\n") == {}


def test_live_zones_are_looked_up_in_parallel_under_gevent(live_server, dns):
    """In the real server (greenlets): five 1-second-slow zones delay the greeting by about 1 s, not 5."""
    zones = ["g%d.slow.test:listed in zone %d" % (n, n) for n in range(5)]
    server = live_server(config=config_for(dns, zones, dns_timeout="3"), plugins=["dnsbl", "rcpt_ok"])
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert time.monotonic() - started < 2.5
        client.ehlo("client.test")
        client.mail("a@sender.test")
        code, text = client.rcpt("user@example.com")
        assert code == 550 and text.endswith(b"listed in zone 0")
