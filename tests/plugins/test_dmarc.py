"""dmarc: policies from the test DNS server, SPF and DKIM alignment, p=reject/quarantine/none, pct, sp=."""
import random
import smtplib

import pytest

from qpgevent import DECLINED
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd
from test_sender_permitted_from import Stored

CLIENT = "192.0.2.8"
ZONES = {
    # One organisational domain with a policy for itself (and sp= for its subdomains), and names of its own.
    "dmarc-test.example.": [
        '@ 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        'mail 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        '_dmarc 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@dmarc-test.example"',
        '_dmarc.none 300 IN TXT "v=DMARC1; p=none"',
        '_dmarc.quarantine 300 IN TXT "v=DMARC1; p=quarantine"',
        '_dmarc.strict 300 IN TXT "v=DMARC1; p=reject; aspf=s; adkim=s"',
        'strict 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        '_dmarc.pct0 300 IN TXT "v=DMARC1; p=reject; pct=0"',
        '_dmarc.pct50 300 IN TXT "v=DMARC1; p=reject; pct=50"',
        '_dmarc.two 300 IN TXT "v=DMARC1; p=reject"', '_dmarc.two 300 IN TXT "v=DMARC1; p=none"',
        '_dmarc.badp 300 IN TXT "v=DMARC1; p=bogus; rua=mailto:d@dmarc-test.example"',
        '_dmarc.servfail 300 IN TXT "v=DMARC1; p=reject"',
    ],
    # A domain whose only record is at the organisational level (no sp=: subdomains get p=).
    "dmarc-test-org.example.": ['_dmarc 300 IN TXT "v=DMARC1; p=reject"'],
    # Another organisation: its SPF passes our clients, so it is a pass that is not aligned with the others.
    "dmarc-test-other.example.": ['@ 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 -all"'],
    # No DMARC record anywhere; SPF fails.
    "dmarc-test-nopolicy.example.": ['@ 300 IN TXT "v=spf1 -all"'],
}


@pytest.fixture(scope="module")
def dmarc_dns(dns_server):
    for origin, records in ZONES.items():
        dns_server.add_zone(origin, records)
    dns_server.servfail.add("_dmarc.servfail.dmarc-test.example")
    return dns_server


def dkim_stub(results):
    """A test-only stand-in for the dkim plugin: sets the ``dkim_results`` note at data_post_headers."""
    def hook(plugin, transaction):
        transaction.notes["dkim_results"] = results
        return DECLINED
    return hook


def session(tmp_path, dns, dmarc="dmarc", spf="sender_permitted_from reject 1", dkim=None, remote_ip=CLIENT,
            plugins=(), **config):
    lines = [*plugins, *([spf] if spf else []), dmarc, "rcpt_ok"]
    values = dict({"dns_servers": "127.0.0.1:%d" % dns.port, "dns_timeout": "1", "rcpthosts": ["example.com"]}, **config)
    test = TestSession(make_smtpd(tmp_path, plugins=lines, config=values), remote_ip=remote_ip)
    test.stored = Stored()
    test.mock_hook("queue", test.stored)
    if dkim is not None:
        test.mock_hook("data_post_headers", dkim_stub(dkim), name="dkim_stub")
    return test


def send(test, sender, from_header, extra=""):
    message = "From: %s\n%sSubject: dmarc\n\nhello\n" % (from_header, extra) if from_header is not None else \
        "%sSubject: dmarc\n\nhello\n" % extra
    return test.send_message(sender, ["u@example.com"], message)[-1]


def auth_results(test):
    header = test.stored.messages[-1].split("\n\n", 1)[0]
    return " ".join(header.split("Authentication-Results: ", 1)[1].split("\nReceived:", 1)[0].split())


def test_aligned_spf_pass_passes(tmp_path, dmarc_dns):
    """Envelope and From in the same domain, SPF pass: dmarc=pass with the policy in the A-R."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test.example", "a@dmarc-test.example").code == 250
    assert auth_results(test) == ("mx.test; spf=pass smtp.mailfrom=dmarc-test.example; "
                                  "dmarc=pass (p=reject) header.from=dmarc-test.example")
    assert test.stored.notes[0]["dmarc_result"] == {"domain": "dmarc-test.example", "result": "pass",
                                                    "policy": "reject", "disposition": "none", "aligned": True}


def test_relaxed_alignment_takes_the_organisational_domain(tmp_path, dmarc_dns):
    """SPF pass for mail.dmarc-test.example is aligned (relaxed) with From dmarc-test.example."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@mail.dmarc-test.example", "A <a@dmarc-test.example>").code == 250
    assert "dmarc=pass (p=reject) header.from=dmarc-test.example" in auth_results(test)


def test_unaligned_spf_pass_with_p_reject_is_refused(tmp_path, dmarc_dns):
    """SPF passes for another organisation only: dmarc fails and p=reject refuses the message (5.7.1)."""
    test = session(tmp_path, dmarc_dns)
    reply = send(test, "u@dmarc-test-other.example", "a@dmarc-test.example")
    assert (reply.code, reply.status) == (552, "5.7.1")
    assert "failed DMARC policy of dmarc-test.example" in reply.text
    assert test.stored.messages == []


def test_reject_0_annotates_only(tmp_path, dmarc_dns):
    """reject 0: the failing message is accepted with dmarc=fail in the A-R."""
    test = session(tmp_path, dmarc_dns, dmarc="dmarc reject 0")
    assert send(test, "u@dmarc-test-other.example", "a@dmarc-test.example").code == 250
    assert "dmarc=fail (p=reject) header.from=dmarc-test.example" in auth_results(test)


def test_reject_type_temp_defers(tmp_path, dmarc_dns):
    """reject_type temp makes the refusal a 4xx."""
    test = session(tmp_path, dmarc_dns, dmarc="dmarc reject_type temp")
    reply = send(test, "u@dmarc-test-other.example", "a@dmarc-test.example")
    assert (reply.code, reply.status) == (452, "4.7.1")


def test_subdomain_gets_sp_of_the_organisational_record(tmp_path, dmarc_dns):
    """sub.dmarc-test.example has no record: the org record's sp=quarantine applies, the mail is kept and noted."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@sub.dmarc-test.example").code == 250
    assert "dmarc=fail (p=reject sp=quarantine) header.from=sub.dmarc-test.example" in auth_results(test)
    notes = test.stored.notes[0]
    assert notes["dmarc_quarantine"] == "sub.dmarc-test.example"
    assert notes["dmarc_result"]["policy"] == "quarantine"


def test_organisational_fallback_without_sp_uses_p(tmp_path, dmarc_dns):
    """A deep subdomain finds the org record (p=reject, no sp=) and is refused."""
    test = session(tmp_path, dmarc_dns)
    reply = send(test, "u@dmarc-test-other.example", "a@deep.sub.dmarc-test-org.example")
    assert reply.code == 552 and "deep.sub.dmarc-test-org.example" in reply.text


def test_quarantine_is_accepted_with_a_note(tmp_path, dmarc_dns):
    """p=quarantine: accepted, note dmarc_quarantine, A-R says so."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@quarantine.dmarc-test.example").code == 250
    assert test.stored.notes[0]["dmarc_quarantine"] == "quarantine.dmarc-test.example"
    assert "dmarc=fail (p=quarantine)" in auth_results(test)


def test_quarantine_reject_refuses_as_qpsmtpd(tmp_path, dmarc_dns):
    """quarantine reject: qpsmtpd's way, quarantine is refused too."""
    test = session(tmp_path, dmarc_dns, dmarc="dmarc quarantine reject")
    assert send(test, "u@dmarc-test-other.example", "a@quarantine.dmarc-test.example").code == 552


def test_p_none_annotates(tmp_path, dmarc_dns):
    """p=none: the failure is only noted."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@none.dmarc-test.example").code == 250
    assert "dmarc=fail (p=none) header.from=none.dmarc-test.example" in auth_results(test)
    assert "dmarc_quarantine" not in test.stored.notes[0]


def test_no_record_is_dmarc_none(tmp_path, dmarc_dns):
    """A domain without any record: dmarc=none, accepted."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@dmarc-test-nopolicy.example").code == 250
    assert "dmarc=none header.from=dmarc-test-nopolicy.example" in auth_results(test)


def test_two_records_count_as_none(tmp_path, dmarc_dns):
    """Two DMARC records at one name: no policy (RFC 7489 6.6.3), and no fallback to the org record."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@two.dmarc-test.example").code == 250
    assert "dmarc=none header.from=two.dmarc-test.example" in auth_results(test)


def test_invalid_p_with_rua_is_p_none(tmp_path, dmarc_dns):
    """p=bogus with a report address reads as p=none (RFC 7489 6.6.3)."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@badp.dmarc-test.example").code == 250
    assert "dmarc=fail (p=none) header.from=badp.dmarc-test.example" in auth_results(test)


@pytest.mark.parametrize("sender, signer, code", [
    ("u@strict.dmarc-test.example", None, 250),        # SPF, exactly the From domain
    ("u@mail.dmarc-test.example", None, 552),          # SPF, same organisation only: not strictly aligned
    ("u@dmarc-test-other.example", "strict.dmarc-test.example", 250),   # DKIM, exactly the From domain
    ("u@dmarc-test-other.example", "dmarc-test.example", 552),          # DKIM, the parent: not strictly aligned
])
def test_strict_alignment(tmp_path, dmarc_dns, sender, signer, code):
    """aspf=s / adkim=s want the identical domain."""
    dkim = [{"domain": signer, "selector": "s1", "result": "pass"}] if signer else []
    test = session(tmp_path, dmarc_dns, dkim=dkim)
    assert send(test, sender, "a@strict.dmarc-test.example").code == code


@pytest.mark.parametrize("result, code", [("pass", 250), ("fail", 552), ("temperror", 552), ("neutral", 552)])
def test_aligned_dkim_result(tmp_path, dmarc_dns, result, code):
    """Only a DKIM pass from an aligned signer saves mail whose SPF is not aligned."""
    dkim = [{"domain": "other.example", "selector": "x", "result": "pass"},
            {"domain": "dmarc-test.example", "selector": "s1", "result": result}]
    test = session(tmp_path, dmarc_dns, dkim=dkim)
    assert send(test, "u@dmarc-test-other.example", "a@dmarc-test.example").code == code


def test_relaxed_dkim_alignment(tmp_path, dmarc_dns):
    """A DKIM pass for a subdomain of the From organisation is aligned (relaxed), without any SPF plugin."""
    test = session(tmp_path, dmarc_dns, spf=None, dkim=[{"domain": "lists.dmarc-test.example", "selector": "s",
                                                         "result": "pass"}])
    assert send(test, "u@elsewhere.test", "a@dmarc-test.example").code == 250
    assert auth_results(test) == "mx.test; dmarc=pass (p=reject) header.from=dmarc-test.example"


def test_pct_0_downgrades_reject_to_quarantine(tmp_path, dmarc_dns):
    """pct=0: no failing message gets p=reject; it is quarantined (one step less)."""
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@pct0.dmarc-test.example").code == 250
    assert test.stored.notes[0]["dmarc_result"]["disposition"] == "quarantine"


@pytest.mark.parametrize("draw, code", [(49, 552), (50, 250)])
def test_pct_50_samples_with_random(tmp_path, dmarc_dns, monkeypatch, draw, code):
    """pct=50: a draw below 50 (of 0-99) applies the policy, one at 50 or above does not."""
    monkeypatch.setattr(random, "randrange", lambda n: draw)
    test = session(tmp_path, dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@pct50.dmarc-test.example").code == code


def test_servfail_on_the_policy_defers_unaligned_mail(tmp_path, dmarc_dns):
    """The policy cannot be read and nothing aligned passed: 452 4.7.0, never a 5xx."""
    test = session(tmp_path, dmarc_dns, dmarc="dmarc reject_type perm")
    reply = send(test, "u@dmarc-test-other.example", "a@servfail.dmarc-test.example")
    assert (reply.code, reply.status) == (452, "4.7.0")


def test_servfail_on_the_policy_keeps_aligned_mail(tmp_path, dmarc_dns):
    """An aligned DKIM pass needs no policy to be accepted; the A-R says temperror."""
    test = session(tmp_path, dmarc_dns, dkim=[{"domain": "servfail.dmarc-test.example", "selector": "s",
                                               "result": "pass"}])
    assert send(test, "u@dmarc-test-other.example", "a@servfail.dmarc-test.example").code == 250
    assert "dmarc=temperror header.from=servfail.dmarc-test.example" in auth_results(test)


@pytest.mark.parametrize("from_header, extra, why", [
    (None, "", "empty from address"),
    ("a@dmarc-test.example", "From: b@dmarc-test.example\n", "multiple From headers"),
    ("undisclosed-recipients:;", "", "unparseable from header"),
])
def test_unusable_from_is_refused(tmp_path, dmarc_dns, from_header, extra, why):
    """No From, two From fields, or no address in it: refused as qpsmtpd does."""
    test = session(tmp_path, dmarc_dns)
    reply = send(test, "u@dmarc-test.example", from_header, extra)
    assert reply.code == 552 and why in reply.text


def test_one_from_with_two_domains_takes_the_strictest(tmp_path, dmarc_dns):
    """From a@none... and b@dmarc-test...: the p=reject domain fails, so the message is refused; both in the A-R."""
    test = session(tmp_path, dmarc_dns, dmarc="dmarc reject 0")
    send(test, "u@dmarc-test-other.example", "a@none.dmarc-test.example, b@dmarc-test.example")
    results = auth_results(test)
    assert "dmarc=fail (p=none) header.from=none.dmarc-test.example" in results
    assert "dmarc=fail (p=reject) header.from=dmarc-test.example" in results
    assert test.stored.notes[0]["dmarc_result"]["domain"] == "dmarc-test.example"
    test = session(tmp_path / "refusing", dmarc_dns)
    assert send(test, "u@dmarc-test-other.example", "a@none.dmarc-test.example, b@dmarc-test.example").code == 552


def test_relay_client_is_not_checked(tmp_path, dmarc_dns):
    """Mail from a relay client is neither checked nor annotated."""
    test = session(tmp_path, dmarc_dns, plugins=["relay"], relayclients=CLIENT)
    assert send(test, "u@dmarc-test-other.example", "a@dmarc-test.example").code == 250
    assert "dmarc=" not in test.stored.messages[0]


@pytest.mark.parametrize("from_domain, code", [("dmarc-test-nopolicy.example", 552), ("none.dmarc-test.example", 250)])
def test_spf_no_dmarc_policy(tmp_path, dmarc_dns, from_domain, code):
    """sender_permitted_from no_dmarc_policy 1 refuses an SPF fail only when the From domain has no DMARC record."""
    test = session(tmp_path, dmarc_dns, spf="sender_permitted_from reject 1 no_dmarc_policy 1")
    reply = send(test, "u@dmarc-test-nopolicy.example", "a@%s" % from_domain)
    assert reply.code == code
    if code == 552:
        assert reply.status == "5.7.23" and "SPF - fail" in reply.text


def test_bad_argument_stops_the_start(tmp_path, dmarc_dns):
    """An unknown quarantine action is a start-up error naming it."""
    with pytest.raises(ConfigError) as caught:
        make_smtpd(tmp_path, plugins=["dmarc quarantine drop"])
    assert "quarantine takes one of note, reject" in str(caught.value)


DKIM_STUB = '''"""dkim stand-in for the dmarc tests: a pass for d=dmarc-test.example when the message says so."""
from qpgevent import DECLINED


def hook_data_post_headers(self, transaction):
    if transaction.header.get("X-Test-DKIM"):
        transaction.notes["dkim_results"] = [{"domain": "dmarc-test.example", "selector": "s1", "result": "pass"}]
    return DECLINED
'''


def test_live_dkim_alignment_decides(live_server, tmp_path, dmarc_dns):
    """Over real sockets from 127.0.0.8: aligned DKIM passes (A-R stored), the same mail unsigned is refused."""
    maildir = tmp_path / "Maildir"
    server = live_server(
        plugins=["sender_permitted_from reject 1", "dkim_stub", "dmarc", "rcpt_ok", "queue/maildir %s" % maildir],
        config={"dns_servers": "127.0.0.1:%d" % dmarc_dns.port, "dns_timeout": "1"},
        plugin_files={"dkim_stub.py": DKIM_STUB})
    message = "From: a@dmarc-test.example\r\n%sSubject: live\r\n\r\nhello\r\n"
    with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.8", 0)) as client:
        client.sendmail("u@dmarc-test-other.example", ["u@example.com"], message % "X-Test-DKIM: yes\r\n")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("u@dmarc-test-other.example", ["u@example.com"], message % "")
    assert refused.value.smtp_code == 552
    [path] = (maildir / "new").iterdir()
    stored = " ".join(path.read_text().split())
    assert ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=dmarc-test-other.example; "
            "dmarc=pass (p=reject) header.from=dmarc-test.example") in stored
