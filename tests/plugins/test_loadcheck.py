"""loadcheck: clients are refused for now (450 4.3.2) while the load is above max_load."""
import os
import smtplib
import time

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

REFUSED = "450 4.3.2 Server load too high, please try again later."


@pytest.fixture
def loadavg(tmp_path):
    """``loadavg(1.5)`` writes a /proc/loadavg-style file with that 1-minute load and returns its path."""
    path = tmp_path / "loadavg"

    def write(load):
        path.write_text("%s 0.40 0.30 1/234 5678\n" % load)
        return path
    return write


def greeting(session_factory, line):
    session = session_factory([line, "rcpt_ok"])
    return [str(reply) for reply in session.greeting], session


@pytest.mark.parametrize("load, max_load, refused", [
    ("8.50", "7", True), ("7.00", "7", False), ("7.01", None, True), ("6.99", None, False),
    ("2.5", "2.25", True), ("0.00", "0", False),
])
def test_refused_only_above_max_load(session_factory, loadavg, load, max_load, refused):
    """Above max_load (default 7) the greeting is the refusal and the session ends; at or below it, 220."""
    line = "loadcheck loadavg %s" % loadavg(load) + (" max_load %s" % max_load if max_load else "")
    replies, session = greeting(session_factory, line)
    if refused:
        assert replies == [REFUSED] and session.closed
    else:
        assert [reply[:4] for reply in replies] == ["220 "] and not session.closed


def test_system_load_is_used_without_loadavg(session_factory, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (12.0, 1.0, 1.0))
    assert greeting(session_factory, "loadcheck")[0] == [REFUSED]
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 1.0, 1.0))
    assert greeting(session_factory, "loadcheck")[0][0].startswith("220 ")


def test_load_is_cached_for_cache_time(session_factory, loadavg):
    """Within cache_time the measured load is reused; with cache_time 0 each connection measures again."""
    path = loadavg("1.0")
    cached = session_factory(["loadcheck cache_time 10 loadavg %s" % path, "rcpt_ok"])
    fresh = session_factory(["loadcheck cache_time 0 loadavg %s" % path, "rcpt_ok"])
    loadavg("9.0")
    assert str(TestSession(cached.smtpd).greeting[0]).startswith("220 ")
    assert [str(r) for r in TestSession(fresh.smtpd).greeting] == [REFUSED]


def test_cache_expires(session_factory, loadavg):
    path = loadavg("1.0")
    session = session_factory(["loadcheck cache_time 0.2 loadavg %s" % path, "rcpt_ok"])
    loadavg("9.0")
    time.sleep(0.25)
    assert [str(r) for r in TestSession(session.smtpd).greeting] == [REFUSED]


def test_unreadable_load_lets_clients_in_and_logs_it(session_factory, loadavg, smtpd_factory):
    path = loadavg("9.0")
    smtpd = smtpd_factory(["loadcheck cache_time 0 loadavg %s" % path, "rcpt_ok"])
    path.unlink()
    session = TestSession(smtpd, greet=False)
    logged = session.capture_log()
    session.start()
    assert str(session.greeting[0]).startswith("220 ")
    assert any(entry[2] == "loadcheck" and entry[3].startswith("skip, cannot read the load average")
               for entry in logged)


def test_qpsmtpd_uptime_argument_is_accepted(session_factory, loadavg):
    assert greeting(session_factory, "loadcheck max_load 7 uptime /usr/bin/uptime loadavg %s" % loadavg("1"))[0][0] \
        .startswith("220 ")


@pytest.mark.parametrize("line, complaint", [
    ("loadcheck max_load high", "max_load takes a number at least 0, not 'high'"),
    ("loadcheck cache_time -1", "cache_time takes a number at least 0, not '-1'"),
    ("loadcheck loadavg /nonexistent/loadavg", "loadavg /nonexistent/loadavg: .*No such file"),
    ("loadcheck max_load", "'max_load' has no value"),
    ("loadcheck maxload 7", "did you mean 'max_load'"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_garbage_loadavg_file_stops_start_up(smtpd_factory, tmp_path):
    path = tmp_path / "loadavg"
    path.write_text("busy\n")
    with pytest.raises(ConfigError, match="loadavg %s: could not convert" % path):
        smtpd_factory(["loadcheck loadavg %s" % path, "rcpt_ok"])


def test_live_client_is_refused_while_overloaded(live_server, loadavg, tmp_path):
    """Over a real socket: smtplib's connect gets 450 4.3.2; once the load drops the next client is greeted."""
    path = loadavg("20.0")
    server = live_server(plugins=["loadcheck cache_time 0 loadavg %s" % path, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(*server.address, timeout=10)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (450, REFUSED[4:].encode())
    loadavg("0.5")
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.noop()[0] == 250
