"""content_log: every message appended to a strftime-named file, gated by content_log_enabled."""
import fcntl
import smtplib
import time

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
MESSAGE = "From: a@sender.test\nSubject: hi\n\nhello\n.dot line\n"


def session_with(session_factory, config=None):
    return session_factory(["content_log", "rcpt_ok", "queue/discard"], dict(CONFIG, **(config or {})))


def test_default_file_is_mail_by_day_beside_the_config_dir(session_factory, tmp_path):
    """Without config: ``mail/%Y%m%d`` under the config dir's parent, holding the message with our Received line."""
    session = session_with(session_factory)
    assert session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1].code == 250
    text = (tmp_path / "mail" / time.strftime("%Y%m%d")).read_text()
    assert text.startswith("Received: from localhost (HELO client.test) (127.0.0.1)\n")
    assert text.endswith("\nFrom: a@sender.test\nSubject: hi\n\nhello\n.dot line\n")


def test_messages_are_appended_one_after_another(session_factory, tmp_path):
    log = tmp_path / "archive.log"
    session = session_with(session_factory, {"content_log_file": str(log)})
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE.replace("hi", "second"))
    text = log.read_text()
    assert text.count("Received: ") == 2
    assert text.index("Subject: hi") < text.index("Subject: second")


def test_file_name_goes_through_strftime_and_directories_are_made(session_factory, tmp_path):
    session = session_with(session_factory, {"content_log_file": "archive/%Y/%m/%d-%H.mbox"})
    session.send_message("a@sender.test", ["u@example.com"], MESSAGE)
    path = tmp_path / time.strftime("archive/%Y/%m/%d-%H.mbox")
    assert "Subject: hi" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("value, logged", [("true", True), ("YES", True), ("1", True), ("false", False),
                                           ("0", False), ("no", False), ("off", False)])
def test_content_log_enabled(session_factory, tmp_path, value, logged):
    log = tmp_path / "archive.log"
    session = session_with(session_factory, {"content_log_file": str(log), "content_log_enabled": value})
    assert session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1].code == 250
    assert log.exists() is logged


def test_unwritable_file_never_stops_the_message(session_factory, tmp_path):
    """The file is a directory: the message is still queued, and a warning says why it was not logged."""
    (tmp_path / "taken").mkdir()
    session = session_with(session_factory, {"content_log_file": str(tmp_path / "taken")})
    logged = session.capture_log()
    assert str(session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1]) == "250 2.0.0 Queued (discarded)"
    assert any(entry[2] == "content_log" and entry[3].startswith("skip, cannot write %s" % (tmp_path / "taken"))
               for entry in logged)


def test_a_file_locked_by_another_writer_is_skipped_in_bounded_time(session_factory, tmp_path):
    """Another process holds the lock: after the lock wait the message goes on, not logged, with a warning."""
    log = tmp_path / "archive.log"
    session = session_with(session_factory, {"content_log_file": str(log)})
    plugin = next(p for p in session.smtpd.plugins if p.name == "content_log")
    plugin.module.LOCK_WAIT = 0.3
    logged = session.capture_log()
    with open(log, "ab") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        started = time.monotonic()
        assert session.send_message("a@sender.test", ["u@example.com"], MESSAGE)[-1].code == 250
        waited = time.monotonic() - started
    assert 0.3 <= waited < 2
    assert log.read_text() == ""
    assert any("stayed locked" in entry[3] for entry in logged)


def test_arguments_other_than_the_generic_ones_stop_start_up(smtpd_factory):
    with pytest.raises(ConfigError, match="unknown argument 'file'"):
        smtpd_factory(["content_log file /tmp/x", "rcpt_ok"])


def test_live_log_holds_the_message_as_queued(live_server, tmp_path):
    """Over a real socket: the logged copy is byte for byte the queued message (less the maildir's own lines)."""
    maildir = tmp_path / "Maildir"
    log = tmp_path / "archive.log"
    server = live_server(plugins=["content_log", "rcpt_ok", "queue/maildir %s" % maildir],
                         config={"content_log_file": str(log)})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("a@sender.test", ["u@example.com"], MESSAGE.replace("\n", "\r\n"))
    [queued] = (maildir / "new").iterdir()
    return_path, delivered_to, rest = queued.read_bytes().split(b"\n", 2)
    assert return_path.startswith(b"Return-Path: ") and delivered_to.startswith(b"Delivered-To: ")
    assert log.read_bytes() == rest
