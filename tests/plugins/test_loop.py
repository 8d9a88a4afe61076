"""loop: Received + Delivered-To at or over the limit get 554 5.4.6 Too many hops."""
import smtplib

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
HOPS = "554 5.4.6 Too many hops"


def message(received, delivered=0):
    return ("Received: from hop\n" * received + "Delivered-To: someone@example.com\n" * delivered
            + "From: a@sender.test\nSubject: hi\n\nhello\n")


def last_reply(session_factory, line, text):
    session = session_factory([line, "rcpt_ok", "queue/discard"], CONFIG)
    replies = session.send_message("a@sender.test", ["u@example.com"], text)
    return str(replies[-1]), session


@pytest.mark.parametrize("line", ["loop 5", "loop max_hops 5"])
def test_limit_counts_received_and_delivered_to_plus_ours(session_factory, line):
    """The limit is on Received + Delivered-To, our own Received line included: 2 + 2 + 1 = 5 is refused."""
    reply, session = last_reply(session_factory, line, message(2, 2))
    assert reply == HOPS
    assert session.transaction.sender is None  # the transaction is over: the client may start another
    assert str(session.send_message("a@sender.test", ["u@example.com"], message(1, 2))[-1]).startswith("250 ")


def test_default_limit_is_100(session_factory):
    assert last_reply(session_factory, "loop", message(98))[0].startswith("250 ")
    assert last_reply(session_factory, "loop", message(99))[0] == HOPS


def test_failure_is_logged(session_factory):
    session = session_factory(["loop 3", "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    session.send_message("a@sender.test", ["u@example.com"], message(3))
    assert ("loop", "fail, 4 hops (the limit is 3)") in [(entry[2], entry[3]) for entry in logged]


@pytest.mark.parametrize("line, complaint", [
    ("loop many", "max_hops takes a whole number at least 1, not 'many'"),
    ("loop 0", "max_hops takes a whole number at least 1, not '0'"),
    ("loop 5 6", "'6' has no value"),
    ("loop max 5", "max_hops takes a whole number at least 1, not 'max'"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_live_looping_message_is_refused(live_server, tmp_path):
    """Over a real socket: smtplib gets 554 5.4.6, and the session goes on to queue a message with fewer hops."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["loop 3", "rcpt_ok", "queue/maildir %s" % maildir])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], message(2).replace("\n", "\r\n"))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (554, b"5.4.6 Too many hops")
        assert client.sendmail("a@sender.test", ["u@example.com"], message(1).replace("\n", "\r\n")) == {}
    assert len(list((maildir / "new").iterdir())) == 1
