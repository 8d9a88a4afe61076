"""The six example plugins (plugins/examples/), each end to end over a real socket."""
import os
import shutil
import smtplib
import socket
import time
from email.utils import formatdate

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import parse_replies

FORTUNE = shutil.which("fortune", path=os.pathsep.join(filter(None, (os.environ.get("PATH"), "/usr/games"))))


def maildir_queue(tmp_path):
    return "queue/maildir %s" % (tmp_path / "Maildir")


def delivered(tmp_path):
    """The texts of the messages in Maildir/new."""
    new = tmp_path / "Maildir" / "new"
    return [path.read_text() for path in sorted(new.iterdir())] if new.is_dir() else []


def send(server, message, sender="a@sender.test", recipients=("u@example.com",)):
    """One transaction with smtplib; the (code, text) of the reply to the end of DATA."""
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail(sender)[0] == 250
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        code, text = client.data(message)
    return code, text.decode()


def message(date=None, sender="a@sender.test", extra="", body="hello\n"):
    date = formatdate(time.time() if date is None else date, localtime=True)
    return "From: %s\nTo: u@example.com\nDate: %s\nSubject: test\n%s\n%s" % (sender, date, extra, body)


def write_script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


class RawClient:
    """A line-level SMTP client for what smtplib cannot do (talk early, send nothing)."""

    def __init__(self, address, wait_for_greeting=True):
        self.sock = socket.create_connection(address, timeout=10)
        self.pending = b""
        self.greeting = self.reply() if wait_for_greeting else None

    def reply(self):
        while True:
            lines = self.pending.split(b"\r\n")
            for end, line in enumerate(lines[:-1]):
                if line[3:4] == b" ":
                    raw = b"".join(part + b"\r\n" for part in lines[:end + 1])
                    self.pending = self.pending[len(raw):]
                    return parse_replies(raw)[0]
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("server closed the connection; unread: %r" % self.pending)
            self.pending += data

    def send(self, data):
        self.sock.sendall(data)

    def command(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def at_eof(self):
        """True when the server has closed its side (after any unread replies)."""
        return self.sock.recv(4096) == b""

    def close(self):
        self.sock.close()


# -- examples/refuse_recipient ---------------------------------------------------------
def test_refuse_recipient_refuses_only_that_address(live_server, tmp_path):
    """The named address (in any case) gets 550 5.1.1 at RCPT; the others are accepted and delivered."""
    server = live_server(plugins=["examples/refuse_recipient bob@example.com", "rcpt_ok", maildir_queue(tmp_path)])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        code, text = client.rcpt("Bob@Example.COM")
        assert (code, text.decode()) == (550, "5.1.1 Sorry, <Bob@Example.COM> does not take mail here (#5.1.1)")
        assert client.rcpt("alice@example.com")[0] == 250
        assert client.data(message())[0] == 250
    [text] = delivered(tmp_path)
    assert "Delivered-To: alice@example.com\n" in text


def test_refuse_recipient_needs_an_address(smtpd_factory):
    """Without an address the plugin refuses to load, and says what to write."""
    with pytest.raises(ConfigError, match="takes one argument, the address to refuse"):
        smtpd_factory(plugins=["examples/refuse_recipient"])


# -- examples/header_check --------------------------------------------------------------
def test_header_check_refuses_each_missing_or_bad_header(live_server, tmp_path):
    """No From, no Date, a Date that is no date, a Date 8 days old: each gets 552 5.6.0 with its reason."""
    server = live_server(plugins=["examples/header_check", "rcpt_ok", maildir_queue(tmp_path)])
    now = formatdate(localtime=True)
    cases = [
        ("To: u@example.com\nDate: %s\n\nhi\n" % now, "Mail with no From header not accepted here"),
        ("From: a@sender.test\nSubject: x\n\nhi\n", "Mail with no Date header not accepted here"),
        ("From: a@sender.test\nDate: yesterday at noon\n\nhi\n", "The Date header is not a date"),
        (message(date=time.time() - 8 * 86400), "The Date in the header is too far in the past"),
    ]
    for text, reason in cases:
        assert send(server, text) == (552, "5.6.0 %s (#5.6.0)" % reason)
    assert delivered(tmp_path) == []


def test_header_check_accepts_a_proper_message(live_server, tmp_path):
    """A message with From and a current Date is queued untouched."""
    server = live_server(plugins=["examples/header_check", "rcpt_ok", maildir_queue(tmp_path)])
    assert send(server, message())[0] == 250
    [text] = delivered(tmp_path)
    assert text.endswith("Subject: test\n\nhello\n")


def test_header_check_days_argument_sets_the_largest_age(live_server, tmp_path):
    """With 'examples/header_check 30' a Date 8 days old passes and one 31 days old does not."""
    server = live_server(plugins=["examples/header_check 30", "rcpt_ok", maildir_queue(tmp_path)])
    assert send(server, message(date=time.time() - 8 * 86400))[0] == 250
    assert send(server, message(date=time.time() - 31 * 86400))[0] == 552
    assert len(delivered(tmp_path)) == 1


def test_header_check_refuses_an_empty_message(live_server, tmp_path):
    """DATA with nothing before the final dot gets 552 'You must send some data first'."""
    server = live_server(plugins=["examples/header_check", "rcpt_ok", maildir_queue(tmp_path)])
    client = RawClient(server.address)
    try:
        for line in ("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<u@example.com>"):
            assert client.command(line).code == 250
        assert client.command("DATA").code == 354
        reply = client.command(".")
        assert (reply.code, reply.text) == (552, "5.6.0 You must send some data first (#5.6.0)")
    finally:
        client.close()
    assert delivered(tmp_path) == []


# -- examples/quit_fortune --------------------------------------------------------------
def test_quit_fortune_says_goodbye_with_a_cookie(live_server):
    """QUIT gets a multi-line 221: the farewell, then fortune's lines; then the server hangs up."""
    server = live_server(plugins=["examples/quit_fortune", "rcpt_ok"])
    client = RawClient(server.address)
    try:
        assert client.command("EHLO client.test").code == 250
        reply = client.command("QUIT")
        assert reply.code == 221 and reply.status == "2.0.0"
        assert reply.lines[0] == "2.0.0 mx.test closing connection. Have a wonderful day."
        assert len(reply.lines) >= 2 and all(line.startswith("2.0.0   ") for line in reply.lines[1:])
        assert client.at_eof()
    finally:
        client.close()


def test_quit_fortune_pipes_the_program_output_into_the_reply(live_server, tmp_path):
    """Every line the program prints (run with -s) becomes a line of the 221, in order."""
    fake = write_script(tmp_path / "fortune", 'echo "Cookie one, args: $*"\necho\necho "\tCookie two"\n')
    server = live_server(plugins=["examples/quit_fortune %s" % fake, "rcpt_ok"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        code, text = client.docmd("QUIT")
    assert code == 221
    assert text.decode().split("\n") == ["2.0.0 mx.test closing connection. Have a wonderful day.",
                                         "2.0.0   Cookie one, args: -s", "2.0.0       Cookie two"]


def test_quit_fortune_falls_back_to_the_plain_farewell(live_server, tmp_path):
    """When fortune fails the client still gets the core's one-line 221."""
    broken = write_script(tmp_path / "fortune", "echo oops >&2\nexit 3\n")
    server = live_server(plugins=["examples/quit_fortune %s" % broken, "rcpt_ok"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        code, text = client.docmd("QUIT")
    assert (code, text.decode()) == (221, "2.0.0 mx.test closing connection. Have a wonderful day.")


# -- examples/earlytalker ---------------------------------------------------------------
def test_earlytalker_refuses_a_client_that_talks_first(live_server, tmp_path):
    """A client that sends EHLO before the greeting gets 554 5.5.1 at once and is disconnected."""
    server = live_server(plugins=["examples/earlytalker", "rcpt_ok", maildir_queue(tmp_path)])
    client = RawClient(server.address, wait_for_greeting=False)
    try:
        client.send(b"EHLO early.test\r\n")
        reply = client.reply()
        assert (reply.code, reply.status) == (554, "5.5.1")
        assert "talked before I greeted you" in reply.text
        assert client.at_eof()
    finally:
        client.close()


def test_earlytalker_greets_a_patient_client_after_the_wait(live_server, tmp_path):
    """A client that waits gets the 220 after about a second and can send mail as usual."""
    server = live_server(plugins=["examples/earlytalker", "rcpt_ok", maildir_queue(tmp_path)])
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        greeted = time.monotonic() - started
        refused = client.sendmail("a@sender.test", ["u@example.com"], message())
    assert refused == {}
    assert 0.9 <= greeted < 5
    assert len(delivered(tmp_path)) == 1


def test_earlytalker_wait_is_an_argument(live_server, tmp_path):
    """'examples/earlytalker 0.2' holds the greeting back for a fifth of a second, not a whole one."""
    server = live_server(plugins=["examples/earlytalker 0.2", "rcpt_ok"])
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        greeted = time.monotonic() - started
        assert client.noop()[0] == 250
    assert 0.15 <= greeted < 0.9


# -- examples/footer --------------------------------------------------------------------
def test_footer_is_appended_for_local_clients(live_server, tmp_path):
    """Mail from 127.0.0.1 is delivered with '-- ' and the default footer after its body."""
    server = live_server(plugins=["rcpt_ok", "examples/footer", maildir_queue(tmp_path)])
    assert send(server, message())[0] == 250
    [text] = delivered(tmp_path)
    assert text.endswith("\n\nhello\n-- \nSent through mx.test.\n")


def test_footer_text_comes_from_the_footer_config_file(live_server, tmp_path):
    """The lines of config/footer replace the default footer."""
    server = live_server(plugins=["rcpt_ok", "examples/footer", maildir_queue(tmp_path)],
                         config={"footer": ["Example Corp.", "Think before you print."]})
    assert send(server, message())[0] == 250
    [text] = delivered(tmp_path)
    assert text.endswith("\nhello\n-- \nExample Corp.\nThink before you print.\n")


def test_footer_leaves_mime_bodies_alone(live_server, tmp_path):
    """A multipart message from 127.0.0.1 is delivered exactly as sent."""
    server = live_server(plugins=["rcpt_ok", "examples/footer", maildir_queue(tmp_path)])
    body = "--b\nContent-Type: text/plain\n\nhello\n--b--\n"
    assert send(server, message(extra='Content-Type: multipart/mixed; boundary="b"\n', body=body))[0] == 250
    [text] = delivered(tmp_path)
    assert text.endswith("\n\n" + body)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_footer_is_not_added_for_other_clients(live_server, tmp_path):
    """Mail from any other address (here ::1) is delivered without the footer."""
    server = live_server(plugins=["rcpt_ok", "examples/footer", maildir_queue(tmp_path)], host="::1")
    assert send(server, message())[0] == 250
    [text] = delivered(tmp_path)
    assert text.endswith("\n\nhello\n")


# -- examples/pipe_queue ----------------------------------------------------------------
def test_pipe_queue_hands_the_message_to_tee(live_server, tmp_path):
    """With /usr/bin/tee the client gets 250 Queued and tee's file holds headers, Received included, and body."""
    out = tmp_path / "piped.eml"
    server = live_server(plugins=["rcpt_ok", "examples/pipe_queue /usr/bin/tee %s" % out])
    assert send(server, message()) == (250, "2.0.0 Queued")
    text = out.read_text()
    assert text.startswith("Received: from ")
    assert "\nSubject: test\n\nhello\n" in text and text.endswith("\nhello\n")


def test_pipe_queue_passes_arguments_and_envelope(live_server, tmp_path):
    """The program gets its arguments, the message on stdin, and SENDER and RECIPIENTS in its environment."""
    script = write_script(tmp_path / "deliver", 'cat > "$1"\necho "$SENDER|$RECIPIENTS" > "$2"\n')
    server = live_server(plugins=["rcpt_ok", "examples/pipe_queue %s %s %s" % (script, tmp_path / "msg",
                                                                              tmp_path / "env")])
    code, _ = send(server, message(body="line one\n.line with a dot\n"), recipients=["u@example.com", "v@example.com"])
    assert code == 250
    assert (tmp_path / "env").read_text() == "a@sender.test|u@example.com v@example.com\n"
    assert (tmp_path / "msg").read_text().endswith("\n\nline one\n.line with a dot\n")


def test_pipe_queue_failure_is_a_temporary_error(live_server, tmp_path):
    """A program that exits non-zero gets the client 451 4.3.0, and what it printed is logged."""
    script = write_script(tmp_path / "deliver", "cat > /dev/null\necho 'disk full' >&2\nexit 75\n")
    server = live_server(plugins=["rcpt_ok", "examples/pipe_queue %s" % script])
    assert send(server, message()) == (451, "4.3.0 Queuing failed, try again later")
    server.stop()
    assert "said: disk full" in server.stderr and "exited with 75" in server.stderr


def test_pipe_queue_program_may_stop_reading_early(live_server, tmp_path):
    """A program that exits 0 after reading part of a 2 MB message has still queued it: its status decides."""
    script = write_script(tmp_path / "deliver", 'head -c 100 > "$1"\n')
    server = live_server(plugins=["rcpt_ok", "examples/pipe_queue %s %s" % (script, tmp_path / "start")])
    assert send(server, message(body=("x" * 70 + "\n") * 30000)) == (250, "2.0.0 Queued")
    assert (tmp_path / "start").read_text().startswith("Received: from ")


def test_pipe_queue_program_that_hangs_is_killed(live_server, tmp_path):
    """Past plugin_timeout the client gets 451 4.3.0 and the hung program is killed, not left behind."""
    script = write_script(tmp_path / "deliver", 'echo $$ > "$1"\nexec sleep 30\n')
    server = live_server(plugins=["rcpt_ok", "examples/pipe_queue %s %s" % (script, tmp_path / "pid")],
                         config={"plugin_timeout": "1"})
    code, text = send(server, message())
    assert (code, text) == (451, "4.3.0 Temporary failure in a mail filter, try again later")
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pipe_queue_needs_an_existing_program(smtpd_factory, tmp_path):
    """A program that does not exist stops the start-up with a message naming it."""
    with pytest.raises(ConfigError, match="no-such-program: no such program"):
        smtpd_factory(plugins=["rcpt_ok", "examples/pipe_queue %s" % (tmp_path / "no-such-program")])
