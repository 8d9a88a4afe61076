"""logging/adaptive: a session's lines held back per transaction; refused ones in detail, accepted ones marked."""
import re
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, wait_for

CONFIG = {"rcpthosts": ["example.com"]}
MESSAGE = "From: a@sender.test\nSubject: hi\n\nhello\n"
RCPT_PASS = "(rcpt) rcpt_ok: pass, example.com is in rcpthosts"
RCPT_FAIL = "(rcpt) rcpt_ok: fail, elsewhere.test is not one of our domains"


def session_with(smtpd_factory, line="logging/adaptive accept LOGINFO reject LOGDEBUG"):
    smtpd = smtpd_factory(["rcpt_ok", "queue/discard"], dict(CONFIG, logging=[line]))
    return TestSession(smtpd)


def session_lines(text, session):
    """The lines of ``text`` from ``session``, as (marked?, level, rest)."""
    found = re.findall(r"^\d+ (` )?%s (LOG\w+) (.*)$" % re.escape(session.connection.id), text, re.M)
    return [(bool(mark), level, rest) for mark, level, rest in found]


def test_lines_are_held_until_the_transaction_ends(smtpd_factory, capsys):
    session = session_with(smtpd_factory)
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    assert session_lines(capsys.readouterr().err, session) == []
    session.command("MAIL FROM:<b@sender.test>")  # the next MAIL ends the first piece
    lines = session_lines(capsys.readouterr().err, session)
    assert (True, "LOGINFO", RCPT_PASS) in lines
    assert lines[0][2].startswith("220 ") and lines[-1][2].startswith("message ")  # greeting to summary


def test_accepted_mail_is_written_up_to_accept_level_and_marked(smtpd_factory, capsys):
    session = session_with(smtpd_factory)
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    session.command("QUIT")
    lines = session_lines(capsys.readouterr().err, session)
    assert lines and all(marked for marked, _, _ in lines)
    assert {level for _, level, _ in lines} <= {"LOGINFO", "LOGNOTICE"}  # no LOGDEBUG
    assert any(rest.startswith("session end: ") for _, _, rest in lines)


def test_refused_transaction_is_written_up_to_reject_level_unmarked(smtpd_factory, capsys):
    session = session_with(smtpd_factory)
    session.send_message("a@sender.test", ["u@elsewhere.test", "u@example.com"], MESSAGE)
    session.command("QUIT")
    lines = session_lines(capsys.readouterr().err, session)
    assert (False, "LOGINFO", RCPT_FAIL) in lines
    assert (False, "LOGDEBUG", "dispatching DATA") in lines
    assert not any(marked for marked, _, _ in lines)


def test_the_refusal_flag_is_per_transaction(smtpd_factory, capsys):
    """A refused transaction, then an accepted one in the same session: only the second is marked."""
    session = session_with(smtpd_factory)
    session.send_message("a@sender.test", ["u@elsewhere.test", "u@example.com"], MESSAGE)
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    session.command("QUIT")
    lines = session_lines(capsys.readouterr().err, session)
    fail = lines.index((False, "LOGINFO", RCPT_FAIL))
    passes = [i for i, line in enumerate(lines) if line[2] == RCPT_PASS]
    assert [lines[i][0] for i in passes] == [False, True]
    assert fail < passes[0] < passes[1]


def test_defaults_are_logerror_and_logwarn(smtpd_factory, capsys):
    """With no arguments: accepted pieces keep only LOGERROR and worse, refused ones LOGWARN and worse."""
    session = session_with(smtpd_factory, "logging/adaptive")
    plugin = session.smtpd.plugins[0]
    assert (plugin.options.accept, plugin.options.reject, plugin.log_threshold) == (3, 4, 4)
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    session.command("QUIT")
    assert session_lines(capsys.readouterr().err, session) == []


def test_prefix(smtpd_factory, capsys):
    session = session_with(smtpd_factory, "logging/adaptive accept LOGINFO prefix ACCEPTED")
    session.command("QUIT")
    assert re.search(r"^\d+ ACCEPTED %s LOGINFO 221 " % re.escape(session.connection.id),
                     capsys.readouterr().err, re.M)


def test_lines_outside_sessions_are_written_at_once(smtpd_factory, capsys):
    """Start-up lines (queue/discard's warning) are not held back."""
    session_with(smtpd_factory)
    assert "LOGWARN queue/discard: every accepted message is thrown away" in capsys.readouterr().err


def test_a_piece_keeps_its_last_lines_when_too_long(smtpd_factory, capsys):
    smtpd = smtpd_factory(["rcpt_ok"], dict(CONFIG, logging=["logging/adaptive accept LOGINFO reject LOGDEBUG"]))
    smtpd.plugins[0].module.MAX_LINES = 5
    session = TestSession(smtpd)
    for _ in range(10):
        session.command("NOOP")
    session.command("QUIT")
    err = capsys.readouterr().err
    dropped = re.search(r"^\(logging/adaptive: (\d+) earlier lines of this piece were dropped\)$", err, re.M)
    # 24 lines: the 220, 10 x (dispatching NOOP, 250), dispatching QUIT, 221, session end; the last 5 kept
    assert dropped and int(dropped.group(1)) == 19
    kept = session_lines(err, session)
    assert 1 <= len(kept) <= 5 and kept[-1][2].startswith("session end: ")


def test_other_logging_plugins_still_see_every_line(smtpd_factory, tmp_path):
    log = tmp_path / "all.log"
    smtpd = smtpd_factory(["rcpt_ok", "queue/discard"],
                          dict(CONFIG, logging=["logging/adaptive", "logging/file loglevel LOGINFO %s" % log]))
    session = TestSession(smtpd)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test>")
    assert "250 2.1.0 <a@sender.test>" in log.read_text()


@pytest.mark.parametrize("line, complaint", [
    ("logging/adaptive accept LOGNOISE", "accept takes a log level .*, not 'LOGNOISE'"),
    ("logging/adaptive reject 8", "reject takes a log level .*, not '8'"),
    ("logging/adaptive prefix", "'prefix' has no value"),
    ("logging/adaptive level 4", "unknown argument 'level'"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory(["rcpt_ok"], dict(CONFIG, logging=[line]))


def test_live_server_marks_accepted_and_details_refused(live_server, tmp_path):
    """Over a real socket: the server's stderr holds the refused transaction in detail, the accepted one marked."""
    server = live_server(config={"logging": ["logging/adaptive accept LOGINFO reject LOGDEBUG"]})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@sender.test", ["u@elsewhere.test"], MESSAGE.replace("\n", "\r\n"))
        client.rset()
        assert client.sendmail("a@sender.test", ["u@example.com"], MESSAGE.replace("\n", "\r\n")) == {}
    assert wait_for(lambda: "session end: " in server.log.split("dispatching ehlo client.test")[-1])
    text = server.log
    assert re.search(r"^\d+ \S+ LOGINFO %s$" % re.escape(RCPT_FAIL), text, re.M)
    assert re.search(r"^\d+ \S+ LOGDEBUG dispatching ehlo client.test$", text, re.M)
    assert re.search(r"^\d+ ` \S+ LOGINFO %s$" % re.escape(RCPT_PASS), text, re.M)
    assert not re.search(r"^\d+ ` \S+ LOGDEBUG ", text, re.M)
