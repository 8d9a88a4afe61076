"""uribl: the domains a message links to, looked up in URI blocklists, with qpsmtpd's masks and actions."""
import base64
import quopri
import smtplib
import time

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import QueueCapture, TestSession, make_smtpd

ORIGIN = "uribl-test.example"
MULTI, PLAIN = "multi." + ORIGIN, "plain." + ORIGIN
SPAM_TXT = "spam-site.com is a spam domain"
ZONE = [
    "spam-site.com.multi 300 IN A 127.0.0.2", 'spam-site.com.multi 300 IN TXT "%s"' % SPAM_TXT,
    "phish-site.net.multi 300 IN A 127.0.0.4",              # list bit 4 only
    "example.co.uk.multi 300 IN A 127.0.0.8",
    "1.1.168.192.multi 300 IN A 127.0.0.2",                  # http://3232235777/
    "error-site.org.multi 300 IN A 127.255.255.254",        # an error code, no listing
    "spam-site.com.plain 300 IN A 127.0.0.2",
]
plain_message = "From: a@sender.test\nSubject: offer\n\nBuy now at http://www.Spam-Site.com/offer?id=1 today\n"


@pytest.fixture(scope="module")
def dns(dns_server):
    dns_server.add_zone(ORIGIN + ".", ZONE)
    dns_server.servfail.add("spam-site.com.sf." + ORIGIN)
    return dns_server


def make(tmp_path, dns, zones=(MULTI,), args="", **extra):
    config = {"rcpthosts": ["example.com"], "uribl_zones": list(zones),
              "dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1", **extra}
    return make_smtpd(tmp_path, plugins=[("uribl " + args).strip(), "rcpt_ok"], config=config)


def send(smtpd, message):
    """The last reply to ``message`` and the queued copy (None when refused)."""
    ts = TestSession(smtpd, remote_ip="192.0.2.7")
    queue = QueueCapture()
    ts.mock_hook("queue", queue)
    replies = ts.send_message("a@sender.test", ["u@example.com"], message)
    return replies[-1], (queue.messages[0].decode() if queue.messages else None)


def matches(queued):
    return [line.split(": ", 1)[1] for line in queued.split("\n\n", 1)[0].splitlines()
            if line.startswith("X-URIBL-Match: ")]


def test_listed_link_adds_a_header_by_default(tmp_path, dns):
    reply, queued = send(make(tmp_path, dns), plain_message)
    assert reply.code == 250
    assert matches(queued) == ["spam-site.com in %s: %s" % (MULTI, SPAM_TXT)]


def test_clean_message_gets_no_header(tmp_path, dns):
    reply, queued = send(make(tmp_path, dns), "Subject: hi\n\nsee https://www.clean-site.com/ and mail.clean.org\n")
    assert reply.code == 250 and matches(queued) == []


def test_deny_action_refuses_with_the_description(tmp_path, dns):
    reply, queued = send(make(tmp_path, dns, args="action deny"), plain_message)
    assert (reply.code, reply.status) == (552, "5.7.1")
    assert reply.text.endswith("spam-site.com in %s: %s" % (MULTI, SPAM_TXT))
    assert queued is None


def test_zone_action_overrides_the_default_and_denysoft(tmp_path, dns):
    reply, _ = send(make(tmp_path, dns, zones=[MULTI + " -1 denysoft"]), plain_message)
    assert (reply.code, reply.status) == (452, "4.7.1")


def test_mask_selects_lists_of_a_combined_zone(tmp_path, dns):
    """Mask 2,8: the 127.0.0.4 answer (bit 4) is no match, 127.0.0.2 and 127.0.0.8 are."""
    text = "Subject: x\n\nhttp://phish-site.net/ http://spam-site.com/ www.a.b.example.co.uk\n"
    reply, queued = send(make(tmp_path, dns, zones=[MULTI + " 2,8 add-header"]), text)
    assert reply.code == 250
    assert sorted(m.split(" in ")[0] for m in matches(queued)) == ["example.co.uk", "spam-site.com"]
    _, queued = send(make(tmp_path / "all", dns), text)
    assert len(matches(queued)) == 3


def test_quoted_printable_and_base64_html_parts_are_decoded(tmp_path, dns):
    html = '<p><a href="http://www.spam-site.com/x">click</a> &#119;ww.phish-site.net</p>'
    message = ("Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n"
               "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n%s\n"
               "--b\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n%s\n--b--\n"
               % (quopri.encodestring(b"nothing here, see http://www.example.co.uk/" + b"x" * 80).decode(),
                  base64.encodebytes(html.encode()).decode()))
    assert "spam-site" not in message and "phish-site" not in message
    _, queued = send(make(tmp_path, dns), message)
    assert sorted(m.split(" in ")[0] for m in matches(queued)) == ["example.co.uk", "phish-site.net", "spam-site.com"]


def test_ip_in_a_url_is_looked_up_reversed_unless_checkip_no(tmp_path, dns):
    text = "Subject: x\n\ngo to http://3232235777/login\n"
    _, queued = send(make(tmp_path, dns), text)
    assert matches(queued) == ["192.168.1.1 in %s: 127.0.0.2" % MULTI]
    _, queued = send(make(tmp_path / "noip", dns, args="checkip no"), text)
    assert matches(queued) == []


def test_error_code_answer_is_no_match(tmp_path, dns):
    _, queued = send(make(tmp_path, dns), "Subject: x\n\nhttp://error-site.org/\n")
    assert matches(queued) == []


def test_whitelisted_domain_is_not_looked_up(tmp_path, dns):
    before = dns.count("spam-site.com." + PLAIN, "A")
    _, queued = send(make(tmp_path, dns, zones=[PLAIN], uribl_whitelist_domains="spam-site.com"), plain_message)
    assert matches(queued) == [] and dns.count("spam-site.com." + PLAIN, "A") == before


def test_headers_are_scanned_only_when_asked(tmp_path, dns):
    text = "Subject: see spam-site.com\n\nnothing\n"
    assert matches(send(make(tmp_path, dns), text)[1]) == []
    assert len(matches(send(make(tmp_path / "h", dns, args="scan-headers 1"), text)[1])) == 1


def test_lookups_per_message_are_bounded(tmp_path, dns):
    """max-lookups 4 with two zones: the first two domains are checked, the others not asked."""
    names = ["site%d.com" % n for n in range(10)]
    smtpd = make(tmp_path, dns, zones=[MULTI, PLAIN], args="max-lookups 4")
    send(smtpd, "Subject: x\n\n%s\n" % " ".join("http://%s/" % name for name in names))
    asked = [name for name in names if dns.count("%s.%s" % (name, MULTI), "A")]
    assert asked == names[:2]


def test_timeout_and_servfail_zones_are_no_match_and_bounded(tmp_path, dns):
    smtpd = make(tmp_path, dns, zones=["uribl.timeout.test", "sf." + ORIGIN, PLAIN], dns_timeout="0.5")
    started = time.monotonic()
    reply, queued = send(smtpd, plain_message)
    assert time.monotonic() - started < 2
    assert reply.code == 250 and matches(queued) == ["spam-site.com in %s: 127.0.0.2" % PLAIN]


def test_lookups_run_in_parallel(tmp_path, dns):
    """Four domains in two 1-second-slow zones: a second for the A lookups and one for the matches' TXT, not 16."""
    smtpd = make(tmp_path, dns, zones=["u1.slow.test", "u2.slow.test"], dns_timeout="3")
    started = time.monotonic()
    _, queued = send(smtpd, "Subject: x\n\nhttp://a-site.com/ b-site.net c-site.org http://d-site.info/\n")
    assert time.monotonic() - started < 2.5
    assert len(matches(queued)) == 8


@pytest.mark.parametrize("line", [MULTI + " 2,x", MULTI + " 2 reject", MULTI + " 2 deny extra"])
def test_bad_zone_line_stops_the_start_naming_the_line(tmp_path, dns, line):
    with pytest.raises(ConfigError) as caught:
        make(tmp_path, dns, zones=["# lists", line])
    assert "uribl_zones:2" in str(caught.value)


def test_live_denied_message_over_smtp(live_server, tmp_path, dns):
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["uribl action deny", "rcpt_ok", "queue/maildir %s" % maildir],
                         config={"uribl_zones": MULTI, "dns_servers": "127.0.0.1:%d" % dns.port})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], plain_message.replace("\n", "\r\n"))
        assert refused.value.smtp_code == 552 and SPAM_TXT.encode() in refused.value.smtp_error
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nclean\r\n") == {}
    assert len(list((maildir / "new").iterdir())) == 1
