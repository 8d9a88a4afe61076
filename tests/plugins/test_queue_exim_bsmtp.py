"""queue/exim-bsmtp against the real Exim (Debian's exim4 binary, unpacked by tests/run: tests/daemons/exim.py)."""
import re
import smtplib

import pytest

from daemons import exim
from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
MESSAGE = (b"From: Alice <a@sender.test>\n"
           b"To: u@example.com\n"
           b"Date: Thu, 03 Dec 2026 10:00:00 +0000\n"
           b"Message-Id: <exim1@sender.test>\n"
           b"Subject: caf\xc3\xa9\n"
           b"\n"
           b"line one\n"
           b".a line that starts with a dot\n"
           b"..two dots\n"
           b".\n"
           b"8-bit: \xff\xfe\x80\n"
           b"last line\n")


@pytest.fixture
def exim_config(tmp_path):
    """(plugin line, -C config) for a private Exim that keeps every message on its queue."""
    config = exim.write_config(tmp_path / "exim")
    return "queue/exim-bsmtp %s options -C,%s,-odq" % (exim.binary(), config), config


def test_message_arrives_on_exims_queue_byte_exact(live_server, exim_config):
    """smtplib -> qpgevent -> exim -bS -> Exim's spool: the envelope as sent, and the message Exim will
    deliver is its own Received line, ours, then the client's message byte for byte."""
    line, config = exim_config
    server = live_server(plugins=["rcpt_ok", line], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        client.rcpt("u@example.com")
        client.rcpt("v@example.com")
        code, text = client.data(MESSAGE.replace(b"\n", b"\r\n"))
    assert (code, text) == (250, b"2.0.0 Queued!")
    [(sender, recipients, message)] = exim.queued(config)
    assert (sender, recipients) == ("a@sender.test", ["u@example.com", "v@example.com"])
    theirs = re.match(rb"Received: from \S+ \(helo=mx\.test\)\n(?:[ \t][^\n]*\n)*", message)
    assert theirs, message[:400]
    ours = re.match(rb"Received: from \S+ \(HELO client\.test\) \(127\.0\.0\.1\)\n by mx\.test [^\n]*\n",
                    message[theirs.end():])
    assert ours, message[:400]
    assert message[theirs.end() + ours.end():] == MESSAGE


def test_null_sender(session_factory, exim_config):
    line, config = exim_config
    session = session_factory(plugins=["rcpt_ok", line], config=CONFIG)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<>")
    session.command("RCPT TO:<u@example.com>")
    assert session.data(MESSAGE)[-1].code == 250
    [(sender, recipients, _)] = exim.queued(config)
    assert (sender, recipients) == ("", ["u@example.com"])


@pytest.mark.parametrize("recipient, code, text", [
    ("refuse@example.com", 552, "5.7.1 refused by exim"),
    ("later@example.com", 451, "4.3.2 not now, says exim"),
])
def test_exims_refusal_reaches_the_client(session_factory, exim_config, recipient, code, text):
    """Exim's acl_not_smtp refuses (5xx: our client gets 552 with Exim's text) or defers (Exim prints
    550 then, but the ACL's 4.x.x status says "later": 451, the client keeps the message); nothing is
    left on Exim's queue either way."""
    line, config = exim_config
    session = session_factory(plugins=["rcpt_ok", line], config=CONFIG)
    reply = session.send_message("a@sender.test", [recipient], MESSAGE)[-1]
    assert (reply.code, reply.text) == (code, text)
    assert exim.queued(config) == []


def test_exim_that_cannot_work_is_451(session_factory, tmp_path):
    """Exim failing before it reads anything (here: its configuration is missing) gives 451."""
    session = session_factory(plugins=["rcpt_ok", "queue/exim-bsmtp %s options -C,%s" % (exim.binary(), tmp_path / "none.conf")],
                              config=CONFIG)
    reply = session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1]
    assert (reply.code, reply.status) == (451, "4.3.0")


def test_missing_binary_stops_start_up(smtpd_factory, tmp_path):
    with pytest.raises(ConfigError, match="not an executable program"):
        smtpd_factory(plugins=["rcpt_ok", "queue/exim-bsmtp %s" % (tmp_path / "exim4")])
