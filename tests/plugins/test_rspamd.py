"""rspamd: the message goes to a real rspamd (private, offline, lua test rules); each action is honoured."""
import email
import smtplib
import time

import pytest

from daemons.scanners import (GREYLIST_WORD, HEADER_WORD, SOFT_WORD, SPAM_WORD, SUBJECT_WORD, closed_port,
                              silent_server, start_rspamd)
from qpgevent.testing import QueueCapture, TestSession, make_smtpd

CONFIG = {"rcpthosts": ["example.com"]}


@pytest.fixture(scope="session")
def rspamd_daemon():
    daemon = start_rspamd()
    yield daemon
    daemon.stop()


def message(word="nothing special", subject="hello", extra=""):
    return "From: a@sender.test\nTo: u@example.com\nSubject: %s\n%s\nA line with %s in it.\n" % (subject, extra, word)


def session_for(tmp_path, line, config=None):
    smtpd = make_smtpd(tmp_path, plugins=["relay", line, "rcpt_ok"], config=dict(CONFIG, **(config or {})))
    session = TestSession(smtpd, remote_ip="192.0.2.9", remote_host="client.sender.test")
    capture = QueueCapture()
    session.mock_hook("queue", capture)
    return session, capture


def send(session, text, recipients=("u@example.com",)):
    return session.send_message("a@sender.test", list(recipients), text, helo="helo.sender.test")[-1]


def stored(capture):
    return email.message_from_bytes(capture.messages[-1])


def notes_at_queue(session):
    notes = []
    session.mock_hook("queue_pre", lambda plugin, transaction: notes.append(dict(transaction.notes)))
    return notes


def test_clean_message_is_stored_with_status_and_rspamd_saw_the_envelope(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd rspamd_socket %s" % rspamd_daemon.address)
    notes = notes_at_queue(session)
    assert send(session, message(), recipients=["u@example.com", "v@example.com"]).code == 250
    assert stored(capture)["X-Spam-Status"] == "No, score=0.00 required=15.00 tests=QPG_ENVELOPE"
    assert stored(capture)["X-Spam-Flag"] is None
    [envelope] = notes[0]["rspamd"]["symbols"]["QPG_ENVELOPE"]["options"]
    assert envelope.startswith("ip=192.0.2.9 helo=helo.sender.test from=a@sender.test "
                               "rcpt=u@example.com,v@example.com user=- qid=")


def test_live_reject_is_552(rspamd_daemon, live_server, tmp_path):
    server = live_server(plugins=["rspamd rspamd_socket %s" % rspamd_daemon.address, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], message(SPAM_WORD))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (552, b"5.7.1 spam message rejected (#5.7.1)")
        client.sendmail("a@sender.test", ["u@example.com"], message(HEADER_WORD))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    stored_message = email.message_from_bytes(path.read_bytes())
    assert stored_message["X-Spam-Flag"] == "YES"
    assert stored_message["X-Spam-Status"] == "Yes, score=7.00 required=15.00 tests=QPG_ENVELOPE,QPG_HEADER"
    assert stored_message["X-Spam-Level"] == "*******"


def test_soft_reject_and_greylist_are_452(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd rspamd_socket %s" % rspamd_daemon.address)
    assert str(send(session, message(SOFT_WORD))) == "452 4.7.1 try again later, says the test (#4.7.1)"
    assert str(send(session, message(GREYLIST_WORD))) == "452 4.7.1 greylisted, try again later (#4.7.1)"
    assert capture.messages == []


def test_rewrite_subject_takes_rspamds_subject(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd rspamd_socket %s" % rspamd_daemon.address)
    assert send(session, message(SUBJECT_WORD, subject="offer")).code == 250
    assert stored(capture)["Subject"] == "*** SPAM *** offer"
    assert stored(capture)["X-Spam-Flag"] == "YES"


def test_reject_0_only_marks(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd reject 0 rspamd_socket %s" % rspamd_daemon.address)
    assert send(session, message(SPAM_WORD)).code == 250
    assert stored(capture)["X-Spam-Status"].startswith("Yes, score=20.00")


def test_forged_spam_headers_are_renamed(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd rspamd_socket %s" % rspamd_daemon.address)
    send(session, message(extra="X-Spam-Flag: NO\n"))
    assert stored(capture)["X-Old-Spam-Flag"] == "NO"
    assert stored(capture)["X-Spam-Flag"] is None


def test_authenticated_user_is_passed_and_skip_skips_relay_clients(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path / "scan", "rspamd rspamd_socket %s" % rspamd_daemon.address)
    session.session.auth_user = "alice"  # as after a successful AUTH
    notes = notes_at_queue(session)
    send(session, message())
    assert "user=alice" in notes[0]["rspamd"]["symbols"]["QPG_ENVELOPE"]["options"][0]
    session, capture = session_for(tmp_path / "skip", "rspamd relayclient skip rspamd_socket %s"
                                   % rspamd_daemon.address, config={"relayclients": ["192.0.2.9"]})
    assert send(session, message(SPAM_WORD)).code == 250
    assert stored(capture)["X-Spam-Status"] is None


def test_headers_none_adds_nothing(rspamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "rspamd headers none rspamd_socket %s" % rspamd_daemon.address)
    send(session, message(SUBJECT_WORD, subject="offer"))
    assert stored(capture)["Subject"] == "offer"
    assert not any(name.lower().startswith("x-spam") for name in stored(capture).keys())


def test_rspamd_down_fails_open_by_default_and_closed_on_request(tmp_path):
    address = closed_port()
    session, capture = session_for(tmp_path / "open", "rspamd rspamd_socket %s" % address)
    notes = notes_at_queue(session)
    started = time.monotonic()
    assert send(session, message(SPAM_WORD)).code == 250
    assert time.monotonic() - started < 5
    assert "cannot connect" in notes[0]["rspamd_error"]
    session, capture = session_for(tmp_path / "closed", "rspamd defer_on_error 1 rspamd_socket %s" % address)
    assert str(send(session, message())) == "452 4.3.0 Unable to scan for spam now, try again later (#4.3.0)"


@pytest.mark.parametrize("defer, code", [("0", 250), ("1", 452)])
def test_a_hung_rspamd_is_given_up_on_after_timeout(tmp_path, defer, code):
    with silent_server() as address:
        session, capture = session_for(tmp_path, "rspamd timeout 1 defer_on_error %s rspamd_socket %s"
                                       % (defer, address))
        started = time.monotonic()
        assert send(session, message()).code == code
        assert 0.9 < time.monotonic() - started < 5
