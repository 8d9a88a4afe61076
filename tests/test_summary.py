"""One log line per message and one per session at the default log level (qpgevent/summary.py), as Postfix logs."""
import re
import smtplib

from qpgevent import DENY, LOGNOTICE
from qpgevent.testing import QueueCapture, TestSession, accept_all, make_smtpd


def default_session(tmp_path):
    """An in-memory session with no loglevel configured and no logging plugin: lines go to stderr."""
    smtpd = make_smtpd(tmp_path, plugins=["auth/authdeny"], config={"tls_before_auth": "0", "auth_failure_delay": "0"})
    assert smtpd.log_threshold == LOGNOTICE
    session = TestSession(smtpd, remote_ip="192.0.2.7", remote_host="client.example")
    session.mock_hook("rcpt", accept_all)
    session.mock_hook("queue", QueueCapture())
    return session


def test_default_level_logs_each_message_and_the_session(tmp_path, capfd):
    """The old code logged nothing at all for a session at the default level."""
    session = default_session(tmp_path)
    assert session.send_message("a@b.test", ["c@d.test", "e@f.test"], "Subject: x\n\nhello\n")[-1].code == 250
    session.command("MAIL FROM:<g@h.test>")  # a transaction without a message is not a message
    session.command("RSET")
    session.command("QUIT")
    lines = [line for line in capfd.readouterr().err.splitlines() if session.connection.id in line]
    messages = [line for line in lines if " message " in line]
    sessions = [line for line in lines if "session end:" in line]
    assert len(messages) == 1 and len(sessions) == 1, lines
    assert re.search(r"LOGNOTICE message \S+: from=<a@b.test> to=<c@d.test>,<e@f.test> size=\d+ "
                     r"result=250 2\.0\.0 Queued time=\d+\.\d{3}s$", messages[0]), messages[0]
    assert re.search(r"session end: client=client.example\[192.0.2.7\]:40000 helo=client.test tls=no auth=- "
                     r"messages=1/1 commands=\d+ time=\d+\.\d{3}s end=quit$", sessions[0]), sessions[0]


def test_refused_message_and_dropped_session(tmp_path, capfd):
    session = default_session(tmp_path)
    session.mock_hook("data_post", lambda plugin, transaction: (DENY, "no thanks"))
    session.send_message("a@b.test", ["c@d.test"], "Subject: x\n\nhello\n")
    session.eof()
    err = capfd.readouterr().err
    assert re.search(r"message \S+: from=<a@b.test> to=<c@d.test> size=\d+ result=552 5\.7\.1 no thanks", err), err
    assert "messages=0/1" in err and "end=eof" in err


def test_lines_are_not_built_above_the_level(tmp_path, capfd):
    session = TestSession(make_smtpd(tmp_path, config={"loglevel": "4"}))
    session.mock_hook("rcpt", accept_all)
    session.mock_hook("queue", QueueCapture())
    session.send_message("a@b.test", ["c@d.test"], "x\n")
    session.command("QUIT")
    assert "session end" not in capfd.readouterr().err


def test_live_server_summary_with_smtplib(live_server, tmp_path):
    server = live_server(config={"loglevel": "5"})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("a@b.test", ["u@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    server.stop()
    assert re.search(r"message \S+: from=<a@b.test> to=<u@example.com> size=\d+ result=250 ", server.stderr)
    assert re.search(r"session end: client=(localhost|unknown)\[127.0.0.1\]:\d+ helo=\S+ tls=no auth=- messages=1/1 .* end=quit",
                     server.stderr), server.stderr


def test_a_client_without_a_name_is_unknown(tmp_path, capfd):
    """As Postfix logs it: unknown[192.0.2.9], not the address twice."""
    smtpd = make_smtpd(tmp_path, plugins=["rcpt_ok"])
    session = TestSession(smtpd, remote_ip="192.0.2.9", remote_host=None)
    session.command("QUIT")
    err = capfd.readouterr().err
    assert "session end: client=unknown[192.0.2.9]:40000 helo=- " in err, err
