"""spamassassin: the message goes to a real spamd (private, offline, with a test rule); its verdict is acted on."""
import email
import smtplib
import time

import pytest

from daemons.scanners import MILD_WORD, SPAM_WORD, closed_port, silent_server, start_spamd
from qpgevent.errors import ConfigError
from qpgevent import spamd
from qpgevent.scanning import ScanError
from qpgevent.testing import QueueCapture, TestSession, make_smtpd

CONFIG = {"rcpthosts": ["example.com"]}


@pytest.fixture(scope="session")
def spamd_daemon():
    daemon = start_spamd()
    yield daemon
    daemon.stop()


def message(word="nothing special", subject="hello", extra=""):
    return "From: a@sender.test\nTo: u@example.com\nSubject: %s\n%s\nA line with %s in it.\n" % (subject, extra, word)


def session_for(tmp_path, line, remote_ip="192.0.2.9", config=None):
    """A session with ``line`` and a queue that keeps what it is given; returns (session, capture)."""
    smtpd = make_smtpd(tmp_path, plugins=["relay", line, "rcpt_ok"], config=dict(CONFIG, **(config or {})))
    session = TestSession(smtpd, remote_ip=remote_ip)
    capture = QueueCapture()
    session.mock_hook("queue", capture)
    return session, capture


def send(session, text, recipients=("u@example.com",)):
    return session.send_message("a@sender.test", list(recipients), text)[-1]


def stored(capture):
    return email.message_from_bytes(capture.messages[-1])


def test_protocol_commands_against_spamd(spamd_daemon):
    """CHECK, SYMBOLS, REPORT and HEADERS of SPAMC/1.5 each get spamd's verdict and their own body."""
    text = message(SPAM_WORD).encode()
    check = spamd.request(spamd_daemon.address, "CHECK", [text], len(text), "nobody", 10)
    assert (check.spam, check.score, check.threshold) == (True, 20.0, 5.0)
    assert spamd.request(spamd_daemon.address, "SYMBOLS", [text], len(text), None, 10).symbols == ["QPG_TEST"]
    assert "QPG_TEST" in spamd.request(spamd_daemon.socket_path, "REPORT", [text], len(text), "nobody", 10).body
    headers = dict(spamd.request(spamd_daemon.socket_path, "HEADERS", [text], len(text), "nobody", 10).spam_headers())
    assert headers["X-Spam-Flag"] == "YES"
    clean = message().encode()
    assert spamd.request(spamd_daemon.address, "CHECK", [clean], len(clean), "nobody", 10).spam is False


def test_a_wrong_content_length_is_an_error_not_a_verdict(spamd_daemon):
    text = message().encode()
    with pytest.raises(ScanError, match="refused"):
        spamd.request(spamd_daemon.address, "CHECK", [text], len(text) + 5, "nobody", 10)


def test_clean_message_is_stored_with_spamds_headers(spamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "spamassassin spamd_socket %s" % spamd_daemon.address)
    assert send(session, message()).code == 250
    stored_message = stored(capture)
    assert stored_message["X-Spam-Status"].startswith("No, score=0.0 required=5.0")
    assert stored_message["X-Spam-Level"] == ""
    assert "SpamAssassin" in stored_message["X-Spam-Checker-Version"]
    assert stored_message["X-Spam-Flag"] is None
    assert capture.messages[-1].endswith(b"\n\nA line with nothing special in it.\n")


def test_spam_under_no_threshold_is_marked_with_report_and_note(spamd_daemon, tmp_path):
    """Without `reject` nothing is refused: the spam is stored with Flag, Status, Level and Report."""
    session, capture = session_for(tmp_path, "spamassassin spamd_socket %s" % spamd_daemon.socket_path)
    notes = []
    session.mock_hook("queue_pre", lambda plugin, transaction: notes.append(dict(transaction.notes)))
    assert send(session, message(SPAM_WORD)).code == 250
    stored_message = stored(capture)
    assert stored_message["X-Spam-Flag"] == "YES"
    assert stored_message["X-Spam-Status"].startswith("Yes, score=20.0 required=5.0 tests=QPG_TEST")
    assert stored_message["X-Spam-Level"] == "*" * 20
    assert "QPG_TEST" in stored_message["X-Spam-Report"]
    result = notes[0]["spamassassin"]
    assert (result["is_spam"], result["score"], result["required"], result["tests"]) == ("Yes", 20.0, 5.0, "QPG_TEST")


def test_live_reject_12_refuses_spam_and_takes_mild_spam(spamd_daemon, live_server, tmp_path):
    """qpsmtpd's config.sample line `spamassassin reject 12`: 20 points refused (552 5.7.1), 6 points stored."""
    server = live_server(plugins=["spamassassin reject 12 spamd_socket %s" % spamd_daemon.address, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], message(SPAM_WORD))
        assert refused.value.smtp_code == 552
        assert refused.value.smtp_error == b"5.7.1 spam score exceeded threshold (#5.7.1)"
        client.sendmail("a@sender.test", ["u@example.com"], message(MILD_WORD, subject="mild"))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    assert path.read_bytes().endswith(message(MILD_WORD, subject="mild").encode())  # byte-exact under our headers
    stored_message = email.message_from_bytes(path.read_bytes())
    assert stored_message["Subject"] == "mild"
    assert stored_message["X-Spam-Status"].startswith("Yes, score=6.0 required=5.0 tests=QPG_MILD")


def test_reject_userprefs_uses_spamds_threshold_and_reject_type_temp(spamd_daemon, tmp_path):
    session, capture = session_for(
        tmp_path, "spamassassin reject userprefs reject_type temp spamd_socket %s" % spamd_daemon.address)
    reply = send(session, message(MILD_WORD))
    assert (reply.code, reply.status) == (452, "4.7.1")
    assert capture.messages == []


def test_munge_subject_over_both_thresholds(spamd_daemon, tmp_path):
    line = "spamassassin munge_subject_threshold 10 subject_prefix [SPAM] spamd_socket %s" % spamd_daemon.address
    session, capture = session_for(tmp_path, line)
    send(session, message(MILD_WORD, subject="six points"))
    send(session, message(SPAM_WORD, subject="twenty points"))
    assert [stored_message["Subject"] for stored_message in map(email.message_from_bytes, capture.messages)] == [
        "six points", "[SPAM] twenty points"]


def test_old_spam_headers_are_renamed_dropped_or_kept(spamd_daemon, tmp_path):
    """A forged `X-Spam-Status: No` from the client never reaches the mailbox as ours."""
    forged = "X-Spam-Status: No, score=-100\nX-Spam-Flag: NO\n"
    results = {}
    for action in ("rename", "drop", "keep"):
        session, capture = session_for(tmp_path / action, "spamassassin leave_old_headers %s spamd_socket %s"
                                       % (action, spamd_daemon.address))
        send(session, message(SPAM_WORD, extra=forged))
        results[action] = stored(capture)
    assert results["rename"]["X-Old-Spam-Status"] == "No, score=-100"
    assert results["rename"]["X-Old-Spam-Flag"] == "NO"
    assert results["rename"].get_all("X-Spam-Status") == [results["rename"]["X-Spam-Status"]]
    assert results["rename"]["X-Spam-Status"].startswith("Yes")
    assert results["drop"]["X-Old-Spam-Status"] is None and len(results["drop"].get_all("X-Spam-Status")) == 1
    assert "No, score=-100" in results["keep"].get_all("X-Spam-Status")


def test_headers_none_adds_nothing_but_decides(spamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "spamassassin headers none munge_subject_threshold 1 reject 12 "
                                             "spamd_socket %s" % spamd_daemon.address)
    assert send(session, message(MILD_WORD, subject="s")).code == 250
    assert not any(name.lower().startswith("x-spam") for name in stored(capture).keys())
    assert stored(capture)["Subject"] == "s"
    assert send(session, message(SPAM_WORD)).code == 552


def test_relay_clients_are_not_scanned_unless_asked(spamd_daemon, tmp_path):
    relay = {"relayclients": ["192.0.2.9"]}
    session, capture = session_for(tmp_path / "skip", "spamassassin reject 12 spamd_socket %s" % spamd_daemon.address,
                                   config=relay)
    assert send(session, message(SPAM_WORD)).code == 250
    assert stored(capture)["X-Spam-Status"] is None
    session, capture = session_for(tmp_path / "scan", "spamassassin reject 12 relayclient scan spamd_socket %s"
                                   % spamd_daemon.address, config=relay)
    assert send(session, message(SPAM_WORD)).code == 552


def test_size_limit_skips_big_messages(spamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "spamassassin reject 12 size_limit 100 spamd_socket %s"
                                   % spamd_daemon.address)
    assert send(session, message(SPAM_WORD, extra="\n" + "x" * 200)).code == 250
    assert stored(capture)["X-Spam-Status"] is None


def test_per_user_preferences_and_several_recipients(spamd_daemon, tmp_path):
    """spamd_user vpopmail: one recipient is scored as that address; several get X-Spam-User."""
    session, capture = session_for(tmp_path, "spamassassin spamd_user vpopmail spamd_socket %s" % spamd_daemon.address)
    send(session, message(), recipients=["solo@example.com"])
    assert "for solo@example.com:" in spamd_daemon.log()
    send(session, message(), recipients=["one@example.com", "two@example.com"])
    assert stored(capture)["X-Spam-User"] == "vpopmail, 2 recipients"


def test_spamd_down_fails_open_by_default(tmp_path):
    """Nothing listening: the message is accepted unscanned, quickly, and the log and note say why."""
    session, capture = session_for(tmp_path, "spamassassin reject 12 spamd_socket %s" % closed_port())
    logged = session.capture_log()
    notes = []
    session.mock_hook("queue_pre", lambda plugin, transaction: notes.append(dict(transaction.notes)))
    started = time.monotonic()
    assert send(session, message(SPAM_WORD)).code == 250
    assert time.monotonic() - started < 5
    assert stored(capture)["X-Spam-Status"] is None
    assert "cannot connect" in notes[0]["spamassassin_error"]
    assert any(entry[2] == "spamassassin" and "failing open" in entry[3] for entry in logged)


def test_spamd_down_with_defer_on_error_defers(tmp_path):
    session, capture = session_for(tmp_path, "spamassassin defer_on_error 1 spamd_socket %s" % closed_port())
    reply = send(session, message())
    assert (reply.code, reply.status) == (452, "4.3.0")
    assert capture.messages == []


@pytest.mark.parametrize("defer, code", [("0", 250), ("1", 452)])
def test_a_hung_spamd_is_given_up_on_after_timeout(tmp_path, defer, code):
    """spamd accepts and never answers: after `timeout` seconds the policy applies, open or closed."""
    with silent_server() as address:
        session, capture = session_for(tmp_path, "spamassassin timeout 1 defer_on_error %s spamd_socket %s"
                                       % (defer, address))
        started = time.monotonic()
        assert send(session, message()).code == code
        assert 0.9 < time.monotonic() - started < 5


def test_a_timeout_over_plugin_timeout_is_the_hook_bound(tmp_path):
    """timeout 1.5 over plugin_timeout 1: the scan gets its 1.5 s and defer_on_error answers, not a plugin failure."""
    with silent_server() as address:
        session, capture = session_for(tmp_path, "spamassassin timeout 1.5 defer_on_error 1 spamd_socket %s" % address,
                                       config={"plugin_timeout": "1"})
        started = time.monotonic()
        reply = send(session, message())
        assert (reply.code, reply.status) == (452, "4.3.0")
        assert 1.4 < time.monotonic() - started < 2.4


def test_a_socket_path_spamd_that_is_gone_fails_open(tmp_path):
    session, capture = session_for(tmp_path, "spamassassin spamd_socket %s" % (tmp_path / "no-such.sock"))
    assert send(session, message()).code == 250


@pytest.mark.parametrize("line, fault", [
    ("spamassassin reject lots", "reject takes a score or userprefs, not 'lots'"),
    ("spamassassin headers some", "headers takes one of add, none"),
])
def test_bad_arguments_stop_the_start(tmp_path, line, fault):
    with pytest.raises(ConfigError, match=fault.replace("(", r"\(").replace(")", r"\)")):
        make_smtpd(tmp_path, plugins=[line, "rcpt_ok"], config=CONFIG)
