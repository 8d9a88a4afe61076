"""logging/devnull: no line is written anywhere, other loggers still work."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

CONFIG = {"rcpthosts": ["example.com"], "loglevel": "7"}


def test_nothing_reaches_stderr(smtpd_factory, capsys):
    """Without it the core writes to stderr; with it, nothing at all, start-up lines included."""
    session = TestSession(smtpd_factory(["rcpt_ok", "queue/discard"], dict(CONFIG, logging=["logging/devnull"])))
    session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nhello\n")
    session.command("QUIT")
    assert capsys.readouterr().err == ""


def test_lines_are_dropped_before_the_logging_hook(smtpd_factory):
    """Its threshold is below every level, so the core formats nothing for it."""
    smtpd = smtpd_factory(["rcpt_ok"], dict(CONFIG, logging=["logging/devnull"]))
    assert smtpd.log_threshold == -1


def test_other_logging_plugins_still_get_their_lines(smtpd_factory, capsys):
    session = TestSession(smtpd_factory(["rcpt_ok", "queue/discard"],
                                        dict(CONFIG, logging=["logging/devnull", "logging/warn LOGINFO"])))
    session.command("EHLO client.test")
    err = capsys.readouterr().err
    assert "LOGINFO 250-mx.test Hi" in err and "LOGDEBUG" not in err


def test_arguments_stop_start_up(smtpd_factory):
    with pytest.raises(ConfigError, match="'quiet' has no value"):
        smtpd_factory(["rcpt_ok"], dict(CONFIG, logging=["logging/devnull quiet"]))


def test_live_server_logs_nothing(live_server, tmp_path):
    """Over a real socket: mail is served and the server's output stays empty."""
    server = live_server(config={"logging": ["logging/devnull"]})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n") == {}
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1
    assert server.log == ""
