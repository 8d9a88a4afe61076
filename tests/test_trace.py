"""Received and Authentication-Results (qpgevent/trace.py): forged results never pass as ours (RFC 8601 5)."""
import pytest

from qpgevent.header import Header
from qpgevent.testing import QueueCapture, TestSession, accept_all, make_smtpd
from qpgevent.trace import clean_authentication_results, dkim_signed_fields, parse_authserv_id

SIGNED = "DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=s1;\n h=From : To:\n Authentication-Results; bh=x; b=y\n"


def deliver(tmp_path, head, config=None):
    """Send a message with these header lines; return the header block the queue got."""
    session = TestSession(make_smtpd(tmp_path, config=config))
    capture = QueueCapture()
    session.mock_hook("rcpt", accept_all)
    session.mock_hook("queue", capture)
    replies = session.send_message("a@sender.test", ["b@example.com"], head + "From: a@sender.test\n\nbody\n")
    assert replies[-1].code == 250
    return capture.messages[0].decode().split("\n\n")[0] + "\n"


def test_forged_result_with_our_id_is_renamed_even_when_signed(tmp_path):
    """The old code kept every Authentication-Results as soon as some DKIM-Signature's h= named it."""
    head = SIGNED + "Authentication-Results: mx.test; auth=pass (PLAIN) smtp.auth=boss\n"
    header = deliver(tmp_path, head)
    assert "\nOriginal-Authentication-Results: mx.test; auth=pass (PLAIN) smtp.auth=boss\n" in header
    assert "\nAuthentication-Results:" not in header


@pytest.mark.parametrize("value", [
    "MX.TEST; spf=pass",  # ids compare without case
    "  (a comment (nested)) mx.test (another) 1; dkim=pass",  # CFWS and a version after the id
    '"mx.test"; dkim=pass',  # a quoted-string
    "mx.test;dkim=pass",
])
def test_our_id_in_any_spelling_is_renamed(tmp_path, value):
    header = deliver(tmp_path, SIGNED + "Authentication-Results: %s\n" % value)
    assert "\nAuthentication-Results:" not in header and "\nOriginal-Authentication-Results:" in header


def test_me_auth_results_is_the_id_checked(tmp_path):
    head = SIGNED + "Authentication-Results: auth.example; dkim=pass\nAuthentication-Results: mx.test; spf=pass\n"
    header = deliver(tmp_path, head, config={"me-auth-results": "auth.example"})
    assert "\nOriginal-Authentication-Results: auth.example; dkim=pass\n" in header
    assert "\nAuthentication-Results: mx.test; spf=pass\n" in header  # foreign here, and signed


def test_foreign_signed_result_is_kept(tmp_path):
    head = SIGNED + "Authentication-Results: relay.sender.test; dkim=pass\n"
    assert "\nAuthentication-Results: relay.sender.test; dkim=pass\n" in deliver(tmp_path, head)


def test_foreign_unsigned_result_is_renamed(tmp_path):
    """Without a signature to protect, every client-sent result is renamed (RFC 8601 5 allows removing all)."""
    header = deliver(tmp_path, "Authentication-Results: relay.sender.test; dkim=pass\n")
    assert "Original-Authentication-Results: relay.sender.test; dkim=pass\n" in header


def test_signature_not_covering_results_does_not_protect_them(tmp_path):
    head = "DKIM-Signature: v=1; d=s.test; h=from:to:subject; b=x; z=Authentication-Results\n" \
           "Authentication-Results: relay.sender.test; dkim=pass\n"
    assert "Original-Authentication-Results: relay.sender.test" in deliver(tmp_path, head)


def test_none_turns_cleaning_and_our_field_off(tmp_path):
    header = deliver(tmp_path, "Authentication-Results: mx.test; spf=pass\n", config={"me-auth-results": "none"})
    assert header.startswith("Authentication-Results: mx.test; spf=pass\n")


@pytest.mark.parametrize("value, expected", [
    ("mx.test; none", "mx.test"),
    ("mx.test 1; none", "mx.test"),
    ("(c) mx.test", "mx.test"),
    ('"a \\"b\\"" ; none', 'a "b"'),
    ("(unclosed mx.test", None),
    ("", None),
    (" ; spf=pass", None),
])
def test_parse_authserv_id(value, expected):
    assert parse_authserv_id(value) == expected


def test_unparseable_results_are_renamed():
    header = Header([("DKIM-Signature", "h=Authentication-Results"), ("Authentication-Results", "(broken")])
    clean_authentication_results(header, "mx.test")
    assert header.names() == ["DKIM-Signature", "Original-Authentication-Results"]
    assert dkim_signed_fields(header) == {"authentication-results"}


def test_results_found_at_mail_belong_to_that_message_and_those_at_connect_to_every_one(tmp_path):
    """store_auth_results at connect holds for the connection; at MAIL (no sender set yet) for that message only."""
    session = TestSession(make_smtpd(tmp_path, config={"me": "mx.test"}))
    capture = QueueCapture()
    session.mock_hook("connect", lambda plugin, transaction: plugin.store_auth_results("iprev=pass") or 909)
    session.mock_hook("mail", lambda plugin, transaction, sender, **params:
                      plugin.store_auth_results("spf=pass smtp.mailfrom=%s" % sender.host) or 909)
    session.mock_hook("rcpt", accept_all)
    session.mock_hook("queue", capture)
    session.start()
    for sender in ("a@one.test", "b@two.test"):
        assert session.send_message(sender, ["c@example.com"], "From: %s\n\nbody\n" % sender)[-1].code == 250
    first, second = (message.decode().split("\n\n")[0] for message in capture.messages)
    assert "Authentication-Results: mx.test; iprev=pass; spf=pass smtp.mailfrom=one.test\n" in first + "\n"
    assert "Authentication-Results: mx.test; iprev=pass; spf=pass smtp.mailfrom=two.test\n" in second + "\n"
