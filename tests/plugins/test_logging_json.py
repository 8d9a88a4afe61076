"""logging/json: one JSON object per log line, with the session's ids, the hook and the plugin."""
import json
import os
import smtplib
from datetime import datetime, timedelta, timezone

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
KEYS = {"time", "level", "pid", "connection_id", "transaction_id", "remote_ip", "hook", "plugin", "message"}


def records(path):
    """Every line of the log, parsed; a line that is not one JSON object fails the test."""
    lines = path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) and set(record) == KEYS for record in parsed)
    return parsed


def plugin(session, name="logging/json"):
    return next(p for p in session.smtpd.plugins if p.name == name)


def test_session_lines_carry_ids_address_hook_and_plugin(session_factory, tmp_path):
    """A plugin's line in a session has the level name, the connection and transaction ids, the
    client address, the hook and the plugin; the transaction id changes with the transaction."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json loglevel LOGINFO %s" % log, "rcpt_ok", "queue/discard"],
                              config=CONFIG, remote_ip="192.0.2.7")
    session.command("EHLO client.test")
    first = session.transaction.id
    assert session.send_message("b@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")[-1].code == 250
    second = session.transaction.id
    lines = records(log)
    rcpt = [r for r in lines if r["plugin"] == "rcpt_ok"]
    assert rcpt == [{"time": rcpt[0]["time"], "level": "LOGINFO", "pid": os.getpid(),
                     "connection_id": session.connection.id, "transaction_id": rcpt[0]["transaction_id"],
                     "remote_ip": "192.0.2.7", "hook": "rcpt", "plugin": "rcpt_ok",
                     "message": "pass, example.com is in rcpthosts"}]
    assert rcpt[0]["transaction_id"].startswith(session.connection.id + ".")
    queued = next(r for r in lines if r["plugin"] == "queue/discard" and r["hook"] == "queue")
    assert queued["transaction_id"] == rcpt[0]["transaction_id"]
    assert first != rcpt[0]["transaction_id"] != second
    assert all(r["connection_id"] == session.connection.id and r["remote_ip"] == "192.0.2.7" for r in lines[1:])


def test_core_lines_have_no_hook_or_plugin_and_multiline_messages_stay_one_line(session_factory, tmp_path):
    """The core's reply lines have null hook and plugin; the EHLO reply, several lines long, is one
    object whose message holds the line breaks."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json loglevel LOGINFO %s" % log, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    session.command("EHLO client.test")
    ehlo = [r for r in records(log) if r["message"].startswith("250-mx.test Hi")]
    assert len(ehlo) == 1
    assert ehlo[0]["hook"] is None and ehlo[0]["plugin"] is None
    assert "\n250-PIPELINING\n" in ehlo[0]["message"]


def test_time_is_utc_iso_8601_with_milliseconds(session_factory, tmp_path):
    """``time`` reads like 2024-05-01T09:30:00.123Z and is the moment the line was logged."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json loglevel LOGDEBUG %s" % log], config=CONFIG)
    session.command("NOOP")
    stamp = records(log)[-1]["time"]
    assert len(stamp) == len("2024-05-01T09:30:00.123Z") and stamp.endswith("Z")
    logged = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - logged) < timedelta(seconds=5)


def test_lines_outside_sessions_have_null_session_fields(session_factory, tmp_path):
    """A plugin's start-up line (no session) has null connection id, transaction id and address."""
    log = tmp_path / "qp.json"
    session_factory(plugins=["logging/json %s" % log, "queue/discard"], config=CONFIG)
    startup = next(r for r in records(log) if r["plugin"] == "queue/discard")
    assert startup["level"] == "LOGWARN"
    assert (startup["connection_id"], startup["transaction_id"], startup["remote_ip"]) == (None, None, None)


def test_default_level_is_logwarn_and_the_core_is_told(session_factory, tmp_path):
    """Without loglevel only LOGWARN and more urgent lines are written, and the core's threshold is
    LOGWARN so it does not build the others."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    assert session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")[-1].code == 250
    assert {r["level"] for r in records(log)} == {"LOGWARN"}
    assert plugin(session).log_threshold == 4 and session.smtpd.log_threshold == 4


def test_dash_writes_to_stderr(session_factory, capsys):
    """``-`` sends the objects to standard error."""
    session = session_factory(plugins=["logging/json loglevel LOGINFO -", "rcpt_ok"], config=CONFIG)
    session.command("HELO client.test")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(r["message"].startswith("250 mx.test Hi") and r["connection_id"] == session.connection.id
               for r in lines)


def test_reopen_after_rotation_writes_a_new_file(session_factory, tmp_path):
    """After the file is moved away and the module's reopen() runs (SIGUSR1), lines go to a new
    file by the old name; the moved file gets no more."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json loglevel LOGINFO %s" % log, "rcpt_ok"], config=CONFIG)
    session.command("HELO client.test")
    log.rename(tmp_path / "qp.json.1")
    plugin(session).module.reopen()
    session.command("NOOP")
    assert [r["message"] for r in records(log)] == ["250 2.0.0 OK"]
    assert not any(r["message"] == "250 2.0.0 OK" for r in records(tmp_path / "qp.json.1"))


def test_write_failure_never_reaches_the_session(session_factory, tmp_path, capsys):
    """When the file cannot be written the session goes on, and one notice says why."""
    log = tmp_path / "qp.json"
    session = session_factory(plugins=["logging/json loglevel LOGINFO %s" % log, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    log.unlink()
    log.mkdir()  # the name is now a directory: opening it fails
    plugin(session).module.reopen()
    assert session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")[-1].code == 250
    notices = [line for line in capsys.readouterr().err.splitlines() if "cannot write to" in line]
    assert len(notices) == 1 and str(log) in notices[0]


@pytest.mark.parametrize("args, complaint", [
    ("", "give one PATH"),
    ("loglevel", "loglevel needs a value"),
    ("loglevel LOUD -", "'LOUD' is not a log level"),
    ("/no/such/dir/qp.json", "directory /no/such/dir does not exist"),
    ("a.json b.json", "give one PATH"),
])
def test_bad_arguments_stop_startup(smtpd_factory, args, complaint):
    """A missing path, a bad level or a directory that does not exist stops the start-up with the reason."""
    with pytest.raises(ConfigError) as error:
        smtpd_factory(plugins=["logging/json %s" % args])
    assert complaint in str(error.value)


def test_live_server_logs_json_for_a_real_client(live_server, tmp_path):
    """Through bin/qpsmtpd-server: the client's address and the session's lines are in the file."""
    log = tmp_path / "server.json"
    server = live_server(config={"logging": ["logging/json loglevel LOGINFO %s" % log]})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        assert client.rcpt("u@example.com")[0] == 250
    server.stop()
    rcpt = [r for r in records(log) if r["plugin"] == "rcpt_ok"]
    assert len(rcpt) == 1 and rcpt[0]["remote_ip"] == "127.0.0.1" and rcpt[0]["pid"] == server.process.pid
