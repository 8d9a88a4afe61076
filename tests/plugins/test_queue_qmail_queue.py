"""queue/qmail-queue, against a STAND-IN for qmail-queue (tests/fixtures/bin/qmail-queue-standin).

qmail is not packaged for Debian, so the real qmail-queue cannot run here.  The stand-in implements
the interface qmail-queue(8) documents (message on fd 0, then the envelope on fd 1 as
``F<sender>\\0T<rcpt>\\0...\\0``, exit codes as documented); it refuses an envelope of any other form
with 91, so every 250 below also checks the envelope's form.
"""
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

STANDIN = str(Path(__file__).resolve().parent.parent / "fixtures" / "bin" / "qmail-queue-standin")
CONFIG = {"rcpthosts": ["example.com"]}
MESSAGE = (b"From: Alice <a@sender.test>\n"
           b"Subject: caf\xc3\xa9\n"
           b"Message-Id: <m1@sender.test>\n"
           b"\n"
           b".a line that starts with a dot\n"
           b"8-bit: \xff\xfe\x80\n"
           b"last line\n")


@pytest.fixture
def queue_dir(tmp_path, monkeypatch):
    """Where the stand-in stores what it was given (the environment passes it on)."""
    directory = tmp_path / "qmail-queue"
    directory.mkdir()
    monkeypatch.setenv("QMAIL_STANDIN_DIR", str(directory))
    monkeypatch.delenv("QMAILQUEUE", raising=False)
    return directory


def queued(directory):
    """[(message, envelope)] the stand-in stored."""
    names = sorted(p.name[:-len(".message")] for p in directory.glob("*.message"))
    return [((directory / (n + ".message")).read_bytes(), (directory / (n + ".envelope")).read_bytes()) for n in names]


def test_message_and_envelope_arrive_exactly(live_server, queue_dir):
    """smtplib -> qpgevent -> qmail-queue: fd 0 holds our Received then the client's message byte for byte
    (LF line ends), fd 1 the envelope in qmail's form; the 250 says what qpsmtpd's says."""
    server = live_server(plugins=["rcpt_ok", "queue/qmail-queue %s" % STANDIN], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        client.rcpt("u@example.com")
        client.rcpt("v@example.com")
        code, text = client.data(MESSAGE.replace(b"\n", b"\r\n"))
    assert code == 250
    assert re.fullmatch(rb"2\.0\.0 Queued! \d+ qp \d+ <m1@sender\.test>", text), text
    [(message, envelope)] = queued(queue_dir)
    assert envelope == b"Fa@sender.test\0Tu@example.com\0Tv@example.com\0\0"
    received = re.match(rb"Received: from \S+ \(HELO client\.test\) \(127\.0\.0\.1\)\n by mx\.test [^\n]*\n", message)
    assert received, message[:300]
    assert message[received.end():] == MESSAGE


def test_null_sender(session_factory, queue_dir):
    session = session_factory(plugins=["rcpt_ok", "queue/qmail-queue %s" % STANDIN], config=CONFIG)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<>")
    session.command("RCPT TO:<u@example.com>")
    assert session.data(MESSAGE)[-1].code == 250
    [(_, envelope)] = queued(queue_dir)
    assert envelope == b"F\0Tu@example.com\0\0"


def test_qmailqueue_environment_wins_over_the_argument(live_server, queue_dir):
    """``$QMAILQUEUE`` names the program, whatever the plugin line says (as qpsmtpd and qmail-smtpd)."""
    server = live_server(plugins=["rcpt_ok", "queue/qmail-queue /nonexistent/qmail-queue"], config=CONFIG,
                         env={"QMAILQUEUE": STANDIN})
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.sendmail("a@sender.test", ["u@example.com"], MESSAGE.replace(b"\n", b"\r\n"))
    assert len(queued(queue_dir)) == 1


def test_session_qmailqueue_wins_for_that_session(session_factory, queue_dir):
    """A ``QMAILQUEUE`` in the session environment (tcpserver's rules) is used for that session."""
    session = session_factory(plugins=["rcpt_ok", "queue/qmail-queue /nonexistent/qmail-queue"], config=CONFIG)
    session.session.env["QMAILQUEUE"] = STANDIN
    assert session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1].code == 250
    assert len(queued(queue_dir)) == 1


@pytest.mark.parametrize("exit_code, reply", [
    (11, (552, "5.1.3", "Address too long (#11)")),
    (31, (552, "5.3.0", "Mail server permanently refuses to send the message to any recipients (#31)")),
    (40, (552, "5.3.0", "Unable to queue message (#40)")),
    (53, (451, "4.3.0", "Write error; e.g., disk full (#53)")),
    (71, (451, "4.3.0", "Mail server temporarily refuses to send the message to any recipients (#71)")),
    (81, (451, "4.3.0", "Internal bug; e.g., segmentation fault (#81)")),
    (91, (451, "4.3.0", "Envelope format error (#91)")),
    (99, (451, "4.3.0", "Unable to queue message (#99)")),
])
def test_exit_codes_as_qmail_queue_documents_them(session_factory, queue_dir, exit_code, reply):
    """11-40 are permanent (5xx), every other code temporary (451, the client keeps the message),
    each with the man page's meaning."""
    session = session_factory(plugins=["rcpt_ok", "queue/qmail-queue %s" % STANDIN], config=CONFIG)
    got = session.send_message("a@sender.test", ["exit%d@example.com" % exit_code], MESSAGE)[-1]
    assert (got.code, got.status, got.text) == (reply[0], reply[1], "%s %s" % (reply[1], reply[2]))
    assert queued(queue_dir) == []


def test_a_hung_qmail_queue_is_killed_after_the_timeout(session_factory, queue_dir, monkeypatch):
    """A program that never finishes: 451 after ``timeout``, and it is killed (nothing left running)."""
    monkeypatch.setenv("QMAIL_STANDIN_SLEEP", "30")
    session = session_factory(plugins=["rcpt_ok", "queue/qmail-queue %s timeout 0.5" % STANDIN], config=CONFIG)
    log = session.capture_log()
    started = time.monotonic()
    reply = session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1]
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert time.monotonic() - started < 5
    assert any("did not finish within 0.5 seconds" in entry[3] for entry in log)
    still = subprocess.run(["pgrep", "-f", "qmail-queue-standin"], capture_output=True, timeout=10)
    assert still.stdout == b""


def test_a_missing_program_is_451(session_factory, queue_dir):
    session = session_factory(plugins=["rcpt_ok", "queue/qmail-queue /nonexistent/qmail-queue"], config=CONFIG)
    reply = session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1]
    assert (reply.code, reply.status) == (451, "4.3.0")
