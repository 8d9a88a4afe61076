"""logging/warn: log lines on stderr, filtered by level, never breaking a session."""
import os
import re

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}


def run_session(session):
    replies = session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")
    assert replies[-1].code == 250
    return replies


def test_line_format_carries_pid_connection_id_level_hook_and_plugin(session_factory, capsys):
    """``<pid> <connection id> <LEVEL> (<hook>) <plugin>: <message>`` for a plugin's line in a session."""
    session = session_factory(plugins=["logging/warn 6", "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    err = capsys.readouterr().err
    expected = "%d %s LOGINFO (rcpt) rcpt_ok: pass, example.com is in rcpthosts\n" % (os.getpid(), session.connection.id)
    assert expected in err


def test_default_level_is_logwarn(session_factory, capsys):
    """Without an argument, LOGWARN and more urgent lines are written, LOGINFO ones are not;
    a line from outside any session has no connection id."""
    session = session_factory(plugins=["logging/warn", "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    err = capsys.readouterr().err
    assert "%d LOGWARN queue/discard: every accepted message is thrown away" % os.getpid() in err
    assert "LOGINFO" not in err and session.connection.id not in err


@pytest.mark.parametrize("args", ["LOGDEBUG", "7", "debug", "loglevel LOGDEBUG"])
def test_level_argument_forms(session_factory, capsys, args):
    """The level may be a number, a name with or without LOG, or follow ``loglevel``."""
    session = session_factory(plugins=["logging/warn %s" % args, "rcpt_ok", "queue/discard"], config=CONFIG)
    session.command("NOOP")
    assert re.search(r"^\d+ %s LOGDEBUG dispatching NOOP$" % re.escape(session.connection.id),
                     capsys.readouterr().err, re.M)


def test_levels_above_the_threshold_are_dropped(session_factory, capsys):
    """At LOGNOTICE the LOGINFO lines of a whole session are dropped, and the core is told the
    threshold so it does not even build them."""
    session = session_factory(plugins=["logging/warn LOGNOTICE", "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    assert session.smtpd.log_threshold == 5
    err = capsys.readouterr().err
    assert "LOGINFO" not in err and "LOGDEBUG" not in err


def test_other_logging_plugins_still_run(session_factory, capsys, tmp_path):
    """logging/warn lets the next logging plugin have the line too."""
    log = tmp_path / "file.log"
    session = session_factory(plugins=["logging/warn 6", "logging/file loglevel 6 %s" % log, "rcpt_ok",
                                       "queue/discard"], config=CONFIG)
    run_session(session)
    line = "(rcpt) rcpt_ok: pass, example.com is in rcpthosts"
    assert line in capsys.readouterr().err
    assert line in log.read_text()


class BrokenStream:
    def write(self, text):
        raise OSError(5, "Input/output error")

    def flush(self):
        raise OSError(5, "Input/output error")


def test_unwritable_stderr_never_breaks_the_session(session_factory, monkeypatch):
    """With stderr failing on every write the client still gets its 250s and the message is queued."""
    session = session_factory(plugins=["logging/warn 7", "rcpt_ok", "queue/discard"], config=CONFIG)
    monkeypatch.setattr("sys.stderr", BrokenStream())
    replies = run_session(session)
    assert [r.code for r in replies[-4:]] == [250, 250, 250, 250]
    assert replies[-1].text == "2.0.0 Queued (discarded)"


@pytest.mark.parametrize("args", ["9", "LOGNOISE", "6 7"])
def test_bad_level_stops_start_up(smtpd_factory, args):
    """An unknown level or extra words refuse to start, naming the valid forms."""
    with pytest.raises(ConfigError, match="log level"):
        smtpd_factory(plugins=["logging/warn %s" % args, "rcpt_ok"])
