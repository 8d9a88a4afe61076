"""logging/file: log lines appended to a file or piped to a program, surviving rotation and failures."""
import os
import re
import shutil
import smtplib
import time

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import wait_for

CONFIG = {"rcpthosts": ["example.com"]}
RCPT_LINE = "(rcpt) rcpt_ok: pass, example.com is in rcpthosts"


class FakeTime:
    """Stands in for the ``time`` module inside logging/file: the test moves the clocks."""

    def __init__(self):
        self.now = time.time()
        self.mono = time.monotonic()

    def advance(self, seconds):
        self.now += seconds
        self.mono += seconds

    def monotonic(self):
        return self.mono

    def localtime(self, seconds=None):
        return time.localtime(self.now if seconds is None else seconds)

    def strftime(self, form, when=None):
        return time.strftime(form, when or time.localtime(self.now))


def plugin(session, name="logging/file"):
    return next(p for p in session.smtpd.plugins if p.name == name)


@pytest.fixture
def clock(monkeypatch):
    """``clock(session)`` gives logging/file of that daemon a FakeTime and returns it."""
    def install(session):
        fake = FakeTime()
        monkeypatch.setattr(plugin(session).module, "time", fake)
        return fake
    return install


def run_session(session):
    replies = session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")
    assert replies[-1].code == 250, replies[-1]
    return replies



def test_line_has_timestamp_connection_id_level_hook_plugin(session_factory, tmp_path):
    """Each line: timestamp, pid, connection id, level, (hook), plugin: message."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 6 %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    pattern = (r"^[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \d{4} %d %s LOGINFO %s$"
               % (os.getpid(), re.escape(session.connection.id), re.escape(RCPT_LINE)))
    assert re.search(pattern, log.read_text(), re.M)


def test_every_line_of_a_session_carries_its_connection_id(session_factory, tmp_path):
    """All lines logged during a session, the core's reply lines included, name the connection."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel LOGDEBUG %s" % log, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    run_session(session)
    session.command("QUIT")
    lines = [line for line in log.read_text().splitlines() if not line.startswith(" ")]
    session_lines = [line for line in lines if "queue/discard: every accepted" not in line]
    assert len(session_lines) > 10
    assert all(" %s " % session.connection.id in line for line in session_lines)


def test_default_level_is_logwarn_and_threshold_is_set(session_factory, tmp_path):
    """Without ``loglevel`` only LOGWARN and more urgent lines are written, and the core
    is told so it builds no LOGINFO line at all."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    assert session.smtpd.log_threshold == 4
    text = log.read_text()
    assert "LOGWARN queue/discard: every accepted message is thrown away" in text
    assert "LOGINFO" not in text


def test_levels_above_the_threshold_are_dropped(session_factory, tmp_path):
    """``loglevel LOGINFO`` writes the LOGINFO lines but not the LOGDEBUG ones."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel LOGINFO %s" % log, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    run_session(session)
    text = log.read_text()
    assert RCPT_LINE in text
    assert "LOGDEBUG" not in text and "dispatching" not in text


def test_tsformat(session_factory, tmp_path):
    """``tsformat`` sets the timestamp's strftime format."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 6 tsformat %%Y-%%m-%%dT%%H:%%M:%%S %s" % log,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \d+ \S+ LOGINFO %s$" % re.escape(RCPT_LINE),
                     log.read_text(), re.M)


def test_strftime_path_opens_a_new_file_when_the_name_changes(session_factory, tmp_path, clock):
    """With strftime escapes in PATH, lines go to the file named for the moment they are logged."""
    session = session_factory(plugins=["logging/file loglevel 7 %s/qp-%%Y%%m%%d-%%H%%M%%S.log" % tmp_path,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    fake = clock(session)
    first = tmp_path / fake.strftime("qp-%Y%m%d-%H%M%S.log")
    session.command("NOOP")
    fake.advance(1)
    second = tmp_path / fake.strftime("qp-%Y%m%d-%H%M%S.log")
    session.command("RSET")
    assert first != second
    assert "dispatching NOOP" in first.read_text() and "dispatching RSET" not in first.read_text()
    assert "dispatching RSET" in second.read_text() and "dispatching NOOP" not in second.read_text()


def test_nosplit_keeps_a_session_in_one_file(session_factory, smtpd_factory, tmp_path, clock):
    """With ``nosplit`` a session stays in the file chosen at its first line even when the name
    changes; a session that starts later uses the new name."""
    from qpgevent.testing import TestSession
    session = session_factory(plugins=["logging/file loglevel 7 nosplit %s/qp-%%H%%M%%S.log" % tmp_path,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    fake = clock(session)
    session.command("NOOP")
    first = tmp_path / fake.strftime("qp-%H%M%S.log")
    fake.advance(1)
    session.command("RSET")
    later = TestSession(session.smtpd)
    later.command("HELP")
    second = tmp_path / fake.strftime("qp-%H%M%S.log")
    assert "dispatching NOOP" in first.read_text() and "dispatching RSET" in first.read_text()
    assert "dispatching HELP" in second.read_text() and "dispatching RSET" not in second.read_text()
    assert later.connection.id not in first.read_text()


def test_percent_i_gives_one_file_per_connection(session_factory, tmp_path):
    """``%i`` in PATH is the connection id: each session writes its own file; lines from
    outside sessions go to the ``parent`` file."""
    from qpgevent.testing import TestSession
    session = session_factory(plugins=["logging/file loglevel 6 %s/conn-%%i.log" % tmp_path, "rcpt_ok",
                                       "queue/discard"], config=CONFIG)
    other = TestSession(session.smtpd)
    run_session(session)
    run_session(other)
    mine = (tmp_path / ("conn-%s.log" % session.connection.id)).read_text()
    theirs = (tmp_path / ("conn-%s.log" % other.connection.id)).read_text()
    assert RCPT_LINE in mine and RCPT_LINE in theirs
    assert other.connection.id not in mine and session.connection.id not in theirs
    assert "every accepted message is thrown away" in (tmp_path / "conn-parent.log").read_text()


def test_reopen_with_a_pipe_runs_the_program_once_per_connection(session_factory, tmp_path):
    """``reopen |COMMAND``: each connection that logs gets its own run of the program, which
    receives that connection's lines and ends when the connection does."""
    from qpgevent.testing import TestSession
    out = tmp_path / "piped"
    session = session_factory(plugins=["logging/file loglevel 6 reopen |echo started >> %s; exec cat >> %s" % (out, out),
                                       "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")], config=CONFIG)
    for client in (session, TestSession(session.smtpd)):
        run_session(client)
        assert client.command("QUIT")[0].code == 221
    assert wait_for(lambda: out.exists() and out.read_text().count(" 221 ") == 2)
    text = out.read_text()
    assert text.count("started\n") == 2
    assert text.count(RCPT_LINE) == 2


def test_pipe_without_reopen_is_one_program_for_all_sessions(session_factory, tmp_path):
    """``|COMMAND`` alone starts the program once and feeds it every session's lines."""
    from qpgevent.testing import TestSession
    out = tmp_path / "piped"
    session = session_factory(plugins=["logging/file loglevel 6 |echo started >> %s; exec cat >> %s" % (out, out),
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    others = TestSession(session.smtpd)
    run_session(session)
    run_session(others)
    plugin(session).output.close()  # what stopping the server does: the program sees EOF
    assert wait_for(lambda: out.exists() and out.read_text().count(RCPT_LINE) == 2)
    text = out.read_text()
    assert text.count("started\n") == 1
    assert session.connection.id in text and others.connection.id in text


@pytest.mark.parametrize("rotation", ["moved away", "replaced by a new file"])
def test_rotated_file_is_reopened_within_a_second(session_factory, tmp_path, clock, rotation):
    """After the file is renamed (and maybe recreated, as logrotate does) lines keep going to the
    old inode for under a second, then the plugin notices and writes to the new file."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 7 %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    fake = clock(session)
    session.command("NOOP")
    os.rename(log, tmp_path / "qp.log.1")
    if rotation == "replaced by a new file":
        log.write_text("")
    fake.advance(0.5)
    session.command("RSET")
    fake.advance(1)
    session.command("HELP")
    old = (tmp_path / "qp.log.1").read_text()
    assert "dispatching NOOP" in old and "dispatching RSET" in old
    assert "dispatching HELP" in log.read_text() and "dispatching HELP" not in old


def test_module_reopen_function_reopens_at_the_next_line(session_factory, tmp_path):
    """``reopen()`` (for SIGUSR1) makes the very next line go to a freshly opened file."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 7 %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    session.command("NOOP")
    os.rename(log, tmp_path / "qp.log.1")
    plugin(session).module.reopen()
    session.command("RSET")
    assert "dispatching RSET" in log.read_text()
    assert "dispatching RSET" not in (tmp_path / "qp.log.1").read_text()


def test_unwritable_path_never_breaks_the_session(session_factory, tmp_path, capsys):
    """PATH is a directory, so nothing can be written: the client still gets every 250 and the
    message is queued; stderr gets one notice, not one per line."""
    target = tmp_path / "a-directory"
    target.mkdir()
    session = session_factory(plugins=["logging/file loglevel 7 %s" % target, "rcpt_ok", "queue/discard"], config=CONFIG)
    replies = run_session(session)
    assert [r.code for r in replies[-4:]] == [250, 250, 250, 250]
    assert replies[-1].text == "2.0.0 Queued (discarded)"
    err = capsys.readouterr().err
    assert err.count("cannot write to %s" % target) == 1


def test_file_closed_under_it_is_reopened(session_factory, tmp_path):
    """If the open file is closed behind the plugin's back, the session goes on and the next
    lines still reach the file."""
    log = tmp_path / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 6 %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    session.command("EHLO client.test")
    plugin(session).output.handle.close()
    assert session.command("MAIL FROM:<a@sender.test>")[0].code == 250
    assert session.command("RCPT TO:<u@example.com>")[0].code == 250
    assert RCPT_LINE in log.read_text()


def test_logging_resumes_when_the_directory_comes_back(session_factory, tmp_path, clock, capsys):
    """The log directory vanishes: lines are dropped (SMTP unaffected) with one notice; once it
    exists again the plugin writes again after at most a second, and says so."""
    directory = tmp_path / "logs"
    directory.mkdir()
    log = directory / "qp.log"
    session = session_factory(plugins=["logging/file loglevel 7 %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    fake = clock(session)
    session.command("EHLO client.test")
    shutil.rmtree(directory)
    fake.advance(1.5)
    assert session.command("MAIL FROM:<a@sender.test>")[0].code == 250
    directory.mkdir()
    assert session.command("RCPT TO:<u@example.com>")[0].code == 250
    fake.advance(1.5)
    assert session.command("NOOP")[0].code == 250
    text = log.read_text()
    assert "dispatching NOOP" in text and "MAIL FROM" not in text
    err = capsys.readouterr().err
    assert err.count("cannot write to %s" % log) == 1 and err.count("writing to %s again" % log) == 1


@pytest.mark.parametrize("line, complaint", [
    ("logging/file", "no PATH"),
    ("logging/file loglevel 6", "no PATH"),
    ("logging/file loglevel", "needs a value"),
    ("logging/file reopen tsformat", "needs a value"),
    ("logging/file loglevel 9 /tmp/x.log", "not a log level"),
    ("logging/file loglevel LOGNOISE /tmp/x.log", "not a log level"),
    ("logging/file /nonexistent-dir/qp.log", "does not exist"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    """A missing PATH, an option without its value, a bad level or a missing directory refuse
    to start, saying why."""
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory(plugins=[line, "rcpt_ok"])


def test_live_server_logs_sessions_to_the_file(live_server, tmp_path):
    """End to end: configured in ``config/logging``, the server writes each session's lines,
    with its connection id, before the client hears the reply they describe."""
    log = tmp_path / "server.log"
    server = live_server(config={"logging": ["logging/file loglevel LOGINFO %s" % log]})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
        text = log.read_text()
    found = re.search(r"^.* \d+ (\S+) LOGINFO %s$" % re.escape(RCPT_LINE), text, re.M)
    assert found, text
    connection_id = found.group(1)
    assert re.search(r"^.* %s LOGINFO \(queue\) queue/maildir: pass, queued as " % re.escape(connection_id), text, re.M)
    assert re.search(r"^.* %s LOGINFO 250 2.0.0 Queued! " % re.escape(connection_id), text, re.M)
