"""queue/lmtp against a real Dovecot LMTP server (tests/daemons/dovecot.py), over its unix socket and TCP."""
import re
import smtplib
import socket
import threading
import time

import pytest

from daemons.dovecot import Dovecot
from qpgevent.dotstuff import stuffed
from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
MESSAGE = (b"From: Alice <a@sender.test>\n"
           b"To: alice@example.com\n"
           b"Subject: caf\xc3\xa9\n"
           b"\n"
           b"line one\n"
           b".a line that starts with a dot\n"
           b"..two dots\n"
           b".\n"
           b"8-bit: \xff\xfe\x80\n"
           b"last line\n")
WIRE = MESSAGE.replace(b"\n", b"\r\n")


@pytest.fixture(scope="session")
def dovecot():
    """One Dovecot for the module's tests: users alice, bob and broken (whose home is a file)."""
    server = Dovecot(["alice@example.com", "bob@example.com", "broken@example.com"])
    (server.base / "mail" / "broken@example.com").write_text("not a directory\n")
    try:
        yield server.start()
    finally:
        server.remove()


def delivered(dovecot, user):
    """The messages in the user's Maildir/new, oldest first."""
    new = dovecot.maildir(user) / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]


def counts(dovecot, *users):
    return [len(delivered(dovecot, user)) for user in users]


def test_message_arrives_byte_exact_through_the_unix_socket(live_server, dovecot):
    """smtplib -> qpgevent -> Dovecot's unix socket -> each user's Maildir: Dovecot's Return-Path,
    then our Received, then the message byte for byte (dots unstuffed again, 8-bit intact);
    the 250 carries Dovecot's queue id, and only once both mailboxes have the message."""
    before = counts(dovecot, "alice@example.com", "bob@example.com")
    server = live_server(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test", ["BODY=8BITMIME"])
        client.rcpt("alice@example.com")
        client.rcpt("bob@example.com")
        code, text = client.data(WIRE)
    assert code == 250
    assert counts(dovecot, "alice@example.com", "bob@example.com") == [n + 1 for n in before]
    for user in ("alice@example.com", "bob@example.com"):
        stored = delivered(dovecot, user)[-1]
        match = re.match(rb"Return-Path: <a@sender\.test>\n(Delivered-To: [^\n]*\n)?"
                         rb"(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)", stored)
        assert match, stored[:400]
        assert re.match(rb"Received: from \S+ \(HELO client\.test\) \(127\.0\.0\.1\)\n by mx\.test ", match.group(2))
        assert stored[match.end():] == MESSAGE
    queue_id = re.fullmatch(r"2\.0\.0 Queued! (\S+)", text.decode()).group(1)
    assert queue_id in dovecot.log()


def test_tcp_destination(session_factory, dovecot):
    """``host:port`` reaches the inet listener; one recipient, one copy."""
    [before] = counts(dovecot, "alice@example.com")
    session = session_factory(plugins=["rcpt_ok", "queue/lmtp 127.0.0.1:%d" % dovecot.port], config=CONFIG)
    reply = session.send_message("a@sender.test", ["alice@example.com"], MESSAGE)[-1]
    assert (reply.code, reply.status) == (250, "2.0.0")
    assert counts(dovecot, "alice@example.com") == [before + 1]


def test_unknown_user_is_a_permanent_refusal_and_nobody_gets_a_partial_delivery(session_factory, dovecot):
    """Dovecot refuses an unknown user at RCPT: the client gets 552 with Dovecot's 5.1.1 and reason;
    alice, accepted in the same transaction, gets nothing (the server never saw the message)."""
    before = counts(dovecot, "alice@example.com")
    session = session_factory(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    reply = session.send_message("a@sender.test", ["alice@example.com", "nobody@example.com"], MESSAGE)[-1]
    assert (reply.code, reply.status) == (552, "5.1.1")
    assert "<nobody@example.com> User doesn't exist" in reply.text
    assert counts(dovecot, "alice@example.com") == before
    only = session_factory(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    assert only.send_message("a@sender.test", ["nobody@example.com"], MESSAGE)[-1].code == 552


def test_temporary_failure_after_data_is_451_naming_who_has_it(session_factory, dovecot):
    """broken@ passes RCPT but cannot be delivered (its home is a file): Dovecot answers 4xx for it
    after the message and 250 for alice.  One reply must cover both: 451 (the client retries, nothing
    is lost), and the text says alice already has it, so a retry may give her a second copy."""
    before = counts(dovecot, "alice@example.com")
    session = session_factory(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    reply = session.send_message("a@sender.test", ["alice@example.com", "broken@example.com"], MESSAGE)[-1]
    assert reply.code == 451 and reply.status.startswith("4."), reply
    assert "<broken@example.com>" in reply.text
    assert "already delivered to <alice@example.com>, who may get it twice" in reply.text
    assert counts(dovecot, "alice@example.com") == [before[0] + 1]


def test_dovecot_stopped_is_451_and_the_client_keeps_the_message(live_server, dovecot):
    """With Dovecot down, both destinations give 451 4.4.1: smtplib's sendmail raises and the client
    still has its message; started again, the same message goes through."""
    server = live_server(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    tcp = live_server(plugins=["rcpt_ok", "queue/lmtp 127.0.0.1:%d timeout 2" % dovecot.port], config=CONFIG)
    dovecot.stop()
    try:
        for target in (server, tcp):
            with smtplib.SMTP(*target.address, timeout=20) as client:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("a@sender.test", ["bob@example.com"], WIRE)
            assert refused.value.smtp_code == 451
            assert refused.value.smtp_error.startswith(b"4.4.1 ")
    finally:
        dovecot.start()
    before = counts(dovecot, "bob@example.com")
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.sendmail("a@sender.test", ["bob@example.com"], WIRE)
    assert counts(dovecot, "bob@example.com") == [before[0] + 1]


def test_a_silent_server_is_451_within_the_timeout(session_factory):
    """A server that accepts the connection and never speaks: 451 4.4.2 after ``timeout``, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    try:
        session = session_factory(plugins=["rcpt_ok", "queue/lmtp 127.0.0.1:%d timeout 0.5" % listener.getsockname()[1]],
                                  config=CONFIG)
        started = time.monotonic()
        reply = session.send_message("a@sender.test", ["alice@example.com"], MESSAGE)[-1]
        assert (reply.code, reply.status) == (451, "4.4.2")
        assert time.monotonic() - started < 5
    finally:
        listener.close()


@pytest.mark.parametrize("line, problem", [
    ("queue/lmtp relative/path", "neither host:port"),
    ("queue/lmtp 127.0.0.1:99999", "out of range"),
    ("queue/lmtp 127.0.0.1:24 timeout 0", "timeout"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, problem):
    with pytest.raises(ConfigError, match=problem):
        smtpd_factory(plugins=["rcpt_ok", line])


@pytest.mark.parametrize("blocks, expected", [
    ([b".a\r\nb\r\n"], b"..a\r\nb\r\n.\r\n"),
    ([b"a\r\n", b".b\r\n", b"..\r\n"], b"a\r\n..b\r\n...\r\n.\r\n"),
    ([b"a\r\n.", b"b\r\nc"], b"a\r\n..b\r\nc\r\n.\r\n"),
    ([b"x.\r\n.y"], b"x.\r\n..y\r\n.\r\n"),
    ([], b".\r\n"),
])
def test_dot_stuffing_across_block_boundaries(blocks, expected):
    """A dot at a line start is doubled even when the line starts a new block; a last line
    without its line end gets one before the final dot."""
    assert b"".join(stuffed(blocks)) == expected


def test_what_dovecot_cannot_take_is_refused_clearly(session_factory, dovecot):
    """Dovecot's LMTP offers neither BINARYMIME nor SMTPUTF8: a BDAT BINARYMIME message gets 552 5.6.3,
    an SMTPUTF8 one 552 5.6.7 (a retry could not help), and nothing is delivered."""
    before = counts(dovecot, "alice@example.com")
    session = session_factory(plugins=["rcpt_ok", "queue/lmtp %s" % dovecot.socket], config=CONFIG)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test> BODY=BINARYMIME")
    session.command("RCPT TO:<alice@example.com>")
    body = b"Subject: bin\r\n\r\n\x00\x01 bare\rCR\r\n"
    reply = session.send(b"BDAT %d LAST\r\n" % len(body) + body)[-1]
    assert (reply.code, reply.status) == (552, "5.6.3"), reply
    session.command("MAIL FROM:<a@sender.test> SMTPUTF8")
    session.command("RCPT TO:<alice@example.com>")
    reply = session.data(MESSAGE)[-1]
    assert (reply.code, reply.status) == (552, "5.6.7"), reply
    assert counts(dovecot, "alice@example.com") == before
